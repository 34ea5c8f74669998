//! What a service is, in one place: its names, schema, migrations, own
//! configuration section, consumers and how it starts. A service crate
//! implements [`Service`] once and exports `pub static SERVICE:
//! Registered<…>`; the binary keeps one registry of those and iterates it
//! for every per-service job (targets, configuration checks, migrations,
//! queue declarations, start), so adding a service touches that registry
//! and nothing else in the binary.

use std::future::Future;
use std::marker::PhantomData;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::migrate::Migrator;
use tonic::service::RoutesBuilder;

use crate::bus::ConsumerSpec;
use crate::bus::outbox::ServiceHandle;
use crate::config::{ConfigError, PlatformConfig};
use crate::grpc::access::{AccessTable, Guarded};
use crate::service::{ServiceContext, StartedService};

/// One service, as its crate writes it.
pub trait Service: Send + Sync + 'static {
    /// The target name and the producer name in events, e.g. `referral-intake`.
    const NAME: &'static str;
    /// What it does, for `cpm targets`.
    const DESCRIPTION: &'static str;
    /// The PostgreSQL schema it owns.
    const SCHEMA: &'static str;
    /// The fully-qualified gRPC service name, for health.
    const GRPC_NAME: &'static str;
    /// Its own configuration section (`[referral_intake]`), with defaults.
    type Config: Serialize + DeserializeOwned + Default + Send + Sync + 'static;

    fn migrations() -> &'static Migrator;

    /// Which roles may call which of its RPCs.
    fn access() -> &'static AccessTable;

    /// Its generated gRPC server behind authentication and [`Self::access`]:
    /// how `start` adds it to the routes. `server` is built with
    /// [`ServiceContext::max_request_bytes`] as its decoding limit.
    /// `pool` is the service's own, for the callers' standings ([`crate::standing`]).
    fn guard<G>(context: &ServiceContext, pool: &sqlx::PgPool, server: G) -> Guarded<G> {
        let auth = &context.platform.auth;
        let standing = crate::standing::Standing::new(
            pool.clone(),
            auth.admits_unregistered(context.platform.profile),
            std::time::Duration::from_secs(auth.standing_cache_secs),
        );
        Guarded::new(server, context.auth.clone(), Self::access())
            .with_standing(standing)
            .with_clock(crate::clock::SimulatedClock::from_config(&context.platform))
    }

    /// The queues it consumes. Every process declares every service's
    /// queues at start, so an event published before its consumer first
    /// runs waits for it.
    fn consumers() -> Vec<ConsumerSpec>;

    /// Its own listen address when run as a single target; empty uses `grpc.listen`.
    fn listen(config: &Self::Config) -> &str;

    /// Rules on its section beyond its types (checked by `cpm config check`
    /// and at start), with the platform settings they may depend on.
    fn validate(_config: &Self::Config, _platform: &PlatformConfig) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Starts its background work and adds its gRPC service to `routes`;
    /// `handle` holds its pool (on its schema, already migrated) and wakes
    /// its relay, already running, after every write of events.
    fn start(
        context: &ServiceContext,
        handle: ServiceHandle,
        config: Self::Config,
        routes: &mut RoutesBuilder,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A service as the binary sees it: object-safe, so one registry holds all.
pub trait ServiceDescriptor: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    fn schema(&self) -> &'static str;
    fn grpc_name(&self) -> &'static str;
    fn migrations(&self) -> &'static Migrator;
    fn access(&self) -> &'static AccessTable;
    fn consumers(&self) -> Vec<ConsumerSpec>;
    /// Its configuration section's key: the name with `_` for `-`.
    fn section(&self) -> String {
        self.name().replace('-', "_")
    }
    /// Parses and validates its section; returns its own listen address.
    fn check(
        &self,
        section: &toml::Table,
        platform: &PlatformConfig,
    ) -> Result<String, ConfigError>;
    /// Connects, migrates and starts it.
    fn start<'a>(
        &'a self,
        context: &'a ServiceContext,
        section: &'a toml::Table,
        routes: &'a mut RoutesBuilder,
    ) -> BoxFuture<'a, anyhow::Result<StartedService>>;
}

/// The [`ServiceDescriptor`] of a [`Service`]; `const`, so it can be a static.
pub struct Registered<S>(PhantomData<fn() -> S>);

impl<S> Registered<S> {
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<S> Default for Registered<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Service> Registered<S> {
    /// Its section parsed and checked: the one place both happen.
    fn checked(
        &self,
        section: &toml::Table,
        platform: &PlatformConfig,
    ) -> Result<S::Config, ConfigError> {
        let config = toml::Value::Table(section.clone())
            .try_into::<S::Config>()
            .map_err(|error| {
                ConfigError::invalid(&self.section(), error.message().trim().to_owned())
            })?;
        let listen = S::listen(&config);
        if !listen.is_empty() && listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                &format!("{}.listen", self.section()),
                format!("`{listen}` is not an address like 0.0.0.0:50052"),
            ));
        }
        S::validate(&config, platform)?;
        Ok(config)
    }
}

impl<S: Service> ServiceDescriptor for Registered<S> {
    fn name(&self) -> &'static str {
        S::NAME
    }
    fn description(&self) -> &'static str {
        S::DESCRIPTION
    }
    fn schema(&self) -> &'static str {
        S::SCHEMA
    }
    fn grpc_name(&self) -> &'static str {
        S::GRPC_NAME
    }
    fn migrations(&self) -> &'static Migrator {
        S::migrations()
    }
    fn access(&self) -> &'static AccessTable {
        S::access()
    }
    /// Its own consumers, and the `principals` consumer the runtime runs
    /// for every service ([`crate::standing`]).
    fn consumers(&self) -> Vec<ConsumerSpec> {
        let mut consumers = S::consumers();
        consumers.push(crate::standing::consumer(S::NAME).spec());
        consumers
    }

    fn check(
        &self,
        section: &toml::Table,
        platform: &PlatformConfig,
    ) -> Result<String, ConfigError> {
        let config = self.checked(section, platform)?;
        Ok(S::listen(&config).to_owned())
    }

    fn start<'a>(
        &'a self,
        context: &'a ServiceContext,
        section: &'a toml::Table,
        routes: &'a mut RoutesBuilder,
    ) -> BoxFuture<'a, anyhow::Result<StartedService>> {
        Box::pin(async move {
            let config = self.checked(section, &context.platform)?;
            let pool = context.database(S::SCHEMA, S::migrations()).await?;
            let handle = context.service_handle(S::NAME, S::SCHEMA, pool.clone())?;
            context.spawn_consumer(&handle, crate::standing::consumer(S::NAME));
            S::start(context, handle, config, routes).await?;
            Ok(StartedService {
                name: S::NAME,
                grpc_name: S::GRPC_NAME,
                pool,
            })
        })
    }
}
