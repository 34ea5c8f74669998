//! The `cpm` binary run as a child process, as operations run it: its own
//! runtime, the production log set-up (JSON lines on stderr, the global
//! tracing subscriber installed), stopped by SIGTERM or killed by SIGKILL.
//! In-process platforms in the other tests install no subscriber, so only a
//! child process can show what tracing does to a busy server.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use cpm::{Settings, Target};
use tokio::process::{Child, Command};

use crate::harness::TestEnv;

/// The `cpm` program, built from the same `cpm::cli::main` as the real binary.
const CPM: &str = env!("CARGO_BIN_EXE_cpm-under-test");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `cpm serve` child process. Killed (SIGKILL) when dropped, so a
/// failing test leaves nothing running.
pub struct CpmProcess {
    child: Option<Child>,
    pub endpoint: String,
    log: PathBuf,
    config: Option<PathBuf>,
}

impl CpmProcess {
    /// Starts `cpm serve --target <targets>` with `env`'s settings on a
    /// port of its own, and waits until its health check answers SERVING.
    pub async fn serve(env: &TestEnv, targets: &[Target]) -> Self {
        Self::serve_with(env.settings.clone(), targets).await
    }

    pub async fn serve_with(settings: Settings, targets: &[Target]) -> Self {
        Self::serve_on(settings, targets, free_port()).await
    }

    /// The same on a given port: a process started again where its
    /// predecessor listened, so clients reconnect to it as to a restarted pod.
    pub async fn serve_on(mut settings: Settings, targets: &[Target], port: u16) -> Self {
        settings.platform.grpc.listen = format!("127.0.0.1:{port}");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let config = std::env::temp_dir().join(format!("cpm-test-{id}.toml"));
        std::fs::write(&config, toml::to_string(&settings).unwrap()).unwrap();
        let target_list: Vec<&str> = targets.iter().map(|target| target.as_str()).collect();
        let mut command = Command::new(CPM);
        command
            .arg("--config")
            .arg(&config)
            .args(["serve", "--target", &target_list.join(",")]);
        Self::launch(command, port, Some(config), &[]).await
    }

    /// `cpm serve` with no configuration file in `dir`, and only the
    /// variables in `env`: as someone trying it out would start it.
    pub async fn serve_unconfigured(
        dir: &std::path::Path,
        env: &[(&str, String)],
        port: u16,
    ) -> Self {
        let mut command = Command::new(CPM);
        command.current_dir(dir).arg("serve");
        Self::launch(command, port, None, env).await
    }

    async fn launch(
        mut command: Command,
        port: u16,
        config: Option<PathBuf>,
        env: &[(&str, String)],
    ) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let log = std::env::temp_dir().join(format!("cpm-test-{id}.log"));
        // The test says the whole configuration: `CPM__…` variables
        // exported by deploy/services.sh would override it and point the
        // child at the shared database and broker.
        for (name, _) in std::env::vars() {
            if name.starts_with("CPM__") || name == "CPM_CONFIG" {
                command.env_remove(name);
            }
        }
        command.envs(env.iter().map(|(name, value)| (*name, value.as_str())));
        let child = command
            .env("RUST_LOG", "info")
            .env("CPM__TELEMETRY__LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("cpm starts");
        let mut process = Self {
            child: Some(child),
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
            config,
        };
        process.await_serving(Duration::from_secs(60)).await;
        process
    }

    async fn await_serving(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let serving = cpm::client::health(&self.endpoint, "")
                .await
                .is_ok_and(|status| {
                    status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                });
            if serving {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "cpm exited with {status} before serving:\n{}",
                    self.log_text()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "cpm at {} not SERVING within {timeout:?}:\n{}",
                self.endpoint,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id().expect("still running")
    }

    /// Everything the process has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test when the log holds a panic, quoting the first one.
    pub fn assert_no_panic(&self) {
        let log = self.log_text();
        if let Some(at) = log.find("panicked") {
            let start = log[..at].rfind('\n').map_or(0, |i| i + 1);
            let excerpt: String = log[start..].chars().take(2000).collect();
            panic!("cpm at {} panicked:\n{excerpt}", self.endpoint);
        }
    }

    /// SIGKILL, then waits for the exit: no shutdown of any kind, as when
    /// the kernel's OOM killer or a node failure takes the pod.
    pub async fn kill(&mut self) {
        signal(self.pid(), "KILL");
        let mut child = self.child.take().unwrap();
        let _ = child.wait().await;
    }

    /// SIGTERM, then waits for the exit (at most `timeout`). The log stays
    /// readable afterwards.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        signal(self.pid(), "TERM");
        let mut child = self.child.take().unwrap();
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => {
                let _ = child.kill().await;
                panic!(
                    "cpm did not stop within {timeout:?} of SIGTERM:\n{}",
                    self.log_text()
                );
            }
        }
    }
}

impl Drop for CpmProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        if let Some(config) = &self.config {
            let _ = std::fs::remove_file(config);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!("cpm log kept at {}", self.log.display());
        }
    }
}

/// Sends a signal with the `kill` command (no unsafe code in tests).
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}
