//! End-to-end load (issue 16 item 3): open-loop submissions at rising rates
//! against the real `cpm` binary, once as one process running all five
//! services and once as five processes, until the platform saturates; then
//! `cpm import` of a generated file. Prints markdown for docs/performance.md.
//!
//!     bash deploy/bench.sh e2e
//!     cargo bench -p integration-tests --bench e2e_load -- --rates 25,50,100,200 --secs 15
//!
//! Settings (flag or environment variable, flags win):
//!
//! - `--parts` / `BENCH_PARTS`: `flow`, `import` or both (flow,import)
//! - `--modes` / `BENCH_MODES`: `one` (one process, every service), `five` (one
//!   process per service), or both (one,five)
//! - `--rates` / `BENCH_RATES`: referrals per second, one step each (25,50,100,200)
//! - `--secs` / `BENCH_SECS`: seconds of submissions per step (15)
//! - `--drain-secs` / `BENCH_DRAIN_SECS`: how long after a step's last
//!   submission its notices may still arrive (30)
//! - `--import-rows` / `BENCH_IMPORT_ROWS`: rows of the generated import
//!   file, one import per size (20000,100000: the two show whether the
//!   import's memory grows with the file); 0 skips the import
//! - `--import-concurrency` / `BENCH_IMPORT_CONCURRENCY`: `cpm import --concurrency` (8)
//! - `--import-services` / `BENCH_IMPORT_SERVICES`: `all` (the five, so each
//!   imported referral is also assessed and notified while the import runs)
//!   or `intake` (referral intake alone: the queues are declared and the
//!   events wait in them, so the run measures accepting the rows) (all)
//!
//! For each rate: a scheduler starts one submission every 1/rate s whether
//! or not earlier ones have answered (open loop), and every latency is
//! measured from the submission's intended start, so a stalled platform
//! shows in the figures instead of slowing the offered load (no
//! coordinated omission). The agency's webhook is a local HTTP sink; a
//! notice counts when the sink receives it. A step saturates when any
//! submission fails, any notice is missing after the drain, or the p99 to
//! UNDER_ASSESSMENT exceeds 10 s; no higher rate runs after it.

#[allow(dead_code)]
#[path = "../tests/platform/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../tests/platform/processes.rs"]
mod processes;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cpm::Target;
use cpm_proto::v1::notifications_service_client::NotificationsServiceClient;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_proto::v1::{ReferralStatus, RegisterWebhookRequest};
use integration_tests::bench::latency::ms;
use integration_tests::bench::proc::{
    CpuSnapshot, RssSampler, busy_percent, clock_ticks, cores, cpu_snapshot, mib, process_ticks,
    rss_kib,
};
use integration_tests::bench::sink::{Answer, Receipts, Sink};
use integration_tests::bench::{Flags, Latency};

use harness::{Authed, TestEnv};
use processes::CpmProcess;

const AGENCY: &str = "agency-load";
/// A step whose p99 to UNDER_ASSESSMENT exceeds this has saturated.
const SATURATED_P99: Duration = Duration::from_secs(10);
/// A submission unanswered after this counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Options {
    flow: bool,
    import: bool,
    modes: Vec<String>,
    rates: Vec<u32>,
    secs: u64,
    drain_secs: u64,
    import_rows: Vec<usize>,
    import_concurrency: usize,
    /// The services serving the import: every one, or intake alone.
    import_targets: &'static [Target],
}

impl Options {
    fn read() -> anyhow::Result<Self> {
        let flags = Flags::read(&[
            ("parts", "BENCH_PARTS"),
            ("modes", "BENCH_MODES"),
            ("rates", "BENCH_RATES"),
            ("secs", "BENCH_SECS"),
            ("drain-secs", "BENCH_DRAIN_SECS"),
            ("import-rows", "BENCH_IMPORT_ROWS"),
            ("import-concurrency", "BENCH_IMPORT_CONCURRENCY"),
            ("import-services", "BENCH_IMPORT_SERVICES"),
        ])?;
        let import_targets: &'static [Target] = match flags.get("import-services", "all").as_str() {
            "all" => &Target::ALL,
            "intake" => &[Target::REFERRAL_INTAKE],
            other => anyhow::bail!("--import-services takes all or intake, not {other}"),
        };
        let parts: Vec<String> = flags.list_or("parts", "flow,import")?;
        let modes: Vec<String> = flags.list_or("modes", "one,five")?;
        anyhow::ensure!(
            modes.iter().all(|mode| mode == "one" || mode == "five"),
            "--modes takes one, five"
        );
        let rates: Vec<u32> = flags.list_or("rates", "25,50,100,200")?;
        anyhow::ensure!(rates.iter().all(|rate| *rate > 0), "rates must be positive");
        Ok(Self {
            flow: parts.iter().any(|part| part == "flow"),
            import: parts.iter().any(|part| part == "import"),
            modes,
            rates,
            secs: flags.parse_or("secs", "15")?,
            drain_secs: flags.parse_or("drain-secs", "30")?,
            import_rows: flags.list_or("import-rows", "20000,100000")?,
            import_concurrency: flags.parse_or("import-concurrency", "8")?,
            import_targets,
        })
    }
}

