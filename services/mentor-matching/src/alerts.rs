//! Mentors who need a coordinator's attention. The evaluation found
//! trained mentors waiting months for a first client and mentors nobody
//! had talked to about their progress, and asked for a minimum standard for
//! the first and regular check-ins for the second:
//! - `WAITING_SINCE_TRAINING`: TRAINED, never allocated, training completed
//!   (or registration, where no date is recorded) more than
//!   `first_client_standard_days` ago;
//! - `CHECK_IN_DUE` / `CHECK_IN_OVERDUE`: an ACTIVE or SABBATICAL mentor's
//!   next check-in (`check_in_days` after the last one, or after their first
//!   allocation when there was none) falls within the coming week, or has
//!   passed.
//!
//! The coordinator report lists them ([`list`]); a periodic sweep
//! ([`run_sweep`]) announces each alert once as `mentor.alert_raised`, made
//! safe with several replicas by `mentor_alert_raised`'s unique key.

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use cpm_proto::v1::{
    ListMentorAlertsRequest, MentorAlertKind, MentorAlertRaised, MentorStatus, RecordCheckInRequest,
};
use cpm_runtime::Shutdown;
use cpm_runtime::bus::{ServiceHandle, outbox};
use cpm_runtime::config::ProgrammeConfig;
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::page;
use cpm_runtime::grpc::values::parse_id;
use cpm_runtime::grpc::values::timestamp;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{finish, parse_date};

/// When alerts fall due, from `[mentor_matching]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertRules {
    pub first_client_standard_days: i32,
    pub check_in_days: i32,
}

/// Days ahead in which a check-in counts as due.
const DUE_AHEAD_DAYS: i32 = 7;

/// One alert, as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AlertRow {
    pub mentor_id: Uuid,
    pub display_name: String,
    pub area: String,
    /// cpm.v1.MentorAlertKind.
    pub kind: i32,
    pub since: NaiveDate,
    /// Days waited since training, or days overdue (0 when not yet due).
    pub days: i32,
}

/// The alerts of mentors working in any of `areas` (every area when
/// `None`), by kind, then date, then mentor, from after `after`.
pub async fn list(
    connection: &mut PgConnection,
    rules: AlertRules,
    areas: Option<&[String]>,
    after: Option<(i32, NaiveDate, Uuid)>,
    limit: i64,
) -> Result<Vec<AlertRow>, sqlx::Error> {
    sqlx::query_as!(
        AlertRow,
        "WITH alert AS ( \
           SELECT mentor.mentor_id, mentor.display_name, mentor.area, $3::integer AS kind, \
             COALESCE(mentor.training_completed_on, mentor.trained_on::date) AS since, \
             (current_date - COALESCE(mentor.training_completed_on, mentor.trained_on::date)) \
               AS days \
           FROM mentor_matching.mentor \
           WHERE mentor.status = $4 \
             AND NOT EXISTS (SELECT 1 FROM mentor_matching.allocation_mentor AS a \
                             WHERE a.mentor_id = mentor.mentor_id) \
             AND COALESCE(mentor.training_completed_on, mentor.trained_on::date) \
                 < current_date - $1::integer \
           UNION ALL \
           SELECT mentor.mentor_id, mentor.display_name, mentor.area, \
             CASE WHEN due.on_date < current_date THEN $6::integer ELSE $5::integer END, \
             due.on_date, GREATEST(current_date - due.on_date, 0) \
           FROM mentor_matching.mentor \
           CROSS JOIN LATERAL (SELECT COALESCE( \
               (SELECT max(held_on) FROM mentor_matching.mentor_check_in AS c \
                WHERE c.mentor_id = mentor.mentor_id), \
               (SELECT min(allocation.confirmed_at)::date \
                FROM mentor_matching.allocation_mentor AS a \
                JOIN mentor_matching.allocation USING (allocation_id) \
                WHERE a.mentor_id = mentor.mentor_id), \
               mentor.training_completed_on, mentor.trained_on::date) + $2::integer \
             AS on_date) AS due \
           WHERE mentor.status = ANY($7) \
             AND due.on_date <= current_date + $8::integer) \
         SELECT mentor_id AS \"mentor_id!\", display_name AS \"display_name!\", \
           area AS \"area!\", kind AS \"kind!\", since AS \"since!\", days AS \"days!\" \
         FROM alert \
         WHERE ($9::text[] IS NULL OR area = ANY($9) OR EXISTS ( \
                 SELECT 1 FROM mentor_matching.mentor AS m \
                 WHERE m.mentor_id = alert.mentor_id AND m.areas && $9)) \
           AND ($10::integer IS NULL OR (kind, since, mentor_id) > ($10, $11, $12)) \
         ORDER BY kind, since, mentor_id LIMIT $13",
        rules.first_client_standard_days,
        rules.check_in_days,
        MentorAlertKind::WaitingSinceTraining as i32,
        MentorStatus::Trained as i32,
        MentorAlertKind::CheckInDue as i32,
        MentorAlertKind::CheckInOverdue as i32,
        &[MentorStatus::Active as i32, MentorStatus::Sabbatical as i32][..],
        DUE_AHEAD_DAYS,
        areas,
        after.map(|(kind, _, _)| kind),
        after.map(|(_, since, _)| since),
        after.map(|(_, _, id)| id),
        limit,
    )
    .fetch_all(connection)
    .await
}

