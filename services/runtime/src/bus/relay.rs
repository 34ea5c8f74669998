//! The outbox relay: publishes due outbox rows with pipelined publisher
//! confirms and deletes them once the broker has them.
//!
//! Several replicas may run it: each batch locks its rows with
//! `FOR UPDATE SKIP LOCKED`, so a row is published by one relay at a time.
//! No "last id sent" is tracked, since transactions commit out of id order.
//! An idle relay wakes on its [`RelayWaker`], which every outbox write of
//! its own process calls once it has committed (see [`super::outbox`]).
//! Polling is the fallback for a writing process that died between its
//! commit and its wake-up (any relay publishes any row of its schema).
//!
//! A batch is two round trips to PostgreSQL: `BEGIN` and the locking
//! `SELECT` in one simple query, then the `DELETE` and `COMMIT` in another.
//! They run on a connection the relay keeps between batches, so no batch
//! pays for taking one from the pool and for sqlx's test of it on return:
//! five round trips and a spawned task a batch before. A batch that fails,
//! or is dropped half-way, drops its connection, and PostgreSQL rolls its
//! transaction back when the socket closes. (Not a [`crate::db::warm`]
//! connection: one dropped half-way goes back to sqlx, which would keep it
//! in the transaction its raw `BEGIN` opened, since sqlx did not open it.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{join_all, try_join_all};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row as _};
use tokio::sync::Notify;

use super::Bus;
use crate::Shutdown;
use crate::config::OutboxConfig;

/// How often the relay measures its outbox for the metrics endpoint.
const MEASURE_EVERY: Duration = Duration::from_secs(5);
/// How long the relay keeps one connection before it takes a fresh one
/// from the pool, so a connection's server-side state never grows old.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// One batch's result.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub published: usize,
    /// Unroutable or refused by the broker; retried later.
    pub deferred: usize,
}

/// Wakes the relay of the same process, in place of a NOTIFY.
#[derive(Clone, Debug, Default)]
pub struct RelayWaker(Arc<Notify>);

impl RelayWaker {
    /// Call after the write has committed: the relay may look at once. A
    /// wake-up while the relay is busy is kept for its next idle moment.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// The pauses after failed batches: from 100 ms up to 5 s, afresh after a
/// batch that worked.
fn relay_errors() -> crate::retry::Backoff {
    crate::retry::backoff(Duration::from_millis(100), Duration::from_secs(5))
}

#[derive(Clone)]
pub struct Relay {
    pool: PgPool,
    bus: Bus,
    schema: String,
    config: OutboxConfig,
    waker: RelayWaker,
    /// The connection batches run on between batches, and since when.
    kept: Arc<tokio::sync::Mutex<Option<(PgConnection, std::time::Instant)>>>,
}

impl Relay {
    pub fn new(pool: PgPool, bus: Bus, schema: &str, config: &OutboxConfig) -> Self {
        Self {
            pool,
            bus,
            schema: schema.to_owned(),
            config: config.clone(),
            waker: RelayWaker::default(),
            kept: Arc::default(),
        }
    }

    /// The handle that wakes this relay from its own process.
    pub fn waker(&self) -> RelayWaker {
        self.waker.clone()
    }