/// A test environment set to the platform's production defaults where the
/// test harness shortens them (pool size, polling, delivery limit).
async fn bench_env() -> TestEnv {
    let mut env = TestEnv::new().await;
    let defaults = cpm::Settings::default();
    let platform = &mut env.settings.platform;
    platform.database.max_connections = defaults.platform.database.max_connections;
    platform.outbox = defaults.platform.outbox.clone();
    platform.amqp.delivery_limit = defaults.platform.amqp.delivery_limit;
    env.settings.set(
        "notifications.webhook_poll_interval_ms",
        notifications::Config::default().webhook_poll_interval_ms as i64,
    );
    env
}

// ----------------------------------------------------------------- flow ---

/// What one rate step measured.
struct Step {
    mode: &'static str,
    rate: u32,
    offered: usize,
    errors: usize,
    first_error: Option<String>,
    achieved_rate: f64,
    submit: Option<Latency>,
    received: Option<Latency>,
    under_assessment: Option<Latency>,
    missing_received: usize,
    missing_under_assessment: usize,
    duplicates: usize,
    hops: Option<Latency>,
    /// The same hops by the consuming service (its schema), to tell which
    /// consumer's queue a step's latency waits in.
    hops_by_consumer: Vec<(String, Latency)>,
    events_per_second: f64,
    rss_peak_kib: u64,
    busy_percent: f64,
    /// CPU milliseconds per offered referral, from the step's start to the
    /// end of its drain, by process group.
    cpu: CpuPerReferral,
    /// PostgreSQL transactions per offered referral in the mode's database,
    /// over the same span: a count the machine's speed does not change.
    transactions: f64,
}

/// Where a step's CPU went, per offered referral: what isolates the
/// platform's own cost from the database's, the broker's and the load
/// generator's on a machine they share.
#[derive(Clone, Copy, Default)]
struct CpuPerReferral {
    platform_ms: f64,
    postgres_ms: f64,
    rabbitmq_ms: f64,
    bench_ms: f64,
    machine_ms: f64,
}

impl CpuPerReferral {
    fn between(before: (&CpuSnapshot, u64), after: (&CpuSnapshot, u64), referrals: usize) -> Self {
        let per = |ticks: u64| ticks as f64 * 1000.0 / clock_ticks() / referrals.max(1) as f64;
        let ((b, platform_before), (a, platform_after)) = (before, after);
        Self {
            platform_ms: per(platform_after.saturating_sub(platform_before)),
            postgres_ms: per(a.postgres.saturating_sub(b.postgres)),
            rabbitmq_ms: per(a.rabbitmq.saturating_sub(b.rabbitmq)),
            bench_ms: per(a.bench.saturating_sub(b.bench)),
            machine_ms: per(a.busy.saturating_sub(b.busy)),
        }
    }

    /// Referrals a second that all cores could carry at this cost.
    fn ceiling(&self) -> f64 {
        cores() as f64 * 1000.0 / self.machine_ms.max(1e-9)
    }
}

impl Step {
    fn saturated(&self) -> bool {
        self.errors > 0
            || self.missing_under_assessment > 0
            || self
                .under_assessment
                .is_none_or(|latency| latency.p99 > SATURATED_P99)
    }
}

/// One submission as scheduled and as answered.
struct Sent {
    intended: Instant,
    answered: Instant,
    referral_id: Result<String, String>,
}

