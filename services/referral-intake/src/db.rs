//! Action-named queries on the `referral_intake` schema. Every query that
//! serves an agency filters by its agency ID here, in SQL, so no handler can
//! forget to.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A referral row without personal data.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ReferralRow {
    pub referral_id: Uuid,
    pub agency_id: String,
    pub request_hash: Vec<u8>,
    pub submitted_at: DateTime<Utc>,
    pub area: String,
    pub client_gender: i32,
    pub vulnerabilities: Vec<i32>,
    pub earlier_referral_id: Option<Uuid>,
    pub status: i32,
    pub status_changed_at: DateTime<Utc>,
    pub not_taken_on_stage: Option<i32>,
    pub not_taken_on_reason: Option<i32>,
    pub estimated_start: Option<DateTime<Utc>>,
    pub discharged_at: Option<DateTime<Utc>>,
}

const REFERRAL_COLUMNS: &str = "referral_id, agency_id, request_hash, submitted_at, area, \
    client_gender, vulnerabilities, earlier_referral_id, status, status_changed_at, \
    not_taken_on_stage, not_taken_on_reason, estimated_start, discharged_at";

/// What a new referral row holds.
pub struct NewReferralRow<'a> {
    pub referral_id: Uuid,
    pub agency_id: &'a str,
    pub idempotency_key: &'a str,
    pub request_hash: &'a [u8],
    pub submitted_by: &'a str,
    pub area: &'a str,
    pub client_gender: i32,
    pub vulnerabilities: Vec<i32>,
    pub emergency_calls_last_12_months: i32,
    pub client_fingerprint: &'a [u8],
    pub earlier_referral_id: Option<Uuid>,
    pub status: i32,
    pub status_rank: i32,
}

/// Inserts a referral; false when the agency already used the idempotency key.
pub async fn insert_referral(
    connection: &mut PgConnection,
    row: &NewReferralRow<'_>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO referral (referral_id, agency_id, idempotency_key, request_hash, submitted_by, \
         area, client_gender, vulnerabilities, emergency_calls_last_12_months, client_consented, \
         client_fingerprint, earlier_referral_id, status, status_rank) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, true, $10, $11, $12, $13) \
         ON CONFLICT ON CONSTRAINT referral_idempotency_key DO NOTHING",
    )
    .bind(row.referral_id)
    .bind(row.agency_id)
    .bind(row.idempotency_key)
    .bind(row.request_hash)
    .bind(row.submitted_by)
    .bind(row.area)
    .bind(row.client_gender)
    .bind(&row.vulnerabilities)
    .bind(row.emergency_calls_last_12_months)
    .bind(row.client_fingerprint)
    .bind(row.earlier_referral_id)
    .bind(row.status)
    .bind(row.status_rank)
    .execute(connection)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub async fn find_by_idempotency_key(
    connection: &mut PgConnection,
    agency_id: &str,
    idempotency_key: &str,
) -> Result<Option<ReferralRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REFERRAL_COLUMNS} FROM referral WHERE agency_id = $1 AND idempotency_key = $2"
    )))
    .bind(agency_id)
    .bind(idempotency_key)
    .fetch_optional(connection)
    .await
}

/// The most recent earlier referral of the same client, from any agency.
pub async fn find_earlier_referral(
    connection: &mut PgConnection,
    client_fingerprint: &[u8],
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT referral_id FROM referral WHERE client_fingerprint = $1 \
         ORDER BY submitted_at DESC, referral_id DESC LIMIT 1",
    )
    .bind(client_fingerprint)
    .fetch_optional(connection)
    .await
}

pub async fn insert_client_record(
    connection: &mut PgConnection,
    referral_id: Uuid,
    wrapped_data_key: &[u8],
    sealed_details: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO client_record (referral_id, wrapped_data_key, sealed_details) VALUES ($1, $2, $3)",
    )
    .bind(referral_id)
    .bind(wrapped_data_key)
    .bind(sealed_details)
    .execute(connection)
    .await?;
    Ok(())
}

