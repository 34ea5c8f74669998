//! The client's personal data: sealed at rest with a per-referral data key,
//! opened only with an audit entry, erased on request (the data key is
//! destroyed and every service is told), and exported for a subject access
//! request.

use cpm_proto::v1::ClientErased;
use cpm_runtime::auth::Caller;
use cpm_runtime::bus::outbox;
use cpm_runtime::crypto::MasterKey;
use cpm_runtime::grpc::ApiError;
use cpm_runtime::grpc::values::timestamp;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::{self, ReferralRow};
use crate::domain::SealedDetails;

/// Seals and opens client records with the master key.
#[derive(Clone)]
pub struct ClientVault {
    master_key: MasterKey,
}

impl ClientVault {
    pub fn new(master_key: MasterKey) -> Self {
        Self { master_key }
    }

    /// The keyed hash that links re-referrals of one client.
    pub fn fingerprint(&self, identity_key: &str) -> Vec<u8> {
        self.master_key.fingerprint(identity_key)
    }

    /// A fresh wrapped data key and the details sealed with it; the
    /// referral ID is bound in, so a record cannot be moved to another row.
    pub fn seal(&self, referral_id: Uuid, details: &SealedDetails) -> (Vec<u8>, Vec<u8>) {
        let (data_key, wrapped) = self.master_key.new_data_key();
        let plaintext = serde_json::to_vec(details).expect("details serialise");
        (wrapped, data_key.seal(&plaintext, referral_id.as_bytes()))
    }

    /// Opens a referral's details for `caller`, recording why; `None` once erased.
    pub async fn open(
        &self,
        connection: &mut PgConnection,
        referral_id: Uuid,
        caller: &Caller,
        purpose: &str,
    ) -> Result<Option<SealedDetails>, ApiError> {
        let Some((Some(wrapped), Some(sealed))) =
            db::fetch_client_record(connection, referral_id).await?
        else {
            return Ok(None);
        };
        let plain = self
            .master_key
            .unwrap_data_key(&wrapped)
            .and_then(|key| key.open(&sealed, referral_id.as_bytes()))
            .map_err(|error| ApiError::Internal(error.into()))?;
        let details =
            serde_json::from_slice(&plain).map_err(|error| ApiError::Internal(error.into()))?;
        db::record_personal_data_access(
            connection,
            referral_id,
            &caller.subject,
            caller.role.as_str(),
            purpose,
        )
        .await?;
        Ok(Some(details))
    }
}

/// Erases the personal data of the client who made `referral_id`, in every
/// referral of theirs, and tells the other services. Erasing again changes
/// nothing and sends nothing.
pub async fn erase_client(
    connection: &mut PgConnection,
    referral_id: Uuid,
    caller: &Caller,
    reason: &str,
) -> Result<Vec<Uuid>, ApiError> {
    let referrals = db::lock_referrals_of_client(connection, referral_id).await?;
    if referrals.is_empty() {
        return Err(ApiError::NotFound("referral".into()));
    }
    let to_erase: Vec<&ReferralRow> = referrals.iter().filter(|r| r.erased_at.is_none()).collect();
    let ids: Vec<Uuid> = to_erase.iter().map(|r| r.referral_id).collect();
    db::erase_client_records(connection, &ids).await?;
    let now = chrono::Utc::now();
    for referral in &to_erase {
        db::record_erasure(connection, referral.referral_id, &caller.subject, reason).await?;
        outbox::enqueue(
            connection,
            crate::NAME,
            &ClientErased {
                referral_id: referral.referral_id.to_string(),
                agency_id: referral.agency_id.clone(),
                erased_at: Some(timestamp(now)),
            },
        )
        .await?;
    }
    tracing::info!(erased = ids.len(), "client personal data erased");
    Ok(referrals.iter().map(|r| r.referral_id).collect())
}

/// Everything referral intake holds about the client who made
/// `referral_id`, as one JSON document. Every record opened is audited.
pub async fn export_client(
    connection: &mut PgConnection,
    vault: &ClientVault,
    referral_id: Uuid,
    caller: &Caller,
    reason: &str,
) -> Result<serde_json::Value, ApiError> {
    let referrals = db::lock_referrals_of_client(connection, referral_id).await?;
    if referrals.is_empty() {
        return Err(ApiError::NotFound("referral".into()));
    }
    let purpose = format!("subject access request: {reason}");
    let mut documents = Vec::new();
    for referral in &referrals {
        let details = vault
            .open(connection, referral.referral_id, caller, &purpose)
            .await?;
        documents.push(json!({
            "referral_id": referral.referral_id,
            "agency_id": referral.agency_id,
            "submitted_at": referral.submitted_at,
            "area": referral.area,
            "status": cpm_proto::v1::ReferralStatus::try_from(referral.status).unwrap_or_default().as_str_name(),
            "status_changed_at": referral.status_changed_at,
            "vulnerabilities": referral.vulnerabilities,
            "victim_of": referral.victim_of,
            "perpetrator_of": referral.perpetrator_of,
            "emergency_calls_last_12_months": referral.emergency_calls_last_12_months,
            "erased_at": referral.erased_at,
            "personal_details": details,
        }));
    }
    let ids: Vec<Uuid> = referrals.iter().map(|r| r.referral_id).collect();
    let access_log = db::access_log(connection, &ids).await?;
    Ok(json!({
        "exported_at": chrono::Utc::now(),
        "exported_by": caller.subject,
        "held_by": "referral-intake",
        "referrals": documents,
        "access_log": access_log,
    }))
}
