//! Demand on emergency services before and after support: calls by service
//! and police staff hours, each figure with who supplied it and when.
//!
//! - Before support: the referral's own figures (the 12 months before it),
//!   kept when `referral.submitted` arrives (the `referrals` consumer);
//!   staff may record better ones (window BEFORE_SUPPORT, covering
//!   `demand_before_months`).
//! - After: staff record the follow-up windows once support ended (after
//!   discharge, or once the referral was not taken on: the comparison
//!   cohort) and the window has passed; their lengths are configured
//!   (`first_follow_up_months`, `second_follow_up_months`).
//!
//! Every recording is kept; the latest per referral and window is the one
//! in use. Figures are counts, never personal text, and stay after erasure.
//! Coordinators reach the referrals of their areas (the case file's area,
//! or the referral's when no case file opened), admins every one.

use chrono::{DateTime, Months, NaiveDate, SubsecRound, Utc};
use cpm_proto::v1::{
    CaseState, DemandFigure, DemandWindow, RecordDemandRequest, ReferralStatus,
    ReferralStatusChanged, ReferralSubmitted,
};
use cpm_runtime::auth::Caller;
use cpm_runtime::bus::{HandlerError, On, ReceivedEvent, Router, ServiceHandle, Tx, referral_id};
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::{check_text, from_timestamp, parse_enum, parse_id, timestamp};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::commands::{CaseError, case_state};
use crate::db::{self, CaseLock};
use crate::domain::{CaseAccess, parse_day};

/// The most calls one figure may count for one service.
pub const MAX_CALLS: i32 = 100_000;
/// The most police staff hours one figure may count.
pub const MAX_HOURS: f64 = 100_000.0;
/// The longest `supplied_by`, in characters.
pub const MAX_SUPPLIER: usize = 200;
/// The months the referral form's figures cover.
pub const REFERRAL_MONTHS: i32 = 12;
/// Who recorded the referral's own figures.
pub const FROM_REFERRAL: &str = "referral-intake";

/// How long each window is, as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemandWindows {
    pub before_months: u32,
    pub first_follow_up_months: u32,
    pub second_follow_up_months: u32,
}

impl DemandWindows {
    pub fn of(config: &crate::Config) -> Self {
        Self {
            before_months: config.demand_before_months,
            first_follow_up_months: config.first_follow_up_months,
            second_follow_up_months: config.second_follow_up_months,
        }
    }

    /// The months `window` covers.
    pub fn months(&self, window: DemandWindow) -> u32 {
        match window {
            DemandWindow::Unspecified | DemandWindow::BeforeSupport => self.before_months,
            DemandWindow::FirstFollowUp => self.first_follow_up_months,
            DemandWindow::SecondFollowUp => self.second_follow_up_months,
        }
    }
}

/// Valid figures to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewDemand {
    pub referral_id: Uuid,
    pub window: DemandWindow,
    pub police_calls: i32,
    pub ambulance_calls: i32,
    pub nhs_111_calls: i32,
    pub other_calls: i32,
    pub police_staff_hours: f64,
    pub supplied_by: String,
    pub supplied_on: NaiveDate,
}

fn check_calls(field: &str, value: i32, violations: &mut FieldViolations) {
    if value < 0 {
        violations.add(field, "must not be negative");
    } else if value > MAX_CALLS {
        violations.add(field, "is implausibly high");
    }
}

impl NewDemand {
    /// Parses a request as of `today`, or every reason it is refused.
    pub fn parse(request: &RecordDemandRequest, today: NaiveDate) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let referral_id = parse_id("referral_id", &request.referral_id, &mut violations);
        let window = parse_enum::<DemandWindow>("window", request.window, &mut violations);
        check_calls("police_calls", request.police_calls, &mut violations);
        check_calls("ambulance_calls", request.ambulance_calls, &mut violations);
        check_calls("nhs_111_calls", request.nhs_111_calls, &mut violations);
        check_calls("other_calls", request.other_calls, &mut violations);
        let hours = request.police_staff_hours;
        if !hours.is_finite() || hours < 0.0 {
            violations.add(
                "police_staff_hours",
                "must be a number of hours, not negative",
            );
        } else if hours > MAX_HOURS {
            violations.add("police_staff_hours", "is implausibly high");
        }
        check_text(
            "supplied_by",
            &request.supplied_by,
            true,
            MAX_SUPPLIER,
            &mut violations,
        );
        let supplied_on =
            match parse_day("supplied_on", &request.supplied_on, true, &mut violations) {
                Some(day) if day > today => {
                    violations.add("supplied_on", "must not be in the future");
                    None
                }
                day => day,
            };
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            referral_id: referral_id.expect("validated"),
            window: window.expect("validated"),
            police_calls: request.police_calls,
            ambulance_calls: request.ambulance_calls,
            nhs_111_calls: request.nhs_111_calls,
            other_calls: request.other_calls,
            police_staff_hours: hours,
            supplied_by: request.supplied_by.trim().to_owned(),
            supplied_on: supplied_on.expect("validated"),
        })
    }
}

