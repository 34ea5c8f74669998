//! Action-named queries for webhooks, their deliveries and the delivery
//! log. Agency-facing ones filter by agency here; the worker's ones claim
//! and record in short transactions, never around an HTTP call.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::signing::SealedSecrets;

/// `cpm.v1.DeliveryState` values as stored.
pub mod state {
    pub const PENDING: i32 = 1;
    pub const DELIVERED: i32 = 2;
    pub const FAILED: i32 = 3;
    pub const DEAD: i32 = 4;
    pub const CANCELLED: i32 = 5;
}

/// A webhook as its agency sees it (never its secrets).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct WebhookView {
    pub webhook_id: Uuid,
    pub url: String,
    pub created_at: DateTime<Utc>,
    pub active: bool,
    pub secret_rotated_at: Option<DateTime<Utc>>,
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub circuit_open_until: Option<DateTime<Utc>>,
}

/// A webhook's sealed secrets, for rotation.
#[derive(Debug, sqlx::FromRow)]
pub struct StoredSecrets {
    pub webhook_id: Uuid,
    pub deleted: bool,
    pub secret_key: Option<Vec<u8>>,
    pub secret_sealed: Option<Vec<u8>>,
}

/// A webhook claimed by a worker, with what it needs to sign and to keep
/// the breaker.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ClaimedWebhook {
    pub webhook_id: Uuid,
    pub url: String,
    pub secret_key: Option<Vec<u8>>,
    pub secret_sealed: Option<Vec<u8>>,
    pub previous_secret_sealed: Option<Vec<u8>>,
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    pub circuit_open_until: Option<DateTime<Utc>>,
    pub agency_id: String,
    /// The agency's open webhooks when claimed: a worker holding that many
    /// of them needs no claim when the agency's next notice comes.
    pub agency_webhooks: i64,
}

/// A due delivery with what is needed to post it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DueDelivery {
    pub delivery_id: Uuid,
    pub attempts: i32,
    pub queued_at: DateTime<Utc>,
    pub notification_id: Uuid,
    pub agency_id: String,
    pub sequence: i64,
    pub referral_id: Uuid,
    pub kind: i32,
    pub status: i32,
    pub created_at: DateTime<Utc>,
    pub feedback: Option<Vec<u8>>,
    pub stage: Option<i32>,
    pub reason: Option<i32>,
    pub estimated_start: Option<chrono::NaiveDate>,
    pub estimated_start_latest: Option<chrono::NaiveDate>,
}

impl DueDelivery {
    /// The notification this delivery posts.
    pub fn notification(&self) -> crate::db::NotificationRow {
        crate::db::NotificationRow {
            notification_id: self.notification_id,
            agency_id: self.agency_id.clone(),
            sequence: self.sequence,
            referral_id: self.referral_id,
            kind: self.kind,
            status: self.status,
            created_at: self.created_at,
            feedback: self.feedback.clone(),
            stage: self.stage,
            reason: self.reason,
            estimated_start: self.estimated_start,
            estimated_start_latest: self.estimated_start_latest,
        }
    }
}

/// One delivery as the log lists it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub delivery_id: Uuid,
    pub webhook_id: Uuid,
    pub notification_id: Uuid,
    pub kind: i32,
    pub state: i32,
    pub attempts: i32,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub queued_at: DateTime<Utc>,
}

/// One attempt as logged.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AttemptRow {
    pub delivery_id: Uuid,
    pub attempted_at: DateTime<Utc>,
    pub channel: String,
    pub status_code: i32,
    pub latency_ms: i32,
    pub error_kind: i32,
}

/// The log's filters (all optional) and page.
#[derive(Clone, Debug, Default)]
pub struct DeliveryQuery {
    pub webhook_id: Option<Uuid>,
    pub states: Vec<i32>,
    pub kinds: Vec<i32>,
    pub since: Option<DateTime<Utc>>,
    /// Where the last delivery shown sorts: (notification ID, delivery ID).
    pub after: Option<(Uuid, Uuid)>,
    pub limit: i64,
}

