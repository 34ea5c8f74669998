//! Action-named queries on the `notifications` schema. Agency-facing reads
//! filter by agency here.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct NotificationRow {
    pub notification_id: Uuid,
    pub agency_id: String,
    pub sequence: i64,
    pub referral_id: Uuid,
    pub kind: i32,
    pub status: i32,
    pub created_at: DateTime<Utc>,
    /// For DISCHARGED: the encoded `cpm.v1.DischargeFeedback`.
    pub feedback: Option<Vec<u8>>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct WebhookRow {
    pub webhook_id: Uuid,
    pub url: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub delivery_id: Uuid,
    pub webhook_id: Uuid,
    pub notification_id: Uuid,
    pub state: i32,
    pub attempts: i32,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// A due delivery with what is needed to post it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DueDelivery {
    pub delivery_id: Uuid,
    pub attempts: i32,
    pub url: String,
    pub notification_id: Uuid,
    pub agency_id: String,
    pub sequence: i64,
    pub referral_id: Uuid,
    pub kind: i32,
    pub status: i32,
    pub created_at: DateTime<Utc>,
    pub feedback: Option<Vec<u8>>,
}

/// The agency's next sequence number; holds the agency's row lock until commit.
pub async fn next_sequence(
    connection: &mut PgConnection,
    agency_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO notifications.agency_sequence (agency_id, last_sequence) VALUES ($1, 1) \
         ON CONFLICT (agency_id) DO UPDATE SET last_sequence = agency_sequence.last_sequence + 1 \
         RETURNING last_sequence",
        agency_id
    )
    .fetch_one(connection)
    .await
}

pub async fn insert_notification(
    connection: &mut PgConnection,
    row: &NotificationRow,
    event_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO notifications.notification (notification_id, agency_id, sequence, \
         referral_id, kind, status, event_id, created_at, feedback) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        row.notification_id,
        &row.agency_id,
        row.sequence,
        row.referral_id,
        row.kind,
        row.status,
        event_id,
        row.created_at,
        row.feedback.as_deref(),
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// A pending delivery to each of the agency's active webhooks.
pub async fn insert_deliveries(
    connection: &mut PgConnection,
    agency_id: &str,
    notification_id: Uuid,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "INSERT INTO notifications.delivery (delivery_id, webhook_id, notification_id, state) \
         SELECT gen_random_uuid(), webhook_id, $2, 1 FROM notifications.webhook \
         WHERE agency_id = $1 AND active \
         ON CONFLICT (webhook_id, notification_id) DO NOTHING",
        agency_id,
        notification_id
    )
    .execute(connection)
    .await?
    .rows_affected())
}

/// Raises the NOTIFY that wakes streams and the webhook worker at commit.
pub async fn notify_committed(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_notify($1, '')", crate::NOTIFY_CHANNEL)
        .execute(connection)
        .await?;
    Ok(())
}

pub async fn notifications_after(
    connection: &mut PgConnection,
    agency_id: &str,
    after_sequence: i64,
    limit: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as!(
        NotificationRow,
        "SELECT notification_id, agency_id, sequence, referral_id, kind, status, created_at, \
                feedback \
         FROM notifications.notification WHERE agency_id = $1 AND sequence > $2 \
           AND streamed \
         ORDER BY sequence LIMIT $3",
        agency_id,
        after_sequence,
        limit
    )
    .fetch_all(connection)
    .await
}

/// Registers a webhook; registering the same URL again returns the first.
pub async fn upsert_webhook(
    connection: &mut PgConnection,
    agency_id: &str,
    url: &str,
    created_by: &str,
) -> Result<WebhookRow, sqlx::Error> {
    sqlx::query_as!(
        WebhookRow,
        "INSERT INTO notifications.webhook (webhook_id, agency_id, url, created_by) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (agency_id, url) DO UPDATE SET active = true \
         RETURNING webhook_id, url, created_at",
        Uuid::now_v7(),
        agency_id,
        url,
        created_by
    )
    .fetch_one(connection)
    .await
}

