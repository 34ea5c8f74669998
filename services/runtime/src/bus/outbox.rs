//! Writing events: in the caller's transaction, never straight to the broker.

use std::sync::LazyLock;

use cpm_proto::Event;
use cpm_proto::v1::EventEnvelope;
use prost::Message as _;
use sqlx::PgConnection;
use uuid::Uuid;

/// The NOTIFY channel that wakes the relay of the schema `schema`.
pub fn notify_channel(schema: &str) -> String {
    format!("cpm_outbox_{schema}").replace('-', "_")
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
    /// `source` is empty. `wake` says how the schema's relay learns of it.
    pub fn cte(name: &str, source: &str, first: usize, wake: Wake) -> String {
        let returning = match wake {
            Wake::OnCommit => {
                " RETURNING pg_notify('cpm_outbox_' || replace(current_schema(), '-', '_'), '')"
            }
            Wake::ByCaller => "",
        };
        format!(
            "{name} AS (INSERT INTO outbox (event_id, event_type, envelope, trace_context) \
             SELECT ${}, ${}, ${}, ${} FROM {source}{returning})",
            first,
            first + 1,
            first + 2,
            first + 3
        )
    }
}

/// How the relay learns of a new outbox row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// NOTIFY, delivered when the transaction commits, so the relay never
    /// wakes for a row it cannot see yet. For writes inside a transaction
    /// the caller commits later. Every NOTIFYing commit takes PostgreSQL's
    /// cluster-wide notify lock and holds it through its WAL flush, so such
    /// commits happen one at a time.
    OnCommit,
    /// No NOTIFY: once the write has committed, the writer calls
    /// [`super::relay::RelayWaker::wake`] on the relay of its own process
    /// (SubmitReferral after its autocommit statement; the consumer
    /// framework after each applied event, see `Consumer::waking`). For
    /// hot paths, whose commits then group-commit freely.
    ByCaller,
}

/// Adds `event` to the outbox of the connection's schema, inside the
/// caller's transaction; `wake` says how the relay learns of it once that
/// transaction commits. Returns the event ID.
pub async fn enqueue<E: Event>(
    connection: &mut PgConnection,
    producer: &str,
    event: &E,
    wake: Wake,
) -> Result<Uuid, sqlx::Error> {
    static NOTIFYING: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH {} SELECT 1",
            OutboxRow::cte("written", "(SELECT) AS one", 1, Wake::OnCommit)
        )
    });
    static QUIET: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH {} SELECT 1",
            OutboxRow::cte("written", "(SELECT) AS one", 1, Wake::ByCaller)
        )
    });
    let sql = match wake {
        Wake::OnCommit => NOTIFYING.as_str(),
        Wake::ByCaller => QUIET.as_str(),
    };
    let row = OutboxRow::new(producer, event);
    // Dynamic: every schema has an outbox; search_path picks the caller's.
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(row.event_id)
        .bind(row.event_type)
        .bind(&row.envelope)
        .bind(&row.trace_context)
        .execute(&mut *connection)
        .await?;
    Ok(row.event_id)
}
