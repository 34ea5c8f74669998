//! Free text a service holds about a client, sealed under a key of that
//! client's own (crypto-shredding). Each service keeps its keys in its own
//! schema (`client_key`), wrapped by the master key; `client.erased`
//! shreds the key and leaves a tombstone ([`crate::bus::Router::on_erasure`]
//! does it for every service), after which:
//!
//! - what was sealed no longer opens, in the database, its WAL and any
//!   backup taken after the erasure (a backup from before it holds the
//!   wrapped key too: backups must expire, see docs/operations.md);
//! - nothing new is sealed for that client ([`SealError::Erased`]),
//!   whatever order the erasure and later events or calls arrive in.
//!
//! Every opening for a caller is recorded, once per client per call, in the
//! schema's append-only `personal_data_read` ([`Reader`], [`Reading`]).

use sqlx::PgConnection;
use uuid::Uuid;

use crate::crypto::KeyRing;

/// Why text could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The client was erased: nothing new about them is kept.
    #[error("the client's personal data was erased; nothing new about them is accepted")]
    Erased,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("a sealed record does not open: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
}

/// Seals and opens one service's free text per client.
#[derive(Clone)]
pub struct ClientKeys {
    keys: KeyRing,
}

impl ClientKeys {
    pub fn new(keys: KeyRing) -> Self {
        Self { keys }
    }

    /// `text` sealed under the client's key (made on first use), bound to
    /// the client, so it cannot be moved to another's row.
    pub async fn seal(
        &self,
        connection: &mut PgConnection,
        referral_id: Uuid,
        text: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let aad = referral_id.as_bytes();
        // The client's key exists once the service first kept text about
        // them: only then is a new one made.
        match wrapped_key(connection, referral_id).await? {
            Some(Some(stored)) => return Ok(self.keys.unwrap_data_key(&stored)?.0.seal(text, aad)),
            Some(None) => return Err(SealError::Erased),
            None => {}
        }
        let (candidate, wrapped) = self.keys.new_data_key();
        // Dynamic: every schema has a client_key; search_path picks the service's.
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO client_key (referral_id, wrapped_data_key) VALUES ($1, $2) \
             ON CONFLICT (referral_id) DO NOTHING RETURNING referral_id",
        )
        .bind(referral_id)
        .bind(&wrapped)
        .fetch_optional(&mut *connection)
        .await?;
        if inserted.is_some() {
            return Ok(candidate.seal(text, aad));
        }
        // Another writer, or an erasure, got there first: use what it left.
        match wrapped_key(connection, referral_id).await? {
            Some(Some(stored)) => Ok(self.keys.unwrap_data_key(&stored)?.0.seal(text, aad)),
            _ => Err(SealError::Erased),
        }
    }

    /// Seals `text` when there is any; empty text stays empty (and needs no key).
    pub async fn seal_text(
        &self,
        connection: &mut PgConnection,
        referral_id: Uuid,
        text: &str,
    ) -> Result<Option<Vec<u8>>, SealError> {
        if text.is_empty() {
            return Ok(None);
        }
        self.seal(connection, referral_id, text.as_bytes())
            .await
            .map(Some)
    }

    /// Opening for `reader`, many records of many clients in one call: each
    /// client's key is unwrapped once, and each client's first opening is
    /// recorded in `personal_data_read` (in the caller's transaction).
    pub fn reading(&self, reader: Reader) -> Reading<'_> {
        Reading {
            keys: self,
            reader,
            openers: std::collections::HashMap::new(),
        }
    }
}

/// Who opens a client's text, and why: what the read audit records.
#[derive(Clone, Debug)]
pub struct Reader {
    pub subject: String,
    pub role: String,
    /// The call or job that reads, e.g. `GetAssessment`.
    pub purpose: String,
}

impl Reader {
    pub fn of(caller: &crate::auth::Caller, purpose: &str) -> Self {
        Self {
            subject: caller.subject.clone(),
            role: caller.role.as_str().to_owned(),
            purpose: purpose.to_owned(),
        }
    }
}

/// Opens clients' sealed text for one reader; see [`ClientKeys::reading`].
pub struct Reading<'k> {
    keys: &'k ClientKeys,
    reader: Reader,
    /// Per client: its key, or `None` when it has none or was erased.
    openers: std::collections::HashMap<Uuid, Option<Opener>>,
}

impl Reading<'_> {
    async fn opener(
        &mut self,
        connection: &mut PgConnection,
        referral_id: Uuid,
    ) -> Result<Option<&Opener>, SealError> {
        if !self.openers.contains_key(&referral_id) {
            let opener = self
                .keys
                .opener(connection, referral_id, &self.reader)
                .await?;
            self.openers.insert(referral_id, opener);
        }
        Ok(self.openers[&referral_id].as_ref())
    }

    /// What `sealed` holds; `None` once the client was erased.
    pub async fn open(
        &mut self,
        connection: &mut PgConnection,
        referral_id: Uuid,
        sealed: &[u8],
    ) -> Result<Option<Vec<u8>>, SealError> {
        let Some(opener) = self.opener(connection, referral_id).await? else {
            return Ok(None);
        };
        Ok(Some(opener.open(sealed)?))
    }

    /// [`Self::open`] as text; "" when there was none or it was erased.
    pub async fn open_text(
        &mut self,
        connection: &mut PgConnection,
        referral_id: Uuid,
        sealed: Option<&[u8]>,
    ) -> Result<String, SealError> {
        let Some(sealed) = sealed else {
            return Ok(String::new());
        };
        let Some(opener) = self.opener(connection, referral_id).await? else {
            return Ok(String::new());
        };
        opener.open_text(Some(sealed))
    }
}

