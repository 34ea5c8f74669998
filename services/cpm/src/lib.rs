//! The one CPM binary's library: which services a process runs (targets),
//! the root configuration embedding each service's own section, starting
//! and stopping a platform, and the client side used by `cpm demo`,
//! `cpm health` and the integration tests.
//!
//! # Layout
//! - [`cli`]: the `cpm` command line (the binary's `main` is one call into it).
//! - [`registry`]: every service the binary runs, and `Target`, one of them: the only per-service list.
//! - [`settings`]: the root configuration.
//! - [`platform`]: starts the selected services on one listener and stops them gracefully.
//! - [`client`]: authenticated gRPC clients.
//! - [`demo`]: walks one referral through all five services.
//! - [`simulate`]: generates a programme calibrated to the evaluation and replays it.
//! - [`report`]: the evaluation's tables from what the services hold, as Markdown.

pub mod cli;
pub mod client;
pub mod demo;
pub mod import;
pub mod platform;
pub mod registry;
pub mod report;
pub mod settings;
pub mod simulate;

pub use platform::Platform;
pub use registry::Target;
pub use settings::Settings;
