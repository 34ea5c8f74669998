//! Keeping the inbox small. A consumer's inbox row only has to outlive the
//! redeliveries of its event, which come within minutes; rows older than
//! `inbox.retention_days` are deleted, in small batches so no prune holds
//! long locks or a long transaction.

use std::time::Duration;

use sqlx::PgPool;

use crate::Shutdown;
use crate::config::InboxConfig;

/// Rows deleted per statement.
const BATCH: i64 = 5_000;

/// Deletes inbox rows processed more than `retention` ago; returns how many.
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let seconds = retention.as_secs_f64();
    let mut deleted = 0;
    loop {
        // Dynamic: every schema has an inbox; search_path picks the service's.
        let batch = sqlx::query(
            "DELETE FROM inbox WHERE ctid IN (SELECT ctid FROM inbox \
             WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2)",
        )
        .bind(seconds)
        .bind(BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        deleted += batch;
        if batch < BATCH as u64 {
            return Ok(deleted);
        }
    }
}

/// Prunes every `config.prune_interval_secs` until shutdown; a failed prune
/// is logged and tried again at the next interval.
pub async fn run_pruner(pool: PgPool, config: InboxConfig, shutdown: Shutdown) {
    let retention = Duration::from_secs(u64::from(config.retention_days) * 24 * 60 * 60);
    let interval = Duration::from_secs(config.prune_interval_secs);
    crate::periodic::run_every(interval, shutdown, || async {
        match prune(&pool, retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "inbox pruned"),
            Err(error) => tracing::warn!(%error, "inbox prune failed; trying again later"),
        }
    })
    .await;
}
