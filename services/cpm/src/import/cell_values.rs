//! The values a cell may hold, one parser per kind of cell: the enum columns
//! (`gender`, `referrer_role`, `vulnerabilities`) accept the contract's names
//! in any case with spaces or hyphens, consent is yes/no/true/false, and
//! counts are whole numbers. Each parser returns the problem in words that
//! never repeat the cell's value, so the caller can name the column and pass
//! the message on without leaking personal data.

use cpm_proto::v1::{Gender, ReferrerRole, Vulnerability};

/// Lowercase, with spaces and hyphens as underscores: `Non-binary` → `non_binary`.
fn normalise_name(value: &str) -> String {
    value.trim().to_lowercase().replace([' ', '-'], "_")
}

/// The names of an enum's values without its prefix, for messages.
fn names_of<E>(prefix: &str, name: fn(&E) -> &'static str) -> Vec<String>
where
    E: TryFrom<i32>,
{
    (1..)
        .map_while(|value| E::try_from(value).ok())
        .map(|value| name(&value).trim_start_matches(prefix).to_lowercase())
        .collect()
}

pub fn gender_names() -> Vec<String> {
    names_of::<Gender>("GENDER_", |g| g.as_str_name())
}

pub fn referrer_role_names() -> Vec<String> {
    names_of::<ReferrerRole>("REFERRER_ROLE_", |r| r.as_str_name())
}

pub fn vulnerability_names() -> Vec<String> {
    names_of::<Vulnerability>("VULNERABILITY_", |v| v.as_str_name())
}

pub(super) fn parse_gender(value: &str) -> Result<i32, String> {
    let name = normalise_name(value);
    if name.is_empty() {
        return Err("is required".into());
    }
    match Gender::from_str_name(&format!("GENDER_{}", name.to_uppercase())) {
        Some(Gender::Unspecified) | None => {
            Err(format!("must be one of {}", gender_names().join(", ")))
        }
        Some(gender) => Ok(gender as i32),
    }
}

pub(super) fn parse_referrer_role(value: &str) -> Result<i32, String> {
    let name = normalise_name(value);
    if name.is_empty() {
        return Err("is required".into());
    }
    match ReferrerRole::from_str_name(&format!("REFERRER_ROLE_{}", name.to_uppercase())) {
        Some(ReferrerRole::Unspecified) | None => Err(format!(
            "must be one of {}",
            referrer_role_names().join(", ")
        )),
        Some(role) => Ok(role as i32),
    }
}

pub(super) fn parse_consent(value: &str) -> Result<bool, String> {
    match value.trim().to_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        "" => Err("is required: yes or no".into()),
        _ => Err("must be yes, no, true or false".into()),
    }
}

pub(super) fn parse_vulnerabilities(value: &str) -> Result<Vec<i32>, String> {
    let mut parsed = Vec::new();
    let mut unknown = Vec::new();
    for (position, item) in value
        .split(';')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .enumerate()
    {
        let name = normalise_name(item).to_uppercase();
        match Vulnerability::from_str_name(&format!("VULNERABILITY_{name}")) {
            Some(Vulnerability::Unspecified) | None => unknown.push((position + 1).to_string()),
            Some(vulnerability) => parsed.push(vulnerability as i32),
        }
    }
    if unknown.is_empty() {
        Ok(parsed)
    } else {
        Err(format!(
            "item {} is not a known vulnerability (known: {})",
            unknown.join(", "),
            vulnerability_names().join(", ")
        ))
    }
}

pub(super) fn parse_count(value: &str) -> Result<i32, String> {
    if value.is_empty() {
        return Ok(0);
    }
    value
        .parse()
        .map_err(|_| "must be a whole number (empty means 0)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enum_name_lists_are_complete() {
        assert_eq!(
            gender_names(),
            ["female", "male", "transgender", "non_binary", "undisclosed"]
        );
        assert_eq!(
            referrer_role_names(),
            ["frontline", "middle_manager", "senior"]
        );
        assert!(vulnerability_names().contains(&"high_impact_user".to_owned()));
        assert!(!vulnerability_names().contains(&"unspecified".to_owned()));
    }
}
