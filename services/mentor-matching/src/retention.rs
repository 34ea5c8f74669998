//! Retention of the mentor register (DOMAIN §Mentors): a mentor who left or
//! declined has their data kept `retention_days` and then erased; a mentor
//! on sabbatical for more than `sabbatical_days` counts as gone, so theirs
//! is erased `sabbatical_days + retention_days` after the sabbatical began;
//! and a mentor is erased at once on request ([`erase_mentor`]). Subject
//! access ([`export_mentor`]) and a mentor reading their own record
//! ([`get_mentor`]) live here too, with who may reach whom ([`Reach`]).
//!
//! **Erasure** keeps a tombstone: the ID, a final status (LEFT, unless the
//! mentor had declined), the primary area (the register's constraints, and
//! who may see the tombstone, need one), the capacity, when the mentor was
//! registered and when, by whom and why they were erased. Everything else
//! is cleared: name, gender, lived experience, age band, availability, the
//! ex-service-user flag, training, vetting and agreement dates and cohort,
//! the other areas, the reasons of their status changes, and the reasons of
//! every stored proposal that names them (which name the pair by name). A
//! CHECK constraint (`mentor_erased_holds_nothing`) holds tombstones to it.
//! A mentor in good standing loses it (`principal.status_changed`), in the
//! same transaction. An erased mentor is never proposed (their status is
//! final and no safeguarding or agreement is on record), and the register
//! leaves them out (`db::fetch_mentors`, `db::list_mentors`): GetMentor and
//! every RPC naming them answer NOT_FOUND, ListMentors skips them. Their
//! export is the tombstone, with their allocations, proposals and reads.
//!
//! **The sweep** ([`sweep`], every `retention_sweep_interval_secs`, started
//! by the service under the runtime's supervision) may run in several
//! replicas at once: each erasure claims one due mentor with `FOR UPDATE
//! SKIP LOCKED` and commits on its own, so no mentor is erased twice and a
//! failure loses nothing done before it; a failed sweep is logged and tried
//! again at the next interval. Periods count from `mentor.status_since`,
//! which a trigger restarts whenever the status changes.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use cpm_proto::v1::{
    AgeBand, Availability, EraseMentorRequest, Gender, LivedExperience, MentorStatus,
    TrainingFormat,
};
use cpm_runtime::Shutdown;
use cpm_runtime::auth::{AreaScope, Caller, Role};
use cpm_runtime::bus::{ServiceHandle, Tx};
use cpm_runtime::config::{ConfigError, ProgrammeConfig};
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::{check_text, parse_id};
use cpm_runtime::service::ServiceContext;
use cpm_runtime::standing::{self, Principal};
use cpm_runtime::supervisor::{Lifetime, TaskSpec};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit;
use crate::commands::MatchingError;
use crate::db::{self, MentorRow};
use crate::status;

/// Longest reason for an erasure.
pub const MAX_ERASURE_REASON: usize = 500;
/// Who erases mentors whose retention period is over.
pub const SWEEP: &str = "mentor-matching retention sweep";
/// The reason kept for the move to LEFT that an erasure makes.
pub const ERASED: &str = "personal data erased";
/// Longest a retention period or sabbatical may be configured: ten years.
pub const MAX_DAYS: u32 = 3650;

/// How long a mentor's data is kept, from `[mentor_matching]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Periods {
    /// Days kept after a mentor left or declined (`retention_days`).
    pub retention_days: u32,
    /// Days on sabbatical after which a mentor counts as gone (`sabbatical_days`).
    pub sabbatical_days: u32,
}

impl Periods {
    pub fn of(config: &crate::Config) -> Self {
        Self {
            retention_days: config.retention_days,
            sabbatical_days: config.sabbatical_days,
        }
    }

    /// Days after a mentor left or declined that their data is erased.
    fn after_leaving(self) -> i32 {
        i32::try_from(self.retention_days).unwrap_or(i32::MAX)
    }

