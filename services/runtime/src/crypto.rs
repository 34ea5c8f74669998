//! Envelope encryption of personal data. Each client has a random data key
//! that encrypts their record (AES-256-GCM); the data key is stored wrapped
//! by the master key from config. Erasing a client destroys the wrapped key,
//! which makes every copy of the ciphertext (backups included) unreadable.
//! Rotating the master key re-wraps data keys without touching records.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the master key must be 32 bytes of base64")]
    BadMasterKey,
    #[error("ciphertext could not be decrypted: wrong key or tampered data")]
    Decrypt,
}

/// The key that wraps data keys; never stored in the database.
#[derive(Clone)]
pub struct MasterKey {
    cipher: Aes256Gcm,
    hash_key: [u8; 32],
}

/// A data key, in the clear only in memory.
pub struct DataKey {
    cipher: Aes256Gcm,
    raw: [u8; 32],
}

impl DataKey {
    fn from_raw(raw: [u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(&raw.into()),
            raw,
        }
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// nonce ‖ ciphertext, authenticated with `aad` so a record cannot be moved
/// to another row.
fn seal(cipher: &Aes256Gcm, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let nonce = random_bytes::<NONCE_LEN>();
    let mut out = nonce.to_vec();
    let sealed = cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    out.extend_from_slice(&sealed);
    out
}

fn open(cipher: &Aes256Gcm, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN {
        return Err(CryptoError::Decrypt);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Decrypt)?;
    cipher
        .decrypt(
            &nonce.into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Decrypt)
}

impl MasterKey {
    pub fn from_base64(encoded: &str) -> Result<Self, CryptoError> {
        let bytes = BASE64
            .decode(encoded.trim())
            .map_err(|_| CryptoError::BadMasterKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadMasterKey)?;
        // The hashing key is derived so that one secret serves both purposes
        // without the two uses ever sharing a key.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length");
        mac.update(b"cpm identity fingerprint key");
        let hash_key: [u8; 32] = mac.finalize().into_bytes().into();
        Ok(Self {
            cipher: Aes256Gcm::new(&key.into()),
            hash_key,
        })
    }

    /// A fresh data key and its wrapped form for storage.
    pub fn new_data_key(&self) -> (DataKey, Vec<u8>) {
        let raw = random_bytes::<32>();
        let wrapped = seal(&self.cipher, &raw, b"cpm data key");
        (DataKey::from_raw(raw), wrapped)
    }

    pub fn unwrap_data_key(&self, wrapped: &[u8]) -> Result<DataKey, CryptoError> {
        let raw = open(&self.cipher, wrapped, b"cpm data key")?;
        let raw: [u8; 32] = raw.try_into().map_err(|_| CryptoError::Decrypt)?;
        Ok(DataKey::from_raw(raw))
    }

    /// A keyed hash (HMAC-SHA256): equal inputs match without the input
    /// being recoverable by anyone who lacks the master key.
    pub fn fingerprint(&self, normalised: &str) -> Vec<u8> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.hash_key).expect("any key length");
        mac.update(normalised.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// The current master key and those being rotated out. New data keys are
/// wrapped with the current one; unwrapping tries every key, so records
/// stay readable while a rotation is under way.
#[derive(Clone)]
pub struct KeyRing {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl KeyRing {
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Self {
        Self { current, previous }
    }

    /// Parses the configured keys (base64).
    pub fn from_config(current: &str, previous: &[impl AsRef<str>]) -> Result<Self, CryptoError> {
        Ok(Self {
            current: MasterKey::from_base64(current)?,
            previous: previous
                .iter()
                .map(|key| MasterKey::from_base64(key.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    pub fn new_data_key(&self) -> (DataKey, Vec<u8>) {
        self.current.new_data_key()
    }

    /// Unwraps with the current key, else a previous one; says whether the
    /// current key was the one that worked.
    pub fn unwrap_data_key(&self, wrapped: &[u8]) -> Result<(DataKey, bool), CryptoError> {
        if let Ok(key) = self.current.unwrap_data_key(wrapped) {
            return Ok((key, true));
        }
        self.previous
            .iter()
            .find_map(|master| master.unwrap_data_key(wrapped).ok())
            .map(|key| (key, false))
            .ok_or(CryptoError::Decrypt)
    }

    /// Re-wraps a data key under the current master key.
    pub fn rewrap(&self, wrapped: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (key, _) = self.unwrap_data_key(wrapped)?;
        Ok(seal(&self.current.cipher, &key.raw, b"cpm data key"))
    }

    /// The fingerprint under the current key.
    pub fn fingerprint(&self, normalised: &str) -> Vec<u8> {
        self.current.fingerprint(normalised)
    }

    /// The fingerprint under every key, current first: matches records not yet re-keyed.
    pub fn fingerprints(&self, normalised: &str) -> Vec<Vec<u8>> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|master| master.fingerprint(normalised))
            .collect()
    }
}

impl DataKey {
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        seal(&self.cipher, plaintext, aad)
    }
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open(&self.cipher, sealed, aad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_base64(&BASE64.encode([3u8; 32])).unwrap()
    }

    #[test]
    fn sealed_data_opens_only_with_its_key_and_context() {
        let master = master();
        let (key, wrapped) = master.new_data_key();
        let sealed = key.seal(b"Jane Doe", b"referral-1");
        assert!(!sealed.windows(8).any(|w| w == b"Jane Doe"));
        let key_again = master.unwrap_data_key(&wrapped).unwrap();
        assert_eq!(key_again.open(&sealed, b"referral-1").unwrap(), b"Jane Doe");
        assert!(key_again.open(&sealed, b"referral-2").is_err());
        let (other, _) = master.new_data_key();
        assert!(other.open(&sealed, b"referral-1").is_err());
    }

    #[test]
    fn another_master_key_cannot_unwrap() {
        let (_, wrapped) = master().new_data_key();
        let other = MasterKey::from_base64(&BASE64.encode([4u8; 32])).unwrap();
        assert!(other.unwrap_data_key(&wrapped).is_err());
    }

    #[test]
    fn fingerprints_match_equal_inputs_only() {
        let master = master();
        assert_eq!(master.fingerprint("a|b"), master.fingerprint("a|b"));
        assert_ne!(master.fingerprint("a|b"), master.fingerprint("a|c"));
    }

    #[test]
    fn a_key_ring_reads_old_records_and_rewraps_them_under_the_new_key() {
        let old = BASE64.encode([5u8; 32]);
        let new = BASE64.encode([6u8; 32]);
        let before = KeyRing::from_config(&old, &[] as &[&str]).unwrap();
        let (key, wrapped) = before.new_data_key();
        let sealed = key.seal(b"record", b"id");

        let during = KeyRing::from_config(&new, &[old.as_str()]).unwrap();
        let (_, current) = during.unwrap_data_key(&wrapped).unwrap();
        assert!(!current, "the old key unwrapped it");
        let rewrapped = during.rewrap(&wrapped).unwrap();

        let after = KeyRing::from_config(&new, &[] as &[&str]).unwrap();
        assert!(
            after.unwrap_data_key(&wrapped).is_err(),
            "the old wrapping is dead"
        );
        let (key, current) = after.unwrap_data_key(&rewrapped).unwrap();
        assert!(current);
        assert_eq!(key.open(&sealed, b"id").unwrap(), b"record");
        assert_eq!(during.fingerprints("x").len(), 2);
        assert_eq!(during.fingerprints("x")[1], before.fingerprint("x"));
    }

    #[test]
    fn short_or_malformed_master_keys_are_refused() {
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
    }
}