/// Registers a webhook with its sealed secret; `None` when the agency
/// already has one at this URL.
pub async fn insert_webhook(
    connection: &mut PgConnection,
    webhook_id: Uuid,
    agency_id: &str,
    url: &str,
    created_by: &str,
    secrets: &SealedSecrets,
) -> Result<Option<WebhookView>, sqlx::Error> {
    sqlx::query_as!(
        WebhookView,
        "INSERT INTO notifications.webhook (webhook_id, agency_id, url, created_by, secret_key, \
         secret_sealed, secret_rotated_at) VALUES ($1, $2, $3, $4, $5, $6, now()) \
         ON CONFLICT (agency_id, url) DO NOTHING \
         RETURNING webhook_id, url, created_at, active, secret_rotated_at, \
                   previous_secret_until, circuit_open_until",
        webhook_id,
        agency_id,
        url,
        created_by,
        &secrets.wrapped_key,
        &secrets.current,
    )
    .fetch_optional(connection)
    .await
}

/// The agency's webhook at `url`, locked for a re-registration.
pub async fn lock_webhook_by_url(
    connection: &mut PgConnection,
    agency_id: &str,
    url: &str,
) -> Result<Option<StoredSecrets>, sqlx::Error> {
    sqlx::query_as!(
        StoredSecrets,
        "SELECT webhook_id, deleted_at IS NOT NULL AS \"deleted!\", secret_key, secret_sealed \
         FROM notifications.webhook WHERE agency_id = $1 AND url = $2 FOR UPDATE",
        agency_id,
        url
    )
    .fetch_optional(connection)
    .await
}

/// The agency's (undeleted) webhook, locked for a rotation.
pub async fn lock_webhook(
    connection: &mut PgConnection,
    agency_id: &str,
    webhook_id: Uuid,
) -> Result<Option<StoredSecrets>, sqlx::Error> {
    sqlx::query_as!(
        StoredSecrets,
        "SELECT webhook_id, deleted_at IS NOT NULL AS \"deleted!\", secret_key, secret_sealed \
         FROM notifications.webhook \
         WHERE agency_id = $1 AND webhook_id = $2 AND deleted_at IS NULL FOR UPDATE",
        agency_id,
        webhook_id
    )
    .fetch_optional(connection)
    .await
}

/// Stores new secrets (the previous one valid until `previous_until`) and
/// enables the webhook again.
pub async fn store_secrets(
    connection: &mut PgConnection,
    webhook_id: Uuid,
    secrets: &SealedSecrets,
    previous_until: Option<DateTime<Utc>>,
) -> Result<WebhookView, sqlx::Error> {
    sqlx::query_as!(
        WebhookView,
        "UPDATE notifications.webhook SET secret_key = $2, secret_sealed = $3, \
         previous_secret_sealed = $4, previous_secret_until = $5, secret_rotated_at = now(), \
         active = true, deleted_at = NULL \
         WHERE webhook_id = $1 \
         RETURNING webhook_id, url, created_at, active, secret_rotated_at, \
                   previous_secret_until, circuit_open_until",
        webhook_id,
        &secrets.wrapped_key,
        &secrets.current,
        secrets.previous.as_deref(),
        previous_until,
    )
    .fetch_one(connection)
    .await
}

/// The agency's webhooks, oldest first, at most `limit`.
pub async fn list_webhooks(
    connection: &mut PgConnection,
    agency_id: &str,
    limit: i64,
) -> Result<Vec<WebhookView>, sqlx::Error> {
    sqlx::query_as!(
        WebhookView,
        "SELECT webhook_id, url, created_at, active, secret_rotated_at, previous_secret_until, \
                circuit_open_until \
         FROM notifications.webhook WHERE agency_id = $1 AND deleted_at IS NULL \
         ORDER BY created_at, webhook_id LIMIT $2",
        agency_id,
        limit
    )
    .fetch_all(connection)
    .await
}