/// A referral; with `agency_id` set, only when that agency made it.
pub async fn fetch_referral(
    connection: &mut PgConnection,
    referral_id: Uuid,
    agency_id: Option<&str>,
) -> Result<Option<ReferralRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REFERRAL_COLUMNS} FROM referral \
         WHERE referral_id = $1 AND ($2::text IS NULL OR agency_id = $2)"
    )))
    .bind(referral_id)
    .bind(agency_id)
    .fetch_optional(connection)
    .await
}

/// The wrapped key and sealed details; `None` fields once erased.
pub async fn fetch_client_record(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Option<(Option<Vec<u8>>, Option<Vec<u8>>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT wrapped_data_key, sealed_details FROM client_record WHERE referral_id = $1",
    )
    .bind(referral_id)
    .fetch_optional(connection)
    .await
}

pub async fn record_personal_data_access(
    connection: &mut PgConnection,
    referral_id: Uuid,
    accessed_by: &str,
    role: &str,
    purpose: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO personal_data_access (referral_id, accessed_by, role, purpose) VALUES ($1, $2, $3, $4)",
    )
    .bind(referral_id)
    .bind(accessed_by)
    .bind(role)
    .bind(purpose)
    .execute(connection)
    .await?;
    Ok(())
}

/// One page of an agency's referrals, newest first, after a keyset cursor.
pub async fn list_referrals(
    connection: &mut PgConnection,
    agency_id: &str,
    status: Option<i32>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ReferralRow>, sqlx::Error> {
    let (after_time, after_id) = after.unzip();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REFERRAL_COLUMNS} FROM referral \
         WHERE agency_id = $1 AND ($2::integer IS NULL OR status = $2) \
           AND ($3::timestamptz IS NULL OR (submitted_at, referral_id) < ($3, $4)) \
         ORDER BY submitted_at DESC, referral_id DESC LIMIT $5"
    )))
    .bind(agency_id)
    .bind(status)
    .bind(after_time)
    .bind(after_id)
    .bind(limit)
    .fetch_all(connection)
    .await
}

/// A status change from a downstream event or a withdrawal.
#[derive(Debug, Default)]
pub struct StatusChange {
    pub status: i32,
    pub rank: i32,
    pub not_taken_on_stage: Option<i32>,
    pub not_taken_on_reason: Option<i32>,
    pub estimated_start: Option<DateTime<Utc>>,
    pub discharged_at: Option<DateTime<Utc>>,
}

/// Applies a change only when it moves the status forward. Returns whether it did.
pub async fn advance_status(
    connection: &mut PgConnection,
    referral_id: Uuid,
    change: &StatusChange,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE referral SET status = $2, status_rank = $3, status_changed_at = now(), \
         not_taken_on_stage = COALESCE($4, not_taken_on_stage), \
         not_taken_on_reason = COALESCE($5, not_taken_on_reason), \
         estimated_start = COALESCE($6, estimated_start), \
         discharged_at = COALESCE($7, discharged_at) \
         WHERE referral_id = $1 AND status_rank < $3",
    )
    .bind(referral_id)
    .bind(change.status)
    .bind(change.rank)
    .bind(change.not_taken_on_stage)
    .bind(change.not_taken_on_reason)
    .bind(change.estimated_start)
    .bind(change.discharged_at)
    .execute(connection)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Locks a referral of `agency_id` for a state change.
pub async fn lock_referral(
    connection: &mut PgConnection,
    referral_id: Uuid,
    agency_id: &str,
) -> Result<Option<ReferralRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REFERRAL_COLUMNS} FROM referral WHERE referral_id = $1 AND agency_id = $2 FOR UPDATE"
    )))
    .bind(referral_id)
    .bind(agency_id)
    .fetch_optional(connection)
    .await
}
