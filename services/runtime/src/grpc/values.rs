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

/// A text field no longer than `max` characters, optionally required, and
/// free of characters a reader cannot see: controls (NUL included; line
/// breaks and tabs are allowed), bidirectional overrides and zero-width or
/// other invisible formatting characters, which can make two different
/// values look the same or a text read differently from what it holds.
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
    } else if let Some(hidden) = value.chars().find(|c| is_hidden(*c)) {
        violations.add(
            field,
            format!(
                "must not contain control or invisible characters (found U+{:04X})",
                u32::from(hidden)
            ),
        );
    }
}

/// Controls other than line breaks and tabs, and the invisible formatting
/// characters (Unicode category Cf): bidi controls, zero-width characters,
/// the byte-order mark, interlinear annotations and tag characters.
pub fn is_hidden(c: char) -> bool {
    if matches!(c, '\n' | '\r' | '\t') {
        return false;
    }
    c.is_control()
        || matches!(
            u32::from(c),
            0x00AD
                | 0x0600..=0x0605
                | 0x061C
                | 0x06DD
                | 0x070F
                | 0x0890..=0x0891
                | 0x08E2
                | 0x180E
                | 0x200B..=0x200F
                | 0x202A..=0x202E
                | 0x2060..=0x2064
                | 0x2066..=0x206F
                | 0xFEFF
                | 0xFFF9..=0xFFFB
                | 0x110BD
                | 0x110CD
                | 0x13430..=0x1343F
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0001
                | 0xE0020..=0xE007F
        )
}

/// A repeated field of at most `max` entries; `false` (with a violation)
/// when longer, so the caller need not look at each entry.
pub fn check_entries<T>(
    field: &str,
    entries: &[T],
    max: usize,
    violations: &mut FieldViolations,
) -> bool {
    if entries.len() > max {
        violations.add(field, format!("must have at most {max} entries"));
        false
    } else {
        true
    }
}

/// A repeated closed-list field of at most `max` entries: every entry a
/// known value (a violation names `field[index]` otherwise), repeats
/// dropped, first-seen order kept. A longer list is one violation and is
/// not read.
pub fn parse_enum_list<E>(
    field: &str,
    values: &[i32],
    max: usize,
    violations: &mut FieldViolations,
) -> Vec<E>
where
    E: TryFrom<i32> + PartialEq,
{
    let mut parsed = Vec::new();
    if !check_entries(field, values, max, violations) {
        return parsed;
    }
    for (index, value) in values.iter().enumerate() {
        if let Some(entry) = parse_enum::<E>(&format!("{field}[{index}]"), *value, violations)
            && !parsed.contains(&entry)
        {
            parsed.push(entry);
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enum_list_keeps_known_values_once_and_refuses_a_flood_unread() {
        use cpm_proto::v1::Gender;
        let mut violations = FieldViolations::new();
        let parsed: Vec<Gender> = parse_enum_list("genders", &[1, 2, 1, 0, 99], 8, &mut violations);
        assert_eq!(
            parsed,
            [Gender::try_from(1).unwrap(), Gender::try_from(2).unwrap()]
        );
        assert_eq!(
            violations.fields().collect::<Vec<_>>(),
            ["genders[3]", "genders[4]"]
        );
        let mut violations = FieldViolations::new();
        let parsed: Vec<Gender> = parse_enum_list("genders", &[99; 9], 8, &mut violations);
        assert!(parsed.is_empty());
        assert_eq!(violations.fields().collect::<Vec<_>>(), ["genders"]);
    }

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
    fn hidden_characters_are_refused_and_ordinary_text_is_not() {
        for text in [
            "nul\0byte",
            "bell\u{7}",
            "escape\u{1b}[31m",
            "c1\u{85}",
            "bidi \u{202E}txet",
            "isolate \u{2066}x\u{2069}",
            "zero\u{200B}width",
            "joiner\u{200D}",
            "bom\u{FEFF}",
            "soft\u{AD}hyphen",
            "tag\u{E0041}",
        ] {
            let mut violations = FieldViolations::new();
            check_text("notes", text, false, 100, &mut violations);
            assert_eq!(
                violations.fields().collect::<Vec<_>>(),
                ["notes"],
                "{text:?}"
            );
        }
        for text in [
            "Two lines\nand a\ttab\r\n",
            "Zoë, Łódź, Ελένη, محمد, 李",
            "emoji 👍🏽 and — dashes",
        ] {
            let mut violations = FieldViolations::new();
            check_text("notes", text, false, 100, &mut violations);
            assert!(violations.is_empty(), "{text:?}");
        }
    }

    #[test]
    fn a_long_repeated_field_is_one_violation() {
        let mut violations = FieldViolations::new();
        assert!(check_entries("risks", &[0; 20], 20, &mut violations));
        assert!(!check_entries("risks", &[0; 250_000], 20, &mut violations));
        assert_eq!(violations.fields().collect::<Vec<_>>(), ["risks"]);
    }

    #[test]
    fn timestamps_round_trip() {
        let now = Utc::now();
        assert_eq!(from_timestamp(&timestamp(now)).unwrap(), now);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any text: never a panic; refused exactly when it is blank and
            /// required, too long, or holds a hidden character.
            #[test]
            fn check_text_refuses_exactly_what_it_should(
                text in any::<String>(),
                required in any::<bool>(),
                max in 0usize..64,
            ) {
                let mut violations = FieldViolations::new();
                check_text("notes", &text, required, max, &mut violations);
                let should_refuse = (required && text.trim().is_empty())
                    || text.chars().count() > max
                    || text.chars().any(is_hidden);
                prop_assert_eq!(!violations.is_empty(), should_refuse);
                prop_assert!(violations.fields().count() <= 1);
            }

            /// Ids: only a UUID parses, and anything else names its field.
            #[test]
            fn parse_id_accepts_uuids_only(value in any::<String>()) {
                let mut violations = FieldViolations::new();
                let parsed = parse_id("referral_id", &value, &mut violations);
                prop_assert_eq!(parsed.is_some(), Uuid::parse_str(&value).is_ok());
                prop_assert_eq!(violations.is_empty(), parsed.is_some());
            }
        }
    }
}