/// Serialises the agency's registrations until the transaction ends, so
/// two at once cannot both pass the cap.
pub async fn lock_agency_webhooks(
    connection: &mut PgConnection,
    agency_id: &str,
) -> Result<(), sqlx::Error> {
    cpm_runtime::db::lock_key(connection, &format!("notifications.webhook/{agency_id}")).await
}

/// How many webhooks the agency has registered and not deleted, and
/// whether `url` is one of them (registering it again adds none).
pub async fn count_live_webhooks(
    connection: &mut PgConnection,
    agency_id: &str,
    url: &str,
) -> Result<(i64, bool), sqlx::Error> {
    let row = sqlx::query!(
        "SELECT count(*) AS \"live!\", coalesce(bool_or(url = $2), false) AS \"has_url!\" \
         FROM notifications.webhook WHERE agency_id = $1 AND deleted_at IS NULL",
        agency_id,
        url
    )
    .fetch_one(connection)
    .await?;
    Ok((row.live, row.has_url))
}

pub async fn disable_webhook(
    connection: &mut PgConnection,
    agency_id: &str,
    webhook_id: Uuid,
) -> Result<Option<WebhookView>, sqlx::Error> {
    sqlx::query_as!(
        WebhookView,
        "UPDATE notifications.webhook SET active = false \
         WHERE agency_id = $1 AND webhook_id = $2 AND deleted_at IS NULL \
         RETURNING webhook_id, url, created_at, active, secret_rotated_at, \
                   previous_secret_until, circuit_open_until",
        agency_id,
        webhook_id
    )
    .fetch_optional(connection)
    .await
}

/// Soft-deletes a webhook; false when the agency has no such webhook.
pub async fn delete_webhook(
    connection: &mut PgConnection,
    agency_id: &str,
    webhook_id: Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE notifications.webhook SET active = false, deleted_at = now() \
         WHERE agency_id = $1 AND webhook_id = $2 AND deleted_at IS NULL",
        agency_id,
        webhook_id
    )
    .execute(connection)
    .await?
    .rows_affected()
        == 1)
}

/// Cancels a webhook's pending deliveries; returns how many.
pub async fn cancel_pending_deliveries(
    connection: &mut PgConnection,
    webhook_id: Uuid,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE notifications.delivery SET state = $2 WHERE webhook_id = $1 AND state = $3",
        webhook_id,
        state::CANCELLED,
        state::PENDING
    )
    .execute(connection)
    .await?
    .rows_affected())
}

/// A delivery of the agency's, with whether its webhook takes deliveries.
pub async fn delivery_of_agency(
    connection: &mut PgConnection,
    agency_id: &str,
    delivery_id: Uuid,
) -> Result<Option<(i32, bool)>, sqlx::Error> {
    Ok(sqlx::query!(
        "SELECT d.state, (w.active AND w.deleted_at IS NULL) AS \"open!\" \
         FROM notifications.delivery d JOIN notifications.webhook w USING (webhook_id) \
         WHERE w.agency_id = $1 AND d.delivery_id = $2",
        agency_id,
        delivery_id
    )
    .fetch_optional(connection)
    .await?
    .map(|row| (row.state, row.open)))
}

/// Whether the agency has this webhook, and whether it takes deliveries.
pub async fn webhook_is_open(
    connection: &mut PgConnection,
    agency_id: &str,
    webhook_id: Uuid,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT active AS \"open!\" FROM notifications.webhook \
         WHERE agency_id = $1 AND webhook_id = $2 AND deleted_at IS NULL",
        agency_id,
        webhook_id
    )
    .fetch_optional(connection)
    .await
}

/// Queues one delivery again, its retry window starting afresh.
pub async fn requeue_delivery(
    connection: &mut PgConnection,
    delivery_id: Uuid,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE notifications.delivery SET state = $2, next_attempt_at = now(), \
         queued_at = now() WHERE delivery_id = $1 AND state IN ($3, $4, $5)",
        delivery_id,
        state::PENDING,
        state::DELIVERED,
        state::FAILED,
        state::DEAD
    )
    .execute(connection)
    .await?
    .rows_affected())
}

