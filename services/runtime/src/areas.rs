//! The programme's areas, as every service scopes staff by them.
//!
//! Every area a request names is one the programme registers
//! (`programme.areas`), taken in its registered spelling, so a look-alike
//! (another letter case, a zero-width space) can neither open a queue
//! nobody sees nor slip past a filter. Staff see the records of the areas
//! they work in: an admin every area, a coordinator the areas their token
//! names ([`Caller::area_scope`]) that the programme registers.

use crate::auth::{AreaScope, Caller};
use crate::config::ProgrammeConfig;
use crate::grpc::FieldViolations;

impl ProgrammeConfig {
    /// The areas whose records `caller` sees as staff, in the programme's
    /// spelling, each once: every area for an admin (or the platform
    /// itself); a coordinator's token areas that the programme registers (a
    /// name it does not register reaches nothing); none for anyone else.
    pub fn staff_scope(&self, caller: &Caller) -> AreaScope {
        match caller.area_scope() {
            AreaScope::Every => AreaScope::Every,
            AreaScope::Only(areas) => {
                let mut registered: Vec<String> = Vec::with_capacity(areas.len());
                for area in areas.iter().filter_map(|area| self.area(area)) {
                    if !registered.iter().any(|known| known == area) {
                        registered.push(area.to_owned());
                    }
                }
                AreaScope::Only(registered)
            }
        }
    }

    /// An optional area filter of a request: `None` when empty (every area
    /// the caller sees), else the registered spelling of a programme area;
    /// anything else is a violation of `field`.
    pub fn optional_area(
        &self,
        field: &str,
        value: &str,
        violations: &mut FieldViolations,
    ) -> Option<String> {
        if value.trim().is_empty() {
            return None;
        }
        self.check_area(field, value, violations)
    }
}

/// An area a request names that is not one of the caller's.
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

impl AreaScope {
    /// `Ok` when the scope admits `area` (say, the area a mentor is
    /// registered in must be one the registering caller works in).
    pub fn require(&self, area: &str) -> Result<(), OutsideAreas> {
        if self.admits(area) {
            Ok(())
        } else {
            Err(OutsideAreas {
                area: area.to_owned(),
                yours: self.as_filter().unwrap_or_default().to_vec(),
            })
        }
    }

    /// The areas a listing (a queue, a count, a register) covers: the one
    /// asked for, which must be in the scope, or else every area of it.
    /// `None` stands for every area (only for a caller who sees every
    /// area), as the queries' `($n::text[] IS NULL OR area = ANY($n))` take it.
    pub fn covering(&self, asked: Option<&str>) -> Result<Option<Vec<String>>, OutsideAreas> {
        match asked {
            Some(area) => self.require(area).map(|()| Some(vec![area.to_owned()])),
            None => Ok(self.as_filter().map(<[String]>::to_vec)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

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
            programme.staff_scope(&caller(Role::Admin, &[])),
            AreaScope::Every
        );
        assert_eq!(
            programme.staff_scope(&caller(
                Role::Coordinator,
                &["darlington", "Nowhere", "Darlington", "East Durham\u{200b}"]
            )),
            only(&["Darlington"]),
            "registered spelling, once; unregistered names reach nothing"
        );
        assert_eq!(
            programme.staff_scope(&caller(Role::Coordinator, &[])),
            only(&[])
        );
        assert_eq!(
            programme.staff_scope(&caller(Role::Referrer, &["Darlington"])),
            only(&[]),
            "a referrer is no member of staff in any area"
        );
    }

    #[test]
    fn an_area_filter_is_empty_or_a_registered_area_in_its_registered_spelling() {
        let programme = programme();
        let mut violations = FieldViolations::new();
        assert_eq!(programme.optional_area("area", "", &mut violations), None);
        assert_eq!(programme.optional_area("area", "  ", &mut violations), None);
        assert_eq!(
            programme.optional_area("area", " east durham ", &mut violations),
            Some("East Durham".to_owned())
        );
        assert!(violations.is_empty());
        for unknown in ["Nowhere", "Darlington\u{200b}", "Darling ton", "Darlingtön"] {
            let mut violations = FieldViolations::new();
            assert_eq!(
                programme.optional_area("area", unknown, &mut violations),
                None
            );
            assert_eq!(
                violations.fields().collect::<Vec<_>>(),
                ["area"],
                "{unknown:?}"
            );
        }
    }

    #[test]
    fn a_caller_acts_only_in_an_area_of_theirs_and_is_told_which_are() {
        let darlington = only(&["Darlington"]);
        assert_eq!(darlington.require("Darlington"), Ok(()));
        assert_eq!(AreaScope::Every.require("East Durham"), Ok(()));
        assert_eq!(
            darlington.require("East Durham").unwrap_err().to_string(),
            "you do not work in East Durham: your areas are Darlington"
        );
        assert_eq!(
            only(&[]).require("East Durham").unwrap_err().to_string(),
            "you do not work in East Durham: your token names no area"
        );
    }

    #[test]
    fn a_listing_covers_the_area_asked_for_when_it_is_the_caller_s_or_else_all_of_theirs() {
        let two = only(&["Darlington", "South Durham"]);
        assert_eq!(
            two.covering(Some("Darlington")),
            Ok(Some(vec!["Darlington".to_owned()]))
        );
        assert_eq!(
            two.covering(None),
            Ok(Some(vec![
                "Darlington".to_owned(),
                "South Durham".to_owned()
            ]))
        );
        let refused = two.covering(Some("East Durham")).unwrap_err();
        assert_eq!(refused.area, "East Durham");
        assert_eq!(refused.yours, ["Darlington", "South Durham"]);
        assert_eq!(only(&[]).covering(None), Ok(Some(Vec::new())));
        assert_eq!(AreaScope::Every.covering(None), Ok(None));
        assert_eq!(
            AreaScope::Every.covering(Some("East Durham")),
            Ok(Some(vec!["East Durham".to_owned()]))
        );
    }
}