/// Issues `rate × secs` submissions, one every 1/rate s from `start`, each
/// in its own task so no answer delays the next.
async fn offer(
    client: &ReferralIntakeServiceClient<Authed>,
    rate: u32,
    secs: u64,
) -> (Vec<Sent>, Duration) {
    let count = (u64::from(rate) * secs) as usize;
    let period = Duration::from_secs(1) / rate;
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let intended = start + period * i as u32;
        tokio::time::sleep_until(intended.into()).await;
        let mut client = client.clone();
        let request = harness::referral_request("Northshire");
        tasks.push(tokio::spawn(async move {
            let result = tokio::time::timeout(CALL_TIMEOUT, client.submit_referral(request)).await;
            let answered = Instant::now();
            let referral_id = match result {
                Ok(Ok(response)) => Ok(response
                    .into_inner()
                    .referral
                    .map(|referral| referral.referral_id)
                    .unwrap_or_default()),
                Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
                Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
            };
            Sent {
                intended,
                answered,
                referral_id,
            }
        }));
    }
    let issued = start.elapsed();
    let mut sent = Vec::with_capacity(count);
    for task in tasks {
        sent.push(task.await.expect("submission task"));
    }
    (sent, issued)
}

/// First receipt of each (referral, status), and how many arrived twice.
fn first_receipts(receipts: &Receipts) -> (HashMap<(String, String), Instant>, usize) {
    let mut first = HashMap::new();
    let mut seen: HashMap<String, u32> = HashMap::new();
    for receipt in receipts.snapshot() {
        *seen.entry(receipt.notification_id.clone()).or_default() += 1;
        first
            .entry((receipt.referral_id, receipt.status))
            .and_modify(|at: &mut Instant| *at = (*at).min(receipt.at))
            .or_insert(receipt.at);
    }
    let twice = seen.values().filter(|times| **times > 1).count();
    (first, twice)
}

/// Every consumer's inbox rows processed in `[from, until]`: the time from
/// the event's creation (the millisecond in its UUIDv7 event ID, taken when
/// the producer wrapped it, just before its outbox INSERT) to the start of
/// the consumer's transaction that applied it (`inbox.processed_at`, which
/// is `now()` of that transaction).
async fn event_hops(
    pool: &sqlx::PgPool,
    from: chrono::DateTime<chrono::Utc>,
    until: chrono::DateTime<chrono::Utc>,
) -> Vec<(String, Vec<Duration>)> {
    let schemas: Vec<(String,)> = sqlx::query_as(
        "SELECT table_schema::text FROM information_schema.tables WHERE table_name = 'inbox'",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    let mut hops = Vec::new();
    for (schema,) in schemas {
        let rows: Vec<(f64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT (EXTRACT(EPOCH FROM processed_at) * 1000 \
               - ('x' || substr(replace(event_id::text, '-', ''), 1, 12))::bit(48)::bigint)::float8 \
             FROM \"{schema}\".inbox WHERE processed_at BETWEEN $1 AND $2"
        )))
        .bind(from)
        .bind(until)
        .fetch_all(pool)
        .await
        .unwrap_or_default();
        hops.push((
            schema,
            rows.into_iter()
                .map(|(ms,)| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
                .collect(),
        ));
    }
    hops
}

/// A running mode's platform, as the steps see it: where to submit, what
/// the webhook sink received, the database, and the processes to measure.
struct Platform<'a> {
    mode: &'static str,
    client: &'a ReferralIntakeServiceClient<Authed>,
    receipts: &'a Receipts,
    pool: &'a sqlx::PgPool,
    sampler: &'a RssSampler,
    pids: &'a [u32],
}

