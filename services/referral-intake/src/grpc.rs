//! `cpm.v1.ReferralIntakeService`: agencies submit, read, list and withdraw
//! their own referrals. A referrer's token names its agency; another
//! agency's referral answers NOT_FOUND, exactly as a missing one does.

use chrono::{SubsecRound as _, Utc};
use cpm_proto::v1::referral_intake_service_server::ReferralIntakeService;
use cpm_proto::v1::{
    Agency, AgencyKind, ClientIdentity, Demand, EraseClientRequest, EraseClientResponse,
    ExportClientDataRequest, ExportClientDataResponse, GetReferralRequest, GetReferralResponse,
    ListAgenciesRequest, ListAgenciesResponse, ListReferralsRequest, ListReferralsResponse,
    OtherProfessional, Referral, ReferralDetails, ReferralStatus, ReferralSubmitted,
    ReferralWithdrawn, Referrer, RegisterAgencyRequest, RegisterAgencyResponse,
    RegisterReferrerRequest, RegisterReferrerResponse, SubmitReferralRequest,
    SubmitReferralResponse, WithdrawReferralRequest, WithdrawReferralResponse,
};
use cpm_runtime::auth::{Caller, Role};
use cpm_runtime::bus::ServiceHandle;
use cpm_runtime::bus::outbox::{self, OutboxRow};
use cpm_runtime::crypto::KeyRing;
use cpm_runtime::db::warm::WarmPool;
use cpm_runtime::grpc::access::{AccessTable, STAFF};
use cpm_runtime::grpc::page;
use cpm_runtime::grpc::values::{
    check_text, from_timestamp, optional_timestamp, parse_enum, parse_id, require_id, timestamp,
};
use cpm_runtime::grpc::{ApiError, FieldViolations};
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use sqlx::{PgConnection, PgPool};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::db::{self, ReferralRow, StatusChange};
use crate::domain::{NewReferral, SealedDetails, can_withdraw, identity_key, status_rank};
use crate::privacy::{self, ClientVault};

/// Referrers submit and follow their agency's referrals; staff read them;
/// admins keep the agency register and answer data-protection requests.
pub static ACCESS: AccessTable = AccessTable::new(&[
    ("SubmitReferral", &[Role::Referrer]),
    (
        "GetReferral",
        &[Role::Referrer, Role::Coordinator, Role::Admin],
    ),
    ("ListReferrals", &[Role::Referrer]),
    ("WithdrawReferral", &[Role::Referrer]),
    ("RegisterAgency", &[Role::Admin]),
    ("ListAgencies", STAFF),
    ("RegisterReferrer", &[Role::Admin]),
    ("EraseClient", &[Role::Admin]),
    ("ExportClientData", &[Role::Admin]),
]);

pub struct ReferralIntake {
    /// The pool, and the relay woken after each write of events.
    handle: ServiceHandle,
    pool: PgPool,
    /// SubmitReferral's connections, kept between submissions.
    warm: WarmPool,
    vault: ClientVault,
    /// Development only: an unknown agency is registered on its first referral.
    auto_register_agencies: bool,
}

impl ReferralIntake {
    pub fn new(handle: ServiceHandle, keys: KeyRing, auto_register_agencies: bool) -> Self {
        Self {
            warm: WarmPool::new(handle.pool().clone()),
            pool: handle.pool().clone(),
            handle,
            vault: ClientVault::new(keys),
            auto_register_agencies,
        }
    }

    /// Refuses agencies that are not registered (`active` is `None`) or are suspended.
    async fn check_agency(
        &self,
        connection: &mut PgConnection,
        agency_id: &str,
        active: Option<bool>,
    ) -> Result<(), ApiError> {
        match active {
            Some(true) => Ok(()),
            Some(false) => Err(ApiError::PermissionDenied(format!(
                "agency {agency_id} is suspended and cannot refer"
            ))),
            None if self.auto_register_agencies => {
                tracing::warn!(%agency_id, "registering an unknown agency (development mode)");
                db::register_agency_if_missing(connection, agency_id, AgencyKind::Other as i32)
                    .await?;
                Ok(())
            }
            None => Err(ApiError::PermissionDenied(format!(
                "agency {agency_id} is not registered; ask the programme's admin"
            ))),
        }
    }
}

