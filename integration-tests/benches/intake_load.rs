//! SubmitReferral under concurrent load, measured in one run on one machine
//! beside two references: pgbench running the same transaction straight
//! against PostgreSQL (the database's ceiling for it) and a bare tonic
//! server answering grpc.health.v1 Check (the ceiling of gRPC here).
//! Prints a markdown table for docs/performance.md. Last, the same bare
//! server asking PostgreSQL once and twice before it answers (`SELECT 1` on
//! a warm connection, as SubmitReferral's two statements are): the least a
//! call that reads or writes the database costs the server, so the target
//! on SubmitReferral's server CPU against the echo's (≤ 3×) can be read
//! apart from what one database round trip alone costs.
//!
//!     bash deploy/bench.sh
//!     cargo bench -p integration-tests --bench intake_load -- --concurrency 8,32 --secs 10
//!
//! Settings (flag or environment variable, flags win):
//!
//! - `--concurrency` / `BENCH_CONCURRENCY`: comma-separated client counts (8,32)
//! - `--secs` / `BENCH_SECS`: measured seconds per run (10)
//! - `--warmup-secs` / `BENCH_WARMUP_SECS`: unmeasured seconds before each run (2)
//! - `--pool` / `BENCH_POOL`: the service's database pool size (the platform default, 8)
//! - `--rounds` / `BENCH_ROUNDS`: whole runs, one after another, each in a fresh
//!   database; the summary gives every round's ratios and their median (1)
//! - `--hold-events` / `BENCH_HOLD_EVENTS`: `true` keeps the outbox relay from
//!   publishing during the runs (linger and poll of an hour), so the server's
//!   CPU is the request path alone; the events pile up in the outbox (false)
//! - `PGBENCH`: the pgbench binary (else the newest /usr/lib/postgresql/*/bin/pgbench, else PATH)
//!
//! Order: the platform (referral-intake only) is measured first at every
//! concurrency, then stopped, so pgbench and the echo server each get the
//! machine to themselves. A CHECKPOINT precedes every run.

#[allow(dead_code)]
#[path = "../tests/platform/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cpm::Target;
use cpm_proto::Event as _;
use cpm_proto::v1::ReferralSubmitted;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use futures::future::BoxFuture;
use prost::Message as _;
use tokio::net::TcpListener;
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use harness::{Authed, TestEnv};
use integration_tests::bench::latency::ms;
use integration_tests::bench::proc::{CpuSnapshot, clock_ticks, cores, thread_ticks};
use integration_tests::bench::{Flags, Latency};

const AGENCY: &str = "agency-bench";

struct Options {
    concurrency: Vec<usize>,
    secs: u64,
    warmup_secs: u64,
    pool: u32,
    rounds: usize,
    hold_events: bool,
}

impl Options {
    fn read() -> anyhow::Result<Self> {
        let flags = Flags::read(&[
            ("concurrency", "BENCH_CONCURRENCY"),
            ("secs", "BENCH_SECS"),
            ("warmup-secs", "BENCH_WARMUP_SECS"),
            ("pool", "BENCH_POOL"),
            ("rounds", "BENCH_ROUNDS"),
            ("hold-events", "BENCH_HOLD_EVENTS"),
        ])?;
        let concurrency: Vec<usize> = flags.list_or("concurrency", "8,32")?;
        anyhow::ensure!(
            !concurrency.is_empty() && concurrency.iter().all(|n| *n > 0),
            "concurrency must list positive numbers"
        );
        Ok(Self {
            concurrency,
            secs: flags.parse_or("secs", "10")?,
            warmup_secs: flags.parse_or("warmup-secs", "2")?,
            pool: flags.parse_or(
                "pool",
                &cpm_runtime::config::DatabaseConfig::default()
                    .max_connections
                    .to_string(),
            )?,
            rounds: flags.parse_or("rounds", "1")?,
            hold_events: flags.parse_or("hold-events", "false")?,
        })
    }
}

// -------------------------------------------------------- client runtime ---

/// Thread names of the load generator's own runtime.
const CLIENT_THREADS: &str = "bench-client";

static CLIENT_RUNTIME: OnceLock<tokio::runtime::Handle> = OnceLock::new();

/// The runtime the gRPC clients run on: apart from the server's, with named
/// threads, so that /proc tells the load generator's CPU from the server's
/// (issue 16 item 4: the service's own cost, without the client's).
fn client_runtime() -> &'static tokio::runtime::Handle {
    CLIENT_RUNTIME
        .get()
        .expect("main starts the client runtime")
}

/// CPU by process group, with the client runtime's threads apart.
fn snapshot() -> CpuSnapshot {
    CpuSnapshot {
        threads: thread_ticks(CLIENT_THREADS),
        ..integration_tests::bench::proc::cpu_snapshot()
    }
}

/// Connects on the client runtime, so the connection's I/O task runs there.
async fn client_connect(endpoint: &str) -> anyhow::Result<tonic::transport::Channel> {
    let endpoint = endpoint.to_owned();
    client_runtime()
        .spawn(async move { cpm::client::connect(&endpoint).await })
        .await?
}

