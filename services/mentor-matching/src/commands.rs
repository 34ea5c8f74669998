//! What mentor matching does, one function per use case: each takes the
//! parsed request and who asks, does its work in one transaction, and
//! answers with rows or a [`MatchingError`]. `grpc.rs` keeps tokens,
//! parsing and messages; nothing here knows about gRPC.
//!
//! Staff work in their areas (the [`AreaScope`] of `ProgrammeConfig::staff_scope`):
//! a coordinator registers and lists mentors only there (another area is
//! PERMISSION_DENIED), and a waiting client or a mentor elsewhere does not
//! exist for them (NOT_FOUND), so nothing outside their areas is proposed,
//! allocated or revealed. An admin works in every area.

use chrono::{DateTime, Utc};
use cpm_proto::v1::{AllocationConfirmed, Gender, MentorStatus, Vulnerability};
use cpm_runtime::areas::OutsideAreas;
use cpm_runtime::auth::{AreaScope, Caller};
use cpm_runtime::bus::{ServiceHandle, outbox};
use cpm_runtime::grpc::ApiError;
use cpm_runtime::grpc::values::timestamp;
use cpm_runtime::standing::{self, Principal};
use uuid::Uuid;

use crate::db::{self, AreaLoad, MentorRow, NewMentorRow};
use crate::domain::{MentorLoad, NewAllocation, NewMentor, ProposalQuery};
use crate::matching::{self, Candidate, ClientNeeds, Proposal};
use crate::status::{self, StatusChange};

