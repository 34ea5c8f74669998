//! What a service is given to start with, and what it hands back: the
//! shared pieces (bus connection, authenticator, keys) are built once per
//! process and shared by every service the process runs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::Shutdown;
use crate::auth::Authenticator;
use crate::bus::consumer::Consumer;
use crate::bus::outbox::ServiceHandle;
use crate::bus::relay::Relay;
use crate::bus::{Bus, Router};
use crate::config::PlatformConfig;
use crate::crypto::KeyRing;
use crate::supervisor::{Lifetime, Supervisor, TaskSpec};

/// Shared by every service in one process.
#[derive(Clone)]
pub struct ServiceContext {
    pub platform: Arc<PlatformConfig>,
    pub bus: Bus,
    pub auth: Authenticator,
    /// The master keys that wrap client data keys.
    pub keys: KeyRing,
    /// Fires when the process is asked to stop.
    pub shutdown: Shutdown,
    /// Runs background work (relays, consumers, workers), restarts it when
    /// it fails, and waits for it at shutdown.
    pub supervisor: Supervisor,
}

/// A started service, for health reporting.
#[derive(Clone)]
pub struct StartedService {
    /// The target name, e.g. `referral-intake`.
    pub name: &'static str,
    /// The fully-qualified gRPC service name, e.g. `cpm.v1.ReferralIntakeService`.
    pub grpc_name: &'static str,
    pub pool: PgPool,
}

impl ServiceContext {
    /// The decoding limit every service's gRPC server is built with.
    pub fn max_request_bytes(&self) -> usize {
        self.platform.grpc.max_request_bytes
    }

    pub fn new(platform: PlatformConfig, shutdown: Shutdown) -> anyhow::Result<Self> {
        let auth = Authenticator::from_config(&platform.auth)?;
        let previous: Vec<&str> = platform
            .crypto
            .previous_master_keys
            .iter()
            .map(|key| key.expose())
            .collect();
        let keys = KeyRing::from_config(platform.crypto.master_key.expose(), &previous)?;
        Ok(Self {
            bus: Bus::new(&platform.amqp),
            supervisor: Supervisor::new(platform.supervision.clone(), shutdown.clone()),
            platform: Arc::new(platform),
            auth,
            keys,
            shutdown,
        })
    }

    /// The service's pool, once PostgreSQL answers and its schema is migrated.
    pub async fn database(&self, schema: &str, migrations: &Migrator) -> anyhow::Result<PgPool> {
        let config = &self.platform.database;
        // Migrations (and grants) as the owner, on a connection of their own.
        let owner = crate::db::pool(
            &crate::config::DatabaseConfig {
                max_connections: 1,
                ..config.clone()
            },
            schema,
        )?;
        crate::db::wait_until_ready(&owner, &self.shutdown).await?;
        crate::db::migrate(&owner, schema, migrations).await?;
        if config.service_roles {
            crate::db::grant_service_role(&owner, schema).await?;
        }
        owner.close().await;
        Ok(crate::db::service_pool(config, schema)?)
    }

    /// Runs the future `start` makes under the supervisor: made afresh
    /// whenever it fails, until shutdown. See [`crate::supervisor`].
    pub fn spawn<F, Fut>(&self, spec: TaskSpec, start: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.supervisor.spawn(spec, start);
    }

    /// The same for a loop that handles its own errors and returns only at
    /// shutdown (a relay, a consumer, a worker): returning earlier, or
    /// panicking, is the failure the supervisor restarts it for.
    pub fn spawn_loop<F, Fut>(&self, spec: TaskSpec, mut start: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.spawn(spec, move || start().map(|()| Ok(())));
    }

