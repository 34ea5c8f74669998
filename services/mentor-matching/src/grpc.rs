//! `cpm.v1.MentorMatchingService`: coordinators keep the mentor register,
//! ask for scored mentor pairs and confirm one; referrers may also ask how
//! long a client in an area is likely to wait. The service proposes; only a
//! coordinator's confirmation allocates.

use cpm_proto::v1::mentor_matching_service_server::MentorMatchingService;
use cpm_proto::v1::{
    Allocation, AllocationConfirmed, ConfirmAllocationRequest, ConfirmAllocationResponse,
    EstimateWaitRequest, EstimateWaitResponse, Gender, ListMentorsRequest, ListMentorsResponse,
    LivedExperience, MatchProposal, Mentor, MentorStatus, ProposeMatchesRequest,
    ProposeMatchesResponse, RegisterMentorRequest, RegisterMentorResponse, Vulnerability,
};
use cpm_runtime::auth::{Caller, Role};
use cpm_runtime::bus::{ServiceHandle, outbox};
use cpm_runtime::grpc::access::{AccessTable, STAFF};
use cpm_runtime::grpc::page;
use cpm_runtime::grpc::values::timestamp;
use cpm_runtime::grpc::{ApiError, FieldViolations};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::db::{self, MentorRow, NewMentorRow};
use crate::domain::{
    MentorLoad, NewAllocation, NewMentor, ProposalQuery, estimated_wait_days, parse_area_filter,
    parse_wait_area,
};
use crate::matching::{self, Candidate, ClientNeeds};

/// Staff run the register and allocate; referrers may ask about waits.
pub static ACCESS: AccessTable = AccessTable::new(&[
    ("RegisterMentor", STAFF),
    ("ListMentors", STAFF),
    ("ProposeMatches", STAFF),
    ("ConfirmAllocation", STAFF),
    (
        "EstimateWait",
        &[Role::Coordinator, Role::Admin, Role::Referrer],
    ),
]);

pub struct MentorMatching {
    handle: ServiceHandle,
    pool: PgPool,
}

impl MentorMatching {
    pub fn new(handle: ServiceHandle) -> Self {
        Self {
            pool: handle.pool().clone(),
            handle,
        }
    }
}

fn to_proto(row: &MentorRow) -> Mentor {
    Mentor {
        mentor_id: row.mentor_id.to_string(),
        display_name: row.display_name.clone(),
        gender: row.gender,
        area: row.area.clone(),
        lived_experience: row.lived_experience.clone(),
        safeguarding_trained: row.safeguarding_trained,
        status: row.status,
        capacity: row.capacity,
        current_clients: row.current_clients,
        trained_on: Some(timestamp(row.trained_on)),
    }
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
            .filter_map(|value| LivedExperience::try_from(*value).ok())
            .collect(),
        free_places: load_of(row).free_places(),
    }
}

