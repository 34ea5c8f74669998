//! Contact logging: the case file of a client in support. A case file opens
//! when an allocation is confirmed; the allocated mentors and the
//! coordinators log contacts on it (one of nine activities and the minutes
//! taken), and a coordinator discharges it, which tells the referrer. When a
//! coordinator ends support after a re-assessment the case file closes.
//!
//! # Layout
//! - [`domain`]: requests parsed and validated at the edge; the access rule.
//! - [`db`]: action-named queries on the `contact_logging` schema.
//! - [`grpc`]: the handlers of `cpm.v1.ContactLoggingService`.
//! - [`events`]: the consumer that opens case files on `allocation.confirmed`
//!   and closes them on an ended engagement.

pub mod db;
pub mod domain;
pub mod events;
pub mod grpc;

use std::sync::Arc;

use cpm_proto::v1::contact_logging_service_server::ContactLoggingServiceServer;
use cpm_runtime::bus::ConsumerSpec;
use cpm_runtime::service::{ServiceContext, StartedService};
use serde::{Deserialize, Serialize};
use tonic::service::RoutesBuilder;

/// The target name and the producer name in events.
pub const NAME: &str = "contact-logging";
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "contact_logging";

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/contact-logging");

/// This service's own settings (`[contact_logging]`).
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
    vec![allocations_consumer()]
}

fn allocations_consumer() -> ConsumerSpec {
    ConsumerSpec {
        service: NAME,
        name: "allocations",
        routing_keys: events::CASE_FILE_EVENTS.to_vec(),
    }
}

/// Migrates the schema, starts the relay and the case-file consumer, and adds
/// the gRPC service to `routes`.
pub async fn start(
    context: &ServiceContext,
    _config: &Config,
    routes: &mut RoutesBuilder,
) -> anyhow::Result<StartedService> {
    let pool = context.database(SCHEMA, &MIGRATIONS).await?;
    context.spawn_relay(NAME, SCHEMA)?;
    context.spawn_consumer(
        &pool,
        allocations_consumer(),
        Arc::new(events::CaseFiles),
        None,
    );
    let service = grpc::ContactLogging::new(pool.clone());
    routes.add_service(ContactLoggingServiceServer::with_interceptor(
        service,
        context.auth.interceptor(),
    ));
    Ok(StartedService {
        name: NAME,
        grpc_name: "cpm.v1.ContactLoggingService",
        pool,
    })
}

/// Migrates this service's schema without starting it (`cpm migrate`).
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    cpm_runtime::db::migrate(pool, SCHEMA, &MIGRATIONS).await
}