    /// Days after a sabbatical began that the mentor's data is erased: the
    /// sabbatical's limit, then the retention period.
    fn after_sabbatical_began(self) -> i32 {
        i32::try_from(self.sabbatical_days.saturating_add(self.retention_days)).unwrap_or(i32::MAX)
    }

    /// The reason the sweep keeps for erasing a mentor in `status`.
    fn reason(self, status: MentorStatus) -> String {
        match status {
            MentorStatus::Sabbatical => format!(
                "retention: on sabbatical for more than {} days, then kept {} days",
                self.sabbatical_days, self.retention_days
            ),
            _ => format!(
                "retention: left or declined more than {} days ago",
                self.retention_days
            ),
        }
    }
}

/// The retention settings' rules: every period and the interval at least
/// 1, the periods at most [`MAX_DAYS`].
pub fn check(config: &crate::Config) -> Result<(), ConfigError> {
    if config.retention_sweep_interval_secs == 0 {
        return Err(ConfigError::invalid(
            "mentor_matching.retention_sweep_interval_secs",
            "must be at least 1",
        ));
    }
    for (key, days) in [
        ("mentor_matching.retention_days", config.retention_days),
        ("mentor_matching.sabbatical_days", config.sabbatical_days),
    ] {
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(ConfigError::invalid(
                key,
                format!("must be between 1 and {MAX_DAYS} days"),
            ));
        }
    }
    Ok(())
}

/// Whose records a caller reaches: a mentor only their own, staff the
/// mentors of their areas (see `commands`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// A mentor: the record their token's `mentor_id` names (none when it
    /// names no mentor ID).
    Own(Option<Uuid>),
    /// Staff: the mentors who work in one of these areas.
    Areas(AreaScope),
}

impl Reach {
    pub fn of(caller: &Caller, programme: &ProgrammeConfig) -> Self {
        match caller.role {
            Role::Mentor => Reach::Own(
                caller
                    .mentor_id
                    .as_deref()
                    .and_then(|id| Uuid::parse_str(id).ok()),
            ),
            _ => Reach::Areas(programme.staff_scope(caller)),
        }
    }

    /// Whether the mentor `mentor_id`, working in `areas`, is within reach.
    pub fn admits(&self, mentor_id: Uuid, areas: &[String]) -> bool {
        match self {
            Reach::Own(own) => *own == Some(mentor_id),
            Reach::Areas(scope) => areas.iter().any(|area| scope.admits(area)),
        }
    }
}

/// A valid EraseMentor request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erasure {
    pub mentor_id: Uuid,
    pub reason: String,
}

impl Erasure {
    pub fn parse(request: &EraseMentorRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let mentor_id = parse_id("mentor_id", &request.mentor_id, &mut violations);
        check_text(
            "reason",
            &request.reason,
            true,
            MAX_ERASURE_REASON,
            &mut violations,
        );
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            mentor_id: mentor_id.expect("validated"),
            reason: request.reason.trim().to_owned(),
        })
    }
}

/// The `mentor_id` of a GetMentor or ExportMentorData request.
pub fn parse_mentor_id(value: &str) -> Result<Uuid, FieldViolations> {
    let mut violations = FieldViolations::new();
    let mentor_id = parse_id("mentor_id", value, &mut violations);
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(mentor_id.expect("validated"))
}

/// What erasure needs to know of a mentor, erased or not.
#[derive(Clone, Debug, sqlx::FromRow)]
struct MentorState {
    mentor_id: Uuid,
    status: i32,
    areas: Vec<String>,
    erased_at: Option<DateTime<Utc>>,
}

/// A mentor's erasure: now or earlier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erased {
    pub mentor_id: Uuid,
    pub erased_at: DateTime<Utc>,
    pub status: MentorStatus,
}

