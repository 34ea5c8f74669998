//! gRPC: the server every service runs in, and the one mapping from errors
//! to statuses.

pub mod access;
pub mod errors;
pub mod page;
pub mod server;
pub mod values;

pub use errors::{ApiError, FieldViolations};
