//! Notifications hear of a referral's status from referral intake alone
//! (`referral.status_changed`): a late or repeated downstream event, which
//! cannot move the status, tells the referrer nothing, and a withdrawal is
//! told once. A stream resumed after the last sequence it saw misses
//! nothing and repeats nothing.

use std::time::Duration;

use cpm::Target;
use cpm_proto::Event as _;
use cpm_proto::v1::notifications_service_client::NotificationsServiceClient;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_proto::v1::{
    AssessmentOpened, ListDeliveriesRequest, Notification, ReferralStatus, SubscribeRequest,
    SubscribeResponse, WithdrawReferralRequest,
};
use prost::Message as _;

use crate::bus::publish_raw;
use crate::flow::ListeningAgency;
use crate::harness::{TestEnv, connect, eventually, fetch_referral, referral_request, submit};
use crate::webhook_receiver::notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_status_event_tells_the_referrer_nothing_and_a_withdrawal_is_told_once() {
    let env = TestEnv::new().await;
    let platform = env.start_all().await;
    let channel = connect(&platform).await;
    let agency = "agency-notices";
    let listening = ListeningAgency::start(&env, &channel, agency).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, agency));

    let referral = submit(&mut intake, referral_request("Notices")).await;
    let ids = vec![referral.referral_id.clone()];
    listening
        .await_notices(
            &ids,
            ReferralStatus::UnderAssessment,
            Duration::from_secs(30),
        )
        .await;

    // The same status again, as a late duplicate from downstream with an
    // event ID of its own (so the inbox does not absorb it).
    let again = AssessmentOpened {
        assessment_id: uuid::Uuid::now_v7().to_string(),
        referral_id: referral.referral_id.clone(),
        agency_id: agency.into(),
        area: "Notices".into(),
    };
    let envelope = cpm_runtime::bus::outbox::envelope("risk-assessment", &again);
    publish_raw(&env, AssessmentOpened::TYPE, &envelope.encode_to_vec()).await;

    intake
        .withdraw_referral(WithdrawReferralRequest {
            referral_id: referral.referral_id.clone(),
            reason: "moved away".into(),
        })
        .await
        .unwrap();
    listening
        .await_notices(&ids, ReferralStatus::Withdrawn, Duration::from_secs(30))
        .await;
    // Anything the duplicate caused would have arrived by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for status in [
        ReferralStatus::Received,
        ReferralStatus::UnderAssessment,
        ReferralStatus::Withdrawn,
    ] {
        listening.assert_exactly_once(&ids, status);
    }
    assert_eq!(
        fetch_referral(&mut intake, &referral.referral_id)
            .await
            .status(),
        ReferralStatus::Withdrawn
    );

    // The agency's deliveries page newest first, two at a time.
    let mut notifications = NotificationsServiceClient::new(env.referrer(&channel, agency));
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = notifications
            .list_deliveries(ListDeliveriesRequest {
                page_size: 2,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.deliveries.into_iter().map(|d| d.notification_id));
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    assert_eq!(
        seen.len(),
        3,
        "RECEIVED, UNDER_ASSESSMENT, WITHDRAWN: {seen:?}"
    );
    let mut newest_first = seen.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, newest_first);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// The next notification on `stream`, within 20 s.
async fn next_notice(stream: &mut tonic::Streaming<SubscribeResponse>) -> Notification {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("a notification within 20 s")
        .unwrap()
        .expect("the stream stays open")
        .notification
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumed_after_its_last_sequence_has_no_gap_and_no_duplicate() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::NOTIFICATIONS]).await;
    let channel = connect(&platform).await;
    let agency = "agency-resume";
    let mut client = NotificationsServiceClient::new(env.referrer(&channel, agency));
    let mut stream = client
        .subscribe(SubscribeRequest { after_sequence: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut published = Vec::new();
    let mut heard = Vec::new();
    for _ in 0..3 {
        published.push(notify(&env, agency).await);
        heard.push(next_notice(&mut stream).await);
    }
    let last_seen = heard.last().unwrap().sequence;
    drop(stream);

    // Told while nobody listens; committed before the stream is resumed.
    for _ in 0..3 {
        published.push(notify(&env, agency).await);
    }
    let database = env.database().await;
    eventually(
        Duration::from_secs(20),
        "the notices are stored",
        || async {
            let stored: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM notifications.notification WHERE agency_id = $1",
            )
            .bind(agency)
            .fetch_one(&database)
            .await
            .unwrap();
            stored == 6
        },
    )
    .await;
    database.close().await;
    let mut resumed = client
        .subscribe(SubscribeRequest {
            after_sequence: last_seen,
        })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        heard.push(next_notice(&mut resumed).await);
    }
    // Live again after the backlog.
    published.push(notify(&env, agency).await);
    heard.push(next_notice(&mut resumed).await);
    let extra = tokio::time::timeout(Duration::from_secs(2), resumed.message()).await;
    assert!(extra.is_err(), "nothing more: {extra:?}");

    let sequences: Vec<i64> = heard.iter().map(|notice| notice.sequence).collect();
    assert!(
        sequences.windows(2).all(|pair| pair[0] < pair[1]),
        "in order, none twice: {sequences:?}"
    );
    let mut referrals: Vec<String> = heard.iter().map(|n| n.referral_id.clone()).collect();
    referrals.sort();
    published.sort();
    assert_eq!(referrals, published, "every notice once");
    platform.stop().await.unwrap();
    env.cleanup().await;
}
