//! Exchange and queue names, and their declarations.
//!
//! - `<ns>.events`: the topic exchange every event is published to; the
//!   routing key is the event type.
//! - `<ns>.<service>.<consumer>`: one quorum queue per consumer, bound to
//!   the event types it handles, with an explicit delivery limit (RabbitMQ
//!   3.10 sets none by default).
//! - `<ns>.dead-letter` and `<queue>.dlq`: where a message goes once it has
//!   failed `delivery_limit` times or is refused as poison.

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

        let mut arguments = quorum;
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(self.delivery_limit as i32),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_letter_exchange().into()),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(queue.into()),
        );
        channel
            .queue_declare(queue.into(), durable, arguments)
            .await?;
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
