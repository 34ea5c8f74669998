//! `cpm.v1.ContactLoggingService`: case files, contacts, goals, demand,
//! impact, reports and discharge. Handlers parse, call [`crate::commands`]
//! (or the module of their capability) and answer. Every command on a case
//! goes through [`CaseAccess`]: a coordinator reaches only the cases in the
//! areas their token names (an admin every area), a mentor only the cases
//! they are allocated to, and any other case answers NOT_FOUND as a
//! missing one does. None lists case files; only the reports name an area,
//! which must be one of the caller's.

use chrono::{DateTime, Utc};
use cpm_proto::v1::contact_logging_service_server::ContactLoggingService;
use cpm_proto::v1::{
    CaseFile, Concern, ConcernState, Contact, ContactsReportRequest, ContactsReportResponse,
    DischargeRequest, DischargeResponse, GetCaseFileRequest, GetCaseFileResponse, GetDemandRequest,
    GetDemandResponse, ImpactReportRequest, ImpactReportResponse, ListConcernsRequest,
    ListConcernsResponse, ListContactsRequest, ListContactsResponse, ListGoalsRequest,
    ListGoalsResponse, LogContactRequest, LogContactResponse, RecordDemandRequest,
    RecordDemandResponse, RecordGoalProgressRequest, RecordGoalProgressResponse,
    RecordProgrammeCostRequest, RecordProgrammeCostResponse, ResolveConcernRequest,
    ResolveConcernResponse, SetGoalRequest, SetGoalResponse,
};
use cpm_runtime::auth::Caller;
use cpm_runtime::bus::ServiceHandle;
use cpm_runtime::client_keys::ClientKeys;
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::access::AccessTable;
use cpm_runtime::grpc::page;
use cpm_runtime::grpc::values::{optional_timestamp, require_id, timestamp};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::commands;
use crate::concerns::{self, ConcernQuery, ConcernRow};
use crate::db::{CaseFileRow, ContactRow};
use crate::demand::{self, DemandWindows, NewDemand};
use crate::domain::{
    ADMINS, CASE_MANAGERS, CASE_WORKERS, CaseAccess, DischargeOrder, NewContact, Resolution,
};
use crate::goals::{self, GoalUpdate, NewGoal};
use crate::impact::{self, ImpactQuery, NewProgrammeCost};
use crate::reports::{self, ContactsQuery};

/// Mentors and staff work in case files; only staff discharge. Which case
/// files each may touch (staff: their areas; a mentor: their own cases) is
/// [`CaseAccess`]'s to say.
pub static ACCESS: AccessTable = AccessTable::new(&[
    ("GetCaseFile", CASE_WORKERS),
    ("LogContact", CASE_WORKERS),
    ("ListContacts", CASE_WORKERS),
    ("Discharge", CASE_MANAGERS),
    ("ListConcerns", CASE_MANAGERS),
    ("ResolveConcern", CASE_MANAGERS),
    ("SetGoal", CASE_WORKERS),
    ("RecordGoalProgress", CASE_WORKERS),
    ("ListGoals", CASE_WORKERS),
    ("RecordDemand", CASE_MANAGERS),
    ("GetDemand", CASE_MANAGERS),
    ("RecordProgrammeCost", ADMINS),
    ("ImpactReport", CASE_MANAGERS),
    ("ContactsReport", CASE_MANAGERS),
]);

pub struct ContactLogging {
    handle: ServiceHandle,
    /// Seals and opens the free text kept about each client.
    keys: ClientKeys,
    /// Demand windows, the impact formula and the re-referral instructions.
    config: crate::Config,
}

impl ContactLogging {
    pub fn new(handle: ServiceHandle, keys: ClientKeys) -> Self {
        Self {
            handle,
            keys,
            config: crate::Config::default(),
        }
    }

    /// With the service's settings rather than the defaults.
    pub fn with_config(self, config: crate::Config) -> Self {
        Self { config, ..self }
    }

    fn case_file_to_proto(&self, row: &CaseFileRow) -> CaseFile {
        CaseFile {
            feedback: commands::recorded_feedback(row, &self.config.how_to_re_refer),
            ..case_file_to_proto(row)
        }
    }
}

