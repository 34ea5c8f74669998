//! What referral intake does, one function per use case (an agency's
//! referrals, then the agency register): each takes the parsed request and
//! who asks, already scoped (to a referrer's agency, or a coordinator's
//! areas) where that matters, does its work,
//! and answers with rows or an [`IntakeError`]. `grpc.rs` keeps tokens,
//! parsing and messages; nothing here knows about gRPC. Erasure and export
//! are the use cases of [`crate::privacy`], with the same error.

use chrono::{DateTime, Utc};
use cpm_proto::v1::{
    AgencyKind, DemandFigures, ReferralLinkState, ReferralLinked, ReferralStatus,
    ReferralSubmitted, ReferralWithdrawn,
};
use cpm_runtime::auth::Caller;
use cpm_runtime::bus::ServiceHandle;
use cpm_runtime::bus::outbox::{self, OutboxRow};
use cpm_runtime::client_keys::{Reader, SealError};
use cpm_runtime::db::warm::WarmPool;
use cpm_runtime::grpc::values::timestamp;
use cpm_runtime::grpc::{ApiError, FieldViolations};
use cpm_runtime::standing::{self, Principal};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::{self, AgencyRow, ReferralFilter, ReferralRow, StatusChange};
use crate::domain::{
    NewAgency, NewReferral, NewReferrer, ReadScope, SealedDetails, can_withdraw, identity_key,
    status_rank,
};
use crate::privacy::ClientVault;

/// Why a use case of referral intake did not happen.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Absent, another agency's, or (to a coordinator) in an area they do
    /// not work in: all answer alike.
    #[error("referral not found")]
    ReferralNotFound,
    /// A referrer's agency that the register does not hold.
    #[error("agency {0} is not registered; ask the programme's admin")]
    AgencyUnknown(String),
    /// A referrer's agency that the register holds as suspended.
    #[error("agency {0} is suspended")]
    AgencyInactive(String),
    /// An admin registering a referrer for an agency not registered yet.
    #[error("agency {0} is not registered")]
    ReferrerAgencyUnknown(String),
    /// The agency reused an idempotency key for a different request.
    #[error("the idempotency key was already used for a different referral")]
    IdempotencyConflict,
    /// No undecided link between these two referrals.
    #[error("referral {0} has no undecided possible link to {1}")]
    NoPossibleLink(Uuid, Uuid),
    /// The client was erased: no new text about them is kept.
    #[error("the client's personal data was erased; nothing new about them is accepted")]
    Erased,
    /// Support has begun, or the referral has ended.
    #[error("a referral that is {} can no longer be withdrawn", .status.as_str_name())]
    CannotWithdraw { status: ReferralStatus },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A broken invariant or a record that does not open: logged, not shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<IntakeError> for ApiError {
    fn from(error: IntakeError) -> Self {
        match error {
            IntakeError::ReferralNotFound => ApiError::NotFound("referral".into()),
            IntakeError::AgencyUnknown(_) | IntakeError::AgencyInactive(_) => {
                ApiError::PermissionDenied(error.to_string())
            }
            IntakeError::ReferrerAgencyUnknown(_)
            | IntakeError::CannotWithdraw { .. }
            | IntakeError::NoPossibleLink(..)
            | IntakeError::Erased => ApiError::FailedPrecondition(error.to_string()),
            // A field violation, so a client fixes it as it fixes the others.
            IntakeError::IdempotencyConflict => {
                let mut violations = FieldViolations::new();
                violations.add(
                    "idempotency_key",
                    "was already used for a different referral; use a new key",
                );
                ApiError::InvalidArgument(violations)
            }
            IntakeError::Database(error) => error.into(),
            IntakeError::Internal(error) => ApiError::Internal(error),
        }
    }
}

impl From<SealError> for IntakeError {
    fn from(error: SealError) -> Self {
        match error {
            SealError::Erased => IntakeError::Erased,
            SealError::Database(error) => IntakeError::Database(error),
            crypto @ SealError::Crypto(_) => IntakeError::Internal(crypto.into()),
        }
    }
}

impl From<IntakeError> for tonic::Status {
    fn from(error: IntakeError) -> Self {
        ApiError::from(error).into()
    }
}

