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
//! - [`safety`]: the safety exclusions, mentors never paired with certain clients.
//! - [`status`]: where a mentor is in their volunteering, and how they move on.
//! - [`db`]: action-named queries on the `mentor_matching` schema.
//! - [`commands`]: one function per use case, with [`commands::MatchingError`].
//! - [`grpc`]: the handlers of `cpm.v1.MentorMatchingService` and its access table.
//! - [`events`]: the consumer that turns accepted referrals into waiting
//!   clients and frees the mentors of clients whose support ended.
//! - [`retention`]: erasure (on request, and the periodic sweep of mentors
//!   whose retention period is over), subject access, a mentor's own record.
//! - [`audit`]: the append-only log of reads of mentors' personal data.

pub mod audit;
pub mod commands;
pub mod db;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod matching;
pub mod retention;
pub mod safety;
pub mod status;

use cpm_proto::v1::mentor_matching_service_server::MentorMatchingServiceServer;
use cpm_runtime::bus::{ConsumerSpec, ServiceHandle};
use cpm_runtime::config::{ConfigError, PlatformConfig};
use cpm_runtime::descriptor::{Registered, Service};
use cpm_runtime::grpc::access::AccessTable;
use cpm_runtime::service::ServiceContext;
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
            retention_sweep_interval_secs: 60 * 60,
            retention_days: 183,
            sabbatical_days: 183,
        }
    }
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
        vec![events::decisions().spec()]
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
        context.spawn_consumer(&handle, events::decisions());
        retention::spawn_sweeper(context, &handle, &config);
        let service =
            grpc::MentorMatching::new(handle, context.platform.programme.clone(), exclusions);
        routes.add_service(Self::guard(
            context,
            &guard_pool,
            MentorMatchingServiceServer::new(service)
                .max_decoding_message_size(context.max_request_bytes()),
        ));
        Ok(())
    }
}