/// Erases a mentor of the caller's `scope` at once: see the module's
/// documentation. Refused while the mentor supports clients. Erasing an
/// erased mentor changes nothing and answers with the first erasure.
pub async fn erase_mentor(
    handle: &ServiceHandle,
    caller: &Caller,
    scope: &AreaScope,
    erasure: &Erasure,
) -> Result<Erased, MatchingError> {
    let id = erasure.mentor_id;
    let mut transaction = handle.begin().await?;
    let mentor = lock_state(&mut transaction, id)
        .await?
        .filter(|mentor| mentor.areas.iter().any(|area| scope.admits(area)))
        .ok_or(MatchingError::MentorNotFound(id))?;
    if let Some(erased_at) = mentor.erased_at {
        transaction.commit().await?;
        return Ok(Erased {
            mentor_id: id,
            erased_at,
            status: MentorStatus::try_from(mentor.status).unwrap_or_default(),
        });
    }
    // Counted once the mentor is locked: an allocation naming them
    // (which locks them first) has committed or waits for this erasure.
    let clients = current_clients(&mut transaction, id).await?;
    if clients > 0 {
        return Err(MatchingError::StatusRefused(format!(
            "the mentor still supports {clients} client(s): allocate them other mentors \
             before erasing the mentor's data"
        )));
    }
    let erased = erase(&mut transaction, &mentor, &caller.subject, &erasure.reason).await?;
    transaction.commit().await?;
    tracing::info!(mentor_id = %id, "mentor erased on request");
    Ok(erased)
}

/// Erases a locked mentor who is not erased yet and supports nobody,
/// leaving the tombstone.
async fn erase(
    transaction: &mut Tx,
    mentor: &MentorState,
    erased_by: &str,
    reason: &str,
) -> Result<Erased, sqlx::Error> {
    let id = mentor.mentor_id;
    let from = MentorStatus::try_from(mentor.status).unwrap_or_default();
    let to = if status::in_good_standing(from) {
        MentorStatus::Left
    } else {
        from
    };
    // The reasons go first, so that the change recorded below keeps its own.
    sqlx::query!(
        "UPDATE mentor_matching.mentor_status_change SET reason = '' \
         WHERE mentor_id = $1 AND reason <> ''",
        id
    )
    .execute(&mut **transaction)
    .await?;
    // Free text staff wrote about the mentor's pairs: why a pair was
    // confirmed against the proposals, why it did not work, why two mentors
    // must not be paired (the marks themselves stay).
    sqlx::query!(
        "UPDATE mentor_matching.allocation \
         SET end_note = '', reason = CASE WHEN reason IS NULL THEN NULL ELSE '' END \
         WHERE (end_note <> '' OR reason <> '') AND allocation_id IN ( \
           SELECT allocation_id FROM mentor_matching.allocation_mentor WHERE mentor_id = $1)",
        id
    )
    .execute(&mut **transaction)
    .await?;
    sqlx::query!(
        "UPDATE mentor_matching.mentor_pair SET incompatible_reason = '' \
         WHERE incompatible_reason <> '' AND (mentor_a = $1 OR mentor_b = $1)",
        id
    )
    .execute(&mut **transaction)
    .await?;
    if to != from {
        db::change_status(transaction, id, from, to, ERASED, erased_by).await?;
        standing::publish(
            transaction,
            crate::NAME,
            &Principal::mentor(&id.to_string()),
            false,
        )
        .await?;
    }
    let erased_at = sqlx::query_scalar!(
        "UPDATE mentor_matching.mentor SET display_name = '', gender = 0, \
           lived_experience = '{}', areas = ARRAY[area], training_cohort = '', \
           training_format = 0, training_completed_on = NULL, safeguarding_trained_on = NULL, \
           agreement_signed_on = NULL, vetted_on = NULL, age_band = 0, availability = '{}', \
           ex_service_user = false, erased_at = now(), erased_by = $2, erasure_reason = $3 \
         WHERE mentor_id = $1 AND erased_at IS NULL RETURNING erased_at AS \"erased_at!\"",
        id,
        erased_by,
        reason
    )
    .fetch_one(&mut **transaction)
    .await?;
    blank_proposals_naming(transaction, id).await?;
    Ok(Erased {
        mentor_id: id,
        erased_at,
        status: to,
    })
}

