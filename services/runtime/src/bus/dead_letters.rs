//! Dead-lettered events: how many wait, and replaying them once their cause
//! is fixed. A replayed event goes back to the one consumer queue it died
//! in (through the default exchange), not to every subscriber; the
//! consumer's inbox makes a replay of an event it did apply harmless.

use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};

use super::topology::Topology;
use super::{Bus, ConsumerSpec};

/// How long one broker step of a replay may take before the replay fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The properties of a dead letter without the headers the broker added
/// when it died (`x-death`, `x-delivery-count`, ...): a replayed event
/// starts afresh, with its delivery limit counted from zero.
fn fresh_properties(properties: &BasicProperties) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(old) = properties.headers() {
        for (key, value) in old {
            if !key.as_str().starts_with("x-") {
                headers.insert(key.clone(), value.clone());
            }
        }
    }
    properties.clone().with_headers(headers)
}

/// One broker step, failing instead of waiting for ever on a lost connection.
async fn step<T>(
    what: &str,
    future: impl std::future::Future<Output = lapin::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .map_err(|_| anyhow::anyhow!("the broker did not answer {what} within {STEP_TIMEOUT:?}"))?
        .map_err(Into::into)
}

/// A consumer's dead-letter queue and how many events wait in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterCount {
    pub consumer: String,
    pub queue: String,
    pub messages: u32,
}

/// The depth of every consumer's dead-letter queue (declared if missing).
pub async fn count(bus: &Bus, specs: &[ConsumerSpec]) -> anyhow::Result<Vec<DeadLetterCount>> {
    bus.declare_consumer_queues(specs).await?;
    let channel = bus.channel().await?;
    let mut counts = Vec::new();
    for spec in specs {
        let queue = Topology::dead_letter_queue(&bus.topology().queue(spec.service, spec.name));
        let declared = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        counts.push(DeadLetterCount {
            consumer: spec.inbox_name(),
            queue,
            messages: declared.message_count(),
        });
    }
    let _ = channel.close(200, "counted".into()).await;
    Ok(counts)
}

/// Moves up to `limit` events from `spec`'s dead-letter queue back to its
/// queue, each confirmed by the broker before it leaves the dead-letter
/// queue. Returns how many moved; `on_moved` is called after each.
pub async fn replay(
    bus: &Bus,
    spec: &ConsumerSpec,
    limit: usize,
    on_moved: impl FnMut(usize),
) -> anyhow::Result<usize> {
    let queue = bus.topology().queue(spec.service, spec.name);
    let dead_letter_queue = Topology::dead_letter_queue(&queue);
    let channel = bus.channel().await?;
    let moved = move_messages(
        &channel,
        &dead_letter_queue,
        &queue,
        limit,
        fresh_properties,
        on_moved,
    )
    .await?;
    let _ = tokio::time::timeout(STEP_TIMEOUT, channel.close(200, "replayed".into())).await;
    tracing::info!(%queue, moved, "dead-lettered events replayed");
    Ok(moved)
}

/// Moves up to `limit` ready messages from queue `from` to queue `to`
/// (through the default exchange), each confirmed by the broker before it
/// leaves `from`, with its properties as `properties` makes them; returns
/// how many moved. Puts `channel` in confirm mode.
pub(crate) async fn move_messages(
    channel: &lapin::Channel,
    from: &str,
    to: &str,
    limit: usize,
    properties: fn(&BasicProperties) -> BasicProperties,
    mut on_moved: impl FnMut(usize),
) -> anyhow::Result<usize> {
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    let mut moved = 0;
    while moved < limit {
        let Some(message) = step(
            "a get",
            channel.basic_get(from.into(), BasicGetOptions::default()),
        )
        .await?
        else {
            break;
        };
        let delivery = message.delivery;
        let confirm = step(
            "a publish",
            channel.basic_publish(
                "".into(),
                to.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &delivery.data,
                properties(&delivery.properties),
            ),
        )
        .await?;
        let confirmation = step("a publisher confirm", confirm).await?;
        if !matches!(confirmation, Confirmation::Ack(None)) {
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await?;
            anyhow::bail!("the broker did not take the moved event into {to}");
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
        moved += 1;
        on_moved(moved);
    }
    Ok(moved)
}
