//! The platform under a steady flow, as agencies use it: a thousand
//! referrals at more than fifty a second through the real `cpm` binary,
//! every one reaching UNDER_ASSESSMENT and the referrer's webhook and
//! stream exactly once, with no panic in the log (issue 9: a span held
//! across an await stopped the platform after about twenty referrals, and
//! no single-referral test could see it).

use std::time::Duration;

use cpm::Target;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;

use crate::flow::{ListeningAgency, assert_flow_arrived, submit_at_rate};
use crate::harness::TestEnv;
use crate::processes::CpmProcess;

pub const REFERRALS: usize = 1_000;
/// Paced a little above the 50 a second the flow must sustain.
pub const PER_SECOND: u32 = 60;
/// How long the pipeline may take to catch up after the last submission.
pub const CATCH_UP: Duration = Duration::from_secs(180);

/// Runs the flow against an intake endpoint and a notifications endpoint
/// (the same one when a process runs every service), then checks it.
async fn flow_through(env: &TestEnv, intake: &str, notifications: &str, agency: &str) {
    let notifications_channel = cpm::client::connect(notifications).await.unwrap();
    let listening = ListeningAgency::start(env, &notifications_channel, agency).await;
    let intake_channel = cpm::client::connect(intake).await.unwrap();
    let client = ReferralIntakeServiceClient::new(env.referrer(&intake_channel, agency));

    let (referrals, rate) = submit_at_rate(&client, REFERRALS, PER_SECOND, "Flow").await;
    assert_flow_arrived(&listening, &client, &referrals, rate, CATCH_UP).await;
    assert_eq!(
        listening.stream_reopened(),
        0,
        "the notification stream ended under a steady flow"
    );
}

/// Lines logged while serving a call or handling an event carry the
/// trace's ID, so a log search leads to the trace and back.
fn assert_log_lines_carry_trace_ids(log: &str) {
    let traced = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| {
            line["span"]["trace_id"]
                .as_str()
                .is_some_and(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .count();
    assert!(traced > 0, "no log line carries a trace ID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_running_every_service_takes_a_thousand_referrals_at_fifty_a_second() {
    let _turn = crate::flow::take_turn().await;
    let env = TestEnv::new().await;
    let mut platform = CpmProcess::serve(&env, &Target::ALL).await;
    flow_through(
        &env,
        &platform.endpoint,
        &platform.endpoint,
        "agency-flow-one",
    )
    .await;
    platform.assert_no_panic();
    assert_log_lines_carry_trace_ids(&platform.log_text());
    let exit = platform.terminate(Duration::from_secs(30)).await;
    assert!(exit.success(), "cpm exited with {exit}");
    platform.assert_no_panic();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_processes_one_per_service_take_a_thousand_referrals_at_fifty_a_second() {
    let _turn = crate::flow::take_turn().await;
    let env = TestEnv::new().await;
    let mut processes = Vec::new();
    for target in Target::ALL {
        processes.push((target, CpmProcess::serve(&env, &[target]).await));
    }
    let endpoint_of = |wanted: Target| {
        processes
            .iter()
            .find(|(target, _)| *target == wanted)
            .map(|(_, process)| process.endpoint.clone())
            .unwrap()
    };
    flow_through(
        &env,
        &endpoint_of(Target::REFERRAL_INTAKE),
        &endpoint_of(Target::NOTIFICATIONS),
        "agency-flow-five",
    )
    .await;
    for (target, process) in &mut processes {
        process.assert_no_panic();
        let exit = process.terminate(Duration::from_secs(30)).await;
        assert!(exit.success(), "{target} exited with {exit}");
        process.assert_no_panic();
    }
    env.cleanup().await;
}