/// One recorded figure.
#[derive(Clone, Debug, PartialEq)]
pub struct DemandRow {
    pub demand_figure_id: Uuid,
    pub referral_id: Uuid,
    pub demand_window: i32,
    pub months: i32,
    pub police_calls: i32,
    pub ambulance_calls: i32,
    pub nhs_111_calls: i32,
    pub other_calls: i32,
    pub police_staff_hours: f64,
    pub supplied_by: String,
    pub supplied_on: NaiveDate,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
}

impl DemandRow {
    /// Emergency calls to every service.
    pub fn calls(&self) -> i64 {
        i64::from(self.police_calls)
            + i64::from(self.ambulance_calls)
            + i64::from(self.nhs_111_calls)
            + i64::from(self.other_calls)
    }

    pub fn window(&self) -> DemandWindow {
        DemandWindow::try_from(self.demand_window).unwrap_or_default()
    }
}

pub fn figure_to_proto(row: &DemandRow) -> DemandFigure {
    DemandFigure {
        referral_id: row.referral_id.to_string(),
        window: row.demand_window,
        months: row.months,
        police_calls: row.police_calls,
        ambulance_calls: row.ambulance_calls,
        nhs_111_calls: row.nhs_111_calls,
        other_calls: row.other_calls,
        police_staff_hours: row.police_staff_hours,
        supplied_by: row.supplied_by.clone(),
        supplied_on: row.supplied_on.to_string(),
        recorded_by: row.recorded_by.clone(),
        recorded_at: Some(timestamp(row.recorded_at)),
    }
}

async fn insert_figure(connection: &mut PgConnection, row: &DemandRow) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO contact_logging.demand_figure (demand_figure_id, referral_id, \
         demand_window, months, police_calls, ambulance_calls, nhs_111_calls, other_calls, \
         police_staff_hours, supplied_by, supplied_on, recorded_by, recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        row.demand_figure_id,
        row.referral_id,
        row.demand_window,
        row.months,
        row.police_calls,
        row.ambulance_calls,
        row.nhs_111_calls,
        row.other_calls,
        row.police_staff_hours,
        row.supplied_by,
        row.supplied_on,
        row.recorded_by,
        row.recorded_at,
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// The figures in use for `referral_ids`: the latest per referral and window.
pub async fn current_figures(
    connection: &mut PgConnection,
    referral_ids: &[Uuid],
) -> Result<Vec<DemandRow>, sqlx::Error> {
    sqlx::query_as!(
        DemandRow,
        "SELECT DISTINCT ON (referral_id, demand_window) demand_figure_id, referral_id, \
         demand_window, months, police_calls, ambulance_calls, nhs_111_calls, other_calls, \
         police_staff_hours, supplied_by, supplied_on, recorded_by, recorded_at \
         FROM contact_logging.demand_figure WHERE referral_id = ANY($1) \
         ORDER BY referral_id, demand_window, recorded_at DESC, demand_figure_id DESC",
        referral_ids
    )
    .fetch_all(connection)
    .await
}

async fn figure_history(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Vec<DemandRow>, sqlx::Error> {
    sqlx::query_as!(
        DemandRow,
        "SELECT demand_figure_id, referral_id, demand_window, months, police_calls, \
         ambulance_calls, nhs_111_calls, other_calls, police_staff_hours, supplied_by, \
         supplied_on, recorded_by, recorded_at \
         FROM contact_logging.demand_figure WHERE referral_id = $1 \
         ORDER BY recorded_at DESC, demand_figure_id DESC",
        referral_id
    )
    .fetch_all(connection)
    .await
}

/// Remembers a submitted referral; false when it was already known.
async fn insert_referral(
    connection: &mut PgConnection,
    referral_id: Uuid,
    agency_id: &str,
    area: &str,
    submitted_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!(
        "INSERT INTO contact_logging.referral (referral_id, agency_id, area, submitted_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (referral_id) DO NOTHING",
        referral_id,
        agency_id,
        area,
        submitted_at
    )
    .execute(connection)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

async fn referral_area(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT area FROM contact_logging.referral WHERE referral_id = $1",
        referral_id
    )
    .fetch_optional(connection)
    .await
}

async fn insert_not_taken_on(
    connection: &mut PgConnection,
    referral_id: Uuid,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO contact_logging.referral_not_taken_on (referral_id, not_taken_on_at) \
         VALUES ($1, $2) ON CONFLICT (referral_id) DO NOTHING",
        referral_id,
        at
    )
    .execute(connection)
    .await?;
    Ok(())
}

async fn not_taken_on_at(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT not_taken_on_at FROM contact_logging.referral_not_taken_on \
         WHERE referral_id = $1",
        referral_id
    )
    .fetch_optional(connection)
    .await
}

