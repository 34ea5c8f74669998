//! Areas: which areas' mentors and waiting clients a caller sees, and
//! which area a request may name. Every area a request names is one the
//! programme registers (`programme.areas`, checked when the request is
//! parsed, see [`crate::domain`]), taken in its registered spelling. Staff
//! keep the register and allocate in the areas they work in: an admin in
//! every area, a coordinator in the areas their token names. EstimateWait
//! is not personal and answers for any registered area.

use cpm_runtime::auth::{AreaScope, Caller};
use cpm_runtime::config::ProgrammeConfig;

/// The areas whose mentors and waiting clients `caller` sees, in the
/// programme's spelling: every area for an admin (or the platform itself),
/// and for a coordinator the areas their token names that the programme
/// registers; a name it does not register reaches nothing.
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

/// An area named in a request that is not one of the caller's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", refusal(.area, .yours))]
pub struct OutsideAreas {
    /// The area named, in its registered spelling.
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

/// `area` when `scope` admits it: the area a mentor is registered in must
/// be one the registering caller works in.
pub fn own_area(area: &str, scope: &AreaScope) -> Result<(), OutsideAreas> {
    if scope.admits(area) {
        Ok(())
    } else {
        Err(OutsideAreas {
            area: area.to_owned(),
            yours: scope.as_filter().unwrap_or_default().to_vec(),
        })
    }
}

/// The areas a listing covers: the one asked for, which must be in
/// `scope`, or else every area of `scope`. `None` stands for every area
/// (only for a caller who sees every area), as the queries'
/// `($n::text[] IS NULL OR area = ANY($n))` take it.
pub fn areas_listed(
    asked: Option<&str>,
    scope: &AreaScope,
) -> Result<Option<Vec<String>>, OutsideAreas> {
    match asked {
        Some(area) => own_area(area, scope).map(|()| Some(vec![area.to_owned()])),
        None => Ok(scope.as_filter().map(<[String]>::to_vec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(
            staff_scope(&caller(Role::Referrer, &["Darlington"]), &programme),
            only(&[]),
            "a referrer is no member of staff in any area"
        );
    }

    #[test]
    fn a_mentor_is_registered_only_in_an_area_of_the_caller() {
        let darlington = only(&["Darlington"]);
        assert_eq!(own_area("Darlington", &darlington), Ok(()));
        assert_eq!(own_area("East Durham", &AreaScope::Every), Ok(()));
        assert_eq!(
            own_area("East Durham", &darlington)
                .unwrap_err()
                .to_string(),
            "you do not work in East Durham: your areas are Darlington"
        );
        assert_eq!(
            own_area("East Durham", &only(&[])).unwrap_err().to_string(),
            "you do not work in East Durham: your token names no area"
        );
    }

    #[test]
    fn a_listing_covers_the_area_asked_for_when_it_is_the_caller_s_or_else_all_of_theirs() {
        let darlington = only(&["Darlington", "South Durham"]);
        assert_eq!(
            areas_listed(Some("Darlington"), &darlington),
            Ok(Some(vec!["Darlington".to_owned()]))
        );
        assert_eq!(
            areas_listed(None, &darlington),
            Ok(Some(vec![
                "Darlington".to_owned(),
                "South Durham".to_owned()
            ]))
        );
        let refused = areas_listed(Some("East Durham"), &darlington).unwrap_err();
        assert_eq!(refused.area, "East Durham");
        assert_eq!(refused.yours, ["Darlington", "South Durham"]);
        assert_eq!(areas_listed(None, &only(&[])), Ok(Some(Vec::new())));
        assert_eq!(areas_listed(None, &AreaScope::Every), Ok(None));
        assert_eq!(
            areas_listed(Some("East Durham"), &AreaScope::Every),
            Ok(Some(vec!["East Durham".to_owned()]))
        );
    }
}
