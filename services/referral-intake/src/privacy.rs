//! The client's personal data: sealed at rest with a per-referral data key,
//! opened only with an audit entry, erased on request (the data key is
//! destroyed and every service is told), and exported for a subject access
//! request. Erasure and export are use cases, as in [`crate::commands`].

use cpm_proto::v1::ClientErased;
use cpm_runtime::auth::Caller;
use cpm_runtime::bus::{ServiceHandle, outbox};
use cpm_runtime::client_keys::{self, ClientKeys};
use cpm_runtime::crypto::KeyRing;
use cpm_runtime::grpc::values::timestamp;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::commands::IntakeError;
use crate::db::{self, ReferralRow};
use crate::domain::{PrivacyRequest, SealedDetails};

/// Seals and opens client records with the master keys.
#[derive(Clone)]
pub struct ClientVault {
    keys: KeyRing,
    /// The client keys of this schema, for free text beyond the record
    /// (a withdrawal's reason).
    texts: ClientKeys,
}

impl ClientVault {
    pub fn new(keys: KeyRing) -> Self {
        Self {
            texts: ClientKeys::new(keys.clone()),
            keys,
        }
    }

    /// The client keys free text beyond the record is sealed under.
    pub fn texts(&self) -> &ClientKeys {
        &self.texts
    }

    /// Keyed hashes of an agency's idempotency key under every master key,
    /// current first: an agency's case reference is never stored as such.
    pub fn idempotency_hashes(&self, agency_id: &str, key: &str) -> Vec<Vec<u8>> {
        self.keys
            .fingerprints(&format!("idempotency key\u{0}{agency_id}\u{0}{key}"))
    }

    /// The keyed hash that links re-referrals of one client, under the current key.
    pub fn fingerprint(&self, identity_key: &str) -> Vec<u8> {
        self.keys.fingerprint(identity_key)
    }

    /// The fingerprints under every key, so records not yet re-keyed still match.
    pub fn fingerprints(&self, identity_key: &str) -> Vec<Vec<u8>> {
        self.keys.fingerprints(identity_key)
    }

    fn decrypt(
        &self,
        referral_id: Uuid,
        wrapped: &[u8],
        sealed: &[u8],
    ) -> Result<SealedDetails, IntakeError> {
        let (key, _) = self
            .keys
            .unwrap_data_key(wrapped)
            .map_err(|error| IntakeError::Internal(error.into()))?;
        let plain = key
            .open(sealed, referral_id.as_bytes())
            .map_err(|error| IntakeError::Internal(error.into()))?;
        serde_json::from_slice(&plain).map_err(|error| IntakeError::Internal(error.into()))
    }

