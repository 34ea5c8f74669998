//! Background tasks under the platform's supervisor: a task that panics is
//! restarted, its service reports NOT_SERVING over gRPC health meanwhile,
//! and a task that cannot be kept alive stops the platform with an error
//! (the `cpm` binary then exits non-zero).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cpm::Target;
use cpm_runtime::supervisor::TaskSpec;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::{TestEnv, eventually};

/// A service's health; UNKNOWN until the monitor's first pass registers it.
async fn status(endpoint: &str, service: &str) -> ServingStatus {
    match cpm::client::health(endpoint, service).await {
        Ok(status) => ServingStatus::try_from(status).unwrap(),
        Err(_) => ServingStatus::Unknown,
    }
}

const INTAKE: &str = "cpm.v1.ReferralIntakeService";
const ASSESSMENT: &str = "cpm.v1.RiskAssessmentService";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_is_restarted_and_its_service_is_not_serving_meanwhile() {
    let mut env = TestEnv::new().await;
    // Long enough between restarts for a health check to see the gap and
    // check the other statuses inside it, even on a loaded machine (CI once
    // saw intake NOT_SERVING late in a 3 s gap and the server SERVING again
    // by the next call).
    env.settings.platform.supervision.restart_backoff_ms = 10_000;
    let platform = env
        .start(&[Target::REFERRAL_INTAKE, Target::RISK_ASSESSMENT])
        .await;
    let endpoint = platform.endpoint();
    eventually(Duration::from_secs(10), "intake is SERVING", || async {
        status(&endpoint, INTAKE).await == ServingStatus::Serving
    })
    .await;

    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let shutdown = platform.shutdown_token();
    platform.supervisor().spawn(
        TaskSpec::essential("referral-intake", "referral-intake.faulty"),
        move || {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            let shutdown = shutdown.clone();
            async move {
                if run == 0 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    panic!("a deliberate fault in a background task");
                }
                shutdown.cancelled().await;
                Ok(())
            }
        },
    );

    eventually(
        Duration::from_secs(5),
        "intake is NOT_SERVING while its task is down",
        || async { status(&endpoint, INTAKE).await == ServingStatus::NotServing },
    )
    .await;
    assert_eq!(status(&endpoint, "").await, ServingStatus::NotServing);
    assert_eq!(
        status(&endpoint, ASSESSMENT).await,
        ServingStatus::Serving,
        "only the failing task's service is down"
    );
    eventually(
        Duration::from_secs(30),
        "intake is SERVING once the task is restarted",
        || async { status(&endpoint, INTAKE).await == ServingStatus::Serving },
    )
    .await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "started once, restarted once"
    );
    assert_eq!(platform.supervisor().restarts("referral-intake.faulty"), 1);

    platform
        .stop()
        .await
        .expect("a clean stop after a recovered fault");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_cannot_be_kept_alive_stops_the_platform_with_an_error() {
    let mut env = TestEnv::new().await;
    env.settings.platform.supervision.restart_backoff_ms = 10;
    env.settings.platform.supervision.max_backoff_ms = 20;
    env.settings.platform.supervision.max_restarts = 3;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    platform.supervisor().spawn(
        TaskSpec::essential("referral-intake", "referral-intake.doomed"),
        || async { anyhow::bail!("the database schema is gone") },
    );
    let stopped = tokio::time::timeout(Duration::from_secs(30), platform.wait())
        .await
        .expect("the platform stops by itself");
    let error = stopped.expect_err("an error, so the process exits non-zero");
    assert!(
        error.to_string().contains("referral-intake.doomed"),
        "the error names the task: {error}"
    );
    env.cleanup().await;
}
