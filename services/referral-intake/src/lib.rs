//! Referral intake: the API agencies integrate with. It owns agencies'
//! referrals, the client's personal data (encrypted at rest) and the
//! referral's status as the referrer sees it, kept current from the events
//! of the services downstream.
//!
//! # Layout
//! - [`domain`]: a submission parsed and validated at the edge; status ranks.
//! - [`db`]: action-named queries on the `referral_intake` schema.
//! - [`grpc`]: serves `cpm.v1.ReferralIntakeService`.
//! - [`events`]: the status projection fed by downstream events.

pub mod db;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod privacy;

use std::sync::Arc;

use cpm_proto::v1::referral_intake_service_server::ReferralIntakeServiceServer;
use cpm_runtime::bus::ConsumerSpec;
use cpm_runtime::service::{ServiceContext, StartedService};
use serde::{Deserialize, Serialize};
use tonic::service::RoutesBuilder;

/// The target name and the producer name in events.
pub const NAME: &str = "referral-intake";
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "referral_intake";

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/referral-intake");

/// This service's own settings (`[referral_intake]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Its own listen address when run as a single target; empty uses `grpc.listen`.
    pub listen: String,
    /// Registers an unknown agency on its first referral. Development only:
    /// the production profile refuses it.
    pub auto_register_agencies: bool,
    /// The largest request accepted, in bytes.
    pub max_request_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: String::new(),
            auto_register_agencies: true,
            max_request_bytes: 256 * 1024,
        }
    }
}

/// The queues this service consumes. Every process declares the queues of
/// all services at start, so an event published before a consumer first
/// runs waits in its queue instead of being lost.
pub fn consumers() -> Vec<ConsumerSpec> {
    vec![status_consumer()]
}

fn status_consumer() -> ConsumerSpec {
    ConsumerSpec {
        service: NAME,
        name: "status",
        routing_keys: events::STATUS_EVENTS.to_vec(),
    }
}

/// Migrates the schema, starts the relay and the status projection, and
/// adds the gRPC service to `routes`.
pub async fn start(
    context: &ServiceContext,
    config: &Config,
    routes: &mut RoutesBuilder,
) -> anyhow::Result<StartedService> {
    let pool = context.database(SCHEMA, &MIGRATIONS).await?;
    let relay = context.spawn_relay(NAME, SCHEMA)?;
    context.spawn_consumer(
        &pool,
        status_consumer(),
        Arc::new(events::StatusProjection),
        None,
    );
    let service = grpc::ReferralIntake::new(
        pool.clone(),
        context.keys.clone(),
        relay,
        config.auto_register_agencies,
    );
    let server = ReferralIntakeServiceServer::new(service)
        .max_decoding_message_size(config.max_request_bytes);
    routes.add_service(tonic::service::interceptor::InterceptedService::new(
        server,
        context.auth.interceptor(),
    ));
    Ok(StartedService {
        name: NAME,
        grpc_name: "cpm.v1.ReferralIntakeService",
        pool,
    })
}

/// Migrates this service's schema without starting it (`cpm migrate`).
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    cpm_runtime::db::migrate(pool, SCHEMA, &MIGRATIONS).await
}
