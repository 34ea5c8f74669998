//! Areas: which of the programme's areas a request names, and which a
//! caller may see. An area in a request must be one the programme
//! registers (`programme.areas`), taken in its registered spelling, so a
//! look-alike (another letter case, a zero-width space) can neither open a
//! queue nobody sees nor slip past a filter. Staff see the assessments of
//! the areas they work in: an admin every area, a coordinator the areas
//! their token names.

use cpm_runtime::auth::{AreaScope, Caller};
use cpm_runtime::config::ProgrammeConfig;
use cpm_runtime::grpc::FieldViolations;

/// An optional area filter: `None` when empty (every area the caller
/// sees), else the registered spelling of a programme area; anything else
/// is a violation of `field`.
pub fn optional_area(
    field: &str,
    value: &str,
    programme: &ProgrammeConfig,
    violations: &mut FieldViolations,
) -> Option<String> {
    if value.trim().is_empty() {
        return None;
    }
    programme.check_area(field, value, violations)
}

/// The areas whose assessments `caller` sees, in the programme's spelling:
/// every area for an admin (or the platform itself), and for a coordinator
/// the areas their token names that the programme registers; a name it
/// does not register reaches no assessment.
pub fn staff_scope(caller: &Caller, programme: &ProgrammeConfig) -> AreaScope {
    match caller.area_scope() {
        AreaScope::Every => AreaScope::Every,
        AreaScope::Only(areas) => {
            let mut registered: Vec<String> = Vec::with_capacity(areas.len());
            for area in areas.iter().filter_map(|area| programme.area(area)) {
                if !registered.iter().any(|known| known == area) {
                    registered.push(area.to_owned());
                }
            }
            AreaScope::Only(registered)
        }
    }
}

/// An area asked for that is not one of the caller's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", refusal(.area, .yours))]
pub struct OutsideAreas {
    /// The area asked for, in its registered spelling.
    pub area: String,
    /// The areas the caller works in.
    pub yours: Vec<String>,
}

fn refusal(area: &str, yours: &[String]) -> String {
    if yours.is_empty() {
        format!("you do not work in {area}: your token names no area")
    } else {
        format!(
            "you do not work in {area}: your areas are {}",
            yours.join(", ")
        )
    }
}

/// The areas a queue or a count covers: the one asked for, which must be
/// in `scope`, or else every area of `scope`. `None` stands for every area
/// (only for a caller who sees every area), as the queries'
/// `($n::text[] IS NULL OR area = ANY($n))` take it.
pub fn areas_covered(
    asked: Option<&str>,
    scope: &AreaScope,
) -> Result<Option<Vec<String>>, OutsideAreas> {
    match asked {
        Some(area) if scope.admits(area) => Ok(Some(vec![area.to_owned()])),
        Some(area) => Err(OutsideAreas {
            area: area.to_owned(),
            yours: scope.as_filter().unwrap_or_default().to_vec(),
        }),
        None => Ok(scope.as_filter().map(<[String]>::to_vec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::test_support::fields;
    use cpm_runtime::auth::Role;

    fn programme() -> ProgrammeConfig {
        ProgrammeConfig {
            areas: ["Darlington", "East Durham", "South Durham"]
                .map(str::to_owned)
                .to_vec(),
        }
    }

    fn caller(role: Role, areas: &[&str]) -> Caller {
        Caller {
            subject: "someone".into(),
            role,
            agency_id: None,
            mentor_id: None,
            areas: areas.iter().map(|area| (*area).to_owned()).collect(),
        }
    }

    fn only(areas: &[&str]) -> AreaScope {
        AreaScope::Only(areas.iter().map(|area| (*area).to_owned()).collect())
    }

    #[test]
    fn an_area_filter_is_empty_or_a_registered_area_in_its_registered_spelling() {
        let programme = programme();
        let mut violations = FieldViolations::new();
        assert_eq!(optional_area("area", "", &programme, &mut violations), None);
        assert_eq!(
            optional_area("area", "  ", &programme, &mut violations),
            None
        );
        assert_eq!(
            optional_area("area", " east durham ", &programme, &mut violations),
            Some("East Durham".to_owned())
        );
        assert!(violations.is_empty());
        for unknown in ["Nowhere", "Darlington\u{200b}", "Darling ton", "Darlingtön"] {
            let mut violations = FieldViolations::new();
            assert_eq!(
                optional_area("area", unknown, &programme, &mut violations),
                None
            );
            assert_eq!(fields(violations), ["area"], "{unknown:?}");
        }
    }

    #[test]
    fn a_coordinator_sees_the_registered_areas_of_their_token_and_an_admin_every_area() {
        let programme = programme();
        assert_eq!(
            staff_scope(&caller(Role::Admin, &[]), &programme),
            AreaScope::Every
        );
        assert_eq!(
            staff_scope(
                &caller(
                    Role::Coordinator,
                    &["darlington", "Nowhere", "Darlington", "East Durham\u{200b}"]
                ),
                &programme
            ),
            only(&["Darlington"]),
            "registered spelling, once; unregistered names reach nothing"
        );
        assert_eq!(
            staff_scope(&caller(Role::Coordinator, &[]), &programme),
            only(&[])
        );
    }

    #[test]
    fn a_queue_covers_the_area_asked_for_when_it_is_the_caller_s_or_else_all_of_theirs() {
        let darlington = only(&["Darlington"]);
        assert_eq!(
            areas_covered(Some("Darlington"), &darlington),
            Ok(Some(vec!["Darlington".to_owned()]))
        );
        assert_eq!(
            areas_covered(None, &darlington),
            Ok(Some(vec!["Darlington".to_owned()]))
        );
        let refused = areas_covered(Some("East Durham"), &darlington).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "you do not work in East Durham: your areas are Darlington"
        );
        assert_eq!(
            areas_covered(Some("East Durham"), &only(&[]))
                .unwrap_err()
                .to_string(),
            "you do not work in East Durham: your token names no area"
        );
        assert_eq!(areas_covered(None, &only(&[])), Ok(Some(Vec::new())));
        assert_eq!(areas_covered(None, &AreaScope::Every), Ok(None));
        assert_eq!(
            areas_covered(Some("East Durham"), &AreaScope::Every),
            Ok(Some(vec!["East Durham".to_owned()]))
        );
    }
}