fn concern_to_proto(row: &ConcernRow) -> Concern {
    Concern {
        concern_id: row.concern_id.to_string(),
        referral_id: row.referral_id.to_string(),
        case_file_id: row.case_file_id.to_string(),
        area: row.area.clone(),
        contact_id: row.contact_id.to_string(),
        category: row.category,
        urgency: row.urgency,
        raised_by: row.raised_by.clone(),
        raised_at: Some(timestamp(row.raised_at)),
        resolved_by: row.resolved_by.clone().unwrap_or_default(),
        resolved_at: optional_timestamp(row.resolved_at),
        resolution_note: row.resolution_note.clone(),
    }
}

/// The case file as stored; the feedback it recorded is added by
/// [`ContactLogging::case_file_to_proto`], which knows the programme's
/// instructions.
fn case_file_to_proto(row: &CaseFileRow) -> CaseFile {
    CaseFile {
        case_file_id: row.case_file_id.to_string(),
        referral_id: row.referral_id.to_string(),
        area: row.area.clone(),
        mentor_ids: row.mentor_ids.clone(),
        state: row.state,
        opened_at: Some(timestamp(row.opened_at)),
        discharged_at: optional_timestamp(row.discharged_at),
        contacts: i32::try_from(row.contacts).unwrap_or(i32::MAX),
        minutes: i32::try_from(row.minutes).unwrap_or(i32::MAX),
        discharge_reason: row.discharge_reason.clone().unwrap_or_default(),
        coordinator: row.coordinator.clone(),
        closed_at: optional_timestamp(row.closed_at),
        feedback: None,
        feedback_delivered_at: optional_timestamp(row.feedback_delivered_at),
        open_concerns: i32::try_from(row.open_concerns).unwrap_or(i32::MAX),
    }
}

fn contact_to_proto(row: &ContactRow) -> Contact {
    Contact {
        contact_id: row.contact_id.to_string(),
        case_file_id: row.case_file_id.to_string(),
        activity: row.activity,
        minutes: row.minutes,
        occurred_at: Some(timestamp(row.occurred_at)),
        logged_by: row.logged_by.clone(),
        summary: row.summary.clone(),
        concern_raised: row.concern_raised,
        channel: row.channel,
        attempted: row.attempted,
        logged_by_role: row.logged_by_role.to_uppercase(),
        concern_id: row.concern_id.map(|id| id.to_string()).unwrap_or_default(),
    }
}

/// Where the last contact shown sorts: when it happened, when it was
/// logged, its ID (newest first).
fn decode_contact_token(
    token: &str,
    violations: &mut FieldViolations,
) -> Option<(DateTime<Utc>, DateTime<Utc>, Uuid)> {
    page::decode_cursor(token, violations, |parts| match parts {
        [occurred, logged, id] => Some((
            page::parse_instant(occurred)?,
            page::parse_instant(logged)?,
            page::parse_id(id)?,
        )),
        _ => None,
    })
}

