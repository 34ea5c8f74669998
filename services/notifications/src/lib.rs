//! Notifications: closes the loop with referring agencies. Every
//! referrer-visible status change becomes a notification (IDs and statuses,
//! never personal data), streamed live to the agency over gRPC and posted to
//! the agency's webhooks, signed, with retries. It also keeps the alerts for an
//! area's coordinators (mentors who need attention, urgent concerns).
//!
//! # Layout
//! - this file: `Config` (its own section) and `Descriptor`, the service as the
//!   binary registers it (`SERVICE`): consumers, rules on its settings, start.
//! - [`domain`]: the notice of a status, and webhook URL rules.
//! - [`db`]: action-named queries on the `notifications` schema.
//! - [`events`]: the consumer that turns events into notifications and deliveries.
//! - [`webhooks`]: the delivery worker (claims, posts outside transactions,
//!   records every attempt).
//! - [`signing`]: Standard Webhooks signatures and sealed secrets.
//! - [`destinations`]: which hosts webhooks may reach, checked at
//!   registration and at every connection.
//! - [`retry_policy`]: back-off with jitter, the retry window, the circuit breaker.
//! - [`webhook_store`]: queries on webhooks, deliveries and the delivery log.
//! - [`webhook_admin`]: an agency's webhook use cases (register, list,
//!   disable, delete, rotate, redeliver, the delivery log).
//! - [`feed`]: publishes every notification to the agency feed exchange.
//! - [`body`]: what webhooks and the feed carry of a notification, as JSON.
//! - [`staff_alerts`]: coordinators' alerts, listed by area.
//! - [`templates`]: what e-mails say, versioned, from a closed set of placeholders.
//! - [`preferences`]: which kinds go out on which channels, per agency and referrer.
//! - [`email`]: SMTP settings, the e-mail queue and its worker.
//! - [`commands`]: one function per use case, with [`commands::NoticeError`].
//! - [`grpc`]: serves `cpm.v1.NotificationsService` (Subscribe, RegisterWebhook,
//!   ListWebhooks, DisableWebhook, DeleteWebhook, RotateWebhookSecret,
//!   RedeliverDeliveries, ListDeliveries, ListStaffAlerts,
//!   Set/GetNotificationPreferences) and its access table.

pub mod body;
pub mod commands;
pub mod db;
pub mod destinations;
pub mod domain;
pub mod email;
pub mod events;
pub mod feed;
pub mod grpc;
pub mod preferences;
pub mod retry_policy;
pub mod signing;
pub mod staff_alerts;
pub mod stream_leases;
pub mod templates;
pub mod webhook_admin;
pub mod webhook_store;
pub mod webhooks;

use std::sync::Arc;

use cpm_proto::v1::notifications_service_server::NotificationsServiceServer;
use cpm_runtime::bus::{ConsumerSpec, ServiceHandle};
use cpm_runtime::config::{ConfigError, PlatformConfig, Profile};
use cpm_runtime::descriptor::{Registered, Service};
use cpm_runtime::grpc::access::AccessTable;
use cpm_runtime::service::ServiceContext;
use cpm_runtime::supervisor::TaskSpec;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use tokio::sync::watch;
use tonic::service::RoutesBuilder;

pub const NAME: &str = "notifications";
pub const SCHEMA: &str = "notifications";

static MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/notifications");

/// The NOTIFY channel raised when notifications are committed.
pub const NOTIFY_CHANNEL: &str = "cpm_notifications";

