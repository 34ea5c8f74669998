//! Fault tests that take a broker away. They run their own RabbitMQ node
//! (own port, distribution port, data directory and node name) and never
//! touch the shared one; the node is stopped and its files removed when
//! the test ends, pass or fail.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cpm_proto::v1::ReferralStatus;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;

use crate::harness::{TestEnv, await_status, connect, eventually, referral_request, submit};

const RABBITMQ_BIN: &str = "/usr/lib/rabbitmq/bin";

/// How long a node may take to start on a machine the whole suite loads.
const STARTUP_LIMIT: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private RabbitMQ node for one test.
pub struct PrivateRabbit {
    node: String,
    port: u16,
    dist_port: u16,
    dir: PathBuf,
    server: Child,
}

impl PrivateRabbit {
    /// A running node. A launch that fails (its VM exits, say a port taken
    /// between choosing it and binding it, or it is not up within
    /// [`STARTUP_LIMIT`]) is cleaned up and tried again on new
    /// ports, up to three times; the panic then says why each failed.
    pub fn start() -> Self {
        assert!(
            PathBuf::from(RABBITMQ_BIN).join("rabbitmq-server").exists(),
            "rabbitmq-server is not installed; deploy/test.sh installs it"
        );
        let mut failures = Vec::new();
        for _ in 0..3 {
            let mut rabbit = Self::launch_new();
            match rabbit.started_within(STARTUP_LIMIT) {
                Ok(()) => return rabbit,
                Err(why) => failures.push(format!("{}: {why}", rabbit.node)),
            }
        }
        panic!("no private RabbitMQ node started: {failures:#?}");
    }

    /// A node of its own name, ports and directory, launched.
    fn launch_new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let node = format!("cpmtest{}@localhost", &id[..12]);
        let dir = std::env::temp_dir().join(format!("cpm-rabbit-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].").unwrap();
        let port = free_port();
        let dist_port = free_port();
        let server = Self::launch(&node, port, dist_port, &dir);
        Self {
            node,
            port,
            dist_port,
            dir,
            server,
        }
    }