/// When support of a referral `access` admits ended (discharge, or not
/// taken on), `None` while it goes on or has not started; NOT_FOUND for a
/// referral the caller may not reach, as for an unknown one.
async fn admitted_support_end(
    connection: &mut PgConnection,
    access: &CaseAccess,
    referral_id: Uuid,
) -> Result<Option<DateTime<Utc>>, CaseError> {
    let ended = not_taken_on_at(connection, referral_id).await?;
    match db::fetch_case_file(connection, referral_id, CaseLock::None).await? {
        Some(case_file) => {
            let case_file = access.admit(Some(case_file))?;
            if case_state(&case_file) == CaseState::Discharged {
                return Ok(case_file.discharged_at);
            }
            Ok(ended)
        }
        None => match referral_area(connection, referral_id).await? {
            Some(area) if access.admits_area(&area) => Ok(ended),
            _ => Err(CaseError::NotFound),
        },
    }
}

/// The first day figures for a follow-up window of `months` after
/// `support_ended` may be supplied: the day after the window closes.
pub fn follow_up_due(support_ended: DateTime<Utc>, months: u32) -> NaiveDate {
    support_ended.date_naive() + Months::new(months)
}

/// Records figures for one window of a referral, once they can be known.
pub async fn record_demand(
    handle: &ServiceHandle,
    caller: &Caller,
    access: &CaseAccess,
    windows: DemandWindows,
    new: &NewDemand,
) -> Result<DemandRow, CaseError> {
    let mut transaction = handle.begin().await?;
    let ended = admitted_support_end(&mut transaction, access, new.referral_id).await?;
    let months = windows.months(new.window);
    if new.window != DemandWindow::BeforeSupport {
        let Some(ended) = ended else {
            return Err(CaseError::WrongState(
                "follow-up demand is recorded once support ended: after discharge, or once \
                 the referral was not taken on"
                    .into(),
            ));
        };
        let due = follow_up_due(ended, months);
        if new.supplied_on < due {
            return Err(CaseError::WrongState(format!(
                "{} covers the {months} months to {due}; record it from then",
                new.window.as_str_name()
            )));
        }
    }
    let row = DemandRow {
        demand_figure_id: Uuid::now_v7(),
        referral_id: new.referral_id,
        demand_window: new.window as i32,
        months: i32::try_from(months).unwrap_or(i32::MAX),
        police_calls: new.police_calls,
        ambulance_calls: new.ambulance_calls,
        nhs_111_calls: new.nhs_111_calls,
        other_calls: new.other_calls,
        police_staff_hours: new.police_staff_hours,
        supplied_by: new.supplied_by.clone(),
        supplied_on: new.supplied_on,
        recorded_by: caller.subject.clone(),
        recorded_at: Utc::now().trunc_subsecs(6),
    };
    insert_figure(&mut transaction, &row).await?;
    transaction.commit().await?;
    tracing::info!(
        referral_id = %row.referral_id,
        window = new.window.as_str_name(),
        "demand recorded"
    );
    Ok(row)
}

