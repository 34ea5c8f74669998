//! Writing events: in the caller's transaction, never straight to the broker.

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

/// Adds `event` to the outbox of the connection's schema, inside the
/// caller's transaction, and wakes the relay once that transaction commits.
/// Returns the event ID.
pub async fn enqueue<E: Event>(
    connection: &mut PgConnection,
    producer: &str,
    event: &E,
) -> Result<Uuid, sqlx::Error> {
    let envelope = envelope(producer, event);
    let event_id = Uuid::parse_str(&envelope.event_id).expect("a fresh UUIDv7");
    let trace_context =
        serde_json::to_value(crate::telemetry::current_context_headers()).unwrap_or_default();
    // One round trip for the row and the wake-up. NOTIFY is delivered on
    // commit, so the relay never wakes for a row it cannot see yet.
    sqlx::query(
        "WITH written AS ( \
             INSERT INTO outbox (event_id, event_type, envelope, trace_context) \
             VALUES ($1, $2, $3, $4) RETURNING 1 \
         ) \
         SELECT pg_notify('cpm_outbox_' || replace(current_schema(), '-', '_'), '') FROM written",
    )
    .bind(event_id)
    .bind(E::TYPE)
    .bind(envelope.encode_to_vec())
    .bind(trace_context)
    .execute(&mut *connection)
    .await?;
    Ok(event_id)
}
