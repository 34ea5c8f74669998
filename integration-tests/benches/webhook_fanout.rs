//! Webhook fan-out (issue 14 item 10): many agencies each with a webhook,
//! some endpoints dead, status changes at a steady rate; how long from the
//! status change to a healthy endpoint's receipt, and is anything lost?
//! Prints markdown for docs/performance.md.
//!
//!     bash deploy/bench.sh webhooks
//!     cargo bench -p integration-tests --bench webhook_fanout -- --agencies 1000 --rate 200 --secs 60
//!
//! Settings (flag or environment variable, flags win):
//!
//! - `--agencies` / `BENCH_AGENCIES`: agencies, one webhook each (1000)
//! - `--dead-percent` / `BENCH_DEAD_PERCENT`: endpoints that are dead (5); half
//!   refuse connections, half accept and never answer
//! - `--rate` / `BENCH_RATE`: status changes per second (200)
//! - `--secs` / `BENCH_SECS`: seconds of status changes (60)
//! - `--drain-secs` / `BENCH_DRAIN_SECS`: how long healthy notices may still
//!   arrive after the last change (30)
//!
//! The notifications service runs as a `cpm serve --target notifications`
//! child process with the production webhook settings. A status change is a
//! `referral.status_changed` event published (with a publisher confirm) to
//! the platform's exchange, as referral intake's relay would; its time is
//! the moment the scheduler intended to publish it (open loop: one every
//! 1/rate s whatever the broker or the platform are doing). Receipt is the
//! moment the agency's HTTP sink (in this process) reads the request.
//! Baseline, in the same run: the same sinks receiving the same number of
//! posts per second from a plain `reqwest` client in this process (the
//! HTTP floor on this machine), measured the same way.

#[allow(dead_code)]
#[path = "../tests/platform/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../tests/platform/processes.rs"]
mod processes;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use cpm::Target;
use cpm_proto::Event as _;
use cpm_proto::v1::notifications_service_client::NotificationsServiceClient;
use cpm_proto::v1::{ReferralStatus, ReferralStatusChanged, RegisterWebhookRequest};
use futures::StreamExt as _;
use integration_tests::bench::latency::ms;
use integration_tests::bench::proc::{RssSampler, busy_percent, cpu_snapshot, mib};
use integration_tests::bench::sink::{Answer, Receipts, Sink, refused_url};
use integration_tests::bench::{Flags, Latency};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use prost::Message as _;

use harness::TestEnv;
use processes::CpmProcess;

#[derive(Clone)]
struct Options {
    agencies: usize,
    dead_percent: usize,
    rate: u32,
    secs: u64,
    drain_secs: u64,
}

impl Options {
    fn read() -> anyhow::Result<Self> {
        let flags = Flags::read(&[
            ("agencies", "BENCH_AGENCIES"),
            ("dead-percent", "BENCH_DEAD_PERCENT"),
            ("rate", "BENCH_RATE"),
            ("secs", "BENCH_SECS"),
            ("drain-secs", "BENCH_DRAIN_SECS"),
        ])?;
        let options = Self {
            agencies: flags.parse_or("agencies", "1000")?,
            dead_percent: flags.parse_or("dead-percent", "5")?,
            rate: flags.parse_or("rate", "200")?,
            secs: flags.parse_or("secs", "60")?,
            drain_secs: flags.parse_or("drain-secs", "30")?,
        };
        anyhow::ensure!(options.agencies > 0 && options.rate > 0, "nothing to send");
        anyhow::ensure!(options.dead_percent < 100, "some endpoints must be healthy");
        Ok(options)
    }
}

/// How an agency's endpoint behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Endpoint {
    Healthy,
    /// Nothing listens: connection refused.
    Refused,
    /// Accepts and reads the request, never answers.
    Hanging,
}

fn agency(i: usize) -> String {
    format!("agency-fan-{i:04}")
}

/// Spreads the dead endpoints evenly: every (100 / dead%)-th agency,
/// alternately refusing and hanging.
fn endpoint_kinds(options: &Options) -> Vec<Endpoint> {
    let dead = options.agencies * options.dead_percent / 100;
    let mut kinds = vec![Endpoint::Healthy; options.agencies];
    if let Some(stride) = options.agencies.checked_div(dead) {
        for n in 0..dead {
            kinds[n * stride] = if n % 2 == 0 {
                Endpoint::Refused
            } else {
                Endpoint::Hanging
            };
        }
    }
    kinds
}

/// The first receipt of each referral at its own agency's sink, and how
/// many notifications arrived more than once.
fn first_receipts(receipts: &Receipts) -> (HashMap<String, Instant>, usize) {
    let mut first: HashMap<String, Instant> = HashMap::new();
    let mut times: HashMap<String, u32> = HashMap::new();
    for receipt in receipts.snapshot() {
        *times.entry(receipt.notification_id.clone()).or_default() += 1;
        first
            .entry(receipt.referral_id)
            .and_modify(|at| *at = (*at).min(receipt.at))
            .or_insert(receipt.at);
    }
    (first, times.values().filter(|n| **n > 1).count())
}

