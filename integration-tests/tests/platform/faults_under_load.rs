//! Faults under load (issue 16 item 5): a flow of referrals at more than a
//! hundred a second, each retried by the client with its idempotency key
//! until acknowledged, through the real `cpm` binary (every service in one
//! process), while one fault strikes: RabbitMQ killed and restarted, its
//! connections force-closed, PostgreSQL stopped immediately and restarted,
//! the process SIGKILLed, or SIGTERMed (and, as five processes, two of
//! them SIGKILLed at once). Afterwards every acknowledged
//! referral must be UNDER_ASSESSMENT, no key may have two referrals, both
//! subscribers (webhook and stream) must have been told each notice once,
//! and a referral submitted after the fault must have gone through within
//! 30 s, with nothing restarted by hand. Each test prints one `fault=…`
//! line with the counts and times; docs/reliability.md collects them.
//!
//! The size and pace are settings (`CPM_FAULT_REFERRALS`,
//! `CPM_FAULT_RATE`); the flow also runs on for ten seconds after the fault
//! ends, so there is always traffic to measure the recovery with.

mod load;

use std::time::{Duration, Instant};

use cpm::Target;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use tokio_util::sync::CancellationToken;

use crate::flow::ListeningAgency;
use crate::harness::{Authed, TestEnv};
use crate::private_broker::PrivateRabbit;
use crate::private_postgres::PrivatePostgres;
use crate::processes::{CpmProcess, free_port};
use load::{FaultWindow, Flow, LoadSettings, Report};

/// Flow before the fault strikes.
const BEFORE_FAULT: Duration = Duration::from_secs(4);
/// Flow after the fault ends, at least.
const AFTER_FAULT: Duration = Duration::from_secs(10);
/// How long a killed broker or stopped database stays away.
const OUTAGE: Duration = Duration::from_secs(3);
const AREA: &str = "Faults";

/// The platform's processes (`cpm serve --target all`, or one a service),
/// an agency listening on its webhook and stream, and a referrer client
/// that reconnects by itself.
struct Scene {
    env: TestEnv,
    processes: Vec<Served>,
    client: ReferralIntakeServiceClient<Authed>,
    listening: ListeningAgency,
    agency: &'static str,
    load: LoadSettings,
}

/// One `cpm serve` of the scene, on fixed gRPC and metrics ports, so a
/// restarted process is found where its predecessor was.
struct Served {
    targets: Vec<Target>,
    settings: cpm::Settings,
    port: u16,
    metrics: std::net::SocketAddr,
    process: CpmProcess,
}

impl Served {
    async fn start(mut settings: cpm::Settings, targets: Vec<Target>) -> Self {
        let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        settings.platform.telemetry.metrics_listen = metrics.to_string();
        let port = free_port();
        let process = CpmProcess::serve_on(settings.clone(), &targets, port).await;
        Self {
            targets,
            settings,
            port,
            metrics,
            process,
        }
    }

    /// A new process where the last one was, as Kubernetes restarts a pod.
    async fn restart(&mut self) {
        self.process = CpmProcess::serve_on(self.settings.clone(), &self.targets, self.port).await;
    }
}

impl Scene {
    /// Every service in one process.
    async fn start(env: TestEnv, agency: &'static str) -> Self {
        Self::start_as(env, agency, vec![Target::ALL.to_vec()]).await
    }

    /// One process for each group of `layout`.
    async fn start_as(mut env: TestEnv, agency: &'static str, layout: Vec<Vec<Target>>) -> Self {
        // The production pool (the harness's 4 suits tests that run side by side).
        env.settings.platform.database.max_connections = 8;
        let mut processes = Vec::new();
        for targets in layout {
            processes.push(Served::start(env.settings.clone(), targets).await);
        }
        let channel_to = |target: Target| {
            let served = processes
                .iter()
                .find(|served| served.targets.contains(&target))
                .expect("every service is served");
            tonic::transport::Endpoint::from_shared(served.process.endpoint.clone())
                .unwrap()
                .connect_lazy()
        };
        let listening =
            ListeningAgency::start(&env, &channel_to(Target::NOTIFICATIONS), agency).await;
        let client = ReferralIntakeServiceClient::new(
            env.referrer(&channel_to(Target::REFERRAL_INTAKE), agency),
        );
        Self {
            env,
            processes,
            client,
            listening,
            agency,
            load: LoadSettings::from_env(),
        }
    }

    /// The process serving `target`.
    fn serving(&mut self, target: Target) -> &mut Served {
        self.processes
            .iter_mut()
            .find(|served| served.targets.contains(&target))
            .expect("every service is served")
    }