async fn run_step(platform: &Platform<'_>, rate: u32, options: &Options) -> Step {
    let Platform {
        mode,
        client,
        receipts,
        pool,
        sampler,
        pids,
    } = *platform;
    let rss_from = sampler.last_at();
    let platform_ticks = || pids.iter().map(|pid| process_ticks(*pid)).sum::<u64>();
    let transactions_before = transactions(pool).await;
    let cpu_before = cpu_snapshot();
    let platform_before = platform_ticks();
    let wall_from = chrono::Utc::now();
    let started = Instant::now();
    let (sent, issued) = offer(client, rate, options.secs).await;
    let window = started.elapsed();
    let cpu_after = cpu_snapshot();
    let wall_until = chrono::Utc::now();

    let accepted: Vec<(&Sent, &String)> = sent
        .iter()
        .filter_map(|s| s.referral_id.as_ref().ok().map(|id| (s, id)))
        .collect();
    let received = ReferralStatus::Received.as_str_name();
    let under_assessment = ReferralStatus::UnderAssessment.as_str_name();
    let deadline = Instant::now() + Duration::from_secs(options.drain_secs);
    loop {
        let (first, _) = first_receipts(receipts);
        let done = accepted
            .iter()
            .all(|(_, id)| first.contains_key(&((*id).clone(), under_assessment.to_owned())));
        if done || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (cpu_drained, platform_drained) = (cpu_snapshot(), platform_ticks());
    // Anything delivered twice arrives within a webhook poll or two.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Read after the pause: backends report their counts at most once a second.
    let transactions_after = transactions(pool).await;
    let (first, duplicates) = first_receipts(receipts);
    let mut to_received = Vec::new();
    let mut to_assessed = Vec::new();
    for (sent, id) in &accepted {
        if let Some(at) = first.get(&((*id).clone(), received.to_owned())) {
            to_received.push(at.saturating_duration_since(sent.intended));
        }
        if let Some(at) = first.get(&((*id).clone(), under_assessment.to_owned())) {
            to_assessed.push(at.saturating_duration_since(sent.intended));
        }
    }
    let errors: Vec<&String> = sent
        .iter()
        .filter_map(|s| s.referral_id.as_ref().err())
        .collect();
    let by_consumer = event_hops(pool, wall_from, wall_until).await;
    let hops: Vec<Duration> = by_consumer
        .iter()
        .flat_map(|(_, hops)| hops.iter().copied())
        .collect();
    let events = hops.len();
    let hops_by_consumer = by_consumer
        .into_iter()
        .filter_map(|(schema, hops)| Latency::of(hops).map(|latency| (schema, latency)))
        .collect();
    Step {
        mode,
        rate,
        offered: sent.len(),
        errors: errors.len(),
        first_error: errors.first().map(|e| (*e).clone()),
        achieved_rate: sent.len() as f64 / issued.as_secs_f64().max(1e-9),
        submit: Latency::of(
            sent.iter()
                .map(|s| s.answered.saturating_duration_since(s.intended))
                .collect(),
        ),
        missing_received: accepted.len() - to_received.len(),
        missing_under_assessment: accepted.len() - to_assessed.len(),
        received: Latency::of(to_received),
        under_assessment: Latency::of(to_assessed),
        duplicates,
        hops: Latency::of(hops),
        hops_by_consumer,
        events_per_second: events as f64 / window.as_secs_f64(),
        rss_peak_kib: sampler.peak_since(rss_from),
        busy_percent: busy_percent(&cpu_before, &cpu_after, window),
        cpu: CpuPerReferral::between(
            (&cpu_before, platform_before),
            (&cpu_drained, platform_drained),
            sent.len(),
        ),
        transactions: transactions_after.saturating_sub(transactions_before) as f64
            / sent.len().max(1) as f64,
    }
}

/// Transactions ended in the pool's database so far (committed or rolled back).
async fn transactions(pool: &sqlx::PgPool) -> u64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database \
         WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .map_or(0, |count| u64::try_from(count).unwrap_or(0))
}

/// The platform of one mode: its processes, intake and notifications endpoints.
async fn start_mode(env: &TestEnv, mode: &str) -> (Vec<CpmProcess>, String, String) {
    if mode == "one" {
        let process = CpmProcess::serve(env, &Target::ALL).await;
        let endpoint = process.endpoint.clone();
        (vec![process], endpoint.clone(), endpoint)
    } else {
        let mut processes = Vec::new();
        let (mut intake, mut notifications) = (String::new(), String::new());
        for target in Target::ALL {
            let process = CpmProcess::serve(env, &[target]).await;
            if target == Target::REFERRAL_INTAKE {
                intake = process.endpoint.clone();
            }
            if target == Target::NOTIFICATIONS {
                notifications = process.endpoint.clone();
            }
            processes.push(process);
        }
        (processes, intake, notifications)
    }
}

