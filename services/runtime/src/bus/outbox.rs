//! Writing events: in the writer's transaction, never straight to the
//! broker. Every write wakes the relay of its own process once it has
//! committed: [`Tx::commit`] does it for transactions, the writer of a
//! single autocommit statement calls [`ServiceHandle::wake`]. No write
//! raises a NOTIFY: every NOTIFYing commit takes PostgreSQL's cluster-wide
//! notify lock through its WAL flush, and no other process needs to hear,
//! since any relay publishes any row of its schema and polling covers a
//! writer that died between its commit and its wake-up.

use std::ops::{Deref, DerefMut};
use std::sync::LazyLock;

use cpm_proto::Event;
use cpm_proto::v1::EventEnvelope;
use prost::Message as _;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::relay::RelayWaker;

/// A service's way to its data and its events: its pool and the relay of
/// its own process, woken after every write that carried events.
#[derive(Clone, Debug)]
pub struct ServiceHandle {
    pool: PgPool,
    relay: RelayWaker,
}

impl ServiceHandle {
    pub fn new(pool: PgPool, relay: RelayWaker) -> Self {
        Self { pool, relay }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A transaction whose events are published as soon as it commits.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let started = std::time::Instant::now();
        let transaction = self.pool.begin().await?;
        metrics::histogram!("cpm_db_acquire_seconds").record(started.elapsed().as_secs_f64());
        Ok(Tx {
            transaction,
            relay: self.relay.clone(),
            wrote_events: false,
        })
    }

    /// For a single autocommit statement that wrote outbox rows
    /// ([`OutboxRow::cte`]): call once it has returned.
    pub fn wake(&self) {
        self.relay.wake();
    }
}

/// A transaction of a [`ServiceHandle`]: the only place [`enqueue`] writes
/// to, so no event can be written without its relay being woken. Derefs to
/// the connection, for queries.
pub struct Tx {
    transaction: Transaction<'static, Postgres>,
    relay: RelayWaker,
    wrote_events: bool,
}

impl Tx {
    /// Commits, then wakes the relay when events were written.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.transaction.commit().await?;
        if self.wrote_events {
            self.relay.wake();
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.transaction.rollback().await
    }
}

impl Deref for Tx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.transaction
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.transaction
    }
}

/// Wraps an event in its envelope.
pub fn envelope<E: Event>(producer: &str, event: &E) -> EventEnvelope {
    let now = chrono::Utc::now();
    EventEnvelope {
        event_id: Uuid::now_v7().to_string(),
        event_type: E::TYPE.to_owned(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: now.timestamp_subsec_nanos() as i32,
        }),
        producer: producer.to_owned(),
        correlation_id: event.correlation_id().to_owned(),
        payload: event.encode_to_vec(),
    }
}

/// An event ready for the outbox, built before the statement that writes
/// it. A service whose change is a single statement can then write its rows
/// and the event together ([`OutboxRow::cte`], or the same CTE spelled out
/// against `<schema>.outbox` in a compile-checked query): one round trip,
/// atomic without an explicit transaction.
pub struct OutboxRow {
    pub event_id: Uuid,
    pub event_type: &'static str,
    pub envelope: Vec<u8>,
    pub trace_context: serde_json::Value,
}

impl OutboxRow {
    /// Wraps `event`, carrying the current trace context to its consumers.
    pub fn new<E: Event>(producer: &str, event: &E) -> Self {
        let envelope = envelope(producer, event);
        Self {
            event_id: Uuid::parse_str(&envelope.event_id).expect("a fresh UUIDv7"),
            event_type: E::TYPE,
            envelope: envelope.encode_to_vec(),
            trace_context: serde_json::to_value(crate::telemetry::current_context_headers())
                .unwrap_or_default(),
        }
    }

    /// A data-modifying CTE `name` that writes the row bound at parameters
    /// `$first` to `$first + 3` (event ID, type, envelope, trace context, in
    /// that order) once for each row of `source`, so nothing is written when
    /// `source` is empty. The writer wakes its relay once the statement has
    /// committed ([`ServiceHandle::wake`]).
    pub fn cte(name: &str, source: &str, first: usize) -> String {
        format!(
            "{name} AS (INSERT INTO outbox (event_id, event_type, envelope, trace_context) \
             SELECT ${}, ${}, ${}, ${} FROM {source})",
            first,
            first + 1,
            first + 2,
            first + 3
        )
    }
}

/// Adds `event` to the outbox of the transaction's schema; the relay is
/// woken when `tx` commits. Returns the event ID.
pub async fn enqueue<E: Event>(
    tx: &mut Tx,
    producer: &str,
    event: &E,
) -> Result<Uuid, sqlx::Error> {
    static INSERT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH {} SELECT 1",
            OutboxRow::cte("written", "(SELECT) AS one", 1)
        )
    });
    let row = OutboxRow::new(producer, event);
    // Dynamic: every schema has an outbox; search_path picks the caller's.
    sqlx::query(sqlx::AssertSqlSafe(INSERT.as_str()))
        .bind(row.event_id)
        .bind(row.event_type)
        .bind(&row.envelope)
        .bind(&row.trace_context)
        .execute(&mut **tx)
        .await?;
    tx.wrote_events = true;
    Ok(row.event_id)
}
