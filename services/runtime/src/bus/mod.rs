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
pub mod outbox;
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
    connection: Mutex<Option<Arc<Connection>>>,
    publisher: Mutex<Option<Channel>>,
}

impl Bus {
    pub fn new(config: &AmqpConfig) -> Self {
        Self {
            inner: Arc::new(BusInner {
                topology: Topology::new(&config.namespace, config.delivery_limit),
                config: config.clone(),
                connection: Mutex::new(None),
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

    /// True while the connection is open.
    pub async fn is_connected(&self) -> bool {
        self.inner
            .connection
            .lock()
            .await
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
        let connection =
            Arc::new(Connection::connect(self.inner.config.url.expose(), properties).await?);
        tracing::info!("connected to rabbitmq");
        *slot = Some(connection.clone());
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
    /// their dead-letter queues and bindings.
    pub async fn declare_consumer_queues(&self, specs: &[ConsumerSpec]) -> lapin::Result<()> {
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