    /// Starts the flow and lets it run until the fault is due.
    async fn flow(&self) -> (tokio::task::JoinHandle<Flow>, CancellationToken) {
        let stop = CancellationToken::new();
        let flow = tokio::spawn(load::run(
            self.client.clone(),
            self.load,
            AREA,
            stop.clone(),
        ));
        tokio::time::sleep(BEFORE_FAULT).await;
        (flow, stop)
    }

    /// Lets the flow run on past the fault, then counts.
    async fn tally(
        &self,
        fault: &'static str,
        flow: tokio::task::JoinHandle<Flow>,
        stop: CancellationToken,
        window: FaultWindow,
    ) -> Report {
        tokio::time::sleep_until((window.ended + AFTER_FAULT).into()).await;
        stop.cancel();
        let flow = flow.await.unwrap();
        let report = load::check(
            fault,
            &self.env,
            self.agency,
            &self.client,
            &self.listening,
            &flow,
            window,
        )
        .await;
        eprintln!("{}", report.line());
        report
    }

    /// SIGTERM to the processes (which must exit 0 without a panic), then
    /// the test's database and namespace go.
    async fn finish(mut self) {
        for served in &mut self.processes {
            let exit = served.process.terminate(Duration::from_secs(30)).await;
            assert!(exit.success(), "cpm exited with {exit}");
            served.process.assert_no_panic();
        }
        drop(self.listening);
        self.env.cleanup().await;
    }

    /// A counter or gauge summed over the series whose labels contain
    /// `labels`, in every process.
    async fn metric(&self, name: &str, labels: &str) -> f64 {
        let mut sum = 0.0;
        for served in &self.processes {
            sum += crate::metrics::scrape(served.metrics)
                .await
                .lines()
                .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(labels))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
        }
        sum
    }
}