// ------------------------------------------------------------------ CPU ---

/// CPU milliseconds per request by group, and machine utilisation.
#[derive(Clone, Copy, Default)]
struct CpuUse {
    bench_ms: f64,
    /// This process less its load-generator threads: the server side alone.
    server_ms: f64,
    client_ms: f64,
    pgbench_ms: f64,
    postgres_ms: f64,
    rabbitmq_ms: f64,
    other_ms: f64,
    busy_percent: f64,
}

fn cpu_use(before: CpuSnapshot, after: CpuSnapshot, requests: u64, elapsed: Duration) -> CpuUse {
    let tick_ms = 1000.0 / clock_ticks();
    let per = |ticks: u64| ticks as f64 * tick_ms / requests.max(1) as f64;
    let bench = after.bench.saturating_sub(before.bench);
    let client = after.threads.saturating_sub(before.threads).min(bench);
    let pgbench = after.bench_children.saturating_sub(before.bench_children);
    let postgres = after.postgres.saturating_sub(before.postgres);
    let rabbitmq = after.rabbitmq.saturating_sub(before.rabbitmq);
    let busy = after.busy.saturating_sub(before.busy);
    let other = busy.saturating_sub(bench + pgbench + postgres + rabbitmq);
    CpuUse {
        bench_ms: per(bench),
        server_ms: per(bench - client),
        client_ms: per(client),
        pgbench_ms: per(pgbench),
        postgres_ms: per(postgres),
        rabbitmq_ms: per(rabbitmq),
        other_ms: per(other),
        busy_percent: busy as f64 * tick_ms / (elapsed.as_secs_f64() * 1000.0 * cores() as f64)
            * 100.0,
    }
}

// ---------------------------------------------------------- measurement ---

struct Measurement {
    name: String,
    concurrency: usize,
    requests: u64,
    per_second: f64,
    errors: u64,
    latency: Option<Latency>,
    cpu: CpuUse,
}

type Call<C> = for<'a> fn(&'a mut C) -> BoxFuture<'a, Result<(), Status>>;

/// Runs one task per client, each calling back to back, for the warm-up and
/// then the window. A call counts when it completes inside the window.
async fn hammer<C: Send + 'static>(
    name: &str,
    clients: Vec<C>,
    call: Call<C>,
    warmup: Duration,
    window: Duration,
) -> Measurement {
    let concurrency = clients.len();
    let start = Instant::now();
    let from = start + warmup;
    let until = from + window;
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let before = tokio::task::spawn_blocking(snapshot).await.unwrap();
        tokio::time::sleep_until(until.into()).await;
        let after = tokio::task::spawn_blocking(snapshot).await.unwrap();
        (before, after)
    });
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            client_runtime().spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 14);
                let mut errors = 0u64;
                let mut first_error = None;
                loop {
                    let began = Instant::now();
                    if began >= until {
                        break;
                    }
                    let result = call(&mut client).await;
                    let done = Instant::now();
                    if done >= from && done < until {
                        match result {
                            Ok(()) => latencies.push(done - began),
                            Err(status) => {
                                errors += 1;
                                first_error.get_or_insert(status);
                            }
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (mut task_latencies, task_errors, first_error) = task.await.unwrap();
        latencies.append(&mut task_latencies);
        errors += task_errors;
        if let Some(status) = first_error {
            eprintln!("[bench] {name}: an error: {status}");
        }
    }
    let (before, after) = sampler.await.unwrap();
    let requests = latencies.len() as u64;
    Measurement {
        name: name.to_owned(),
        concurrency,
        requests,
        per_second: requests as f64 / window.as_secs_f64(),
        errors,
        latency: Latency::of(latencies),
        cpu: cpu_use(before, after, requests, window),
    }
}

// ------------------------------------------------------- SubmitReferral ---

fn submit(client: &mut ReferralIntakeServiceClient<Authed>) -> BoxFuture<'_, Result<(), Status>> {
    Box::pin(async move {
        client
            .submit_referral(harness::referral_request("Northshire"))
            .await
            .map(drop)
    })
}

async fn intake_clients(
    env: &TestEnv,
    endpoint: &str,
    n: usize,
) -> Vec<ReferralIntakeServiceClient<Authed>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        // One HTTP/2 connection per client, as separate agencies' systems would have.
        let channel = client_connect(endpoint).await.unwrap();
        clients.push(ReferralIntakeServiceClient::new(
            env.referrer(&channel, AGENCY),
        ));
    }
    clients
}

