//! A consumer applies the deliveries it has in hand in one transaction
//! (`cpm_runtime::bus::consumer::batch`): many events, one commit; a copy
//! of an event in the same batch is a duplicate; a failing event is rolled
//! back to its savepoint and settled alone while the rest commit.

use std::sync::Arc;
use std::time::Duration;

use cpm_proto::v1::ReferralSubmitted;
use cpm_runtime::bus::consumer::Consumer;
use cpm_runtime::bus::{
    Bus, ConsumerSpec, EventHandler, HandlerError, ReceivedEvent, ServiceHandle, Tx,
};
use prost::Message as _;
use tokio::sync::watch;

use crate::bus::{bus_tables, publish_raw, relay_with_handle, submitted};
use crate::harness::{TestEnv, eventually};

/// Waits at a door the test opens, writes an effect row, and fails on the
/// referral `failing` after writing (so its row shows whether the failure
/// was rolled back).
struct Gated {
    door: watch::Receiver<bool>,
    failing: &'static str,
}

impl EventHandler for Gated {
    async fn handle(&self, tx: &mut Tx, event: &ReceivedEvent) -> Result<(), HandlerError> {
        let mut door = self.door.clone();
        door.wait_for(|open| *open)
            .await
            .map_err(|_| HandlerError::Transient("the test ended".into()))?;
        let submitted: ReferralSubmitted = event.decode()?;
        // The top-level transaction: a row's xmin would name the savepoint's
        // subtransaction.
        sqlx::query("INSERT INTO effect (referral_id, transaction) VALUES ($1, txid_current())")
            .bind(&submitted.referral_id)
            .execute(&mut **tx)
            .await?;
        if submitted.referral_id == self.failing {
            return Err(HandlerError::Transient("this one never works".into()));
        }
        Ok(())
    }
}

/// A consumer behind a closed door, its relay, and the schema they share.
struct Gate {
    env: TestEnv,
    pool: sqlx::PgPool,
    handle: ServiceHandle,
    queue: String,
    door: watch::Sender<bool>,
    shutdown: cpm_runtime::Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    bus: Bus,
}

