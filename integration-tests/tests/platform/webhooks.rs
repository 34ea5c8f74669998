//! Webhooks as receivers expect them, against real HTTP receivers started
//! by the tests: Standard Webhooks signatures (checked independently with
//! Python's `hmac`), a dead endpoint that delays only itself, dead letters
//! and redelivery, secret rotation with an overlap, and destinations
//! refused at registration and at connect time. Once per subscriber
//! (#14 item 8): a sink failing a few times, a sink down for minutes, a slow
//! sink beside a healthy one and a platform killed between posts each get
//! every notification confirmed once, under one ID.

use std::time::Duration;

use cpm::Target;
use cpm_proto::v1::notifications_service_client::NotificationsServiceClient;
use cpm_proto::v1::{
    DeleteWebhookRequest, DeliveryErrorKind, DeliveryState, DisableWebhookRequest,
    ListDeliveriesRequest, ListWebhooksRequest, RedeliverDeliveriesRequest, RegisterWebhookRequest,
    RotateWebhookSecretRequest,
};
use tonic::transport::Channel;

use crate::harness::{TestEnv, connect, violated_fields};
use crate::killable::Killable;
use crate::webhook_receiver::{
    Answer, Received, Receiver, await_deliveries, closed_port, deliveries, notify, register, url_on,
};

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

/// Tells `agency` of `count` status changes one after another, each once
/// the last was heard at `receiver`, and returns how long each took to
/// arrive.
async fn waits_for_notices(
    env: &TestEnv,
    agency: &str,
    receiver: &Receiver,
    count: usize,
) -> Vec<Duration> {
    let mut waits = Vec::new();
    let before = receiver.received().len();
    for heard in before + 1..=before + count {
        let published = tokio::time::Instant::now();
        notify(env, agency).await;
        let received = receiver
            .await_requests(heard, Duration::from_secs(60))
            .await;
        waits.push(received[heard - 1].at - published);
    }
    waits
}

/// Found by the end-to-end bench (pg_stat_statements at 50 referrals a
/// second): one busy endpoint was released after each short batch and
/// claimed again for the notices that came in while it was posted to, a
/// claim for every one or two notices. A claim whose posts go well now
/// serves what became due meanwhile, under the same lease, for up to half
/// the slow mark, and a wake-up for an agency whose every webhook the
/// worker already holds makes no claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_endpoint_is_served_by_one_claim_not_one_per_notice() {
    const NOTICES: usize = 24;
    let mut env = TestEnv::new().await;
    // A drain of up to 6 s, so the whole burst fits in one claim.
    env.settings.set("notifications.webhook_timeout_secs", 15);
    env.settings.set("notifications.webhook_slow_ms", 12_000);
    // Only wake-ups and ended tasks make claims here, not the poll.
    env.settings
        .set("notifications.webhook_poll_interval_ms", 30_000);
    let mut settings = env.settings.clone();
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", crate::processes::free_port())
        .parse()
        .unwrap();
    settings.platform.telemetry.metrics_listen = metrics.to_string();
    let mut process =
        crate::processes::CpmProcess::serve_with(settings, &[Target::NOTIFICATIONS]).await;
    let channel = cpm::client::connect(&process.endpoint).await.unwrap();
    // Each post takes 150 ms and a notice comes every 30 ms or so: several
    // are due whenever a post ends.
    let receiver = Receiver::start(Answer::Slow(Duration::from_millis(150))).await;
    let mut agency = NotificationsServiceClient::new(env.referrer(&channel, "agency-busy"));
    register(&mut agency, receiver.url()).await;
    for _ in 0..NOTICES {
        notify(&env, "agency-busy").await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    receiver
        .await_requests(NOTICES, Duration::from_secs(60))
        .await;
    let scraped = crate::metrics::scrape(metrics).await;
    let claimed = crate::metrics::value(&scraped, "cpm_webhook_claims_total{outcome=\"claimed\"}");
    let empty = crate::metrics::value(&scraped, "cpm_webhook_claims_total{outcome=\"empty\"}");
    // Released after each batch, it took a claim for every batch of the
    // notices due then (about five a post): five or more claims.
    assert!(
        (1.0..=3.0).contains(&claimed),
        "{NOTICES} notices to one busy endpoint took {claimed} claims"
    );
    // Each notice's wake-up claimed too, and found the endpoint held: one
    // empty claim a notice. The worker holding the agency's only webhook
    // now leaves those to the task that holds it.
    assert!(
        empty <= 4.0,
        "{NOTICES} notices to one busy endpoint made {empty} claims that found nothing"
    );
    process.assert_no_panic();
    process.terminate(Duration::from_secs(30)).await;
    env.cleanup().await;
}