/// Records a check-in held on `held_on`; returns when the next is due.
pub async fn record_check_in(
    connection: &mut PgConnection,
    mentor_id: Uuid,
    held_on: NaiveDate,
    recorded_by: &str,
    rules: AlertRules,
) -> Result<NaiveDate, sqlx::Error> {
    sqlx::query!(
        "INSERT INTO mentor_matching.mentor_check_in (mentor_id, held_on, recorded_by) \
         VALUES ($1, $2, $3)",
        mentor_id,
        held_on,
        recorded_by
    )
    .execute(&mut *connection)
    .await?;
    let last = sqlx::query_scalar!(
        "SELECT max(held_on) AS \"last!\" FROM mentor_matching.mentor_check_in \
         WHERE mentor_id = $1",
        mentor_id
    )
    .fetch_one(connection)
    .await?;
    Ok(last + chrono::Duration::days(i64::from(rules.check_in_days)))
}

/// How many alerts to raise per sweep transaction.
const SWEEP_BATCH: i64 = 200;

/// Announces every alert not announced before, each once: the insert into
/// `mentor_alert_raised` and the event commit together, and a concurrent
/// sweep's insert of the same alert does nothing. Returns how many it raised.
pub async fn sweep(handle: &ServiceHandle, rules: AlertRules) -> Result<usize, sqlx::Error> {
    let mut raised = 0;
    let mut after = None;
    loop {
        let mut tx = handle.begin().await?;
        let alerts = list(&mut tx, rules, None, after, SWEEP_BATCH).await?;
        for alert in &alerts {
            let alert_id = Uuid::now_v7();
            let inserted = sqlx::query!(
                "INSERT INTO mentor_matching.mentor_alert_raised (alert_id, mentor_id, kind, since) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (mentor_id, kind, since) DO NOTHING",
                alert_id,
                alert.mentor_id,
                alert.kind,
                alert.since
            )
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if inserted {
                outbox::enqueue(
                    &mut tx,
                    crate::NAME,
                    &MentorAlertRaised {
                        alert_id: alert_id.to_string(),
                        mentor_id: alert.mentor_id.to_string(),
                        area: alert.area.clone(),
                        kind: alert.kind,
                        since: alert.since.to_string(),
                        raised_at: Some(timestamp(Utc::now())),
                    },
                )
                .await?;
                raised += 1;
            }
        }
        tx.commit().await?;
        match alerts.last() {
            Some(last) if alerts.len() as i64 == SWEEP_BATCH => {
                after = Some((last.kind, last.since, last.mentor_id));
            }
            _ => return Ok(raised),
        }
    }
}

/// Sweeps every `interval` until shutdown; a failed sweep is logged and
/// tried again at the next tick.
pub async fn run_sweep(
    handle: ServiceHandle,
    rules: AlertRules,
    interval: Duration,
    shutdown: Shutdown,
) {
    cpm_runtime::periodic::run_every(interval, shutdown, || async {
        match sweep(&handle, rules).await {
            Ok(0) => {}
            Ok(raised) => tracing::info!(raised, "mentor alerts raised"),
            Err(error) => tracing::warn!(%error, "mentor alert sweep failed; trying again later"),
        }
    })
    .await;
}

/// A valid RecordCheckIn request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckIn {
    pub mentor_id: Uuid,
    pub held_on: NaiveDate,
}

impl CheckIn {
    pub fn parse(
        request: &RecordCheckInRequest,
        today: NaiveDate,
    ) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let mentor_id = parse_id("mentor_id", &request.mentor_id, &mut violations);
        let held_on = parse_date("held_on", &request.held_on, today, &mut violations);
        finish(violations)?;
        Ok(Self {
            mentor_id: mentor_id.expect("validated"),
            held_on: held_on.unwrap_or(today),
        })
    }
}

/// A valid ListMentorAlerts request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertQuery {
    /// One of the programme's areas; `None` for all the caller's.
    pub area: Option<String>,
    pub page_size: i64,
    pub after: Option<(i32, NaiveDate, Uuid)>,
}

impl AlertQuery {
    pub fn parse(
        request: &ListMentorAlertsRequest,
        programme: &ProgrammeConfig,
    ) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let area = programme.optional_area("area", &request.area, &mut violations);
        let page_size = page::page_size(request.page_size, &mut violations);
        let after = page::decode_cursor(&request.page_token, &mut violations, |parts| {
            let [kind, since, id] = parts else {
                return None;
            };
            Some((
                kind.parse().ok()?,
                NaiveDate::parse_from_str(since, "%Y-%m-%d").ok()?,
                page::parse_id(id)?,
            ))
        });
        finish(violations)?;
        Ok(Self {
            area,
            page_size,
            after,
        })
    }
}

/// The page token after `alert`.
pub fn token_after(alert: &AlertRow) -> String {
    page::encode_token(&[
        &alert.kind.to_string(),
        &alert.since.to_string(),
        &alert.mentor_id.to_string(),
    ])
}