impl ClientKeys {
    /// The client's key, unwrapped once, for opening many records of the
    /// same client for `reader`, who is recorded in `personal_data_read`;
    /// `None` (and nothing recorded) when the client has no key or was
    /// erased.
    pub async fn opener(
        &self,
        connection: &mut PgConnection,
        referral_id: Uuid,
        reader: &Reader,
    ) -> Result<Option<Opener>, SealError> {
        let Some(Some(wrapped)) = wrapped_key(connection, referral_id).await? else {
            return Ok(None);
        };
        let (key, _) = self.keys.unwrap_data_key(&wrapped)?;
        // Dynamic: every schema has this table; search_path picks the service's.
        sqlx::query(
            "INSERT INTO personal_data_read (referral_id, reader, role, purpose) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(referral_id)
        .bind(&reader.subject)
        .bind(&reader.role)
        .bind(&reader.purpose)
        .execute(connection)
        .await?;
        Ok(Some(Opener { key, referral_id }))
    }
}

/// Opens one client's records with their key already unwrapped.
pub struct Opener {
    key: crate::crypto::DataKey,
    referral_id: Uuid,
}

impl Opener {
    /// What `sealed` holds.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        Ok(self.key.open(sealed, self.referral_id.as_bytes())?)
    }

    /// The text `sealed` holds; "" when there is none.
    pub fn open_text(&self, sealed: Option<&[u8]>) -> Result<String, SealError> {
        let Some(sealed) = sealed else {
            return Ok(String::new());
        };
        Ok(String::from_utf8_lossy(&self.open(sealed)?).into_owned())
    }
}

/// `None`: no key yet; `Some(None)`: shredded.
async fn wrapped_key(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Option<Option<Vec<u8>>>, sqlx::Error> {
    sqlx::query_scalar("SELECT wrapped_data_key FROM client_key WHERE referral_id = $1")
        .bind(referral_id)
        .fetch_optional(connection)
        .await
}

/// Shreds the client's key and leaves the tombstone; true when this call
/// erased it (false when it already was).
pub async fn shred(connection: &mut PgConnection, referral_id: Uuid) -> Result<bool, sqlx::Error> {
    let shredded = sqlx::query(
        "INSERT INTO client_key (referral_id, wrapped_data_key, erased_at) \
         VALUES ($1, NULL, now()) \
         ON CONFLICT (referral_id) DO UPDATE \
         SET wrapped_data_key = NULL, erased_at = now() \
         WHERE client_key.erased_at IS NULL",
    )
    .bind(referral_id)
    .execute(connection)
    .await?
    .rows_affected();
    Ok(shredded == 1)
}

/// Whether the client was erased: what a service checks before keeping
/// anything new about them that is not sealed (categories, say).
pub async fn is_erased(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(matches!(
        wrapped_key(connection, referral_id).await?,
        Some(None)
    ))
}

/// Re-wraps every live client key of one service's schema that is still
/// under a previous master key, in batches that commit on their own;
/// returns (re-wrapped, already current).
pub async fn rewrap_all(pool: &sqlx::PgPool, keys: &KeyRing) -> anyhow::Result<(u64, u64)> {
    let (mut rewrapped, mut current) = (0, 0);
    let mut after = Uuid::nil();
    loop {
        let mut transaction = pool.begin().await?;
        let batch: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT referral_id, wrapped_data_key FROM client_key \
             WHERE referral_id > $1 AND wrapped_data_key IS NOT NULL \
             ORDER BY referral_id LIMIT 100 FOR UPDATE",
        )
        .bind(after)
        .fetch_all(&mut *transaction)
        .await?;
        let Some((last, _)) = batch.last() else {
            transaction.commit().await?;
            return Ok((rewrapped, current));
        };
        after = *last;
        for (referral_id, wrapped) in &batch {
            let (_, is_current) = keys.unwrap_data_key(wrapped).map_err(|_| {
                anyhow::anyhow!("the key of client {referral_id} opens with no configured key")
            })?;
            if is_current {
                current += 1;
                continue;
            }
            sqlx::query("UPDATE client_key SET wrapped_data_key = $2 WHERE referral_id = $1")
                .bind(referral_id)
                .bind(keys.rewrap(wrapped)?)
                .execute(&mut *transaction)
                .await?;
            rewrapped += 1;
        }
        transaction.commit().await?;
    }
}
