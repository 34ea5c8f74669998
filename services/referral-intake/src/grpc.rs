//! `cpm.v1.ReferralIntakeService`: agencies submit, read, list and withdraw
//! their own referrals. A referrer's token names its agency; another
//! agency's referral answers NOT_FOUND, exactly as a missing one does.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64;
use chrono::{DateTime, Utc};
use cpm_proto::v1::referral_intake_service_server::ReferralIntakeService;
use cpm_proto::v1::{
    ClientIdentity, GetReferralRequest, GetReferralResponse, ListReferralsRequest,
    ListReferralsResponse, Referral, ReferralStatus, ReferralSubmitted, ReferralWithdrawn,
    SubmitReferralRequest, SubmitReferralResponse, WithdrawReferralRequest,
    WithdrawReferralResponse,
};
use cpm_runtime::auth::{Caller, Role};
use cpm_runtime::bus::outbox;
use cpm_runtime::crypto::MasterKey;
use cpm_runtime::grpc::values::{optional_timestamp, require_id, timestamp};
use cpm_runtime::grpc::{ApiError, FieldViolations};
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::db::{self, ReferralRow, StatusChange};
use crate::domain::{NewReferral, SealedDetails, can_withdraw, identity_key, status_rank};

pub struct ReferralIntake {
    pool: PgPool,
    master_key: MasterKey,
}

impl ReferralIntake {
    pub fn new(pool: PgPool, master_key: MasterKey) -> Self {
        Self { pool, master_key }
    }

    fn seal(&self, referral_id: Uuid, details: &SealedDetails) -> (Vec<u8>, Vec<u8>) {
        let (data_key, wrapped) = self.master_key.new_data_key();
        let plaintext = serde_json::to_vec(details).expect("details serialise");
        (wrapped, data_key.seal(&plaintext, referral_id.as_bytes()))
    }

    /// The client's identity, audited as read by `caller` for `purpose`;
    /// `None` once erased.
    async fn open_client(
        &self,
        connection: &mut sqlx::PgConnection,
        referral_id: Uuid,
        caller: &Caller,
        purpose: &str,
    ) -> Result<Option<ClientIdentity>, ApiError> {
        let Some((Some(wrapped), Some(sealed))) =
            db::fetch_client_record(connection, referral_id).await?
        else {
            return Ok(None);
        };
        let details: SealedDetails = self
            .master_key
            .unwrap_data_key(&wrapped)
            .and_then(|key| key.open(&sealed, referral_id.as_bytes()))
            .map_err(|error| ApiError::Internal(error.into()))
            .and_then(|plain| {
                serde_json::from_slice(&plain).map_err(|error| ApiError::Internal(error.into()))
            })?;
        db::record_personal_data_access(
            connection,
            referral_id,
            &caller.subject,
            caller.role.as_str(),
            purpose,
        )
        .await?;
        Ok(Some(ClientIdentity {
            given_name: details.given_name,
            family_name: details.family_name,
            date_of_birth: details.date_of_birth.to_string(),
            gender: 0,
            address: details.address,
            area: String::new(),
            phone: details.phone,
            safe_contact_instructions: details.safe_contact_instructions,
        }))
    }
}

fn request_hash(request: &SubmitReferralRequest) -> Vec<u8> {
    let mut without_key = request.clone();
    without_key.idempotency_key.clear();
    Sha256::digest(without_key.encode_to_vec()).to_vec()
}

