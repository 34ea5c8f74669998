//! The agency feed: every notification is also published to the topic
//! exchange `<ns>.agency-feed` with the routing key
//! `agency.<agency_id>.<kind>` (kind `status_changed` or `discharged`), for
//! agencies whose systems read queues rather than take webhooks. An agency
//! binds its own queue to `agency.<its id>.#`; RabbitMQ topic permissions
//! keep it to its own keys (docs/operations.md).
//!
//! The body is the same JSON a webhook receives (IDs, statuses and, for a
//! discharge, the feedback proforma: never personal data). A notification
//! is marked fed once the broker confirmed it; one the broker could not
//! route (no agency queue bound yet) counts as fed, as a topic message
//! nobody subscribed to is simply not kept. Publishing is at least once:
//! deduplicate by `message_id` (the notification ID).

use std::time::Duration;

use cpm_proto::v1::NotificationKind;
use cpm_runtime::bus::Bus;
use futures::future::{join_all, try_join_all};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Confirmation};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::body::NotificationBody;
use crate::db::NotificationRow;

/// Notifications published per batch.
const BATCH: i64 = 100;
/// How long the broker has to confirm a batch.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// The routing key of `kind` for `agency_id`: `agency.<agency>.<kind>`.
pub fn routing_key(agency_id: &str, kind: NotificationKind) -> String {
    let kind = match kind {
        NotificationKind::Discharged => "discharged",
        NotificationKind::StatusChanged | NotificationKind::Unspecified => "status_changed",
    };
    format!("agency.{agency_id}.{kind}")
}

pub struct FeedPublisher {
    pool: PgPool,
    bus: Bus,
    poll_interval: Duration,
}

impl FeedPublisher {
    pub fn new(pool: PgPool, bus: Bus, poll_interval: Duration) -> Self {
        Self {
            pool,
            bus,
            poll_interval,
        }
    }

    /// Publishes as notifications commit (woken by `wake`, polling in case
    /// a wake-up was missed) until shutdown; a failed batch is retried.
    pub async fn run(
        self: std::sync::Arc<Self>,
        wake: watch::Receiver<u64>,
        shutdown: cpm_runtime::Shutdown,
    ) {
        cpm_runtime::periodic::drain_on_wake(
            "agency feed",
            wake,
            self.poll_interval,
            shutdown,
            || self.publish_due_batch(),
        )
        .await;
    }

    /// Publishes one batch of notifications not yet fed, oldest first;
    /// returns how many were confirmed.
    pub async fn publish_due_batch(&self) -> anyhow::Result<usize> {
        let mut transaction = self.pool.begin().await?;
        let rows = sqlx::query_as!(
            NotificationRow,
            "SELECT notification_id, agency_id, sequence, referral_id, kind, status, \
             created_at, feedback, stage, reason, estimated_start, estimated_start_latest \
             FROM notifications.notification WHERE fed_at IS NULL AND feed \
             ORDER BY created_at, notification_id LIMIT $1 FOR UPDATE SKIP LOCKED",
            BATCH
        )
        .fetch_all(&mut *transaction)
        .await?;
        if rows.is_empty() {
            transaction.commit().await?;
            return Ok(0);
        }
        let channel = self.bus.publisher().await?;
        let exchange = self.bus.topology().agency_feed_exchange();
        let messages: Vec<(String, Vec<u8>, BasicProperties)> = rows
            .iter()
            .map(|row| {
                let kind = NotificationKind::try_from(row.kind).unwrap_or_default();
                let body = NotificationBody::from(row);
                let properties = BasicProperties::default()
                    .with_message_id(row.notification_id.to_string().into())
                    .with_type(kind.as_str_name().into())
                    .with_content_type("application/json".into())
                    .with_app_id("cpm".into())
                    .with_delivery_mode(2);
                (
                    routing_key(&row.agency_id, kind),
                    serde_json::to_vec(&body).unwrap_or_default(),
                    properties,
                )
            })
            .collect();
        let pending = try_join_all(messages.iter().map(|(key, body, properties)| {
            channel.basic_publish(
                exchange.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                body,
                properties.clone(),
            )
        }))
        .await?;
        let confirmations = tokio::time::timeout(CONFIRM_TIMEOUT, join_all(pending))
            .await
            .map_err(|_| anyhow::anyhow!("the broker did not confirm the feed batch"))?;
        let mut fed = Vec::new();
        for (row, confirmation) in rows.iter().zip(confirmations) {
            match confirmation? {
                Confirmation::Ack(_) => fed.push(row.notification_id),
                Confirmation::Nack(_) => {
                    tracing::warn!(notification_id = %row.notification_id, "feed message nacked");
                }
                Confirmation::NotRequested => {
                    anyhow::bail!("publisher confirms are off on the publishing channel")
                }
            }
        }
        sqlx::query!(
            "UPDATE notifications.notification SET fed_at = now() \
             WHERE notification_id = ANY($1)",
            &fed
        )
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        metrics::counter!("cpm_feed_published_total").increment(fed.len() as u64);
        Ok(fed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_agency_and_kind_has_its_own_routing_key() {
        assert_eq!(
            routing_key("agency-a", NotificationKind::Discharged),
            "agency.agency-a.discharged"
        );
        assert_eq!(
            routing_key("agency-a", NotificationKind::StatusChanged),
            "agency.agency-a.status_changed"
        );
    }
}