async fn flow_mode(mode: &'static str, options: &Options) -> anyhow::Result<(Vec<Step>, u64)> {
    let env = bench_env().await;
    let (processes, intake, notifications) = start_mode(&env, mode).await;
    let pids: Vec<u32> = processes.iter().map(CpmProcess::pid).collect();
    let idle_kib: u64 = pids.iter().filter_map(|pid| rss_kib(*pid)).sum();

    let receipts = Receipts::default();
    let sink = Sink::start(AGENCY, Answer::NoContent, receipts.clone()).await?;
    let channel = cpm::client::connect(&notifications).await?;
    NotificationsServiceClient::new(env.referrer(&channel, AGENCY))
        .register_webhook(RegisterWebhookRequest {
            url: sink.url.clone(),
        })
        .await?;
    let channel = cpm::client::connect(&intake).await?;
    let client = ReferralIntakeServiceClient::new(env.referrer(&channel, AGENCY));
    let pool = env.database().await;
    let sampler = RssSampler::start(pids.clone(), Duration::from_millis(200));

    // Warm-up, not reported: connections, prepared statements, queues.
    eprintln!("[bench] {mode}: warm-up");
    let warm = Options {
        secs: 4,
        drain_secs: 30,
        ..options.clone()
    };
    let platform = Platform {
        mode,
        client: &client,
        receipts: &receipts,
        pool: &pool,
        sampler: &sampler,
        pids: &pids,
    };
    run_step(&platform, 10, &warm).await;

    let mut steps = Vec::new();
    for &rate in &options.rates {
        eprintln!("[bench] {mode}: {rate}/s for {} s", options.secs);
        let step = run_step(&platform, rate, options).await;
        let saturated = step.saturated();
        if let Some(error) = &step.first_error {
            eprintln!("[bench] {mode} {rate}/s: first error: {error}");
        }
        steps.push(step);
        if saturated {
            eprintln!("[bench] {mode}: saturated at {rate}/s; no higher rate");
            break;
        }
    }
    drop(sampler);
    for mut process in processes {
        process.assert_no_panic();
        process.terminate(Duration::from_secs(30)).await;
    }
    drop(sink);
    pool.close().await;
    env.cleanup().await;
    Ok((steps, idle_kib))
}

fn cell(latency: Option<Latency>, pick: fn(&Latency) -> Duration) -> String {
    latency.map_or("-".into(), |latency| ms(pick(&latency)))
}

fn print_flow(steps: &[Step], idle: &[(&str, u64)]) {
    println!("### End-to-end flow\n");
    println!(
        "| mode | rate /s | offered | achieved /s | errors | submit p50 / p99 ms | \
         → RECEIVED p50 / p99 ms | → UNDER_ASSESSMENT p50 / p99 / max ms | missing R / UA | \
         twice | event hops /s | hop p50 / p99 / max ms | RSS peak MiB | machine busy |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for step in steps {
        println!(
            "| {} | {} | {} | {:.1} | {} | {} / {} | {} / {} | {} / {} / {} | {} / {} | {} | {:.0} | {} / {} / {} | {} | {:.0}% |",
            step.mode,
            step.rate,
            step.offered,
            step.achieved_rate,
            step.errors,
            cell(step.submit, |l| l.p50),
            cell(step.submit, |l| l.p99),
            cell(step.received, |l| l.p50),
            cell(step.received, |l| l.p99),
            cell(step.under_assessment, |l| l.p50),
            cell(step.under_assessment, |l| l.p99),
            cell(step.under_assessment, |l| l.max),
            step.missing_received,
            step.missing_under_assessment,
            step.duplicates,
            step.events_per_second,
            cell(step.hops, |l| l.p50),
            cell(step.hops, |l| l.p99),
            cell(step.hops, |l| l.max),
            mib(step.rss_peak_kib),
            step.busy_percent,
        );
    }
    println!();
    println!(
        "CPU per offered referral, from a step's start to the end of its drain \
         (so the backlog's work counts too), by process group; the ceiling is \
         the rate this machine's {} cores could carry at the step's cost; and \
         the PostgreSQL transactions of the mode's database a referral:\n",
        cores()
    );
    println!(
        "| mode | rate /s | platform ms | PostgreSQL ms | RabbitMQ ms | bench ms | machine ms | ceiling /s | PostgreSQL transactions |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for step in steps {
        let cpu = step.cpu;
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} |",
            step.mode,
            step.rate,
            cpu.platform_ms,
            cpu.postgres_ms,
            cpu.rabbitmq_ms,
            cpu.bench_ms,
            cpu.machine_ms,
            cpu.ceiling(),
            step.transactions,
        );
    }
    println!();
    println!("Event hops by the consuming service:\n");
    println!("| mode | rate /s | consumer | events | p50 / p99 / max ms |");
    println!("|---|---:|---|---:|---:|");
    for step in steps {
        for (consumer, hops) in &step.hops_by_consumer {
            println!(
                "| {} | {} | {consumer} | {} | {} / {} / {} |",
                step.mode,
                step.rate,
                hops.count,
                cell(Some(*hops), |l| l.p50),
                cell(Some(*hops), |l| l.p99),
                cell(Some(*hops), |l| l.max),
            );
        }
    }
    println!();
    for (mode, kib) in idle {
        println!(
            "- {mode}: resident memory after start, before any load: {} MiB",
            mib(*kib)
        );
    }
    println!();
}