/// Outbox rows in every service's schema: events committed and not yet
/// confirmed by the broker.
async fn outbox_rows(env: &TestEnv) -> i64 {
    let database = env.database().await;
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema::text FROM information_schema.tables WHERE table_name = 'outbox'",
    )
    .fetch_all(&database)
    .await
    .unwrap();
    let mut rows = 0;
    for schema in schemas {
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{schema}\".outbox"
        )))
        .fetch_one(&database)
        .await
        .unwrap();
        rows += count;
    }
    database.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_killed_and_restarted_under_load_loses_and_repeats_nothing() {
    let _turn = crate::flow::take_turn().await;
    let mut rabbit = tokio::task::spawn_blocking(PrivateRabbit::start)
        .await
        .unwrap();
    let env = TestEnv::with_amqp_url(&rabbit.url()).await;
    let scene = Scene::start(env, "agency-fault-broker-kill").await;
    let (flow, stop) = scene.flow().await;

    let began = Instant::now();
    let rabbit = tokio::task::spawn_blocking(move || {
        rabbit.kill();
        std::thread::sleep(OUTAGE);
        rabbit.restart();
        rabbit
    })
    .await
    .unwrap();
    let window = FaultWindow {
        began,
        ended: Instant::now(),
    };
    let report = scene.tally("rabbitmq-killed", flow, stop, window).await;
    report.assert_clean(scene.load);
    scene.finish().await;
    drop(rabbit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_connections_force_closed_under_load_loses_and_repeats_nothing() {
    let _turn = crate::flow::take_turn().await;
    let rabbit = tokio::task::spawn_blocking(PrivateRabbit::start)
        .await
        .unwrap();
    let env = TestEnv::with_amqp_url(&rabbit.url()).await;
    let scene = Scene::start(env, "agency-fault-connections").await;
    let (flow, stop) = scene.flow().await;

    let rabbit = tokio::task::spawn_blocking(move || {
        rabbit.ctl(&["close_all_connections", "fault test"]);
        rabbit
    })
    .await
    .unwrap();
    // The close is instantaneous, somewhere within rabbitmqctl's run: the
    // window is the moment it returned.
    let closed = Instant::now();
    let window = FaultWindow {
        began: closed,
        ended: closed,
    };
    let report = scene.tally("connections-closed", flow, stop, window).await;
    report.assert_clean(scene.load);
    scene.finish().await;
    drop(rabbit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_stopped_immediately_under_load_loses_and_repeats_nothing() {
    let _turn = crate::flow::take_turn().await;
    let postgres = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .unwrap();
    let env = TestEnv::with_servers(&postgres.admin_url(), &crate::harness::amqp_url()).await;
    let scene = Scene::start(env, "agency-fault-postgres").await;
    let (flow, stop) = scene.flow().await;

    let began = Instant::now();
    let postgres = tokio::task::spawn_blocking(move || {
        postgres.stop_immediately();
        std::thread::sleep(OUTAGE);
        postgres.start_again();
        postgres
    })
    .await
    .unwrap();
    let window = FaultWindow {
        began,
        ended: Instant::now(),
    };
    let report = scene.tally("postgresql-stopped", flow, stop, window).await;
    report.assert_clean(scene.load);
    scene.finish().await;
    drop(postgres);
}

/// SIGKILL lands, at this pace, between an outbox commit and its publish
/// and between a consumer's commit and its ack: the rows left in the
/// outboxes and the deliveries the restarted process finds already applied
/// count how many. The killed process's webhook claims hold their
/// endpoints for one lease (one post's time-out plus 15 s) at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_commit_and_publish_and_effect_and_ack_loses_and_repeats_nothing() {
    let _turn = crate::flow::take_turn().await;
    let env = TestEnv::new().await;
    let mut scene = Scene::start(env, "agency-fault-sigkill").await;
    let (flow, stop) = scene.flow().await;

    let began = Instant::now();
    let all = scene.serving(Target::REFERRAL_INTAKE);
    all.process.kill().await;
    let unpublished = outbox_rows(&scene.env).await;
    scene.serving(Target::REFERRAL_INTAKE).restart().await;
    let restarted_after = began.elapsed();
    // Measured from the kill: the restart is part of the recovery.
    let window = FaultWindow {
        began,
        ended: began,
    };
    let report = scene.tally("sigkill", flow, stop, window).await;
    let already_applied = scene
        .metric("cpm_consumer_deliveries_total", "outcome=\"duplicate\"")
        .await;
    let redelivered = scene.metric("cpm_consumer_redeliveries_total", "").await;
    eprintln!(
        "fault=sigkill committed_unpublished_at_kill={unpublished} \
         applied_before_kill_ack_lost={already_applied} redelivered={redelivered} \
         serving_again_after={:.1}s",
        restarted_after.as_secs_f64()
    );
    report.assert_clean(scene.load);
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_and_loses_and_repeats_nothing() {
    let _turn = crate::flow::take_turn().await;
    let env = TestEnv::new().await;
    let mut scene = Scene::start(env, "agency-fault-sigterm").await;
    let (flow, stop) = scene.flow().await;

    let began = Instant::now();
    let all = scene.serving(Target::REFERRAL_INTAKE);
    let exit = all.process.terminate(Duration::from_secs(30)).await;
    assert_eq!(exit.code(), Some(0), "SIGTERM under load: {exit}");
    all.process.assert_no_panic();
    let stopped_after = began.elapsed();
    all.restart().await;
    let restarted_after = began.elapsed();
    let window = FaultWindow {
        began,
        ended: began,
    };
    let report = scene.tally("sigterm", flow, stop, window).await;
    eprintln!(
        "fault=sigterm stopped_after={:.1}s serving_again_after={:.1}s",
        stopped_after.as_secs_f64(),
        restarted_after.as_secs_f64()
    );
    report.assert_clean(scene.load);
    scene.finish().await;
}

/// As five processes, one a service: risk assessment (whose consumer moves
/// each referral on) and notifications (mid-webhook-claim, mid-stream) are
/// SIGKILLed together while intake goes on taking referrals, then started
/// again. The events they had not consumed wait in their queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_processes_with_two_sigkilled_lose_and_repeat_nothing() {
    let _turn = crate::flow::take_turn().await;
    let env = TestEnv::new().await;
    let layout = Target::ALL.iter().map(|target| vec![*target]).collect();
    let mut scene = Scene::start_as(env, "agency-fault-five", layout).await;
    let (flow, stop) = scene.flow().await;

    let began = Instant::now();
    let killed = [Target::RISK_ASSESSMENT, Target::NOTIFICATIONS];
    for target in killed {
        scene.serving(target).process.kill().await;
    }
    for target in killed {
        scene.serving(target).restart().await;
    }
    let restarted_after = began.elapsed();
    let window = FaultWindow {
        began,
        ended: began,
    };
    let report = scene
        .tally("five-processes-two-sigkilled", flow, stop, window)
        .await;
    eprintln!(
        "fault=five-processes-two-sigkilled serving_again_after={:.1}s",
        restarted_after.as_secs_f64()
    );
    report.assert_clean(scene.load);
    scene.finish().await;
}