    /// A fresh wrapped data key and the details sealed with it; the
    /// referral ID is bound in, so a record cannot be moved to another row.
    pub fn seal(&self, referral_id: Uuid, details: &SealedDetails) -> (Vec<u8>, Vec<u8>) {
        let (data_key, wrapped) = self.keys.new_data_key();
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
    ) -> Result<Option<SealedDetails>, IntakeError> {
        let Some((Some(wrapped), Some(sealed))) =
            db::fetch_client_record(connection, referral_id).await?
        else {
            return Ok(None);
        };
        let details = self.decrypt(referral_id, &wrapped, &sealed)?;
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

/// Erases the personal data of the client who made the request's referral,
/// in every referral of theirs, and tells the other services; returns
/// every referral of theirs. Erasing again changes nothing and sends nothing.
pub async fn erase_client(
    handle: &ServiceHandle,
    caller: &Caller,
    request: &PrivacyRequest,
) -> Result<Vec<Uuid>, IntakeError> {
    let mut transaction = handle.begin().await?;
    let referrals = db::lock_referrals_of_client(&mut transaction, request.referral_id).await?;
    if referrals.is_empty() {
        return Err(IntakeError::ReferralNotFound);
    }
    let to_erase: Vec<&ReferralRow> = referrals.iter().filter(|r| r.erased_at.is_none()).collect();
    let ids: Vec<Uuid> = to_erase.iter().map(|r| r.referral_id).collect();
    db::erase_client_records(&mut transaction, &ids).await?;
    for referral_id in &ids {
        client_keys::shred(&mut transaction, *referral_id).await?;
    }
    let now = chrono::Utc::now();
    for referral in &to_erase {
        db::record_erasure(
            &mut transaction,
            referral.referral_id,
            &caller.subject,
            &request.reason,
        )
        .await?;
        outbox::enqueue(
            &mut transaction,
            crate::NAME,
            &ClientErased {
                referral_id: referral.referral_id.to_string(),
                agency_id: referral.agency_id.clone(),
                erased_at: Some(timestamp(now)),
            },
        )
        .await?;
    }
    transaction.commit().await?;
    tracing::info!(erased = ids.len(), "client personal data erased");
    Ok(referrals.iter().map(|r| r.referral_id).collect())
}

/// Everything referral intake holds about the client who made the
/// request's referral, as one JSON document. Every record opened is audited.
pub async fn export_client(
    handle: &ServiceHandle,
    vault: &ClientVault,
    caller: &Caller,
    request: &PrivacyRequest,
) -> Result<serde_json::Value, IntakeError> {
    let mut transaction = handle.begin().await?;
    let referrals = db::lock_referrals_of_client(&mut transaction, request.referral_id).await?;
    if referrals.is_empty() {
        return Err(IntakeError::ReferralNotFound);
    }
    let purpose = format!("subject access request: {}", request.reason);
    let mut documents = Vec::new();
    for referral in &referrals {
        let details = vault
            .open(&mut transaction, referral.referral_id, caller, &purpose)
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
    let access_log = db::access_log(&mut transaction, &ids).await?;
    let document = json!({
        "exported_at": chrono::Utc::now(),
        "exported_by": caller.subject,
        "held_by": "referral-intake",
        "referrals": documents,
        "access_log": access_log,
    });
    transaction.commit().await?;
    Ok(document)
}

/// What a re-keying pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RewrapSummary {
    pub rewrapped: u64,
    pub already_current: u64,
}

/// Re-wraps every client data key still under a previous master key with
/// the current one, and recomputes its fingerprint, in batches that each
/// commit on their own (a stopped pass resumes where it left off).
/// `on_progress(done, total)` reports after every batch.
pub async fn rewrap_all(
    pool: &sqlx::PgPool,
    keys: &KeyRing,
    mut on_progress: impl FnMut(u64, u64),
) -> anyhow::Result<RewrapSummary> {
    let vault = ClientVault::new(keys.clone());
    let total = {
        let mut connection = pool.acquire().await?;
        db::count_wrapped_records(&mut connection).await? as u64
    };
    let mut summary = RewrapSummary::default();
    let mut after = Uuid::nil();
    loop {
        let mut transaction = pool.begin().await?;
        let batch = db::lock_wrapped_records(&mut transaction, after, 100).await?;
        let Some(last) = batch.last() else {
            transaction.commit().await?;
            break;
        };
        after = last.referral_id;
        for record in &batch {
            let (_, current) = keys
                .unwrap_data_key(&record.wrapped_data_key)
                .map_err(|_| {
                    anyhow::anyhow!(
                        "referral {} opens with no configured key",
                        record.referral_id
                    )
                })?;
            if current {
                summary.already_current += 1;
                continue;
            }
            let details = vault
                .decrypt(
                    record.referral_id,
                    &record.wrapped_data_key,
                    &record.sealed_details,
                )
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            let rewrapped = keys.rewrap(&record.wrapped_data_key)?;
            let fingerprint = keys.fingerprint(&crate::domain::identity_key(&details));
            db::store_rewrapped(
                &mut transaction,
                record.referral_id,
                &rewrapped,
                &fingerprint,
            )
            .await?;
            summary.rewrapped += 1;
        }
        transaction.commit().await?;
        on_progress(summary.rewrapped + summary.already_current, total);
    }
    tracing::info!(rewrapped = summary.rewrapped, "client data keys re-wrapped");
    Ok(summary)
}
