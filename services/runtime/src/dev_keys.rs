//! Development mode: with no keys configured, a token-signing key and an
//! encryption master key are generated once and kept in a local file, so a
//! laptop run needs no set-up and its data stays readable across restarts.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use crate::config::{PlatformConfig, Profile, Secret};

#[derive(Serialize, Deserialize)]
struct DevKeys {
    hs256_secret: String,
    master_key: String,
}

fn random_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    BASE64.encode(bytes)
}

/// The keys in `path`, made on first use. The file is the owner's alone
/// (0600): it holds the key that mints any token and the one that opens
/// every client record. One found readable by others is narrowed first.
fn load_or_create(path: &Path) -> anyhow::Result<DevKeys> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if let Ok(metadata) = std::fs::metadata(path) {
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(keys_file = %path.display(), "development keys file was readable by others; made 0600");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        return Ok(toml::from_str(&std::fs::read_to_string(path)?)?);
    }
    let keys = DevKeys {
        hs256_secret: random_key(),
        master_key: random_key(),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(toml::to_string(&keys)?.as_bytes())?;
    Ok(keys)
}

/// Fills empty keys from the development keys file (creating it when absent)
/// and says so loudly. Production configs are left untouched: their
/// validation refuses missing keys.
pub fn fill_missing(config: &mut PlatformConfig) -> anyhow::Result<()> {
    if config.profile != Profile::Development {
        return Ok(());
    }
    let needs_auth =
        config.auth.hs256_secret.is_empty() && config.auth.rs256_public_key_file.is_empty();
    let needs_master = config.crypto.master_key.is_empty();
    if !(needs_auth || needs_master) {
        return Ok(());
    }
    let keys = load_or_create(&config.dev.keys_file)?;
    if needs_auth {
        config.auth.hs256_secret = Secret::new(keys.hs256_secret);
    }
    if needs_master {
        config.crypto.master_key = Secret::new(keys.master_key);
    }
    tracing::warn!(
        keys_file = %config.dev.keys_file.display(),
        "DEVELOPMENT MODE: using locally generated signing and encryption keys; never use this profile with real client data"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_generated_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("cpm-dev-keys-{}", uuid::Uuid::new_v4()));
        let mut first = PlatformConfig::default();
        first.dev.keys_file = dir.join("keys.toml");
        fill_missing(&mut first).unwrap();
        assert!(!first.auth.hs256_secret.is_empty());
        assert!(!first.crypto.master_key.is_empty());
        let mut second = PlatformConfig::default();
        second.dev.keys_file = dir.join("keys.toml");
        fill_missing(&mut second).unwrap();
        assert_eq!(first.crypto.master_key, second.crypto.master_key);
        assert_eq!(first.auth.hs256_secret, second.auth.hs256_secret);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_keys_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("cpm-dev-keys-{}", uuid::Uuid::new_v4()));
        let mut config = PlatformConfig::default();
        config.dev.keys_file = dir.join("keys.toml");
        fill_missing(&mut config).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&config.dev.keys_file), 0o600);
        // A file left world-readable by an older version is narrowed.
        std::fs::set_permissions(
            &config.dev.keys_file,
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let mut again = PlatformConfig::default();
        again.dev.keys_file = config.dev.keys_file.clone();
        fill_missing(&mut again).unwrap();
        assert_eq!(mode(&config.dev.keys_file), 0o600);
        assert_eq!(again.crypto.master_key, config.crypto.master_key);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn production_is_never_given_development_keys() {
        let mut config = PlatformConfig {
            profile: Profile::Production,
            ..PlatformConfig::default()
        };
        config.dev.keys_file = std::env::temp_dir().join("cpm-never-created.toml");
        fill_missing(&mut config).unwrap();
        assert!(config.crypto.master_key.is_empty());
        assert!(!config.dev.keys_file.exists());
    }
}