/// This service's own settings (`[notifications]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub listen: String,
    /// How long one webhook call may take.
    pub webhook_timeout_secs: u64,
    /// How often the worker looks for due deliveries without a wake-up.
    pub webhook_poll_interval_ms: u64,
    /// Publish every notification to the agency feed exchange too
    /// ([`feed`]); how often it looks for unpublished ones without a wake-up.
    pub agency_feed: bool,
    pub agency_feed_poll_interval_ms: u64,
    /// `[notifications.templates]`: the e-mail texts and their version.
    pub templates: templates::TemplatesConfig,
    /// `[notifications.smtp]`: where e-mail is sent; off while no host is set.
    pub smtp: email::SmtpConfig,
    /// How long after it was queued a failing delivery is retried before
    /// it is dead-lettered.
    pub webhook_retry_window_secs: u64,
    /// The first retry's pause ceiling; it doubles per failure.
    pub webhook_backoff_base_ms: u64,
    /// The longest pause between two attempts.
    pub webhook_backoff_max_secs: u64,
    /// Failures in a row that open an endpoint's circuit.
    pub webhook_circuit_failures: i32,
    /// How long an open circuit holds an endpoint's deliveries back.
    pub webhook_circuit_cooldown_secs: u64,
    /// Endpoints one worker posts to at once (the prompt lane; the suspect
    /// lane has a quarter as many, see [`webhooks`]).
    pub webhook_concurrency: usize,
    /// A post taking longer than this is slow: its endpoint is suspect until
    /// a post to it is prompt again, and a claim still posting after this
    /// gives its prompt slot up.
    pub webhook_slow_ms: u64,
    /// Deliveries posted per claim of one endpoint.
    pub webhook_batch: u32,
    /// How long a rotated-out secret still signs (both signatures are sent).
    pub webhook_secret_overlap_secs: u64,
    /// Host names or CIDRs webhooks may reach even though they are
    /// internal (loopback, private, link-local...). Operators only.
    pub webhook_allow_hosts: Vec<String>,
    /// Whether webhooks may reach loopback; unset: only in development.
    pub webhook_allow_loopback: Option<bool>,
    /// Subscribe streams one agency may hold open at once, across every
    /// replica (see [`stream_leases`]).
    pub max_streams_per_agency: usize,
    /// Webhooks one agency may have registered (deleted ones do not
    /// count); it also bounds ListWebhooks, so at most
    /// [`cpm_runtime::grpc::page::MAX_PAGE_SIZE`].
    pub max_webhooks_per_agency: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: String::new(),
            webhook_timeout_secs: 10,
            webhook_poll_interval_ms: 1000,
            agency_feed: true,
            agency_feed_poll_interval_ms: 1000,
            templates: templates::TemplatesConfig::default(),
            smtp: email::SmtpConfig::default(),
            webhook_retry_window_secs: 24 * 3600,
            webhook_backoff_base_ms: 5_000,
            webhook_backoff_max_secs: 3600,
            webhook_circuit_failures: 5,
            webhook_circuit_cooldown_secs: 300,
            webhook_concurrency: 16,
            webhook_slow_ms: 2000,
            webhook_batch: 8,
            webhook_secret_overlap_secs: 24 * 3600,
            webhook_allow_hosts: Vec::new(),
            webhook_allow_loopback: None,
            max_streams_per_agency: 8,
            max_webhooks_per_agency: 10,
        }
    }
}

impl Config {
    pub fn retry_policy(&self) -> retry_policy::RetryPolicy {
        retry_policy::RetryPolicy {
            backoff_base: std::time::Duration::from_millis(self.webhook_backoff_base_ms),
            backoff_max: std::time::Duration::from_secs(self.webhook_backoff_max_secs),
            window: std::time::Duration::from_secs(self.webhook_retry_window_secs),
            circuit_failures: self.webhook_circuit_failures,
            circuit_cooldown: std::time::Duration::from_secs(self.webhook_circuit_cooldown_secs),
        }
    }

    /// The destination rule under `profile`.
    pub fn destination_policy(
        &self,
        profile: cpm_runtime::config::Profile,
    ) -> Result<destinations::DestinationPolicy, String> {
        let allow_loopback = self
            .webhook_allow_loopback
            .unwrap_or(profile == cpm_runtime::config::Profile::Development);
        destinations::DestinationPolicy::new(&self.webhook_allow_hosts, allow_loopback)
    }
}

/// Notifications as the binary registers it.
pub struct Descriptor;

/// The binary's handle on this service.
pub static SERVICE: Registered<Descriptor> = Registered::new();

impl Service for Descriptor {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str = "tells referring agencies: gRPC stream and webhooks";
    const SCHEMA: &'static str = SCHEMA;
    const GRPC_NAME: &'static str = "cpm.v1.NotificationsService";
    type Config = Config;

