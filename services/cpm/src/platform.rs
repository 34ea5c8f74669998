//! Starting and stopping a platform: the selected services in one process,
//! on one gRPC listener, sharing one broker connection.
//!
//! Shutdown order: health turns NOT_SERVING, the server stops taking calls
//! and lets in-flight ones finish (bounded), consumers finish the delivery
//! in hand, relays flush the outbox once more, then the broker connection
//! and pools close.

use std::net::SocketAddr;

use cpm_runtime::Shutdown;
use cpm_runtime::service::ServiceContext;
use cpm_runtime::supervisor::Supervisor;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{Settings, Target};

/// The grpc.health.v1 service name of liveness probes: SERVING while the
/// process runs, whatever its dependencies (service `""` is readiness).
pub const LIVENESS: &str = "liveness";

/// A running platform.
pub struct Platform {
    local_addr: SocketAddr,
    health_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    shutdown: Shutdown,
    supervisor: Supervisor,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Platform {
    /// Starts `targets`; returns once the listener is bound and every
    /// service's schema is migrated.
    pub async fn start(settings: Settings, targets: &[Target]) -> anyhow::Result<Self> {
        Self::start_with_shutdown(settings, targets, Shutdown::new()).await
    }

    pub async fn start_with_shutdown(
        settings: Settings,
        targets: &[Target],
        shutdown: Shutdown,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!targets.is_empty(), "no target to run");
        if !settings.platform.telemetry.metrics_listen.is_empty() {
            // Before anything records, so the first events are counted too.
            cpm_runtime::metrics::handle();
        }
        let context = ServiceContext::new(settings.platform.clone(), shutdown.clone())?;
        if settings.platform.profile == cpm_runtime::config::Profile::Development {
            // `cpm serve` with no configuration works on a stock install;
            // production databases are created by their operators.
            if let Err(error) =
                cpm_runtime::db::ensure_database(settings.platform.database.url.expose()).await
            {
                match error
                    .downcast_ref::<sqlx::Error>()
                    .and_then(cpm_runtime::db::refusal)
                {
                    Some(explanation) => anyhow::bail!(explanation),
                    None => tracing::warn!(%error, "could not create the database; waiting for it"),
                }
            }
        }
        // Every queue of every service exists before any service publishes.
        context
            .bus
            .declare_consumer_queues_when_ready(&all_consumers(), &shutdown)
            .await?;
        let reflection = settings
            .platform
            .grpc
            .reflection_under(settings.platform.profile);
        let (mut routes, reporter, plain_health) =
            cpm_runtime::grpc::server::base_routes(reflection, &context.auth).await?;
        let mut started = Vec::new();
        for target in targets {
            let section = settings.section(*target);
            started.push(
                target
                    .service()
                    .start(&context, section, &mut routes)
                    .await?,
            );
            tracing::info!(target = %target, "service started");
        }
        let address = settings.listen_address(targets);
        let listener = TcpListener::bind(address.as_str())
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen on {address}: {error}"))?;
        let local_addr = listener.local_addr()?;
        tracing::info!(%local_addr, targets = ?targets.iter().map(|t| t.as_str()).collect::<Vec<_>>(), "serving gRPC");
        let health_port = &settings.platform.grpc.health_listen;
        let (health_addr, health_only) = if health_port.is_empty() {
            (None, None)
        } else {
            let health_listener = TcpListener::bind(health_port.as_str())
                .await
                .map_err(|error| anyhow::anyhow!("cannot listen on {health_port}: {error}"))?;
            let health_addr = health_listener.local_addr()?;
            tracing::info!(%health_addr, "serving plaintext health for probes");
            let task = tokio::spawn(cpm_runtime::grpc::server::serve_health_only(
                health_listener,
                plain_health,
                shutdown.clone(),
            ));
            (Some(health_addr), Some(task))
        };

        let metrics_port = &settings.platform.telemetry.metrics_listen;
        let metrics_addr = if metrics_port.is_empty() {
            None
        } else {
            let metrics_listener = TcpListener::bind(metrics_port.as_str())
                .await
                .map_err(|error| anyhow::anyhow!("cannot listen on {metrics_port}: {error}"))?;
            let metrics_addr = metrics_listener.local_addr()?;
            tracing::info!(%metrics_addr, "serving Prometheus metrics");
            tokio::spawn(cpm_runtime::metrics::serve(
                metrics_listener,
                shutdown.clone(),
            ));
            let consumers = targets
                .iter()
                .flat_map(|target| target.service().consumers())
                .collect();
            tokio::spawn(cpm_runtime::metrics::watch_queues(
                context.bus.clone(),
                consumers,
                std::time::Duration::from_secs(30),
                shutdown.clone(),
            ));
            Some(metrics_addr)
        };

        // Liveness, unlike readiness, must not follow the database or the
        // broker: an orchestrator restarting every pod while PostgreSQL is
        // down would only add a restart storm to the outage. This name
        // answers SERVING for as long as the process serves gRPC at all.
        reporter
            .set_service_status(LIVENESS, tonic_health::ServingStatus::Serving)
            .await;
        context.spawn_health_monitor(reporter, started.clone());
        let supervisor = context.supervisor.clone();
        let grpc = settings.platform.grpc.clone();
        let server_shutdown = shutdown.clone();
        let handle = tokio::spawn(async move {
            let served =
                cpm_runtime::grpc::server::serve(listener, routes, &grpc, server_shutdown).await;
            context.drain(grpc.shutdown_timeout()).await;
            if let Some(task) = health_only {
                let _ = task.await;
            }
            for service in &started {
                service.pool.close().await;
            }
            tracing::info!("platform stopped");
            if let Some(task) = context.supervisor.gave_up_on() {
                anyhow::bail!("background task {task} kept failing and could not be kept alive");
            }
            served
        });
        Ok(Self {
            local_addr,
            health_addr,
            metrics_addr,
            shutdown,
            supervisor,
            handle,
        })
    }

    /// The metrics listener, when `telemetry.metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The plaintext health-only listener, when `grpc.health_listen` is set.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// An endpoint clients on this machine can dial.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.local_addr.port())
    }

    /// The supervisor of the platform's background tasks.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    pub fn shutdown_token(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Stops gracefully and waits until everything has stopped.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the platform stops (after its shutdown token fires, or
    /// its supervisor gives up on a task: then an error naming it).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.handle.await?
    }
}

/// The consumer queues of every service, whichever targets a process runs.
pub fn all_consumers() -> Vec<cpm_runtime::bus::ConsumerSpec> {
    Target::ALL
        .iter()
        .flat_map(|target| target.service().consumers())
        .collect()
}

/// The schema a target owns.
pub fn schema_of(target: Target) -> &'static str {
    target.service().schema()
}

/// Creates the database if needed, migrates each target's schema, and
/// declares the broker's exchanges and queues.
pub async fn migrate(settings: &Settings, targets: &[Target]) -> anyhow::Result<()> {
    let bus = cpm_runtime::bus::Bus::new(&settings.platform.amqp);
    bus.declare_consumer_queues(&all_consumers()).await?;
    bus.close().await;
    cpm_runtime::db::ensure_database(settings.platform.database.url.expose()).await?;
    for target in targets {
        let service = target.service();
        let pool = cpm_runtime::db::pool(&settings.platform.database, service.schema())?;
        cpm_runtime::db::migrate(&pool, service.schema(), service.migrations()).await?;
        if settings.platform.database.service_roles {
            cpm_runtime::db::grant_service_role(&pool, service.schema()).await?;
        }
        pool.close().await;
    }
    Ok(())
}