impl Gate {
    async fn start(schema: &str, name: &'static str, failing: &'static str) -> Self {
        let env = TestEnv::new().await;
        let pool = bus_tables(&env, schema).await;
        sqlx::query("CREATE TABLE effect (referral_id text NOT NULL, transaction bigint NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        let bus = Bus::new(&env.settings.platform.amqp);
        let shutdown = cpm_runtime::Shutdown::new();
        let (relay, handle) = relay_with_handle(&env, &pool, &bus, schema);
        let (door, closed) = watch::channel(false);
        let spec = ConsumerSpec {
            service: "bus-test",
            name,
            routing_keys: vec!["referral.submitted"],
        };
        let consumer = Consumer::new(
            handle.clone(),
            bus.clone(),
            spec,
            Arc::new(Gated {
                door: closed,
                failing,
            }),
        );
        let tasks = vec![
            tokio::spawn(consumer.run(shutdown.clone())),
            tokio::spawn(relay.run(shutdown.clone())),
        ];
        let queue = env.queue("bus-test", name);
        eventually(Duration::from_secs(20), "the consumer queue exists", || {
            env.queue_exists(&queue)
        })
        .await;
        Self {
            env,
            pool,
            handle,
            queue,
            door,
            shutdown,
            tasks,
            bus,
        }
    }

    /// Writes one event a referral ID to the outbox, in one transaction.
    async fn enqueue(&self, referral_ids: &[String]) {
        let mut transaction = self.handle.begin().await.unwrap();
        for id in referral_ids {
            cpm_runtime::bus::outbox::enqueue(&mut transaction, "test", &submitted(id, "a", "x"))
                .await
                .unwrap();
        }
        transaction.commit().await.unwrap();
    }

    /// Opens the door once the broker has handed every message to the
    /// consumer: the relay has published the whole outbox (confirmed), and
    /// none is left ready in the queue (the prefetch of 32 holds them all).
    async fn open_when_all_in_hand(&self) {
        eventually(
            Duration::from_secs(30),
            "every message is in the consumer's hand",
            || async {
                let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
                    .fetch_one(&self.pool)
                    .await
                    .unwrap();
                unpublished == 0 && self.env.queue_depth(&self.queue).await == 0
            },
        )
        .await;
        // The first delivery may be in a handler already; the rest wait.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.door.send_replace(true);
    }

    /// Each effect row's referral and the transaction that wrote it.
    async fn effects(&self) -> Vec<(String, String)> {
        sqlx::query_as("SELECT referral_id, transaction::text FROM effect ORDER BY referral_id")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// Stops the consumer and the relay; the consumer's channel closes.
    async fn halt(&mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
    }

    async fn stop(mut self) {
        self.halt().await;
        self.bus.close().await;
        self.pool.close().await;
        let (connection, channel) = self.env.amqp_channel().await;
        for name in [self.queue.clone(), format!("{}.dlq", self.queue)] {
            let _ = channel
                .queue_delete(name.as_str().into(), Default::default())
                .await;
        }
        crate::harness::close_quietly(connection).await;
        self.env.cleanup().await;
    }
}

fn distinct(transactions: impl Iterator<Item = String>) -> usize {
    transactions.collect::<std::collections::HashSet<_>>().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_in_hand_are_applied_in_one_transaction_and_a_copy_among_them_once() {
    let gate = Gate::start("batch_many", "many", "").await;
    const EVENTS: usize = 24;
    let ids: Vec<String> = (0..EVENTS).map(|n| format!("r-{n:02}")).collect();
    gate.enqueue(&ids).await;
    // One event published twice, as a relay that died before its delete
    // would: both copies come in the same batch.
    let copy = cpm_runtime::bus::outbox::envelope("test", &submitted("r-copy", "a", "x"));
    for _ in 0..2 {
        publish_raw(&gate.env, "referral.submitted", &copy.encode_to_vec()).await;
    }
    gate.open_when_all_in_hand().await;
    eventually(
        Duration::from_secs(30),
        "every event took effect",
        || async { gate.effects().await.len() > EVENTS },
    )
    .await;
    // A delivery left unacknowledged returns to the queue when the
    // consumer's channel closes.
    let mut gate = gate;
    gate.halt().await;
    assert_eq!(gate.env.queue_depth(&gate.queue).await, 0, "left unsettled");

    let effects = gate.effects().await;
    let mut referrals: Vec<&str> = effects.iter().map(|(id, _)| id.as_str()).collect();
    referrals.dedup();
    assert_eq!(
        referrals.len(),
        EVENTS + 1,
        "one effect an event: {effects:?}"
    );
    assert_eq!(effects.len(), EVENTS + 1, "the copy took effect twice");
    // The first delivery may have been alone in a handler when the rest
    // arrived; everything behind it is one transaction. One at a time, 25.
    let transactions = distinct(effects.into_iter().map(|(_, transaction)| transaction));
    assert!(
        transactions <= 2,
        "{} events in {transactions} transactions",
        EVENTS + 1
    );
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&gate.pool)
        .await
        .unwrap();
    assert_eq!(inbox, EVENTS as i64 + 1);
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_in_a_batch_is_rolled_back_alone_and_the_rest_commit_together() {
    let gate = Gate::start("batch_failing", "failing", "r-bad").await;
    let ids: Vec<String> = ["r-a", "r-b", "r-bad", "r-c", "r-d"]
        .into_iter()
        .map(String::from)
        .collect();
    gate.enqueue(&ids).await;
    gate.open_when_all_in_hand().await;
    let dead_letters = format!("{}.dlq", gate.queue);
    eventually(
        Duration::from_secs(30),
        "the failing event is dead-lettered after its deliveries",
        || async { gate.env.queue_depth(&dead_letters).await == 1 },
    )
    .await;

    let effects = gate.effects().await;
    let referrals: Vec<&str> = effects.iter().map(|(id, _)| id.as_str()).collect();
    // The failing handler wrote its row before failing, each delivery:
    // every write was rolled back to its savepoint.
    assert_eq!(referrals, ["r-a", "r-b", "r-c", "r-d"]);
    let transactions = distinct(effects.into_iter().map(|(_, transaction)| transaction));
    assert!(transactions <= 2, "4 events in {transactions} transactions");
    // Its inbox row went with it, so its redeliveries were tried again
    // rather than taken for duplicates.
    let inbox: Vec<String> = sqlx::query_scalar("SELECT event_type FROM inbox")
        .fetch_all(&gate.pool)
        .await
        .unwrap();
    assert_eq!(inbox.len(), 4);
    assert_eq!(gate.env.queue_depth(&gate.queue).await, 0);
    gate.stop().await;
}