/// Healthy agencies' indices, in order.
fn healthy(kinds: &[Endpoint]) -> Vec<usize> {
    (0..kinds.len())
        .filter(|i| kinds[*i] == Endpoint::Healthy)
        .collect()
}

/// Baseline: `rate` posts a second for `secs` from a plain reqwest client to
/// the healthy sinks in turn, open loop; latency from the intended send to
/// the sink's receipt.
async fn baseline(
    urls: &[String],
    rate: u32,
    secs: u64,
    receipts: &Receipts,
) -> (Option<Latency>, usize) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client");
    let count = (u64::from(rate) * secs) as usize;
    let period = Duration::from_secs(1) / rate;
    let start = Instant::now() + Duration::from_millis(50);
    let mut intended = HashMap::with_capacity(count);
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let at = start + period * i as u32;
        tokio::time::sleep_until(at.into()).await;
        let referral_id = uuid::Uuid::now_v7().to_string();
        intended.insert(referral_id.clone(), at);
        let body = serde_json::json!({
            "notification_id": uuid::Uuid::now_v7().to_string(),
            "referral_id": referral_id,
            "agency_id": "baseline",
            "status": ReferralStatus::UnderAssessment.as_str_name(),
        })
        .to_string();
        let request = client
            .post(&urls[i % urls.len()])
            .header("content-type", "application/json")
            .body(body);
        tasks.push(tokio::spawn(async move { request.send().await.is_ok() }));
    }
    let mut failed = 0;
    for task in tasks {
        if !task.await.unwrap_or(false) {
            failed += 1;
        }
    }
    let (first, _) = first_receipts(receipts);
    let latencies = intended
        .iter()
        .filter_map(|(id, at)| first.get(id).map(|got| got.saturating_duration_since(*at)))
        .collect();
    (Latency::of(latencies), failed)
}

struct Published {
    referral_id: String,
    agency: usize,
    intended: Instant,
}

/// Publishes `rate × secs` status changes, one every 1/rate s, to agencies
/// in turn; each publish is confirmed by the broker in a task of its own so
/// a slow confirm never delays the next.
async fn publish_changes(
    env: &TestEnv,
    agencies: usize,
    rate: u32,
    secs: u64,
) -> anyhow::Result<(Vec<Published>, usize)> {
    let (connection, channel) = env.amqp_channel().await;
    channel.confirm_select(Default::default()).await?;
    let exchange = format!("{}.events", env.namespace);
    let count = (u64::from(rate) * secs) as usize;
    let period = Duration::from_secs(1) / rate;
    let start = Instant::now() + Duration::from_millis(50);
    let mut published = Vec::with_capacity(count);
    let mut confirms = Vec::with_capacity(count);
    for i in 0..count {
        let intended = start + period * i as u32;
        tokio::time::sleep_until(intended.into()).await;
        let referral_id = uuid::Uuid::now_v7().to_string();
        let agency_index = i % agencies;
        let event = ReferralStatusChanged {
            referral_id: referral_id.clone(),
            agency_id: agency(agency_index),
            status: ReferralStatus::UnderAssessment as i32,
            previous_status: ReferralStatus::Received as i32,
            ..Default::default()
        };
        let envelope = cpm_runtime::bus::outbox::envelope("referral-intake", &event);
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                ReferralStatusChanged::TYPE.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &envelope.encode_to_vec(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        confirms.push(tokio::spawn(async move {
            matches!(confirm.await, Ok(confirmation) if confirmation.is_ack())
        }));
        published.push(Published {
            referral_id,
            agency: agency_index,
            intended,
        });
    }
    let mut unconfirmed = 0;
    for confirm in confirms {
        if !confirm.await.unwrap_or(false) {
            unconfirmed += 1;
        }
    }
    harness::close_quietly(connection).await;
    Ok((published, unconfirmed))
}

/// Deliveries by (endpoint kind, state): count and attempts.
async fn delivery_states(
    pool: &sqlx::PgPool,
    kinds: &[Endpoint],
) -> HashMap<(Endpoint, i32), (i64, i64)> {
    let rows: Vec<(String, i32, i64, i64)> = sqlx::query_as(
        "SELECT w.agency_id, d.state, count(*), COALESCE(sum(d.attempts), 0)::bigint \
         FROM notifications.delivery d JOIN notifications.webhook w USING (webhook_id) \
         GROUP BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    let mut states = HashMap::new();
    for (agency_id, state, count, attempts) in rows {
        let index: usize = agency_id
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(usize::MAX);
        let Some(kind) = kinds.get(index) else {
            continue;
        };
        let entry = states.entry((*kind, state)).or_insert((0, 0));
        entry.0 += count;
        entry.1 += attempts;
    }
    states
}

fn state_name(state: i32) -> &'static str {
    match state {
        1 => "pending",
        2 => "delivered",
        3 => "failed",
        4 => "dead",
        5 => "cancelled",
        _ => "?",
    }
}

fn main() -> anyhow::Result<()> {
    let options = Options::read()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(options))
}

