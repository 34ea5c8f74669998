//! Work in proportion to the request, over real gRPC: an oversized message
//! is refused by every service before it is decoded, a flood of list
//! entries costs one violation, and text with hidden characters (NUL
//! included) is a field violation rather than an internal error. What an
//! agency may hold is capped: open notification streams and registered
//! webhooks (RESOURCE_EXHAUSTED naming the cap), and a delivery's attempt
//! log shows its latest attempts only.

use std::time::Duration;

use cpm::registry::Target;
use cpm_proto::v1::notifications_service_client::NotificationsServiceClient;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_proto::v1::{
    DeleteWebhookRequest, DeliveryErrorKind, DeliveryState, ListDeliveriesRequest,
    ListWebhooksRequest, RegisterWebhookRequest, SubscribeRequest, SubscribeResponse,
};
use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::{Code, Request};
use tonic_prost::ProstCodec;

use crate::harness::{Authed, TestEnv, connect, referral_request, violated_fields};
use crate::killable::Killable;
use crate::webhook_receiver::{Answer, Receiver, await_deliveries, deliveries, notify, register};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_flooded_and_hidden_inputs_are_refused_cheaply_and_clearly() {
    let env = TestEnv::new().await;
    let platform = env.start_all().await;
    let channel = connect(&platform).await;

    // Every service: a message over grpc.max_request_bytes is not decoded.
    let limit = env.settings.platform.grpc.max_request_bytes;
    for target in Target::ALL {
        let service = target.service();
        let method = service
            .access()
            .methods()
            .find(|method| *method != "Subscribe")
            .unwrap();
        let role = service.access().roles_for(method).unwrap()[0];
        let token = env.token("someone", role, Some("agency-limits"), Some("m-1"));
        let mut grpc = Grpc::new(cpm::client::authed(&channel, &token).unwrap());
        grpc.ready().await.unwrap();
        let path = PathAndQuery::try_from(format!("/{}/{method}", service.grpc_name())).unwrap();
        // A string in field 1: any message decodes it, were it small enough.
        let status = grpc
            .unary::<String, (), _>(
                Request::new("x".repeat(limit + 1)),
                path,
                ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{method}: {status:?}"
        );
    }

    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-limits"));
    let mut flooded = referral_request("Limits");
    flooded.vulnerabilities = vec![999; 50_000];
    let status = intake.submit_referral(flooded).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["vulnerabilities"]);
    assert!(status.message().len() < 200, "{}", status.message());

    let mut hidden = referral_request("Limits");
    hidden.reason = "calls 999\0nightly".into();
    hidden.desired_outcomes = "a \u{202E}enituor".into();
    let status = intake.submit_referral(hidden).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["reason", "desired_outcomes"]);

    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// Opens a stream for `client`'s agency.
async fn subscribe(
    client: &mut NotificationsServiceClient<Authed>,
) -> Result<tonic::Streaming<SubscribeResponse>, tonic::Status> {
    client
        .subscribe(SubscribeRequest::default())
        .await
        .map(tonic::Response::into_inner)
}

/// Fails unless the agency is refused another stream for being at its cap.
async fn assert_at_cap(client: &mut NotificationsServiceClient<Authed>) {
    let refused = subscribe(client).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
}

/// Opens a stream once a slot is free again (it frees as the server
/// notices the client left).
async fn subscribe_when_free(
    client: &mut NotificationsServiceClient<Authed>,
) -> tonic::Streaming<SubscribeResponse> {
    subscribe_within(client, Duration::from_secs(5)).await
}