/// The queue risk-assessment binds to `cpm.referral.submitted`, declared here
/// because only referral-intake runs: without it every event would be
/// unroutable and the relay would retry it instead of deleting it.
async fn declare_downstream_queue(env: &TestEnv) -> anyhow::Result<()> {
    let (connection, channel) = env.amqp_channel().await;
    let topology =
        cpm_runtime::bus::Topology::new(&env.namespace, env.settings.platform.amqp.delivery_limit);
    topology
        .declare_consumer_queue(
            &channel,
            &env.queue("risk-assessment", "referrals"),
            &[ReferralSubmitted::TYPE],
        )
        .await?;
    let _ = connection.close(200, "declared".into()).await;
    Ok(())
}

/// Registers the bench agency when the schema has an agency registry.
async fn register_agency(pool: &sqlx::PgPool) {
    let schema = referral_intake::SCHEMA;
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(format!("{schema}.agency"))
        .fetch_one(pool)
        .await
        .unwrap_or(None);
    if exists.is_some() {
        let result = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {schema}.agency (agency_id, name, kind, registered_by) \
             VALUES ($1, 'Bench agency', 0, 'bench') ON CONFLICT DO NOTHING"
        )))
        .bind(AGENCY)
        .execute(pool)
        .await;
        if let Err(error) = result {
            eprintln!("[bench] registering the agency failed: {error}");
        }
    }
}

async fn checkpoint(pool: &sqlx::PgPool) {
    if let Err(error) = sqlx::query("CHECKPOINT").execute(pool).await {
        eprintln!("[bench] CHECKPOINT failed: {error}");
    }
}

/// Waits (bounded) until the relay has published every outbox row, so one
/// run's backlog does not spill into the next.
async fn drain_outbox(pool: &sqlx::PgPool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}.outbox",
            referral_intake::SCHEMA
        )))
        .fetch_one(pool)
        .await
        .unwrap_or(0);
        if left == 0 || Instant::now() > deadline {
            if left > 0 {
                eprintln!("[bench] {left} outbox rows still unpublished");
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------ database probes ---

/// Samples pg_stat_activity every 10 ms for `window` after `warmup`: how
/// often each statement was running, a poor man's profile of database time.
async fn sample_activity(
    pool: sqlx::PgPool,
    warmup: Duration,
    window: Duration,
) -> (u64, Vec<(String, u64)>) {
    tokio::time::sleep(warmup).await;
    let until = Instant::now() + window;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut samples = 0;
    while Instant::now() < until {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT query, wait_event FROM pg_stat_activity \
             WHERE datname = current_database() AND state = 'active' \
             AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        samples += 1;
        for (query, wait) in rows {
            let mut text: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
            text.truncate(70);
            let key = format!("{text} [{}]", wait.unwrap_or_else(|| "on CPU".into()));
            *counts.entry(key).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    counts.truncate(12);
    (samples, counts)
}

/// Commits in the database and row activity on the outbox, cumulative.
async fn database_counters(pool: &sqlx::PgPool) -> (i64, i64, i64, i64, i64) {
    let commits: i64 = sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .unwrap_or(0);
    let outbox: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT n_tup_del, n_dead_tup, coalesce(idx_scan, 0), coalesce(idx_tup_fetch, 0) \
         FROM pg_stat_user_tables WHERE relname = 'outbox' AND schemaname = $1",
    )
    .bind(referral_intake::SCHEMA)
    .fetch_one(pool)
    .await
    .unwrap_or_default();
    (commits, outbox.0, outbox.1, outbox.2, outbox.3)
}

fn print_activity(title: &str, samples: u64, counts: &[(String, u64)]) {
    println!();
    println!(
        "{title}: statements seen running in {samples} samples of pg_stat_activity (mean backends busy on each):"
    );
    println!();
    println!("| statement [wait event] | mean active |");
    println!("|---|---:|");
    for (query, count) in counts {
        println!(
            "| `{}` | {:.2} |",
            query.replace('|', "\\|"),
            *count as f64 / samples.max(1) as f64
        );
    }
}

/// The plans PostgreSQL uses for the earlier-referral lookup, generic (what a
/// long-lived prepared statement ends up with) and custom, on the table as
/// the load left it.
async fn explain_fingerprint_lookup(pool: &sqlx::PgPool) {
    let Ok(mut connection) = pool.acquire().await else {
        return;
    };
    let schema = referral_intake::SCHEMA;
    let stats: Option<(i64, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
        "SELECT n_live_tup, last_autoanalyze FROM pg_stat_user_tables \
         WHERE schemaname = $1 AND relname = 'referral'",
    )
    .bind(schema)
    .fetch_optional(&mut *connection)
    .await
    .unwrap_or(None);
    println!();
    println!(
        "Earlier-referral lookup on the referral table after the SubmitReferral runs (live rows, last autoanalyze): {stats:?}"
    );
    let statements = [
        format!("SET search_path = {schema}"),
        "PREPARE bench_lookup(bytea[]) AS SELECT referral_id FROM referral \
         WHERE client_fingerprint = ANY($1) ORDER BY submitted_at DESC, referral_id DESC LIMIT 1"
            .to_owned(),
    ];
    for statement in statements {
        if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut *connection)
            .await
        {
            println!("(explain skipped: {error})");
            return;
        }
    }
    for mode in ["force_generic_plan", "force_custom_plan"] {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET plan_cache_mode = {mode}")))
            .execute(&mut *connection)
            .await;
        let plan: Vec<String> = sqlx::query_scalar(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE bench_lookup(ARRAY[sha256('a'::bytea), sha256('b'::bytea)])",
        )
        .fetch_all(&mut *connection)
        .await
        .unwrap_or_default();
        println!();
        println!("{mode}:");
        println!();
        println!("```");
        for line in plan {
            println!("{line}");
        }
        println!("```");
    }
    let _ = sqlx::raw_sql("DEALLOCATE bench_lookup; RESET plan_cache_mode; RESET search_path")
        .execute(&mut *connection)
        .await;
}

// -------------------------------------------------------------- pgbench ---

fn find_pgbench() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("PGBENCH") {
        return Some(PathBuf::from(path));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let path = entry.path().join("bin/pgbench");
            path.exists().then_some((version, path))
        })
        .collect();
    versions.sort();
    if let Some((_, path)) = versions.pop() {
        return Some(path);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("pgbench"))
            .find(|path| path.exists())
    })
}

