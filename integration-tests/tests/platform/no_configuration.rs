//! `cpm serve` with no configuration works on a stock PostgreSQL (trusting
//! local connections, with only the `postgres` role), and a database URL
//! naming a role that does not exist stops the start at once with one line
//! saying what to set, instead of retrying for ever.

use std::time::Duration;

use cpm::{Platform, Settings, Target};
use cpm_runtime::config::Secret;

use crate::harness::TestEnv;
use crate::processes::{CpmProcess, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpm_serve_in_an_empty_directory_starts_every_service() {
    let env = TestEnv::new().await;
    let dir = std::env::temp_dir().join(format!("cpm-empty-{}", env.namespace));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    // Only what keeps this run apart from others on the machine: the port
    // and the broker namespace. The database is the default one.
    let mut platform = CpmProcess::serve_unconfigured(
        &dir,
        &[
            ("CPM__GRPC__LISTEN", format!("127.0.0.1:{port}")),
            ("CPM__AMQP__NAMESPACE", env.namespace.clone()),
        ],
        port,
    )
    .await;
    // SERVING overall means every one of the five services is.
    assert_eq!(
        cpm::client::health(&platform.endpoint, "").await.unwrap(),
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let exit = platform.terminate(Duration::from_secs(30)).await;
    assert!(exit.success(), "cpm exited with {exit}");
    platform.assert_no_panic();
    let _ = std::fs::remove_dir_all(&dir);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_role_that_does_not_exist_stops_the_start_with_one_line() {
    let env = TestEnv::new().await;
    let mut settings: Settings = env.settings.clone();
    let (scheme, rest) = env.database_url.split_once("://").unwrap();
    let host_and_database = rest.split_once('@').map_or(rest, |(_, after)| after);
    settings.platform.database.url =
        Secret::new(format!("{scheme}://no_such_role_cpm@{host_and_database}"));
    let started = tokio::time::timeout(
        Duration::from_secs(20),
        Platform::start(settings, &[Target::REFERRAL_INTAKE]),
    )
    .await
    .expect("the start gives up at once instead of retrying");
    let error = started.err().expect("the start fails").to_string();
    assert!(error.contains("CPM__DATABASE__URL"), "{error}");
    assert!(!error.contains('\n'), "one line: {error}");
    env.cleanup().await;
}