/// Locks a mentor, erased or not.
async fn lock_state(
    connection: &mut PgConnection,
    mentor_id: Uuid,
) -> Result<Option<MentorState>, sqlx::Error> {
    sqlx::query_as!(
        MentorState,
        "SELECT mentor_id, status, areas, erased_at FROM mentor_matching.mentor \
         WHERE mentor_id = $1 FOR UPDATE",
        mentor_id
    )
    .fetch_optional(connection)
    .await
}

/// The clients a mentor supports now: their active allocations.
async fn current_clients(
    connection: &mut PgConnection,
    mentor_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT count(*) AS \"count!\" FROM mentor_matching.allocation_mentor \
         JOIN mentor_matching.allocation \
           ON allocation.allocation_id = allocation_mentor.allocation_id \
         WHERE allocation_mentor.mentor_id = $1 AND allocation.active",
        mentor_id
    )
    .fetch_one(connection)
    .await
}

/// Blanks the reasons of every stored proposal naming `mentor_id` (they
/// name both mentors of the pair), locking them in ID order so that two
/// erasures sharing proposals cannot deadlock.
async fn blank_proposals_naming(
    connection: &mut PgConnection,
    mentor_id: Uuid,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE mentor_matching.proposal SET reasons = '{}' WHERE proposal_id IN ( \
           SELECT proposal_id FROM mentor_matching.proposal \
           WHERE mentor_ids @> ARRAY[$1::uuid] AND reasons <> '{}' \
           ORDER BY proposal_id FOR UPDATE)",
        mentor_id
    )
    .execute(connection)
    .await?
    .rows_affected())
}

/// Locks one mentor whose retention period is over and who supports
/// nobody, skipping those another sweep (or an erasure) holds.
async fn claim_due(
    connection: &mut PgConnection,
    periods: Periods,
) -> Result<Option<MentorState>, sqlx::Error> {
    sqlx::query_as!(
        MentorState,
        "SELECT mentor_id, status, areas, erased_at FROM mentor_matching.mentor \
         WHERE erased_at IS NULL \
           AND ((status = ANY($1) AND status_since < now() - make_interval(days => $2)) \
             OR (status = $3 AND status_since < now() - make_interval(days => $4))) \
           AND NOT EXISTS (SELECT 1 FROM mentor_matching.allocation_mentor \
             JOIN mentor_matching.allocation \
               ON allocation.allocation_id = allocation_mentor.allocation_id \
             WHERE allocation_mentor.mentor_id = mentor.mentor_id AND allocation.active) \
         ORDER BY status_since, mentor_id LIMIT 1 \
         FOR UPDATE SKIP LOCKED",
        &[MentorStatus::Left as i32, MentorStatus::Declined as i32],
        periods.after_leaving(),
        MentorStatus::Sabbatical as i32,
        periods.after_sabbatical_began(),
    )
    .fetch_optional(connection)
    .await
}

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// The mentors this sweep erased, in order.
    pub erased: Vec<Uuid>,
    /// Proposals naming a mentor erased earlier whose reasons were blanked
    /// late (a ProposeMatches that read the mentor just before the erasure
    /// committed).
    pub late_proposals: u64,
}