pub async fn list_deliveries(
    connection: &mut PgConnection,
    agency_id: &str,
    after: Option<(Uuid, Uuid)>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as!(
        DeliveryRow,
        "SELECT d.delivery_id, d.webhook_id, d.notification_id, d.state, d.attempts, \
                d.last_attempt_at, d.last_error \
         FROM notifications.delivery d JOIN notifications.webhook w USING (webhook_id) \
         WHERE w.agency_id = $1 \
         AND ($2::uuid IS NULL OR (d.notification_id, d.delivery_id) < ($2, $3)) \
         ORDER BY d.notification_id DESC, d.delivery_id DESC LIMIT $4",
        agency_id,
        after.map(|(notification, _)| notification),
        after.map(|(_, delivery)| delivery),
        limit
    )
    .fetch_all(connection)
    .await
}

/// Due deliveries, locked so another worker skips them.
pub async fn lock_due_deliveries(
    connection: &mut PgConnection,
    limit: i64,
) -> Result<Vec<DueDelivery>, sqlx::Error> {
    sqlx::query_as!(
        DueDelivery,
        "SELECT d.delivery_id, d.attempts, w.url, n.notification_id, n.agency_id, n.sequence, \
                n.referral_id, n.kind, n.status, n.created_at, n.feedback \
         FROM notifications.delivery d JOIN notifications.webhook w USING (webhook_id) \
           JOIN notifications.notification n USING (notification_id) \
         WHERE d.state = 1 AND d.next_attempt_at <= now() \
         ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE OF d SKIP LOCKED",
        limit
    )
    .fetch_all(connection)
    .await
}

pub async fn mark_delivered(
    connection: &mut PgConnection,
    delivery_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE notifications.delivery \
         SET state = 2, attempts = attempts + 1, last_attempt_at = now(), last_error = NULL \
         WHERE delivery_id = $1",
        delivery_id
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Records that a delivery of `notification_id` was confirmed; true for
/// the first confirmation of that notification (on any of its webhooks).
pub async fn mark_first_delivered(
    connection: &mut PgConnection,
    notification_id: Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE notifications.notification SET first_delivered_at = now() \
         WHERE notification_id = $1 AND first_delivered_at IS NULL",
        notification_id
    )
    .execute(connection)
    .await?
    .rows_affected()
        == 1)
}

/// Records a failed attempt: retried with back-off, failed for good after `max_attempts`.
pub async fn mark_attempt_failed(
    connection: &mut PgConnection,
    delivery_id: Uuid,
    error: &str,
    max_attempts: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE notifications.delivery \
         SET attempts = attempts + 1, last_attempt_at = now(), last_error = $2, \
         state = CASE WHEN attempts + 1 >= $3 THEN 3 ELSE 1 END, \
         next_attempt_at = now() + least(power(2, attempts), 300) * interval '1 second' \
         WHERE delivery_id = $1",
        delivery_id,
        error,
        max_attempts
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Keeps an alert for an area's coordinators; false when it was kept before.
pub async fn insert_staff_alert(
    connection: &mut PgConnection,
    alert_id: Uuid,
    area: &str,
    kind: i32,
    mentor_id: Uuid,
    since: chrono::NaiveDate,
    raised_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query!(
        "INSERT INTO notifications.staff_alert (alert_id, area, kind, mentor_id, since, \
         raised_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (alert_id) DO NOTHING",
        alert_id,
        area,
        kind,
        mentor_id,
        since,
        raised_at
    )
    .execute(connection)
    .await?
    .rows_affected()
        == 1)
}

/// Keeps an urgent concern for an area's coordinators; false when it was
/// kept before.
pub async fn insert_concern_alert(
    connection: &mut PgConnection,
    concern_id: Uuid,
    area: &str,
    referral_id: Uuid,
    category: i32,
    raised_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query!(
        "INSERT INTO notifications.concern_alert (concern_id, area, referral_id, category, \
         raised_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (concern_id) DO NOTHING",
        concern_id,
        area,
        referral_id,
        category,
        raised_at
    )
    .execute(connection)
    .await?
    .rows_affected()
        == 1)
}