/// Opens a stream once a slot is free again, waiting at most `wait`.
async fn subscribe_within(
    client: &mut NotificationsServiceClient<Authed>,
    wait: Duration,
) -> tonic::Streaming<SubscribeResponse> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match subscribe(client).await {
            Ok(stream) => return stream,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slot was never freed"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_holds_at_most_its_cap_of_streams_and_a_client_that_leaves_frees_its_slot() {
    let mut env = TestEnv::new().await;
    env.settings.set("notifications.max_streams_per_agency", 3);
    let platform = env.start(&[Target::NOTIFICATIONS]).await;
    let agency = "agency-streams";
    // One client on a connection of its own, to be dropped whole.
    let lone_channel = connect(&platform).await;
    let mut lone = NotificationsServiceClient::new(env.referrer(&lone_channel, agency));
    let lone_stream = subscribe(&mut lone).await.unwrap();
    let channel = connect(&platform).await;
    let mut client = NotificationsServiceClient::new(env.referrer(&channel, agency));
    let mut open = vec![
        subscribe(&mut client).await.unwrap(),
        subscribe(&mut client).await.unwrap(),
    ];

    let refused = subscribe(&mut client).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("already has 3 notification streams open")
            && refused.message().contains("max_streams_per_agency"),
        "{}",
        refused.message()
    );
    // Another agency has slots of its own.
    let mut other = NotificationsServiceClient::new(env.referrer(&channel, "agency-streams-2"));
    let _other_stream = subscribe(&mut other).await.unwrap();

    // A stream its client dropped frees its slot, and only one.
    drop(open.pop());
    open.push(subscribe_when_free(&mut client).await);
    assert_at_cap(&mut client).await;
    // So does a client whose connection went.
    drop((lone_stream, lone, lone_channel));
    open.push(subscribe_when_free(&mut client).await);
    assert_at_cap(&mut client).await;
    drop(open);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// Each replica used to count streams in memory, so N replicas allowed N
/// times the cap. Streams held through one replica now count on every
/// other, and a killed replica's stop counting once their lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agencys_stream_cap_holds_across_replicas_and_a_killed_replicas_streams_expire() {
    let mut env = TestEnv::new().await;
    env.settings.set("notifications.max_streams_per_agency", 3);
    let agency = "agency-replicas";
    let replica = env.start(&[Target::NOTIFICATIONS]).await;
    let settings = env.settings.clone();
    let doomed =
        tokio::task::spawn_blocking(move || Killable::start(settings, vec![Target::NOTIFICATIONS]))
            .await
            .unwrap();
    let channel = connect(&replica).await;
    let mut on_replica = NotificationsServiceClient::new(env.referrer(&channel, agency));
    let doomed_channel = cpm::client::connect(&doomed.endpoint).await.unwrap();
    let mut on_doomed = NotificationsServiceClient::new(env.referrer(&doomed_channel, agency));
    let mut held_here = vec![subscribe(&mut on_replica).await.unwrap()];
    let mut held_there = vec![
        subscribe(&mut on_doomed).await.unwrap(),
        subscribe(&mut on_doomed).await.unwrap(),
    ];

    // Three open between the two: neither replica opens a fourth.
    assert_at_cap(&mut on_replica).await;
    assert_at_cap(&mut on_doomed).await;
    // A stream closed through one replica frees a place on the other.
    drop(held_here.pop());
    held_there.push(subscribe_when_free(&mut on_doomed).await);
    assert_at_cap(&mut on_replica).await;

    // The killed replica cannot end its streams' leases; they expire.
    tokio::task::spawn_blocking(move || doomed.kill())
        .await
        .unwrap();
    let killed = tokio::time::Instant::now();
    drop((held_there, on_doomed, doomed_channel));
    // The killed replica's streams count until their lease ends.
    assert_at_cap(&mut on_replica).await;
    let lease = notifications::stream_leases::LEASE;
    held_here.push(subscribe_within(&mut on_replica, lease + Duration::from_secs(15)).await);
    let freed = killed.elapsed();
    assert!(freed <= lease + Duration::from_secs(15), "{freed:?}");
    // Each lease was last renewed at its own time, within one renewal.
    for _ in 0..2 {
        held_here.push(subscribe_within(&mut on_replica, Duration::from_secs(15)).await);
    }
    assert_at_cap(&mut on_replica).await;
    drop(held_here);
    replica.stop().await.unwrap();
    env.cleanup().await;
}

