//! Contact logging: the case file of a client in support. A case file opens
//! when an allocation is confirmed; the allocated mentors and the
//! coordinators log contacts on it (one of nine activities and the minutes
//! taken), and a coordinator discharges it, which tells the referrer. When a
//! coordinator ends support after a re-assessment the case file closes.
//! Coordinators work on the case files of the areas their token names
//! (admins on every area's), mentors on the cases they are allocated to;
//! any other case file is NOT_FOUND, as a missing one is.
//!
//! Beside the case file it keeps the client's goals, the demand on
//! emergency services before and after support, and what the programme
//! cost, and reports impact (by a versioned costing formula) and contacts
//! to coordinators for their areas and to admins for the whole programme.
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
//! - [`goals`]: a client's GROW goals and their progress, sealed text.
//! - [`demand`]: demand before and after support, and the `referrals`
//!   consumer that keeps each referral's area, demand and non-engagement.
//! - [`impact`]: the versioned costing formula and the impact report.
//! - [`reports`]: contacts, activities, engagement and quiet mentors, with
//!   CSV and an SVG chart.

pub mod commands;
pub mod concerns;
pub mod db;
pub mod demand;
pub mod domain;
pub mod events;
pub mod goals;
pub mod grpc;
pub mod impact;
pub mod reports;

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

/// The longest demand window, in months.
pub const MAX_WINDOW_MONTHS: u32 = 60;

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
    /// Months before support that staff-recorded BEFORE_SUPPORT figures
    /// cover (the referral's own always cover 12).
    pub demand_before_months: u32,
    /// Months after discharge the first follow-up window covers.
    pub first_follow_up_months: u32,
    /// Months after discharge the second follow-up window covers.
    pub second_follow_up_months: u32,
    /// The agreed costing formula under its version (`[contact_logging.impact]`).
    pub impact: impact::Formula,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: String::new(),
            how_to_re_refer: "To refer this client again, submit a new referral through your \
                              agency's usual route and mention the earlier referral's reference."
                .to_owned(),
            demand_before_months: 12,
            first_follow_up_months: 6,
            second_follow_up_months: 12,
            impact: impact::Formula::default(),
        }
    }
}

/// Contact logging as the binary registers it.
pub struct Descriptor;

/// The binary's handle on this service.
pub static SERVICE: Registered<Descriptor> = Registered::new();

impl Service for Descriptor {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str = "case files, contacts, goals, demand, impact, discharge";
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
        vec![events::allocations().spec(), demand::referrals().spec()]
    }

    /// The demand windows and the impact formula must make sense, and the
    /// re-referral instructions, which reach referrers, be 1 to 1,000
    /// characters of visible text.
    fn validate(config: &Config, _platform: &PlatformConfig) -> Result<(), ConfigError> {
        let mut violations = cpm_runtime::grpc::FieldViolations::new();
        cpm_runtime::grpc::values::check_text(
            "how_to_re_refer",
            &config.how_to_re_refer,
            true,
            1000,
            &mut violations,
        );
        if !violations.is_empty() {
            return Err(ConfigError::invalid(
                "contact_logging.how_to_re_refer",
                "must be 1 to 1000 characters of visible text",
            ));
        }
        for (key, months) in [
            (
                "contact_logging.demand_before_months",
                config.demand_before_months,
            ),
            (
                "contact_logging.first_follow_up_months",
                config.first_follow_up_months,
            ),
            (
                "contact_logging.second_follow_up_months",
                config.second_follow_up_months,
            ),
        ] {
            if !(1..=MAX_WINDOW_MONTHS).contains(&months) {
                return Err(ConfigError::invalid(
                    key,
                    format!("must be between 1 and {MAX_WINDOW_MONTHS} months"),
                ));
            }
        }
        if config.second_follow_up_months <= config.first_follow_up_months {
            return Err(ConfigError::invalid(
                "contact_logging.second_follow_up_months",
                "must be longer than first_follow_up_months",
            ));
        }
        config
            .impact
            .validate()
            .map_err(|problem| ConfigError::invalid("contact_logging.impact", problem))
    }

    fn listen(config: &Config) -> &str {
        &config.listen
    }

    /// Records the impact formula's version (refusing a version changed
    /// under the same name), starts the case-file and referral consumers,
    /// and adds the gRPC service to `routes`.
    async fn start(
        context: &ServiceContext,
        handle: ServiceHandle,
        config: Config,
        routes: &mut RoutesBuilder,
    ) -> anyhow::Result<()> {
        let guard_pool = handle.pool().clone();
        impact::register_formula(&guard_pool, &config.impact).await?;
        context.spawn_consumer(&handle, events::allocations());
        context.spawn_consumer(&handle, demand::referrals());
        let service = grpc::ContactLogging::new(
            handle,
            cpm_runtime::client_keys::ClientKeys::new(context.keys.clone()),
        )
        .with_config(config);
        routes.add_service(Self::guard(
            context,
            &guard_pool,
            ContactLoggingServiceServer::new(service)
                .max_decoding_message_size(context.max_request_bytes()),
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(config: &Config) -> Option<String> {
        Descriptor::validate(config, &PlatformConfig::default())
            .err()
            .map(|error| error.to_string())
    }

    #[test]
    fn the_default_settings_are_valid_and_bad_windows_or_prices_are_refused_by_name() {
        assert_eq!(problem(&Config::default()), None);
        let refused = [
            (
                Config {
                    first_follow_up_months: 0,
                    ..Config::default()
                },
                "contact_logging.first_follow_up_months",
            ),
            (
                Config {
                    demand_before_months: MAX_WINDOW_MONTHS + 1,
                    ..Config::default()
                },
                "contact_logging.demand_before_months",
            ),
            (
                Config {
                    second_follow_up_months: 6,
                    ..Config::default()
                },
                "contact_logging.second_follow_up_months",
            ),
            (
                Config {
                    impact: impact::Formula {
                        pence_per_emergency_call: -1,
                        ..impact::Formula::default()
                    },
                    ..Config::default()
                },
                "contact_logging.impact",
            ),
        ];
        for (config, key) in refused {
            let problem = problem(&config).expect("refused");
            assert!(problem.contains(key), "{problem}");
        }
    }
}
