//! A service killed mid-journey and started again carries on with nothing lost.

use std::time::Duration;

use cpm::Target;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_proto::v1::risk_assessment_service_client::RiskAssessmentServiceClient;
use cpm_proto::v1::{ListQueueRequest, ReferralStatus};

use crate::harness::{TestEnv, await_status, connect, fetch_referral, referral_request, submit};
use crate::killable::Killable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_restarts_and_carries_on_with_nothing_lost() {
    let env = TestEnv::new().await;
    let others = env
        .start(&[
            Target::REFERRAL_INTAKE,
            Target::MENTOR_MATCHING,
            Target::CONTACT_LOGGING,
            Target::NOTIFICATIONS,
        ])
        .await;
    let channel = connect(&others).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-restart"));

    let settings = env.settings.clone();
    let assessment = tokio::task::spawn_blocking(move || {
        Killable::start(settings, vec![Target::RISK_ASSESSMENT])
    })
    .await
    .unwrap();
    let first = submit(&mut intake, referral_request("Restart")).await;
    await_status(
        &mut intake,
        &first.referral_id,
        ReferralStatus::UnderAssessment,
        Duration::from_secs(30),
    )
    .await;

    tokio::task::spawn_blocking(move || assessment.kill())
        .await
        .unwrap();
    let second = submit(&mut intake, referral_request("Restart")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = fetch_referral(&mut intake, &second.referral_id).await;
    assert_eq!(
        waiting.status(),
        ReferralStatus::Received,
        "nobody assesses while the service is down"
    );

    let settings = env.settings.clone();
    let restarted = tokio::task::spawn_blocking(move || {
        Killable::start(settings, vec![Target::RISK_ASSESSMENT])
    })
    .await
    .unwrap();
    await_status(
        &mut intake,
        &second.referral_id,
        ReferralStatus::UnderAssessment,
        Duration::from_secs(30),
    )
    .await;

    let assessment_channel = cpm::client::connect(&restarted.endpoint).await.unwrap();
    let mut assessments = RiskAssessmentServiceClient::new(env.coordinator(&assessment_channel));
    let queue = assessments
        .list_queue(ListQueueRequest {
            area: "Restart".into(),
            page_size: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .assessments;
    let mut referral_ids: Vec<_> = queue.iter().map(|a| a.referral_id.clone()).collect();
    referral_ids.sort();
    let mut expected = vec![first.referral_id.clone(), second.referral_id.clone()];
    expected.sort();
    assert_eq!(
        referral_ids, expected,
        "each referral assessed once, none lost"
    );

    tokio::task::spawn_blocking(move || restarted.kill())
        .await
        .unwrap();
    others.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_before_its_consumer_ever_ran_waits_for_it() {
    let env = TestEnv::new().await;
    // Only intake runs; it declares every service's queue at start.
    let intake_only = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&intake_only).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-early"));
    let referral = submit(&mut intake, referral_request("Early")).await;
    let queue = env.queue("risk-assessment", "referrals");
    crate::harness::eventually(
        Duration::from_secs(20),
        "the event waits in risk-assessment's queue",
        || async { env.queue_depth(&queue).await == 1 },
    )
    .await;

    let assessment = env.start(&[Target::RISK_ASSESSMENT]).await;
    await_status(
        &mut intake,
        &referral.referral_id,
        ReferralStatus::UnderAssessment,
        Duration::from_secs(30),
    )
    .await;
    assessment.stop().await.unwrap();
    intake_only.stop().await.unwrap();
    env.cleanup().await;
}