fn to_proto(row: &ReferralRow, client: Option<ClientIdentity>) -> Referral {
    let client = client.map(|mut client| {
        client.gender = row.client_gender;
        client.area = row.area.clone();
        client
    });
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

fn encode_page_token(row: &ReferralRow) -> String {
    BASE64.encode(format!(
        "{}|{}",
        row.submitted_at.timestamp_micros(),
        row.referral_id
    ))
}

fn decode_page_token(token: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let text = String::from_utf8(BASE64.decode(token).ok()?).ok()?;
    let (micros, id) = text.split_once('|')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

#[tonic::async_trait]
impl ReferralIntakeService for ReferralIntake {
    #[tracing::instrument(skip_all, fields(referral_id))]
    async fn submit_referral(
        &self,
        request: Request<SubmitReferralRequest>,
    ) -> Result<Response<SubmitReferralResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        caller.require(&[Role::Referrer])?;
        let agency_id = caller.agency()?.to_owned();
        let request = request.into_inner();
        let referral = NewReferral::parse(&request, Utc::now().date_naive())
            .map_err(ApiError::InvalidArgument)?;
        let hash = request_hash(&request);

        let mut transaction = self.pool.begin().await.map_err(ApiError::from)?;
        let referral_id = Uuid::now_v7();
        tracing::Span::current().record("referral_id", tracing::field::display(referral_id));
        let fingerprint = self
            .master_key
            .fingerprint(&identity_key(&referral.details));
        let earlier_referral_id = db::find_earlier_referral(&mut transaction, &fingerprint)
            .await
            .map_err(ApiError::from)?;
        let inserted = db::insert_referral(
            &mut transaction,
            &db::NewReferralRow {
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
            },
        )
        .await
        .map_err(ApiError::from)?;

        if !inserted {
            // A retry: answer with the first referral, if it was the same request.
            transaction.rollback().await.map_err(ApiError::from)?;
            let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
            let existing =
                db::find_by_idempotency_key(&mut connection, &agency_id, &referral.idempotency_key)
                    .await
                    .map_err(ApiError::from)?
                    .ok_or_else(|| {
                        ApiError::Internal(anyhow::anyhow!("idempotency row vanished"))
                    })?;
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
        }

        let (wrapped, sealed) = self.seal(referral_id, &referral.details);
        db::insert_client_record(&mut transaction, referral_id, &wrapped, &sealed)
            .await
            .map_err(ApiError::from)?;
        let row = db::fetch_referral(&mut transaction, referral_id, None)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("inserted referral not found")))?;
        outbox::enqueue(
            &mut transaction,
            crate::NAME,
            &ReferralSubmitted {
                referral_id: referral_id.to_string(),
                agency_id: agency_id.clone(),
                area: referral.area.clone(),
                submitted_at: Some(timestamp(row.submitted_at)),
                vulnerabilities: row.vulnerabilities.clone(),
                client_gender: row.client_gender,
                earlier_referral_id: earlier_referral_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
            },
        )
        .await
        .map_err(ApiError::from)?;
        transaction.commit().await.map_err(ApiError::from)?;
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
        let mut transaction = self.pool.begin().await.map_err(ApiError::from)?;
        let row = db::fetch_referral(&mut transaction, referral_id, scope)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound("referral".into()))?;
        let client = self
            .open_client(&mut transaction, referral_id, &caller, "GetReferral")
            .await?;
        transaction.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(GetReferralResponse {
            referral: Some(to_proto(&row, client)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_referrals(
        &self,
        request: Request<ListReferralsRequest>,
    ) -> Result<Response<ListReferralsResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        caller.require(&[Role::Referrer])?;
        let agency_id = caller.agency()?;
        let request = request.get_ref();
        let mut violations = FieldViolations::new();
        if !(0..=500).contains(&request.page_size) {
            violations.add("page_size", "must be between 1 and 500");
        }
        let after = if request.page_token.is_empty() {
            None
        } else {
            let cursor = decode_page_token(&request.page_token);
            if cursor.is_none() {
                violations.add("page_token", "is not a token this service issued");
            }
            cursor
        };
        let status = match request.status {
            0 => None,
            value if ReferralStatus::try_from(value).is_ok() => Some(value),
            value => {
                violations.add("status", format!("{value} is not a known status"));
                None
            }
        };
        violations.into_result()?;
        let page_size = if request.page_size == 0 {
            50
        } else {
            request.page_size
        };
        let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
        let mut rows = db::list_referrals(
            &mut connection,
            agency_id,
            status,
            after,
            i64::from(page_size) + 1,
        )
        .await
        .map_err(ApiError::from)?;
        let next_page_token = if rows.len() > page_size as usize {
            rows.truncate(page_size as usize);
            rows.last().map(encode_page_token).unwrap_or_default()
        } else {
            String::new()
        };
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
        caller.require(&[Role::Referrer])?;
        let agency_id = caller.agency()?.to_owned();
        let referral_id = require_id("referral_id", &request.get_ref().referral_id)?;
        let mut transaction = self.pool.begin().await.map_err(ApiError::from)?;
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
        db::advance_status(
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
            submitted_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
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
        };
        let token = encode_page_token(&row);
        assert_eq!(
            decode_page_token(&token),
            Some((row.submitted_at, row.referral_id))
        );
        assert_eq!(decode_page_token("garbage"), None);
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
        assert_eq!(request_hash(&a), request_hash(&b));
        a.reason = "other".into();
        assert_ne!(request_hash(&a), request_hash(&b));
    }
}