/// The hash of everything but the idempotency key, which tells a retry from
/// another request reusing its key. The key is lifted out for the encoding
/// and put back, rather than copying the whole request.
fn request_hash(request: &mut SubmitReferralRequest) -> Vec<u8> {
    let key = std::mem::take(&mut request.idempotency_key);
    let hash = Sha256::digest(request.encode_to_vec()).to_vec();
    request.idempotency_key = key;
    hash
}

fn demand_of(row: &ReferralRow) -> Option<Demand> {
    let counts = [
        row.police_calls,
        row.ambulance_calls,
        row.nhs_111_calls,
        row.other_calls,
        row.safeguarding_reports,
    ];
    if counts.iter().all(Option::is_none) && row.police_staff_hours.is_none() {
        return None;
    }
    Some(Demand {
        police_calls: row.police_calls.unwrap_or_default(),
        ambulance_calls: row.ambulance_calls.unwrap_or_default(),
        nhs_111_calls: row.nhs_111_calls.unwrap_or_default(),
        other_calls: row.other_calls.unwrap_or_default(),
        police_staff_hours: row.police_staff_hours.unwrap_or_default(),
        safeguarding_reports: row.safeguarding_reports.unwrap_or_default(),
    })
}

/// The referral as its agency sees it; identity and details only when
/// `sealed` was opened (GetReferral, audited).
fn to_proto(row: &ReferralRow, sealed: Option<SealedDetails>) -> Referral {
    let (client, details) = match sealed {
        Some(sealed) => (
            Some(ClientIdentity {
                given_name: sealed.given_name,
                family_name: sealed.family_name,
                date_of_birth: sealed.date_of_birth.to_string(),
                gender: row.client_gender,
                address: sealed.address,
                area: row.area.clone(),
                phone: sealed.phone,
                safe_contact_instructions: sealed.safe_contact_instructions,
            }),
            Some(ReferralDetails {
                referrer: Some(Referrer {
                    name: sealed.referrer_name,
                    role: sealed.referrer_role,
                    contact: sealed.referrer_contact,
                }),
                reason: sealed.reason,
                desired_outcomes: sealed.desired_outcomes,
                vulnerabilities: row.vulnerabilities.clone(),
                vulnerability_other: sealed.vulnerability_other,
                victim_of: row.victim_of.clone(),
                perpetrator_of: row.perpetrator_of.clone(),
                crime_other: sealed.crime_other,
                emergency_calls_last_12_months: row.emergency_calls_last_12_months,
                demand: demand_of(row),
                other_professionals: sealed
                    .other_professionals
                    .into_iter()
                    .map(|p| OtherProfessional {
                        role: p.role,
                        organisation: p.organisation,
                        contact: p.contact,
                    })
                    .collect(),
                referrer_will_co_visit: row.referrer_will_co_visit,
                known_risk_types: row.known_risk_types.clone(),
                known_risks: sealed.known_risks,
            }),
        ),
        None => (None, None),
    };
    Referral {
        referral_id: row.referral_id.to_string(),
        agency_id: row.agency_id.clone(),
        status: row.status,
        submitted_at: Some(timestamp(row.submitted_at)),
        status_changed_at: Some(timestamp(row.status_changed_at)),
        not_taken_on_stage: row.not_taken_on_stage.unwrap_or_default(),
        not_taken_on_reason: row.not_taken_on_reason.unwrap_or_default(),
        estimated_start: optional_timestamp(row.estimated_start),
        discharged_at: optional_timestamp(row.discharged_at),
        earlier_referral_id: row
            .earlier_referral_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        client,
        area: row.area.clone(),
        details,
        erased: row.erased_at.is_some(),
    }
}

fn to_agency(row: db::AgencyRow) -> Agency {
    Agency {
        agency_id: row.agency_id,
        name: row.name,
        kind: row.kind,
        active: row.active,
        registered_at: Some(timestamp(row.registered_at)),
    }
}