    /// Starts the outbox relay of `service`'s `schema` (and its inbox
    /// pruner, [`crate::bus::inbox`]), the relay on connections of
    /// its own so that publishing (which holds its batch's row locks until
    /// the broker confirms) never waits for, or holds up, a request's
    /// connection, and returns the service's handle on `pool`, whose writes
    /// wake that relay.
    pub fn service_handle(
        &self,
        service: &'static str,
        schema: &str,
        pool: PgPool,
    ) -> anyhow::Result<ServiceHandle> {
        let relay_database = crate::config::DatabaseConfig {
            max_connections: 2,
            ..self.platform.database.clone()
        };
        let relay_pool = crate::db::service_pool(&relay_database, schema)?;
        let relay = Relay::new(relay_pool, self.bus.clone(), schema, &self.platform.outbox);
        let waker = relay.waker();
        let shutdown = self.shutdown.clone();
        self.spawn_loop(
            TaskSpec::essential(service, format!("{service}.relay")),
            move || relay.clone().run(shutdown.clone()),
        );
        let (inbox_pool, inbox, shutdown) = (
            pool.clone(),
            self.platform.inbox.clone(),
            self.shutdown.clone(),
        );
        self.spawn_loop(
            TaskSpec::essential(service, format!("{service}.inbox-pruner")),
            move || {
                crate::bus::inbox::run_pruner(inbox_pool.clone(), inbox.clone(), shutdown.clone())
            },
        );
        Ok(ServiceHandle::new(pool, waker))
    }

    /// Starts a consumer applying `router` to its events, each in a
    /// transaction of `handle` (so the events it writes are published as
    /// soon as it commits).
    pub fn spawn_consumer<S: Send + Sync + 'static>(
        &self,
        handle: &ServiceHandle,
        router: Router<S>,
    ) {
        let spec = router.spec();
        let task = TaskSpec::essential(spec.service, format!("{}.consumer", spec.inbox_name()));
        let consumer = Consumer::new(handle.clone(), self.bus.clone(), spec, Arc::new(router));
        let shutdown = self.shutdown.clone();
        self.spawn_loop(task, move || consumer.clone().run(shutdown.clone()));
    }

    /// Starts the health monitor of `services` under the supervisor.
    pub fn spawn_health_monitor(&self, reporter: HealthReporter, services: Vec<StartedService>) {
        let (bus, supervisor, shutdown) = (
            self.bus.clone(),
            self.supervisor.clone(),
            self.shutdown.clone(),
        );
        let spec = TaskSpec {
            name: "health-monitor".into(),
            service: "",
            essential: false,
            lifetime: Lifetime::UntilShutdown,
        };
        self.spawn_loop(spec, move || {
            monitor_health(
                reporter.clone(),
                services.clone(),
                bus.clone(),
                supervisor.clone(),
                shutdown.clone(),
            )
        });
    }

    /// Waits for background work after shutdown, at most `timeout`, then
    /// closes the broker connection.
    pub async fn drain(&self, timeout: Duration) {
        self.supervisor.drain(timeout).await;
        self.bus.close().await;
    }
}

/// Keeps health current: a service is SERVING while its database answers,
/// the broker is connected and every essential background task of it runs
/// (a task being restarted turns it NOT_SERVING at once); the whole server
/// ("") while all are. At
/// shutdown everything turns NOT_SERVING first, so load balancers stop
/// sending work before the server stops taking it.
pub async fn monitor_health(
    reporter: HealthReporter,
    services: Vec<StartedService>,
    bus: Bus,
    supervisor: Supervisor,
    shutdown: Shutdown,
) {
    let mut task_changes = supervisor.changes();
    loop {
        let broker_up = bus.is_connected().await;
        let mut all_up = broker_up;
        for service in &services {
            let database_up = tokio::time::timeout(
                Duration::from_secs(2),
                sqlx::query_scalar!("SELECT 1 AS one").fetch_one(&service.pool),
            )
            .await
            .is_ok_and(|result| result.is_ok());
            let up = database_up && broker_up && supervisor.service_up(service.name);
            all_up &= up;
            let status = if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status(service.grpc_name, status).await;
        }
        let status = if all_up {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status("", status).await;
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = task_changes.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    for service in &services {
        reporter
            .set_service_status(service.grpc_name, ServingStatus::NotServing)
            .await;
    }
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
}
