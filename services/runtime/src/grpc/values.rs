//! Conversions between protobuf values and domain values, used when
//! parsing requests at the edge.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::FieldViolations;

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

pub fn optional_timestamp(at: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    at.map(timestamp)
}

pub fn from_timestamp(at: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
}

/// A required UUID field; a violation names the field when it is missing or malformed.
pub fn parse_id(field: &str, value: &str, violations: &mut FieldViolations) -> Option<Uuid> {
    if value.is_empty() {
        violations.add(field, "is required");
        return None;
    }
    match Uuid::parse_str(value) {
        Ok(id) => Some(id),
        Err(_) => {
            violations.add(field, "must be a UUID");
            None
        }
    }
}

/// A required UUID, as the one violation of a request.
pub fn require_id(field: &str, value: &str) -> Result<Uuid, super::ApiError> {
    let mut violations = FieldViolations::new();
    let id = parse_id(field, value, &mut violations);
    violations.into_result()?;
    Ok(id.expect("no violation means an id"))
}

/// A closed-list enum field: known and not `*_UNSPECIFIED`.
pub fn parse_enum<E>(field: &str, value: i32, violations: &mut FieldViolations) -> Option<E>
where
    E: TryFrom<i32>,
{
    if value == 0 {
        violations.add(field, "is required");
        return None;
    }
    match E::try_from(value) {
        Ok(parsed) => Some(parsed),
        Err(_) => {
            violations.add(field, format!("{value} is not a known value"));
            None
        }
    }
}

/// A text field no longer than `max` characters, optionally required.
pub fn check_text(
    field: &str,
    value: &str,
    required: bool,
    max: usize,
    violations: &mut FieldViolations,
) {
    if required && value.trim().is_empty() {
        violations.add(field, "must not be empty");
    } else if value.chars().count() > max {
        violations.add(field, format!("must be at most {max} characters"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_enums_name_their_field_when_wrong() {
        let mut violations = FieldViolations::new();
        assert!(parse_id("referral_id", "", &mut violations).is_none());
        assert!(parse_id("assessment_id", "nope", &mut violations).is_none());
        assert!(parse_enum::<cpm_proto::v1::Gender>("gender", 0, &mut violations).is_none());
        assert!(parse_enum::<cpm_proto::v1::Gender>("gender2", 99, &mut violations).is_none());
        check_text("reason", "  ", true, 10, &mut violations);
        check_text("notes", "abcdefghijk", false, 10, &mut violations);
        let fields: Vec<_> = violations.fields().collect();
        assert_eq!(
            fields,
            [
                "referral_id",
                "assessment_id",
                "gender",
                "gender2",
                "reason",
                "notes"
            ]
        );
    }

    #[test]
    fn timestamps_round_trip() {
        let now = Utc::now();
        assert_eq!(from_timestamp(&timestamp(now)).unwrap(), now);
    }
}