/// The figures in use for a referral (in window order) and every figure
/// recorded (newest first).
pub async fn demand(
    handle: &ServiceHandle,
    access: &CaseAccess,
    referral_id: Uuid,
) -> Result<(Vec<DemandRow>, Vec<DemandRow>), CaseError> {
    let mut transaction = handle.begin().await?;
    admitted_support_end(&mut transaction, access, referral_id).await?;
    let current = current_figures(&mut transaction, &[referral_id]).await?;
    let history = figure_history(&mut transaction, referral_id).await?;
    transaction.commit().await?;
    Ok((current, history))
}

/// The `referrals` consumer: keeps each referral's area and its demand
/// before support (`referral.submitted`), and which referrals were not
/// taken on (`referral.status_changed`), for the impact report's
/// comparison cohort.
pub fn referrals() -> Router<Referrals> {
    Router::new(crate::NAME, "referrals", Referrals)
        .on::<ReferralSubmitted>()
        .on::<ReferralStatusChanged>()
}

pub struct Referrals;

/// The referral's figures as the demand before support, `None` when the
/// referrer gave none. Calls the total counts beyond those given by
/// service are kept as other calls, so the total stays what was referred.
pub fn before_support(
    submitted: &ReferralSubmitted,
    referral_id: Uuid,
    submitted_at: DateTime<Utc>,
) -> Option<DemandRow> {
    if submitted.demand.is_none() && submitted.emergency_calls_last_12_months <= 0 {
        return None;
    }
    let demand = submitted.demand.unwrap_or_default();
    let count = |value: i32| value.clamp(0, MAX_CALLS);
    let by_service = count(demand.police_calls)
        + count(demand.ambulance_calls)
        + count(demand.nhs_111_calls)
        + count(demand.other_calls);
    let unattributed = (count(submitted.emergency_calls_last_12_months) - by_service).max(0);
    let hours = demand.police_staff_hours;
    Some(DemandRow {
        demand_figure_id: Uuid::now_v7(),
        referral_id,
        demand_window: DemandWindow::BeforeSupport as i32,
        months: REFERRAL_MONTHS,
        police_calls: count(demand.police_calls),
        ambulance_calls: count(demand.ambulance_calls),
        nhs_111_calls: count(demand.nhs_111_calls),
        other_calls: count(demand.other_calls) + unattributed,
        police_staff_hours: if hours.is_finite() {
            hours.clamp(0.0, MAX_HOURS)
        } else {
            0.0
        },
        supplied_by: format!("referrer (agency {})", submitted.agency_id),
        supplied_on: submitted_at.date_naive(),
        recorded_by: FROM_REFERRAL.to_owned(),
        recorded_at: submitted_at.trunc_subsecs(6),
    })
}

impl On<ReferralSubmitted> for Referrals {
    async fn on(
        &self,
        connection: &mut Tx,
        submitted: ReferralSubmitted,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let referral_id = referral_id(&submitted.referral_id)?;
        let submitted_at = submitted
            .submitted_at
            .as_ref()
            .and_then(from_timestamp)
            .unwrap_or_else(Utc::now);
        let new = insert_referral(
            connection,
            referral_id,
            &submitted.agency_id,
            &submitted.area,
            submitted_at,
        )
        .await?;
        let figure = before_support(&submitted, referral_id, submitted_at);
        if new && let Some(figure) = &figure {
            insert_figure(connection, figure).await?;
        }
        tracing::info!(%referral_id, new, with_demand = figure.is_some(), "referral kept");
        Ok(())
    }
}