/// Byte sizes of what the service stored, so pgbench writes rows as large.
struct RowSizes {
    wrapped_data_key: i32,
    sealed_details: i32,
    envelope: i32,
}

async fn row_sizes(pool: &sqlx::PgPool) -> RowSizes {
    let schema = referral_intake::SCHEMA;
    let measured: Option<(Option<i32>, Option<i32>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT avg(length(wrapped_data_key))::int, avg(length(sealed_details))::int \
         FROM {schema}.client_record"
        )))
        .fetch_one(pool)
        .await
        .ok();
    let (wrapped, sealed) = measured.unwrap_or((None, None));
    let event = ReferralSubmitted {
        referral_id: uuid::Uuid::now_v7().to_string(),
        agency_id: AGENCY.into(),
        area: "Northshire".into(),
        submitted_at: Some(cpm_runtime::grpc::values::timestamp(chrono::Utc::now())),
        vulnerabilities: vec![1],
        client_gender: 1,
        ..Default::default()
    };
    let envelope = cpm_runtime::bus::outbox::envelope(referral_intake::NAME, &event);
    RowSizes {
        wrapped_data_key: wrapped.unwrap_or(60),
        sealed_details: sealed.unwrap_or(500),
        envelope: envelope.encode_to_vec().len() as i32,
    }
}

/// A random-looking bytea of exactly `len` bytes, computed per transaction.
fn random_bytes_sql(len: i32) -> String {
    let blocks = len.max(1).unsigned_abs().div_ceil(16);
    format!("substr(decode(repeat(md5(random()::text), {blocks}), 'hex'), 1, {len})")
}

/// The pgbench script: the statements SubmitReferral runs, in its order,
/// with values of the same types and sizes. Like SubmitReferral, it raises
/// no NOTIFY (the service wakes its relay in-process).
fn pgbench_script(sizes: &RowSizes, check_agency: bool) -> String {
    let fingerprint = "sha256(convert_to('bench|' || :n::text, 'UTF8'))";
    let mut script = String::from(
        "-- The statements of SubmitReferral (services/referral-intake/src/db.rs).\n\
         \\set n random(1, 1000000000000)\n",
    );
    let agency = if check_agency {
        format!("(SELECT active FROM agency WHERE agency_id = '{AGENCY}')")
    } else {
        "NULL::boolean".to_owned()
    };
    script.push_str(&format!(
        "SELECT {agency} AS agency_active, \
         (SELECT referral_id FROM referral WHERE client_fingerprint = {fingerprint} \
         ORDER BY submitted_at DESC, referral_id DESC LIMIT 1) AS earlier_referral_id;\n"
    ));
    script.push_str(&format!(
        "WITH inserted AS (INSERT INTO referral (referral_id, agency_id, idempotency_key_hash, \
         request_hash, submitted_by, area, client_gender, vulnerabilities, \
         emergency_calls_last_12_months, client_consented, client_fingerprint, earlier_referral_id, \
         status, status_rank) \
         VALUES (gen_random_uuid(), 'agency-pgbench', sha256(convert_to(random()::text, 'UTF8')), \
         sha256(convert_to(random()::text, 'UTF8')), 'referrer', 'Northshire', 1, '{{1}}', 12, \
         true, {fingerprint}, NULL, 1, 0) \
         ON CONFLICT ON CONSTRAINT referral_idempotency_key DO NOTHING RETURNING referral_id), \
         sealed AS (INSERT INTO client_record (referral_id, wrapped_data_key, sealed_details) \
         SELECT referral_id, {}, {} FROM inserted), \
         announced AS (INSERT INTO outbox (event_id, event_type, envelope, trace_context) \
         SELECT gen_random_uuid(), '{}', {}, '{{}}'::jsonb FROM inserted) \
         SELECT * FROM inserted;\n",
        random_bytes_sql(sizes.wrapped_data_key),
        random_bytes_sql(sizes.sealed_details),
        ReferralSubmitted::TYPE,
        random_bytes_sql(sizes.envelope),
    ));
    script
}

