//! `cpm.v1.MentorMatchingService`: coordinators keep the mentor register,
//! ask for scored mentor pairs and confirm one, in the areas they work in
//! (an admin in every area; see [`crate::areas`]); referrers may also ask
//! how long a client in any of the programme's areas is likely to wait.
//! The service proposes; only a coordinator's confirmation allocates.
//! Handlers parse (areas against the programme's), work out the caller's
//! areas, call [`crate::commands`] and answer; who may call what is
//! [`ACCESS`]. A mentor reads and exports only their own record
//! ([`crate::retention`]); every read of mentors' personal data is recorded
//! ([`crate::audit`]) before the answer is sent.

use chrono::{NaiveDate, Utc};
use cpm_proto::v1::mentor_matching_service_server::MentorMatchingService;
use std::sync::Arc;

use cpm_proto::v1::{
    Allocation, ChangeMentorStatusRequest, ChangeMentorStatusResponse, ConfirmAllocationRequest,
    ConfirmAllocationResponse, EraseMentorRequest, EraseMentorResponse, EstimateWaitRequest,
    EstimateWaitResponse, ExportMentorDataRequest, ExportMentorDataResponse, GetMentorRequest,
    GetMentorResponse, ListMentorAlertsRequest, ListMentorAlertsResponse, ListMentorsRequest,
    ListMentorsResponse, MarkPairIncompatibleRequest, MarkPairIncompatibleResponse, MatchProposal,
    Mentor, MentorAlert, PoolProposal, ProposeMatchesRequest, ProposeMatchesResponse,
    ProposePoolMatchesRequest, ProposePoolMatchesResponse, RecordCheckInRequest,
    RecordCheckInResponse, RecordTrainingRequest, RecordTrainingResponse, RegisterMentorRequest,
    RegisterMentorResponse, ReportPoorFitRequest, ReportPoorFitResponse, SafetyExclusion,
    UpdateMentorDetailsRequest, UpdateMentorDetailsResponse, WaitBasis,
};
use cpm_runtime::auth::{Caller, Role};
use cpm_runtime::bus::ServiceHandle;
use cpm_runtime::config::ProgrammeConfig;
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::access::{AccessTable, STAFF};
use cpm_runtime::grpc::page;
use cpm_runtime::grpc::values::timestamp;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::alerts::{self, AlertQuery, CheckIn};
use crate::audit;
use crate::commands::{self, MatchingError};
use crate::db::MentorRow;
use crate::domain::{
    MentorFilter, MentorUpdate, NewAllocation, NewMentor, ProposalQuery, TrainingRecord,
    WaitQuestion,
};
use crate::fit::{AllocationRow, IncompatiblePair, PoorFitReport};
use crate::matching::{Proposal, Weights};
use crate::retention::{self, Erasure, Reach};
use crate::safety::Exclusion;
use crate::status::StatusChange;
use crate::wait::Basis;
use crate::wait::Quoter;

/// Staff run the register and allocate (in their areas); referrers may ask
/// about waits; a mentor may say their pair is not working.
pub static ACCESS: AccessTable = AccessTable::new(&[
    ("RegisterMentor", STAFF),
    ("ListMentors", STAFF),
    ("ProposeMatches", STAFF),
    ("ConfirmAllocation", STAFF),
    ("ChangeMentorStatus", STAFF),
    ("RecordTraining", STAFF),
    ("UpdateMentorDetails", STAFF),
    (
        "EstimateWait",
        &[Role::Coordinator, Role::Admin, Role::Referrer],
    ),
    (
        "ReportPoorFit",
        &[Role::Coordinator, Role::Admin, Role::Mentor],
    ),
    ("MarkPairIncompatible", STAFF),
    ("RecordCheckIn", STAFF),
    ("ListMentorAlerts", STAFF),
    ("ProposePoolMatches", STAFF),
    ("EraseMentor", STAFF),
    ("ExportMentorData", STAFF_AND_MENTORS),
    ("GetMentor", STAFF_AND_MENTORS),
]);

/// Staff, and a mentor for their own record.
const STAFF_AND_MENTORS: &[Role] = &[Role::Coordinator, Role::Admin, Role::Mentor];