/// Erases every mentor whose retention period is over, each in a
/// transaction of its own (see the module's documentation); then blanks
/// any proposal reasons naming an erased mentor that were stored while the
/// mentor was being erased. Safe to run in several places at once.
pub async fn sweep(handle: &ServiceHandle, periods: Periods) -> Result<Swept, sqlx::Error> {
    let mut swept = Swept::default();
    loop {
        let mut transaction = handle.begin().await?;
        let Some(mentor) = claim_due(&mut transaction, periods).await? else {
            transaction.commit().await?;
            break;
        };
        let status = MentorStatus::try_from(mentor.status).unwrap_or_default();
        erase(&mut transaction, &mentor, SWEEP, &periods.reason(status)).await?;
        transaction.commit().await?;
        tracing::info!(
            mentor_id = %mentor.mentor_id,
            status = status.as_str_name(),
            "mentor erased: retention period over"
        );
        swept.erased.push(mentor.mentor_id);
    }
    // Locked in ID order, as an erasure locks them.
    swept.late_proposals = sqlx::query!(
        "UPDATE mentor_matching.proposal SET reasons = '{}' WHERE proposal_id IN ( \
           SELECT proposal_id FROM mentor_matching.proposal \
           WHERE reasons <> '{}' AND mentor_ids && ARRAY( \
             SELECT mentor_id FROM mentor_matching.mentor WHERE erased_at IS NOT NULL) \
           ORDER BY proposal_id FOR UPDATE)"
    )
    .execute(handle.pool())
    .await?
    .rows_affected();
    Ok(swept)
}

