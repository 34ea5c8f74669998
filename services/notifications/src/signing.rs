//! Webhook signatures as the Standard Webhooks convention has them, so a
//! receiver's off-the-shelf library verifies what is sent: a secret per
//! endpoint (`whsec_` + base64 of random bytes), and per request the
//! headers `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature` = `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`,
//! where the key is the secret's decoded bytes. During a rotation both
//! secrets sign and the header carries both signatures, space-separated.
//!
//! Secrets are sealed at rest with a data key wrapped by the platform's
//! master key ring, bound to their webhook, and never logged.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use cpm_runtime::crypto::{CryptoError, KeyRing};
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;
use uuid::Uuid;

/// The prefix every secret carries.
const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a secret (the convention asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// A signing secret in its `whsec_…` form. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!("{SECRET_PREFIX}{}", BASE64.encode(bytes)))
    }

    /// A secret in `whsec_…` form; `None` unless its key decodes.
    pub fn parse(text: &str) -> Option<Self> {
        let key = text.strip_prefix(SECRET_PREFIX)?;
        BASE64.decode(key).ok().filter(|key| !key.is_empty())?;
        Some(Self(text.to_owned()))
    }

    /// The text the agency keeps.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn key(&self) -> Vec<u8> {
        BASE64
            .decode(&self.0[SECRET_PREFIX.len()..])
            .expect("a secret's key is valid base64 (checked when made)")
    }

    /// `v1,<signature>` of one message.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key()).expect("any key length");
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one signature per secret in use,
/// current first, space-separated.
pub fn signature_header(
    secrets: &[&WebhookSecret],
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(message_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A webhook's secrets as stored: a wrapped data key and the secrets
/// sealed under it.
pub struct SealedSecrets {
    pub wrapped_key: Vec<u8>,
    pub current: Vec<u8>,
    pub previous: Option<Vec<u8>>,
}

/// What binds a sealed secret to its webhook and its role, so a sealed
/// value cannot be moved to another row or column.
fn context(webhook_id: Uuid, role: &str) -> Vec<u8> {
    let mut aad = b"cpm webhook secret\0".to_vec();
    aad.extend_from_slice(webhook_id.as_bytes());
    aad.extend_from_slice(role.as_bytes());
    aad
}

/// Seals `current` (and `previous`, during a rotation) under a fresh data key.
pub fn seal(
    keys: &KeyRing,
    webhook_id: Uuid,
    current: &WebhookSecret,
    previous: Option<&WebhookSecret>,
) -> SealedSecrets {
    let (data_key, wrapped_key) = keys.new_data_key();
    SealedSecrets {
        wrapped_key,
        current: data_key.seal(current.expose().as_bytes(), &context(webhook_id, "current")),
        previous: previous.map(|secret| {
            data_key.seal(secret.expose().as_bytes(), &context(webhook_id, "previous"))
        }),
    }
}

/// Opens a webhook's secrets: the current one, and the previous one when given.
pub fn open(
    keys: &KeyRing,
    webhook_id: Uuid,
    wrapped_key: &[u8],
    current: &[u8],
    previous: Option<&[u8]>,
) -> Result<(WebhookSecret, Option<WebhookSecret>), CryptoError> {
    let (data_key, _) = keys.unwrap_data_key(wrapped_key)?;
    let read = |sealed: &[u8], role: &str| {
        let plain = data_key.open(sealed, &context(webhook_id, role))?;
        String::from_utf8(plain)
            .ok()
            .and_then(|text| WebhookSecret::parse(&text))
            .ok_or(CryptoError::Decrypt)
    };
    let current = read(current, "current")?;
    let previous = previous
        .map(|sealed| read(sealed, "previous"))
        .transpose()?;
    Ok((current, previous))
}

/// Re-wraps every webhook's secret key under the current master key (the
/// master key rotation, `cpm rewrap-keys`); returns (re-wrapped, already current).
pub async fn rewrap_all(pool: &sqlx::PgPool, keys: &KeyRing) -> anyhow::Result<(u64, u64)> {
    let mut transaction = pool.begin().await?;
    let (mut rewrapped, mut current) = (0, 0);
    for (webhook_id, wrapped) in crate::webhook_store::lock_secret_keys(&mut transaction).await? {
        let (_, is_current) = keys.unwrap_data_key(&wrapped).map_err(|_| {
            anyhow::anyhow!("webhook {webhook_id}'s secret opens with no configured key")
        })?;
        if is_current {
            current += 1;
            continue;
        }
        let rewrapped_key = keys.rewrap(&wrapped)?;
        crate::webhook_store::store_secret_key(&mut transaction, webhook_id, &rewrapped_key)
            .await?;
        rewrapped += 1;
    }
    transaction.commit().await?;
    Ok((rewrapped, current))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KeyRing {
        KeyRing::from_config(&BASE64.encode([7u8; 32]), &[] as &[&str]).unwrap()
    }

    #[test]
    fn signatures_match_the_standard_webhooks_test_vector() {
        // The vector published with the Standard Webhooks reference libraries.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_rotation_sends_both_signatures_current_first() {
        let (current, previous) = (WebhookSecret::generate(), WebhookSecret::generate());
        let header = signature_header(&[&current, &previous], "id", 5, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(
            parts,
            [current.sign("id", 5, b"{}"), previous.sign("id", 5, b"{}")]
        );
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn generated_secrets_are_well_formed_and_distinct() {
        let secret = WebhookSecret::generate();
        assert!(secret.expose().starts_with("whsec_"));
        assert_eq!(secret.key().len(), 32);
        assert_eq!(WebhookSecret::parse(secret.expose()), Some(secret.clone()));
        assert_ne!(secret, WebhookSecret::generate());
        assert!(!format!("{secret:?}").contains("whsec_"));
    }

    #[test]
    fn malformed_secrets_are_refused() {
        assert_eq!(
            WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            None
        );
        assert_eq!(WebhookSecret::parse("whsec_"), None);
        assert_eq!(WebhookSecret::parse("whsec_not base64!"), None);
    }

    #[test]
    fn sealed_secrets_open_only_for_their_webhook_and_role() {
        let keys = keys();
        let (webhook, other) = (Uuid::now_v7(), Uuid::now_v7());
        let (current, previous) = (WebhookSecret::generate(), WebhookSecret::generate());
        let sealed = seal(&keys, webhook, &current, Some(&previous));
        assert!(
            !sealed.current.windows(10).any(|window| current
                .expose()
                .as_bytes()
                .windows(10)
                .any(|w| w == window))
        );
        let opened = open(
            &keys,
            webhook,
            &sealed.wrapped_key,
            &sealed.current,
            sealed.previous.as_deref(),
        )
        .unwrap();
        assert_eq!(opened, (current, Some(previous)));
        assert!(open(&keys, other, &sealed.wrapped_key, &sealed.current, None).is_err());
        let swapped = sealed.previous.as_deref().unwrap();
        assert!(open(&keys, webhook, &sealed.wrapped_key, swapped, None).is_err());
    }
}
