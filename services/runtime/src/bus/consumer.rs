//! Idempotent consumers.
//!
//! Each delivery is applied in one database transaction that also records
//! its event ID in the inbox; a redelivered event finds its ID there and is
//! acknowledged without a second effect. When the database cannot be
//! reached the consumer holds the delivery, neither acknowledged nor
//! returned, waits until the database answers and applies it then: an
//! outage spends none of a message's deliveries, so nothing live reaches a
//! dead-letter queue however long it lasts. Any other transient failure
//! requeues the message; RabbitMQ dead-letters it once the queue's delivery
//! limit is reached. A permanent failure (an undecodable message) is
//! dead-lettered at once, so poison never blocks the queue. The consumer
//! reconnects by itself when the broker goes away.
//!
//! Deliveries that are already in hand when the consumer turns to the next
//! one are applied together, in one transaction ([`batch`]): under load a
//! consumer pays one commit for many events, and when idle it still takes
//! them one at a time.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cpm_proto::Event;
use cpm_proto::v1::EventEnvelope;
use futures::StreamExt as _;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use prost::Message as _;

use tracing::Instrument as _;
use uuid::Uuid;

mod batch;

use super::Bus;
use super::outbox::{ServiceHandle, Tx};
use crate::Shutdown;

/// What a consumer listens to.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    /// The owning service, e.g. `risk-assessment`.
    pub service: &'static str,
    /// The consumer's name within the service, e.g. `referrals`.
    pub name: &'static str,
    /// The event types it handles.
    pub routing_keys: Vec<&'static str>,
}

impl ConsumerSpec {
    /// The name recorded in the inbox: stable across namespaces.
    pub fn inbox_name(&self) -> String {
        format!("{}.{}", self.service, self.name)
    }
}

/// Why a handler failed, which decides the message's fate.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Retrying cannot help: the message goes to the dead-letter queue now.
    #[error("permanent: {0}")]
    Permanent(String),
    /// May work later: the message is requeued until the delivery limit.
    #[error("transient: {0}")]
    Transient(String),
    /// The database cannot be reached: the message is held until it can.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// PostgreSQL gave this transaction up for another's (a deadlock, a
    /// serialization failure, a lock not to be had): the same work in a
    /// fresh transaction succeeds, so it is tried again at once rather than
    /// spending a delivery.
    #[error("conflict with another transaction: {0}")]
    Conflict(String),
}

impl HandlerError {
    /// An event type the handler was not written for: a binding and a
    /// handler disagree, and retrying cannot fix that.
    pub fn unexpected(handler: &str, event_type: &str) -> Self {
        HandlerError::Permanent(format!("{handler} does not handle {event_type}"))
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&error) {
            HandlerError::Unavailable(error.to_string())
        } else if crate::db::is_conflict(&error) {
            HandlerError::Conflict(error.to_string())
        } else {
            HandlerError::Transient(error.to_string())
        }
    }
}

/// How many times an event that lost to another transaction is applied
/// again at once before its delivery is requeued like any other failure.
const CONFLICT_RETRIES: u32 = 3;

/// How long an acknowledgement may take to reach the broker.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// An acknowledgement, negative or not, that gives up after [`ANSWER_TIMEOUT`].
async fn answered<T>(answer: impl Future<Output = Result<T, lapin::Error>>) -> anyhow::Result<()> {
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(result) => result.map(|_| ()).map_err(Into::into),
        Err(_) => anyhow::bail!("the broker took no answer within {ANSWER_TIMEOUT:?}"),
    }
}

/// A referral ID carried by an event; a malformed one is a permanent failure.
pub fn referral_id(value: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(value)
        .map_err(|_| HandlerError::Permanent(format!("bad referral id `{value}`")))
}

/// A delivered event, decoded from its envelope.
#[derive(Debug)]
pub struct ReceivedEvent {
    pub envelope: EventEnvelope,
    pub event_id: Uuid,
    /// 0 on first delivery.
    pub delivery_count: u32,
}

impl ReceivedEvent {
    pub fn event_type(&self) -> &str {
        &self.envelope.event_type
    }

