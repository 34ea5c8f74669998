//! Shared pieces of the bench binaries (`harness = false`, in `benches/`).
//! Each bench prints markdown for docs/performance.md; these helpers keep
//! the measuring the same across them.

pub mod flags;
pub mod latency;
pub mod proc;
pub mod sink;

pub use flags::Flags;
pub use latency::Latency;