    /// Waits until the node runs, or says why it does not: its VM exited
    /// or `limit` passed (with the end of its log).
    fn started_within(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = std::time::Instant::now() + limit;
        // Before the node registers with epmd, `await_startup` fails at
        // once, so it is asked again.
        while !self.try_ctl(&["await_startup", "--timeout", "30"]) {
            if let Ok(Some(status)) = self.server.try_wait() {
                return Err(format!(
                    "rabbitmq-server exited ({status}): {}",
                    self.log_tail()
                ));
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!("not started within {limit:?}: {}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    }

    /// The last lines the node logged.
    fn log_tail(&self) -> String {
        let log = self.dir.join("log").join(format!("{}.log", self.node));
        let text = std::fs::read_to_string(&log).unwrap_or_else(|_| "no log".into());
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    fn launch(node: &str, port: u16, dist_port: u16, dir: &std::path::Path) -> Child {
        Command::new(format!("{RABBITMQ_BIN}/rabbitmq-server"))
            .current_dir(dir)
            .env("RABBITMQ_NODENAME", node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("none"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rabbitmq-server starts")
    }

    /// SIGKILL to the node's Erlang VM (its PID file names it): no clean
    /// close of anything.
    pub fn kill(&mut self) {
        let pid =
            std::fs::read_to_string(self.dir.join("pid")).expect("the node wrote its PID file");
        crate::processes::signal(pid.trim().parse().expect("a PID"), "KILL");
        let _ = self.server.kill();
        let _ = self.server.wait();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "node {} still listens after SIGKILL",
                self.node
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the node again on the same port and data directory.
    pub fn restart(&mut self) {
        self.server = Self::launch(&self.node, self.port, self.dist_port, &self.dir);
        self.await_startup();
    }

    /// Waits until the node runs again; a node that does not fails the test.
    fn await_startup(&mut self) {
        if let Err(why) = self.started_within(STARTUP_LIMIT) {
            panic!("node {} did not start: {why}", self.node);
        }
    }

    /// Consumers on each queue whose name starts with `prefix`, or what
    /// rabbitmqctl said when it could not list them.
    pub fn consumers(&self, prefix: &str) -> Result<Vec<(String, u32)>, String> {
        let output = Command::new(format!("{RABBITMQ_BIN}/rabbitmqctl"))
            .arg("-n")
            .arg(&self.node)
            .args([
                "list_queues",
                "name",
                "consumers",
                "--quiet",
                "--no-table-headers",
            ])
            .output()
            .expect("rabbitmqctl runs");
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let name = fields.next()?;
                let consumers = fields.next()?.parse().ok()?;
                name.starts_with(prefix)
                    .then(|| (name.to_owned(), consumers))
            })
            .collect())
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn try_ctl(&self, args: &[&str]) -> bool {
        Command::new(format!("{RABBITMQ_BIN}/rabbitmqctl"))
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    pub fn ctl(&self, args: &[&str]) {
        let status = Command::new(format!("{RABBITMQ_BIN}/rabbitmqctl"))
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("rabbitmqctl runs");
        assert!(
            status.success(),
            "rabbitmqctl {args:?} failed for {}",
            self.node
        );
    }

    /// Stops the broker application: every connection drops, the port closes.
    pub fn stop_app(&self) {
        self.ctl(&["stop_app"]);
    }

    pub fn start_app(&mut self) {
        self.ctl(&["start_app"]);
        self.await_startup();
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        let _ = Command::new(format!("{RABBITMQ_BIN}/rabbitmqctl"))
            .arg("-n")
            .arg(&self.node)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_row_written_while_rabbitmq_is_down_is_published_once_it_returns() {
    let mut rabbit = tokio::task::spawn_blocking(PrivateRabbit::start)
        .await
        .unwrap();
    let env = TestEnv::with_amqp_url(&rabbit.url()).await;
    let platform = env.start_all().await;
    let channel = connect(&platform).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-outage"));

    let before = submit(&mut intake, referral_request("Durham")).await;
    await_status(
        &mut intake,
        &before.referral_id,
        ReferralStatus::UnderAssessment,
        Duration::from_secs(30),
    )
    .await;

    rabbit.stop_app();
    // Intake keeps taking referrals: the event waits in the outbox.
    let during = submit(&mut intake, referral_request("Durham")).await;
    let pool = env.database().await;
    eventually(
        Duration::from_secs(10),
        "the event waits in the outbox",
        || async {
            let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM referral_intake.outbox WHERE event_type = 'referral.submitted'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
            waiting == 1
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = intake
        .get_referral(cpm_proto::v1::GetReferralRequest {
            referral_id: during.referral_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(still.status(), ReferralStatus::Received);

    rabbit.start_app();
    // The relay and the consumers reconnect by themselves and carry on.
    await_status(
        &mut intake,
        &during.referral_id,
        ReferralStatus::UnderAssessment,
        Duration::from_secs(60),
    )
    .await;
    // The status change wrote an event of its own just now, which the relay
    // publishes a moment later: wait for it too.
    eventually(Duration::from_secs(20), "the outbox drains", || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM referral_intake.outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        left == 0
    })
    .await;
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
    drop(rabbit);
}

/// RabbitMQ killed with SIGKILL and started again in the middle of a steady
/// flow: every consumer of every service is consuming again within 30 s of
/// the node's return, and every referral arrives, none twice (issue 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_come_back_within_thirty_seconds_of_a_killed_broker_and_nothing_is_lost() {
    use crate::flow::{ListeningAgency, assert_flow_arrived, submit_at_rate};
    use crate::processes::CpmProcess;
    use crate::steady_flow::{CATCH_UP, PER_SECOND, REFERRALS};

    let _turn = crate::flow::take_turn().await;
    let mut rabbit = tokio::task::spawn_blocking(PrivateRabbit::start)
        .await
        .unwrap();
    let env = TestEnv::with_amqp_url(&rabbit.url()).await;
    let mut platform = CpmProcess::serve(&env, &cpm::Target::ALL).await;
    let channel = cpm::client::connect(&platform.endpoint).await.unwrap();
    let agency = "agency-broker-kill";
    let listening = ListeningAgency::start(&env, &channel, agency).await;
    let client = ReferralIntakeServiceClient::new(env.referrer(&channel, agency));
    let flow = tokio::spawn({
        let client = client.clone();
        async move { submit_at_rate(&client, REFERRALS, PER_SECOND, "BrokerKill").await }
    });

    tokio::time::sleep(Duration::from_secs(4)).await;
    let rabbit = tokio::task::spawn_blocking(move || {
        rabbit.kill();
        std::thread::sleep(Duration::from_secs(3));
        rabbit.restart();
        rabbit
    })
    .await
    .unwrap();
    let back = tokio::time::Instant::now();
    let expected = cpm::platform::all_consumers().len();
    let prefix = format!("{}.", env.namespace);
    loop {
        let consumers = rabbit.consumers(&prefix);
        let consuming = consumers
            .iter()
            .flatten()
            .filter(|(name, count)| !name.ends_with(".dlq") && *count > 0)
            .count();
        eprintln!(
            "{:?} after the broker returned: {consuming} of {expected} consuming",
            back.elapsed()
        );
        if consuming == expected {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "30 s after the broker returned, {consuming} of {expected} queues have a consumer: {consumers:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let consuming_after = back.elapsed();

    let (referrals, rate) = flow.await.unwrap();
    assert_flow_arrived(&listening, &client, &referrals, rate, CATCH_UP).await;
    eprintln!("every consumer was consuming {consuming_after:?} after the broker returned");

    let exit = platform.terminate(Duration::from_secs(30)).await;
    assert!(exit.success(), "cpm exited with {exit}");
    platform.assert_no_panic();
    env.cleanup().await;
    drop(rabbit);
}
