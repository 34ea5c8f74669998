//! The root configuration: the shared platform settings plus one section per
//! service (`[referral_intake]`, `[risk_assessment]`, ...).

use std::path::Path;

use cpm_runtime::config::{ConfigError, PlatformConfig};
use serde::{Deserialize, Serialize};

use crate::Target;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    #[serde(flatten)]
    pub platform: PlatformConfig,
    pub referral_intake: referral_intake::Config,
    pub risk_assessment: risk_assessment::Config,
    pub mentor_matching: mentor_matching::Config,
    pub contact_logging: contact_logging::Config,
    pub notifications: notifications::Config,
}

impl Settings {
    /// Loads defaults → file → environment, fills development keys when the
    /// profile allows it, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut settings: Settings = cpm_runtime::config::load(file)?;
        cpm_runtime::dev_keys::fill_missing(&mut settings.platform)
            .map_err(|error| ConfigError::Load(format!("development keys: {error:#}")))?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.platform.validate()?;
        if self.platform.profile == cpm_runtime::config::Profile::Production
            && self.referral_intake.auto_register_agencies
        {
            return Err(ConfigError::invalid(
                "referral_intake.auto_register_agencies",
                "production refuses referrals from unregistered agencies; set it to false",
            ));
        }
        for target in Target::ALL {
            let listen = self.listen_of(target);
            if !listen.is_empty() && listen.parse::<std::net::SocketAddr>().is_err() {
                let key = format!("{}.listen", target.as_str().replace('-', "_"));
                return Err(ConfigError::invalid(
                    &key,
                    format!("`{listen}` is not an address like 0.0.0.0:50052"),
                ));
            }
        }
        Ok(())
    }

    /// A service's own listen address; empty when it uses `grpc.listen`.
    pub fn listen_of(&self, target: Target) -> &str {
        match target {
            Target::ReferralIntake => &self.referral_intake.listen,
            Target::RiskAssessment => &self.risk_assessment.listen,
            Target::MentorMatching => &self.mentor_matching.listen,
            Target::ContactLogging => &self.contact_logging.listen,
            Target::Notifications => &self.notifications.listen,
        }
    }

    /// Where a process running `targets` listens: a single target's own
    /// address when it has one, else the shared `grpc.listen`.
    pub fn listen_address(&self, targets: &[Target]) -> &str {
        match targets {
            [only] if !self.listen_of(*only).is_empty() => self.listen_of(*only),
            _ => &self.platform.grpc.listen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_target_may_have_its_own_address() {
        let mut settings = Settings::default();
        settings.risk_assessment.listen = "127.0.0.1:50052".into();
        assert_eq!(
            settings.listen_address(&[Target::RiskAssessment]),
            "127.0.0.1:50052"
        );
        assert_eq!(settings.listen_address(&Target::ALL), "0.0.0.0:50051");
        assert_eq!(
            settings.listen_address(&[Target::ReferralIntake]),
            "0.0.0.0:50051"
        );
    }

    #[test]
    fn production_refuses_auto_registered_agencies() {
        use cpm_runtime::config::{Profile, Secret};
        let mut settings = Settings::default();
        settings.platform.profile = Profile::Production;
        settings.platform.auth.hs256_secret = Secret::new("c2VjcmV0");
        settings.platform.crypto.master_key = Secret::new("a2V5");
        settings.platform.amqp.url = Secret::new("amqps://cpm:pw@broker:5671/cpm");
        settings.platform.grpc.tls_cert_file = "cert.pem".into();
        settings.platform.grpc.tls_key_file = "key.pem".into();
        let message = settings.validate().unwrap_err().to_string();
        assert!(
            message.contains("referral_intake.auto_register_agencies"),
            "{message}"
        );
        settings.referral_intake.auto_register_agencies = false;
        settings.validate().unwrap();
    }

    #[test]
    fn a_bad_service_address_names_its_key() {
        let mut settings = Settings::default();
        settings.mentor_matching.listen = "somewhere".into();
        let message = settings.validate().unwrap_err().to_string();
        assert!(message.contains("mentor_matching.listen"), "{message}");
        assert!(
            message.contains("CPM__MENTOR_MATCHING__LISTEN"),
            "{message}"
        );
    }
}
