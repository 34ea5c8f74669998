//! The webhook worker: posts due deliveries, records each attempt, retries
//! with back-off and gives up after a bounded number of attempts. A
//! delivery row exists once per webhook and notification, so a redelivered
//! event never causes a second post. The body carries IDs and statuses only.

use std::time::Duration;

use cpm_proto::v1::{NotificationKind, ReferralStatus};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::db::{self, DueDelivery};

pub struct WebhookWorker {
    pool: PgPool,
    client: reqwest::Client,
    max_attempts: i32,
    poll_interval: Duration,
}

/// The JSON an agency's endpoint receives.
#[derive(Debug, Serialize)]
pub struct WebhookBody {
    pub notification_id: String,
    pub sequence: i64,
    pub agency_id: String,
    pub referral_id: String,
    pub kind: &'static str,
    pub status: &'static str,
    pub created_at: String,
}

impl From<&DueDelivery> for WebhookBody {
    fn from(due: &DueDelivery) -> Self {
        Self {
            notification_id: due.notification_id.to_string(),
            sequence: due.sequence,
            agency_id: due.agency_id.clone(),
            referral_id: due.referral_id.to_string(),
            kind: NotificationKind::try_from(due.kind)
                .unwrap_or_default()
                .as_str_name(),
            status: ReferralStatus::try_from(due.status)
                .unwrap_or_default()
                .as_str_name(),
            created_at: due.created_at.to_rfc3339(),
        }
    }
}

impl WebhookWorker {
    pub fn new(pool: PgPool, config: &crate::Config) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.webhook_timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            pool,
            client,
            max_attempts: config.webhook_max_attempts,
            poll_interval: Duration::from_millis(config.webhook_poll_interval_ms),
        })
    }

    pub async fn run(
        self: std::sync::Arc<Self>,
        mut wake: watch::Receiver<u64>,
        shutdown: cpm_runtime::Shutdown,
    ) {
        loop {
            let busy = match self.deliver_due_batch().await {
                Ok(count) => count > 0,
                Err(error) => {
                    tracing::warn!(%error, "webhook delivery batch failed");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = wake.changed() => {}
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// Posts one batch of due deliveries; returns how many were attempted.
    pub async fn deliver_due_batch(&self) -> anyhow::Result<usize> {
        let mut transaction = self.pool.begin().await?;
        let due = db::lock_due_deliveries(&mut transaction, 16).await?;
        for delivery in &due {
            let result = self
                .client
                .post(&delivery.url)
                // The Standard Webhooks ID header, for receivers to
                // deduplicate by: delivery is at least once.
                .header("webhook-id", delivery.notification_id.to_string())
                .header(
                    "x-cpm-notification-id",
                    delivery.notification_id.to_string(),
                )
                .json(&WebhookBody::from(delivery))
                .send()
                .await;
            let failure = match result {
                Ok(response) if response.status().is_success() => None,
                Ok(response) => Some(format!("endpoint answered {}", response.status())),
                Err(error) => Some(format!("request failed: {}", error.without_url())),
            };
            match failure {
                None => {
                    db::mark_delivered(&mut transaction, delivery.delivery_id).await?;
                    tracing::info!(delivery_id = %delivery.delivery_id, "webhook delivered");
                }
                Some(error) => {
                    tracing::warn!(delivery_id = %delivery.delivery_id, %error, "webhook attempt failed");
                    db::mark_attempt_failed(
                        &mut transaction,
                        delivery.delivery_id,
                        &error,
                        self.max_attempts,
                    )
                    .await?;
                }
            }
        }
        transaction.commit().await?;
        Ok(due.len())
    }
}
