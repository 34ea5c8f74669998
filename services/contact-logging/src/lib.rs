//! Contact logging: the case file of a client in support. A case file opens
//! when an allocation is confirmed; the allocated mentors and the
//! coordinators log contacts on it (one of nine activities and the minutes
//! taken), and a coordinator discharges it, which tells the referrer. When a
//! coordinator ends support after a re-assessment the case file closes.
//! Coordinators work on the case files of the areas their token names
//! (admins on every area's), mentors on the cases they are allocated to;
//! any other case file is NOT_FOUND, as a missing one is.
//!
//! # Layout
//! - this file: `Config` (its own section) and `Descriptor`, the service as the
//!   binary registers it (`SERVICE`): consumers, rules on its settings, start.
//! - [`domain`]: requests parsed and validated at the edge; the access rule
//!   ([`domain::CaseAccess`]).
//! - [`db`]: action-named queries on the `contact_logging` schema.
//! - [`commands`]: one function per use case, with [`commands::CaseError`].
//! - [`grpc`]: the handlers of `cpm.v1.ContactLoggingService` and its access table.
//! - [`events`]: the consumer that opens case files on `allocation.confirmed`
//!   and closes them on an ended engagement.

pub mod commands;
pub mod concerns;
pub mod db;
pub mod domain;
pub mod events;
pub mod grpc;

use cpm_proto::v1::contact_logging_service_server::ContactLoggingServiceServer;
use cpm_runtime::bus::{ConsumerSpec, ServiceHandle};
use cpm_runtime::config::{ConfigError, PlatformConfig};
use cpm_runtime::descriptor::{Registered, Service};
use cpm_runtime::grpc::access::AccessTable;
use cpm_runtime::service::ServiceContext;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use tonic::service::RoutesBuilder;

/// The target name and the producer name in events.
pub const NAME: &str = "contact-logging";
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "contact_logging";

static MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/contact-logging");

/// This service's own settings (`[contact_logging]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Its own listen address when run as a single target; empty uses `grpc.listen`.
    pub listen: String,
    /// The programme's instructions for referring a client again, sent to
    /// the referrer with every discharge feedback. Programme text, never
    /// about a client.
    pub how_to_re_refer: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: String::new(),
            how_to_re_refer: "To refer this client again, submit a new referral through your \
                              agency's usual route and mention the earlier referral's reference."
                .to_owned(),
        }
    }
}

/// Contact logging as the binary registers it.
pub struct Descriptor;

/// The binary's handle on this service.
pub static SERVICE: Registered<Descriptor> = Registered::new();

impl Service for Descriptor {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str = "case files, contacts, discharge";
    const SCHEMA: &'static str = SCHEMA;
    const GRPC_NAME: &'static str = "cpm.v1.ContactLoggingService";
    type Config = Config;

    fn migrations() -> &'static Migrator {
        &MIGRATIONS
    }

    fn access() -> &'static AccessTable {
        &grpc::ACCESS
    }

    fn consumers() -> Vec<ConsumerSpec> {
        vec![events::allocations().spec()]
    }

    fn listen(config: &Config) -> &str {
        &config.listen
    }

    /// The re-referral instructions reach referrers: visible text, at most
    /// 1,000 characters.
    fn validate(config: &Config, _platform: &PlatformConfig) -> Result<(), ConfigError> {
        let mut violations = cpm_runtime::grpc::FieldViolations::new();
        cpm_runtime::grpc::values::check_text(
            "how_to_re_refer",
            &config.how_to_re_refer,
            true,
            1000,
            &mut violations,
        );
        if violations.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::invalid(
                "contact_logging.how_to_re_refer",
                "must be 1 to 1000 characters of visible text",
            ))
        }
    }

    /// Starts the case-file consumer, and adds the gRPC
    /// service to `routes`.
    async fn start(
        context: &ServiceContext,
        handle: ServiceHandle,
        config: Config,
        routes: &mut RoutesBuilder,
    ) -> anyhow::Result<()> {
        let guard_pool = handle.pool().clone();
        context.spawn_consumer(&handle, events::allocations());
        let service = grpc::ContactLogging::new(
            handle,
            cpm_runtime::client_keys::ClientKeys::new(context.keys.clone()),
            config.how_to_re_refer,
        );
        routes.add_service(Self::guard(
            context,
            &guard_pool,
            ContactLoggingServiceServer::new(service)
                .max_decoding_message_size(context.max_request_bytes()),
        ));
        Ok(())
    }
}