/// The admin caller and the referral of an erasure or access request, which
/// must say why.
fn privacy_request<T>(
    request: &Request<T>,
    referral_id: &str,
    reason: &str,
) -> Result<(Caller, Uuid), Status> {
    let caller = Caller::of(request)?.clone();
    let mut violations = FieldViolations::new();
    let referral_id = parse_id("referral_id", referral_id, &mut violations);
    check_text(
        "reason",
        reason,
        true,
        crate::domain::MAX_TEXT,
        &mut violations,
    );
    violations.into_result()?;
    Ok((caller, referral_id.expect("no violation means an id")))
}

/// Agency IDs travel in tokens and URLs: short, lowercase, no spaces.
fn check_agency_id(field: &str, agency_id: &str, violations: &mut FieldViolations) {
    let valid = !agency_id.is_empty()
        && agency_id.len() <= 64
        && agency_id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        violations.add(
            field,
            "must be 1 to 64 lowercase letters, digits, '-' or '_'",
        );
    }
}

/// Referrers are limited to their agency; coordinators and admins see all.
fn agency_scope(caller: &Caller) -> Result<Option<&str>, Status> {
    match caller.role {
        Role::Referrer => Ok(Some(caller.agency()?)),
        Role::Coordinator | Role::Admin => Ok(None),
        _ => Err(Status::permission_denied(format!(
            "role {} may not read referrals",
            caller.role
        ))),
    }
}

/// A page token: where the last referral shown sorts (submission time, ID).
fn encode_page_token(row: &ReferralRow) -> String {
    page::time_and_id_token(row.submitted_at, row.referral_id)
}

#[tonic::async_trait]
impl ReferralIntakeService for ReferralIntake {
    #[tracing::instrument(skip_all, fields(referral_id))]
    async fn submit_referral(
        &self,
        request: Request<SubmitReferralRequest>,
    ) -> Result<Response<SubmitReferralResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let agency_id = caller.agency()?.to_owned();
        let mut request = request.into_inner();
        let referral = NewReferral::parse(&request, Utc::now().date_naive())
            .map_err(ApiError::InvalidArgument)?;
        let hash = request_hash(&mut request);

        let referral_id = Uuid::now_v7();
        tracing::Span::current().record("referral_id", tracing::field::display(referral_id));
        let identity = identity_key(&referral.details);
        let fingerprint = self.vault.fingerprint(&identity);
        let (wrapped, sealed) = self.vault.seal(referral_id, &referral.details);

        // Two round trips and no explicit transaction: the lookup, then one
        // statement writing the referral, its sealed record and its event.
        // The connection is released warm only once both completed.
        let mut connection = self.warm.acquire().await.map_err(ApiError::from)?;
        let context = db::submission_context(
            &mut connection,
            &agency_id,
            &self.vault.fingerprints(&identity),
        )
        .await
        .map_err(ApiError::from)?;
        self.check_agency(&mut connection, &agency_id, context.agency_active)
            .await?;
        let earlier_referral_id = context.earlier_referral_id;
        let new_row = db::NewReferralRow {
            referral_id,
            agency_id: &agency_id,
            idempotency_key: &referral.idempotency_key,
            request_hash: &hash,
            submitted_by: &caller.subject,
            area: &referral.area,
            client_gender: referral.gender as i32,
            vulnerabilities: referral.vulnerabilities.iter().map(|v| *v as i32).collect(),
            emergency_calls_last_12_months: referral.emergency_calls_last_12_months,
            client_fingerprint: &fingerprint,
            earlier_referral_id,
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
            // PostgreSQL keeps microseconds.
            submitted_at: Utc::now().trunc_subsecs(6),
        };
        let event = OutboxRow::new(
            crate::NAME,
            &ReferralSubmitted {
                referral_id: referral_id.to_string(),
                agency_id: agency_id.clone(),
                area: referral.area.clone(),
                submitted_at: Some(timestamp(new_row.submitted_at)),
                vulnerabilities: new_row.vulnerabilities.clone(),
                client_gender: new_row.client_gender,
                earlier_referral_id: earlier_referral_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                emergency_calls_last_12_months: new_row.emergency_calls_last_12_months,
                referrer_will_co_visit: new_row.referrer_will_co_visit,
                known_risk_types: new_row.known_risk_types.clone(),
            },
        );
        let inserted_row =
            db::insert_referral(&mut connection, &new_row, &wrapped, &sealed, &event)
                .await
                .map_err(ApiError::from)?;

