//! Moving a consumer queue declared with older arguments onto the current
//! ones, without losing an event.
//!
//! RabbitMQ never changes a queue's arguments: declaring an existing queue
//! with different ones fails (PRECONDITION_FAILED). So a queue from before
//! at-least-once dead-lettering ([`super::topology`]) is replaced:
//!
//! 1. a holding queue `<queue>.upgrading` is declared and bound to the same
//!    events, so from now on every new event reaches it;
//! 2. the old queue is unbound and its ready messages moved to the holding
//!    queue, each confirmed before it leaves; the old queue is deleted only
//!    when empty and without consumers (a consumer of an older process
//!    still holding messages makes the upgrade fail, and it is tried again
//!    later, with nothing lost);
//! 3. the queue is declared afresh with the current arguments and bound,
//!    then the holding queue unbound, emptied into it and deleted.
//!
//! Each step can be interrupted and the upgrade run again: it resumes from
//! whatever the broker holds. An event may reach both queues during the
//! switch; consumers are idempotent (their inbox), so it is applied once.
//! `cpm migrate` (the chart's migration job) runs it, as does every process
//! at start before its consumers do.

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ErrorKind};

use super::dead_letters::move_messages;
use super::{Bus, ConsumerSpec};

/// The holding queue of `queue` during its upgrade.
pub fn holding_queue(queue: &str) -> String {
    format!("{queue}.upgrading")
}

/// The broker's soft error of `error`, if it is one.
fn soft_error(error: &lapin::Error) -> Option<AMQPSoftError> {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(soft) => Some(soft.clone()),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    }
}

/// Whether `queue` exists (on a channel of its own: a failed passive
/// declare closes its channel).
async fn exists(bus: &Bus, queue: &str) -> anyhow::Result<bool> {
    let channel = bus.channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(_) => {
            let _ = channel.close(200, "checked".into()).await;
            Ok(true)
        }
        Err(error) if soft_error(&error) == Some(AMQPSoftError::NOTFOUND) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Whether `queue` exists with arguments other than the current ones
/// (declaring it otherwise creates it, or confirms it, as it should be).
async fn has_old_arguments(bus: &Bus, queue: &str) -> anyhow::Result<bool> {
    let channel = bus.channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let arguments = bus.topology().consumer_queue_arguments(queue);
    match channel
        .queue_declare(queue.into(), durable, arguments)
        .await
    {
        Ok(_) => {
            let _ = channel.close(200, "checked".into()).await;
            Ok(false)
        }
        Err(error) if soft_error(&error) == Some(AMQPSoftError::PRECONDITIONFAILED) => Ok(true),
        Err(error) => Err(error.into()),
    }
}

async fn unbind(bus: &Bus, channel: &Channel, queue: &str, keys: &[&str]) -> lapin::Result<()> {
    for key in keys {
        channel
            .queue_unbind(
                queue.into(),
                bus.topology().events_exchange().into(),
                ShortString::from(*key),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

async fn delete_if_empty(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    // Quorum queues refuse `if-empty`: an empty queue without consumers
    // holds nothing, not even an unacknowledged message, so it is checked
    // first, then deleted.
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let state = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await?;
    anyhow::ensure!(
        state.message_count() == 0 && state.consumer_count() == 0,
        "{queue} still holds {} message(s) and has {} consumer(s) (a process of an older \
         release?); the upgrade resumes on the next start",
        state.message_count(),
        state.consumer_count()
    );
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    Ok(())
}

/// Upgrades every queue of `specs` that needs it; returns how many did.
pub async fn upgrade_consumer_queues(bus: &Bus, specs: &[ConsumerSpec]) -> anyhow::Result<usize> {
    let mut upgraded = 0;
    for spec in specs {
        let queue = bus.topology().queue(spec.service, spec.name);
        if upgrade(bus, &queue, &spec.routing_keys).await? {
            upgraded += 1;
        }
    }
    Ok(upgraded)
}

/// Upgrades one queue if it needs it (or finishes an interrupted upgrade);
/// returns whether it did anything.
pub async fn upgrade(bus: &Bus, queue: &str, routing_keys: &[&str]) -> anyhow::Result<bool> {
    let holding = holding_queue(queue);
    let old = has_old_arguments(bus, queue).await?;
    if !old && !exists(bus, &holding).await? {
        return Ok(false);
    }
    let topology = bus.topology();
    let channel = bus.channel().await?;
    topology.declare_exchanges(&channel).await?;
    if old {
        tracing::warn!(%queue, "moving a queue onto at-least-once dead-lettering");
        let mut quorum = FieldTable::default();
        quorum.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("quorum".into()),
        );
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(holding.as_str().into(), durable, quorum)
            .await?;
        topology.bind(&channel, &holding, routing_keys).await?;
        unbind(bus, &channel, queue, routing_keys).await?;
        let moved = move_messages(&channel, queue, &holding, usize::MAX, keep, |_| {}).await?;
        delete_if_empty(&channel, queue).await?;
        tracing::info!(%queue, moved, "old queue emptied into its holding queue");
    }
    topology
        .declare_consumer_queue(&channel, queue, routing_keys)
        .await?;
    unbind(bus, &channel, &holding, routing_keys).await?;
    let moved = move_messages(&channel, &holding, queue, usize::MAX, keep, |_| {}).await?;
    delete_if_empty(&channel, &holding).await?;
    let _ = channel.close(200, "upgraded".into()).await;
    tracing::info!(%queue, moved, "queue upgraded");
    Ok(true)
}

/// Messages keep their properties when they move between an old and a new queue.
fn keep(properties: &BasicProperties) -> BasicProperties {
    properties.clone()
}
