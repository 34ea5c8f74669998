//! The Python example client (examples/python/agency_client.py) against a
//! whole platform, so the agency guide's example is known to work. It needs
//! a Python with the example's requirements in `CPM_PYTHON`; deploy/test.sh
//! prepares one in .cpm/venv, and without it the test says so and passes.

use std::path::Path;
use std::time::Duration;

use cpm_runtime::auth::Role;

use crate::harness::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_client_runs_every_step_against_the_platform() {
    let Some(python) = std::env::var_os("CPM_PYTHON") else {
        eprintln!(
            "note: CPM_PYTHON is not set, so the Python example client is not tested; \
             deploy/test.sh sets it to .cpm/venv/bin/python"
        );
        return;
    };
    let env = TestEnv::new().await;
    let platform = env.start_all().await;
    let token = env.token(
        "python-example",
        Role::Referrer,
        Some("agency-python"),
        None,
    );
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = tokio::process::Command::new(&python)
        .current_dir(&workspace)
        .arg("examples/python/agency_client.py")
        .args(["--endpoint", &platform.endpoint(), "--token", &token])
        .args(["--subscribe-seconds", "2"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the example client finishes within 3 minutes")
        .expect("CPM_PYTHON runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the example client failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for expected in [
        "submitted referral ",
        "status REFERRAL_STATUS_RECEIVED replayed=False",
        "retried with the same key: replayed=True same referral ",
        "read back referral ",
        "listed 1 referrals of agency agency-python in 1 page(s), including ours",
        "bad request rejected: INVALID_ARGUMENT",
        "  violation client.date_of_birth: must not be in the future",
        "  violation client_consented: ",
        "  violation reason: ",
        "same key, different body: INVALID_ARGUMENT on idempotency_key",
        "unknown or other agency's referral: NOT_FOUND",
        "subscribed for 2s: ",
        "done",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}\n{stderr}"
        );
    }
    platform.stop().await.unwrap();
    env.cleanup().await;
}
