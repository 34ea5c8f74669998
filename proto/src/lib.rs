//! The CPM platform's protobuf contracts: the five gRPC services and the
//! events they exchange over RabbitMQ.
//!
//! # Layout
//! - `cpm/v1/common.proto`: enums shared by services and events.
//! - `cpm/v1/events.proto`: the event envelope and every event payload.
//! - `cpm/v1/<service>.proto`: one file per service.
//! - [`events`]: each event's type (routing key), and the order of a referral's statuses.

/// Generated code for package `cpm.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("cpm.v1");
}

/// The encoded `FileDescriptorSet` of every contract, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cpm_descriptor");

pub mod events;
pub use events::{Event, status_rank};
