//! `cpm.v1.ContactLoggingService`: case files, contacts and discharge.
//! Every RPC goes through [`ContactLogging::admitted_case_file`], which
//! applies [`CaseAccess`]: a mentor reaches only the cases they are
//! allocated to, and another case answers NOT_FOUND as a missing one does.

use chrono::{DateTime, Utc};
use cpm_proto::v1::contact_logging_service_server::ContactLoggingService;
use cpm_proto::v1::{
    CaseDischarged, CaseFile, CaseState, Contact, ContactLogged, DischargeRequest,
    DischargeResponse, GetCaseFileRequest, GetCaseFileResponse, ListContactsRequest,
    ListContactsResponse, LogContactRequest, LogContactResponse,
};
use cpm_runtime::auth::Caller;
use cpm_runtime::bus::{ServiceHandle, outbox};
use cpm_runtime::grpc::access::AccessTable;
use cpm_runtime::grpc::page;
use cpm_runtime::grpc::values::{optional_timestamp, require_id, timestamp};
use cpm_runtime::grpc::{ApiError, FieldViolations};
use sqlx::{PgConnection, PgPool};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::db::{self, CaseFileRow, CaseLock, ContactRow};
use crate::domain::{CASE_MANAGERS, CASE_WORKERS, CaseAccess, DischargeOrder, NewContact};

/// Mentors and staff work in case files; only staff discharge. Which case
/// files a mentor may touch is [`CaseAccess`]'s to say.
pub static ACCESS: AccessTable = AccessTable::new(&[
    ("GetCaseFile", CASE_WORKERS),
    ("LogContact", CASE_WORKERS),
    ("ListContacts", CASE_WORKERS),
    ("Discharge", CASE_MANAGERS),
]);

pub struct ContactLogging {
    handle: ServiceHandle,
    pool: PgPool,
}

impl ContactLogging {
    pub fn new(handle: ServiceHandle) -> Self {
        Self {
            pool: handle.pool().clone(),
            handle,
        }
    }

    /// The case file of `referral_id` when `access` admits it, locked as `lock` says.
    async fn admitted_case_file(
        connection: &mut PgConnection,
        access: &CaseAccess,
        referral_id: Uuid,
        lock: CaseLock,
    ) -> Result<CaseFileRow, ApiError> {
        let case_file = db::fetch_case_file(connection, referral_id, lock).await?;
        access.admit(case_file, |row| &row.mentor_ids)
    }
}