    /// Publishes until `shutdown`, then flushes what is due once more.
    ///
    /// Idle, the relay sleeps until its waker or the poll. Woken, it lingers
    /// `linger_ms` to gather the commits of a burst, then takes a batch
    /// every `linger_ms` until one comes back empty. A wake-up while it is
    /// busy is kept until it waits again, so no write is left behind.
    pub async fn run(self, shutdown: Shutdown) {
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let linger = Duration::from_millis(self.config.linger_ms);
        // Only while batches fail; a batch that works forgets them.
        let mut error_delays: Option<crate::retry::Backoff> = None;
        let mut busy = false;
        let mut measured: Option<std::time::Instant> = None;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if measured.is_none_or(|at| at.elapsed() >= MEASURE_EVERY) {
                measured = Some(std::time::Instant::now());
                self.measure().await;
            }
            match self.publish_due_batch().await {
                Ok(outcome) => {
                    error_delays = None;
                    if outcome.published + outcome.deferred == self.config.batch_size as usize {
                        continue;
                    }
                    if busy {
                        if outcome.published == 0 {
                            busy = false;
                            continue;
                        }
                        // Still busy: gather the next batch's commits.
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(linger) => {}
                        }
                        continue;
                    }
                }
                Err(error) => {
                    tracing::warn!(schema = %self.schema, %error, "outbox relay failed, retrying");
                    let delay = error_delays.get_or_insert_with(relay_errors).next_pause();
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(poll) => {}
                () = self.waker.0.notified() => busy = true,
            }
            if busy {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(linger) => {}
                }
            }
        }
        // A last flush so events written just before the stop leave now
        // rather than at the next start.
        if let Err(error) =
            tokio::time::timeout(Duration::from_secs(5), self.publish_due_batch()).await
        {
            tracing::warn!(schema = %self.schema, %error, "final outbox flush timed out");
        }
        tracing::debug!(schema = %self.schema, "outbox relay stopped");
    }

    /// Records the outbox's backlog and its oldest row's age, and the
    /// pool's connections, for the metrics endpoint. A failure only skips it.
    async fn measure(&self) {
        let schema = self.schema.clone();
        metrics::gauge!("cpm_db_pool_connections", "schema" => schema.clone(), "state" => "idle")
            .set(self.pool.num_idle() as f64);
        metrics::gauge!("cpm_db_pool_connections", "schema" => schema.clone(), "state" => "in_use")
            .set(f64::from(self.pool.size()) - self.pool.num_idle() as f64);
        // Dynamic: every schema has an outbox; search_path picks this relay's.
        let backlog = sqlx::query_as::<_, (i64, f64)>(
            "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 \
             FROM outbox",
        )
        .fetch_one(&self.pool)
        .await;
        if let Ok((rows, oldest)) = backlog {
            metrics::gauge!("cpm_outbox_backlog", "schema" => schema.clone()).set(rows as f64);
            metrics::gauge!("cpm_outbox_oldest_age_seconds", "schema" => schema).set(oldest);
        }
    }

    /// Publishes one batch of due rows. Rows the broker confirmed are
    /// deleted; unroutable or refused ones wait with back-off.
    pub async fn publish_due_batch(&self) -> anyhow::Result<BatchOutcome> {
        // Held for the batch: clones of one relay take turns.
        let mut kept = self.kept.lock().await;
        let (mut connection, since) = match kept.take() {
            Some((connection, since)) if since.elapsed() < CONNECTION_LIFETIME => {
                (connection, since)
            }
            _ => (
                self.pool.acquire().await?.detach(),
                std::time::Instant::now(),
            ),
        };
        // On error or cancellation the connection is dropped with the batch.
        let outcome = self.publish_on(&mut connection).await?;
        *kept = Some((connection, since));
        Ok(outcome)
    }

    async fn publish_on(&self, connection: &mut PgConnection) -> anyhow::Result<BatchOutcome> {
        // One simple query: the text protocol, hence the literal limit.
        // Dynamic, as below: every schema has an outbox; search_path picks this relay's.
        let rows = sqlx::raw_sql(AssertSqlSafe(format!(
            "BEGIN; SELECT outbox_id, event_id, event_type, envelope, trace_context, created_at \
             FROM outbox WHERE next_attempt_at <= now() ORDER BY outbox_id LIMIT {} \
             FOR UPDATE SKIP LOCKED",
            self.config.batch_size
        )))
        .fetch_all(&mut *connection)
        .await?;
        if rows.is_empty() {
            sqlx::raw_sql("COMMIT").execute(&mut *connection).await?;
            return Ok(BatchOutcome::default());
        }
        let channel = self.bus.publisher().await?;
        let exchange = self.bus.topology().events_exchange();
        let mut messages: Vec<(String, Vec<u8>, BasicProperties)> = rows
            .iter()
            .map(|row| {
                // By position, in the SELECT's order: no column lookup by name.
                let event_id: uuid::Uuid = row.get(1);
                let event_type: String = row.get(2);
                let envelope: Vec<u8> = row.get(3);
                let trace_context: sqlx::types::Json<HashMap<String, String>> =
                    row.try_get(4).unwrap_or_default();
                let mut headers = FieldTable::default();
                for (key, value) in trace_context.0 {
                    headers.insert(key.into(), AMQPValue::LongString(value.into()));
                }
                let properties = BasicProperties::default()
                    .with_message_id(event_id.to_string().into())
                    .with_type(event_type.as_str().into())
                    .with_content_type("application/x-protobuf".into())
                    .with_delivery_mode(2)
                    .with_headers(headers);
                (event_type, envelope, properties)
            })
            .collect();
        // All at once: each publish resolves only when lapin's I/O thread has
        // written it, so publishing one by one would cost a hand-over and a
        // write per event. Together they go out in a few writes, in order.
        let pending = try_join_all(messages.iter_mut().map(
            |(event_type, envelope, properties)| {
                channel.basic_publish(
                    exchange.as_str().into(),
                    event_type.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    envelope,
                    std::mem::take(properties),
                )
            },
        ))
        .await?;
        let confirmations = tokio::time::timeout(
            Duration::from_secs(self.config.confirm_timeout_secs),
            join_all(pending),
        )
        .await
        .map_err(|_| anyhow::anyhow!("publisher confirms timed out"))?;

        let mut sent = Vec::new();
        let mut deferred = Vec::new();
        for (row, confirmation) in rows.iter().zip(confirmations) {
            let outbox_id: i64 = row.get(0);
            match confirmation? {
                Confirmation::Ack(None) => {
                    sent.push(outbox_id);
                    let created_at: chrono::DateTime<chrono::Utc> = row.get(5);
                    let delay = (chrono::Utc::now() - created_at)
                        .to_std()
                        .unwrap_or_default();
                    metrics::histogram!("cpm_outbox_publish_delay_seconds", "schema" => self.schema.clone())
                        .record(delay.as_secs_f64());
                }
                Confirmation::Ack(Some(returned)) => {
                    deferred.push((outbox_id, format!("returned: {}", returned.reply_text)));
                }
                Confirmation::Nack(_) => deferred.push((outbox_id, "nacked by broker".into())),
                Confirmation::NotRequested => {
                    anyhow::bail!("publisher confirms are off on the publishing channel")
                }
            }
        }
        for (outbox_id, error) in &deferred {
            tracing::warn!(schema = %self.schema, outbox_id, %error, "event not delivered, will retry");
            // Dynamic: the outbox of this relay's schema, through search_path.
            sqlx::query(
                "UPDATE outbox SET publish_attempts = publish_attempts + 1, last_error = $2, \
                 next_attempt_at = now() + least(power(2, publish_attempts), 60) * interval '1 second' \
                 WHERE outbox_id = $1",
            )
            .bind(outbox_id)
            .bind(error)
            .execute(&mut *connection)
            .await?;
        }
        sqlx::raw_sql(AssertSqlSafe(finish_batch(&sent)))
            .execute(&mut *connection)
            .await?;
        Ok(BatchOutcome {
            published: sent.len(),
            deferred: deferred.len(),
        })
    }
}

/// The statements ending a batch: the `DELETE` of the rows the broker
/// confirmed, by their IDs written out (integers, so nothing to quote),
/// and the `COMMIT`, sent together.
fn finish_batch(sent: &[i64]) -> String {
    if sent.is_empty() {
        return "COMMIT".to_owned();
    }
    let mut statements = String::from("DELETE FROM outbox WHERE outbox_id IN (");
    for (i, outbox_id) in sent.iter().enumerate() {
        if i > 0 {
            statements.push(',');
        }
        statements.push_str(&outbox_id.to_string());
    }
    statements.push_str("); COMMIT");
    statements
}

#[cfg(test)]
mod tests {
    use super::finish_batch;

    #[test]
    fn a_batch_ends_with_the_delete_of_what_was_confirmed_and_its_commit() {
        assert_eq!(finish_batch(&[]), "COMMIT");
        assert_eq!(
            finish_batch(&[7, -1, 9_000_000_000]),
            "DELETE FROM outbox WHERE outbox_id IN (7,-1,9000000000); COMMIT"
        );
    }
}
