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
    /// For NOT_TAKEN_ON: `cpm.v1.NonEngagementStage` and `…Reason`.
    pub stage: Option<i32>,
    pub reason: Option<i32>,
    /// For AWAITING_MENTORS: the expected start range.
    pub estimated_start: Option<chrono::NaiveDate>,
    pub estimated_start_latest: Option<chrono::NaiveDate>,
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

/// Inserts a notification, on the stream and the feed as `channels` say.
pub async fn insert_notification(
    connection: &mut PgConnection,
    row: &NotificationRow,
    channels: &crate::preferences::Channels,
    event_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO notifications.notification (notification_id, agency_id, sequence, \
         referral_id, kind, status, event_id, created_at, feedback, stage, reason, \
         estimated_start, estimated_start_latest, streamed, feed) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        row.notification_id,
        &row.agency_id,
        row.sequence,
        row.referral_id,
        row.kind,
        row.status,
        event_id,
        row.created_at,
        row.feedback.as_deref(),
        row.stage,
        row.reason,
        row.estimated_start,
        row.estimated_start_latest,
        channels.stream,
        channels.feed,
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
/// Its payload is the agency whose notifications or deliveries changed: a
/// webhook worker already serving every endpoint of that agency lets the
/// task that holds them pick the new deliveries up instead of claiming.
pub async fn notify_committed(
    connection: &mut PgConnection,
    agency_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_notify($1, $2)", crate::NOTIFY_CHANNEL, agency_id)
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
                feedback, stage, reason, estimated_start, estimated_start_latest \
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

/// Records that a delivery of `notification_id` was confirmed; true for
/// the first confirmation of that notification (on any of its webhooks).
pub async fn mark_first_delivered(
    connection: &mut PgConnection,
    notification_id: Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(!mark_first_delivered_of(connection, &[notification_id])
        .await?
        .is_empty())
}

/// [`mark_first_delivered`] for several notifications in one statement:
/// returns those this confirmed first.
pub async fn mark_first_delivered_of(
    connection: &mut PgConnection,
    notification_ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "UPDATE notifications.notification SET first_delivered_at = now() \
         WHERE notification_id = ANY($1) AND first_delivered_at IS NULL \
         RETURNING notification_id",
        notification_ids
    )
    .fetch_all(connection)
    .await
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