pub struct MentorMatching {
    handle: ServiceHandle,
    /// The programme's areas: every area a request names is one of them.
    programme: ProgrammeConfig,
    /// The safety exclusions, resolved from configuration.
    exclusions: Arc<Vec<Exclusion>>,
    /// The service's settings (early fit window, wait and alert rules).
    config: Arc<crate::Config>,
    quoter: Quoter,
}

impl MentorMatching {
    pub fn new(
        handle: ServiceHandle,
        programme: ProgrammeConfig,
        exclusions: Vec<Exclusion>,
        config: crate::Config,
    ) -> Self {
        Self {
            handle,
            programme,
            exclusions: Arc::new(exclusions),
            quoter: Quoter::new(&config),
            config: Arc::new(config),
        }
    }
}

/// Who reads a mentor's record. Staff see when the first allocation was
/// confirmed (the wait from training to a first client is theirs to
/// manage); a mentor reading their own record does not get it here (their
/// subject-access export lists every allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reader {
    Staff,
    Mentor,
}

impl Reader {
    fn of(caller: &Caller) -> Self {
        match caller.role {
            Role::Mentor => Reader::Mentor,
            _ => Reader::Staff,
        }
    }
}

fn to_proto(row: &MentorRow, reader: Reader) -> Mentor {
    let date = |date: Option<NaiveDate>| date.map(|date| date.to_string()).unwrap_or_default();
    Mentor {
        mentor_id: row.mentor_id.to_string(),
        display_name: row.display_name.clone(),
        gender: row.gender,
        area: row.area.clone(),
        lived_experience: row.lived_experience.clone(),
        safeguarding_trained: row.safeguarding_trained_on.is_some(),
        status: row.status,
        capacity: row.capacity,
        current_clients: row.current_clients,
        trained_on: Some(timestamp(row.trained_on)),
        areas: row.areas.clone(),
        training_cohort: row.training_cohort.clone(),
        training_format: row.training_format,
        training_completed_on: date(row.training_completed_on),
        safeguarding_trained_on: date(row.safeguarding_trained_on),
        agreement_signed_on: date(row.agreement_signed_on),
        vetted_on: date(row.vetted_on),
        age_band: row.age_band,
        availability: row.availability.clone(),
        ex_service_user: row.ex_service_user,
        available_for_proposal: commands::load_of(row).unavailable_because().is_none(),
        first_allocated_at: match reader {
            Reader::Staff => row.first_allocated_at.map(timestamp),
            Reader::Mentor => None,
        },
    }
}

/// A stored proposal as the API shows it, with the version of the weights
/// that scored it.
fn match_proposal(proposal_id: Uuid, proposal: Proposal, weights: &Weights) -> MatchProposal {
    MatchProposal {
        mentor_ids: proposal.mentor_ids.iter().map(Uuid::to_string).collect(),
        score: proposal.score,
        reasons: proposal.reasons,
        proposal_id: proposal_id.to_string(),
        weights_version: weights.version.clone(),
    }
}

fn allocation_to_proto(row: &AllocationRow) -> Allocation {
    Allocation {
        allocation_id: row.allocation_id.to_string(),
        referral_id: row.referral_id.to_string(),
        mentor_ids: row.mentor_ids.iter().map(Uuid::to_string).collect(),
        confirmed_by: row.confirmed_by.clone(),
        confirmed_at: Some(timestamp(row.confirmed_at)),
        proposal_id: row.proposal_id.map(|id| id.to_string()).unwrap_or_default(),
        reason: row.reason.clone().unwrap_or_default(),
        active: row.active,
        ended_at: row.ended_at.map(timestamp),
        end_reason: row.end_reason,
        contacts: row.contacts,
    }
}

