//! Integration tests live in tests/. The library holds what the bench
//! binaries in benches/ share: flag parsing, latency percentiles, readings
//! from /proc and a webhook sink.

pub mod bench;