fn case_state(row: &CaseFileRow) -> CaseState {
    CaseState::try_from(row.state).unwrap_or_default()
}

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
        let access = CaseAccess::of(Caller::of(&request)?, CASE_WORKERS)?;
        let referral_id = require_id("referral_id", &request.get_ref().referral_id)?;
        let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
        let row =
            Self::admitted_case_file(&mut connection, &access, referral_id, CaseLock::None).await?;
        Ok(Response::new(GetCaseFileResponse {
            case_file: Some(case_file_to_proto(&row)),
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn log_contact(
        &self,
        request: Request<LogContactRequest>,
    ) -> Result<Response<LogContactResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let access = CaseAccess::of(&caller, CASE_WORKERS)?;
        let contact =
            NewContact::parse(request.get_ref(), Utc::now()).map_err(ApiError::InvalidArgument)?;

        let mut transaction = self.handle.begin().await.map_err(ApiError::from)?;
        let case_file = Self::admitted_case_file(
            &mut transaction,
            &access,
            contact.referral_id,
            CaseLock::Share,
        )
        .await?;
        if case_state(&case_file) != CaseState::Open {
            return Err(ApiError::FailedPrecondition(format!(
                "the case file is {}; contacts can only be logged on an open case file",
                case_state(&case_file).as_str_name()
            ))
            .into());
        }
        let row = db::insert_contact(
            &mut transaction,
            &db::NewContactRow {
                contact_id: Uuid::now_v7(),
                case_file_id: case_file.case_file_id,
                activity: contact.activity as i32,
                minutes: contact.minutes,
                occurred_at: contact.occurred_at,
                logged_by: &caller.subject,
                logged_by_role: caller.role.as_str(),
                summary: &contact.summary,
                concern_raised: contact.concern_raised,
            },
        )
        .await
        .map_err(ApiError::from)?;
        outbox::enqueue(
            &mut transaction,
            crate::NAME,
            &ContactLogged {
                contact_id: row.contact_id.to_string(),
                referral_id: case_file.referral_id.to_string(),
                case_file_id: case_file.case_file_id.to_string(),
                activity: row.activity,
                minutes: row.minutes,
                occurred_at: Some(timestamp(row.occurred_at)),
                concern_raised: row.concern_raised,
            },
        )
        .await
        .map_err(ApiError::from)?;
        transaction.commit().await.map_err(ApiError::from)?;
        tracing::info!(
            contact_id = %row.contact_id,
            activity = contact.activity.as_str_name(),
            minutes = row.minutes,
            concern_raised = row.concern_raised,
            "contact logged"
        );
        Ok(Response::new(LogContactResponse {
            contact: Some(contact_to_proto(&row)),
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn list_contacts(
        &self,
        request: Request<ListContactsRequest>,
    ) -> Result<Response<ListContactsResponse>, Status> {
        let access = CaseAccess::of(Caller::of(&request)?, CASE_WORKERS)?;
        let referral_id = require_id("referral_id", &request.get_ref().referral_id)?;
        let mut violations = FieldViolations::new();
        let page_size = page::page_size(request.get_ref().page_size, &mut violations);
        let after = decode_contact_token(&request.get_ref().page_token, &mut violations);
        violations.into_result()?;
        let mut transaction = self.handle.begin().await.map_err(ApiError::from)?;
        let case_file =
            Self::admitted_case_file(&mut transaction, &access, referral_id, CaseLock::None)
                .await?;
        let mut rows = db::list_contacts(
            &mut transaction,
            case_file.case_file_id,
            after,
            page_size + 1,
        )
        .await
        .map_err(ApiError::from)?;
        transaction.commit().await.map_err(ApiError::from)?;
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
        let caller = Caller::of(&request)?.clone();
        let access = CaseAccess::of(&caller, CASE_MANAGERS)?;
        let order = DischargeOrder::parse(request.get_ref()).map_err(ApiError::InvalidArgument)?;

        let mut transaction = self.handle.begin().await.map_err(ApiError::from)?;
        let case_file = Self::admitted_case_file(
            &mut transaction,
            &access,
            order.referral_id,
            CaseLock::Update,
        )
        .await?;
        let state = case_state(&case_file);
        let not_open = || {
            ApiError::FailedPrecondition(format!(
                "the case file is {}; only an open case file can be discharged",
                state.as_str_name()
            ))
        };
        if state != CaseState::Open {
            return Err(not_open().into());
        }
        let discharged_at = db::discharge_case_file(
            &mut transaction,
            case_file.case_file_id,
            CaseState::Open as i32,
            CaseState::Discharged as i32,
            &caller.subject,
            &order.reason,
        )
        .await
        .map_err(ApiError::from)?
        .ok_or_else(not_open)?;
        outbox::enqueue(
            &mut transaction,
            crate::NAME,
            &CaseDischarged {
                case_file_id: case_file.case_file_id.to_string(),
                referral_id: case_file.referral_id.to_string(),
                agency_id: case_file.agency_id.clone(),
                discharged_at: Some(timestamp(discharged_at)),
                discharged_by: caller.subject.clone(),
            },
        )
        .await
        .map_err(ApiError::from)?;
        let row =
            Self::admitted_case_file(&mut transaction, &access, order.referral_id, CaseLock::None)
                .await?;
        transaction.commit().await.map_err(ApiError::from)?;
        tracing::info!(case_file_id = %row.case_file_id, "case discharged");
        Ok(Response::new(DischargeResponse {
            case_file: Some(case_file_to_proto(&row)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

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
            mentor_ids: vec!["m-1".into(), "m-2".into()],
            contacts: 3,
            minutes: i64::from(i32::MAX) + 1,
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
