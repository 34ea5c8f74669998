//! Notifications: closes the loop with referring agencies. Every
//! referrer-visible status change becomes a notification (IDs and statuses,
//! never personal data), streamed live to the agency over gRPC and posted to
//! the agency's webhooks with retries. It also keeps the alerts for an
//! area's coordinators (mentors who need attention, urgent concerns).
//!
//! # Layout
//! - this file: `Config` (its own section) and `Descriptor`, the service as the
//!   binary registers it (`SERVICE`): consumers, rules on its settings, start.
//! - [`domain`]: the notice of a status, and webhook URL rules.
//! - [`db`]: action-named queries on the `notifications` schema.
//! - [`events`]: the consumer that turns events into notifications and deliveries.
//! - [`webhooks`]: the delivery worker.
//! - [`feed`]: publishes every notification to the agency feed exchange.
//! - [`staff_alerts`]: coordinators' alerts, listed by area.
//! - [`templates`]: what e-mails say, versioned, from a closed set of placeholders.
//! - [`preferences`]: which kinds go out on which channels, per agency and referrer.
//! - [`email`]: SMTP settings, the e-mail queue and its worker.
//! - [`commands`]: one function per use case, with [`commands::NoticeError`].
//! - [`grpc`]: serves `cpm.v1.NotificationsService` (Subscribe, RegisterWebhook,
//!   ListDeliveries, ListStaffAlerts, Set/GetNotificationPreferences) and
//!   its access table.

pub mod commands;
pub mod db;
pub mod domain;
pub mod email;
pub mod events;
pub mod feed;
pub mod grpc;
pub mod preferences;
pub mod staff_alerts;
pub mod templates;
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
    /// Attempts before a delivery is marked failed.
    pub webhook_max_attempts: i32,
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: String::new(),
            webhook_timeout_secs: 10,
            webhook_max_attempts: 8,
            webhook_poll_interval_ms: 1000,
            agency_feed: true,
            agency_feed_poll_interval_ms: 1000,
            templates: templates::TemplatesConfig::default(),
            smtp: email::SmtpConfig::default(),
        }
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
            events::staff_alerts().spec(),
        ]
    }

    fn listen(config: &Config) -> &str {
        &config.listen
    }

    /// The templates parse with known placeholders only; the SMTP
    /// settings hold together (and use TLS in production).
    fn validate(config: &Config, platform: &PlatformConfig) -> Result<(), ConfigError> {
        templates::Templates::new(&config.templates)
            .map_err(|(key, problem)| ConfigError::invalid(&key, problem))?;
        config
            .smtp
            .check(platform.profile == Profile::Production)
            .map_err(|(key, problem)| ConfigError::invalid(&key, problem))?;
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
        context.spawn_consumer(&handle, events::staff_alerts());
        let pool = handle.pool().clone();
        // Wakes streams and the webhook worker when notifications commit.
        let (wake_sender, wake) = watch::channel(0u64);
        let wake_sender = Arc::new(wake_sender);
        let (listen_pool, shutdown) = (pool.clone(), context.shutdown.clone());
        context.spawn(
            TaskSpec::essential(NAME, format!("{NAME}.commit-listener")),
            move || listen_for_commits(listen_pool.clone(), wake_sender.clone(), shutdown.clone()),
        );
        let worker = Arc::new(webhooks::WebhookWorker::new(handle.clone(), &config)?);
        let (worker_wake, shutdown) = (wake.clone(), context.shutdown.clone());
        context.spawn_loop(
            TaskSpec::essential(NAME, format!("{NAME}.webhook-worker")),
            move || worker.clone().run(worker_wake.clone(), shutdown.clone()),
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
        let service = grpc::Notifications::new(pool, wake, context, allow_plain_http);
        routes.add_service(Self::guard(
            context,
            &guard_pool,
            NotificationsServiceServer::new(service)
                .max_decoding_message_size(context.max_request_bytes()),
        ));
        Ok(())
    }
}

/// Bumps `wake` on every NOTIFY; re-listens after a lost connection. Readers
/// also poll, so a missed wake-up only delays them.
async fn listen_for_commits(
    pool: sqlx::PgPool,
    wake: Arc<watch::Sender<u64>>,
    shutdown: cpm_runtime::Shutdown,
) -> anyhow::Result<()> {
    let mut delays = cpm_runtime::retry::reconnect();
    while !shutdown.is_cancelled() {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            loop {
                listener.recv().await?;
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
