//! Targets: the real services, plus `all`. Nothing in between.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    ReferralIntake,
    RiskAssessment,
    MentorMatching,
    ContactLogging,
    Notifications,
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::ReferralIntake,
        Target::RiskAssessment,
        Target::MentorMatching,
        Target::ContactLogging,
        Target::Notifications,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::ReferralIntake => referral_intake::NAME,
            Target::RiskAssessment => risk_assessment::NAME,
            Target::MentorMatching => mentor_matching::NAME,
            Target::ContactLogging => contact_logging::NAME,
            Target::Notifications => notifications::NAME,
        }
    }

    /// What the service does, for `cpm targets`.
    pub fn description(self) -> &'static str {
        match self {
            Target::ReferralIntake => "agencies submit and follow referrals; client personal data",
            Target::RiskAssessment => "checks and decisions by named coordinators",
            Target::MentorMatching => "mentor register, proposed pairs, allocations, waits",
            Target::ContactLogging => "case files, contacts, discharge",
            Target::Notifications => "tells referring agencies: gRPC stream and webhooks",
        }
    }

    /// Parses `all` or a comma-separated list of service names, without duplicates.
    pub fn parse_list(value: &str) -> Result<Vec<Target>, String> {
        let value = value.trim();
        if value.is_empty() || value == "all" {
            return Ok(Target::ALL.to_vec());
        }
        let mut targets = Vec::new();
        for name in value.split(',') {
            let target: Target = name.trim().parse()?;
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
        targets.sort();
        Ok(targets)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Target::ALL
            .into_iter()
            .find(|target| target.as_str() == value)
            .ok_or_else(|| {
                let names: Vec<_> = Target::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "unknown target `{value}`: expected all or {}",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_and_lists_parse() {
        assert_eq!(Target::parse_list("all").unwrap(), Target::ALL.to_vec());
        assert_eq!(
            Target::parse_list("notifications,referral-intake,notifications").unwrap(),
            vec![Target::ReferralIntake, Target::Notifications]
        );
    }

    #[test]
    fn unknown_targets_are_named() {
        let error = Target::parse_list("referral-intake,billing").unwrap_err();
        assert!(error.contains("billing"), "{error}");
    }

    #[test]
    fn names_round_trip() {
        for target in Target::ALL {
            assert_eq!(target.as_str().parse::<Target>().unwrap(), target);
        }
    }
}
