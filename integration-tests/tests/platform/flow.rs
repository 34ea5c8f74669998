//! A steady flow of referrals as an agency makes it: referrals submitted at
//! a fixed rate, a webhook receiver and a notification stream listening,
//! and a tally of what each channel heard, per notification and per
//! referral, so a test can demand "every one, exactly once".

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpm_proto::v1::notifications_service_client::NotificationsServiceClient;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_proto::v1::{
    ReferralStatus, RegisterWebhookRequest, SubmitReferralRequest, SubscribeRequest,
};
use futures::StreamExt as _;
use tonic::transport::Channel;

use crate::harness::{Authed, TestEnv, referral_request};

/// Flow tests take turns: each loads both of the machine's cores with a
/// thousand referrals, and two at once would measure the machine, not the
/// platform.
pub async fn take_turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// What one channel (webhook or stream) has heard.
#[derive(Default)]
pub struct Heard {
    /// Times each notification ID arrived.
    pub by_notification: HashMap<String, u32>,
    /// Times each referral's notice of each status arrived.
    pub by_referral: HashMap<(String, ReferralStatus), u32>,
    /// When each referral's notice of each status first arrived.
    pub first_heard: HashMap<(String, ReferralStatus), std::time::Instant>,
}

impl Heard {
    fn record(&mut self, notification_id: String, referral_id: String, status: ReferralStatus) {
        *self.by_notification.entry(notification_id).or_default() += 1;
        self.first_heard
            .entry((referral_id.clone(), status))
            .or_insert_with(std::time::Instant::now);
        *self.by_referral.entry((referral_id, status)).or_default() += 1;
    }

    /// How many of `referrals` have had a notice of `status`.
    pub fn count(&self, referrals: &[String], status: ReferralStatus) -> usize {
        referrals
            .iter()
            .filter(|id| self.by_referral.contains_key(&((*id).clone(), status)))
            .count()
    }

    /// Fails unless every one of `referrals` had exactly one notice of
    /// `status` and no notification arrived twice.
    pub fn assert_exactly_once(&self, channel: &str, referrals: &[String], status: ReferralStatus) {
        let missing: Vec<_> = referrals
            .iter()
            .filter(|id| !self.by_referral.contains_key(&((*id).clone(), status)))
            .take(5)
            .collect();
        assert!(
            missing.is_empty(),
            "{channel}: {} of {} referrals had no {status:?} notice, e.g. {missing:?}",
            referrals.len() - self.count(referrals, status),
            referrals.len()
        );
        let twice: Vec<_> = self
            .by_notification
            .iter()
            .filter(|(_, times)| **times > 1)
            .take(5)
            .collect();
        assert!(
            twice.is_empty(),
            "{channel}: notifications delivered more than once, e.g. {twice:?}"
        );
        let repeated: Vec<_> = self
            .by_referral
            .iter()
            .filter(|(_, times)| **times > 1)
            .take(5)
            .collect();
        assert!(
            repeated.is_empty(),
            "{channel}: one referral told the same status twice, e.g. {repeated:?}"
        );
    }
}

/// An agency listening on both channels.
pub struct ListeningAgency {
    pub webhook: Arc<Mutex<Heard>>,
    pub stream: Arc<Mutex<Heard>>,
    /// Times the stream ended or failed and was opened again.
    pub stream_reopened: Arc<Mutex<u32>>,
    stream_task: tokio::task::JoinHandle<()>,
    webhook_task: tokio::task::JoinHandle<()>,
}