struct PgbenchRun {
    measurement: Measurement,
    statements: String,
}

async fn run_pgbench(
    pgbench: &Path,
    database_url: &str,
    script: &Path,
    log_dir: &Path,
    n: usize,
    options: &Options,
) -> anyhow::Result<PgbenchRun> {
    let threads = n.min(2);
    let base = |secs: u64| {
        let mut command = tokio::process::Command::new(pgbench);
        command
            .env(
                "PGOPTIONS",
                format!("-c search_path={}", referral_intake::SCHEMA),
            )
            .args(["-n", "-M", "prepared"])
            .args(["-c", &n.to_string(), "-j", &threads.to_string()])
            .args(["-T", &secs.to_string()]);
        command
    };
    if options.warmup_secs > 0 {
        let warmup = base(options.warmup_secs)
            .arg("-f")
            .arg(script)
            .arg(database_url)
            .output()
            .await?;
        anyhow::ensure!(
            warmup.status.success(),
            "pgbench warm-up failed: {}",
            String::from_utf8_lossy(&warmup.stderr)
        );
    }
    let prefix = log_dir.join(format!("c{n}"));
    let before = snapshot();
    let started = Instant::now();
    let output = base(options.secs)
        .args(["-r", "-l", "--log-prefix"])
        .arg(&prefix)
        .arg("-f")
        .arg(script)
        .arg(database_url)
        .current_dir(log_dir)
        .output()
        .await?;
    let elapsed = started.elapsed();
    let after = snapshot();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let number_after = |label: &str| {
        stdout
            .lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<f64>().ok())
    };
    let tps = number_after("tps = ").ok_or_else(|| anyhow::anyhow!("no tps in:\n{stdout}"))?;
    let failed = number_after("number of failed transactions: ").unwrap_or(0.0) as u64;
    // Per-transaction log lines: client_id transaction_no time_us script_no epoch epoch_us.
    let mut latencies = Vec::new();
    let file_prefix = format!("c{n}.");
    for entry in std::fs::read_dir(log_dir)?.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(&file_prefix)
        {
            continue;
        }
        for line in std::fs::read_to_string(entry.path())?.lines() {
            if let Some(micros) = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
            {
                latencies.push(Duration::from_micros(micros));
            }
        }
    }
    let requests = latencies.len() as u64;
    let statements = stdout
        .split_once("statement latencies")
        .map(|(_, rest)| format!("statement latencies{rest}"))
        .unwrap_or_default();
    Ok(PgbenchRun {
        measurement: Measurement {
            name: "pgbench, same transaction".into(),
            concurrency: n,
            requests,
            per_second: tps,
            errors: failed,
            latency: Latency::of(latencies),
            cpu: cpu_use(before, after, requests, elapsed),
        },
        statements,
    })
}

// ----------------------------------------------------------------- echo ---

fn check(
    client: &mut HealthClient<tonic::transport::Channel>,
) -> BoxFuture<'_, Result<(), Status>> {
    Box::pin(async move {
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(drop)
    })
}

/// A tonic server with nothing but grpc.health.v1, on loopback.
async fn start_echo() -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    serve(tonic::service::Routes::new(health), reporter).await
}

/// Serves `routes` on a loopback port until the sender is used or dropped;
/// `keep` lives as long as the server.
async fn serve(
    routes: tonic::service::Routes,
    keep: impl Send + 'static,
) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = stopped.await;
                },
            )
            .await;
        drop(keep);
    });
    Ok((format!("http://{address}"), stop))
}

/// A bare tonic server whose Check asks PostgreSQL `queries` times before
/// answering, on a connection kept warm as SubmitReferral's is.
struct Asking {
    warm: cpm_runtime::db::warm::WarmPool,
    queries: usize,
}

#[tonic::async_trait]
impl Health for Asking {
    async fn check(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        let unavailable = |error: sqlx::Error| Status::unavailable(error.to_string());
        let mut connection = self.warm.acquire().await.map_err(unavailable)?;
        for _ in 0..self.queries {
            sqlx::query("SELECT 1")
                .execute(&mut *connection)
                .await
                .map_err(unavailable)?;
        }
        connection.release();
        Ok(tonic::Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream = futures::stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("the bench asks with Check only"))
    }
}

/// [`Asking`] on loopback, its pool the size SubmitReferral's has.
async fn start_asking(
    env: &TestEnv,
    pool_size: u32,
    queries: usize,
) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let mut config = env.settings.platform.database.clone();
    config.max_connections = pool_size;
    let pool = cpm_runtime::db::pool(&config, "public")?;
    let service = HealthServer::new(Asking {
        warm: cpm_runtime::db::warm::WarmPool::new(pool),
        queries,
    });
    serve(tonic::service::Routes::new(service), ()).await
}

