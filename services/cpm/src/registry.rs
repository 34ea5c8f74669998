//! The registry: every service this binary can run, and [`Target`], one of
//! them. This is the only per-service list in the binary; everything else
//! (targets, configuration sections and checks, migrations, queue
//! declarations, start) iterates it. Adding a service is a constant and an
//! entry in [`Target::ALL`] here.

use std::fmt;
use std::str::FromStr;

use cpm_runtime::descriptor::ServiceDescriptor;

/// One service, as `cpm serve --target` names it.
#[derive(Clone, Copy)]
pub struct Target(&'static dyn ServiceDescriptor);

impl Target {
    pub const REFERRAL_INTAKE: Target = Target(&referral_intake::SERVICE);
    pub const RISK_ASSESSMENT: Target = Target(&risk_assessment::SERVICE);
    pub const MENTOR_MATCHING: Target = Target(&mentor_matching::SERVICE);
    pub const CONTACT_LOGGING: Target = Target(&contact_logging::SERVICE);
    pub const NOTIFICATIONS: Target = Target(&notifications::SERVICE);

    /// Every service, in the order a process starts them.
    pub const ALL: [Target; 5] = [
        Target::REFERRAL_INTAKE,
        Target::RISK_ASSESSMENT,
        Target::MENTOR_MATCHING,
        Target::CONTACT_LOGGING,
        Target::NOTIFICATIONS,
    ];

    /// What the binary knows of the service.
    pub fn service(self) -> &'static dyn ServiceDescriptor {
        self.0
    }

    pub fn as_str(self) -> &'static str {
        self.0.name()
    }

    /// What the service does, for `cpm targets`.
    pub fn description(self) -> &'static str {
        self.0.description()
    }

    /// Its place in [`Target::ALL`].
    fn rank(self) -> usize {
        Target::ALL
            .iter()
            .position(|target| target.as_str() == self.as_str())
            .unwrap_or(usize::MAX)
    }

    /// Parses `all` or a comma-separated list of service names, without
    /// duplicates, in registry order.
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

impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Target {}

impl PartialOrd for Target {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Target {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl std::hash::Hash for Target {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
            vec![Target::REFERRAL_INTAKE, Target::NOTIFICATIONS]
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

    #[test]
    fn names_schemas_and_sections_are_unique() {
        let mut names: Vec<_> = Target::ALL.iter().map(|t| t.as_str()).collect();
        let mut schemas: Vec<_> = Target::ALL.iter().map(|t| t.service().schema()).collect();
        let mut sections: Vec<_> = Target::ALL.iter().map(|t| t.service().section()).collect();
        for list in [&mut names, &mut schemas] {
            list.sort();
            list.dedup();
            assert_eq!(list.len(), Target::ALL.len());
        }
        sections.sort();
        sections.dedup();
        assert_eq!(sections.len(), Target::ALL.len());
    }

    /// Every RPC of every service has a row in its access table, and no row
    /// names an RPC that does not exist: a forgotten row would refuse
    /// everyone, a stale one would hide a renamed method.
    #[test]
    fn every_access_table_names_exactly_its_services_methods() {
        use prost::Message as _;
        let descriptors =
            prost_types::FileDescriptorSet::decode(cpm_proto::FILE_DESCRIPTOR_SET).unwrap();
        for target in Target::ALL {
            let service = target.service();
            let (package, name) = service.grpc_name().rsplit_once('.').unwrap();
            let mut declared: Vec<String> = descriptors
                .file
                .iter()
                .filter(|file| file.package() == package)
                .flat_map(|file| &file.service)
                .filter(|candidate| candidate.name() == name)
                .flat_map(|candidate| &candidate.method)
                .map(|method| method.name().to_owned())
                .collect();
            let mut tabled: Vec<String> = service.access().methods().map(str::to_owned).collect();
            declared.sort();
            tabled.sort();
            assert!(
                !declared.is_empty(),
                "{} has no methods",
                service.grpc_name()
            );
            assert_eq!(tabled, declared, "{}", service.name());
        }
    }
}