/// Queues again every dead or failed delivery of a webhook queued at or
/// after `since`.
pub async fn requeue_deliveries_since(
    connection: &mut PgConnection,
    webhook_id: Uuid,
    since: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE notifications.delivery SET state = $2, next_attempt_at = now(), \
         queued_at = now() WHERE webhook_id = $1 AND state IN ($3, $4) AND queued_at >= $5",
        webhook_id,
        state::PENDING,
        state::FAILED,
        state::DEAD,
        since
    )
    .execute(connection)
    .await?
    .rows_affected())
}

/// One page of an agency's delivery log, newest first.
pub async fn list_deliveries(
    connection: &mut PgConnection,
    agency_id: &str,
    query: &DeliveryQuery,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as!(
        DeliveryRow,
        "SELECT d.delivery_id, d.webhook_id, d.notification_id, n.kind, d.state, d.attempts, \
                d.last_attempt_at, d.last_error, d.next_attempt_at, d.queued_at \
         FROM notifications.delivery d JOIN notifications.webhook w USING (webhook_id) \
           JOIN notifications.notification n USING (notification_id) \
         WHERE w.agency_id = $1 \
         AND ($2::uuid IS NULL OR d.webhook_id = $2) \
         AND (cardinality($3::int[]) = 0 OR d.state = ANY($3)) \
         AND (cardinality($4::int[]) = 0 OR n.kind = ANY($4)) \
         AND ($5::timestamptz IS NULL OR d.queued_at >= $5) \
         AND ($6::uuid IS NULL OR (d.notification_id, d.delivery_id) < ($6, $7)) \
         ORDER BY d.notification_id DESC, d.delivery_id DESC LIMIT $8",
        agency_id,
        query.webhook_id,
        &query.states,
        &query.kinds,
        query.since,
        query.after.map(|(notification, _)| notification),
        query.after.map(|(_, delivery)| delivery),
        query.limit
    )
    .fetch_all(connection)
    .await
}

/// The attempts of some deliveries, oldest first.
/// The latest `per_delivery` attempts of each delivery, oldest first (a
/// delivery retried for a day may have hundreds; its row counts them all).
pub async fn attempts_of(
    connection: &mut PgConnection,
    delivery_ids: &[Uuid],
    per_delivery: i64,
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as!(
        AttemptRow,
        "SELECT delivery_id AS \"delivery_id!\", attempted_at AS \"attempted_at!\", \
                channel AS \"channel!\", status_code AS \"status_code!\", \
                latency_ms AS \"latency_ms!\", error_kind AS \"error_kind!\" \
         FROM (SELECT delivery_id, attempted_at, attempt_id, channel, status_code, latency_ms, \
                      error_kind, row_number() OVER (PARTITION BY delivery_id \
                          ORDER BY attempted_at DESC, attempt_id DESC) AS latest \
               FROM notifications.delivery_attempt WHERE delivery_id = ANY($1)) attempt \
         WHERE latest <= $2 \
         ORDER BY attempted_at, attempt_id",
        delivery_ids,
        per_delivery
    )
    .fetch_all(connection)
    .await
}

/// Which of a worker's lanes an endpoint is served in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Endpoints whose last attempt succeeded promptly.
    Prompt,
    /// Endpoints whose last attempt failed, or took at least the slow mark:
    /// likely to hold a slot until the timeout.
    Suspect,
}

