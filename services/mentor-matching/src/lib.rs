//! Mentor matching: the mentor register and the pairing of mentors with
//! accepted clients. Accepted referrals arrive from risk assessment and
//! wait here; the service scores mentor pairs for them and a named
//! coordinator confirms one, which is announced as `allocation.confirmed`.
//!
//! # Layout
//! - [`domain`]: requests parsed at the edge; mentor availability; the wait rule.
//! - [`matching`]: pure scoring and ranking of mentor pairs.
//! - [`db`]: action-named queries on the `mentor_matching` schema.
//! - [`grpc`]: the handlers of `cpm.v1.MentorMatchingService`.
//! - [`events`]: the consumer that turns accepted referrals into waiting
//!   clients and frees the mentors of clients whose support ended.

pub mod db;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod matching;

use std::sync::Arc;

use cpm_proto::v1::mentor_matching_service_server::MentorMatchingServiceServer;
use cpm_runtime::bus::ConsumerSpec;
use cpm_runtime::service::{ServiceContext, StartedService};
use serde::{Deserialize, Serialize};
use tonic::service::RoutesBuilder;

/// The target name and the producer name in events.
pub const NAME: &str = "mentor-matching";
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "mentor_matching";

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/mentor-matching");

/// This service's own settings (`[mentor_matching]`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Its own listen address when run as a single target; empty uses `grpc.listen`.
    pub listen: String,
}

/// The queues this service consumes. Every process declares the queues of
/// all services at start, so an event published before a consumer first
/// runs waits in its queue instead of being lost.
pub fn consumers() -> Vec<ConsumerSpec> {
    vec![decisions_consumer()]
}

fn decisions_consumer() -> ConsumerSpec {
    ConsumerSpec {
        service: NAME,
        name: "decisions",
        routing_keys: events::DECISION_EVENTS.to_vec(),
    }
}

/// Migrates the schema, starts the relay and the decisions consumer, and
/// adds the gRPC service to `routes`.
pub async fn start(
    context: &ServiceContext,
    _config: &Config,
    routes: &mut RoutesBuilder,
) -> anyhow::Result<StartedService> {
    let pool = context.database(SCHEMA, &MIGRATIONS).await?;
    let relay = context.spawn_relay(NAME, SCHEMA)?;
    // Its handler writes events without a NOTIFY.
    context.spawn_consumer(
        &pool,
        decisions_consumer(),
        Arc::new(events::Decisions),
        Some(&relay),
    );
    let service = grpc::MentorMatching::new(pool.clone());
    routes.add_service(MentorMatchingServiceServer::with_interceptor(
        service,
        context.auth.interceptor(),
    ));
    Ok(StartedService {
        name: NAME,
        grpc_name: "cpm.v1.MentorMatchingService",
        pool,
    })
}

/// Migrates this service's schema without starting it (`cpm migrate`).
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    cpm_runtime::db::migrate(pool, SCHEMA, &MIGRATIONS).await
}