/// Why a use case of mentor matching did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MatchingError {
    #[error("accepted referral")]
    ReferralNotFound,
    #[error("the referral already has a mentor pair allocated")]
    AlreadyAllocated,
    #[error("mentor {0}")]
    MentorNotFound(Uuid),
    #[error("mentor {0} {1}")]
    MentorUnavailable(Uuid, &'static str),
    #[error("{0}")]
    StatusRefused(String),
    #[error(transparent)]
    OutsideAreas(#[from] OutsideAreas),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<MatchingError> for ApiError {
    fn from(error: MatchingError) -> Self {
        match error {
            MatchingError::ReferralNotFound | MatchingError::MentorNotFound(_) => {
                ApiError::NotFound(error.to_string())
            }
            MatchingError::AlreadyAllocated
            | MatchingError::MentorUnavailable(..)
            | MatchingError::StatusRefused(_) => ApiError::FailedPrecondition(error.to_string()),
            MatchingError::OutsideAreas(_) => ApiError::PermissionDenied(error.to_string()),
            MatchingError::Database(error) => error.into(),
        }
    }
}

impl From<MatchingError> for tonic::Status {
    fn from(error: MatchingError) -> Self {
        ApiError::from(error).into()
    }
}

/// Puts a mentor on the register, in an area of the caller's `scope`.
pub async fn register_mentor(
    handle: &ServiceHandle,
    caller: &Caller,
    scope: &AreaScope,
    mentor: &NewMentor,
) -> Result<MentorRow, MatchingError> {
    scope.require(&mentor.area)?;
    let mentor_id = Uuid::now_v7();
    tracing::Span::current().record("mentor_id", tracing::field::display(mentor_id));
    let mut transaction = handle.begin().await?;
    let row = db::insert_mentor(
        &mut transaction,
        &NewMentorRow {
            mentor_id,
            display_name: &mentor.display_name,
            gender: mentor.gender as i32,
            area: &mentor.area,
            lived_experience: mentor.lived_experience.iter().map(|e| *e as i32).collect(),
            safeguarding_trained: mentor.safeguarding_trained,
            status: mentor.initial_status() as i32,
            capacity: mentor.capacity,
            registered_by: &caller.subject,
        },
    )
    .await?;
    // Every service admits the mentor's token from now on (and refuses it
    // once they leave).
    standing::publish(
        &mut transaction,
        crate::NAME,
        &Principal::mentor(&mentor_id.to_string()),
        true,
    )
    .await?;
    transaction.commit().await?;
    tracing::info!(
        status = mentor.initial_status().as_str_name(),
        "mentor registered"
    );
    Ok(row)
}

/// One page of the register, by display name then ID, after `after`;
/// `limit` rows at most: the mentors of `area`, which must be in the
/// caller's `scope`, or else of every area of it.
pub async fn list_mentors(
    handle: &ServiceHandle,
    scope: &AreaScope,
    area: Option<&str>,
    after: Option<(&str, Uuid)>,
    limit: i64,
) -> Result<Vec<MentorRow>, MatchingError> {
    let listed = scope.covering(area)?;
    let mut connection = handle.pool().acquire().await?;
    Ok(db::list_mentors(&mut connection, listed.as_deref(), after, limit).await?)
}

/// Ranked mentor pairs for a waiting client in the caller's `scope`, from
/// the mentors of that scope.
pub async fn propose_matches(
    handle: &ServiceHandle,
    scope: &AreaScope,
    query: &ProposalQuery,
) -> Result<Vec<Proposal>, MatchingError> {
    let mut connection = handle.pool().acquire().await?;
    let client = db::fetch_waiting_client(&mut connection, query.referral_id)
        .await?
        .filter(|client| scope.admits(&client.area))
        .ok_or(MatchingError::ReferralNotFound)?;
    if client.allocated {
        return Err(MatchingError::AlreadyAllocated);
    }
    let candidates: Vec<Candidate> = db::list_candidates(&mut connection, scope.as_filter())
        .await?
        .iter()
        .map(to_candidate)
        .collect();
    let needs = ClientNeeds {
        area: client.area.clone(),
        vulnerabilities: client
            .vulnerabilities
            .iter()
            .filter_map(|value| Vulnerability::try_from(*value).ok())
            .collect(),
        gender: Gender::try_from(client.client_gender).unwrap_or_default(),
    };
    let proposals = matching::propose(&needs, &candidates, query.limit);
    tracing::info!(
        candidates = candidates.len(),
        proposals = proposals.len(),
        "mentor pairs proposed"
    );
    Ok(proposals)
}

/// An allocation a coordinator confirmed.
#[derive(Clone, Debug)]
pub struct Confirmed {
    pub allocation_id: Uuid,
    pub referral_id: Uuid,
    pub mentor_ids: [Uuid; 2],
    pub confirmed_by: String,
    pub confirmed_at: DateTime<Utc>,
}

/// Allocates the pair a coordinator chose, and announces it. The client
/// and both mentors must be in the caller's `scope`; otherwise nothing
/// changes and they are not found.
pub async fn confirm_allocation(
    handle: &ServiceHandle,
    caller: &Caller,
    scope: &AreaScope,
    allocation: &NewAllocation,
) -> Result<Confirmed, MatchingError> {
    let mentor_ids = allocation.mentor_ids;
    let mut transaction = handle.begin().await?;
    let client = db::lock_waiting_client(&mut transaction, allocation.referral_id)
        .await?
        .filter(|client| scope.admits(&client.area))
        .ok_or(MatchingError::ReferralNotFound)?;
    if client.allocated {
        return Err(MatchingError::AlreadyAllocated);
    }
    let locked = db::lock_mentors(&mut transaction, &mentor_ids).await?;
    if let Some(missing) = mentor_ids.iter().find(|id| !locked.contains(id)) {
        return Err(MatchingError::MentorNotFound(*missing));
    }
    let mentors = db::fetch_mentors(&mut transaction, &mentor_ids).await?;
    for id in mentor_ids {
        let mentor = mentors
            .iter()
            .find(|row| row.mentor_id == id && scope.admits(&row.area))
            .ok_or(MatchingError::MentorNotFound(id))?;
        if let Some(reason) = load_of(mentor).unavailable_because() {
            return Err(MatchingError::MentorUnavailable(id, reason));
        }
    }

    let allocation_id = Uuid::now_v7();
    tracing::Span::current().record("allocation_id", tracing::field::display(allocation_id));
    let confirmed_at = db::insert_allocation(
        &mut transaction,
        allocation_id,
        allocation.referral_id,
        &mentor_ids,
        &caller.subject,
    )
    .await?;
    db::mark_client_allocated(&mut transaction, allocation.referral_id).await?;
    db::set_mentors_status(&mut transaction, &mentor_ids, MentorStatus::Active).await?;
    outbox::enqueue(
        &mut transaction,
        crate::NAME,
        &AllocationConfirmed {
            allocation_id: allocation_id.to_string(),
            referral_id: allocation.referral_id.to_string(),
            agency_id: client.agency_id.clone(),
            area: client.area.clone(),
            mentor_ids: mentor_ids.iter().map(Uuid::to_string).collect(),
            confirmed_by: caller.subject.clone(),
            confirmed_at: Some(timestamp(confirmed_at)),
        },
    )
    .await?;
    transaction.commit().await?;
    tracing::info!("allocation confirmed");
    Ok(Confirmed {
        allocation_id,
        referral_id: allocation.referral_id,
        mentor_ids,
        confirmed_by: caller.subject.clone(),
        confirmed_at,
    })
}

/// Moves a mentor of the caller's `scope` to another status, keeping the
/// reason; a mentor who leaves or declines loses their standing in every
/// service in the same transaction (`principal.status_changed`).
pub async fn change_mentor_status(
    handle: &ServiceHandle,
    caller: &Caller,
    scope: &AreaScope,
    change: &StatusChange,
) -> Result<MentorRow, MatchingError> {
    let id = change.mentor_id;
    let mut transaction = handle.begin().await?;
    db::lock_mentors(&mut transaction, &[id]).await?;
    let mentor = db::fetch_mentors(&mut transaction, &[id])
        .await?
        .into_iter()
        .next()
        .filter(|row| scope.admits(&row.area))
        .ok_or(MatchingError::MentorNotFound(id))?;
    let from = MentorStatus::try_from(mentor.status).unwrap_or_default();
    if let Some(refused) = status::refusal(
        from,
        change.to,
        mentor.current_clients,
        mentor.safeguarding_trained,
    ) {
        return Err(MatchingError::StatusRefused(refused));
    }
    db::change_status(
        &mut transaction,
        id,
        from,
        change.to,
        &change.reason,
        &caller.subject,
    )
    .await?;
    if status::in_good_standing(from) != status::in_good_standing(change.to) {
        standing::publish(
            &mut transaction,
            crate::NAME,
            &Principal::mentor(&id.to_string()),
            status::in_good_standing(change.to),
        )
        .await?;
    }
    let row = db::fetch_mentors(&mut transaction, &[id])
        .await?
        .into_iter()
        .next()
        .ok_or(MatchingError::MentorNotFound(id))?;
    transaction.commit().await?;
    tracing::info!(
        mentor_id = %id,
        from = from.as_str_name(),
        to = change.to.as_str_name(),
        "mentor status changed"
    );
    Ok(row)
}

/// How many clients wait in `area` and how many mentor places are free.
pub async fn area_load(handle: &ServiceHandle, area: &str) -> Result<AreaLoad, MatchingError> {
    let mut connection = handle.pool().acquire().await?;
    Ok(db::area_load(&mut connection, area, None).await?)
}

fn load_of(row: &MentorRow) -> MentorLoad {
    MentorLoad {
        status: row.status,
        safeguarding_trained: row.safeguarding_trained,
        capacity: row.capacity,
        current_clients: row.current_clients,
    }
}

fn to_candidate(row: &MentorRow) -> Candidate {
    Candidate {
        mentor_id: row.mentor_id,
        display_name: row.display_name.clone(),
        gender: Gender::try_from(row.gender).unwrap_or_default(),
        area: row.area.clone(),
        lived_experience: row
            .lived_experience
            .iter()
            .filter_map(|value| cpm_proto::v1::LivedExperience::try_from(*value).ok())
            .collect(),
        free_places: load_of(row).free_places(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpm_proto::v1::LivedExperience;

    fn row(status: MentorStatus, capacity: i32, current_clients: i32) -> MentorRow {
        MentorRow {
            mentor_id: Uuid::now_v7(),
            display_name: "Mentor A".into(),
            gender: Gender::Female as i32,
            area: "Darlington".into(),
            lived_experience: vec![LivedExperience::Debt as i32, 999],
            safeguarding_trained: true,
            status: status as i32,
            capacity,
            trained_on: Utc::now(),
            current_clients,
        }
    }

    #[test]
    fn a_candidate_keeps_known_experience_and_counts_free_places() {
        let candidate = to_candidate(&row(MentorStatus::Active, 3, 1));
        assert_eq!(candidate.lived_experience, [LivedExperience::Debt]);
        assert_eq!(candidate.free_places, 2);
        assert_eq!(candidate.gender, Gender::Female);
    }

    #[test]
    fn errors_map_to_the_status_a_caller_can_act_on() {
        let id = Uuid::now_v7();
        let code = |error: MatchingError| tonic::Status::from(error).code();
        assert_eq!(code(MatchingError::ReferralNotFound), tonic::Code::NotFound);
        assert_eq!(
            code(MatchingError::MentorNotFound(id)),
            tonic::Code::NotFound
        );
        assert_eq!(
            code(MatchingError::AlreadyAllocated),
            tonic::Code::FailedPrecondition
        );
        let outside = tonic::Status::from(MatchingError::from(OutsideAreas {
            area: "East Durham".into(),
            yours: vec!["Darlington".into()],
        }));
        assert_eq!(outside.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            outside.message(),
            "you do not work in East Durham: your areas are Darlington"
        );
        let unavailable = tonic::Status::from(MatchingError::MentorUnavailable(id, "has left"));
        assert_eq!(unavailable.code(), tonic::Code::FailedPrecondition);
        assert_eq!(unavailable.message(), format!("mentor {id} has left"));
        assert_eq!(
            tonic::Status::from(MatchingError::ReferralNotFound).message(),
            "accepted referral not found"
        );
    }
}
