//! The agency feed: every notification is published to `<ns>.agency-feed`
//! with the routing key `agency.<agency>.<kind>`, and the RabbitMQ
//! permissions docs/operations.md gives an agency keep it to its own keys.

use std::time::Duration;

use cpm::Target;
use cpm_proto::Event as _;
use cpm_proto::v1::{DischargeFeedback, DischargeOutcome, ReferralStatus, ReferralStatusChanged};
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use prost::Message as _;

use crate::bus::{Tap, publish_raw};
use crate::harness::{TestEnv, eventually};
use crate::private_broker::PrivateRabbit;

async fn status_changed(env: &TestEnv, agency_id: &str, status: ReferralStatus) -> String {
    let referral_id = uuid::Uuid::now_v7().to_string();
    let event = ReferralStatusChanged {
        referral_id: referral_id.clone(),
        agency_id: agency_id.into(),
        status: status as i32,
        stage: if status == ReferralStatus::NotTakenOn {
            cpm_proto::v1::NonEngagementStage::HomeVisit as i32
        } else {
            0
        },
        reason: if status == ReferralStatus::NotTakenOn {
            cpm_proto::v1::NonEngagementReason::RiskToVolunteers as i32
        } else {
            0
        },
        estimated_start: (status == ReferralStatus::AwaitingMentors).then_some(
            prost_types::Timestamp {
                seconds: 1_796_860_800, // 2026-12-10
                nanos: 0,
            },
        ),
        estimated_start_latest: (status == ReferralStatus::AwaitingMentors).then_some(
            prost_types::Timestamp {
                seconds: 1_798_675_200, // 2026-12-31
                nanos: 0,
            },
        ),
        feedback: (status == ReferralStatus::Discharged).then(|| DischargeFeedback {
            referral_id: referral_id.clone(),
            contacts: 31,
            outcome: DischargeOutcome::GoalsAchieved as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let envelope = cpm_runtime::bus::outbox::envelope("referral-intake", &event);
    publish_raw(env, ReferralStatusChanged::TYPE, &envelope.encode_to_vec()).await;
    referral_id
}

/// An agency's queue bound to its own keys receives its notifications, as
/// JSON with the notification's ID, and nothing of another agency's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agency_reads_its_own_notifications_from_the_feed() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::NOTIFICATIONS]).await;
    let tap = Tap::on_exchange(
        &env,
        "agency-feed",
        &["agency.agency-feed-a.#", "agency.agency-feed-c.#"],
    )
    .await;
    // Agency c took the feed out of its preferences.
    let mut admin = cpm_proto::v1::notifications_service_client::NotificationsServiceClient::new(
        cpm::client::authed(
            &crate::harness::connect(&platform).await,
            &env.token("admin", cpm_runtime::auth::Role::Admin, None, None),
        )
        .unwrap(),
    );
    admin
        .set_notification_preferences(cpm_proto::v1::SetNotificationPreferencesRequest {
            scope: cpm_proto::v1::PreferenceScope::Agency as i32,
            agency_id: "agency-feed-c".into(),
            kinds: vec![
                cpm_proto::v1::NotificationKind::StatusChanged as i32,
                cpm_proto::v1::NotificationKind::Discharged as i32,
            ],
            channels: vec![cpm_proto::v1::NotificationChannel::Stream as i32],
            email_addresses: vec![],
        })
        .await
        .unwrap();

    let accepted = status_changed(&env, "agency-feed-a", ReferralStatus::AwaitingMentors).await;
    status_changed(&env, "agency-feed-b", ReferralStatus::Accepted).await;
    let discharged = status_changed(&env, "agency-feed-a", ReferralStatus::Discharged).await;
    let not_taken_on = status_changed(&env, "agency-feed-a", ReferralStatus::NotTakenOn).await;
    status_changed(&env, "agency-feed-c", ReferralStatus::Accepted).await;

    let pool = env.database().await;
    eventually(
        Duration::from_secs(20),
        "all four are written, three fed",
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_as::<_, (i64, i64)>(
                    "SELECT count(*), count(fed_at) FROM notifications.notification",
                )
                .fetch_one(&pool)
                .await
                .unwrap()
                    == (5, 4)
            }
        },
    )
    .await;
    let mut received = Vec::new();
    for message in tap.drain().await {
        let body: serde_json::Value = serde_json::from_slice(&message.delivery.data).unwrap();
        let message_id = message
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(ToString::to_string);
        assert_eq!(
            message_id.as_deref(),
            body["notification_id"].as_str(),
            "deduplicate by message_id"
        );
        received.push((message.delivery.routing_key.to_string(), body));
    }
    assert_eq!(received.len(), 3, "{received:?}");
    assert_eq!(received[0].0, "agency.agency-feed-a.status_changed");
    assert_eq!(received[0].1["referral_id"], accepted.as_str());
    assert_eq!(received[0].1["status"], "REFERRAL_STATUS_AWAITING_MENTORS");
    assert_eq!(received[0].1["estimated_start"], "2026-12-10");
    assert_eq!(received[0].1["estimated_start_latest"], "2026-12-31");
    assert_eq!(received[2].1["referral_id"], not_taken_on.as_str());
    assert_eq!(received[2].1["stage"], "NON_ENGAGEMENT_STAGE_HOME_VISIT");
    assert_eq!(
        received[2].1["reason"],
        "NON_ENGAGEMENT_REASON_RISK_TO_VOLUNTEERS"
    );
    assert_eq!(received[1].0, "agency.agency-feed-a.discharged");
    assert_eq!(received[1].1["referral_id"], discharged.as_str());
    assert_eq!(received[1].1["feedback"]["contacts"], 31);
    tap.close().await;
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// The permissions docs/operations.md gives an agency's RabbitMQ user let
/// it bind its queue to its own keys and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agencys_broker_user_binds_only_its_own_keys() {
    let rabbit = PrivateRabbit::start();
    let exchange = "cpm.agency-feed";
    // As the platform declares it.
    let admin = lapin::Connection::connect(&rabbit.url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = admin.create_channel().await.unwrap();
    cpm_runtime::bus::topology::Topology::new("cpm", 20)
        .declare_exchanges(&channel)
        .await
        .unwrap();
    // docs/operations.md, "The agency feed".
    rabbit.ctl(&["add_user", "agency-a", "secret-a"]);
    rabbit.ctl(&[
        "set_permissions",
        "-p",
        "/",
        "agency-a",
        "^agency-a\\.",
        "^agency-a\\.",
        "^(agency-a\\..*|cpm\\.agency-feed)$",
    ]);
    rabbit.ctl(&[
        "set_topic_permissions",
        "-p",
        "/",
        "agency-a",
        exchange,
        "^$",
        "^agency\\.agency-a\\.",
    ]);

    let url = rabbit.url().replacen("guest:guest", "agency-a:secret-a", 1);
    let bind = |queue: &'static str, key: &'static str| {
        let url = url.clone();
        async move {
            let connection =
                lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
                    .await
                    .unwrap();
            let channel = connection.create_channel().await.unwrap();
            let result = async {
                channel
                    .queue_declare(
                        queue.into(),
                        QueueDeclareOptions {
                            durable: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                channel
                    .queue_bind(
                        queue.into(),
                        exchange.into(),
                        key.into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
            }
            .await;
            let _ = connection.close(0, "done".into()).await;
            result
        }
    };
    bind("agency-a.feed", "agency.agency-a.#")
        .await
        .expect("its own keys");
    assert!(
        bind("agency-a.spy", "agency.agency-b.#").await.is_err(),
        "another agency's keys"
    );
    assert!(
        bind("agency-a.all", "agency.#").await.is_err(),
        "every agency's keys"
    );
    assert!(
        bind("agency-b.feed", "agency.agency-a.#").await.is_err(),
        "a queue named as another agency's"
    );
    let _ = admin.close(0, "done".into()).await;
}
