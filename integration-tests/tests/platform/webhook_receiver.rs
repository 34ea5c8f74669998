//! A real HTTP webhook receiver for tests, answering as told, and the
//! calls that drive webhooks from a test: register one, tell an agency of a
//! status change, read the delivery log.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpm_proto::Event as _;
use cpm_proto::v1::notifications_service_client::NotificationsServiceClient;
use cpm_proto::v1::{
    Delivery, ListDeliveriesRequest, ReferralStatus, ReferralStatusChanged, RegisterWebhookRequest,
    Webhook,
};
use prost::Message as _;

use crate::bus::publish_raw;
use crate::harness::{Authed, TestEnv, eventually};

/// How a test receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    NoContent,
    ServerError,
    /// Never answers (the connection stays open).
    Hang,
    /// 500 to the next `n` requests, then 204.
    FailTimes(u32),
    /// 204, after keeping the caller waiting this long.
    Slow(Duration),
}

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    pub at: tokio::time::Instant,
}

/// A real HTTP endpoint on 127.0.0.1 that records what it is sent.
pub struct Receiver {
    pub port: u16,
    answer: Arc<Mutex<Answer>>,
    received: Arc<Mutex<Vec<Received>>>,
    /// Every answer passes through it; [`Receiver::hold`] keeps it shut.
    door: Arc<tokio::sync::Mutex<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(answer: Answer) -> Self {
        Self::start_on(0, answer).await
    }

    /// A receiver on `port` (0: any free one).
    pub async fn start_on(port: u16, answer: Answer) -> Self {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let received = Arc::new(Mutex::new(Vec::new()));
        let door = Arc::new(tokio::sync::Mutex::new(()));
        let (mode, log, entry) = (answer.clone(), received.clone(), door.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (mode, log, entry) = (mode.clone(), log.clone(), entry.clone());
                    async move {
                        let header = |name: &str| {
                            headers
                                .get(name)
                                .and_then(|value| value.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        log.lock().unwrap().push(Received {
                            id: header("webhook-id"),
                            timestamp: header("webhook-timestamp"),
                            signature: header("webhook-signature"),
                            body: body.to_vec(),
                            at: tokio::time::Instant::now(),
                        });
                        let answer = {
                            let mut mode = mode.lock().unwrap();
                            let answer = *mode;
                            if let Answer::FailTimes(left) = answer {
                                *mode = if left > 1 {
                                    Answer::FailTimes(left - 1)
                                } else {
                                    Answer::NoContent
                                };
                            }
                            answer
                        };
                        drop(entry.lock().await);
                        match answer {
                            Answer::NoContent => axum::http::StatusCode::NO_CONTENT,
                            Answer::ServerError | Answer::FailTimes(_) => {
                                axum::http::StatusCode::INTERNAL_SERVER_ERROR
                            }
                            Answer::Hang => {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                axum::http::StatusCode::NO_CONTENT
                            }
                            Answer::Slow(pause) => {
                                tokio::time::sleep(pause).await;
                                axum::http::StatusCode::NO_CONTENT
                            }
                        }
                    }
                },
            ),
        );
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            port,
            answer,
            received,
            door,
            task,
        }
    }

    /// Holds every answer (requests are still recorded as they come) until
    /// the guard is dropped.
    pub async fn hold(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.door.clone().lock_owned().await
    }

    pub fn url(&self) -> String {
        url_on(self.port)
    }

    pub fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub async fn await_requests(&self, count: usize, timeout: Duration) -> Vec<Received> {
        eventually(
            timeout,
            &format!("the receiver got {count} requests"),
            || async { self.received().len() >= count },
        )
        .await;
        self.received()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The receiver URL on `port`, whether or not anything listens there.
pub fn url_on(port: u16) -> String {
    format!("http://127.0.0.1:{port}/hook")
}

/// A loopback port nothing listens on (connections to it are refused),
/// free for a [`Receiver::start_on`] later.
pub async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Tells `agency` of a status change, as referral intake would; returns
/// the referral's ID.
pub async fn notify(env: &TestEnv, agency: &str) -> String {
    let referral_id = uuid::Uuid::now_v7().to_string();
    let event = ReferralStatusChanged {
        referral_id: referral_id.clone(),
        agency_id: agency.into(),
        status: ReferralStatus::UnderAssessment as i32,
        previous_status: ReferralStatus::Received as i32,
        ..Default::default()
    };
    let envelope = cpm_runtime::bus::outbox::envelope("referral-intake", &event);
    publish_raw(env, ReferralStatusChanged::TYPE, &envelope.encode_to_vec()).await;
    referral_id
}

pub async fn register(client: &mut NotificationsServiceClient<Authed>, url: String) -> Webhook {
    client
        .register_webhook(RegisterWebhookRequest { url })
        .await
        .unwrap()
        .into_inner()
        .webhook
        .unwrap()
}

pub async fn deliveries(
    client: &mut NotificationsServiceClient<Authed>,
    request: ListDeliveriesRequest,
) -> Vec<Delivery> {
    client
        .list_deliveries(request)
        .await
        .unwrap()
        .into_inner()
        .deliveries
}

/// Lists deliveries until `done` holds for the page (or fails after 30 s).
pub async fn await_deliveries(
    client: &mut NotificationsServiceClient<Authed>,
    request: ListDeliveriesRequest,
    what: &str,
    done: impl Fn(&[Delivery]) -> bool,
) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = deliveries(client, request.clone()).await;
        if done(&page) {
            return page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
