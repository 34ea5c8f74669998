//! The webhook worker: posts due deliveries, records each attempt, retries
//! with back-off and gives up after a bounded number of attempts. A
//! delivery row exists once per webhook and notification, so a redelivered
//! event never causes a second post. The body carries IDs and statuses
//! only, and for a discharge the proforma feedback (dates, counts and
//! categories). The first confirmed delivery of a discharge is announced
//! as `feedback.delivered`, so the date the referrer received the feedback
//! is recorded where the case file and the referral are kept.

use std::time::Duration;

use cpm_proto::v1::{
    DischargeFeedback, DischargeOutcome, FeedbackDelivered, NotificationKind, ReferralStatus,
    RelapseSign,
};
use cpm_runtime::bus::{ServiceHandle, outbox};
use cpm_runtime::grpc::values::timestamp;
use prost::Message as _;
use serde::Serialize;
use tokio::sync::watch;

use crate::db::{self, DueDelivery};

pub struct WebhookWorker {
    handle: ServiceHandle,
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
    /// For DISCHARGED only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<FeedbackBody>,
}

/// The discharge feedback as JSON: enum values by their names.
#[derive(Debug, PartialEq, Serialize)]
pub struct FeedbackBody {
    pub started_on: String,
    pub discharged_on: String,
    pub contacts: i32,
    pub goals_set: i32,
    pub goals_achieved: i32,
    pub outcome: &'static str,
    pub relapse_signs: Vec<&'static str>,
    pub how_to_re_refer: String,
}

impl From<&DischargeFeedback> for FeedbackBody {
    fn from(feedback: &DischargeFeedback) -> Self {
        Self {
            started_on: feedback.started_on.clone(),
            discharged_on: feedback.discharged_on.clone(),
            contacts: feedback.contacts,
            goals_set: feedback.goals_set,
            goals_achieved: feedback.goals_achieved,
            outcome: DischargeOutcome::try_from(feedback.outcome)
                .unwrap_or_default()
                .as_str_name(),
            relapse_signs: feedback
                .relapse_signs
                .iter()
                .map(|sign| {
                    RelapseSign::try_from(*sign)
                        .unwrap_or_default()
                        .as_str_name()
                })
                .collect(),
            how_to_re_refer: feedback.how_to_re_refer.clone(),
        }
    }
}

/// A stored feedback, decoded; `None` when there is none (or it does not
/// decode, which only a corrupted row could cause).
pub fn decode_feedback(stored: Option<&[u8]>) -> Option<DischargeFeedback> {
    stored.and_then(|bytes| DischargeFeedback::decode(bytes).ok())
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
            feedback: decode_feedback(due.feedback.as_deref())
                .as_ref()
                .map(FeedbackBody::from),
        }
    }
}

impl WebhookWorker {
    pub fn new(handle: ServiceHandle, config: &crate::Config) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.webhook_timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            handle,
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
        let mut transaction = self.handle.begin().await?;
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
                    let first =
                        db::mark_first_delivered(&mut transaction, delivery.notification_id)
                            .await?;
                    if first && delivery.kind == NotificationKind::Discharged as i32 {
                        outbox::enqueue(
                            &mut transaction,
                            crate::NAME,
                            &FeedbackDelivered {
                                referral_id: delivery.referral_id.to_string(),
                                agency_id: delivery.agency_id.clone(),
                                delivered_at: Some(timestamp(chrono::Utc::now())),
                                channel: "WEBHOOK".into(),
                            },
                        )
                        .await?;
                    }
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