    /// The payload as `E`; a mismatched type or bad bytes are permanent failures.
    pub fn decode<E: Event>(&self) -> Result<E, HandlerError> {
        if self.envelope.event_type != E::TYPE {
            return Err(HandlerError::Permanent(format!(
                "expected {} but got {}",
                E::TYPE,
                self.envelope.event_type
            )));
        }
        E::decode(self.envelope.payload.as_slice())
            .map_err(|error| HandlerError::Permanent(format!("undecodable {}: {error}", E::TYPE)))
    }
}

/// A service's reaction to events. Runs inside the transaction that records
/// the event in the inbox; whatever it writes (outbox rows included) commits
/// or rolls back with it, and events it wrote are published as soon as it
/// commits.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(
        &self,
        tx: &mut Tx,
        event: &ReceivedEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Runs one consumer until shutdown. Clones share the handler; the
/// supervisor starts a clone afresh after a failure.
pub struct Consumer<H> {
    /// The service's pool and relay: each event is applied in a
    /// transaction of it.
    handle: ServiceHandle,
    bus: Bus,
    spec: ConsumerSpec,
    handler: Arc<H>,
}

impl<H> Clone for Consumer<H> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
            bus: self.bus.clone(),
            spec: self.spec.clone(),
            handler: self.handler.clone(),
        }
    }
}

/// What became of one delivery.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Applied,
    Duplicate,
    Requeue,
    DeadLetter,
}

fn header_map(delivery: &Delivery) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if let Some(headers) = delivery.properties.headers() {
        for (key, value) in headers {
            if let AMQPValue::LongString(value) = value {
                map.insert(key.to_string(), value.to_string());
            }
        }
    }
    map
}

fn delivery_count(delivery: &Delivery) -> u32 {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-delivery-count"))
        .and_then(|value| match value {
            AMQPValue::LongLongInt(n) => Some(*n as u32),
            AMQPValue::LongInt(n) => Some(*n as u32),
            AMQPValue::LongUInt(n) => Some(*n),
            AMQPValue::ShortInt(n) => Some(*n as u32),
            _ => None,
        })
        .unwrap_or(0)
}

/// The event a delivery carries, its ID and referral recorded on the
/// current span; `None` (logged) when it cannot be read, which is a
/// permanent failure.
fn received(delivery: &Delivery) -> Option<ReceivedEvent> {
    let envelope = match EventEnvelope::decode(delivery.data.as_slice()) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::error!(%error, "undecodable envelope, dead-lettering");
            return None;
        }
    };
    let Ok(event_id) = Uuid::parse_str(&envelope.event_id) else {
        tracing::error!("envelope without a valid event_id, dead-lettering");
        return None;
    };
    let span = tracing::Span::current();
    span.record("event_id", tracing::field::display(event_id));
    span.record("referral_id", envelope.correlation_id.as_str());
    Some(ReceivedEvent {
        envelope,
        event_id,
        delivery_count: delivery_count(delivery),
    })
}

/// What a failed event's delivery becomes, logged; `None` when the database
/// is away, so the event is to be held until it answers.
fn failed(failure: HandlerError, event: &ReceivedEvent) -> Option<Outcome> {
    match failure {
        HandlerError::Permanent(error) => {
            tracing::error!(%error, "event refused, dead-lettering");
            Some(Outcome::DeadLetter)
        }
        HandlerError::Transient(error) | HandlerError::Conflict(error) => {
            tracing::warn!(%error, delivery_count = event.delivery_count, "event failed, requeueing");
            Some(Outcome::Requeue)
        }
        HandlerError::Unavailable(error) => {
            tracing::warn!(%error, "database unavailable: holding the event until it answers");
            None
        }
    }
}

/// Records `events` in the inbox of `consumer`, in the transaction that
/// applies them; returns the IDs recorded now. An ID not returned was
/// applied before (or is a second copy among `events`): a duplicate.
async fn record_in_inbox<'a>(
    transaction: &mut Tx,
    consumer: &str,
    events: impl IntoIterator<Item = &'a ReceivedEvent>,
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let (ids, types): (Vec<Uuid>, Vec<&str>) = events
        .into_iter()
        .map(|event| (event.event_id, event.event_type()))
        .unzip();
    // Dynamic: every schema has an inbox; search_path picks the consumer's.
    let recorded = sqlx::query_scalar(
        "INSERT INTO inbox (consumer, event_id, event_type) \
         SELECT $1, event_id, event_type FROM UNNEST($2::uuid[], $3::text[]) \
         AS event (event_id, event_type) ON CONFLICT DO NOTHING RETURNING event_id",
    )
    .bind(consumer)
    .bind(&ids)
    .bind(&types)
    .fetch_all(&mut **transaction)
    .await?;
    Ok(recorded.into_iter().collect())
}

