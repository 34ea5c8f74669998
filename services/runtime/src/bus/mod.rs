//! The event bus on RabbitMQ.
//!
//! Nothing is lost between a change and its event: a service writes the
//! event to its outbox in the same transaction as the change ([`outbox`]),
//! and the [`relay`] publishes it with publisher confirms. Consumers apply
//! each event once ([`consumer`]), recording its ID in the inbox in the same
//! transaction as the effect; a message that keeps failing is dead-lettered
//! after a bounded number of deliveries ([`topology`]).
//!
//! [`Bus`] owns the connection and re-opens it whenever it is lost.

pub mod consumer;
pub mod dead_letters;
pub mod inbox;
pub mod outbox;
pub mod queue_upgrade;
pub mod relay;
pub mod router;
pub mod topology;

use std::sync::Arc;
use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use crate::config::AmqpConfig;
pub use consumer::{ConsumerSpec, EventHandler, HandlerError, ReceivedEvent, referral_id};
pub use outbox::{ServiceHandle, Tx};
pub use router::{Forget, On, Router};
pub use topology::Topology;

/// A service's connection to RabbitMQ, re-established on demand.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<BusInner>,
}

struct BusInner {
    config: AmqpConfig,
    topology: Topology,
    /// Held while (re)connecting, so one task connects and the others wait.
    connection: Mutex<Option<Arc<Connection>>>,
    /// The live connection as last seen, read without waiting for a
    /// connect in progress: health must answer while the broker hangs.
    current: std::sync::Mutex<Option<Arc<Connection>>>,
    publisher: Mutex<Option<Channel>>,
}

impl Bus {
    pub fn new(config: &AmqpConfig) -> Self {
        Self {
            inner: Arc::new(BusInner {
                topology: Topology::new(&config.namespace, config.delivery_limit),
                config: config.clone(),
                connection: Mutex::new(None),
                current: std::sync::Mutex::new(None),
                publisher: Mutex::new(None),
            }),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    pub fn config(&self) -> &AmqpConfig {
        &self.inner.config
    }

    /// True while the connection is open. Never waits, even while another
    /// task is connecting.
    pub async fn is_connected(&self) -> bool {
        self.inner
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|connection| connection.status().connected())
    }

    async fn connection(&self) -> lapin::Result<Arc<Connection>> {
        let mut slot = self.inner.connection.lock().await;
        if let Some(connection) = slot.as_ref()
            && connection.status().connected()
        {
            return Ok(connection.clone());
        }
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("cpm-{}", std::process::id()).into());
        let config = &self.inner.config;
        let url = with_heartbeat(config.url.expose(), config.heartbeat_secs);
        let connection = tokio::time::timeout(
            Duration::from_secs(config.connect_timeout_secs),
            Connection::connect(&url, properties),
        )
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "rabbitmq did not answer within {} s (amqp.connect_timeout_secs)",
                    config.connect_timeout_secs
                ),
            )
        })??;
        let connection = Arc::new(connection);
        tracing::info!("connected to rabbitmq");
        *slot = Some(connection.clone());
        *self
            .inner
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(connection.clone());
        Ok(connection)
    }

    /// A new channel on a live connection.
    pub async fn channel(&self) -> lapin::Result<Channel> {
        self.connection().await?.create_channel().await
    }

    /// The shared publishing channel, in confirm mode, with the exchanges declared.
    pub async fn publisher(&self) -> lapin::Result<Channel> {
        let mut slot = self.inner.publisher.lock().await;
        if let Some(channel) = slot.as_ref()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let channel = self.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        self.inner.topology.declare_exchanges(&channel).await?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Connects with back-off until it works or `shutdown` fires.
    pub async fn wait_until_connected(&self, shutdown: &crate::Shutdown) -> anyhow::Result<()> {
        crate::retry::until_ok("rabbitmq", shutdown, || self.publisher())
            .await
            .map(|_| ())
    }

    /// Declares the exchanges and every consumer queue in `specs`, with
    /// their dead-letter queues and bindings, first moving any queue
    /// declared with older arguments onto the current ones ([`queue_upgrade`]).
    pub async fn declare_consumer_queues(&self, specs: &[ConsumerSpec]) -> anyhow::Result<()> {
        queue_upgrade::upgrade_consumer_queues(self, specs).await?;
        let channel = self.channel().await?;
        for spec in specs {
            let queue = self.inner.topology.queue(spec.service, spec.name);
            self.inner
                .topology
                .declare_consumer_queue(&channel, &queue, &spec.routing_keys)
                .await?;
        }
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// Declares the queues of `specs`, retrying with back-off until the
    /// broker answers or `shutdown` fires.
    pub async fn declare_consumer_queues_when_ready(
        &self,
        specs: &[ConsumerSpec],
        shutdown: &crate::Shutdown,
    ) -> anyhow::Result<()> {
        crate::retry::until_ok("rabbitmq (declaring queues)", shutdown, || {
            self.declare_consumer_queues(specs)
        })
        .await
    }

    /// Closes the connection at shutdown.
    pub async fn close(&self) {
        self.inner.publisher.lock().await.take();
        if let Some(connection) = self.inner.connection.lock().await.take() {
            // A connection the broker already dropped may never answer the close.
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                connection.close(200, "shutdown".into()),
            )
            .await;
        }
    }
}

/// `url` asking for a heartbeat every `seconds`, unless it already says.
fn with_heartbeat(url: &str, seconds: u16) -> String {
    if url.contains("heartbeat=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&heartbeat={seconds}")
    } else {
        format!("{url}?heartbeat={seconds}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_asked_for_unless_the_url_sets_one() {
        assert_eq!(
            with_heartbeat("amqp://u:p@h:5672/%2f", 5),
            "amqp://u:p@h:5672/%2f?heartbeat=5"
        );
        assert_eq!(
            with_heartbeat("amqps://h/v?frame_max=8192", 5),
            "amqps://h/v?frame_max=8192&heartbeat=5"
        );
        assert_eq!(
            with_heartbeat("amqp://h/?heartbeat=30", 5),
            "amqp://h/?heartbeat=30"
        );
    }

    /// A broker that accepts connections and never says a word: connecting
    /// gives up within its timeout, and health does not wait for it.
    #[tokio::test]
    async fn a_black_holed_broker_neither_hangs_connecting_nor_health() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let bus = Bus::new(&AmqpConfig {
            url: crate::config::Secret::new(format!("amqp://u:p@{address}/%2f")),
            connect_timeout_secs: 1,
            ..AmqpConfig::default()
        });
        let connecting = tokio::spawn({
            let bus = bus.clone();
            async move { bus.publisher().await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let answered = tokio::time::timeout(Duration::from_millis(100), bus.is_connected()).await;
        assert_eq!(answered, Ok(false), "health answers while connecting");
        let outcome = tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .expect("the attempt gives up within its timeout")
            .unwrap();
        assert!(outcome.is_err());
        silent.abort();
    }
}
