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
//! What it stores about a client: IDs, agency, area, codes, scores, counts
//! and dates in plaintext; vulnerabilities, gender and kinds of known risk
//! as category codes; and every free text (check notes, databases
//! searched, professionals consulted, staff who visited, decision and
//! review rationales) sealed under that client's own key. `client.erased`
//! shreds the key and drops the categories; after it no new text or
//! categories about the client are kept, whatever order events and calls
//! arrive in (codes, such as a check's outcome, still are).
//!
//! Staff see only the assessments of the areas they work in (an admin sees
//! every area), and every area a request names must be one of the
//! programme's (`programme.areas`), in its registered spelling.
//!
//! # Layout
//! - this file: `Config` (its own section) and `Descriptor`, the service as the
//!   binary registers it (`SERVICE`): consumers, rules on its settings, start.
//! - [`domain`]: requests parsed at the edge; the recommendation, override,
//!   re-assessment and working-day rules.
//! - [`db`]: action-named queries on the `risk_assessment` schema, the
//!   history chain and the stats; free text goes in and out sealed.
//! - [`sealed`]: sealing a client's free text under their key and opening
//!   it again (the check document, rationales).
//! - [`commands`]: one function per use case (queue, lookup, check, decision,
//!   re-assessment, stats), with [`commands::AssessmentError`]; they seal
//!   on write and open on read.
//! - [`grpc`]: the handlers of `cpm.v1.RiskAssessmentService` and its access table.
//! - [`events`]: the consumers that open and close assessments from
//!   referral events, forget an erased client, and ask for reviews after
//!   contacts.

pub mod commands;
pub mod db;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod sealed;

use cpm_proto::v1::risk_assessment_service_server::RiskAssessmentServiceServer;
use cpm_runtime::bus::{ConsumerSpec, ServiceHandle};
use cpm_runtime::client_keys::ClientKeys;
use cpm_runtime::config::{ConfigError, PlatformConfig};
use cpm_runtime::descriptor::{Registered, Service};
use cpm_runtime::grpc::access::AccessTable;
use cpm_runtime::service::ServiceContext;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use tonic::service::RoutesBuilder;

/// The target name and the producer name in events.
pub const NAME: &str = "risk-assessment";
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "risk_assessment";

static MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/risk-assessment");

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

/// Risk assessment as the binary registers it.
pub struct Descriptor;

/// The binary's handle on this service.
pub static SERVICE: Registered<Descriptor> = Registered::new();

impl Service for Descriptor {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str = "checks and decisions by named coordinators";
    const SCHEMA: &'static str = SCHEMA;
    const GRPC_NAME: &'static str = "cpm.v1.RiskAssessmentService";
    type Config = Config;

    fn migrations() -> &'static Migrator {
        &MIGRATIONS
    }

    fn access() -> &'static AccessTable {
        &grpc::ACCESS
    }

    fn consumers() -> Vec<ConsumerSpec> {
        vec![events::referrals().spec(), events::engagement().spec()]
    }

    fn listen(config: &Config) -> &str {
        &config.listen
    }

    fn validate(config: &Config, _platform: &PlatformConfig) -> Result<(), ConfigError> {
        if config.first_assessment_target_days == 0 {
            return Err(ConfigError::invalid(
                "risk_assessment.first_assessment_target_days",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Starts the consumers, and adds the gRPC service to `routes`.
    async fn start(
        context: &ServiceContext,
        handle: ServiceHandle,
        config: Config,
        routes: &mut RoutesBuilder,
    ) -> anyhow::Result<()> {
        let guard_pool = handle.pool().clone();
        context.spawn_consumer(&handle, events::referrals());
        context.spawn_consumer(&handle, events::engagement());
        let service = grpc::RiskAssessment::new(
            handle,
            ClientKeys::new(context.keys.clone()),
            config.first_assessment_target_days,
            context.platform.programme.clone(),
        );
        routes.add_service(Self::guard(
            context,
            &guard_pool,
            RiskAssessmentServiceServer::new(service)
                .max_decoding_message_size(context.max_request_bytes()),
        ));
        Ok(())
    }
}