/// The URLs of the agency's webhooks, sorted.
async fn webhook_urls(client: &mut NotificationsServiceClient<Authed>) -> Vec<String> {
    let mut urls: Vec<String> = client
        .list_webhooks(ListWebhooksRequest {})
        .await
        .unwrap()
        .into_inner()
        .webhooks
        .into_iter()
        .map(|webhook| webhook.url)
        .collect();
    urls.sort();
    urls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_registers_at_most_its_cap_of_webhooks_and_deleted_ones_do_not_count() {
    let mut env = TestEnv::new().await;
    env.settings.set("notifications.max_webhooks_per_agency", 3);
    let platform = env.start(&[Target::NOTIFICATIONS]).await;
    let channel = connect(&platform).await;
    let mut client = NotificationsServiceClient::new(env.referrer(&channel, "agency-hooks"));
    let url = |n: usize| format!("http://127.0.0.1:9/hook-{n}");
    let mut registered = Vec::new();
    for n in 0..3 {
        registered.push(register(&mut client, url(n)).await.webhook_id);
    }

    let refused = client
        .register_webhook(RegisterWebhookRequest { url: url(3) })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("the most allowed is 3")
            && refused.message().contains("max_webhooks_per_agency"),
        "{}",
        refused.message()
    );
    assert_eq!(
        webhook_urls(&mut client).await,
        [url(0), url(1), url(2)],
        "nothing registered"
    );
    // One of its URLs again adds none, so it is allowed.
    register(&mut client, url(0)).await;
    // A deleted webhook does not count.
    client
        .delete_webhook(DeleteWebhookRequest {
            webhook_id: registered[1].clone(),
        })
        .await
        .unwrap();
    register(&mut client, url(3)).await;
    assert_eq!(webhook_urls(&mut client).await, [url(0), url(2), url(3)]);

    // Registrations at once cannot pass the cap together.
    let other = NotificationsServiceClient::new(env.referrer(&channel, "agency-hooks-2"));
    let attempts = (0..6).map(|n| {
        let mut client = other.clone();
        async move {
            client
                .register_webhook(RegisterWebhookRequest { url: url(n) })
                .await
        }
    });
    let outcomes = futures::future::join_all(attempts).await;
    let accepted = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    assert_eq!(accepted, 3, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|outcome| outcome
            .as_ref()
            .map_or_else(|status| status.code() == Code::ResourceExhausted, |_| true)),
        "{outcomes:?}"
    );
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_long_retried_shows_its_latest_attempts_only() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::NOTIFICATIONS]).await;
    let channel = connect(&platform).await;
    let receiver = Receiver::start(Answer::NoContent).await;
    let mut client = NotificationsServiceClient::new(env.referrer(&channel, "agency-retried"));
    register(&mut client, receiver.url()).await;
    notify(&env, "agency-retried").await;
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
    // As if it had failed 80 times over the day before.
    let database = env.database().await;
    sqlx::query(
        "INSERT INTO notifications.delivery_attempt \
         SELECT gen_random_uuid(), $1::uuid, now() - n * interval '15 minutes', 'WEBHOOK', 500, 3, \
                $2 FROM generate_series(1, 80) AS n",
    )
    .bind(&delivered[0].delivery_id)
    .bind(DeliveryErrorKind::HttpStatus as i32)
    .execute(&database)
    .await
    .unwrap();
    database.close().await;

    let logged = deliveries(&mut client, ListDeliveriesRequest::default()).await;
    let log = &logged[0].attempt_log;
    assert_eq!(
        log.len() as i64,
        notifications::webhook_admin::MAX_ATTEMPTS_SHOWN
    );
    assert_eq!(log.last().unwrap().status_code, 204, "the latest last");
    let oldest_shown = log[0].attempted_at.unwrap().seconds;
    let cutoff = chrono::Utc::now().timestamp() - 50 * 15 * 60 - 60;
    assert!(oldest_shown > cutoff, "the oldest are left out");
    platform.stop().await.unwrap();
    env.cleanup().await;
}