async fn run(options: Options) -> anyhow::Result<()> {
    let mut env = TestEnv::new().await;
    // The production webhook settings; the harness polls faster.
    let defaults = notifications::Config::default();
    env.settings.set(
        "notifications.webhook_poll_interval_ms",
        defaults.webhook_poll_interval_ms as i64,
    );
    env.settings.platform.database.max_connections =
        cpm::Settings::default().platform.database.max_connections;
    env.settings.platform.amqp.delivery_limit =
        cpm::Settings::default().platform.amqp.delivery_limit;
    let platform = CpmProcess::serve(&env, &[Target::NOTIFICATIONS]).await;
    let channel = cpm::client::connect(&platform.endpoint).await?;

    // Endpoints, then one webhook per agency.
    let kinds = endpoint_kinds(&options);
    let receipts = Receipts::default();
    let baseline_receipts = Receipts::default();
    // Kept apart: a hanging endpoint sees every retry of the same notice.
    let hanging_receipts = Receipts::default();
    let mut refused = Vec::new();
    let mut sinks = Vec::new();
    let mut urls = Vec::with_capacity(kinds.len());
    let mut baseline_urls = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let url = match kind {
            Endpoint::Healthy => {
                let sink = Sink::start(&agency(i), Answer::NoContent, receipts.clone()).await?;
                let url = sink.url.clone();
                sinks.push(sink);
                url
            }
            Endpoint::Hanging => {
                let sink = Sink::start(&agency(i), Answer::Hang, hanging_receipts.clone()).await?;
                let url = sink.url.clone();
                sinks.push(sink);
                url
            }
            Endpoint::Refused => {
                let (url, socket) = refused_url(&agency(i))?;
                refused.push(socket);
                url
            }
        };
        urls.push(url);
    }
    for i in healthy(&kinds) {
        let sink = Sink::start(&agency(i), Answer::NoContent, baseline_receipts.clone()).await?;
        baseline_urls.push(sink.url.clone());
        sinks.push(sink);
    }
    eprintln!("[bench] registering {} webhooks", kinds.len());
    let registered = futures::stream::iter(urls.iter().enumerate())
        .map(|(i, url)| {
            let mut client = NotificationsServiceClient::new(env.referrer(&channel, &agency(i)));
            let url = url.clone();
            async move {
                client
                    .register_webhook(RegisterWebhookRequest { url })
                    .await
                    .map(drop)
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let refused_registrations = registered.iter().filter(|r| r.is_err()).count();
    if let Some(Err(status)) = registered.iter().find(|r| r.is_err()) {
        eprintln!("[bench] a registration failed: {status}");
    }

    // Baseline: the same rate of plain posts to the healthy sinks.
    eprintln!("[bench] baseline: {}/s plain posts for 10 s", options.rate);
    let (base, base_failed) = baseline(&baseline_urls, options.rate, 10, &baseline_receipts).await;

    let pool = env.database().await;
    let sampler = RssSampler::start(vec![platform.pid()], Duration::from_millis(250));

    eprintln!(
        "[bench] {} status changes/s for {} s to {} agencies ({} dead)",
        options.rate,
        options.secs,
        options.agencies,
        kinds.iter().filter(|k| **k != Endpoint::Healthy).count()
    );
    let cpu_before = cpu_snapshot();
    let started = Instant::now();
    let (published, unconfirmed) =
        publish_changes(&env, options.agencies, options.rate, options.secs).await?;
    let window = started.elapsed();
    let cpu_after = cpu_snapshot();
    let expected: Vec<&Published> = published
        .iter()
        .filter(|p| kinds[p.agency] == Endpoint::Healthy)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(options.drain_secs);
    loop {
        let (first, _) = first_receipts(&receipts);
        if expected.iter().all(|p| first.contains_key(&p.referral_id)) || Instant::now() >= deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drained = started.elapsed();
    // Anything posted twice would come within a poll or two.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (first, twice) = first_receipts(&receipts);
    let latencies: Vec<Duration> = expected
        .iter()
        .filter_map(|p| {
            first
                .get(&p.referral_id)
                .map(|at| at.saturating_duration_since(p.intended))
        })
        .collect();
    let missing = expected.len() - latencies.len();
    let latency = Latency::of(latencies);
    let dead_ids: HashSet<&str> = published
        .iter()
        .filter(|p| kinds[p.agency] != Endpoint::Healthy)
        .map(|p| p.referral_id.as_str())
        .collect();
    let agency_of: HashMap<&str, usize> = published
        .iter()
        .map(|p| (p.referral_id.as_str(), p.agency))
        .collect();
    let misdelivered = receipts
        .snapshot()
        .iter()
        .filter(|r| {
            let own = r
                .sink
                .rsplit('-')
                .next()
                .and_then(|n| n.parse::<usize>().ok());
            let published_to = agency_of.get(r.referral_id.as_str()).copied();
            published_to.is_some() && own != published_to
        })
        .count();
    let hanging_seen = hanging_receipts
        .snapshot()
        .iter()
        .filter(|r| dead_ids.contains(r.referral_id.as_str()))
        .count();
    let states = delivery_states(&pool, &kinds).await;
    let mut queued = 0;
    for spec in cpm::platform::all_consumers() {
        if spec.service == "notifications" {
            queued += env.queue_depth(&env.queue(spec.service, spec.name)).await;
        }
    }
    let rss_peak = sampler.peak_since(0.0);
    drop(sampler);

    // ------------------------------------------------------------ report
    println!("### Webhook fan-out\n");
    println!(
        "{} agencies, one webhook each ({} refused registrations); {} endpoints dead \
         ({} refusing connections, {} hanging); {} status changes/s for {} s.\n",
        options.agencies,
        refused_registrations,
        kinds.iter().filter(|k| **k != Endpoint::Healthy).count(),
        kinds.iter().filter(|k| **k == Endpoint::Refused).count(),
        kinds.iter().filter(|k| **k == Endpoint::Hanging).count(),
        options.rate,
        options.secs,
    );
    println!("| measurement | posts | p50 ms | p90 ms | p99 ms | max ms | missing | twice |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let row = |name: &str, latency: Option<Latency>, missing: usize, twice: usize| {
        let cell = |pick: fn(&Latency) -> Duration| latency.map_or("-".into(), |l| ms(pick(&l)));
        println!(
            "| {name} | {} | {} | {} | {} | {} | {missing} | {twice} |",
            latency.map_or(0, |l| l.count),
            cell(|l| l.p50),
            cell(|l| l.p90),
            cell(|l| l.p99),
            cell(|l| l.max),
        );
    };
    row(
        "status change → healthy endpoint's receipt",
        latency,
        missing,
        twice,
    );
    row(
        "baseline: plain reqwest post → the same sinks",
        base,
        base_failed,
        0,
    );
    let ratio = match (latency, base) {
        (Some(l), Some(b)) => format!(
            "{:.1}× / {:.1}×",
            l.p50.as_secs_f64() / b.p50.as_secs_f64().max(1e-9),
            l.p99.as_secs_f64() / b.p99.as_secs_f64().max(1e-9)
        ),
        _ => "-".into(),
    };
    println!("\nplatform / baseline, p50 / p99: {ratio}\n");
    println!(
        "- published {} ({} not confirmed by the broker) in {:.1} s ({:.1}/s offered); \
         healthy notices all in by {:.1} s after the first change",
        published.len(),
        unconfirmed,
        window.as_secs_f64(),
        published.len() as f64 / window.as_secs_f64(),
        drained.as_secs_f64(),
    );
    println!(
        "- receipts at a sink other than the event's agency's: {misdelivered}; \
         requests seen by the hanging endpoints: {hanging_seen}"
    );
    println!(
        "- notifications process: RSS peak {} MiB; machine busy {:.0}% while publishing",
        mib(rss_peak),
        busy_percent(&cpu_before, &cpu_after, window)
    );
    println!("\n| endpoints | delivery state | deliveries | attempts |");
    println!("|---|---|---:|---:|");
    let mut keys: Vec<_> = states.keys().copied().collect();
    keys.sort_by_key(|(kind, state)| (format!("{kind:?}"), *state));
    let mut total = 0;
    for key in keys {
        let (count, attempts) = states[&key];
        total += count;
        println!(
            "| {:?} | {} | {count} | {attempts} |",
            key.0,
            state_name(key.1)
        );
    }
    let dead_published = published.len() - expected.len();
    println!(
        "\n{} published; {} deliveries recorded, {} events still ready on notifications' \
         queues ({} to healthy endpoints, {} to dead ones); healthy received {} of {}.\n",
        published.len(),
        total,
        queued,
        expected.len(),
        dead_published,
        expected.len() - missing,
        expected.len()
    );

    pool.close().await;
    drop(sinks);
    drop(refused);
    let mut platform = platform;
    platform.assert_no_panic();
    platform.terminate(Duration::from_secs(30)).await;
    env.cleanup().await;
    Ok(())
}