    fn migrations() -> &'static Migrator {
        &MIGRATIONS
    }

    fn access() -> &'static AccessTable {
        &grpc::ACCESS
    }

    fn consumers() -> Vec<ConsumerSpec> {
        vec![
            events::status_notices(Default::default(), false).spec(),
            events::staff_alerts(Default::default(), false).spec(),
        ]
    }

    fn listen(config: &Config) -> &str {
        &config.listen
    }

    /// The templates parse with known placeholders only; the SMTP
    /// settings hold together (and use TLS in production); the webhook
    /// allow-list, breaker and back-off make sense.
    fn validate(config: &Config, platform: &PlatformConfig) -> Result<(), ConfigError> {
        templates::Templates::new(&config.templates)
            .map_err(|(key, problem)| ConfigError::invalid(&key, problem))?;
        config
            .smtp
            .check(platform.profile == Profile::Production)
            .map_err(|(key, problem)| ConfigError::invalid(&key, problem))?;
        if let Err(entry) = config.destination_policy(platform.profile) {
            return Err(ConfigError::invalid(
                "notifications.webhook_allow_hosts",
                format!("`{entry}` is neither a host name nor an address range"),
            ));
        }
        if config.webhook_circuit_failures < 1 {
            return Err(ConfigError::invalid(
                "notifications.webhook_circuit_failures",
                "must be at least 1",
            ));
        }
        if config.webhook_slow_ms == 0
            || config.webhook_slow_ms > config.webhook_timeout_secs * 1000
        {
            return Err(ConfigError::invalid(
                "notifications.webhook_slow_ms",
                "must be at least 1 and at most webhook_timeout_secs in milliseconds",
            ));
        }
        if config.max_streams_per_agency == 0 {
            return Err(ConfigError::invalid(
                "notifications.max_streams_per_agency",
                "must be at least 1",
            ));
        }
        let max_page = cpm_runtime::grpc::page::MAX_PAGE_SIZE.unsigned_abs();
        if !(1..=max_page).contains(&config.max_webhooks_per_agency) {
            return Err(ConfigError::invalid(
                "notifications.max_webhooks_per_agency",
                format!("must be between 1 and {max_page} (one ListWebhooks page)"),
            ));
        }
        if config.webhook_backoff_base_ms == 0 {
            return Err(ConfigError::invalid(
                "notifications.webhook_backoff_base_ms",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Starts the consumer, the commit listener and the webhook
    /// worker, and adds the gRPC service to `routes`.
    async fn start(
        context: &ServiceContext,
        handle: ServiceHandle,
        config: Config,
        routes: &mut RoutesBuilder,
    ) -> anyhow::Result<()> {
        let templates = Arc::new(
            templates::Templates::new(&config.templates)
                .map_err(|(key, problem)| anyhow::anyhow!("{key}: {problem}"))?,
        );
        email::register_templates(
            &mut *handle.pool().acquire().await?,
            &config.templates,
            templates.version(),
        )
        .await?;
        let email_enabled = config.smtp.enabled();
        context.spawn_consumer(
            &handle,
            events::status_notices(templates.clone(), email_enabled),
        );
        context.spawn_consumer(
            &handle,
            events::staff_alerts(templates.clone(), email_enabled),
        );
        let pool = handle.pool().clone();
        // Wakes streams and the webhook worker when notifications commit.
        let (wake_sender, wake) = watch::channel(0u64);
        let wake_sender = Arc::new(wake_sender);
        let woken = webhooks::WokenAgencies::default();
        let (listen_pool, listen_woken, shutdown) =
            (pool.clone(), woken.clone(), context.shutdown.clone());
        context.spawn(
            TaskSpec::essential(NAME, format!("{NAME}.commit-listener")),
            move || {
                listen_for_commits(
                    listen_pool.clone(),
                    wake_sender.clone(),
                    listen_woken.clone(),
                    shutdown.clone(),
                )
            },
        );
        let policy = Arc::new(
            config
                .destination_policy(context.platform.profile)
                .map_err(|entry| anyhow::anyhow!("bad webhook_allow_hosts entry `{entry}`"))?,
        );
        let lookup = destinations::system_lookup();
        let worker = Arc::new(webhooks::WebhookWorker::new(
            handle.clone(),
            &config,
            context.keys.clone(),
            policy.clone(),
            lookup.clone(),
        )?);
        let (worker_wake, shutdown) = (wake.clone(), context.shutdown.clone());
        context.spawn_loop(
            TaskSpec::essential(NAME, format!("{NAME}.webhook-worker")),
            move || {
                worker
                    .clone()
                    .run(worker_wake.clone(), woken.clone(), shutdown.clone())
            },
        );

        if config.agency_feed {
            let feed = Arc::new(feed::FeedPublisher::new(
                pool.clone(),
                context.bus.clone(),
                std::time::Duration::from_millis(config.agency_feed_poll_interval_ms),
            ));
            let (feed_wake, shutdown) = (wake.clone(), context.shutdown.clone());
            context.spawn_loop(
                TaskSpec::essential(NAME, format!("{NAME}.agency-feed")),
                move || feed.clone().run(feed_wake.clone(), shutdown.clone()),
            );
        }

        if email_enabled {
            let email_worker = Arc::new(email::EmailWorker::new(handle.clone(), &config.smtp)?);
            let (email_wake, shutdown) = (wake.clone(), context.shutdown.clone());
            context.spawn_loop(
                TaskSpec::essential(NAME, format!("{NAME}.email-worker")),
                move || {
                    email_worker
                        .clone()
                        .run(email_wake.clone(), shutdown.clone())
                },
            );
        }

        let allow_plain_http =
            context.platform.profile == cpm_runtime::config::Profile::Development;
        let guard_pool = pool.clone();
        let admin = webhook_admin::WebhookAdmin {
            pool: pool.clone(),
            keys: context.keys.clone(),
            policy,
            lookup,
            secret_overlap: std::time::Duration::from_secs(config.webhook_secret_overlap_secs),
            max_webhooks: config.max_webhooks_per_agency,
        };
        let service = grpc::Notifications::new(
            pool,
            wake,
            context,
            allow_plain_http,
            Arc::new(admin),
            stream_leases::StreamLeases::new(guard_pool.clone(), config.max_streams_per_agency),
        );
        routes.add_service(Self::guard(
            context,
            &guard_pool,
            NotificationsServiceServer::new(service)
                .max_decoding_message_size(context.max_request_bytes()),
        ));
        Ok(())
    }
}

/// Bumps `wake` on every NOTIFY, after noting its agency in `woken` for the
/// webhook worker; re-listens after a lost connection. Readers also poll,
/// so a missed wake-up only delays them.
async fn listen_for_commits(
    pool: sqlx::PgPool,
    wake: Arc<watch::Sender<u64>>,
    woken: webhooks::WokenAgencies,
    shutdown: cpm_runtime::Shutdown,
) -> anyhow::Result<()> {
    let mut delays = cpm_runtime::retry::reconnect();
    while !shutdown.is_cancelled() {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            loop {
                let notification = listener.recv().await?;
                woken.note(notification.payload());
                wake.send_modify(|n| *n += 1);
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            result = listener => {
                if let Err(error) = result {
                    tracing::warn!(%error, "notification listener lost, re-listening");
                }
            }
        }
        let delay = delays.next_pause();
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use cpm_runtime::config::{PlatformConfig, Profile};
    use cpm_runtime::descriptor::Service as _;

    use super::*;

    #[test]
    fn webhook_settings_are_checked_at_start() {
        let platform = PlatformConfig::default();
        assert!(Descriptor::validate(&Config::default(), &platform).is_ok());
        for config in [
            Config {
                webhook_allow_hosts: vec!["https://hooks.internal/".into()],
                ..Config::default()
            },
            Config {
                webhook_circuit_failures: 0,
                ..Config::default()
            },
            Config {
                webhook_backoff_base_ms: 0,
                ..Config::default()
            },
            Config {
                webhook_slow_ms: 0,
                ..Config::default()
            },
            Config {
                webhook_timeout_secs: 1,
                webhook_slow_ms: 1001,
                ..Config::default()
            },
            Config {
                max_streams_per_agency: 0,
                ..Config::default()
            },
            Config {
                max_webhooks_per_agency: 0,
                ..Config::default()
            },
            Config {
                max_webhooks_per_agency: 501,
                ..Config::default()
            },
        ] {
            assert!(
                Descriptor::validate(&config, &platform).is_err(),
                "{config:?}"
            );
        }
    }

    #[test]
    fn loopback_is_a_destination_only_in_development_unless_set() {
        let loopback = "127.0.0.1".parse().unwrap();
        let allows = |config: &Config, profile| {
            config
                .destination_policy(profile)
                .unwrap()
                .allows("localhost", loopback)
                .is_ok()
        };
        let default = Config::default();
        assert!(allows(&default, Profile::Development));
        assert!(!allows(&default, Profile::Production));
        let off = Config {
            webhook_allow_loopback: Some(false),
            ..Config::default()
        };
        assert!(!allows(&off, Profile::Development));
    }
}