/// Claims up to `limit` webhooks of `lane` with due deliveries whose circuit
/// admits them and which no worker holds, leasing each for `lease_secs`.
/// An endpoint is suspect when its last attempt failed or took at least
/// `slow_ms`. The row lock is `FOR NO KEY UPDATE`, what the lease's update
/// takes anyway: a plain `FOR UPDATE` would also block the foreign-key
/// check of every delivery written for that webhook meanwhile.
pub async fn claim_webhooks(
    connection: &mut PgConnection,
    lane: Lane,
    limit: i64,
    lease_secs: f64,
    slow_ms: i32,
) -> Result<Vec<ClaimedWebhook>, sqlx::Error> {
    sqlx::query_as!(
        ClaimedWebhook,
        "WITH claimable AS ( \
           SELECT w.webhook_id FROM notifications.webhook w \
           WHERE w.active AND w.deleted_at IS NULL \
             AND (w.leased_until IS NULL OR w.leased_until <= now()) \
             AND (w.circuit_open_until IS NULL OR w.circuit_open_until <= now()) \
             AND (w.consecutive_failures > 0 OR w.last_latency_ms >= $5) = $4 \
             AND EXISTS (SELECT 1 FROM notifications.delivery d \
                         WHERE d.webhook_id = w.webhook_id AND d.state = $3 \
                           AND d.next_attempt_at <= now()) \
           ORDER BY w.leased_until NULLS FIRST LIMIT $1 \
           FOR NO KEY UPDATE OF w SKIP LOCKED) \
         UPDATE notifications.webhook w \
         SET leased_until = now() + make_interval(secs => $2::float8) \
         FROM claimable WHERE w.webhook_id = claimable.webhook_id \
         RETURNING w.webhook_id, w.url, w.secret_key, w.secret_sealed, \
                   CASE WHEN w.previous_secret_until > now() \
                        THEN w.previous_secret_sealed END AS previous_secret_sealed, \
                   w.previous_secret_until, w.consecutive_failures, w.circuit_open_until, \
                   w.agency_id, \
                   (SELECT count(*) FROM notifications.webhook o \
                    WHERE o.agency_id = w.agency_id AND o.active AND o.deleted_at IS NULL) \
                     AS \"agency_webhooks!\"",
        limit,
        lease_secs,
        state::PENDING,
        lane == Lane::Suspect,
        slow_ms
    )
    .fetch_all(connection)
    .await
}

/// A claimed webhook's due deliveries, oldest notification first.
pub async fn due_deliveries(
    connection: &mut PgConnection,
    webhook_id: Uuid,
    limit: i64,
) -> Result<Vec<DueDelivery>, sqlx::Error> {
    sqlx::query_as!(
        DueDelivery,
        "SELECT d.delivery_id, d.attempts, d.queued_at, n.notification_id, n.agency_id, \
                n.sequence, n.referral_id, n.kind, n.status, n.created_at, n.feedback, \
                n.stage, n.reason, n.estimated_start, n.estimated_start_latest \
         FROM notifications.delivery d JOIN notifications.notification n USING (notification_id) \
         WHERE d.webhook_id = $1 AND d.state = $2 AND d.next_attempt_at <= now() \
         ORDER BY n.sequence, d.delivery_id LIMIT $3",
        webhook_id,
        state::PENDING,
        limit
    )
    .fetch_all(connection)
    .await
}