        let Some(row) = inserted_row else {
            // A retry: answer with the first referral, if it was the same request.
            let existing =
                db::find_by_idempotency_key(&mut connection, &agency_id, &referral.idempotency_key)
                    .await
                    .map_err(ApiError::from)?
                    .ok_or_else(|| {
                        ApiError::Internal(anyhow::anyhow!("idempotency row vanished"))
                    })?;
            connection.release();
            if existing.request_hash != hash {
                let mut violations = FieldViolations::new();
                violations.add(
                    "idempotency_key",
                    "was already used for a different referral; use a new key",
                );
                return Err(ApiError::InvalidArgument(violations).into());
            }
            return Ok(Response::new(SubmitReferralResponse {
                referral: Some(to_proto(&existing, None)),
                replayed: true,
            }));
        };
        connection.release();
        // The statement has committed: the relay can see the event now.
        self.handle.wake();
        tracing::info!(
            re_referral = earlier_referral_id.is_some(),
            "referral submitted"
        );
        Ok(Response::new(SubmitReferralResponse {
            referral: Some(to_proto(&row, None)),
            replayed: false,
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn get_referral(
        &self,
        request: Request<GetReferralRequest>,
    ) -> Result<Response<GetReferralResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let scope = agency_scope(&caller)?;
        let referral_id = require_id("referral_id", &request.get_ref().referral_id)?;
        let mut transaction = self.handle.begin().await.map_err(ApiError::from)?;
        let row = db::fetch_referral(&mut transaction, referral_id, scope)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound("referral".into()))?;
        let sealed = self
            .vault
            .open(&mut transaction, referral_id, &caller, "GetReferral")
            .await?;
        transaction.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(GetReferralResponse {
            referral: Some(to_proto(&row, sealed)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_referrals(
        &self,
        request: Request<ListReferralsRequest>,
    ) -> Result<Response<ListReferralsResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let agency_id = caller.agency()?;
        let request = request.get_ref();
        let mut violations = FieldViolations::new();
        let page_size = page::page_size(request.page_size, &mut violations);
        let after = page::time_and_id(&request.page_token, &mut violations);
        let status = match request.status {
            0 => None,
            value if ReferralStatus::try_from(value).is_ok() => Some(value),
            value => {
                violations.add("status", format!("{value} is not a known status"));
                None
            }
        };
        let mut instant = |field: &str, value: Option<&prost_types::Timestamp>| {
            let parsed = value.map(from_timestamp);
            if parsed == Some(None) {
                violations.add(field, "is not a valid timestamp");
            }
            parsed.flatten()
        };
        let filter = db::ReferralFilter {
            status,
            submitted_from: instant("submitted_from", request.submitted_from.as_ref()),
            submitted_to: instant("submitted_to", request.submitted_to.as_ref()),
        };
        if let (Some(from), Some(to)) = (filter.submitted_from, filter.submitted_to)
            && from >= to
        {
            violations.add("submitted_to", "must be after submitted_from");
        }
        violations.into_result()?;
        let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
        let mut rows =
            db::list_referrals(&mut connection, agency_id, &filter, after, page_size + 1)
                .await
                .map_err(ApiError::from)?;
        let next_page_token = page::finish_page(&mut rows, page_size, encode_page_token);
        Ok(Response::new(ListReferralsResponse {
            referrals: rows.iter().map(|row| to_proto(row, None)).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn withdraw_referral(
        &self,
        request: Request<WithdrawReferralRequest>,
    ) -> Result<Response<WithdrawReferralResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let agency_id = caller.agency()?.to_owned();
        let referral_id = require_id("referral_id", &request.get_ref().referral_id)?;
        let mut transaction = self.handle.begin().await.map_err(ApiError::from)?;
        let row = db::lock_referral(&mut transaction, referral_id, &agency_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound("referral".into()))?;
        let status = ReferralStatus::try_from(row.status).unwrap_or_default();
        if !can_withdraw(status) {
            return Err(ApiError::FailedPrecondition(format!(
                "a referral that is {} can no longer be withdrawn",
                status.as_str_name()
            ))
            .into());
        }
        crate::status::advance(
            &mut transaction,
            referral_id,
            &StatusChange {
                status: ReferralStatus::Withdrawn as i32,
                rank: status_rank(ReferralStatus::Withdrawn),
                ..StatusChange::default()
            },
        )
        .await
        .map_err(ApiError::from)?;
        outbox::enqueue(
            &mut transaction,
            crate::NAME,
            &ReferralWithdrawn {
                referral_id: referral_id.to_string(),
                agency_id: agency_id.clone(),
                withdrawn_at: Some(timestamp(Utc::now())),
            },
        )
        .await
        .map_err(ApiError::from)?;
        let row = db::fetch_referral(&mut transaction, referral_id, Some(&agency_id))
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound("referral".into()))?;
        transaction.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(WithdrawReferralResponse {
            referral: Some(to_proto(&row, None)),
        }))
    }

    #[tracing::instrument(skip_all, fields(agency_id = %request.get_ref().agency_id))]
    async fn register_agency(
        &self,
        request: Request<RegisterAgencyRequest>,
    ) -> Result<Response<RegisterAgencyResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        check_agency_id("agency_id", &request.agency_id, &mut violations);
        check_text(
            "name",
            &request.name,
            true,
            crate::domain::MAX_SHORT_TEXT,
            &mut violations,
        );
        parse_enum::<AgencyKind>("kind", request.kind, &mut violations);
        violations.into_result()?;
        let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
        let row = db::upsert_agency(
            &mut connection,
            &request.agency_id,
            request.name.trim(),
            request.kind,
            request.active,
            &caller.subject,
        )
        .await
        .map_err(ApiError::from)?;
        tracing::info!(active = row.active, "agency registered");
        Ok(Response::new(RegisterAgencyResponse {
            agency: Some(to_agency(row)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_agencies(
        &self,
        request: Request<ListAgenciesRequest>,
    ) -> Result<Response<ListAgenciesResponse>, Status> {
        let request = request.get_ref();
        let mut violations = FieldViolations::new();
        let page_size = page::page_size(request.page_size, &mut violations);
        let after =
            page::decode_cursor(&request.page_token, &mut violations, |parts| match parts {
                [agency_id] => Some(agency_id.to_string()),
                _ => None,
            });
        violations.into_result()?;
        let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
        let mut rows = db::list_agencies(&mut connection, after.as_deref(), page_size + 1)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = page::finish_page(&mut rows, page_size, |row| {
            page::encode_token(&[&row.agency_id])
        });
        Ok(Response::new(ListAgenciesResponse {
            agencies: rows.into_iter().map(to_agency).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(agency_id = %request.get_ref().agency_id))]
    async fn register_referrer(
        &self,
        request: Request<RegisterReferrerRequest>,
    ) -> Result<Response<RegisterReferrerResponse>, Status> {
        let request = request.into_inner();
        let mut violations = FieldViolations::new();
        check_agency_id("agency_id", &request.agency_id, &mut violations);
        check_text(
            "subject",
            &request.subject,
            true,
            crate::domain::MAX_SHORT_TEXT,
            &mut violations,
        );
        check_text(
            "name",
            &request.name,
            true,
            crate::domain::MAX_SHORT_TEXT,
            &mut violations,
        );
        check_text(
            "contact",
            &request.contact,
            true,
            crate::domain::MAX_SHORT_TEXT,
            &mut violations,
        );
        parse_enum::<cpm_proto::v1::ReferrerRole>("role", request.role, &mut violations);
        violations.into_result()?;
        let mut transaction = self.handle.begin().await.map_err(ApiError::from)?;
        if db::agency_is_active(&mut transaction, &request.agency_id)
            .await
            .map_err(ApiError::from)?
            .is_none()
        {
            return Err(ApiError::FailedPrecondition(format!(
                "agency {} is not registered",
                request.agency_id
            ))
            .into());
        }
        let referrer_id = db::upsert_referrer(
            &mut transaction,
            &request.agency_id,
            request.subject.trim(),
            request.name.trim(),
            request.role,
            request.contact.trim(),
        )
        .await
        .map_err(ApiError::from)?;
        transaction.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(RegisterReferrerResponse {
            referrer_id: referrer_id.to_string(),
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn erase_client(
        &self,
        request: Request<EraseClientRequest>,
    ) -> Result<Response<EraseClientResponse>, Status> {
        let (caller, referral_id) = privacy_request(
            &request,
            &request.get_ref().referral_id,
            &request.get_ref().reason,
        )?;
        let mut transaction = self.handle.begin().await.map_err(ApiError::from)?;
        let erased = privacy::erase_client(
            &mut transaction,
            referral_id,
            &caller,
            &request.get_ref().reason,
        )
        .await?;
        transaction.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(EraseClientResponse {
            erased_referral_ids: erased.iter().map(Uuid::to_string).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn export_client_data(
        &self,
        request: Request<ExportClientDataRequest>,
    ) -> Result<Response<ExportClientDataResponse>, Status> {
        let (caller, referral_id) = privacy_request(
            &request,
            &request.get_ref().referral_id,
            &request.get_ref().reason,
        )?;
        let mut transaction = self.handle.begin().await.map_err(ApiError::from)?;
        let document = privacy::export_client(
            &mut transaction,
            &self.vault,
            referral_id,
            &caller,
            &request.get_ref().reason,
        )
        .await?;
        transaction.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(ExportClientDataResponse {
            document_json: serde_json::to_string_pretty(&document)
                .map_err(|error| ApiError::Internal(error.into()))?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let row = ReferralRow {
            referral_id: Uuid::now_v7(),
            agency_id: "a".into(),
            request_hash: vec![],
            submitted_at: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            area: "x".into(),
            client_gender: 1,
            vulnerabilities: vec![],
            earlier_referral_id: None,
            status: 1,
            status_changed_at: Utc::now(),
            not_taken_on_stage: None,
            not_taken_on_reason: None,
            estimated_start: None,
            discharged_at: None,
            emergency_calls_last_12_months: 0,
            victim_of: vec![],
            perpetrator_of: vec![],
            known_risk_types: vec![],
            referrer_will_co_visit: false,
            police_calls: None,
            ambulance_calls: None,
            nhs_111_calls: None,
            other_calls: None,
            police_staff_hours: None,
            safeguarding_reports: None,
            erased_at: None,
        };
        let token = encode_page_token(&row);
        let mut violations = FieldViolations::new();
        assert_eq!(
            page::time_and_id(&token, &mut violations),
            Some((row.submitted_at, row.referral_id))
        );
        assert!(violations.is_empty());
        assert_eq!(page::time_and_id("garbage", &mut violations), None);
        assert_eq!(
            page::time_and_id(&page::encode_token(&["soon", "x"]), &mut violations),
            None
        );
        assert_eq!(violations.fields().count(), 2);
    }

    #[test]
    fn the_request_hash_ignores_the_key_only() {
        let mut a = SubmitReferralRequest {
            idempotency_key: "one".into(),
            reason: "r".into(),
            ..Default::default()
        };
        let mut b = a.clone();
        b.idempotency_key = "two".into();
        assert_eq!(request_hash(&mut a), request_hash(&mut b));
        assert_eq!(a.idempotency_key, "one", "the key is put back");
        a.reason = "other".into();
        assert_ne!(request_hash(&mut a), request_hash(&mut b));
    }
}