/// A submission as stored; `replayed` when it was a retry of one stored
/// before under the same idempotency key.
#[derive(Clone, Debug)]
pub struct Submitted {
    pub row: ReferralRow,
    pub replayed: bool,
}

/// Stores a referral of `agency_id`, its sealed client record and its
/// `referral.submitted` event, or answers a retry with the first referral.
/// `auto_register` lets an unknown agency refer (development only).
pub async fn submit_referral(
    handle: &ServiceHandle,
    warm: &WarmPool,
    vault: &ClientVault,
    auto_register: bool,
    caller: &Caller,
    agency_id: &str,
    referral: &NewReferral,
) -> Result<Submitted, IntakeError> {
    let referral_id = Uuid::now_v7();
    tracing::Span::current().record("referral_id", tracing::field::display(referral_id));
    let identity = identity_key(&referral.details);
    let key_hashes = vault.idempotency_hashes(agency_id, &referral.idempotency_key);
    let fingerprint = vault.fingerprint(&identity);
    let (wrapped, sealed) = vault.seal(referral_id, &referral.details);

    // Two round trips and no explicit transaction: the lookup, then one
    // statement writing the referral, its sealed record and its event.
    // The connection is released warm only once both completed.
    let mut connection = warm.acquire().await?;
    let context =
        db::submission_context(&mut connection, agency_id, &vault.fingerprints(&identity)).await?;
    may_refer(
        &mut connection,
        agency_id,
        context.agency_active,
        auto_register,
    )
    .await?;
    // Only a possible earlier referral: a coordinator decides (decide_link).
    let earlier_referral_id = context.earlier_referral_id;
    let new_row = db::NewReferralRow {
        referral_id,
        agency_id,
        idempotency_key_hash: &key_hashes[0],
        request_hash: &referral.request_hash,
        submitted_by: &caller.subject,
        area: &referral.area,
        client_gender: referral.gender as i32,
        vulnerabilities: referral.vulnerabilities.iter().map(|v| *v as i32).collect(),
        emergency_calls_last_12_months: referral.emergency_calls_last_12_months,
        client_fingerprint: &fingerprint,
        earlier_referral_id,
        earlier_agency_id: context.earlier_agency_id.as_deref(),
        status: ReferralStatus::Received as i32,
        status_rank: status_rank(ReferralStatus::Received),
        victim_of: referral.victim_of.iter().map(|c| *c as i32).collect(),
        perpetrator_of: referral.perpetrator_of.iter().map(|c| *c as i32).collect(),
        known_risk_types: referral
            .known_risk_types
            .iter()
            .map(|r| *r as i32)
            .collect(),
        referrer_will_co_visit: referral.referrer_will_co_visit,
        demand: referral.demand,
        submitted_at: referral.submitted_at,
    };
    let event = OutboxRow::new(
        crate::NAME,
        &ReferralSubmitted {
            referral_id: referral_id.to_string(),
            agency_id: agency_id.to_owned(),
            area: referral.area.clone(),
            submitted_at: Some(timestamp(new_row.submitted_at)),
            vulnerabilities: new_row.vulnerabilities.clone(),
            client_gender: new_row.client_gender,
            // Nothing is linked until a coordinator confirms it.
            earlier_referral_id: String::new(),
            submitted_by: new_row.submitted_by.to_owned(),
            emergency_calls_last_12_months: new_row.emergency_calls_last_12_months,
            referrer_will_co_visit: new_row.referrer_will_co_visit,
            known_risk_types: new_row.known_risk_types.clone(),
            victim_of: new_row.victim_of.clone(),
            perpetrator_of: new_row.perpetrator_of.clone(),
            demand: new_row.demand.map(|demand| DemandFigures {
                police_calls: demand.police_calls,
                ambulance_calls: demand.ambulance_calls,
                nhs_111_calls: demand.nhs_111_calls,
                other_calls: demand.other_calls,
                police_staff_hours: demand.police_staff_hours,
            }),
        },
    );
    // During a master-key rotation a retry's first submission may carry its
    // key's hash under an older key, which the insert's conflict cannot see.
    if key_hashes.len() > 1
        && let Some(existing) =
            db::find_by_idempotency_key(&mut connection, agency_id, &key_hashes).await?
    {
        connection.release();
        return replay(existing, referral);
    }
    let inserted =
        db::insert_referral(&mut connection, &new_row, &wrapped, &sealed, &event).await?;

    let Some(row) = inserted else {
        let existing = db::find_by_idempotency_key(&mut connection, agency_id, &key_hashes)
            .await?
            .ok_or_else(|| anyhow::anyhow!("idempotency row vanished"))?;
        connection.release();
        return replay(existing, referral);
    };
    connection.release();
    // The statement has committed: the relay can see the event now.
    handle.wake();
    tracing::info!(
        possible_re_referral = earlier_referral_id.is_some(),
        "referral submitted"
    );
    Ok(Submitted {
        row,
        replayed: false,
    })
}

