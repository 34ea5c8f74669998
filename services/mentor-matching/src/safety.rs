//! Safety exclusions: mentors who must never be paired with a client, shown
//! to the coordinator with the rule that excluded them, never overridden.
//!
//! A rule names crimes the client committed (`perpetrator_of`, from the
//! referral through `assessment.decided`) and a lived experience: a mentor
//! with that experience is excluded for such a client, e.g. a mentor who
//! was a victim of a sexual offence for a client who committed one. The
//! rules are configuration (`mentor_matching.safety_exclusions`); the
//! defaults below are the programme's.

use cpm_proto::v1::{CrimeType, LivedExperience};
use serde::{Deserialize, Serialize};

/// One rule, as configuration writes it: proto value names without their
/// prefix, e.g. `perpetrator_of = ["RAPE", "SEXUAL_ASSAULT"]`,
/// `lived_experience = "SEXUAL_OFFENCE_VICTIM"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExclusionRule {
    /// What the rule is, as the coordinator reads it.
    pub name: String,
    pub perpetrator_of: Vec<String>,
    pub lived_experience: String,
}

/// The programme's default rules.
pub fn default_rules() -> Vec<ExclusionRule> {
    let rule = |name: &str, crimes: &[&str], experience: &str| ExclusionRule {
        name: name.to_owned(),
        perpetrator_of: crimes.iter().map(|crime| (*crime).to_owned()).collect(),
        lived_experience: experience.to_owned(),
    };
    vec![
        rule(
            "a victim of sexual offending is never paired with a client who committed a sexual offence",
            &["RAPE", "SEXUAL_ASSAULT", "POSSESSION_OF_SEXUAL_MATERIAL"],
            "SEXUAL_OFFENCE_VICTIM",
        ),
        rule(
            "a victim of domestic abuse is never paired with a client who committed violence, threats or stalking",
            &[
                "PHYSICAL_ASSAULT",
                "THREATS_TO_KILL",
                "HARASSMENT_OR_STALKING",
                "MALICIOUS_COMMUNICATIONS",
            ],
            "DOMESTIC_ABUSE_VICTIM",
        ),
    ]
}

/// A rule with its names resolved, ready to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exclusion {
    pub name: String,
    pub perpetrator_of: Vec<CrimeType>,
    pub lived_experience: LivedExperience,
}

/// Resolves configured rules; an unknown name is an error naming it.
pub fn resolve(rules: &[ExclusionRule]) -> Result<Vec<Exclusion>, String> {
    rules
        .iter()
        .map(|rule| {
            if rule.name.trim().is_empty() {
                return Err("every safety exclusion needs a name".to_owned());
            }
            let perpetrator_of = rule
                .perpetrator_of
                .iter()
                .map(|crime| {
                    CrimeType::from_str_name(&format!("CRIME_TYPE_{crime}"))
                        .filter(|crime| *crime != CrimeType::Unspecified)
                        .ok_or_else(|| format!("`{crime}` is not a crime type"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if perpetrator_of.is_empty() {
                return Err(format!("`{}` names no crime", rule.name));
            }
            let lived_experience = LivedExperience::from_str_name(&format!(
                "LIVED_EXPERIENCE_{}",
                rule.lived_experience
            ))
            .filter(|experience| *experience != LivedExperience::Unspecified)
            .ok_or_else(|| format!("`{}` is not a lived experience", rule.lived_experience))?;
            Ok(Exclusion {
                name: rule.name.clone(),
                perpetrator_of,
                lived_experience,
            })
        })
        .collect()
}

/// The first rule that excludes a mentor with `experience` for a client who
/// committed `perpetrator_of`, if any.
pub fn excluded_by<'r>(
    rules: &'r [Exclusion],
    perpetrator_of: &[CrimeType],
    experience: &[LivedExperience],
) -> Option<&'r Exclusion> {
    rules.iter().find(|rule| {
        experience.contains(&rule.lived_experience)
            && rule
                .perpetrator_of
                .iter()
                .any(|crime| perpetrator_of.contains(crime))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rules_resolve() {
        let rules = resolve(&default_rules()).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0].lived_experience,
            LivedExperience::SexualOffenceVictim
        );
        assert!(rules[0].perpetrator_of.contains(&CrimeType::Rape));
    }

    #[test]
    fn a_rule_naming_an_unknown_crime_or_experience_is_refused() {
        let mut rules = default_rules();
        rules[0].perpetrator_of.push("ARSON".into());
        assert!(resolve(&rules).unwrap_err().contains("ARSON"));
        let mut rules = default_rules();
        rules[1].lived_experience = "PIRATE".into();
        assert!(resolve(&rules).unwrap_err().contains("PIRATE"));
        let mut rules = default_rules();
        rules[0].perpetrator_of.clear();
        assert!(resolve(&rules).unwrap_err().contains("names no crime"));
    }

    #[test]
    fn a_mentor_is_excluded_only_for_the_crimes_their_experience_meets() {
        let rules = resolve(&default_rules()).unwrap();
        let victim = [LivedExperience::SexualOffenceVictim, LivedExperience::Carer];
        assert_eq!(
            excluded_by(
                &rules,
                &[CrimeType::Theft, CrimeType::SexualAssault],
                &victim
            )
            .map(|rule| rule.lived_experience),
            Some(LivedExperience::SexualOffenceVictim)
        );
        assert!(excluded_by(&rules, &[CrimeType::Theft], &victim).is_none());
        assert!(excluded_by(&rules, &[], &victim).is_none());
        assert!(
            excluded_by(&rules, &[CrimeType::Rape], &[LivedExperience::Carer]).is_none(),
            "no victim experience, no exclusion"
        );
        assert!(
            excluded_by(
                &rules,
                &[CrimeType::ThreatsToKill],
                &[LivedExperience::DomesticAbuseVictim]
            )
            .is_some()
        );
    }
}
