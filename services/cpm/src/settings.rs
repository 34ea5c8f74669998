//! The root configuration: the shared platform settings plus one section per
//! registered service (`[referral_intake]`, `[risk_assessment]`, ...), each
//! parsed and checked by its own service.

use std::collections::BTreeMap;
use std::path::Path;

use cpm_runtime::config::{ConfigError, PlatformConfig};
use serde::Serialize;

use crate::Target;

#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    #[serde(flatten)]
    pub platform: PlatformConfig,
    /// Each service's own section as written (defaults fill the rest), keyed
    /// by section name; see [`Settings::set`].
    #[serde(flatten)]
    pub services: BTreeMap<String, toml::Table>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            platform: PlatformConfig::default(),
            services: Target::ALL
                .iter()
                .map(|target| (target.service().section(), toml::Table::new()))
                .collect(),
        }
    }
}

impl Settings {
    /// Loads defaults → file → environment, fills development keys when the
    /// profile allows it, and validates every service's section too.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let sections: Vec<String> = Target::ALL
            .iter()
            .map(|target| target.service().section())
            .collect();
        let (platform, services) =
            cpm_runtime::config::load_with_sections::<PlatformConfig>(file, &sections)?;
        let mut settings = Settings { platform, services };
        cpm_runtime::dev_keys::fill_missing(&mut settings.platform)
            .map_err(|error| ConfigError::Load(format!("development keys: {error:#}")))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the platform settings and every registered service's section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.platform.validate()?;
        for target in Target::ALL {
            target
                .service()
                .check(self.section(target), &self.platform)?;
        }
        Ok(())
    }

    /// A service's section as written (empty when nobody wrote one).
    pub fn section(&self, target: Target) -> &toml::Table {
        static EMPTY: std::sync::OnceLock<toml::Table> = std::sync::OnceLock::new();
        self.services
            .get(&target.service().section())
            .unwrap_or_else(|| EMPTY.get_or_init(toml::Table::new))
    }

    /// Sets one key of a service's section, e.g.
    /// `set("notifications.webhook_poll_interval_ms", 200)`.
    pub fn set(&mut self, key: &str, value: impl Into<toml::Value>) {
        let (section, field) = key
            .split_once('.')
            .unwrap_or_else(|| panic!("`{key}` is not section.field"));
        self.services
            .entry(section.to_owned())
            .or_default()
            .insert(field.to_owned(), value.into());
    }

    /// A service's own listen address; empty when it uses `grpc.listen`.
    pub fn listen_of(&self, target: Target) -> String {
        target
            .service()
            .check(self.section(target), &self.platform)
            .unwrap_or_default()
    }

    /// Where a process running `targets` listens: a single target's own
    /// address when it has one, else the shared `grpc.listen`.
    pub fn listen_address(&self, targets: &[Target]) -> String {
        let own = match targets {
            [only] => self.listen_of(*only),
            _ => String::new(),
        };
        if own.is_empty() {
            self.platform.grpc.listen.clone()
        } else {
            own
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_target_may_have_its_own_address() {
        let mut settings = Settings::default();
        settings.set("risk_assessment.listen", "127.0.0.1:50052");
        assert_eq!(
            settings.listen_address(&[Target::RISK_ASSESSMENT]),
            "127.0.0.1:50052"
        );
        assert_eq!(settings.listen_address(&Target::ALL), "127.0.0.1:50051");
        assert_eq!(
            settings.listen_address(&[Target::REFERRAL_INTAKE]),
            "127.0.0.1:50051"
        );
    }

    #[test]
    fn production_refuses_auto_registered_agencies() {
        use cpm_runtime::config::{Profile, Secret};
        let mut settings = Settings::default();
        settings.platform.profile = Profile::Production;
        settings.platform.auth.rs256_public_key_file = "issuer.pem".into();
        settings.platform.auth.issuer = "https://login.example.org".into();
        settings.platform.crypto.master_key = Secret::new("a2V5");
        settings.platform.amqp.url = Secret::new("amqps://cpm:pw@broker:5671/cpm");
        settings.platform.database.url = Secret::new("postgres://cpm@db/cpm?sslmode=require");
        settings.platform.grpc.tls_cert_file = "cert.pem".into();
        settings.platform.grpc.tls_key_file = "key.pem".into();
        let message = settings.validate().unwrap_err().to_string();
        assert!(
            message.contains("referral_intake.auto_register_agencies"),
            "{message}"
        );
        settings.set("referral_intake.auto_register_agencies", false);
        settings.validate().unwrap();
    }

    #[test]
    fn a_bad_service_address_names_its_key() {
        let mut settings = Settings::default();
        settings.set("mentor_matching.listen", "somewhere");
        let message = settings.validate().unwrap_err().to_string();
        assert!(message.contains("mentor_matching.listen"), "{message}");
        assert!(
            message.contains("CPM__MENTOR_MATCHING__LISTEN"),
            "{message}"
        );
    }

    #[test]
    fn a_service_key_of_the_wrong_type_is_refused_before_anything_starts() {
        let mut settings = Settings::default();
        settings.set("risk_assessment.first_assessment_target_days", "soon");
        let message = settings.validate().unwrap_err().to_string();
        assert!(message.contains("risk_assessment"), "{message}");
        let mut settings = Settings::default();
        settings.set("risk_assessment.first_assessment_target_days", 0);
        let message = settings.validate().unwrap_err().to_string();
        assert!(
            message.contains("risk_assessment.first_assessment_target_days"),
            "{message}"
        );
    }

    #[test]
    fn service_sections_come_from_the_file_and_the_environment() {
        let dir = std::env::temp_dir().join(format!("cpm-settings-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cpm.toml");
        let keys = dir.join("keys.toml");
        std::fs::write(
            &file,
            format!(
                "[dev]\nkeys_file = {:?}\n[notifications]\nwebhook_poll_interval_ms = 250\n\
                 [risk_assessment]\nlisten = \"127.0.0.1:50060\"\n",
                keys.display().to_string()
            ),
        )
        .unwrap();
        let settings = Settings::load(Some(&file)).unwrap();
        assert_eq!(
            settings.section(Target::NOTIFICATIONS)["webhook_poll_interval_ms"].as_integer(),
            Some(250)
        );
        assert_eq!(
            settings.listen_of(Target::RISK_ASSESSMENT),
            "127.0.0.1:50060"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
