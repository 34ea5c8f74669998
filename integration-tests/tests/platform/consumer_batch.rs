//! A consumer applies the deliveries it has in hand in one transaction
//! (`cpm_runtime::bus::consumer::batch`): many events, one commit; a copy
//! of an event in the same batch is a duplicate; a failing event is rolled
//! back to its savepoint and settled alone while the rest commit; a
//! deadlock (two replicas' batches, or one event and another transaction)
//! costs no delivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use cpm_proto::v1::ReferralSubmitted;
use cpm_runtime::bus::consumer::Consumer;
use cpm_runtime::bus::{
    Bus, ConsumerSpec, EventHandler, HandlerError, ReceivedEvent, ServiceHandle, Tx,
};
use prost::Message as _;
use tokio::sync::watch;

use crate::bus::{bus_tables, publish_raw, relay_with_handle, submitted};
use crate::harness::{TestEnv, eventually, queue_consumers};

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

/// Consumers of one queue, their relay, and the schema they share; `door`
/// holds [`Gated`] handlers until the test opens it.
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
    /// One consumer whose handler waits at the door and fails on `failing`.
    async fn start(schema: &str, name: &'static str, failing: &'static str) -> Self {
        let (door, closed) = watch::channel(false);
        let handler = Gated {
            door: closed,
            failing,
        };
        Self::with_consumers(schema, name, door, vec![Arc::new(handler)]).await
    }

    /// One consumer a handler, all on the queue `name`, after the schema
    /// has its `effect` table.
    async fn with_consumers<H: EventHandler>(
        schema: &str,
        name: &'static str,
        door: watch::Sender<bool>,
        handlers: Vec<Arc<H>>,
    ) -> Self {
        let env = TestEnv::new().await;
        let pool = bus_tables(&env, schema).await;
        sqlx::query(
            "CREATE TABLE effect (referral_id text NOT NULL, transaction bigint NOT NULL, \
             slot bigint NOT NULL DEFAULT 0, delivery_count integer NOT NULL DEFAULT 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let bus = Bus::new(&env.settings.platform.amqp);
        let shutdown = cpm_runtime::Shutdown::new();
        let (relay, handle) = relay_with_handle(&env, &pool, &bus, schema);
        let mut tasks = vec![tokio::spawn(relay.run(shutdown.clone()))];
        for handler in handlers {
            let spec = ConsumerSpec {
                service: "bus-test",
                name,
                routing_keys: vec!["referral.submitted"],
            };
            let consumer = Consumer::new(handle.clone(), bus.clone(), spec, handler);
            tasks.push(tokio::spawn(consumer.run(shutdown.clone())));
        }
        let queue = env.queue("bus-test", name);
        let consumers = Some(tasks.len() as u32 - 1);
        eventually(
            Duration::from_secs(20),
            "every consumer is on the queue",
            || {
                let amqp = env.settings.platform.amqp.url.expose();
                async { queue_consumers(amqp, &queue).await == consumers }
            },
        )
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

/// Takes one of two counter rows an event, so that two consumers' batches
/// cross: a transaction's first event takes slot `n` (one a transaction, in
/// the order they start) and its k-th event the row `(n + k) % 2`, so
/// batches of neighbouring slots lock the rows in opposite orders. Each
/// holds its row a moment, as a handler doing real work would, and counts
/// the deadlocks PostgreSQL reports to it.
struct Crossing {
    slots: AtomicI64,
    deadlocks: AtomicI64,
}

impl EventHandler for Crossing {
    async fn handle(&self, tx: &mut Tx, event: &ReceivedEvent) -> Result<(), HandlerError> {
        let submitted: ReferralSubmitted = event.decode()?;
        let (position, slot): (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*), max(slot) FROM effect WHERE transaction = txid_current()",
        )
        .fetch_one(&mut **tx)
        .await?;
        let slot = slot.unwrap_or_else(|| self.slots.fetch_add(1, Ordering::SeqCst));
        take_counter(tx, (slot + position) % 2, &self.deadlocks).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        record_effect(tx, &submitted, slot, event).await
    }
}

/// Adds one to counter row `row`, counting a deadlock PostgreSQL reports.
async fn take_counter(tx: &mut Tx, row: i64, deadlocks: &AtomicI64) -> Result<(), HandlerError> {
    let taken = sqlx::query("UPDATE counter SET n = n + 1 WHERE id = $1")
        .bind(row)
        .execute(&mut **tx)
        .await;
    if let Err(error) = taken {
        if error.as_database_error().and_then(|e| e.code()).as_deref() == Some("40P01") {
            deadlocks.fetch_add(1, Ordering::SeqCst);
        }
        return Err(error.into());
    }
    Ok(())
}

/// The event's effect row: which transaction applied it, at which delivery.
async fn record_effect(
    tx: &mut Tx,
    submitted: &ReferralSubmitted,
    slot: i64,
    event: &ReceivedEvent,
) -> Result<(), HandlerError> {
    sqlx::query(
        "INSERT INTO effect (referral_id, transaction, slot, delivery_count) \
         VALUES ($1, txid_current(), $2, $3)",
    )
    .bind(&submitted.referral_id)
    .bind(slot)
    .bind(event.delivery_count as i32)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Two counter rows, 0 and 1, at zero.
async fn two_counters(pool: &sqlx::PgPool) {
    sqlx::query("CREATE TABLE counter (id bigint PRIMARY KEY, n bigint NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO counter VALUES (0, 0), (1, 0)")
        .execute(pool)
        .await
        .unwrap();
}

/// Two replicas of a service consume one queue, and their batches lock the
/// same rows in opposite orders: PostgreSQL breaks each deadlock by failing
/// one of them. The loser's batch is dropped (its locks with it) and its
/// deliveries applied one at a time, each once, none requeued; kept, its
/// failing event would be requeued (a delivery spent, the order lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_between_two_consumers_batches_spends_no_delivery() {
    let crossing = Arc::new(Crossing {
        slots: AtomicI64::new(0),
        deadlocks: AtomicI64::new(0),
    });
    let (door, _) = watch::channel(true);
    let handlers = vec![crossing.clone(), crossing.clone()];
    let gate = Gate::with_consumers("batch_crossing", "crossing", door, handlers).await;
    two_counters(&gate.pool).await;
    // Rounds of events until the batches have crossed: whether two overlap
    // is the scheduler's to say, and a round rarely has none.
    const ROUND: usize = 256;
    let mut events = 0;
    for round in 0..5 {
        let ids: Vec<String> = (0..ROUND).map(|n| format!("r-{round}-{n:03}")).collect();
        gate.enqueue(&ids).await;
        events += ROUND;
        eventually(
            Duration::from_secs(90),
            "every event took effect",
            || async { gate.effects().await.len() >= events },
        )
        .await;
        if crossing.deadlocks.load(Ordering::SeqCst) > 0 {
            break;
        }
    }
    let mut gate = gate;
    gate.halt().await;

    let deadlocks = crossing.deadlocks.load(Ordering::SeqCst);
    assert!(
        deadlocks > 0,
        "the batches never crossed: nothing was shown"
    );
    let effects = gate.effects().await;
    let mut referrals: Vec<&str> = effects.iter().map(|(id, _)| id.as_str()).collect();
    referrals.dedup();
    assert_eq!(referrals.len(), events, "an event lost");
    assert_eq!(effects.len(), events, "an event took effect twice");
    let counted: i64 = sqlx::query_scalar("SELECT sum(n)::bigint FROM counter")
        .fetch_one(&gate.pool)
        .await
        .unwrap();
    assert_eq!(counted, events as i64);
    let requeued: Vec<String> =
        sqlx::query_scalar("SELECT referral_id FROM effect WHERE delivery_count > 0")
            .fetch_all(&gate.pool)
            .await
            .unwrap();
    assert!(
        requeued.is_empty(),
        "{deadlocks} deadlocks cost {} deliveries: {requeued:?}",
        requeued.len()
    );
    assert_eq!(gate.env.queue_depth(&gate.queue).await, 0);
    gate.stop().await;
}

/// Locks counter row 0, says so, then row 1.
struct Holding {
    holding: watch::Sender<bool>,
    deadlocks: AtomicI64,
}

impl EventHandler for Holding {
    async fn handle(&self, tx: &mut Tx, event: &ReceivedEvent) -> Result<(), HandlerError> {
        let submitted: ReferralSubmitted = event.decode()?;
        for row in [0, 1] {
            take_counter(tx, row, &self.deadlocks).await?;
            self.holding.send_replace(true);
        }
        record_effect(tx, &submitted, 0, event).await
    }
}

/// An event whose transaction PostgreSQL fails to break a deadlock is
/// applied again at once, in a new transaction, rather than requeued: the
/// test holds row 1 while the handler takes row 0 and waits for row 1, then
/// asks for row 0. The handler waited first, so its deadlock check runs
/// first and it is the one failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_loses_a_deadlock_is_applied_again_at_once() {
    let (holding, mut held) = watch::channel(false);
    let handler = Arc::new(Holding {
        holding,
        deadlocks: AtomicI64::new(0),
    });
    let (door, _) = watch::channel(true);
    let gate = Gate::with_consumers("lost_deadlock", "lost", door, vec![handler.clone()]).await;
    two_counters(&gate.pool).await;
    let mut rival = gate.pool.begin().await.unwrap();
    sqlx::query("UPDATE counter SET n = n + 10 WHERE id = 1")
        .execute(&mut *rival)
        .await
        .unwrap();
    gate.enqueue(&["r-lost".to_owned()]).await;
    tokio::time::timeout(Duration::from_secs(30), held.wait_for(|held| *held))
        .await
        .expect("the handler took row 0")
        .unwrap();
    // Well inside PostgreSQL's deadlock_timeout (1 s) of the handler's wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query("UPDATE counter SET n = n + 10 WHERE id = 0")
        .execute(&mut *rival)
        .await
        .expect("the handler, waiting longer, is the one failed");
    rival.commit().await.unwrap();
    eventually(Duration::from_secs(30), "the event took effect", || async {
        !gate.effects().await.is_empty()
    })
    .await;
    let mut gate = gate;
    gate.halt().await;

    assert_eq!(handler.deadlocks.load(Ordering::SeqCst), 1);
    let applied: Vec<(String, i32)> =
        sqlx::query_as("SELECT referral_id, delivery_count FROM effect")
            .fetch_all(&gate.pool)
            .await
            .unwrap();
    assert_eq!(applied, [("r-lost".to_owned(), 0)], "requeued, not retried");
    let counted: Vec<i64> = sqlx::query_scalar("SELECT n FROM counter ORDER BY id")
        .fetch_all(&gate.pool)
        .await
        .unwrap();
    assert_eq!(counted, [11, 11]);
    assert_eq!(gate.env.queue_depth(&gate.queue).await, 0);
    gate.stop().await;
}