/// A busy endpoint (one agency's, at 100 referrals a second, takes about
/// 200 notices a second) had each post recorded in a transaction of its own
/// (six round trips). A run of posts to one endpoint is now recorded in one.
/// The first post is held until every delivery is due, so the runs do not
/// depend on how fast this machine tells the notices. Each attempt row's
/// `xmin` names the transaction that wrote it: one a post before, a few for
/// the whole queue now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_endpoint_s_posts_are_recorded_a_run_at_a_time_not_one_a_post() {
    const NOTICES: usize = 24;
    let mut env = TestEnv::new().await;
    // The first post is held while the rest are told: room for a slow machine.
    env.settings.set("notifications.webhook_timeout_secs", 60);
    let (platform, channel) = start(&env).await;
    let receiver = Receiver::start(Answer::NoContent).await;
    let held = receiver.hold().await;
    let mut agency = NotificationsServiceClient::new(env.referrer(&channel, "agency-runs"));
    register(&mut agency, receiver.url()).await;
    let mut sent = Vec::new();
    for _ in 0..NOTICES {
        sent.push(notify(&env, "agency-runs").await);
    }
    let database = env.database().await;
    let count = |sql: &'static str| {
        let database = database.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&database)
                .await
                .unwrap()
        }
    };
    // Every delivery is due while the endpoint answers nothing: a busy
    // endpoint's queue, whatever this machine's pace.
    crate::harness::eventually(
        Duration::from_secs(30),
        "every notice has its delivery",
        || async { count("SELECT count(*) FROM notifications.delivery").await == NOTICES as i64 },
    )
    .await;
    drop(held);
    let received = receiver
        .await_requests(NOTICES, Duration::from_secs(60))
        .await;
    assert_eq!(referrals_in(&received), sent, "posted in the order told");
    crate::harness::eventually(
        Duration::from_secs(20),
        "every post is recorded",
        || async {
            count("SELECT count(*) FROM notifications.delivery WHERE state = 2").await
                == NOTICES as i64
        },
    )
    .await;
    let (attempts, transactions): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT xmin::text) FROM notifications.delivery_attempt",
    )
    .fetch_one(&database)
    .await
    .unwrap();
    assert_eq!(attempts, NOTICES as i64, "one attempt a notice");
    assert!(
        transactions <= NOTICES as i64 / 3,
        "{NOTICES} posts to one busy endpoint were recorded in {transactions} transactions"
    );
    database.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// Found by the fan-out bench: 5% of 1,000 endpoints hanging held most of
/// the worker's slots, so a hanging endpoint delayed everyone once there
/// were more of them than slots. Endpoints whose last attempt failed are
/// now posted to in a lane of their own, and a first post to an endpoint
/// not yet known to hang gives its prompt slot up once it is slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_hanging_in_numbers_delay_only_each_other() {
    const HANGING: usize = 12;
    let mut env = TestEnv::new().await;
    env.settings.set("notifications.webhook_timeout_secs", 6);
    env.settings.set("notifications.webhook_slow_ms", 500);
    // Four prompt slots, one suspect slot: three hanging endpoints a slot.
    env.settings.set("notifications.webhook_concurrency", 4);
    quick_retries(&mut env);
    let (platform, channel) = start(&env).await;
    let healthy = Receiver::start(Answer::NoContent).await;
    let mut healthy_agency =
        NotificationsServiceClient::new(env.referrer(&channel, "agency-beside-hung"));
    register(&mut healthy_agency, healthy.url()).await;
    let mut hanging = Vec::new();
    for n in 0..HANGING {
        let agency = format!("agency-hung-{n}");
        let receiver = Receiver::start(Answer::Hang).await;
        let mut client = NotificationsServiceClient::new(env.referrer(&channel, &agency));
        register(&mut client, receiver.url()).await;
        notify(&env, &agency).await;
        hanging.push((client, receiver));
    }
    // Never tried before, the twelve take the prompt lane's four slots for
    // the slow mark each, not for the whole timeout.
    let cold = waits_for_notices(&env, "agency-beside-hung", &healthy, 1).await;
    assert!(
        cold[0] < Duration::from_secs(3),
        "the healthy agency waited {cold:?} behind {HANGING} endpoints never tried before"
    );
    // Every hanging endpoint has timed out once; they are retried within a
    // second of each failure, so each is due again at once.
    for (client, _) in &mut hanging {
        let logged = await_deliveries(
            client,
            ListDeliveriesRequest::default(),
            "the hanging endpoint's first attempt times out",
            |page| page.first().is_some_and(|d| !d.attempt_log.is_empty()),
        )
        .await;
        assert_eq!(logged[0].attempt_log[0].error(), DeliveryErrorKind::Timeout);
    }
    let tried = |hanging: &[(_, Receiver)]| -> usize {
        hanging
            .iter()
            .map(|(_, receiver)| receiver.received().len())
            .sum()
    };
    let tried_before = tried(&hanging);

    let waits = waits_for_notices(&env, "agency-beside-hung", &healthy, 3).await;
    assert!(
        waits.iter().all(|wait| *wait < Duration::from_secs(2)),
        "the healthy agency waited {waits:?} behind {HANGING} hanging endpoints"
    );
    // The hanging ones are still tried, in their own lane.
    crate::harness::eventually(
        Duration::from_secs(20),
        "hanging endpoints are still retried",
        || async { tried(&hanging) >= tried_before + 2 },
    )
    .await;
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

