//! Mentor matching: the mentor register and the pairing of mentors with
//! accepted clients. Accepted referrals arrive from risk assessment and
//! wait here; the service scores mentor pairs for them and a named
//! coordinator confirms one, which is announced as `allocation.confirmed`.
//!
//! # Layout
//! - this file: `Config` (its own section) and `Descriptor`, the service as the
//!   binary registers it (`SERVICE`): consumers, rules on its settings, start.
//! - [`domain`]: requests parsed at the edge (areas against the programme's
//!   registered list); mentor availability; the wait rule.
//! - [`matching`]: pure scoring and ranking of mentor pairs.
//! - [`batch`]: whole-pool matching, one pair per waiting client for the best total score.
//! - [`safety`]: the safety exclusions, mentors never paired with certain clients.
//! - [`status`]: where a mentor is in their volunteering, and how they move on.
//! - [`fit`]: how allocated pairs fare: contacts for the early fit check,
//!   re-matching, and pairs that worked or must never be proposed together.
//! - [`wait`]: wait ranges from an area's queue and recent throughput.
//! - [`alerts`]: mentors waiting since training or due a check-in; the sweep
//!   that announces them.
//! - [`db`]: action-named queries on the `mentor_matching` schema.
//! - [`commands`]: one function per use case, with [`commands::MatchingError`].
//! - [`grpc`]: the handlers of `cpm.v1.MentorMatchingService` and its access table.
//! - [`events`]: the consumer that turns accepted referrals into waiting
//!   clients and frees the mentors of clients whose support ended.
//! - [`retention`]: erasure (on request, and the periodic sweep of mentors
//!   whose retention period is over), subject access, a mentor's own record.
//! - [`audit`]: the append-only log of reads of mentors' personal data.

pub mod alerts;
pub mod audit;
pub mod batch;
pub mod commands;
pub mod db;
pub mod domain;
pub mod events;
pub mod fit;
pub mod grpc;
pub mod matching;
pub mod retention;
pub mod safety;
pub mod status;
pub mod wait;

use cpm_proto::v1::mentor_matching_service_server::MentorMatchingServiceServer;
use cpm_runtime::bus::{ConsumerSpec, ServiceHandle};
use cpm_runtime::config::{ConfigError, PlatformConfig};
use cpm_runtime::descriptor::{Registered, Service};
use cpm_runtime::grpc::access::AccessTable;
use cpm_runtime::service::ServiceContext;
use cpm_runtime::supervisor::TaskSpec;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use tonic::service::RoutesBuilder;

/// The target name and the producer name in events.
pub const NAME: &str = "mentor-matching";
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "mentor_matching";

static MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/mentor-matching");

/// This service's own settings (`[mentor_matching]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Its own listen address when run as a single target; empty uses `grpc.listen`.
    pub listen: String,
    /// Mentors never paired with a client who committed certain crimes
    /// ([`safety`]); the programme's rules by default.
    pub safety_exclusions: Vec<safety::ExclusionRule>,
    /// The weights of every scoring term, with their version
    /// (`[mentor_matching.weights]`, see [`matching::Weights`]); change the
    /// version whenever a weight changes.
    pub weights: matching::Weights,
    /// Within this many logged contacts of an allocation, either mentor or a
    /// coordinator may end it as a poor fit and have the client re-matched.
    pub early_fit_contacts: u32,
    /// The recent history wait estimates come from, in days.
    pub wait_window_days: u32,
    /// Rates standing in for an area without recent allocations or freed
    /// pairs ([`wait`]).
    pub default_allocations_per_week: f64,
    pub default_pairs_freed_per_week: f64,
    /// The programme's standard for the wait from training to a first client.
    pub first_client_standard_days: u32,
    /// How often a mentor should have a progress check-in.
    pub check_in_days: u32,
    /// How often the alert sweep runs, in seconds.
    pub alert_sweep_secs: u64,
    /// How often every area's current wait is published
    /// (`matching.area_wait_quoted`), in seconds.
    pub area_wait_secs: u64,
    /// Seconds between two retention sweeps ([`retention`]), each erasing
    /// the mentors whose retention period is over.
    pub retention_sweep_interval_secs: u64,
    /// Days a mentor's data is kept after they left or declined (or after
    /// their sabbatical passed `sabbatical_days`); then it is erased.
    pub retention_days: u32,
    /// Days on sabbatical after which a mentor counts as gone, so their
    /// data is erased `retention_days` later.
    pub sabbatical_days: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: String::new(),
            safety_exclusions: safety::default_rules(),
            weights: matching::Weights::default(),
            early_fit_contacts: 6,
            wait_window_days: 90,
            default_allocations_per_week: 1.0,
            default_pairs_freed_per_week: 0.5,
            first_client_standard_days: 28,
            check_in_days: 90,
            alert_sweep_secs: 3600,
            area_wait_secs: 600,
            retention_sweep_interval_secs: 60 * 60,
            retention_days: 183,
            sabbatical_days: 183,
        }
    }
}

impl Config {
    /// When alerts fall due.
    pub fn alert_rules(&self) -> alerts::AlertRules {
        alerts::AlertRules {
            first_client_standard_days: days(self.first_client_standard_days),
            check_in_days: days(self.check_in_days),
        }
    }

    /// The rates for an area without recent history.
    pub fn default_rates(&self) -> wait::DefaultRates {
        wait::DefaultRates {
            allocations_per_week: self.default_allocations_per_week,
            pairs_freed_per_week: self.default_pairs_freed_per_week,
        }
    }
}