/// Today's date, against which no recorded date may be later.
fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn count(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[tonic::async_trait]
impl MentorMatchingService for MentorMatching {
    #[tracing::instrument(skip_all, fields(mentor_id))]
    async fn register_mentor(
        &self,
        request: Request<RegisterMentorRequest>,
    ) -> Result<Response<RegisterMentorResponse>, Status> {
        let caller = Caller::of(&request)?;
        let mentor = NewMentor::parse(request.get_ref(), &self.programme, today())?;
        let scope = self.programme.staff_scope(caller);
        let row = commands::register_mentor(&self.handle, caller, &scope, &mentor).await?;
        Ok(Response::new(RegisterMentorResponse {
            mentor: Some(to_proto(&row, Reader::of(caller))),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_mentors(
        &self,
        request: Request<ListMentorsRequest>,
    ) -> Result<Response<ListMentorsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let scope = self.programme.staff_scope(caller);
        let request = request.get_ref();
        let filter = MentorFilter::parse(request, &self.programme)?;
        let mut violations = FieldViolations::new();
        let page_size = page::page_size(request.page_size, &mut violations);
        // Where the last mentor shown sorts: display name, then ID.
        let after =
            page::decode_cursor(&request.page_token, &mut violations, |parts| match parts {
                [name, id] => Some((name.to_string(), page::parse_id(id)?)),
                _ => None,
            });
        violations.into_result()?;
        let after = after.as_ref().map(|(name, id)| (name.as_str(), *id));
        let mut rows =
            commands::list_mentors(&self.handle, &scope, &filter, after, page_size + 1).await?;
        let next_page_token = page::finish_page(&mut rows, page_size, |row| {
            page::encode_token(&[&row.display_name, &row.mentor_id.to_string()])
        });
        let listed = rows.iter().map(|row| row.mentor_id);
        audit::record_read(&self.handle, caller, audit::LIST_MENTORS, listed)
            .await
            .map_err(MatchingError::from)?;
        Ok(Response::new(ListMentorsResponse {
            mentors: rows
                .iter()
                .map(|row| to_proto(row, Reader::of(caller)))
                .collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn propose_matches(
        &self,
        request: Request<ProposeMatchesRequest>,
    ) -> Result<Response<ProposeMatchesResponse>, Status> {
        let caller = Caller::of(&request)?;
        let scope = self.programme.staff_scope(caller);
        let query = ProposalQuery::parse(request.get_ref())?;
        let weights = &self.config.weights;
        let proposed = commands::propose_matches(
            &self.handle,
            caller,
            &scope,
            &self.exclusions,
            weights,
            &query,
        )
        .await?;
        // Every mentor the answer names: both of each pair, and those excluded.
        let named = proposed
            .proposals
            .iter()
            .flat_map(|(_, proposal)| proposal.mentor_ids)
            .chain(proposed.excluded.iter().map(|excluded| excluded.mentor_id));
        audit::record_read(&self.handle, caller, audit::PROPOSE_MATCHES, named)
            .await
            .map_err(MatchingError::from)?;
        Ok(Response::new(ProposeMatchesResponse {
            proposals: proposed
                .proposals
                .into_iter()
                .map(|(proposal_id, proposal)| match_proposal(proposal_id, proposal, weights))
                .collect(),
            exclusions: proposed
                .excluded
                .into_iter()
                .map(|excluded| SafetyExclusion {
                    mentor_id: excluded.mentor_id.to_string(),
                    display_name: excluded.display_name,
                    rule: excluded.rule,
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id, allocation_id))]
    async fn confirm_allocation(
        &self,
        request: Request<ConfirmAllocationRequest>,
    ) -> Result<Response<ConfirmAllocationResponse>, Status> {
        let caller = Caller::of(&request)?;
        let scope = self.programme.staff_scope(caller);
        let allocation = NewAllocation::parse(request.get_ref())?;
        let confirmed = commands::confirm_allocation(
            &self.handle,
            caller,
            &scope,
            &self.exclusions,
            &allocation,
            cpm_runtime::clock::now(&request),
        )
        .await?;
        Ok(Response::new(ConfirmAllocationResponse {
            allocation: Some(Allocation {
                allocation_id: confirmed.allocation_id.to_string(),
                referral_id: confirmed.referral_id.to_string(),
                mentor_ids: confirmed.mentor_ids.iter().map(Uuid::to_string).collect(),
                confirmed_by: confirmed.confirmed_by,
                confirmed_at: Some(timestamp(confirmed.confirmed_at)),
                proposal_id: confirmed
                    .proposal_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                reason: confirmed.reason.unwrap_or_default(),
                active: true,
                ..Allocation::default()
            }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn estimate_wait(
        &self,
        request: Request<EstimateWaitRequest>,
    ) -> Result<Response<EstimateWaitResponse>, Status> {
        // Not personal: any of the programme's areas, whoever asks.
        let question = WaitQuestion::parse(request.get_ref(), &self.programme)?;
        let (load, estimate) = commands::estimate_wait(
            &self.handle,
            &self.quoter,
            &question.area,
            &question.perpetrator_of,
        )
        .await?;
        Ok(Response::new(EstimateWaitResponse {
            estimated_days: estimate.p50_days,
            clients_waiting: count(load.clients_waiting),
            free_mentor_places: count(load.free_mentor_places),
            p50_days: estimate.p50_days,
            p90_days: estimate.p90_days,
            allocations_per_week: estimate.allocations_per_week,
            pairs_freed_per_week: estimate.pairs_freed_per_week,
            eligible_share: load.eligible_share,
            basis: match estimate.basis {
                Basis::Observed => WaitBasis::Observed,
                Basis::ProgrammeDefault => WaitBasis::ProgrammeDefault,
            } as i32,
        }))
    }

    #[tracing::instrument(skip_all, fields(mentor_id = %request.get_ref().mentor_id))]
    async fn change_mentor_status(
        &self,
        request: Request<ChangeMentorStatusRequest>,
    ) -> Result<Response<ChangeMentorStatusResponse>, Status> {
        let caller = Caller::of(&request)?;
        let scope = self.programme.staff_scope(caller);
        let change = StatusChange::parse(request.get_ref())?;
        let row = commands::change_mentor_status(&self.handle, caller, &scope, &change).await?;
        Ok(Response::new(ChangeMentorStatusResponse {
            mentor: Some(to_proto(&row, Reader::of(caller))),
        }))
    }

    #[tracing::instrument(skip_all, fields(mentor_id = %request.get_ref().mentor_id))]
    async fn record_training(
        &self,
        request: Request<RecordTrainingRequest>,
    ) -> Result<Response<RecordTrainingResponse>, Status> {
        let caller = Caller::of(&request)?;
        let scope = self.programme.staff_scope(caller);
        let record = TrainingRecord::parse(request.get_ref(), today())?;
        let row = commands::record_training(&self.handle, &scope, &record).await?;
        Ok(Response::new(RecordTrainingResponse {
            mentor: Some(to_proto(&row, Reader::of(caller))),
        }))
    }

    #[tracing::instrument(skip_all, fields(mentor_id = %request.get_ref().mentor_id))]
    async fn update_mentor_details(
        &self,
        request: Request<UpdateMentorDetailsRequest>,
    ) -> Result<Response<UpdateMentorDetailsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let scope = self.programme.staff_scope(caller);
        let update = MentorUpdate::parse(request.get_ref(), &self.programme)?;
        let row = commands::update_mentor_details(&self.handle, &scope, &update).await?;
        Ok(Response::new(UpdateMentorDetailsResponse {
            mentor: Some(to_proto(&row, Reader::of(caller))),
        }))
    }

    #[tracing::instrument(skip_all, fields(allocation_id = %request.get_ref().allocation_id))]
    async fn report_poor_fit(
        &self,
        request: Request<ReportPoorFitRequest>,
    ) -> Result<Response<ReportPoorFitResponse>, Status> {
        let caller = Caller::of(&request)?;
        let scope = self.programme.staff_scope(caller);
        let report = PoorFitReport::parse(request.get_ref())?;
        let ended = commands::report_poor_fit(
            &self.handle,
            caller,
            &scope,
            self.config.early_fit_contacts,
            &report,
        )
        .await?;
        Ok(Response::new(ReportPoorFitResponse {
            allocation: Some(allocation_to_proto(&ended)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn mark_pair_incompatible(
        &self,
        request: Request<MarkPairIncompatibleRequest>,
    ) -> Result<Response<MarkPairIncompatibleResponse>, Status> {
        let caller = Caller::of(&request)?;
        let scope = self.programme.staff_scope(caller);
        let marked = IncompatiblePair::parse(request.get_ref())?;
        commands::mark_pair_incompatible(&self.handle, caller, &scope, &marked).await?;
        Ok(Response::new(MarkPairIncompatibleResponse {}))
    }

    #[tracing::instrument(skip_all, fields(mentor_id = %request.get_ref().mentor_id))]
    async fn record_check_in(
        &self,
        request: Request<RecordCheckInRequest>,
    ) -> Result<Response<RecordCheckInResponse>, Status> {
        let caller = Caller::of(&request)?;
        let scope = self.programme.staff_scope(caller);
        let check_in = CheckIn::parse(request.get_ref(), today())?;
        let next_due = commands::record_check_in(
            &self.handle,
            caller,
            &scope,
            self.config.alert_rules(),
            &check_in,
        )
        .await?;
        Ok(Response::new(RecordCheckInResponse {
            next_due_on: next_due.to_string(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_mentor_alerts(
        &self,
        request: Request<ListMentorAlertsRequest>,
    ) -> Result<Response<ListMentorAlertsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let scope = self.programme.staff_scope(caller);
        let query = AlertQuery::parse(request.get_ref(), &self.programme)?;
        let mut rows =
            commands::list_mentor_alerts(&self.handle, &scope, self.config.alert_rules(), &query)
                .await?;
        let next_page_token = page::finish_page(&mut rows, query.page_size, alerts::token_after);
        audit::record_read(
            &self.handle,
            caller,
            audit::LIST_MENTOR_ALERTS,
            rows.iter().map(|row| row.mentor_id),
        )
        .await
        .map_err(MatchingError::from)?;
        Ok(Response::new(ListMentorAlertsResponse {
            alerts: rows
                .into_iter()
                .map(|row| MentorAlert {
                    mentor_id: row.mentor_id.to_string(),
                    display_name: row.display_name,
                    area: row.area,
                    kind: row.kind,
                    since: row.since.to_string(),
                    days: row.days,
                })
                .collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn propose_pool_matches(
        &self,
        request: Request<ProposePoolMatchesRequest>,
    ) -> Result<Response<ProposePoolMatchesResponse>, Status> {
        let caller = Caller::of(&request)?;
        let scope = self.programme.staff_scope(caller);
        let mut violations = FieldViolations::new();
        let area = self
            .programme
            .optional_area("area", &request.get_ref().area, &mut violations);
        violations.into_result()?;
        let weights = &self.config.weights;
        let proposed = commands::propose_pool_matches(
            &self.handle,
            caller,
            &scope,
            &self.exclusions,
            weights,
            area.as_deref(),
        )
        .await?;
        // Every mentor the answer names (their names are in the reasons).
        let named = proposed
            .proposals
            .iter()
            .flat_map(|(_, _, proposal)| proposal.mentor_ids);
        audit::record_read(&self.handle, caller, audit::PROPOSE_POOL_MATCHES, named)
            .await
            .map_err(MatchingError::from)?;
        let total_score = proposed.proposals.iter().map(|(_, _, p)| p.score).sum();
        Ok(Response::new(ProposePoolMatchesResponse {
            proposals: proposed
                .proposals
                .into_iter()
                .map(|(referral_id, proposal_id, proposal)| PoolProposal {
                    referral_id: referral_id.to_string(),
                    proposal: Some(match_proposal(proposal_id, proposal, weights)),
                })
                .collect(),
            total_score,
            unmatched_referral_ids: proposed.unmatched.iter().map(Uuid::to_string).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(mentor_id = %request.get_ref().mentor_id))]
    async fn erase_mentor(
        &self,
        request: Request<EraseMentorRequest>,
    ) -> Result<Response<EraseMentorResponse>, Status> {
        let caller = Caller::of(&request)?;
        let scope = self.programme.staff_scope(caller);
        let erasure = Erasure::parse(request.get_ref())?;
        let erased = retention::erase_mentor(&self.handle, caller, &scope, &erasure).await?;
        Ok(Response::new(EraseMentorResponse {
            mentor_id: erased.mentor_id.to_string(),
            erased_at: Some(timestamp(erased.erased_at)),
            status: erased.status as i32,
        }))
    }

    #[tracing::instrument(skip_all, fields(mentor_id = %request.get_ref().mentor_id))]
    async fn export_mentor_data(
        &self,
        request: Request<ExportMentorDataRequest>,
    ) -> Result<Response<ExportMentorDataResponse>, Status> {
        let caller = Caller::of(&request)?;
        let mentor_id = retention::parse_mentor_id(&request.get_ref().mentor_id)?;
        let reach = Reach::of(caller, &self.programme);
        let document = retention::export_mentor(&self.handle, caller, &reach, mentor_id).await?;
        let document_json = serde_json::to_string_pretty(&document)
            .map_err(|error| Status::internal(format!("the export does not serialise: {error}")))?;
        Ok(Response::new(ExportMentorDataResponse { document_json }))
    }

    #[tracing::instrument(skip_all, fields(mentor_id = %request.get_ref().mentor_id))]
    async fn get_mentor(
        &self,
        request: Request<GetMentorRequest>,
    ) -> Result<Response<GetMentorResponse>, Status> {
        let caller = Caller::of(&request)?;
        let mentor_id = retention::parse_mentor_id(&request.get_ref().mentor_id)?;
        let reach = Reach::of(caller, &self.programme);
        let row = retention::get_mentor(&self.handle, caller, &reach, mentor_id).await?;
        Ok(Response::new(GetMentorResponse {
            mentor: Some(to_proto(&row, Reader::of(caller))),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use cpm_proto::v1::{
        AgeBand, Availability, Gender, LivedExperience, MentorStatus, TrainingFormat,
    };

    fn row() -> MentorRow {
        MentorRow {
            mentor_id: Uuid::now_v7(),
            display_name: "Mentor A".into(),
            gender: Gender::Female as i32,
            area: "Darlington".into(),
            areas: vec!["Darlington".into(), "East Durham".into()],
            lived_experience: vec![LivedExperience::Debt as i32],
            status: MentorStatus::Trained as i32,
            capacity: 2,
            trained_on: Utc::now(),
            training_cohort: "2026-03".into(),
            training_format: TrainingFormat::FiveEvenings as i32,
            training_completed_on: NaiveDate::from_ymd_opt(2026, 3, 12),
            safeguarding_trained_on: NaiveDate::from_ymd_opt(2026, 3, 5),
            agreement_signed_on: None,
            vetted_on: NaiveDate::from_ymd_opt(2025, 11, 30),
            age_band: AgeBand::Aged18To24 as i32,
            availability: vec![Availability::Weekends as i32],
            ex_service_user: true,
            current_clients: 1,
            first_allocated_at: None,
        }
    }

    #[test]
    fn the_mentor_message_carries_the_load_and_the_register() {
        let mentor = to_proto(&row(), Reader::Staff);
        assert_eq!(mentor.status, MentorStatus::Trained as i32);
        assert_eq!((mentor.capacity, mentor.current_clients), (2, 1));
        assert!(mentor.trained_on.is_some());
        assert_eq!(mentor.areas, ["Darlington", "East Durham"]);
        assert_eq!(mentor.area, "Darlington");
        assert!(mentor.safeguarding_trained, "derived from its date");
        assert_eq!(mentor.safeguarding_trained_on, "2026-03-05");
        assert_eq!(mentor.agreement_signed_on, "", "not recorded");
        assert_eq!(mentor.vetted_on, "2025-11-30");
        assert_eq!(mentor.training_completed_on, "2026-03-12");
        assert!(!mentor.available_for_proposal, "no agreement on record");
        assert!(mentor.ex_service_user);
        assert_eq!(mentor.first_allocated_at, None, "no allocation yet");
    }

    #[test]
    fn only_staff_see_when_the_first_allocation_was_confirmed() {
        let first = DateTime::parse_from_rfc3339("2026-04-02T10:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let allocated = MentorRow {
            first_allocated_at: Some(first),
            ..row()
        };
        assert_eq!(
            to_proto(&allocated, Reader::Staff).first_allocated_at,
            Some(timestamp(first))
        );
        assert_eq!(
            to_proto(&allocated, Reader::Mentor).first_allocated_at,
            None
        );
        let caller = |role| Caller {
            subject: "someone".into(),
            role,
            agency_id: None,
            mentor_id: None,
            areas: Vec::new(),
        };
        assert_eq!(Reader::of(&caller(Role::Mentor)), Reader::Mentor);
        assert_eq!(Reader::of(&caller(Role::Coordinator)), Reader::Staff);
        assert_eq!(Reader::of(&caller(Role::Admin)), Reader::Staff);
    }

    #[test]
    fn a_mentor_may_read_and_export_but_only_staff_erase() {
        assert_eq!(ACCESS.roles_for("EraseMentor"), Some(STAFF));
        for method in ["GetMentor", "ExportMentorData"] {
            let roles = ACCESS.roles_for(method).unwrap();
            assert!(roles.contains(&Role::Mentor), "{method}");
            assert!(!roles.contains(&Role::Referrer), "{method}");
            assert!(!roles.contains(&Role::Service), "{method}");
        }
    }

    #[test]
    fn the_new_rpcs_are_for_staff_only() {
        for method in ["RecordTraining", "UpdateMentorDetails"] {
            assert_eq!(ACCESS.roles_for(method), Some(STAFF), "{method}");
        }
    }
}
