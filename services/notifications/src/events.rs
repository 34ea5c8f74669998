//! Turns referrer-visible events into notifications and pending webhook
//! deliveries, in the consumer's inbox transaction.

use cpm_runtime::bus::{EventHandler, HandlerError, ReceivedEvent, referral_id};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::{self, NotificationRow};
use crate::domain::notice_for;

pub struct NotificationWriter;

impl EventHandler for NotificationWriter {
    async fn handle(
        &self,
        connection: &mut PgConnection,
        event: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let Some(notice) = notice_for(event)? else {
            return Ok(());
        };
        let referral_id = referral_id(&notice.referral_id)?;
        if notice.agency_id.is_empty() {
            return Err(HandlerError::Permanent("event names no agency".into()));
        }
        let sequence = db::next_sequence(connection, &notice.agency_id).await?;
        let row = NotificationRow {
            notification_id: Uuid::now_v7(),
            agency_id: notice.agency_id.clone(),
            sequence,
            referral_id,
            kind: notice.kind as i32,
            status: notice.status as i32,
            created_at: chrono::Utc::now(),
        };
        db::insert_notification(connection, &row, event.event_id).await?;
        let deliveries =
            db::insert_deliveries(connection, &notice.agency_id, row.notification_id).await?;
        db::notify_committed(connection).await?;
        tracing::info!(%referral_id, status = notice.status.as_str_name(), deliveries, "agency notified");
        Ok(())
    }
}
