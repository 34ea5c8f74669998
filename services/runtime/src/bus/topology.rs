//! Exchange and queue names, and their declarations.
//!
//! - `<ns>.events`: the topic exchange every event is published to; the
//!   routing key is the event type.
//! - `<ns>.<service>.<consumer>`: one quorum queue per consumer, bound to
//!   the event types it handles, with an explicit delivery limit (RabbitMQ
//!   3.10 sets none by default).
//! - `<ns>.agency-feed`: the topic exchange notifications publishes each
//!   agency's notifications to (routing key `agency.<agency>.<kind>`), for
//!   agencies whose systems read queues.
//! - `<ns>.dead-letter` and `<queue>.dlq`: where a message goes once it has
//!   failed `delivery_limit` times or is refused as poison. Dead-lettering
//!   is at-least-once (`x-dead-letter-strategy`, with `x-overflow:
//!   reject-publish` as RabbitMQ requires): the broker keeps a dead letter
//!   in its queue until the dead-letter queue has confirmed it, so a dead
//!   letter survives a broker restart or a full dead-letter queue. Queues
//!   declared before that are moved onto these arguments by
//!   [`super::queue_upgrade`].

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

#[derive(Clone, Debug)]
pub struct Topology {
    namespace: String,
    delivery_limit: u32,
}

impl Topology {
    pub fn new(namespace: &str, delivery_limit: u32) -> Self {
        Self {
            namespace: namespace.to_owned(),
            delivery_limit,
        }
    }

    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    pub fn agency_feed_exchange(&self) -> String {
        format!("{}.agency-feed", self.namespace)
    }

    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead-letter", self.namespace)
    }

    pub fn queue(&self, service: &str, consumer: &str) -> String {
        format!("{}.{service}.{consumer}", self.namespace)
    }

    pub fn dead_letter_queue(queue: &str) -> String {
        format!("{queue}.dlq")
    }

    pub async fn declare_exchanges(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.events_exchange().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.agency_feed_exchange().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_letter_exchange().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await
    }

    /// Declares a consumer's quorum queue, its dead-letter queue and the bindings.
    pub async fn declare_consumer_queue(
        &self,
        channel: &Channel,
        queue: &str,
        routing_keys: &[&str],
    ) -> lapin::Result<()> {
        self.declare_exchanges(channel).await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let dead_letter_queue = Self::dead_letter_queue(queue);
        let mut quorum = FieldTable::default();
        quorum.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        channel
            .queue_declare(dead_letter_queue.as_str().into(), durable, quorum.clone())
            .await?;
        channel
            .queue_bind(
                dead_letter_queue.as_str().into(),
                self.dead_letter_exchange().into(),
                queue.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        channel
            .queue_declare(queue.into(), durable, self.consumer_queue_arguments(queue))
            .await?;
        self.bind(channel, queue, routing_keys).await
    }

    /// The arguments of a consumer's queue: quorum, the delivery limit, and
    /// at-least-once dead-lettering to its dead-letter queue.
    pub fn consumer_queue_arguments(&self, queue: &str) -> FieldTable {
        let mut arguments = FieldTable::default();
        let mut set = |key: &str, value: AMQPValue| {
            arguments.insert(key.into(), value);
        };
        set("x-queue-type", AMQPValue::LongString("quorum".into()));
        set(
            "x-delivery-limit",
            AMQPValue::LongInt(self.delivery_limit as i32),
        );
        set(
            "x-dead-letter-exchange",
            AMQPValue::LongString(self.dead_letter_exchange().into()),
        );
        set(
            "x-dead-letter-routing-key",
            AMQPValue::LongString(queue.into()),
        );
        set(
            "x-dead-letter-strategy",
            AMQPValue::LongString("at-least-once".into()),
        );
        set("x-overflow", AMQPValue::LongString("reject-publish".into()));
        arguments
    }

    /// Binds `queue` to the events exchange for each routing key.
    pub async fn bind(
        &self,
        channel: &Channel,
        queue: &str,
        routing_keys: &[&str],
    ) -> lapin::Result<()> {
        for routing_key in routing_keys {
            channel
                .queue_bind(
                    queue.into(),
                    self.events_exchange().into(),
                    ShortString::from(*routing_key),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_queues_dead_letter_at_least_once() {
        let arguments = Topology::new("cpm", 5).consumer_queue_arguments("cpm.a.b");
        let value = |key: &str| arguments.inner().get(key).cloned();
        assert_eq!(
            value("x-dead-letter-strategy"),
            Some(AMQPValue::LongString("at-least-once".into()))
        );
        assert_eq!(
            value("x-overflow"),
            Some(AMQPValue::LongString("reject-publish".into()))
        );
        assert_eq!(value("x-delivery-limit"), Some(AMQPValue::LongInt(5)));
        assert_eq!(
            value("x-dead-letter-routing-key"),
            Some(AMQPValue::LongString("cpm.a.b".into()))
        );
    }

    #[test]
    fn names_are_namespaced() {
        let topology = Topology::new("cpm", 5);
        assert_eq!(topology.events_exchange(), "cpm.events");
        assert_eq!(
            topology.queue("risk-assessment", "referrals"),
            "cpm.risk-assessment.referrals"
        );
        assert_eq!(
            Topology::dead_letter_queue("cpm.risk-assessment.referrals"),
            "cpm.risk-assessment.referrals.dlq"
        );
    }
}
