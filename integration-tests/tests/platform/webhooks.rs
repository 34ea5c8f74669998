//! Webhooks as receivers expect them, against real HTTP receivers started
//! by the tests: Standard Webhooks signatures (checked independently with
//! Python's `hmac`), a dead endpoint that delays only itself, dead letters
//! and redelivery, secret rotation with an overlap, and destinations
//! refused at registration and at connect time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpm::Target;
use cpm_proto::Event as _;
use cpm_proto::v1::notifications_service_client::NotificationsServiceClient;
use cpm_proto::v1::{
    DeleteWebhookRequest, Delivery, DeliveryErrorKind, DeliveryState, DisableWebhookRequest,
    ListDeliveriesRequest, ListWebhooksRequest, RedeliverDeliveriesRequest, ReferralStatus,
    ReferralStatusChanged, RegisterWebhookRequest, RotateWebhookSecretRequest, Webhook,
};
use prost::Message as _;
use tonic::transport::Channel;

use crate::bus::publish_raw;
use crate::harness::{Authed, TestEnv, connect, eventually, violated_fields};

/// How a test receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    NoContent,
    ServerError,
    /// Never answers (the connection stays open).
    Hang,
}

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    at: tokio::time::Instant,
}

/// A real HTTP endpoint on 127.0.0.1 that records what it is sent.
struct Receiver {
    port: u16,
    answer: Arc<Mutex<Answer>>,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(answer: Answer) -> Self {
        let answer = Arc::new(Mutex::new(answer));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (mode, log) = (answer.clone(), received.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (mode, log) = (mode.clone(), log.clone());
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
                        let answer = *mode.lock().unwrap();
                        match answer {
                            Answer::NoContent => axum::http::StatusCode::NO_CONTENT,
                            Answer::ServerError => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            Answer::Hang => {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                axum::http::StatusCode::NO_CONTENT
                            }
                        }
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            port,
            answer,
            received,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    async fn await_requests(&self, count: usize, timeout: Duration) -> Vec<Received> {
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

/// Tells `agency` of a status change, as referral intake would.
async fn notify(env: &TestEnv, agency: &str) -> String {
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

async fn register(client: &mut NotificationsServiceClient<Authed>, url: String) -> Webhook {
    client
        .register_webhook(RegisterWebhookRequest { url })
        .await
        .unwrap()
        .into_inner()
        .webhook
        .unwrap()
}

async fn deliveries(
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

/// Lists deliveries until `done` holds for the page (or fails after `timeout`).
async fn await_deliveries(
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

/// Verifies a `webhook-signature` header with Python's own `hmac`, as an
/// agency would: one flag per signature in the header, `1` when it
/// matches `secret`.
async fn python_verifies(secret: &str, received: &Received) -> String {
    let script = r#"
import base64, hashlib, hmac, os, sys
key = base64.b64decode(os.environ["SECRET"].removeprefix("whsec_"))
signed = f"{os.environ['ID']}.{os.environ['TS']}.".encode() + sys.stdin.buffer.read()
expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
print(" ".join("1" if hmac.compare_digest(s, expected) else "0" for s in os.environ["SIG"].split(" ")))
"#;
    let mut child = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("SECRET", secret)
        .env("ID", &received.id)
        .env("TS", &received.timestamp)
        .env("SIG", &received.signature)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use tokio::io::AsyncWriteExt as _;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&received.body).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn start(env: &TestEnv) -> (cpm::Platform, Channel) {
    let platform = env.start(&[Target::NOTIFICATIONS]).await;
    let channel = connect(&platform).await;
    (platform, channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_the_standard_webhooks_way_and_verify_with_python_hmac() {
    let env = TestEnv::new().await;
    let (platform, channel) = start(&env).await;
    let receiver = Receiver::start(Answer::NoContent).await;
    let mut client = NotificationsServiceClient::new(env.referrer(&channel, "agency-signed"));
    let webhook = register(&mut client, receiver.url()).await;
    assert!(webhook.secret.starts_with("whsec_"), "{}", webhook.secret);

    notify(&env, "agency-signed").await;
    let received = receiver.await_requests(1, Duration::from_secs(20)).await;
    let request = &received[0];
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(request.id, body["notification_id"].as_str().unwrap());
    let sent_at: i64 = request.timestamp.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 60);
    assert!(
        request.signature.starts_with("v1,"),
        "{}",
        request.signature
    );
    assert_eq!(python_verifies(&webhook.secret, request).await, "1");
    let mut tampered = request.clone();
    tampered.body.push(b' ');
    assert_eq!(python_verifies(&webhook.secret, &tampered).await, "0");

    // The secret is shown once: listing never shows it.
    let listed = client
        .list_webhooks(ListWebhooksRequest {})
        .await
        .unwrap()
        .into_inner()
        .webhooks;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].secret, "");
    assert!(listed[0].active);

    // The attempt is in the delivery log, and the secret is in no column
    // of the database as such.
    let logged = await_deliveries(
        &mut client,
        ListDeliveriesRequest::default(),
        "the delivery is logged",
        |page| {
            page.first()
                .is_some_and(|d| d.state() == DeliveryState::Delivered)
        },
    )
    .await;
    let attempt = &logged[0].attempt_log[0];
    assert_eq!(
        (
            attempt.channel.as_str(),
            attempt.status_code,
            attempt.error()
        ),
        ("WEBHOOK", 204, DeliveryErrorKind::None)
    );
    let database = env.database().await;
    let dump: String =
        sqlx::query_scalar("SELECT string_agg(w::text, ' ') FROM notifications.webhook w")
            .fetch_one(&database)
            .await
            .unwrap();
    let key_part = webhook.secret.trim_start_matches("whsec_");
    assert!(!dump.contains(key_part));
    database.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_delays_only_its_own_agency() {
    let mut env = TestEnv::new().await;
    env.settings.set("notifications.webhook_timeout_secs", 6);
    let (platform, channel) = start(&env).await;
    let dead = Receiver::start(Answer::Hang).await;
    let healthy = Receiver::start(Answer::NoContent).await;
    let mut dead_agency = NotificationsServiceClient::new(env.referrer(&channel, "agency-dead"));
    let mut healthy_agency =
        NotificationsServiceClient::new(env.referrer(&channel, "agency-healthy"));
    register(&mut dead_agency, dead.url()).await;
    register(&mut healthy_agency, healthy.url()).await;

    // The dead endpoint is being waited on when the healthy one's notice comes.
    notify(&env, "agency-dead").await;
    dead.await_requests(1, Duration::from_secs(20)).await;
    let published = tokio::time::Instant::now();
    notify(&env, "agency-healthy").await;
    let heard = healthy.await_requests(1, Duration::from_secs(20)).await;
    let waited = heard[0].at - published;
    assert!(
        waited < Duration::from_secs(3),
        "the healthy agency waited {waited:?} behind a dead endpoint"
    );
    // Meanwhile the dead endpoint's attempt times out and is logged as such.
    let logged = await_deliveries(
        &mut dead_agency,
        ListDeliveriesRequest::default(),
        "the timeout is logged",
        |page| page.first().is_some_and(|d| !d.attempt_log.is_empty()),
    )
    .await;
    assert_eq!(logged[0].attempt_log[0].error(), DeliveryErrorKind::Timeout);
    assert_eq!(logged[0].state(), DeliveryState::Pending, "retried later");
    assert_eq!(logged[0].last_error, "timed out");
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_failing_past_its_window_is_dead_and_redelivered_once_the_endpoint_recovers() {
    let mut env = TestEnv::new().await;
    env.settings
        .set("notifications.webhook_retry_window_secs", 3);
    env.settings
        .set("notifications.webhook_backoff_base_ms", 300);
    env.settings
        .set("notifications.webhook_backoff_max_secs", 1);
    env.settings
        .set("notifications.webhook_circuit_failures", 100);
    let (platform, channel) = start(&env).await;
    let receiver = Receiver::start(Answer::ServerError).await;
    let mut client = NotificationsServiceClient::new(env.referrer(&channel, "agency-dead-letter"));
    let webhook = register(&mut client, receiver.url()).await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    notify(&env, "agency-dead-letter").await;
    notify(&env, "agency-dead-letter").await;

    let dead_only = ListDeliveriesRequest {
        webhook_id: webhook.webhook_id.clone(),
        states: vec![DeliveryState::Dead as i32],
        ..Default::default()
    };
    let dead = await_deliveries(&mut client, dead_only, "both deliveries are dead", |page| {
        page.len() == 2
    })
    .await;
    for delivery in &dead {
        assert!(delivery.attempts >= 2, "retried: {delivery:?}");
        assert_eq!(delivery.attempt_log.len() as i32, delivery.attempts);
        assert!(
            delivery
                .attempt_log
                .iter()
                .all(|attempt| attempt.status_code == 500
                    && attempt.error() == DeliveryErrorKind::HttpStatus)
        );
        assert_eq!(delivery.last_error, "endpoint answered 500");
    }
    // Nothing more is tried once dead.
    let heard = receiver.received().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), heard);

    receiver.answer(Answer::NoContent);
    let redelivered = client
        .redeliver_deliveries(RedeliverDeliveriesRequest {
            delivery_id: dead[0].delivery_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .redelivered;
    assert_eq!(redelivered, 1);
    let delivered = ListDeliveriesRequest {
        states: vec![DeliveryState::Delivered as i32],
        ..Default::default()
    };
    await_deliveries(
        &mut client,
        delivered.clone(),
        "the redelivery is delivered",
        |page| page.iter().any(|d| d.delivery_id == dead[0].delivery_id),
    )
    .await;
    // The rest of the webhook's dead letters since a time, in one call.
    let redelivered = client
        .redeliver_deliveries(RedeliverDeliveriesRequest {
            webhook_id: webhook.webhook_id.clone(),
            since: Some(cpm_runtime::grpc::values::timestamp(before)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .redelivered;
    assert_eq!(redelivered, 1);
    await_deliveries(&mut client, delivered, "the second is delivered", |page| {
        page.iter().any(|d| d.delivery_id == dead[1].delivery_id)
    })
    .await;
    let delivered_ids: Vec<String> = receiver
        .received()
        .iter()
        .skip(heard)
        .map(|request| request.id.clone())
        .collect();
    assert_eq!(
        delivered_ids.len(),
        2,
        "each sent again once: {delivered_ids:?}"
    );

    // Another agency cannot redeliver or see them.
    let mut stranger = NotificationsServiceClient::new(env.referrer(&channel, "agency-other"));
    let status = stranger
        .redeliver_deliveries(RedeliverDeliveriesRequest {
            delivery_id: dead[0].delivery_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(
        deliveries(&mut stranger, ListDeliveriesRequest::default())
            .await
            .is_empty()
    );
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_rotation_both_signatures_are_sent_and_each_verifies() {
    let mut env = TestEnv::new().await;
    env.settings
        .set("notifications.webhook_secret_overlap_secs", 4);
    let (platform, channel) = start(&env).await;
    let receiver = Receiver::start(Answer::NoContent).await;
    let mut client = NotificationsServiceClient::new(env.referrer(&channel, "agency-rotate"));
    let first = register(&mut client, receiver.url()).await;
    let rotated = client
        .rotate_webhook_secret(RotateWebhookSecretRequest {
            webhook_id: first.webhook_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .webhook
        .unwrap();
    assert!(rotated.secret.starts_with("whsec_"));
    assert_ne!(rotated.secret, first.secret);
    assert!(rotated.previous_secret_until.is_some());

    notify(&env, "agency-rotate").await;
    let during = receiver.await_requests(1, Duration::from_secs(20)).await[0].clone();
    assert_eq!(
        during.signature.split(' ').count(),
        2,
        "{}",
        during.signature
    );
    assert_eq!(python_verifies(&rotated.secret, &during).await, "1 0");
    assert_eq!(python_verifies(&first.secret, &during).await, "0 1");

    // After the overlap only the new secret signs.
    tokio::time::sleep(Duration::from_secs(5)).await;
    notify(&env, "agency-rotate").await;
    let after = receiver.await_requests(2, Duration::from_secs(20)).await[1].clone();
    assert_eq!(python_verifies(&rotated.secret, &after).await, "1");
    assert_eq!(python_verifies(&first.secret, &after).await, "0");

    // Another agency's webhook is not found; a deleted one is gone.
    let mut stranger = NotificationsServiceClient::new(env.referrer(&channel, "agency-other"));
    let status = stranger
        .rotate_webhook_secret(RotateWebhookSecretRequest {
            webhook_id: first.webhook_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let disabled = client
        .disable_webhook(DisableWebhookRequest {
            webhook_id: first.webhook_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .webhook
        .unwrap();
    assert!(!disabled.active);
    notify(&env, "agency-rotate").await;
    client
        .delete_webhook(DeleteWebhookRequest {
            webhook_id: first.webhook_id.clone(),
        })
        .await
        .unwrap();
    let listed = client
        .list_webhooks(ListWebhooksRequest {})
        .await
        .unwrap()
        .into_inner()
        .webhooks;
    assert!(listed.is_empty());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), 2, "nothing posted once disabled");
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_destinations_are_refused_at_registration_with_one_generic_message() {
    let mut env = TestEnv::new().await;
    env.settings
        .set("notifications.webhook_allow_loopback", false);
    env.settings.set(
        "notifications.webhook_allow_hosts",
        toml::Value::Array(vec!["10.9.0.0/16".into()]),
    );
    let (platform, channel) = start(&env).await;
    let mut client = NotificationsServiceClient::new(env.referrer(&channel, "agency-ssrf"));
    let mut messages = Vec::new();
    for url in [
        "http://10.0.0.1/hook",
        "http://192.168.1.20:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:127.0.0.1]:22/",
        "http://100.64.0.1/hook",
        // A name that resolves to loopback.
        "http://localhost:5432/hook",
    ] {
        let status = client
            .register_webhook(RegisterWebhookRequest { url: url.into() })
            .await
            .expect_err(url);
        assert_eq!(violated_fields(&status), ["url"], "{url}");
        let description = {
            use tonic_types::StatusExt as _;
            status.get_details_bad_request().unwrap().field_violations[0]
                .description
                .clone()
        };
        let host = url.split('/').nth(2).unwrap();
        assert!(!description.contains(host), "{url}: {description}");
        assert!(
            !status.message().contains(host),
            "{url}: {}",
            status.message()
        );
        messages.push(description);
    }
    assert!(
        messages[0].contains("is not an allowed destination"),
        "{messages:?}"
    );
    assert!(
        messages.iter().all(|message| *message == messages[0]),
        "one message for every refusal: {messages:?}"
    );
    // The operator's allow-list lets a named range through.
    let allowed = register(&mut client, "http://10.9.0.1/hook".into()).await;
    assert_eq!(allowed.url, "http://10.9.0.1/hook");
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_no_longer_allowed_is_refused_at_connect_time() {
    let mut env = TestEnv::new().await;
    env.settings
        .set("notifications.webhook_allow_loopback", false);
    env.settings.set(
        "notifications.webhook_allow_hosts",
        toml::Value::Array(vec!["localhost".into()]),
    );
    let receiver = Receiver::start(Answer::NoContent).await;
    let (platform, channel) = start(&env).await;
    let mut client = NotificationsServiceClient::new(env.referrer(&channel, "agency-rebind"));
    let url = format!("http://localhost:{}/hook", receiver.port);
    register(&mut client, url).await;
    notify(&env, "agency-rebind").await;
    receiver.await_requests(1, Duration::from_secs(20)).await;
    platform.stop().await.unwrap();

    // The name now leads somewhere the rule refuses (here: the operator
    // took it off the allow-list; DNS rebinding takes the same path, the
    // connection's own resolution).
    env.settings.set(
        "notifications.webhook_allow_hosts",
        toml::Value::Array(vec![]),
    );
    let (platform, channel) = start(&env).await;
    let mut client = NotificationsServiceClient::new(env.referrer(&channel, "agency-rebind"));
    notify(&env, "agency-rebind").await;
    let logged = await_deliveries(
        &mut client,
        ListDeliveriesRequest::default(),
        "the refusal is logged",
        |page| page.len() == 2 && !page[0].attempt_log.is_empty(),
    )
    .await;
    let refused = &logged[0];
    assert_eq!(
        refused.attempt_log[0].error(),
        DeliveryErrorKind::DestinationRefused
    );
    assert_eq!(refused.attempt_log[0].status_code, 0);
    assert!(
        !refused.last_error.contains("127.0.0.1"),
        "{}",
        refused.last_error
    );
    assert!(refused.last_error.contains("is not an allowed destination"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.received().len(), 1, "nothing reached the receiver");
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_secret_survives_a_master_key_rotation() {
    use base64::Engine as _;
    use cpm_runtime::config::Secret;
    let mut env = TestEnv::new().await;
    let receiver = Receiver::start(Answer::NoContent).await;
    let (platform, channel) = start(&env).await;
    let mut client = NotificationsServiceClient::new(env.referrer(&channel, "agency-keys"));
    let webhook = register(&mut client, receiver.url()).await;
    platform.stop().await.unwrap();

    let old_key = env.settings.platform.crypto.master_key.clone();
    let new_key = base64::engine::general_purpose::STANDARD.encode([11u8; 32]);
    env.settings.platform.crypto.master_key = Secret::new(new_key.clone());
    let pool =
        cpm_runtime::db::pool(&env.settings.platform.database, notifications::SCHEMA).unwrap();
    let keys = cpm_runtime::crypto::KeyRing::from_config(&new_key, &[old_key.expose()]).unwrap();
    assert_eq!(
        notifications::signing::rewrap_all(&pool, &keys)
            .await
            .unwrap(),
        (1, 0)
    );
    assert_eq!(
        notifications::signing::rewrap_all(&pool, &keys)
            .await
            .unwrap(),
        (0, 1)
    );
    pool.close().await;

    // The old key retired: the secret still opens and signs.
    let (platform, _channel) = start(&env).await;
    notify(&env, "agency-keys").await;
    let received = receiver.await_requests(1, Duration::from_secs(20)).await;
    assert_eq!(python_verifies(&webhook.secret, &received[0]).await, "1");
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_has_its_circuit_opened_and_is_probed_after_the_cooldown() {
    let mut env = TestEnv::new().await;
    env.settings
        .set("notifications.webhook_circuit_failures", 2);
    env.settings
        .set("notifications.webhook_circuit_cooldown_secs", 3);
    env.settings
        .set("notifications.webhook_backoff_base_ms", 100);
    env.settings
        .set("notifications.webhook_backoff_max_secs", 1);
    let (platform, channel) = start(&env).await;
    let receiver = Receiver::start(Answer::ServerError).await;
    let mut client = NotificationsServiceClient::new(env.referrer(&channel, "agency-breaker"));
    register(&mut client, receiver.url()).await;
    for _ in 0..3 {
        notify(&env, "agency-breaker").await;
    }
    receiver.await_requests(2, Duration::from_secs(20)).await;
    let webhooks = client
        .list_webhooks(ListWebhooksRequest {})
        .await
        .unwrap()
        .into_inner()
        .webhooks;
    assert!(webhooks[0].circuit_open_until.is_some(), "{webhooks:?}");
    // Open: nothing is tried, though retries are due every second at most.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), 2, "no attempt while open");
    // After the cool-down one probe; it succeeds and the rest follow.
    receiver.answer(Answer::NoContent);
    let delivered = await_deliveries(
        &mut client,
        ListDeliveriesRequest {
            states: vec![DeliveryState::Delivered as i32],
            ..Default::default()
        },
        "every delivery is delivered",
        |page| page.len() == 3,
    )
    .await;
    let attempts: i32 = delivered.iter().map(|d| d.attempts).sum();
    assert_eq!(
        attempts, 5,
        "two failures, then one post each: {delivered:?}"
    );
    let webhooks = client
        .list_webhooks(ListWebhooksRequest {})
        .await
        .unwrap()
        .into_inner()
        .webhooks;
    assert!(webhooks[0].circuit_open_until.is_none());
    platform.stop().await.unwrap();
    env.cleanup().await;
}