/// Ends a worker's claim on a webhook. The claim's end stays as the time
/// it was last served, so the endpoint served longest ago is claimed first.
pub async fn release_webhook(
    connection: &mut PgConnection,
    webhook_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE notifications.webhook SET leased_until = now() WHERE webhook_id = $1",
        webhook_id
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// One post to record: when it was tried, what came back, and the state
/// it leaves its delivery in.
pub struct Attempt {
    pub delivery_id: Uuid,
    pub attempted_at: DateTime<Utc>,
    pub status_code: i32,
    pub latency_ms: i32,
    pub error_kind: i32,
    pub new_state: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// Logs the attempts and records each one's outcome on its delivery if
/// that is still pending (a deletion meanwhile wins): its new state, when
/// to try next, and the error shown. One statement, however many attempts,
/// so a busy endpoint's posts cost one round trip a record, not two a post.
/// Returns the deliveries whose outcome was recorded.
pub async fn record_attempts(
    connection: &mut PgConnection,
    attempts: &[Attempt],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let column = |field: fn(&Attempt) -> i32| attempts.iter().map(field).collect::<Vec<_>>();
    let attempt_ids: Vec<Uuid> = attempts.iter().map(|_| Uuid::now_v7()).collect();
    let delivery_ids: Vec<Uuid> = attempts.iter().map(|a| a.delivery_id).collect();
    let attempted_at: Vec<DateTime<Utc>> = attempts.iter().map(|a| a.attempted_at).collect();
    let next_attempt_at: Vec<DateTime<Utc>> = attempts.iter().map(|a| a.next_attempt_at).collect();
    let last_errors: Vec<Option<String>> = attempts.iter().map(|a| a.last_error.clone()).collect();
    sqlx::query_scalar!(
        "WITH attempt AS ( \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[], $4::int4[], \
                                  $5::int4[], $6::int4[], $7::int4[], $8::timestamptz[], $9::text[]) \
                 AS a(attempt_id, delivery_id, attempted_at, status_code, latency_ms, error_kind, \
                      new_state, next_attempt_at, last_error) \
         ), logged AS ( \
             INSERT INTO notifications.delivery_attempt (attempt_id, delivery_id, attempted_at, \
                 channel, status_code, latency_ms, error_kind) \
             SELECT attempt_id, delivery_id, attempted_at, 'WEBHOOK', status_code, latency_ms, \
                 error_kind FROM attempt \
         ) \
         UPDATE notifications.delivery d SET state = a.new_state, attempts = d.attempts + 1, \
             last_attempt_at = a.attempted_at, \
             first_attempt_at = coalesce(d.first_attempt_at, a.attempted_at), \
             next_attempt_at = a.next_attempt_at, last_error = a.last_error \
         FROM attempt a WHERE d.delivery_id = a.delivery_id AND d.state = $10 \
         RETURNING d.delivery_id",
        &attempt_ids,
        &delivery_ids,
        &attempted_at,
        &column(|a| a.status_code),
        &column(|a| a.latency_ms),
        &column(|a| a.error_kind),
        &column(|a| a.new_state),
        &next_attempt_at,
        &last_errors as &[Option<String>],
        state::PENDING
    )
    .fetch_all(connection)
    .await
}

/// Stores what the endpoint's last attempt showed (its circuit breaker and
/// how long it took) and renews the claim for the next post: a claim
/// outlives its holder by at most one lease.
pub async fn store_endpoint_health(
    connection: &mut PgConnection,
    webhook_id: Uuid,
    consecutive_failures: i32,
    open_until: Option<DateTime<Utc>>,
    last_latency_ms: i32,
    lease_secs: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE notifications.webhook SET consecutive_failures = $2, circuit_open_until = $3, \
         last_latency_ms = $4, leased_until = now() + make_interval(secs => $5::float8) \
         WHERE webhook_id = $1",
        webhook_id,
        consecutive_failures,
        open_until,
        last_latency_ms,
        lease_secs
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Dead-letters pending deliveries whose window (plus `grace_secs`) has
/// passed without a final attempt: those held back by an open circuit or a
/// disabled webhook. Returns how many.
pub async fn dead_letter_expired(
    connection: &mut PgConnection,
    window_secs: f64,
    grace_secs: f64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE notifications.delivery SET state = $1 \
         WHERE state = $2 AND queued_at + make_interval(secs => $3::float8 + $4::float8) < now()",
        state::DEAD,
        state::PENDING,
        window_secs,
        grace_secs
    )
    .execute(connection)
    .await?
    .rows_affected())
}

/// Every webhook's wrapped secret key, locked for re-wrapping.
pub async fn lock_secret_keys(
    connection: &mut PgConnection,
) -> Result<Vec<(Uuid, Vec<u8>)>, sqlx::Error> {
    Ok(sqlx::query!(
        "SELECT webhook_id, secret_key AS \"secret_key!\" FROM notifications.webhook \
         WHERE secret_key IS NOT NULL ORDER BY webhook_id FOR UPDATE"
    )
    .fetch_all(connection)
    .await?
    .into_iter()
    .map(|row| (row.webhook_id, row.secret_key))
    .collect())
}

pub async fn store_secret_key(
    connection: &mut PgConnection,
    webhook_id: Uuid,
    secret_key: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE notifications.webhook SET secret_key = $2 WHERE webhook_id = $1",
        webhook_id,
        secret_key
    )
    .execute(connection)
    .await?;
    Ok(())
}
