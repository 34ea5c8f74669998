//! Risk assessment: every submitted referral opens an assessment in its
//! area's queue. Coordinators record the checks (adult at referral, risk to
//! volunteers, will/want/capacity to change); the system recommends from
//! them, and a named coordinator decides, with the stage and reason when a
//! client is not taken on. Overriding the recommendation needs a rationale.
//! The system never decides on its own.
//!
//! # Layout
//! - [`domain`]: requests parsed at the edge; the recommendation and override rules.
//! - [`db`]: action-named queries on the `risk_assessment` schema.
//! - [`grpc`]: serves `cpm.v1.RiskAssessmentService`.
//! - [`events`]: the consumer that opens and closes assessments from referral events.

pub mod db;
pub mod domain;
pub mod events;
pub mod grpc;

use std::sync::Arc;

use cpm_proto::v1::risk_assessment_service_server::RiskAssessmentServiceServer;
use cpm_runtime::bus::ConsumerSpec;
use cpm_runtime::service::{ServiceContext, StartedService};
use serde::{Deserialize, Serialize};
use tonic::service::RoutesBuilder;

/// The target name and the producer name in events.
pub const NAME: &str = "risk-assessment";
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "risk_assessment";

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/risk-assessment");

/// This service's own settings (`[risk_assessment]`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Its own listen address when run as a single target; empty uses `grpc.listen`.
    pub listen: String,
}

/// Migrates the schema, starts the relay and the referrals consumer, and
/// adds the gRPC service to `routes`.
pub async fn start(
    context: &ServiceContext,
    _config: &Config,
    routes: &mut RoutesBuilder,
) -> anyhow::Result<StartedService> {
    let pool = context.database(SCHEMA, &MIGRATIONS).await?;
    context.spawn_relay(&pool, SCHEMA);
    context.spawn_consumer(
        &pool,
        ConsumerSpec {
            service: NAME,
            name: "referrals",
            routing_keys: events::REFERRAL_EVENTS.to_vec(),
        },
        Arc::new(events::ReferralEvents),
    );
    context.spawn_consumer(
        &pool,
        ConsumerSpec {
            service: NAME,
            name: "engagement",
            routing_keys: events::ENGAGEMENT_EVENTS.to_vec(),
        },
        Arc::new(events::EngagementEvents),
    );
    let service = grpc::RiskAssessment::new(pool.clone());
    routes.add_service(RiskAssessmentServiceServer::with_interceptor(
        service,
        context.auth.interceptor(),
    ));
    Ok(StartedService {
        name: NAME,
        grpc_name: "cpm.v1.RiskAssessmentService",
        pool,
    })
}

/// Migrates this service's schema without starting it (`cpm migrate`).
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    cpm_runtime::db::migrate(pool, SCHEMA, &MIGRATIONS).await
}