/// The name of the echo that asks PostgreSQL `queries` times.
fn asking_name(queries: usize) -> String {
    format!("tonic echo + {queries} × SELECT 1")
}

// --------------------------------------------------------------- report ---

fn print_table(measurements: &[Measurement]) {
    println!(
        "| measurement | clients | requests | req/s | mean ms | p50 ms | p90 ms | p99 ms | max ms | errors | \
         CPU ms/req: this process | of it server | of it client | pgbench | postgres | rabbitmq | other | machine busy |"
    );
    println!(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for m in measurements {
        let latency = m.latency.unwrap_or_default();
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0}% |",
            m.name,
            m.concurrency,
            m.requests,
            m.per_second,
            ms(latency.mean),
            ms(latency.p50),
            ms(latency.p90),
            ms(latency.p99),
            ms(latency.max),
            m.errors,
            m.cpu.bench_ms,
            m.cpu.server_ms,
            m.cpu.client_ms,
            m.cpu.pgbench_ms,
            m.cpu.postgres_ms,
            m.cpu.rabbitmq_ms,
            m.cpu.other_ms,
            m.cpu.busy_percent,
        );
    }
}

/// SubmitReferral's rate over another measurement's at `n` clients.
fn ratio(measurements: &[Measurement], other: &str, n: usize) -> Option<f64> {
    let rate = |prefix: &str| {
        measurements
            .iter()
            .find(|m| m.name.starts_with(prefix) && m.concurrency == n)
            .map(|m| m.per_second)
    };
    rate("SubmitReferral").zip(rate(other)).map(|(a, b)| a / b)
}

/// SubmitReferral's server-side CPU per request over the bare echo
/// server's at `n` clients: what the service costs beyond gRPC itself.
fn server_cpu_ratio(measurements: &[Measurement], n: usize) -> Option<f64> {
    cpu_ratio(measurements, "SubmitReferral", "tonic echo (", n)
}

/// The server-side CPU per request of the measurement named `of` over that
/// of the one named `over` (prefixes), at `n` clients.
fn cpu_ratio(measurements: &[Measurement], of: &str, over: &str, n: usize) -> Option<f64> {
    let cost = |prefix: &str| {
        measurements
            .iter()
            .find(|m| m.name.starts_with(prefix) && m.concurrency == n)
            .map(|m| m.cpu.server_ms)
            .filter(|ms| *ms > 0.0)
    };
    cost(of).zip(cost(over)).map(|(a, b)| a / b)
}

/// What a database round trip alone costs against the echo, and what
/// SubmitReferral costs beyond its two: the 3× target read apart.
fn print_floor(measurements: &[Measurement], concurrency: &[usize]) {
    println!(
        "| clients | server CPU per request: echo + 1 SELECT / echo | echo + 2 SELECTs / echo | \
         SubmitReferral / echo + 2 SELECTs |"
    );
    println!("|---:|---:|---:|---:|");
    for &n in concurrency {
        let echo = "tonic echo (";
        println!(
            "| {n} | {} | {} | {} |",
            times_of(cpu_ratio(measurements, &asking_name(1), echo, n)),
            times_of(cpu_ratio(measurements, &asking_name(2), echo, n)),
            times_of(cpu_ratio(
                measurements,
                "SubmitReferral",
                &asking_name(2),
                n
            )),
        );
    }
}

fn times_of(ratio: Option<f64>) -> String {
    ratio.map_or("n/a".into(), |r| format!("{r:.1}×"))
}

fn percent(ratio: Option<f64>) -> String {
    ratio.map_or("n/a".into(), |r| format!("{:.0}%", r * 100.0))
}

fn print_ratios(measurements: &[Measurement], concurrency: &[usize]) {
    println!(
        "| clients | SubmitReferral / pgbench | SubmitReferral / echo | \
         server CPU per request, SubmitReferral / echo | target ≤ 3× |"
    );
    println!("|---:|---:|---:|---:|---|");
    for &n in concurrency {
        let cpu = server_cpu_ratio(measurements, n);
        let verdict = cpu.map_or("n/a", |r| if r <= 3.0 { "met" } else { "not met" });
        println!(
            "| {n} | {} | {} | {} | {verdict} |",
            percent(ratio(measurements, "pgbench", n)),
            percent(ratio(measurements, "tonic echo (", n)),
            times_of(cpu),
        );
    }
}

/// Every round's ratios and their medians: on a shared machine one round
/// can be off by ten points either way. The 70%-of-pgbench target was
/// withdrawn (issue 16 item 4); the server's CPU per request against the
/// bare echo's, target ≤ 3×, replaced it.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => None,
        len if len % 2 == 1 => Some(values[len / 2]),
        len => Some((values[len / 2 - 1] + values[len / 2]) / 2.0),
    }
}