/// Records the configured weights under their version, or refuses to start
/// when that version was used before with other weights: a proposal's
/// version must always say which weights made it.
async fn register_weights(pool: &sqlx::PgPool, weights: &matching::Weights) -> anyhow::Result<()> {
    let json = serde_json::to_string(weights)?;
    let mut connection = pool.acquire().await?;
    let recorded = db::register_weights(&mut connection, &weights.version, &json).await?;
    let recorded: matching::Weights = serde_json::from_str(&recorded)?;
    if &recorded != weights {
        anyhow::bail!(
            "mentor_matching.weights: version {:?} was used before with other weights \
             ({recorded:?}); give the changed weights a new version",
            weights.version
        );
    }
    Ok(())
}

fn days(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Mentor matching as the binary registers it.
pub struct Descriptor;

/// The binary's handle on this service.
pub static SERVICE: Registered<Descriptor> = Registered::new();

impl Service for Descriptor {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str = "mentor register, proposed pairs, allocations, waits";
    const SCHEMA: &'static str = SCHEMA;
    const GRPC_NAME: &'static str = "cpm.v1.MentorMatchingService";
    type Config = Config;

    fn migrations() -> &'static Migrator {
        &MIGRATIONS
    }

    fn access() -> &'static AccessTable {
        &grpc::ACCESS
    }

    fn consumers() -> Vec<ConsumerSpec> {
        vec![events::decisions(&Config::default()).spec()]
    }

    fn listen(config: &Config) -> &str {
        &config.listen
    }

    fn validate(config: &Config, _platform: &PlatformConfig) -> Result<(), ConfigError> {
        safety::resolve(&config.safety_exclusions)
            .map(drop)
            .map_err(|problem| {
                ConfigError::invalid("mentor_matching.safety_exclusions", problem)
            })?;
        config
            .weights
            .validate()
            .map_err(|problem| ConfigError::invalid("mentor_matching.weights", problem))?;
        let positive = [
            (
                "mentor_matching.early_fit_contacts",
                config.early_fit_contacts,
            ),
            ("mentor_matching.wait_window_days", config.wait_window_days),
            (
                "mentor_matching.first_client_standard_days",
                config.first_client_standard_days,
            ),
            ("mentor_matching.check_in_days", config.check_in_days),
        ];
        for (key, value) in positive {
            if !(1..=3650).contains(&value) {
                return Err(ConfigError::invalid(key, "must be between 1 and 3650"));
            }
        }
        for (key, rate) in [
            (
                "mentor_matching.default_allocations_per_week",
                config.default_allocations_per_week,
            ),
            (
                "mentor_matching.default_pairs_freed_per_week",
                config.default_pairs_freed_per_week,
            ),
        ] {
            if !rate.is_finite() || rate <= 0.0 || rate > 1000.0 {
                return Err(ConfigError::invalid(
                    key,
                    "must be above 0 and at most 1000",
                ));
            }
        }
        if !(1..=86_400).contains(&config.area_wait_secs) {
            return Err(ConfigError::invalid(
                "mentor_matching.area_wait_secs",
                "must be between 1 and 86400",
            ));
        }
        if !(10..=86_400).contains(&config.alert_sweep_secs) {
            return Err(ConfigError::invalid(
                "mentor_matching.alert_sweep_secs",
                "must be between 10 and 86400",
            ));
        }
        retention::check(config)
    }

    /// Starts the decisions consumer and the retention sweep, and adds the gRPC
    /// service, which checks areas against `programme.areas`, to `routes`.
    async fn start(
        context: &ServiceContext,
        handle: ServiceHandle,
        config: Config,
        routes: &mut RoutesBuilder,
    ) -> anyhow::Result<()> {
        let exclusions = safety::resolve(&config.safety_exclusions).map_err(anyhow::Error::msg)?;
        let guard_pool = handle.pool().clone();
        register_weights(&guard_pool, &config.weights).await?;
        context.spawn_consumer(&handle, events::decisions(&config));
        retention::spawn_sweeper(context, &handle, &config);
        let (sweep_handle, rules, shutdown) = (
            handle.clone(),
            config.alert_rules(),
            context.shutdown.clone(),
        );
        let (wait_handle, quoter, areas, wait_shutdown) = (
            handle.clone(),
            wait::Quoter::new(&config),
            context.platform.programme.areas.clone(),
            context.shutdown.clone(),
        );
        let every = std::time::Duration::from_secs(config.area_wait_secs);
        context.spawn_loop(
            TaskSpec::essential(NAME, format!("{NAME}.area-waits")),
            move || {
                let (handle, quoter, areas, shutdown) = (
                    wait_handle.clone(),
                    quoter.clone(),
                    areas.clone(),
                    wait_shutdown.clone(),
                );
                async move {
                    cpm_runtime::periodic::run_every(every, shutdown, || async {
                        if let Err(error) = wait::publish_area_waits(&handle, &quoter, &areas).await
                        {
                            tracing::warn!(%error, "area waits not published; trying again later");
                        }
                    })
                    .await;
                }
            },
        );
        let interval = std::time::Duration::from_secs(config.alert_sweep_secs);
        context.spawn_loop(
            TaskSpec::essential(NAME, format!("{NAME}.alert-sweep")),
            move || alerts::run_sweep(sweep_handle.clone(), rules, interval, shutdown.clone()),
        );
        let service = grpc::MentorMatching::new(
            handle,
            context.platform.programme.clone(),
            exclusions,
            config,
        );
        routes.add_service(Self::guard(
            context,
            &guard_pool,
            MentorMatchingServiceServer::new(service)
                .max_decoding_message_size(context.max_request_bytes()),
        ));
        Ok(())
    }
}
