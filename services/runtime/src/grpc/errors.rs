//! The one mapping from errors to `tonic::Status`. Each service's commands
//! return a typed error of their own, which says which [`ApiError`] kind it
//! is; this module turns that into a status. Internal causes are logged with
//! the trace ID and never leaked to callers.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt as _};

/// Every problem with a request, collected before answering, so a caller
/// fixes all of them at once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldViolations {
    violations: Vec<(String, String)>,
    /// Violations beyond [`MAX_REPORTED`], counted but not kept.
    dropped: usize,
}

/// The most violations one answer reports.
pub const MAX_REPORTED: usize = 50;

impl FieldViolations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation. At most [`MAX_REPORTED`] are kept, so a request
    /// with a huge repeated field cannot make a huge answer.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        if self.violations.len() < MAX_REPORTED {
            self.violations.push((field.into(), description.into()));
        } else {
            self.dropped += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.violations.iter().map(|(field, _)| field.as_str())
    }

    /// `Ok` when nothing was added, else INVALID_ARGUMENT with every violation.
    pub fn into_result(self) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(self))
        }
    }
}

/// What went wrong, in the terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// INVALID_ARGUMENT with google.rpc.BadRequest field violations.
    #[error("invalid request")]
    InvalidArgument(FieldViolations),
    /// NOT_FOUND: absent, or not the caller's to see.
    #[error("{0} not found")]
    NotFound(String),
    /// FAILED_PRECONDITION: the thing is in the wrong state for this call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// ALREADY_EXISTS.
    #[error("{0}")]
    AlreadyExists(String),
    /// PERMISSION_DENIED.
    #[error("{0}")]
    PermissionDenied(String),
    /// UNAVAILABLE: a dependency is down; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// ABORTED: the database gave the call up for a concurrent change (a
    /// deadlock, a serialization failure); nothing of it took effect and
    /// the same call again may succeed.
    #[error("{0}")]
    Aborted(String),
    /// RESOURCE_EXHAUSTED: the caller holds as many of something as it may;
    /// the message names the limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// INTERNAL: logged in full, reported without detail.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        // PostgreSQL refuses NUL in text (22021) and characters its encoding
        // lacks (22P05). Validators refuse both first; this keeps any field
        // they miss a caller's error rather than an INTERNAL one.
        let code = error
            .as_database_error()
            .and_then(|e| e.code())
            .map(|code| code.into_owned());
        match code.as_deref() {
            Some("22021" | "22P05") => {
                let mut violations = FieldViolations::new();
                violations.add(
                    "request",
                    "text must not contain NUL or unencodable characters",
                );
                return ApiError::InvalidArgument(violations);
            }
            Some("57014") => {
                tracing::warn!(%error, "statement cancelled by database.statement_timeout_ms");
                return ApiError::Unavailable("the database took too long, retry later".into());
            }
            _ => {}
        }
        if crate::db::is_unavailable(&error) {
            tracing::warn!(%error, "database unavailable");
            ApiError::Unavailable("the database is unavailable, retry later".into())
        } else if crate::db::is_conflict(&error) {
            tracing::warn!(%error, "call gave way to a concurrent change");
            ApiError::Aborted("a concurrent change came first: nothing was done, retry".into())
        } else {
            ApiError::Internal(error.into())
        }
    }
}

impl From<FieldViolations> for ApiError {
    fn from(violations: FieldViolations) -> Self {
        ApiError::InvalidArgument(violations)
    }
}

/// So a handler answers a parser's violations with `?`.
impl From<FieldViolations> for Status {
    fn from(violations: FieldViolations) -> Self {
        ApiError::InvalidArgument(violations).into()
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidArgument(violations) => {
                let fields: Vec<&str> = violations.fields().collect();
                let mut message = format!("invalid request: {}", fields.join(", "));
                if violations.dropped > 0 {
                    message.push_str(&format!(" and {} more", violations.dropped));
                }
                let details: Vec<FieldViolation> = violations
                    .violations
                    .iter()
                    .map(|(field, description)| FieldViolation::new(field, description))
                    .collect();
                Status::with_error_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails::with_bad_request(details),
                )
            }
            ApiError::NotFound(what) => Status::not_found(format!("{what} not found")),
            ApiError::FailedPrecondition(message) => Status::failed_precondition(message),
            ApiError::AlreadyExists(message) => Status::already_exists(message),
            ApiError::PermissionDenied(message) => Status::permission_denied(message),
            ApiError::Unavailable(message) => Status::unavailable(message),
            ApiError::Aborted(message) => Status::aborted(message),
            ApiError::ResourceExhausted(message) => Status::resource_exhausted(message),
            ApiError::Internal(error) => {
                let trace_id = crate::telemetry::current_trace_id();
                tracing::error!(error = format!("{error:#}"), %trace_id, "internal error");
                Status::internal(format!("internal error (trace {trace_id})"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_violations_is_capped() {
        let mut violations = FieldViolations::new();
        for index in 0..250_000 {
            violations.add(
                format!("vulnerabilities[{index}]"),
                "999 is not a known value",
            );
        }
        let status: Status = violations.into();
        let reported = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(reported.len(), MAX_REPORTED);
        assert!(
            status.message().ends_with("and 249950 more"),
            "{}",
            status.message()
        );
        assert!(status.message().len() < 4096);
    }

    #[test]
    fn every_violation_reaches_the_caller_as_a_field_violation() {
        let mut violations = FieldViolations::new();
        violations.add("client.date_of_birth", "must be 18 or over");
        violations.add("reason", "must not be empty");
        let status: Status = violations.into_result().unwrap_err().into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad_request = status.get_details_bad_request().unwrap();
        let fields: Vec<_> = bad_request
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["client.date_of_birth", "reason"]);
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let status: Status = ApiError::Internal(anyhow::anyhow!("password=secret")).into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }

    #[test]
    fn an_empty_set_of_violations_is_ok() {
        assert!(FieldViolations::new().into_result().is_ok());
    }
}
