//! Referral intake: the API agencies integrate with. It owns agencies'
//! referrals, the client's personal data (encrypted at rest) and the
//! referral's status as the referrer sees it, kept current from the events
//! of the services downstream.
//!
//! # Layout
//! - this file: `Config` (its own section) and `Descriptor`, the service as the
//!   binary registers it (`SERVICE`): consumers, rules on its settings, start.
//! - [`domain`]: requests parsed and validated at the edge; status ranks.
//! - [`db`]: action-named queries on the `referral_intake` schema.
//! - [`commands`]: one function per use case (referrals, the agency
//!   register), with [`commands::IntakeError`].
//! - [`privacy`]: the client's sealed personal data; erasure and subject
//!   access export, the privacy use cases.
//! - [`grpc`]: the handlers of `cpm.v1.ReferralIntakeService` and its access table.
//! - [`status`]: the referrer-visible status, moved forward only and announced as `referral.status_changed`.
//! - [`events`]: the status projection fed by its own and downstream events,
//!   and the `allocations` consumer: which mentors may read which client.
//! - [`mentor_view`]: the mentor's minimal record (the measured set), audited.

pub mod commands;
pub mod db;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod mentor_view;
pub mod privacy;
pub mod status;

use cpm_proto::v1::referral_intake_service_server::ReferralIntakeServiceServer;
use cpm_runtime::bus::{ConsumerSpec, ServiceHandle};
use cpm_runtime::config::{ConfigError, PlatformConfig, Profile};
use cpm_runtime::descriptor::{Registered, Service};
use cpm_runtime::grpc::access::AccessTable;
use cpm_runtime::service::ServiceContext;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use tonic::service::RoutesBuilder;

/// The target name and the producer name in events.
pub const NAME: &str = "referral-intake";
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "referral_intake";

static MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/referral-intake");

/// This service's own settings (`[referral_intake]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Its own listen address when run as a single target; empty uses `grpc.listen`.
    pub listen: String,
    /// Registers an unknown agency on its first referral. Development only:
    /// the production profile refuses it.
    pub auto_register_agencies: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: String::new(),
            auto_register_agencies: true,
        }
    }
}

/// Referral intake as the binary registers it.
pub struct Descriptor;

/// The binary's handle on this service.
pub static SERVICE: Registered<Descriptor> = Registered::new();

impl Service for Descriptor {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str = "agencies submit and follow referrals; client personal data";
    const SCHEMA: &'static str = SCHEMA;
    const GRPC_NAME: &'static str = "cpm.v1.ReferralIntakeService";
    type Config = Config;

    fn migrations() -> &'static Migrator {
        &MIGRATIONS
    }

    fn access() -> &'static AccessTable {
        &grpc::ACCESS
    }

    fn consumers() -> Vec<ConsumerSpec> {
        vec![
            events::status_projection().spec(),
            events::mentor_allocations().spec(),
        ]
    }

    fn listen(config: &Config) -> &str {
        &config.listen
    }

    fn validate(config: &Config, platform: &PlatformConfig) -> Result<(), ConfigError> {
        if platform.profile == Profile::Production && config.auto_register_agencies {
            return Err(ConfigError::invalid(
                "referral_intake.auto_register_agencies",
                "production refuses referrals from unregistered agencies; set it to false",
            ));
        }
        Ok(())
    }

    /// Starts the status projection and the mentors' allocations, and adds the gRPC
    /// service to `routes`.
    async fn start(
        context: &ServiceContext,
        handle: ServiceHandle,
        config: Config,
        routes: &mut RoutesBuilder,
    ) -> anyhow::Result<()> {
        let guard_pool = handle.pool().clone();
        context.spawn_consumer(&handle, events::status_projection());
        context.spawn_consumer(&handle, events::mentor_allocations());
        let service = grpc::ReferralIntake::new(
            handle,
            context.keys.clone(),
            config.auto_register_agencies,
            context.platform.programme.clone(),
        );
        let server = ReferralIntakeServiceServer::new(service)
            .max_decoding_message_size(context.max_request_bytes());
        routes.add_service(Self::guard(context, &guard_pool, server));
        Ok(())
    }
}
