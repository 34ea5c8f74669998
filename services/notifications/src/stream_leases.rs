//! The cap on an agency's open Subscribe streams, across the deployment.
//! Each open stream holds a row in `notifications.stream_lease`: counted
//! under a per-agency advisory lock when a stream opens (so two replicas
//! cannot both pass the cap), renewed while the stream stays open, deleted
//! when it closes however it ends (client cancel, dropped connection,
//! shutdown). A replica that dies cannot delete its rows; they expire
//! within one [`LEASE`].

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

/// How long a stream's row outlives its last renewal.
pub const LEASE: Duration = Duration::from_secs(30);

/// How often an open stream renews its row: three renewals a lease, so a
/// slow database must miss two before another replica counts it gone.
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// Takes stream leases for agencies, at most `cap` each.
#[derive(Clone, Debug)]
pub struct StreamLeases {
    pool: PgPool,
    cap: usize,
}

/// One open stream's lease; dropping it ends the lease.
#[derive(Debug)]
pub struct StreamLease {
    /// Dropped with the lease: tells its keeper to delete the row.
    _closed: oneshot::Sender<()>,
}

impl StreamLeases {
    pub fn new(pool: PgPool, cap: usize) -> Self {
        Self { pool, cap }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// A lease for one more of the agency's streams, or `None` when it
    /// already holds `cap` across the deployment.
    pub async fn try_take(&self, agency_id: &str) -> Result<Option<StreamLease>, sqlx::Error> {
        let stream_id = Uuid::now_v7();
        let mut transaction = self.pool.begin().await?;
        cpm_runtime::db::lock_key(
            &mut transaction,
            &format!("notifications.stream_lease/{agency_id}"),
        )
        .await?;
        let open = sqlx::query_scalar!(
            "SELECT count(*) AS \"open!\" FROM notifications.stream_lease \
             WHERE agency_id = $1 AND expires_at > now()",
            agency_id
        )
        .fetch_one(&mut *transaction)
        .await?;
        if usize::try_from(open).unwrap_or(usize::MAX) >= self.cap {
            return Ok(None);
        }
        // The agency's expired rows go while its lock is held.
        sqlx::query!(
            "DELETE FROM notifications.stream_lease WHERE agency_id = $1 AND expires_at <= now()",
            agency_id
        )
        .execute(&mut *transaction)
        .await?;
        sqlx::query!(
            "INSERT INTO notifications.stream_lease (stream_id, agency_id, expires_at) \
             VALUES ($1, $2, now() + make_interval(secs => $3::float8))",
            stream_id,
            agency_id,
            LEASE.as_secs_f64()
        )
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        let (closed, on_close) = oneshot::channel();
        // Not supervised: if the keeper fails, the row expires and the cap
        // errs towards allowing a stream, never towards refusing forever.
        tokio::spawn(keep(self.pool.clone(), stream_id, on_close));
        Ok(Some(StreamLease { _closed: closed }))
    }
}

/// Renews the stream's row until its lease is dropped, then deletes it.
async fn keep(pool: PgPool, stream_id: Uuid, mut closed: oneshot::Receiver<()>) {
    let mut every = tokio::time::interval(RENEW_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = &mut closed => break,
            _ = every.tick() => {
                if let Err(error) = sqlx::query!(
                    "UPDATE notifications.stream_lease \
                     SET expires_at = now() + make_interval(secs => $2::float8) \
                     WHERE stream_id = $1",
                    stream_id,
                    LEASE.as_secs_f64()
                )
                .execute(&pool)
                .await
                {
                    tracing::warn!(%error, "renewing a notification stream's lease failed");
                }
            }
        }
    }
    if let Err(error) = sqlx::query!(
        "DELETE FROM notifications.stream_lease WHERE stream_id = $1",
        stream_id
    )
    .execute(&pool)
    .await
    {
        tracing::warn!(%error, "ending a notification stream's lease failed; it will expire");
    }
}
