//! What every CPM service shares, so that no service carries its own copy of
//! a mechanism: configuration, telemetry, the database pool and migrations,
//! the event bus, the gRPC server bootstrap, authentication and encryption.
//!
//! # Layout
//! - [`config`]: layered configuration (defaults → file → `CPM__…` environment), validated at start.
//! - [`dev_keys`]: the development-mode signing and encryption keys kept in a local file.
//! - [`telemetry`]: tracing, OTLP export, W3C trace context in gRPC metadata and AMQP headers.
//! - [`db`]: one PostgreSQL schema per service, with the bus tables and the service's migrations.
//! - [`bus`]: RabbitMQ topology, transactional outbox and relay, idempotent consumers.
//! - [`areas`]: the programme's registered areas, and which of them staff see.
//! - [`auth`]: JWT bearer tokens, roles and the caller of a request.
//! - [`clock`]: the time a request acts at, simulated on a development platform that allows it.
//! - [`crypto`]: envelope encryption of personal data and keyed hashes.
//! - [`grpc`]: server bootstrap (health, reflection, graceful shutdown) and error mapping.
//! - [`descriptor`]: what a service is (names, schema, migrations, config section, consumers, start), for the binary's one registry.
//! - [`retry`]: the one back-off policy (exponential, with jitter) of every retry loop.
//! - [`service`]: what a service needs to start, and what it hands back.
//! - [`standing`]: whether a caller's agency, the referrer or a mentor is still registered and active, in every service.
//! - [`supervisor`]: background tasks restarted when they fail, and the health they report.

pub mod areas;
pub mod auth;
pub mod bus;
pub mod client_keys;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod db;
pub mod descriptor;
pub mod dev_keys;
pub mod grpc;
pub mod metrics;
pub mod periodic;
pub mod retry;
pub mod service;
pub mod standing;
pub mod supervisor;
pub mod telemetry;

pub use tokio_util::sync::CancellationToken as Shutdown;