#[tonic::async_trait]
impl MentorMatchingService for MentorMatching {
    #[tracing::instrument(skip_all, fields(mentor_id))]
    async fn register_mentor(
        &self,
        request: Request<RegisterMentorRequest>,
    ) -> Result<Response<RegisterMentorResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let mentor = NewMentor::parse(request.get_ref()).map_err(ApiError::InvalidArgument)?;
        let mentor_id = Uuid::now_v7();
        tracing::Span::current().record("mentor_id", tracing::field::display(mentor_id));
        let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
        let row = db::insert_mentor(
            &mut connection,
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
        .await
        .map_err(ApiError::from)?;
        tracing::info!(
            status = mentor.initial_status().as_str_name(),
            "mentor registered"
        );
        Ok(Response::new(RegisterMentorResponse {
            mentor: Some(to_proto(&row)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_mentors(
        &self,
        request: Request<ListMentorsRequest>,
    ) -> Result<Response<ListMentorsResponse>, Status> {
        let request = request.get_ref();
        let area = parse_area_filter(request).map_err(ApiError::InvalidArgument)?;
        let mut violations = FieldViolations::new();
        let page_size = page::page_size(request.page_size, &mut violations);
        // Where the last mentor shown sorts: display name, then ID.
        let after =
            page::decode_cursor(&request.page_token, &mut violations, |parts| match parts {
                [name, id] => Some((name.to_string(), page::parse_id(id)?)),
                _ => None,
            });
        violations.into_result()?;
        let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
        let after = after.as_ref().map(|(name, id)| (name.as_str(), *id));
        let mut rows = db::list_mentors(&mut connection, area.as_deref(), after, page_size + 1)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = page::finish_page(&mut rows, page_size, |row| {
            page::encode_token(&[&row.display_name, &row.mentor_id.to_string()])
        });
        Ok(Response::new(ListMentorsResponse {
            mentors: rows.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn propose_matches(
        &self,
        request: Request<ProposeMatchesRequest>,
    ) -> Result<Response<ProposeMatchesResponse>, Status> {
        let query = ProposalQuery::parse(request.get_ref()).map_err(ApiError::InvalidArgument)?;
        let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
        let client = db::fetch_waiting_client(&mut connection, query.referral_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound("accepted referral".into()))?;
        if client.allocated {
            return Err(ApiError::FailedPrecondition(
                "the referral already has a mentor pair allocated".into(),
            )
            .into());
        }
        let candidates: Vec<Candidate> = db::list_candidates(&mut connection)
            .await
            .map_err(ApiError::from)?
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
        Ok(Response::new(ProposeMatchesResponse {
            proposals: proposals
                .into_iter()
                .map(|proposal| MatchProposal {
                    mentor_ids: proposal.mentor_ids.iter().map(Uuid::to_string).collect(),
                    score: proposal.score,
                    reasons: proposal.reasons,
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id, allocation_id))]
    async fn confirm_allocation(
        &self,
        request: Request<ConfirmAllocationRequest>,
    ) -> Result<Response<ConfirmAllocationResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let allocation =
            NewAllocation::parse(request.get_ref()).map_err(ApiError::InvalidArgument)?;
        let mentor_ids = allocation.mentor_ids;

        let mut transaction = self.handle.begin().await.map_err(ApiError::from)?;
        let client = db::lock_waiting_client(&mut transaction, allocation.referral_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound("accepted referral".into()))?;
        if client.allocated {
            return Err(ApiError::FailedPrecondition(
                "the referral already has a mentor pair allocated".into(),
            )
            .into());
        }
        let locked = db::lock_mentors(&mut transaction, &mentor_ids)
            .await
            .map_err(ApiError::from)?;
        if let Some(missing) = mentor_ids.iter().find(|id| !locked.contains(id)) {
            return Err(ApiError::NotFound(format!("mentor {missing}")).into());
        }
        let mentors = db::fetch_mentors(&mut transaction, &mentor_ids)
            .await
            .map_err(ApiError::from)?;
        for id in &mentor_ids {
            let mentor = mentors
                .iter()
                .find(|row| row.mentor_id == *id)
                .ok_or_else(|| ApiError::NotFound(format!("mentor {id}")))?;
            if let Some(reason) = load_of(mentor).unavailable_because() {
                return Err(ApiError::FailedPrecondition(format!("mentor {id} {reason}")).into());
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
        .await
        .map_err(ApiError::from)?;
        db::mark_client_allocated(&mut transaction, allocation.referral_id)
            .await
            .map_err(ApiError::from)?;
        db::set_mentors_status(&mut transaction, &mentor_ids, MentorStatus::Active)
            .await
            .map_err(ApiError::from)?;
        let mentor_ids: Vec<String> = mentor_ids.iter().map(Uuid::to_string).collect();
        outbox::enqueue(
            &mut transaction,
            crate::NAME,
            &AllocationConfirmed {
                allocation_id: allocation_id.to_string(),
                referral_id: allocation.referral_id.to_string(),
                agency_id: client.agency_id.clone(),
                area: client.area.clone(),
                mentor_ids: mentor_ids.clone(),
                confirmed_by: caller.subject.clone(),
                confirmed_at: Some(timestamp(confirmed_at)),
            },
        )
        .await
        .map_err(ApiError::from)?;
        transaction.commit().await.map_err(ApiError::from)?;
        tracing::info!("allocation confirmed");
        Ok(Response::new(ConfirmAllocationResponse {
            allocation: Some(Allocation {
                allocation_id: allocation_id.to_string(),
                referral_id: allocation.referral_id.to_string(),
                mentor_ids,
                confirmed_by: caller.subject,
                confirmed_at: Some(timestamp(confirmed_at)),
            }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn estimate_wait(
        &self,
        request: Request<EstimateWaitRequest>,
    ) -> Result<Response<EstimateWaitResponse>, Status> {
        let area = parse_wait_area(request.get_ref()).map_err(ApiError::InvalidArgument)?;
        let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
        let load = db::area_load(&mut connection, &area, None)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(EstimateWaitResponse {
            estimated_days: estimated_wait_days(load.clients_waiting, load.free_mentor_places),
            clients_waiting: i32::try_from(load.clients_waiting).unwrap_or(i32::MAX),
            free_mentor_places: i32::try_from(load.free_mentor_places).unwrap_or(i32::MAX),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

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
    fn the_mentor_message_carries_the_load() {
        let mentor = to_proto(&row(MentorStatus::Trained, 2, 1));
        assert_eq!(mentor.status, MentorStatus::Trained as i32);
        assert_eq!((mentor.capacity, mentor.current_clients), (2, 1));
        assert!(mentor.trained_on.is_some());
    }
}