/// A retry answered with the first referral, if it was the same request.
fn replay(existing: ReferralRow, referral: &NewReferral) -> Result<Submitted, IntakeError> {
    if existing.request_hash != referral.request_hash {
        return Err(IntakeError::IdempotencyConflict);
    }
    Ok(Submitted {
        row: existing,
        replayed: true,
    })
}

/// A referral within `scope` (a referrer's agency, or a coordinator's
/// areas), with the client's details opened for `caller` and audited;
/// `None` details once erased. Outside the scope it is not found, and
/// nothing is opened or audited.
pub async fn get_referral(
    handle: &ServiceHandle,
    vault: &ClientVault,
    caller: &Caller,
    scope: &ReadScope<'_>,
    referral_id: Uuid,
) -> Result<(ReferralRow, Option<SealedDetails>, String), IntakeError> {
    let mut transaction = handle.begin().await?;
    if let Some(agency_id) = scope.agency() {
        as_agency(&mut transaction, agency_id).await?;
    }
    let row = db::fetch_referral(&mut transaction, referral_id, scope.agency(), scope.areas())
        .await?
        .ok_or(IntakeError::ReferralNotFound)?;
    let sealed = vault
        .open(&mut transaction, referral_id, caller, "GetReferral")
        .await?;
    let withdrawal_reason = vault
        .texts()
        .reading(Reader::of(caller, "GetReferral"))
        .open_text(
            &mut transaction,
            referral_id,
            row.withdrawal_reason_sealed.as_deref(),
        )
        .await?;
    transaction.commit().await?;
    Ok((row, sealed, withdrawal_reason))
}

