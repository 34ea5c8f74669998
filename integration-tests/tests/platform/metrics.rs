//! The Prometheus endpoint: a process started with
//! `telemetry.metrics_listen` serves its RPCs by method and code, its
//! outbox backlog, its consumers' deliveries and its dead letters.

use std::time::Duration;

use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{TestEnv, connect, eventually, referral_request, submit};

/// `GET /metrics` over plain HTTP/1.0: the scrape Prometheus makes.
pub async fn scrape(address: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: cpm\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"));
    response
}

/// The value of `series` (name and labels, as scraped) in a scrape; 0 when
/// absent, as a counter never incremented is.
pub fn value(scraped: &str, series: &str) -> f64 {
    scraped
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_rpcs_by_code_the_outbox_consumers_and_dead_letters() {
    let mut env = TestEnv::new().await;
    env.settings.platform.telemetry.metrics_listen = "127.0.0.1:0".into();
    let platform = env.start_all().await;
    let address = platform.metrics_addr().expect("a metrics listener");
    let channel = connect(&platform).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-metrics"));
    submit(&mut intake, referral_request("Darlington")).await;
    let refused = intake
        .submit_referral(cpm_proto::v1::SubmitReferralRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let wanted = [
        "cpm_rpc_requests_total{service=\"ReferralIntakeService\",method=\"SubmitReferral\",code=\"OK\"}",
        "cpm_rpc_requests_total{service=\"ReferralIntakeService\",method=\"SubmitReferral\",code=\"INVALID_ARGUMENT\"}",
        "cpm_rpc_duration_seconds_bucket{service=\"ReferralIntakeService\",method=\"SubmitReferral\"",
        "cpm_outbox_publish_delay_seconds_bucket{schema=\"referral_intake\"",
        "cpm_outbox_backlog{schema=\"referral_intake\"}",
        "cpm_outbox_oldest_age_seconds{schema=\"referral_intake\"}",
        "cpm_consumer_deliveries_total{queue=\"risk-assessment.referrals\",outcome=\"applied\"}",
        "cpm_db_pool_connections{schema=\"referral_intake\",state=\"in_use\"}",
        "cpm_db_acquire_seconds_bucket",
        "cpm_dead_letters{queue=\"risk-assessment.referrals\"} 0",
        "cpm_queue_consumers{queue=\"risk-assessment.referrals\"}",
    ];
    eventually(
        Duration::from_secs(40),
        "every metric is scraped",
        || async {
            let text = scrape(address).await;
            wanted.iter().all(|metric| text.contains(metric))
        },
    )
    .await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}
