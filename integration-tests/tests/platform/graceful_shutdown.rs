//! SIGTERM while referrals keep coming: `cpm` exits 0 every time (no abort
//! in a destructor, no panic), and after three such stops and a last start
//! every accepted referral reaches UNDER_ASSESSMENT with each notice told
//! exactly once on the webhook and on the stream (issue 9).

use std::time::Duration;

use cpm::Target;
use cpm_proto::v1::ReferralStatus;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use tokio_util::sync::CancellationToken;

use crate::flow::{ListeningAgency, assert_all_in_status, submit_until_stopped};
use crate::harness::TestEnv;
use crate::processes::{CpmProcess, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_a_flow_of_submissions_exits_zero_every_time_and_loses_nothing() {
    let _turn = crate::flow::take_turn().await;
    let env = TestEnv::new().await;
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .unwrap()
        .connect_lazy();
    let agency = "agency-sigterm";
    let client = ReferralIntakeServiceClient::new(env.referrer(&channel, agency));
    let mut accepted = Vec::new();
    let mut listening = None;
    for round in 0..3u64 {
        let mut platform = CpmProcess::serve_on(env.settings.clone(), &Target::ALL, port).await;
        if listening.is_none() {
            listening = Some(ListeningAgency::start(&env, &channel, agency).await);
        }
        let stop = CancellationToken::new();
        let flow = tokio::spawn({
            let (client, stop) = (client.clone(), stop.clone());
            async move { submit_until_stopped(&client, 60, "Sigterm", stop).await }
        });
        tokio::time::sleep(Duration::from_millis(1_500 + 700 * round)).await;
        let exit = platform.terminate(Duration::from_secs(30)).await;
        stop.cancel();
        accepted.extend(flow.await.unwrap());
        assert_eq!(
            exit.code(),
            Some(0),
            "round {round}: SIGTERM under load ended with {exit}:\n{}",
            platform.log_text()
        );
        platform.assert_no_panic();
    }
    assert!(accepted.len() >= 150, "only {} accepted", accepted.len());

    let mut platform = CpmProcess::serve_on(env.settings.clone(), &Target::ALL, port).await;
    let listening = listening.unwrap();
    listening
        .await_notices(
            &accepted,
            ReferralStatus::UnderAssessment,
            Duration::from_secs(120),
        )
        .await;
    assert_all_in_status(&client, &accepted, ReferralStatus::UnderAssessment).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    listening.assert_exactly_once(&accepted, ReferralStatus::UnderAssessment);
    listening.assert_exactly_once(&accepted, ReferralStatus::Received);
    let exit = platform.terminate(Duration::from_secs(30)).await;
    assert_eq!(exit.code(), Some(0));
    platform.assert_no_panic();
    env.cleanup().await;
}