#[tonic::async_trait]
impl ContactLoggingService for ContactLogging {
    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn get_case_file(
        &self,
        request: Request<GetCaseFileRequest>,
    ) -> Result<Response<GetCaseFileResponse>, Status> {
        let caller = Caller::of(&request)?;
        let access = CaseAccess::of(caller)?;
        let referral_id = require_id("referral_id", &request.get_ref().referral_id)?;
        let row =
            commands::case_file(&self.handle, &self.keys, caller, &access, referral_id).await?;
        Ok(Response::new(GetCaseFileResponse {
            case_file: Some(self.case_file_to_proto(&row)),
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn log_contact(
        &self,
        request: Request<LogContactRequest>,
    ) -> Result<Response<LogContactResponse>, Status> {
        let caller = Caller::of(&request)?;
        let access = CaseAccess::of(caller)?;
        let contact = NewContact::parse(request.get_ref(), cpm_runtime::clock::now(&request))?;
        let row =
            commands::log_contact(&self.handle, &self.keys, caller, &access, &contact).await?;
        Ok(Response::new(LogContactResponse {
            contact: Some(contact_to_proto(&row)),
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn list_contacts(
        &self,
        request: Request<ListContactsRequest>,
    ) -> Result<Response<ListContactsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let access = CaseAccess::of(caller)?;
        let referral_id = require_id("referral_id", &request.get_ref().referral_id)?;
        let mut violations = FieldViolations::new();
        let page_size = page::page_size(request.get_ref().page_size, &mut violations);
        let after = decode_contact_token(&request.get_ref().page_token, &mut violations);
        violations.into_result()?;
        let mut rows = commands::list_contacts(
            &self.handle,
            &self.keys,
            caller,
            &access,
            referral_id,
            after,
            page_size + 1,
        )
        .await?;
        let next_page_token = page::finish_page(&mut rows, page_size, |row| {
            page::encode_token(&[
                &page::instant_part(row.occurred_at),
                &page::instant_part(row.logged_at),
                &row.contact_id.to_string(),
            ])
        });
        Ok(Response::new(ListContactsResponse {
            contacts: rows.iter().map(contact_to_proto).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn discharge(
        &self,
        request: Request<DischargeRequest>,
    ) -> Result<Response<DischargeResponse>, Status> {
        let caller = Caller::of(&request)?;
        let access = CaseAccess::of(caller)?;
        let order = DischargeOrder::parse(request.get_ref())?;
        let row = commands::discharge(
            &self.handle,
            &self.keys,
            caller,
            &access,
            &order,
            &self.config.how_to_re_refer,
            cpm_runtime::clock::now(&request),
        )
        .await?;
        Ok(Response::new(DischargeResponse {
            case_file: Some(self.case_file_to_proto(&row)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_concerns(
        &self,
        request: Request<ListConcernsRequest>,
    ) -> Result<Response<ListConcernsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let message = request.get_ref();
        let mut violations = FieldViolations::new();
        let state = if message.state == 0 {
            Some(ConcernState::Open)
        } else {
            cpm_runtime::grpc::values::parse_enum("state", message.state, &mut violations)
        };
        let page_size = page::page_size(message.page_size, &mut violations);
        let after =
            page::decode_cursor(&message.page_token, &mut violations, |parts| match parts {
                [raised, id] => Some((page::parse_instant(raised)?, page::parse_id(id)?)),
                _ => None,
            });
        violations.into_result()?;
        let query = ConcernQuery {
            state: state.expect("validated"),
            urgent_only: message.urgent_only,
            after,
            limit: page_size + 1,
        };
        let mut rows = concerns::list(
            &self.handle,
            &self.keys,
            caller,
            &caller.area_scope(),
            &query,
        )
        .await?;
        let next_page_token = page::finish_page(&mut rows, page_size, |row| {
            page::encode_token(&[
                &page::instant_part(row.raised_at),
                &row.concern_id.to_string(),
            ])
        });
        Ok(Response::new(ListConcernsResponse {
            concerns: rows.iter().map(concern_to_proto).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(concern_id = %request.get_ref().concern_id))]
    async fn resolve_concern(
        &self,
        request: Request<ResolveConcernRequest>,
    ) -> Result<Response<ResolveConcernResponse>, Status> {
        let caller = Caller::of(&request)?;
        let access = CaseAccess::of(caller)?;
        let resolution = Resolution::parse(request.get_ref())?;
        let row = concerns::resolve(&self.handle, &self.keys, caller, &access, &resolution).await?;
        Ok(Response::new(ResolveConcernResponse {
            concern: Some(concern_to_proto(&row)),
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn set_goal(
        &self,
        request: Request<SetGoalRequest>,
    ) -> Result<Response<SetGoalResponse>, Status> {
        let caller = Caller::of(&request)?;
        let access = CaseAccess::of(caller)?;
        let today = cpm_runtime::clock::now(&request).date_naive();
        let new = NewGoal::parse(request.get_ref(), today)?;
        let goal = goals::set_goal(&self.handle, &self.keys, caller, &access, &new).await?;
        Ok(Response::new(SetGoalResponse { goal: Some(goal) }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn record_goal_progress(
        &self,
        request: Request<RecordGoalProgressRequest>,
    ) -> Result<Response<RecordGoalProgressResponse>, Status> {
        let caller = Caller::of(&request)?;
        let access = CaseAccess::of(caller)?;
        let update = GoalUpdate::parse(request.get_ref())?;
        let goal =
            goals::record_progress(&self.handle, &self.keys, caller, &access, &update).await?;
        Ok(Response::new(RecordGoalProgressResponse {
            goal: Some(goal),
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn list_goals(
        &self,
        request: Request<ListGoalsRequest>,
    ) -> Result<Response<ListGoalsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let access = CaseAccess::of(caller)?;
        let referral_id = require_id("referral_id", &request.get_ref().referral_id)?;
        let goals =
            goals::list_goals(&self.handle, &self.keys, caller, &access, referral_id).await?;
        Ok(Response::new(ListGoalsResponse { goals }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn record_demand(
        &self,
        request: Request<RecordDemandRequest>,
    ) -> Result<Response<RecordDemandResponse>, Status> {
        let caller = Caller::of(&request)?;
        let access = CaseAccess::of(caller)?;
        let today = cpm_runtime::clock::now(&request).date_naive();
        let new = NewDemand::parse(request.get_ref(), today)?;
        let windows = DemandWindows::of(&self.config);
        let row = demand::record_demand(&self.handle, caller, &access, windows, &new).await?;
        Ok(Response::new(RecordDemandResponse {
            figure: Some(demand::figure_to_proto(&row)),
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn get_demand(
        &self,
        request: Request<GetDemandRequest>,
    ) -> Result<Response<GetDemandResponse>, Status> {
        let caller = Caller::of(&request)?;
        let access = CaseAccess::of(caller)?;
        let referral_id = require_id("referral_id", &request.get_ref().referral_id)?;
        let (current, history) = demand::demand(&self.handle, &access, referral_id).await?;
        Ok(Response::new(GetDemandResponse {
            current: current.iter().map(demand::figure_to_proto).collect(),
            history: history.iter().map(demand::figure_to_proto).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn record_programme_cost(
        &self,
        request: Request<RecordProgrammeCostRequest>,
    ) -> Result<Response<RecordProgrammeCostResponse>, Status> {
        let caller = Caller::of(&request)?;
        let cost = NewProgrammeCost::parse(request.get_ref())?;
        let cost = impact::record_programme_cost(&self.handle, caller, &cost).await?;
        Ok(Response::new(RecordProgrammeCostResponse {
            cost: Some(cost),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn impact_report(
        &self,
        request: Request<ImpactReportRequest>,
    ) -> Result<Response<ImpactReportResponse>, Status> {
        let caller = Caller::of(&request)?;
        let query = ImpactQuery::parse(request.get_ref(), caller)?;
        let report = impact::impact_report(&self.handle, &self.config.impact, &query).await?;
        Ok(Response::new(report))
    }

    #[tracing::instrument(skip_all)]
    async fn contacts_report(
        &self,
        request: Request<ContactsReportRequest>,
    ) -> Result<Response<ContactsReportResponse>, Status> {
        let caller = Caller::of(&request)?;
        let query = ContactsQuery::parse(request.get_ref(), caller)?;
        let report = reports::contacts_report(&self.handle, &query, Utc::now()).await?;
        Ok(Response::new(report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use cpm_proto::v1::CaseState;

    #[test]
    fn a_case_file_reaches_the_caller_with_its_totals_and_no_missing_fields() {
        let row = CaseFileRow {
            case_file_id: Uuid::now_v7(),
            referral_id: Uuid::now_v7(),
            agency_id: "agency-1".into(),
            area: "Darlington".into(),
            state: CaseState::Open as i32,
            opened_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            discharged_at: None,
            discharged_by: None,
            discharge_reason: None,
            discharge_reason_sealed: None,
            coordinator: "coordinator-1".into(),
            closed_at: None,
            discharge_outcome: None,
            relapse_signs: Vec::new(),
            feedback_contacts: None,
            feedback_goals_set: None,
            feedback_goals_achieved: None,
            feedback_delivered_at: None,
            mentor_ids: vec!["m-1".into(), "m-2".into()],
            contacts: 3,
            minutes: i64::from(i32::MAX) + 1,
            open_concerns: 0,
        };
        let case_file = case_file_to_proto(&row);
        assert_eq!(case_file.mentor_ids, ["m-1", "m-2"]);
        assert_eq!(case_file.contacts, 3);
        assert_eq!(
            case_file.minutes,
            i32::MAX,
            "totals saturate rather than wrap"
        );
        assert_eq!(case_file.discharged_at, None);
        assert_eq!(case_file.discharge_reason, "");
    }
}