// --------------------------------------------------------------- import ---

/// A CSV of `rows` valid referrals, each with its own idempotency key.
fn import_file(path: &std::path::Path, rows: usize) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "given_name,family_name,date_of_birth,gender,address,area,phone,\
         safe_contact_instructions,referrer_name,referrer_role,referrer_contact,reason,\
         desired_outcomes,client_consented,vulnerabilities,emergency_calls_last_12_months,\
         known_risks,idempotency_key"
    )?;
    for row in 0..rows {
        writeln!(
            out,
            "Morgan,Fictitious{row},1961-02-03,female,{row} Imaginary Lane,Northshire,\
             07700 900001,text first,PC Example,frontline,pc.example@police.example,\
             lonely and calling 999,a routine,yes,high_impact_user;vulnerable_and_isolated,30,,\
             historic-{row}"
        )?;
    }
    out.flush()?;
    Ok(())
}

struct ImportRun {
    rows: usize,
    wall: Duration,
    succeeded: bool,
    summary: String,
    /// (seconds, import RSS KiB), sampled every 250 ms.
    import_rss: Vec<(f64, u64)>,
    platform_peak_kib: u64,
    file_bytes: u64,
    cpu: ImportCpu,
    /// The progress bar's counting pass over the file, timed here (the
    /// import's stderr is not a terminal, so it draws no bar and skips it).
    count: Duration,
}

/// CPU seconds spent while the import ran, by process group, to tell
/// which side sets its rate.
#[derive(Default)]
struct ImportCpu {
    import: f64,
    platform: f64,
    postgres: f64,
    rabbitmq: f64,
    /// The whole machine, busy seconds (all cores).
    machine: f64,
}

async fn import_run(options: &Options, rows: usize) -> anyhow::Result<ImportRun> {
    let env = bench_env().await;
    let platform = CpmProcess::serve(&env, options.import_targets).await;
    let platform_sampler = RssSampler::start(vec![platform.pid()], Duration::from_millis(250));
    let dir = std::env::temp_dir().join(format!("cpm-bench-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("historic.csv");
    import_file(&file, rows)?;
    let file_bytes = std::fs::metadata(&file)?.len();
    let counting = Instant::now();
    let counted = cpm::import::count_rows(std::fs::File::open(&file)?)?;
    let count = counting.elapsed();
    anyhow::ensure!(counted == rows as u64, "counted {counted} of {rows} rows");
    let config = dir.join("cpm.toml");
    std::fs::write(&config, toml::to_string(&env.settings)?)?;

    eprintln!("[bench] import: {rows} rows");
    let cpu_before = cpu_snapshot();
    let platform_before = process_ticks(platform.pid());
    let started = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cpm-under-test"))
        .arg("--config")
        .arg(&config)
        .arg("import")
        .arg(&file)
        .args([
            "--endpoint",
            &platform.endpoint,
            "--agency",
            "agency-import",
        ])
        .args(["--concurrency", &options.import_concurrency.to_string()])
        .env_remove("CPM_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().expect("import running");
    let sampler = RssSampler::start(vec![pid], Duration::from_millis(250));
    let mut stdout = child.stdout.take().expect("piped");
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text).await;
        text
    });
    let status = child.wait().await?;
    let wall = started.elapsed();
    let platform_after = process_ticks(platform.pid());
    let cpu_after = cpu_snapshot();
    let secs = |ticks: u64| ticks as f64 / clock_ticks();
    let cpu = ImportCpu {
        // The import is the only child waited for meanwhile.
        import: secs(cpu_after.bench_children - cpu_before.bench_children),
        platform: secs(platform_after.saturating_sub(platform_before)),
        postgres: secs(cpu_after.postgres.saturating_sub(cpu_before.postgres)),
        rabbitmq: secs(cpu_after.rabbitmq.saturating_sub(cpu_before.rabbitmq)),
        machine: secs(cpu_after.busy.saturating_sub(cpu_before.busy)),
    };
    let import_rss = sampler
        .stop()
        .into_iter()
        .filter(|(_, kib)| *kib > 0)
        .collect();
    let summary = reader.await?;
    let platform_peak_kib = platform_sampler.peak_since(0.0);
    drop(platform_sampler);
    drop(platform);
    env.cleanup().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ImportRun {
        rows,
        wall,
        succeeded: status.success(),
        summary,
        import_rss,
        platform_peak_kib,
        file_bytes,
        cpu,
        count,
    })
}

