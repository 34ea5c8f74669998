//! Alerts for an area's coordinators, kept by the `staff-alerts` consumer
//! ([`crate::events::staff_alerts`]): mentors who need attention and urgent
//! concerns. Coordinators read them with `ListStaffAlerts`, their areas'
//! only (an admin's: every area); the first listing by a coordinator of the
//! area is the alert's delivery. IDs and categories only: the concern's
//! note stays sealed in contact logging.

use chrono::{DateTime, NaiveDate, Utc};
use cpm_runtime::auth::AreaScope;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// `cpm.v1.StaffAlertKind` as stored in the union below.
const MENTOR: i32 = cpm_proto::v1::StaffAlertKind::Mentor as i32;
const URGENT_CONCERN: i32 = cpm_proto::v1::StaffAlertKind::UrgentConcern as i32;

/// One alert, of either kind.
#[derive(Clone, Debug, PartialEq)]
pub struct StaffAlertRow {
    pub alert_id: Uuid,
    pub kind: i32,
    pub area: String,
    pub raised_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub mentor_id: Option<Uuid>,
    pub mentor_alert_kind: Option<i32>,
    pub since: Option<NaiveDate>,
    pub referral_id: Option<Uuid>,
    pub concern_category: Option<i32>,
}

/// Which alerts a page shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertQuery {
    pub undelivered_only: bool,
    /// Where the last alert shown sorts: when raised, its ID (newest first).
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// A page of `scope`'s alerts, newest first; those not delivered before
/// are marked delivered now, in the same transaction.
pub async fn list(
    pool: &PgPool,
    scope: &AreaScope,
    query: &AlertQuery,
) -> Result<Vec<StaffAlertRow>, sqlx::Error> {
    let areas: Option<Vec<String>> = scope
        .as_filter()
        .map(|areas| areas.iter().map(|area| area.to_lowercase()).collect());
    let mut transaction = pool.begin().await?;
    let mut rows = sqlx::query_as!(
        StaffAlertRow,
        "SELECT alert_id AS \"alert_id!\", kind AS \"kind!\", area AS \"area!\", \
           raised_at AS \"raised_at!\", delivered_at, mentor_id, mentor_alert_kind, since, \
           referral_id, concern_category \
         FROM ( \
           SELECT alert_id, $6::integer AS kind, area, raised_at, delivered_at, mentor_id, \
             kind AS mentor_alert_kind, since, NULL::uuid AS referral_id, \
             NULL::integer AS concern_category \
           FROM notifications.staff_alert \
           UNION ALL \
           SELECT concern_id, $7::integer, area, raised_at, delivered_at, NULL::uuid, \
             NULL::integer, NULL::date, referral_id, category \
           FROM notifications.concern_alert \
         ) AS alerts \
         WHERE ($1::text[] IS NULL OR lower(area) = ANY($1)) \
           AND (NOT $2 OR delivered_at IS NULL) \
           AND ($3::timestamptz IS NULL OR (raised_at, alert_id) < ($3, $4)) \
         ORDER BY raised_at DESC, alert_id DESC LIMIT $5",
        areas.as_deref(),
        query.undelivered_only,
        query.after.map(|(at, _)| at),
        query.after.map(|(_, id)| id),
        query.limit,
        MENTOR,
        URGENT_CONCERN,
    )
    .fetch_all(&mut *transaction)
    .await?;
    let first_shown: Vec<Uuid> = rows
        .iter()
        .filter(|row| row.delivered_at.is_none())
        .map(|row| row.alert_id)
        .collect();
    if !first_shown.is_empty() {
        let delivered_at = mark_delivered(&mut transaction, &first_shown).await?;
        for row in rows.iter_mut().filter(|row| row.delivered_at.is_none()) {
            row.delivered_at = Some(delivered_at);
        }
    }
    transaction.commit().await?;
    Ok(rows)
}

/// Marks the named alerts delivered (those not delivered before); returns when.
async fn mark_delivered(
    connection: &mut PgConnection,
    alert_ids: &[Uuid],
) -> Result<DateTime<Utc>, sqlx::Error> {
    let now = sqlx::query_scalar!("SELECT now() AS \"now!\"")
        .fetch_one(&mut *connection)
        .await?;
    sqlx::query!(
        "UPDATE notifications.staff_alert SET delivered_at = $2 \
         WHERE alert_id = ANY($1) AND delivered_at IS NULL",
        alert_ids,
        now
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        "UPDATE notifications.concern_alert SET delivered_at = $2 \
         WHERE concern_id = ANY($1) AND delivered_at IS NULL",
        alert_ids,
        now
    )
    .execute(connection)
    .await?;
    Ok(now)
}

/// The addresses an area's staff alerts are e-mailed to (none when unset).
pub async fn recipients_of(
    connection: &mut PgConnection,
    area: &str,
) -> Result<Vec<String>, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        "SELECT email_addresses FROM notifications.staff_alert_recipient \
         WHERE lower(area) = lower($1)",
        area
    )
    .fetch_optional(connection)
    .await?
    .unwrap_or_default())
}

/// Sets the addresses `area`'s staff alerts are e-mailed to; none stops them.
pub async fn set_recipients(
    pool: &PgPool,
    area: &str,
    addresses: &[String],
    updated_by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO notifications.staff_alert_recipient (area, email_addresses, updated_by) \
         VALUES ($1, $2, $3) \
         ON CONFLICT (area) DO UPDATE SET email_addresses = $2, updated_by = $3, \
           updated_at = now()",
        area,
        addresses,
        updated_by
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Queues an alert's e-mail to its area's coordinators, rendered from
/// `purpose`'s template with `values` (IDs, dates and categories only).
pub async fn email_area(
    connection: &mut PgConnection,
    templates: &crate::templates::Templates,
    area: &str,
    alert_id: Uuid,
    purpose: crate::templates::Purpose,
    values: &crate::templates::Placeholders,
) -> Result<u64, sqlx::Error> {
    let recipients = recipients_of(connection, area).await?;
    if recipients.is_empty() {
        return Ok(0);
    }
    let rendered = templates.render(purpose, values);
    crate::email::queue(
        connection,
        crate::email::About::StaffAlert(alert_id),
        &rendered,
        &recipients,
    )
    .await
}