/// One page of an agency's referrals, newest first, after `after`; `limit`
/// rows at most.
pub async fn list_referrals(
    handle: &ServiceHandle,
    agency_id: &str,
    filter: &ReferralFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ReferralRow>, IntakeError> {
    let mut transaction = handle.begin().await?;
    as_agency(&mut transaction, agency_id).await?;
    let rows = db::list_referrals(&mut transaction, agency_id, filter, after, limit).await?;
    transaction.commit().await?;
    Ok(rows)
}

/// Withdraws a referral of `agency_id` that has not reached support yet,
/// and announces it.
pub async fn withdraw_referral(
    handle: &ServiceHandle,
    vault: &ClientVault,
    agency_id: &str,
    referral_id: Uuid,
    reason: &str,
) -> Result<ReferralRow, IntakeError> {
    let mut transaction = handle.begin().await?;
    as_agency(&mut transaction, agency_id).await?;
    let row = db::lock_referral(&mut transaction, referral_id, agency_id)
        .await?
        .ok_or(IntakeError::ReferralNotFound)?;
    let status = ReferralStatus::try_from(row.status).unwrap_or_default();
    if !can_withdraw(status) {
        return Err(IntakeError::CannotWithdraw { status });
    }
    let reason_sealed = vault
        .texts()
        .seal_text(&mut transaction, referral_id, reason)
        .await?;
    db::record_withdrawal(
        &mut transaction,
        referral_id,
        status as i32,
        reason_sealed.as_deref(),
    )
    .await?;
    crate::status::advance(
        &mut transaction,
        referral_id,
        &StatusChange {
            status: ReferralStatus::Withdrawn as i32,
            rank: status_rank(ReferralStatus::Withdrawn),
            ..StatusChange::default()
        },
    )
    .await?;
    outbox::enqueue(
        &mut transaction,
        crate::NAME,
        &ReferralWithdrawn {
            referral_id: referral_id.to_string(),
            agency_id: agency_id.to_owned(),
            withdrawn_at: Some(timestamp(Utc::now())),
        },
    )
    .await?;
    let row = db::fetch_referral(&mut transaction, referral_id, Some(agency_id), None)
        .await?
        .ok_or(IntakeError::ReferralNotFound)?;
    transaction.commit().await?;
    Ok(row)
}

/// Referrals whose possible earlier referral awaits a coordinator, oldest
/// first, after `after`; `limit` rows at most. With `areas` set (a
/// coordinator's), only referrals in those areas.
pub async fn list_possible_links(
    handle: &ServiceHandle,
    areas: Option<&[String]>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ReferralRow>, IntakeError> {
    let mut connection = handle.pool().acquire().await?;
    Ok(db::list_possible_links(&mut connection, areas, after, limit).await?)
}

/// A coordinator's decision on a possible link: confirmed, it is announced
/// (`referral.linked`) and from then on joins the two referrals; rejected,
/// it never counts. A referral outside `areas` (when set: a coordinator's)
/// is not found, as a missing one, and nothing changes.
pub async fn decide_link(
    handle: &ServiceHandle,
    caller: &Caller,
    areas: Option<&[String]>,
    referral_id: Uuid,
    earlier_referral_id: Uuid,
    confirm: bool,
) -> Result<ReferralRow, IntakeError> {
    let mut transaction = handle.begin().await?;
    let row = db::lock_referral_in_areas(&mut transaction, referral_id, areas)
        .await?
        .ok_or(IntakeError::ReferralNotFound)?;
    if !row.has_possible_link_to(earlier_referral_id) {
        return Err(IntakeError::NoPossibleLink(
            referral_id,
            earlier_referral_id,
        ));
    }
    let state = if confirm {
        ReferralLinkState::Confirmed
    } else {
        ReferralLinkState::Rejected
    };
    let decided =
        db::decide_link(&mut transaction, row.referral_id, state, &caller.subject).await?;
    if confirm {
        outbox::enqueue(
            &mut transaction,
            crate::NAME,
            &ReferralLinked {
                referral_id: referral_id.to_string(),
                earlier_referral_id: earlier_referral_id.to_string(),
                agency_id: row.agency_id.clone(),
                linked_at: Some(timestamp(Utc::now())),
            },
        )
        .await?;
    }
    transaction.commit().await?;
    tracing::info!(%referral_id, link = state.as_str_name(), "re-referral link decided");
    Ok(decided)
}

/// Refuses a submission from an agency that is not registered (`active` is
/// `None`) or is suspended; with `auto_register` (development only) an
/// unknown agency is registered instead.
/// Narrows the transaction to a referrer's agency (row-level security) and
/// refuses a suspended agency: its referrers lose every call, not only
/// submission. An agency never registered has nothing to read anyway.
async fn as_agency(connection: &mut PgConnection, agency_id: &str) -> Result<(), IntakeError> {
    cpm_runtime::db::narrow_to_agency(connection, agency_id).await?;
    if db::agency_is_active(connection, agency_id).await? == Some(false) {
        return Err(IntakeError::AgencyInactive(agency_id.to_owned()));
    }
    Ok(())
}

async fn may_refer(
    connection: &mut PgConnection,
    agency_id: &str,
    active: Option<bool>,
    auto_register: bool,
) -> Result<(), IntakeError> {
    match active {
        Some(true) => Ok(()),
        Some(false) => Err(IntakeError::AgencyInactive(agency_id.to_owned())),
        None if auto_register => {
            tracing::warn!(%agency_id, "registering an unknown agency (development mode)");
            db::register_agency_if_missing(connection, agency_id, AgencyKind::Other as i32).await?;
            Ok(())
        }
        None => Err(IntakeError::AgencyUnknown(agency_id.to_owned())),
    }
}

/// Registers an agency, or updates it (suspends it when not active).
pub async fn register_agency(
    handle: &ServiceHandle,
    caller: &Caller,
    agency: &NewAgency,
) -> Result<AgencyRow, IntakeError> {
    let mut transaction = handle.begin().await?;
    let row = db::upsert_agency(
        &mut transaction,
        &agency.agency_id,
        &agency.name,
        agency.kind as i32,
        agency.active,
        &caller.subject,
    )
    .await?;
    // Every service refuses a suspended agency's referrers from now on.
    standing::publish(
        &mut transaction,
        crate::NAME,
        &Principal::agency(&row.agency_id),
        row.active,
    )
    .await?;
    transaction.commit().await?;
    tracing::info!(active = row.active, "agency registered");
    Ok(row)
}

/// One page of the register by agency ID, after `after`; `limit` rows at most.
pub async fn list_agencies(
    handle: &ServiceHandle,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<AgencyRow>, IntakeError> {
    let mut connection = handle.pool().acquire().await?;
    Ok(db::list_agencies(&mut connection, after, limit).await?)
}

/// Registers a referrer of a registered agency (or updates their details);
/// returns the referrer ID.
pub async fn register_referrer(
    handle: &ServiceHandle,
    referrer: &NewReferrer,
) -> Result<Uuid, IntakeError> {
    let mut transaction = handle.begin().await?;
    if db::agency_is_active(&mut transaction, &referrer.agency_id)
        .await?
        .is_none()
    {
        return Err(IntakeError::ReferrerAgencyUnknown(
            referrer.agency_id.clone(),
        ));
    }
    let referrer_id = db::upsert_referrer(
        &mut transaction,
        &referrer.agency_id,
        &referrer.subject,
        &referrer.name,
        referrer.role as i32,
        &referrer.contact,
    )
    .await?;
    // Every service admits the referrer from now on.
    standing::publish(
        &mut transaction,
        crate::NAME,
        &Principal::referrer(&referrer.agency_id, &referrer.subject),
        true,
    )
    .await?;
    transaction.commit().await?;
    Ok(referrer_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    #[test]
    fn errors_map_to_the_status_a_caller_can_act_on() {
        let status = |error: IntakeError| {
            let status = Status::from(error);
            (status.code(), status.message().to_owned())
        };
        assert_eq!(
            status(IntakeError::ReferralNotFound),
            (Code::NotFound, "referral not found".into())
        );
        assert_eq!(
            status(IntakeError::AgencyUnknown("durham-police".into())),
            (
                Code::PermissionDenied,
                "agency durham-police is not registered; ask the programme's admin".into()
            )
        );
        assert_eq!(
            status(IntakeError::AgencyInactive("durham-police".into())),
            (
                Code::PermissionDenied,
                "agency durham-police is suspended".into()
            )
        );
        assert_eq!(
            status(IntakeError::ReferrerAgencyUnknown("nobody".into())),
            (
                Code::FailedPrecondition,
                "agency nobody is not registered".into()
            )
        );
        assert_eq!(
            status(IntakeError::CannotWithdraw {
                status: ReferralStatus::InSupport
            }),
            (
                Code::FailedPrecondition,
                "a referral that is REFERRAL_STATUS_IN_SUPPORT can no longer be withdrawn".into()
            )
        );
    }

    #[test]
    fn a_reused_idempotency_key_is_a_violation_of_that_field() {
        let mut expected = FieldViolations::new();
        expected.add(
            "idempotency_key",
            "was already used for a different referral; use a new key",
        );
        match ApiError::from(IntakeError::IdempotencyConflict) {
            ApiError::InvalidArgument(violations) => assert_eq!(violations, expected),
            other => panic!("expected a field violation, got {other:?}"),
        }
        let status = Status::from(IntakeError::IdempotencyConflict);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "invalid request: idempotency_key");
    }

    #[test]
    fn internal_and_database_errors_do_not_leak_their_cause() {
        let internal = Status::from(IntakeError::Internal(anyhow::anyhow!("key=secret")));
        assert_eq!(internal.code(), Code::Internal);
        assert!(!internal.message().contains("secret"));
        let database = Status::from(IntakeError::Database(sqlx::Error::Protocol(
            "password=secret".into(),
        )));
        assert_eq!(database.code(), Code::Internal);
        assert!(!database.message().contains("secret"));
        let down = Status::from(IntakeError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(down.code(), Code::Unavailable);
    }
}