impl ListeningAgency {
    /// Registers a webhook with the notifications service on `channel` and
    /// opens a stream, reopened after the last sequence seen whenever it
    /// ends, as an agency's integration would.
    pub async fn start(env: &TestEnv, channel: &Channel, agency_id: &str) -> Self {
        let webhook = Arc::new(Mutex::new(Heard::default()));
        let stream = Arc::new(Mutex::new(Heard::default()));
        let stream_reopened = Arc::new(Mutex::new(0));

        let heard = webhook.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap,
                      axum::Json(body): axum::Json<serde_json::Value>| {
                    let heard = heard.clone();
                    async move {
                        let text = |key: &str| body[key].as_str().unwrap_or_default().to_owned();
                        // Receivers deduplicate by the Standard Webhooks ID.
                        let webhook_id = headers
                            .get("webhook-id")
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        assert_eq!(webhook_id, text("notification_id"));
                        let status = ReferralStatus::from_str_name(&text("status"))
                            .unwrap_or(ReferralStatus::Unspecified);
                        heard
                            .lock()
                            .unwrap()
                            .record(webhook_id, text("referral_id"), status);
                        axum::http::StatusCode::NO_CONTENT
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let webhook_task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let mut notifications = NotificationsServiceClient::new(env.referrer(channel, agency_id));
        notifications
            .register_webhook(RegisterWebhookRequest { url })
            .await
            .unwrap();

        let heard = stream.clone();
        let reopened = stream_reopened.clone();
        let stream_task = tokio::spawn(async move {
            let mut after = 0;
            loop {
                if let Ok(response) = notifications
                    .subscribe(SubscribeRequest {
                        after_sequence: after,
                    })
                    .await
                {
                    let mut messages = response.into_inner();
                    while let Some(Ok(message)) = messages.next().await {
                        let notice = message.notification.unwrap();
                        after = after.max(notice.sequence);
                        let status = notice.status();
                        heard.lock().unwrap().record(
                            notice.notification_id,
                            notice.referral_id,
                            status,
                        );
                    }
                }
                *reopened.lock().unwrap() += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self {
            webhook,
            stream,
            stream_reopened,
            stream_task,
            webhook_task,
        }
    }

    /// Waits until both channels have told every one of `referrals` of
    /// `status`; on time-out, says how far each got.
    pub async fn await_notices(
        &self,
        referrals: &[String],
        status: ReferralStatus,
        timeout: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let webhook = self.webhook.lock().unwrap().count(referrals, status);
            let stream = self.stream.lock().unwrap().count(referrals, status);
            if webhook == referrals.len() && stream == referrals.len() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "after {timeout:?}, {status:?} notices: webhook {webhook}, stream {stream} of {}",
                referrals.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Both channels heard each of `referrals`' `status` exactly once.
    pub fn assert_exactly_once(&self, referrals: &[String], status: ReferralStatus) {
        self.webhook
            .lock()
            .unwrap()
            .assert_exactly_once("webhook", referrals, status);
        self.stream
            .lock()
            .unwrap()
            .assert_exactly_once("stream", referrals, status);
    }

    pub fn stream_reopened(&self) -> u32 {
        *self.stream_reopened.lock().unwrap()
    }
}

impl Drop for ListeningAgency {
    fn drop(&mut self) {
        self.stream_task.abort();
        self.webhook_task.abort();
    }
}

/// Submits `count` referrals at `per_second`, each in its own task so a
/// slow answer never slows the pace. Returns the accepted referral IDs and
/// the rate achieved; a submission that fails is retried with the same
/// idempotency key (as an agency would) until it is accepted.
pub async fn submit_at_rate(
    client: &ReferralIntakeServiceClient<Authed>,
    count: usize,
    per_second: u32,
    area: &str,
) -> (Vec<String>, f64) {
    let started = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second);
    let mut submissions = tokio::task::JoinSet::new();
    for _ in 0..count {
        ticks.tick().await;
        let mut client = client.clone();
        let request = referral_request(area);
        submissions.spawn(async move { submit_until_accepted(&mut client, request).await });
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let mut ids = Vec::with_capacity(count);
    while let Some(id) = submissions.join_next().await {
        ids.push(id.unwrap());
    }
    (ids, rate)
}

/// Submits at `per_second` until `stop` fires, each submission in its own
/// task; returns the IDs of those accepted (a refused or unanswered one is
/// the caller's to retry, as an agency would, and is left out here).
pub async fn submit_until_stopped(
    client: &ReferralIntakeServiceClient<Authed>,
    per_second: u32,
    area: &str,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<String> {
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second);
    let mut submissions = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let mut client = client.clone();
        let request = referral_request(area);
        submissions.spawn(async move {
            client
                .submit_referral(request)
                .await
                .ok()
                .map(|response| response.into_inner().referral.unwrap().referral_id)
        });
    }
    let mut ids = Vec::new();
    while let Some(id) = submissions.join_next().await {
        ids.extend(id.unwrap());
    }
    ids
}

async fn submit_until_accepted(
    client: &mut ReferralIntakeServiceClient<Authed>,
    request: SubmitReferralRequest,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match client.submit_referral(request.clone()).await {
            Ok(response) => return response.into_inner().referral.unwrap().referral_id,
            Err(status) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "a submission still failed after 60 s: {status}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// The end of a flow test: the pace held, every referral reached
/// UNDER_ASSESSMENT within `catch_up`, and both channels told each of them
/// RECEIVED and UNDER_ASSESSMENT exactly once.
pub async fn assert_flow_arrived(
    listening: &ListeningAgency,
    client: &ReferralIntakeServiceClient<Authed>,
    referrals: &[String],
    rate: f64,
    catch_up: Duration,
) {
    assert!(rate >= 50.0, "submitted at only {rate:.1} a second");
    listening
        .await_notices(referrals, ReferralStatus::UnderAssessment, catch_up)
        .await;
    assert_all_in_status(client, referrals, ReferralStatus::UnderAssessment).await;
    // Anything sent twice would arrive within the webhook worker's poll.
    tokio::time::sleep(Duration::from_secs(2)).await;
    listening.assert_exactly_once(referrals, ReferralStatus::Received);
    listening.assert_exactly_once(referrals, ReferralStatus::UnderAssessment);
}

/// Fails unless GetReferral shows every one of `referrals` in `status`.
pub async fn assert_all_in_status(
    client: &ReferralIntakeServiceClient<Authed>,
    referrals: &[String],
    status: ReferralStatus,
) {
    let statuses = crate::harness::statuses_of(client, referrals, 8).await;
    let wrong: HashSet<_> = statuses.iter().filter(|s| **s != status).collect();
    let wrong_count = statuses.iter().filter(|s| **s != status).count();
    assert_eq!(
        wrong_count,
        0,
        "{wrong_count} of {} referrals are not {status:?} (seen {wrong:?})",
        referrals.len()
    );
}
