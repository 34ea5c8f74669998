//! Helpers shared by the domain tests. Every parser reports violations by
//! field, and the tests compare only the field names, so the one helper that
//! lists them lives here rather than in each module's tests.

use cpm_runtime::grpc::FieldViolations;

/// The fields a parser refused, in the order it reported them.
pub(super) fn fields(violations: FieldViolations) -> Vec<String> {
    violations.fields().map(str::to_owned).collect()
}