/// Retries that come quickly: any retry a test must not see would show.
fn quick_retries(env: &mut TestEnv) {
    env.settings
        .set("notifications.webhook_backoff_base_ms", 200);
    env.settings
        .set("notifications.webhook_backoff_max_secs", 1);
    env.settings
        .set("notifications.webhook_circuit_failures", 100);
}

/// The referral IDs in what a receiver got, in order.
fn referrals_in(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|request| {
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            assert_eq!(request.id, body["notification_id"].as_str().unwrap());
            body["referral_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_failing_three_times_is_sent_the_notice_until_it_answers_and_never_after() {
    let mut env = TestEnv::new().await;
    quick_retries(&mut env);
    let (platform, channel) = start(&env).await;
    let receiver = Receiver::start(Answer::FailTimes(3)).await;
    let mut client = NotificationsServiceClient::new(env.referrer(&channel, "agency-flaky"));
    register(&mut client, receiver.url()).await;
    let referral_id = notify(&env, "agency-flaky").await;

    receiver.await_requests(4, Duration::from_secs(30)).await;
    await_deliveries(
        &mut client,
        ListDeliveriesRequest::default(),
        "the fourth post is confirmed",
        |page| {
            page.first()
                .is_some_and(|d| d.state() == DeliveryState::Delivered)
        },
    )
    .await;
    // Several of the longest pauses later, nothing more was sent.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let received = receiver.received();
    assert_eq!(referrals_in(&received), vec![referral_id; 4]);
    assert!(
        received.iter().all(|request| request.id == received[0].id),
        "one webhook-id on every attempt: {received:?}"
    );
    let logged = deliveries(&mut client, ListDeliveriesRequest::default()).await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    let delivery = &logged[0];
    assert_eq!(delivery.notification_id, received[0].id);
    assert_eq!(delivery.attempts, 4);
    let answers: Vec<(i32, DeliveryErrorKind)> = delivery
        .attempt_log
        .iter()
        .map(|attempt| (attempt.status_code, attempt.error()))
        .collect();
    assert_eq!(
        answers,
        [
            (500, DeliveryErrorKind::HttpStatus),
            (500, DeliveryErrorKind::HttpStatus),
            (500, DeliveryErrorKind::HttpStatus),
            (204, DeliveryErrorKind::None),
        ]
    );
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_down_for_three_minutes_is_sent_the_notice_once_when_it_is_back() {
    let mut env = TestEnv::new().await;
    env.settings
        .set("notifications.webhook_backoff_base_ms", 1000);
    env.settings
        .set("notifications.webhook_backoff_max_secs", 5);
    env.settings
        .set("notifications.webhook_circuit_cooldown_secs", 10);
    let (platform, channel) = start(&env).await;
    // Nothing listens on the port: every connection is refused.
    let port = closed_port().await;
    let mut client = NotificationsServiceClient::new(env.referrer(&channel, "agency-down"));
    register(&mut client, url_on(port)).await;
    let down = tokio::time::Instant::now();
    let referral_id = notify(&env, "agency-down").await;
    let failing = await_deliveries(
        &mut client,
        ListDeliveriesRequest::default(),
        "refused connections are retried",
        |page| page.first().is_some_and(|d| d.attempt_log.len() >= 2),
    )
    .await;
    assert!(
        failing[0]
            .attempt_log
            .iter()
            .all(|attempt| attempt.error() == DeliveryErrorKind::Connection),
        "{failing:?}"
    );

    tokio::time::sleep_until(down + Duration::from_secs(180)).await;
    let during = deliveries(&mut client, ListDeliveriesRequest::default()).await;
    assert_eq!(during[0].state(), DeliveryState::Pending, "{during:?}");
    assert!(during[0].attempts >= 5, "kept trying: {during:?}");

    let receiver = Receiver::start_on(port, Answer::NoContent).await;
    receiver.await_requests(1, Duration::from_secs(30)).await;
    let delivered = await_deliveries(
        &mut client,
        ListDeliveriesRequest::default(),
        "the delivery is confirmed",
        |page| {
            page.first()
                .is_some_and(|d| d.state() == DeliveryState::Delivered)
        },
    )
    .await;
    // Longer than the longest pause and the cool-down: nothing more.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let received = receiver.received();
    assert_eq!(referrals_in(&received), [referral_id]);
    assert_eq!(received[0].id, delivered[0].notification_id);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_taking_thirty_seconds_is_posted_once_while_a_healthy_one_hears_promptly() {
    let mut env = TestEnv::new().await;
    env.settings.set("notifications.webhook_timeout_secs", 40);
    quick_retries(&mut env);
    let (platform, channel) = start(&env).await;
    let slow = Receiver::start(Answer::Slow(Duration::from_secs(30))).await;
    let healthy = Receiver::start(Answer::NoContent).await;
    let mut slow_agency = NotificationsServiceClient::new(env.referrer(&channel, "agency-slow"));
    let mut healthy_agency =
        NotificationsServiceClient::new(env.referrer(&channel, "agency-prompt"));
    register(&mut slow_agency, slow.url()).await;
    register(&mut healthy_agency, healthy.url()).await;

    let slow_referral = notify(&env, "agency-slow").await;
    let posted = slow.await_requests(1, Duration::from_secs(20)).await[0].at;
    let waits = waits_for_notices(&env, "agency-prompt", &healthy, 3).await;
    assert!(
        waits.iter().all(|wait| *wait < Duration::from_secs(3)),
        "the healthy agency waited {waits:?} beside a slow endpoint"
    );
    assert!(
        posted.elapsed() < Duration::from_secs(30),
        "heard while the slow post was open"
    );

    tokio::time::sleep_until(posted + Duration::from_secs(30)).await;
    let logged = await_deliveries(
        &mut slow_agency,
        ListDeliveriesRequest::default(),
        "the slow post is confirmed",
        |page| {
            page.first()
                .is_some_and(|d| d.state() == DeliveryState::Delivered)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        referrals_in(&slow.received()),
        [slow_referral],
        "no second post while the first was open"
    );
    assert_eq!(logged[0].attempts, 1, "{logged:?}");
    let attempt = &logged[0].attempt_log[0];
    assert_eq!(attempt.status_code, 204);
    assert!(attempt.latency_ms >= 30_000, "{attempt:?}");
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_killed_between_posts_sends_nothing_twice() {
    let env = TestEnv::new().await;
    let receiver = Receiver::start(Answer::NoContent).await;
    let settings = env.settings.clone();
    let killable =
        tokio::task::spawn_blocking(move || Killable::start(settings, vec![Target::NOTIFICATIONS]))
            .await
            .unwrap();
    let channel = cpm::client::connect(&killable.endpoint).await.unwrap();
    let mut client = NotificationsServiceClient::new(env.referrer(&channel, "agency-killed"));
    register(&mut client, receiver.url()).await;
    let before = notify(&env, "agency-killed").await;
    receiver.await_requests(1, Duration::from_secs(20)).await;
    await_deliveries(
        &mut client,
        ListDeliveriesRequest::default(),
        "the first post is confirmed",
        |page| {
            page.first()
                .is_some_and(|d| d.state() == DeliveryState::Delivered)
        },
    )
    .await;
    drop((client, channel));
    tokio::task::spawn_blocking(move || killable.kill())
        .await
        .unwrap();

    // Told while the platform is down, and after it is back.
    let while_down = notify(&env, "agency-killed").await;
    let (platform, _channel) = start(&env).await;
    receiver.await_requests(2, Duration::from_secs(30)).await;
    let after = notify(&env, "agency-killed").await;
    receiver.await_requests(3, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        referrals_in(&receiver.received()),
        [before, while_down, after],
        "each notice posted once"
    );
    platform.stop().await.unwrap();
    env.cleanup().await;
}