fn print_import(run: &ImportRun) {
    println!("### cpm import: {} rows\n", run.rows);
    let secs = run.wall.as_secs_f64();
    let peak = run
        .import_rss
        .iter()
        .map(|(_, kib)| *kib)
        .max()
        .unwrap_or(0);
    println!(
        "{} rows ({:.1} MB file) in {:.1} s: {:.0} rows/s; exit {}; extrapolated to 1,000,000 rows at this rate: {:.1} min",
        run.rows,
        run.file_bytes as f64 / 1e6,
        secs,
        run.rows as f64 / secs,
        if run.succeeded { "0" } else { "non-zero" },
        1_000_000.0 / (run.rows as f64 / secs) / 60.0,
    );
    println!(
        "\n`cpm import` resident memory: peak {} MiB; the platform (one process): peak {} MiB\n",
        mib(peak),
        mib(run.platform_peak_kib)
    );
    let per_row = |cpu_secs: f64| cpu_secs * 1000.0 / run.rows as f64;
    let cpu = &run.cpu;
    println!(
        "CPU per row: import {:.2} ms, platform {:.2} ms, PostgreSQL {:.2} ms, RabbitMQ {:.2} ms; \
         the machine was {:.0}% busy ({:.2} ms of CPU per row over {} cores)\n",
        per_row(cpu.import),
        per_row(cpu.platform),
        per_row(cpu.postgres),
        per_row(cpu.rabbitmq),
        cpu.machine / (secs * cores() as f64) * 100.0,
        per_row(cpu.machine),
        cores(),
    );
    println!(
        "Counting the rows for the progress bar (a pass over the file, page-cached): {:.0} ms\n",
        run.count.as_secs_f64() * 1000.0
    );
    println!("| share of the run | import RSS MiB |");
    println!("|---:|---:|");
    for share in [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0] {
        let at = share * secs;
        if let Some((_, kib)) = run
            .import_rss
            .iter()
            .min_by(|a, b| (a.0 - at).abs().total_cmp(&(b.0 - at).abs()))
        {
            println!("| {:.0}% | {} |", share * 100.0, mib(*kib));
        }
    }
    println!("\n```\n{}```\n", run.summary);
}

// ----------------------------------------------------------------- main ---

fn main() -> anyhow::Result<()> {
    let options = Options::read()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(options))
}

async fn run(options: Options) -> anyhow::Result<()> {
    eprintln!(
        "[bench] machine: {} cores; the platform runs as `cpm serve` child processes",
        integration_tests::bench::proc::cores()
    );
    if options.flow {
        let mut steps = Vec::new();
        let mut idle = Vec::new();
        for mode in options.modes.clone() {
            let mode: &'static str = if mode == "one" { "one" } else { "five" };
            let (mode_steps, idle_kib) = flow_mode(mode, &options).await?;
            steps.extend(mode_steps);
            idle.push((mode, idle_kib));
        }
        print_flow(&steps, &idle);
    }
    if options.import {
        for &rows in options.import_rows.iter().filter(|rows| **rows > 0) {
            let run = import_run(&options, rows).await?;
            let services: Vec<&str> = options.import_targets.iter().map(|t| t.as_str()).collect();
            println!("Serving the import: {}.\n", services.join(", "));
            print_import(&run);
        }
    }
    Ok(())
}