impl<H: EventHandler> Consumer<H> {
    pub fn new(handle: ServiceHandle, bus: Bus, spec: ConsumerSpec, handler: Arc<H>) -> Self {
        Self {
            handle,
            bus,
            spec,
            handler,
        }
    }

    /// Consumes until `shutdown`, reconnecting whenever the channel is lost.
    /// A delivery being handled when shutdown comes is finished first.
    pub async fn run(self, shutdown: Shutdown) {
        let queue = self.bus.topology().queue(self.spec.service, self.spec.name);
        let mut delays = crate::retry::reconnect();
        while !shutdown.is_cancelled() {
            let delay = delays.next_pause();
            match self.consume(&queue, &shutdown).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%queue, %error, retry_in_ms = delay.as_millis() as u64, "consumer lost its channel, reconnecting");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        tracing::debug!(%queue, "consumer stopped");
    }

    async fn consume(&self, queue: &str, shutdown: &Shutdown) -> anyhow::Result<()> {
        let channel = self.bus.channel().await?;
        self.bus
            .topology()
            .declare_consumer_queue(&channel, queue, &self.spec.routing_keys)
            .await?;
        channel
            .basic_qos(self.bus.config().prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                format!("{queue}-{}", Uuid::new_v4()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(%queue, "consuming");
        loop {
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    // Unacknowledged prefetched deliveries return to the queue.
                    // A channel the broker already dropped may never answer.
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        channel.close(200, "shutdown".into()),
                    )
                    .await;
                    return Ok(());
                }
                next = consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => return Err(error.into()),
                None => anyhow::bail!("consumer stream ended"),
            };
            let (mut deliveries, ended) = batch::gather(delivery, &mut consumer);
            if deliveries.len() == 1 {
                let delivery = deliveries.pop().expect("one delivery");
                let span = self.span(&delivery);
                self.process(delivery, span, shutdown).await?;
            } else {
                self.process_batch(deliveries, shutdown).await?;
            }
            if let Some(error) = ended {
                return Err(error);
            }
        }
    }

    /// The span of one delivery, a child of the trace its headers carry.
    fn span(&self, delivery: &Delivery) -> tracing::Span {
        let span = tracing::info_span!(
            "consume",
            queue = %self.spec.inbox_name(),
            event_type = %delivery.routing_key,
            event_id = tracing::field::Empty,
            referral_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        crate::telemetry::set_parent_from(&span, &header_map(delivery));
        crate::telemetry::record_trace_id(&span);
        span
    }

    /// Applies one delivery and settles it with the broker, all inside the
    /// delivery's span. The span is attached with `instrument`, never held
    /// entered across an await: an entered guard stays on the stack of
    /// whichever worker thread the task was polled on, and tracing's
    /// registry then hands that span to unrelated tasks as their parent,
    /// until it closes under them and they panic (issue 9).
    async fn process(
        &self,
        delivery: Delivery,
        span: tracing::Span,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        async {
            match self.apply(&delivery, shutdown).await {
                Some(outcome) => self.settle(&delivery, outcome).await,
                // Shutting down while the database is away: the delivery
                // returns to the queue when the channel closes.
                None => Ok(()),
            }
        }
        .instrument(span)
        .await
    }

    /// Acknowledges, requeues (after a pause that grows with the delivery
    /// count) or dead-letters a delivery according to its outcome. Each
    /// answer to the broker is bounded: one sent as the connection dies may
    /// never complete, and the consumer must then reconnect rather than
    /// wait for ever (the delivery comes again; the inbox absorbs it).
    async fn settle(&self, delivery: &Delivery, outcome: Outcome) -> anyhow::Result<()> {
        self.count(delivery, &outcome);
        match outcome {
            Outcome::Applied | Outcome::Duplicate => {
                answered(delivery.acker.ack(BasicAckOptions::default())).await?;
            }
            Outcome::Requeue => {
                // The pause grows with the delivery count, so a failing
                // event does not spin while its cause lasts.
                let count = delivery_count(delivery) as usize;
                let pause =
                    crate::retry::backoff(Duration::from_millis(200), Duration::from_secs(2))
                        .pause_after(count);
                tokio::time::sleep(pause).await;
                answered(delivery.acker.nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                }))
                .await?;
            }
            Outcome::DeadLetter => {
                answered(delivery.acker.reject(BasicRejectOptions { requeue: false })).await?;
            }
        }
        Ok(())
    }

    /// Counts a settled delivery by outcome, and its redeliveries.
    fn count(&self, delivery: &Delivery, outcome: &Outcome) {
        let queue = self.spec.inbox_name();
        if delivery.redelivered {
            metrics::counter!("cpm_consumer_redeliveries_total", "queue" => queue.clone())
                .increment(1);
        }
        let counted = match outcome {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Requeue => "requeued",
            Outcome::DeadLetter => "dead_lettered",
        };
        metrics::counter!("cpm_consumer_deliveries_total", "queue" => queue, "outcome" => counted)
            .increment(1);
    }

    /// The outcome of a delivery; `None` when shutdown came while it was
    /// held for the database.
    async fn apply(&self, delivery: &Delivery, shutdown: &Shutdown) -> Option<Outcome> {
        let Some(event) = received(delivery) else {
            return Some(Outcome::DeadLetter);
        };
        let mut conflicts = 0;
        loop {
            let failure = match self.apply_once(&event).await {
                Ok(true) => return Some(Outcome::Applied),
                Ok(false) => {
                    tracing::debug!("duplicate delivery ignored");
                    return Some(Outcome::Duplicate);
                }
                Err(failure) => failure,
            };
            if let HandlerError::Conflict(error) = &failure
                && conflicts < CONFLICT_RETRIES
            {
                conflicts += 1;
                tracing::debug!(%error, conflicts, "conflict with another transaction: trying again");
                tokio::time::sleep(Duration::from_millis(10 * conflicts as u64)).await;
                continue;
            }
            if let Some(outcome) = failed(failure, &event) {
                return Some(outcome);
            }
            let pool = self.handle.pool();
            let answered = crate::retry::until_ok("postgres", shutdown, || {
                sqlx::query("SELECT 1").execute(pool)
            })
            .await;
            if answered.is_err() {
                return None;
            }
        }
    }

    /// True when applied now, false when the inbox shows it was applied before.
    async fn apply_once(&self, event: &ReceivedEvent) -> Result<bool, HandlerError> {
        let mut transaction = self.handle.begin().await?;
        let fresh = record_in_inbox(&mut transaction, &self.spec.inbox_name(), [event]).await?;
        if fresh.is_empty() {
            return Ok(false);
        }
        self.handler.handle(&mut transaction, event).await?;
        transaction.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpm_proto::v1::{ClientErased, ReferralSubmitted};
    use proptest::prelude::*;

    fn received(event_type: String, payload: Vec<u8>) -> ReceivedEvent {
        ReceivedEvent {
            envelope: EventEnvelope {
                event_type,
                payload,
                ..EventEnvelope::default()
            },
            event_id: Uuid::now_v7(),
            delivery_count: 0,
        }
    }

    proptest! {
        /// Whatever bytes arrive: decoding never panics, an envelope that
        /// decodes either yields the named type or a permanent failure (so
        /// it is dead-lettered, never retried), and a payload of another
        /// type is refused.
        #[test]
        fn any_bytes_decode_or_fail_permanently(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            event_type in prop_oneof![
                Just(ReferralSubmitted::TYPE.to_owned()),
                Just(ClientErased::TYPE.to_owned()),
                any::<String>(),
            ],
        ) {
            let _ = EventEnvelope::decode(bytes.as_slice());
            let event = received(event_type.clone(), bytes);
            match event.decode::<ReferralSubmitted>() {
                Ok(_) => prop_assert_eq!(event_type, ReferralSubmitted::TYPE),
                Err(HandlerError::Permanent(_)) => {}
                Err(other) => prop_assert!(false, "not permanent: {other}"),
            }
        }
    }
}
