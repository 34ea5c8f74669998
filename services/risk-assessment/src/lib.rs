//! Risk assessment: every submitted referral opens an assessment in its
//! area's queue, aged in working days against the first-assessment target.
//! Coordinators record the checks (adult at referral, risk to staff and
//! volunteers, will/want/capacity to change, databases, professionals
//! consulted, home visit); the system recommends from them, and a named
//! coordinator decides, with the stage and reason when a client is not
//! taken on. Overriding the recommendation needs a rationale. The system
//! never decides on its own. After acceptance, logged home visits and
//! raised concerns ask for a review; a coordinator re-assesses and
//! continues, pauses or ends support (`engagement.changed`). Every change
//! is written to the append-only `assessment_audit`.
//!
//! # Layout
//! - [`domain`]: requests parsed at the edge; the recommendation, override,
//!   re-assessment and working-day rules.
//! - [`db`]: action-named queries on the `risk_assessment` schema, the
//!   history chain and the stats.
//! - [`grpc`]: serves `cpm.v1.RiskAssessmentService`.
//! - [`events`]: the consumers that open and close assessments from
//!   referral events and ask for reviews after contacts.

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
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Its own listen address when run as a single target; empty uses `grpc.listen`.
    pub listen: String,
    /// Working days (Monday to Friday) from a referral to its first check
    /// before the queue shows the assessment as overdue.
    pub first_assessment_target_days: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: String::new(),
            first_assessment_target_days: domain::DEFAULT_FIRST_ASSESSMENT_TARGET_DAYS,
        }
    }
}

/// The queues this service consumes. Every process declares the queues of
/// all services at start, so an event published before a consumer first
/// runs waits in its queue instead of being lost.
pub fn consumers() -> Vec<ConsumerSpec> {
    vec![referrals_consumer(), engagement_consumer()]
}

fn referrals_consumer() -> ConsumerSpec {
    ConsumerSpec {
        service: NAME,
        name: "referrals",
        routing_keys: events::REFERRAL_EVENTS.to_vec(),
    }
}

fn engagement_consumer() -> ConsumerSpec {
    ConsumerSpec {
        service: NAME,
        name: "engagement",
        routing_keys: events::ENGAGEMENT_EVENTS.to_vec(),
    }
}

/// Migrates the schema, starts the relay and the referrals consumer, and
/// adds the gRPC service to `routes`.
pub async fn start(
    context: &ServiceContext,
    config: &Config,
    routes: &mut RoutesBuilder,
) -> anyhow::Result<StartedService> {
    anyhow::ensure!(
        config.first_assessment_target_days > 0,
        "risk_assessment.first_assessment_target_days must be at least 1"
    );
    let pool = context.database(SCHEMA, &MIGRATIONS).await?;
    let relay = context.spawn_relay(NAME, SCHEMA)?;
    // Opening an assessment writes `assessment.opened` without a NOTIFY.
    context.spawn_consumer(
        &pool,
        referrals_consumer(),
        Arc::new(events::ReferralEvents),
        Some(&relay),
    );
    context.spawn_consumer(
        &pool,
        engagement_consumer(),
        Arc::new(events::EngagementEvents),
        None,
    );
    let service = grpc::RiskAssessment::new(pool.clone(), config.first_assessment_target_days);
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