fn print_rounds(rounds: &[Vec<Measurement>], concurrency: &[usize]) {
    println!(
        "| clients | SubmitReferral / pgbench, round by round | median | \
         server CPU per request / echo's, round by round | median | target ≤ 3× |"
    );
    println!("|---:|---|---:|---|---:|---|");
    for &n in concurrency {
        let pg: Vec<f64> = rounds
            .iter()
            .filter_map(|round| ratio(round, "pgbench", n))
            .collect();
        let cpu: Vec<f64> = rounds
            .iter()
            .filter_map(|round| server_cpu_ratio(round, n))
            .collect();
        let list = |values: &[f64], show: fn(Option<f64>) -> String| {
            values
                .iter()
                .map(|r| show(Some(*r)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (pg_list, cpu_list) = (list(&pg, percent), list(&cpu, times_of));
        let cpu_median = median(cpu);
        let verdict = cpu_median.map_or("n/a", |r| if r <= 3.0 { "met" } else { "not met" });
        println!(
            "| {n} | {pg_list} | {} | {cpu_list} | {} | {verdict} |",
            percent(median(pg)),
            times_of(cpu_median),
        );
    }
    println!();
    println!(
        "| clients | echo + 2 SELECTs / echo, round by round | median | \
         SubmitReferral / echo + 2 SELECTs, round by round | median |"
    );
    println!("|---:|---|---:|---|---:|");
    for &n in concurrency {
        let of_rounds = |of: &str, over: &str| -> Vec<f64> {
            rounds
                .iter()
                .filter_map(|round| cpu_ratio(round, of, over, n))
                .collect()
        };
        let floor = of_rounds(&asking_name(2), "tonic echo (");
        let beyond = of_rounds("SubmitReferral", &asking_name(2));
        let list = |values: &[f64]| {
            values
                .iter()
                .map(|r| times_of(Some(*r)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (floor_list, beyond_list) = (list(&floor), list(&beyond));
        println!(
            "| {n} | {floor_list} | {} | {beyond_list} | {} |",
            times_of(median(floor)),
            times_of(median(beyond)),
        );
    }
}

// ----------------------------------------------------------------- main ---

fn main() -> anyhow::Result<()> {
    let options = Options::read()?;
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores())
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()?;
    CLIENT_RUNTIME
        .set(clients.handle().clone())
        .expect("set once");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(options))
}

async fn run(options: Options) -> anyhow::Result<()> {
    let warmup = Duration::from_secs(options.warmup_secs);
    let window = Duration::from_secs(options.secs);
    let mut rounds = Vec::new();
    for round in 1..=options.rounds.max(1) {
        if options.rounds > 1 {
            eprintln!("[bench] round {round} of {}", options.rounds);
            println!();
            println!("# Round {round} of {}", options.rounds);
            println!();
        }
        let mut measurements = Vec::new();
        let env = TestEnv::new().await;
        let outcome = measure_all(&env, &options, warmup, window, &mut measurements).await;
        env.cleanup().await;
        let pgbench_statements = outcome?;

        println!();
        println!(
            "## Results ({} cores, {} s measured after {} s warm-up per run, service pool {}{})",
            cores(),
            options.secs,
            options.warmup_secs,
            options.pool,
            if options.hold_events {
                ", events held in the outbox"
            } else {
                ""
            }
        );
        println!();
        print_table(&measurements);
        println!();
        print_ratios(&measurements, &options.concurrency);
        println!();
        print_floor(&measurements, &options.concurrency);
        for (n, statements) in pgbench_statements {
            println!();
            println!("pgbench per-statement latencies at {n} clients:");
            println!();
            println!("```");
            print!("{statements}");
            println!("```");
        }
        rounds.push(measurements);
    }
    if rounds.len() > 1 {
        println!();
        println!("## Summary over {} rounds", rounds.len());
        println!();
        print_rounds(&rounds, &options.concurrency);
    }
    Ok(())
}

async fn measure_all(
    env: &TestEnv,
    options: &Options,
    warmup: Duration,
    window: Duration,
    measurements: &mut Vec<Measurement>,
) -> anyhow::Result<Vec<(usize, String)>> {
    let admin = env.database().await;
    declare_downstream_queue(env).await?;
    let mut probes = Vec::new();
    let mut activities = Vec::new();

    // 1. The platform with referral-intake only, its pool at production size.
    let mut settings = env.settings.clone();
    settings.platform.database.max_connections = options.pool;
    if options.hold_events {
        const HOUR_MS: u64 = 3_600_000;
        settings.platform.outbox.linger_ms = HOUR_MS;
        settings.platform.outbox.poll_interval_ms = HOUR_MS;
    }
    let platform = cpm::Platform::start(settings, &[Target::REFERRAL_INTAKE]).await?;
    let endpoint = platform.endpoint();
    register_agency(&admin).await;
    let check_agency = sqlx::query_scalar::<_, Option<String>>("SELECT to_regclass($1)::text")
        .bind(format!("{}.agency", referral_intake::SCHEMA))
        .fetch_one(&admin)
        .await?
        .is_some();

    eprintln!("[bench] warming up the platform");
    let clients = intake_clients(env, &endpoint, 4).await;
    let _ = hammer("warm-up", clients, submit, Duration::ZERO, warmup).await;

    for &n in &options.concurrency {
        if !options.hold_events {
            drain_outbox(&admin).await;
        }
        checkpoint(&admin).await;
        eprintln!("[bench] SubmitReferral, {n} clients");
        let clients = intake_clients(env, &endpoint, n).await;
        let probe = tokio::spawn(sample_activity(admin.clone(), warmup, window));
        let before = database_counters(&admin).await;
        let m = hammer("SubmitReferral", clients, submit, warmup, window).await;
        let after = database_counters(&admin).await;
        let (samples, activity) = probe.await?;
        eprintln!("[bench]   {:.0} req/s, {} errors", m.per_second, m.errors);
        let submitted =
            m.requests.max(1) as f64 * (warmup + window).as_secs_f64() / window.as_secs_f64();
        probes.push(format!(
            "SubmitReferral at {n} clients (warm-up included in these counts): {:.2} commits per request; \
             outbox rows deleted {}, dead outbox tuples at the end {}, outbox index scans {} \
             fetching {} tuples",
            (after.0 - before.0) as f64 / submitted,
            after.1 - before.1,
            after.2,
            after.3 - before.3,
            after.4 - before.4,
        ));
        activities.push((format!("SubmitReferral, {n} clients"), samples, activity));
        measurements.push(m);
    }
    if !options.hold_events {
        drain_outbox(&admin).await;
    }
    explain_fingerprint_lookup(&admin).await;
    let sizes = row_sizes(&admin).await;
    platform.stop().await?;

    // 2. pgbench, the same transaction, against the same schema.
    let mut statements = Vec::new();
    match find_pgbench() {
        None => eprintln!(
            "[bench] pgbench not found: set PGBENCH or install PostgreSQL's server package"
        ),
        Some(pgbench) => {
            let dir = std::env::temp_dir().join(format!("cpm-bench-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir)?;
            let script_path = dir.join("submit_referral.sql");
            let script = pgbench_script(&sizes, check_agency);
            std::fs::write(&script_path, &script)?;
            eprintln!("[bench] pgbench script:\n{script}");
            for &n in &options.concurrency {
                checkpoint(&admin).await;
                eprintln!("[bench] pgbench, {n} clients");
                let probe = tokio::spawn(sample_activity(admin.clone(), warmup, window));
                let before = database_counters(&admin).await;
                let result =
                    run_pgbench(&pgbench, &env.database_url, &script_path, &dir, n, options).await;
                let after = database_counters(&admin).await;
                let (samples, activity) = probe.await?;
                if let Ok(run) = &result {
                    let submitted = run.measurement.per_second * (warmup + window).as_secs_f64();
                    probes.push(format!(
                        "pgbench at {n} clients (warm-up included): {:.2} commits per transaction",
                        (after.0 - before.0) as f64 / submitted.max(1.0),
                    ));
                }
                activities.push((format!("pgbench, {n} clients"), samples, activity));
                match result {
                    Ok(run) => {
                        eprintln!("[bench]   {:.0} tps", run.measurement.per_second);
                        measurements.push(run.measurement);
                        statements.push((n, run.statements));
                    }
                    Err(error) => eprintln!("[bench] pgbench at {n} clients failed: {error:#}"),
                }
            }
            println!(
                "pgbench script (sizes: wrapped key {} B, sealed details {} B, envelope {} B):",
                sizes.wrapped_data_key, sizes.sealed_details, sizes.envelope
            );
            println!();
            println!("```sql");
            print!("{script}");
            println!("```");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    admin.close().await;
    println!();
    println!("Database counters:");
    println!();
    for probe in &probes {
        println!("- {probe}");
    }
    for (title, samples, activity) in &activities {
        print_activity(title, *samples, activity);
    }

    // 3. The bare tonic server.
    let (echo, stop) = start_echo().await?;
    for &n in &options.concurrency {
        eprintln!("[bench] tonic echo, {n} clients");
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            clients.push(HealthClient::new(client_connect(&echo).await?));
        }
        let m = hammer("tonic echo (health Check)", clients, check, warmup, window).await;
        eprintln!("[bench]   {:.0} req/s", m.per_second);
        measurements.push(m);
    }
    let _ = stop.send(());

    // 4. The same, asking PostgreSQL once and twice before answering.
    for queries in [1, 2] {
        let (asking, stop) = start_asking(env, options.pool, queries).await?;
        for &n in &options.concurrency {
            eprintln!("[bench] {}, {n} clients", asking_name(queries));
            let mut clients = Vec::with_capacity(n);
            for _ in 0..n {
                clients.push(HealthClient::new(client_connect(&asking).await?));
            }
            let m = hammer(&asking_name(queries), clients, check, warmup, window).await;
            eprintln!("[bench]   {:.0} req/s, {} errors", m.per_second, m.errors);
            measurements.push(m);
        }
        let _ = stop.send(());
    }
    Ok(statements)
}