/// Sweeps every `interval` until shutdown, the first time at once; a
/// failed sweep is logged and tried again at the next interval.
pub async fn run_sweeper(
    handle: ServiceHandle,
    periods: Periods,
    interval: Duration,
    shutdown: Shutdown,
) {
    loop {
        match sweep(&handle, periods).await {
            Ok(swept) if swept == Swept::default() => {}
            Ok(swept) => tracing::info!(
                erased = swept.erased.len(),
                late_proposals = swept.late_proposals,
                "retention sweep done"
            ),
            Err(error) => tracing::warn!(
                %error,
                "retention sweep failed; trying again at the next interval"
            ),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Starts the sweep under the runtime's supervision: restarted if it ever
/// panics; not essential, since the service serves without it.
pub fn spawn_sweeper(context: &ServiceContext, handle: &ServiceHandle, config: &crate::Config) {
    let periods = Periods::of(config);
    let interval = Duration::from_secs(config.retention_sweep_interval_secs);
    let (handle, shutdown) = (handle.clone(), context.shutdown.clone());
    let spec = TaskSpec {
        name: format!("{}.retention-sweep", crate::NAME),
        service: crate::NAME,
        essential: false,
        lifetime: Lifetime::UntilShutdown,
    };
    context.spawn_loop(spec, move || {
        run_sweeper(handle.clone(), periods, interval, shutdown.clone())
    });
}

/// One mentor's record in full, erased or not, for their export.
#[derive(Clone, Debug, sqlx::FromRow)]
struct Record {
    mentor_id: Uuid,
    display_name: String,
    gender: i32,
    areas: Vec<String>,
    lived_experience: Vec<i32>,
    status: i32,
    status_since: DateTime<Utc>,
    capacity: i32,
    trained_on: DateTime<Utc>,
    registered_by: String,
    training_cohort: String,
    training_format: i32,
    training_completed_on: Option<NaiveDate>,
    safeguarding_trained_on: Option<NaiveDate>,
    agreement_signed_on: Option<NaiveDate>,
    vetted_on: Option<NaiveDate>,
    age_band: i32,
    availability: Vec<i32>,
    ex_service_user: bool,
    erased_at: Option<DateTime<Utc>>,
    erased_by: Option<String>,
    erasure_reason: Option<String>,
}

/// The name of enum value `value`, or the number when it is unknown.
fn enum_name<E: TryFrom<i32>>(value: i32, name: fn(&E) -> &'static str) -> String {
    E::try_from(value).map_or_else(|_| value.to_string(), |known| name(&known).to_owned())
}

fn status_name(value: i32) -> String {
    enum_name::<MentorStatus>(value, MentorStatus::as_str_name)
}

/// Everything mentor matching holds about a mentor within `reach`, as one
/// JSON document; the export is recorded in the read log first, so the
/// document shows it. NOT_FOUND beyond `reach`.
pub async fn export_mentor(
    handle: &ServiceHandle,
    caller: &Caller,
    reach: &Reach,
    mentor_id: Uuid,
) -> Result<serde_json::Value, MatchingError> {
    let mut transaction = handle.begin().await?;
    let record = sqlx::query_as!(
        Record,
        "SELECT mentor_id, display_name, gender, areas, lived_experience, status, status_since, \
           capacity, trained_on, registered_by, training_cohort, training_format, \
           training_completed_on, safeguarding_trained_on, agreement_signed_on, vetted_on, \
           age_band, availability, ex_service_user, erased_at, erased_by, erasure_reason \
         FROM mentor_matching.mentor WHERE mentor_id = $1",
        mentor_id
    )
    .fetch_optional(&mut *transaction)
    .await?
    .filter(|record| reach.admits(record.mentor_id, &record.areas))
    .ok_or(MatchingError::MentorNotFound(mentor_id))?;
    audit::record(
        &mut transaction,
        caller,
        audit::EXPORT_MENTOR_DATA,
        [mentor_id],
    )
    .await?;

    let history = sqlx::query!(
        "SELECT from_status, to_status, reason, changed_by, changed_at \
         FROM mentor_matching.mentor_status_change WHERE mentor_id = $1 \
         ORDER BY changed_at, change_id",
        mentor_id
    )
    .fetch_all(&mut *transaction)
    .await?;
    let allocations = sqlx::query!(
        "SELECT allocation.allocation_id, allocation.referral_id, waiting_client.area, \
           allocation.confirmed_by, allocation.confirmed_at, allocation.active, \
           allocation.ended_at, allocation.proposal_id \
         FROM mentor_matching.allocation_mentor \
         JOIN mentor_matching.allocation \
           ON allocation.allocation_id = allocation_mentor.allocation_id \
         JOIN mentor_matching.waiting_client \
           ON waiting_client.referral_id = allocation.referral_id \
         WHERE allocation_mentor.mentor_id = $1 \
         ORDER BY allocation.confirmed_at, allocation.allocation_id",
        mentor_id
    )
    .fetch_all(&mut *transaction)
    .await?;
    let proposals = sqlx::query!(
        "SELECT proposal_id, referral_id, score, weights_version, proposed_at \
         FROM mentor_matching.proposal WHERE mentor_ids @> ARRAY[$1::uuid] \
         ORDER BY proposed_at, proposal_id",
        mentor_id
    )
    .fetch_all(&mut *transaction)
    .await?;
    let reads = audit::reads_of(&mut transaction, mentor_id).await?;
    transaction.commit().await?;

    let names = |values: &[i32], name: fn(i32) -> String| -> Vec<String> {
        values.iter().map(|value| name(*value)).collect()
    };
    Ok(json!({
        "exported_at": Utc::now(),
        "exported_by": caller.subject,
        "held_by": crate::NAME,
        "mentor": {
            "mentor_id": record.mentor_id,
            "display_name": record.display_name,
            "gender": enum_name::<Gender>(record.gender, Gender::as_str_name),
            "age_band": enum_name::<AgeBand>(record.age_band, AgeBand::as_str_name),
            "areas": record.areas,
            "lived_experience": names(&record.lived_experience, |value| {
                enum_name::<LivedExperience>(value, LivedExperience::as_str_name)
            }),
            "availability": names(&record.availability, |value| {
                enum_name::<Availability>(value, Availability::as_str_name)
            }),
            "ex_service_user": record.ex_service_user,
            "capacity": record.capacity,
            "status": status_name(record.status),
            "status_since": record.status_since,
            "registered_at": record.trained_on,
            "registered_by": record.registered_by,
            "erased_at": record.erased_at,
            "erased_by": record.erased_by,
            "erasure_reason": record.erasure_reason,
        },
        "training": {
            "cohort": record.training_cohort,
            "format": enum_name::<TrainingFormat>(record.training_format, TrainingFormat::as_str_name),
            "completed_on": record.training_completed_on,
            "safeguarding_trained_on": record.safeguarding_trained_on,
            "agreement_signed_on": record.agreement_signed_on,
            "vetted_on": record.vetted_on,
        },
        "status_history": history.iter().map(|change| json!({
            "from": status_name(change.from_status),
            "to": status_name(change.to_status),
            "reason": change.reason,
            "changed_by": change.changed_by,
            "changed_at": change.changed_at,
        })).collect::<Vec<_>>(),
        "allocations": allocations.iter().map(|allocation| json!({
            "allocation_id": allocation.allocation_id,
            "referral_id": allocation.referral_id,
            "area": allocation.area,
            "confirmed_by": allocation.confirmed_by,
            "confirmed_at": allocation.confirmed_at,
            "active": allocation.active,
            "ended_at": allocation.ended_at,
            "proposal_id": allocation.proposal_id,
        })).collect::<Vec<_>>(),
        "proposals": proposals.iter().map(|proposal| json!({
            "proposal_id": proposal.proposal_id,
            "referral_id": proposal.referral_id,
            "proposed_at": proposal.proposed_at,
            "score": proposal.score,
            "weights_version": proposal.weights_version,
        })).collect::<Vec<_>>(),
        "reads": reads,
    }))
}

/// A mentor's record for a caller who reaches them, the read recorded in
/// the same transaction; NOT_FOUND beyond `reach` and once erased.
pub async fn get_mentor(
    handle: &ServiceHandle,
    caller: &Caller,
    reach: &Reach,
    mentor_id: Uuid,
) -> Result<MentorRow, MatchingError> {
    let mut transaction = handle.begin().await?;
    let row = db::fetch_mentors(&mut transaction, &[mentor_id])
        .await?
        .into_iter()
        .next()
        .filter(|row| reach.admits(row.mentor_id, &row.areas))
        .ok_or(MatchingError::MentorNotFound(mentor_id))?;
    audit::record(&mut transaction, caller, audit::GET_MENTOR, [mentor_id]).await?;
    transaction.commit().await?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, mentor_id: Option<&str>, areas: &[&str]) -> Caller {
        Caller {
            subject: "someone".into(),
            role,
            agency_id: None,
            mentor_id: mentor_id.map(str::to_owned),
            areas: areas.iter().map(|area| (*area).to_owned()).collect(),
        }
    }

    fn programme() -> ProgrammeConfig {
        ProgrammeConfig {
            areas: vec!["Darlington".into(), "East Durham".into()],
        }
    }

    #[test]
    fn a_mentor_reaches_only_their_own_record_and_staff_those_of_their_areas() {
        let (own, other) = (Uuid::now_v7(), Uuid::now_v7());
        let areas = ["East Durham".to_owned()];
        let mentor = Reach::of(
            &caller(Role::Mentor, Some(&own.to_string()), &[]),
            &programme(),
        );
        assert!(mentor.admits(own, &areas));
        assert!(!mentor.admits(other, &areas));
        let unnamed = Reach::of(&caller(Role::Mentor, Some("m-1"), &[]), &programme());
        assert_eq!(unnamed, Reach::Own(None));
        assert!(!unnamed.admits(own, &areas));

        let darlington = Reach::of(
            &caller(Role::Coordinator, None, &["darlington"]),
            &programme(),
        );
        assert!(!darlington.admits(own, &areas));
        assert!(darlington.admits(own, &["Darlington".to_owned()]));
        let admin = Reach::of(&caller(Role::Admin, None, &[]), &programme());
        assert!(admin.admits(other, &areas));
        let referrer = Reach::of(&caller(Role::Referrer, None, &[]), &programme());
        assert!(!referrer.admits(own, &areas));
    }

    #[test]
    fn a_bad_erasure_names_every_field() {
        let violations = Erasure::parse(&EraseMentorRequest {
            mentor_id: "nobody".into(),
            reason: "  ".into(),
        })
        .unwrap_err();
        assert_eq!(
            violations.fields().collect::<Vec<_>>(),
            ["mentor_id", "reason"]
        );
        let long = Erasure::parse(&EraseMentorRequest {
            mentor_id: Uuid::now_v7().to_string(),
            reason: "x".repeat(MAX_ERASURE_REASON + 1),
        })
        .unwrap_err();
        assert_eq!(long.fields().collect::<Vec<_>>(), ["reason"]);
        let hidden = Erasure::parse(&EraseMentorRequest {
            mentor_id: Uuid::now_v7().to_string(),
            reason: "asked\u{202e}".into(),
        })
        .unwrap_err();
        assert_eq!(hidden.fields().collect::<Vec<_>>(), ["reason"]);
        let id = Uuid::now_v7();
        let erasure = Erasure::parse(&EraseMentorRequest {
            mentor_id: id.to_string(),
            reason: "  the mentor's request  ".into(),
        })
        .unwrap();
        assert_eq!(
            erasure,
            Erasure {
                mentor_id: id,
                reason: "the mentor's request".into()
            }
        );
    }

    #[test]
    fn a_read_names_a_mentor_by_their_id() {
        for bad in ["", "m-1", "  "] {
            let violations = parse_mentor_id(bad).unwrap_err();
            assert_eq!(
                violations.fields().collect::<Vec<_>>(),
                ["mentor_id"],
                "{bad:?}"
            );
        }
        let id = Uuid::now_v7();
        assert_eq!(parse_mentor_id(&id.to_string()).unwrap(), id);
    }

    #[test]
    fn a_sabbatical_counts_its_limit_then_the_retention_period() {
        let periods = Periods {
            retention_days: 183,
            sabbatical_days: 183,
        };
        assert_eq!(periods.after_leaving(), 183);
        assert_eq!(periods.after_sabbatical_began(), 366);
        assert!(
            periods
                .reason(MentorStatus::Sabbatical)
                .contains("sabbatical")
        );
        assert!(periods.reason(MentorStatus::Left).contains("183 days ago"));
        let huge = Periods {
            retention_days: u32::MAX,
            sabbatical_days: u32::MAX,
        };
        assert_eq!(huge.after_sabbatical_began(), i32::MAX);
    }

    #[test]
    fn the_retention_settings_refuse_zero_and_absurd_periods() {
        let defaults = crate::Config::default();
        assert_eq!(check(&defaults).map_err(|e| e.to_string()), Ok(()));
        assert_eq!(
            (
                defaults.retention_sweep_interval_secs,
                defaults.retention_days,
                defaults.sabbatical_days
            ),
            (3600, 183, 183)
        );
        for (config, key) in [
            (
                crate::Config {
                    retention_sweep_interval_secs: 0,
                    ..crate::Config::default()
                },
                "mentor_matching.retention_sweep_interval_secs",
            ),
            (
                crate::Config {
                    retention_days: 0,
                    ..crate::Config::default()
                },
                "mentor_matching.retention_days",
            ),
            (
                crate::Config {
                    sabbatical_days: MAX_DAYS + 1,
                    ..crate::Config::default()
                },
                "mentor_matching.sabbatical_days",
            ),
        ] {
            let refused = check(&config).unwrap_err().to_string();
            assert!(refused.contains(key), "{refused}");
        }
    }

    #[test]
    fn an_export_names_enum_values_and_keeps_unknown_ones_as_numbers() {
        assert_eq!(status_name(MentorStatus::Left as i32), "MENTOR_STATUS_LEFT");
        assert_eq!(status_name(42), "42");
        assert_eq!(
            enum_name::<Gender>(Gender::Female as i32, Gender::as_str_name),
            "GENDER_FEMALE"
        );
    }
}