impl On<ReferralStatusChanged> for Referrals {
    /// Remembers when a referral was not taken on: its follow-up windows
    /// start then. Other statuses change nothing here.
    async fn on(
        &self,
        connection: &mut Tx,
        changed: ReferralStatusChanged,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        if changed.status != ReferralStatus::NotTakenOn as i32 {
            return Ok(());
        }
        let referral_id = referral_id(&changed.referral_id)?;
        let at = changed
            .changed_at
            .as_ref()
            .and_then(from_timestamp)
            .unwrap_or_else(Utc::now);
        insert_not_taken_on(connection, referral_id, at).await?;
        tracing::info!(%referral_id, "referral not taken on");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpm_proto::v1::DemandFigures;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 3).unwrap()
    }

    fn valid() -> RecordDemandRequest {
        RecordDemandRequest {
            referral_id: Uuid::now_v7().to_string(),
            window: DemandWindow::FirstFollowUp as i32,
            police_calls: 3,
            ambulance_calls: 1,
            nhs_111_calls: 0,
            other_calls: 0,
            police_staff_hours: 12.5,
            supplied_by: "Durham Constabulary data team".into(),
            supplied_on: "2026-11-30".into(),
        }
    }

    fn fields(request: &RecordDemandRequest) -> Vec<String> {
        NewDemand::parse(request, today())
            .unwrap_err()
            .fields()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_complete_figure_parses() {
        let demand = NewDemand::parse(&valid(), today()).unwrap();
        assert_eq!(demand.window, DemandWindow::FirstFollowUp);
        assert_eq!(demand.police_staff_hours, 12.5);
        assert_eq!(
            demand.supplied_on,
            NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()
        );
    }

    #[test]
    fn every_demand_violation_is_reported_at_once() {
        let request = RecordDemandRequest {
            referral_id: String::new(),
            window: 7,
            police_calls: -1,
            ambulance_calls: MAX_CALLS + 1,
            nhs_111_calls: -3,
            other_calls: i32::MIN,
            police_staff_hours: f64::NAN,
            supplied_by: "team\u{0}".into(),
            supplied_on: "2026-12-04".into(),
        };
        assert_eq!(
            fields(&request),
            [
                "referral_id",
                "window",
                "police_calls",
                "ambulance_calls",
                "nhs_111_calls",
                "other_calls",
                "police_staff_hours",
                "supplied_by",
                "supplied_on"
            ]
        );
    }

    #[test]
    fn who_supplied_a_figure_and_when_are_required() {
        let mut request = valid();
        request.supplied_by = "  ".into();
        request.supplied_on = String::new();
        assert_eq!(fields(&request), ["supplied_by", "supplied_on"]);
        request.supplied_by = "x".repeat(MAX_SUPPLIER + 1);
        request.supplied_on = "30/11/2026".into();
        assert_eq!(fields(&request), ["supplied_by", "supplied_on"]);
    }

    #[test]
    fn hours_must_be_finite_and_not_negative() {
        let mut request = valid();
        for hours in [-0.5, f64::INFINITY, MAX_HOURS + 1.0] {
            request.police_staff_hours = hours;
            assert_eq!(fields(&request), ["police_staff_hours"], "{hours}");
        }
    }

    #[test]
    fn a_follow_up_is_due_when_its_window_has_passed() {
        let discharged = DateTime::parse_from_rfc3339("2026-01-31T15:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            follow_up_due(discharged, 6),
            NaiveDate::from_ymd_opt(2026, 7, 31).unwrap()
        );
        assert_eq!(
            follow_up_due(discharged, 1),
            NaiveDate::from_ymd_opt(2026, 2, 28).unwrap(),
            "a month after the 31st ends on the month's last day"
        );
    }

    #[test]
    fn the_referrals_figures_become_the_demand_before_support_with_every_call_kept() {
        let referral_id = Uuid::now_v7();
        let at = DateTime::parse_from_rfc3339("2026-03-14T09:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let submitted = ReferralSubmitted {
            agency_id: "agency-7".into(),
            emergency_calls_last_12_months: 40,
            demand: Some(DemandFigures {
                police_calls: 25,
                ambulance_calls: 5,
                nhs_111_calls: 2,
                other_calls: 1,
                police_staff_hours: 60.5,
            }),
            ..Default::default()
        };
        let figure = before_support(&submitted, referral_id, at).unwrap();
        assert_eq!(
            figure.calls(),
            40,
            "the 7 calls not given by service count as other"
        );
        assert_eq!(figure.other_calls, 8);
        assert_eq!(figure.police_staff_hours, 60.5);
        assert_eq!(figure.months, 12);
        assert_eq!(figure.window(), DemandWindow::BeforeSupport);
        assert_eq!(figure.supplied_by, "referrer (agency agency-7)");
        assert_eq!(figure.supplied_on, at.date_naive());

        let only_a_total = ReferralSubmitted {
            emergency_calls_last_12_months: 12,
            ..Default::default()
        };
        let figure = before_support(&only_a_total, referral_id, at).unwrap();
        assert_eq!((figure.other_calls, figure.police_staff_hours), (12, 0.0));
        assert_eq!(
            before_support(&ReferralSubmitted::default(), referral_id, at),
            None,
            "no figures given: nothing is assumed"
        );
    }
}
