//! The event bus's promises, end to end: redelivery has one effect, poison
//! and always-failing messages end in the dead-letter queue while the queue
//! keeps flowing, and several relays publish each outbox row once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_proto::v1::risk_assessment_service_client::RiskAssessmentServiceClient;
use cpm_proto::v1::{ListQueueRequest, ReferralStatus, ReferralSubmitted};
use cpm_runtime::bus::consumer::Consumer;
use cpm_runtime::bus::outbox::OutboxRow;
use cpm_runtime::bus::relay::{Relay, RelayWaker};
use cpm_runtime::bus::{
    Bus, ConsumerSpec, EventHandler, HandlerError, ReceivedEvent, ServiceHandle, Tx,
};
use lapin::BasicProperties;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use prost::Message as _;

use crate::harness::{TestEnv, await_status, connect, eventually, referral_request, submit};

pub async fn publish_raw(env: &TestEnv, routing_key: &str, body: &[u8]) {
    let (connection, channel) = env.amqp_channel().await;
    channel.confirm_select(Default::default()).await.unwrap();
    let confirmation = channel
        .basic_publish(
            format!("{}.events", env.namespace).as_str().into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirmation.is_ack());
    crate::harness::close_quietly(connection).await;
}

/// A pool on `schema`, which holds the event bus tables (outbox, inbox) alone.
pub async fn bus_tables(env: &TestEnv, schema: &str) -> sqlx::PgPool {
    let pool = cpm_runtime::db::pool(&env.settings.platform.database, schema).unwrap();
    cpm_runtime::db::migrate(&pool, schema, &sqlx::migrate::Migrator::DEFAULT)
        .await
        .unwrap();
    pool
}

/// A relay for `schema` and the handle whose commits wake it.
pub fn relay_with_handle(
    env: &TestEnv,
    pool: &sqlx::PgPool,
    bus: &Bus,
    schema: &str,
) -> (Relay, ServiceHandle) {
    let relay = Relay::new(
        pool.clone(),
        bus.clone(),
        schema,
        &env.settings.platform.outbox,
    );
    let handle = ServiceHandle::new(pool.clone(), relay.waker());
    (relay, handle)
}

/// A plain durable queue bound to `referral.submitted`, for counting what
/// the relay publishes.
pub async fn declare_counter_queue(env: &TestEnv, channel: &lapin::Channel, name: &str) -> String {
    let bus = Bus::new(&env.settings.platform.amqp);
    bus.topology().declare_exchanges(channel).await.unwrap();
    let queue = format!("{}.{name}", env.namespace);
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            bus.topology().events_exchange().as_str().into(),
            "referral.submitted".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    queue
}

/// A tap on an exchange: an exclusive queue bound to some routing keys,
/// gone with its connection, from which a test reads what was published.
pub struct Tap {
    connection: lapin::Connection,
    channel: lapin::Channel,
    queue: String,
}

impl Tap {
    /// On the events exchange, for `event_types`.
    pub async fn on(env: &TestEnv, event_types: &[&str]) -> Self {
        Self::on_exchange(env, "events", event_types).await
    }

    /// On `<namespace>.<exchange>`, for `routing_keys`.
    pub async fn on_exchange(env: &TestEnv, exchange: &str, routing_keys: &[&str]) -> Self {
        let (connection, channel) = env.amqp_channel().await;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .name()
            .to_string();
        for key in routing_keys {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    format!("{}.{exchange}", env.namespace).as_str().into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
        Self {
            connection,
            channel,
            queue,
        }
    }

    /// The next event of type `E` published (others skipped), within `wait`.
    pub async fn next<E: cpm_proto::Event>(&self, wait: Duration) -> E {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(message) = self
                .channel
                .basic_get(
                    self.queue.as_str().into(),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await
                .unwrap()
            {
                let envelope =
                    cpm_proto::v1::EventEnvelope::decode(message.delivery.data.as_slice()).unwrap();
                if envelope.event_type == E::TYPE {
                    return E::decode(envelope.payload.as_slice()).unwrap();
                }
                continue;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {} published",
                E::TYPE
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every message waiting now, in order.
    pub async fn drain(&self) -> Vec<lapin::message::BasicGetMessage> {
        let mut messages = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(
                self.queue.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            messages.push(message);
        }
        messages
    }

    pub async fn close(self) {
        crate::harness::close_quietly(self.connection).await;
    }
}

/// Writes `count` `referral.submitted` events (`r-0`, `r-1`, …) in one
/// transaction of `handle`.
pub async fn enqueue_submitted(handle: &ServiceHandle, count: usize) {
    let mut transaction = handle.begin().await.unwrap();
    for n in 0..count {
        cpm_runtime::bus::outbox::enqueue(
            &mut transaction,
            "test",
            &submitted(&format!("r-{n}"), "a", "x"),
        )
        .await
        .unwrap();
    }
    transaction.commit().await.unwrap();
}

pub fn submitted(referral_id: &str, agency_id: &str, area: &str) -> ReferralSubmitted {
    ReferralSubmitted {
        referral_id: referral_id.into(),
        agency_id: agency_id.into(),
        area: area.into(),
        submitted_at: None,
        vulnerabilities: vec![],
        client_gender: 1,
        earlier_referral_id: String::new(),
        ..Default::default()
    }
}

async fn queue_length(env: &TestEnv, channel: &tonic::transport::Channel, area: &str) -> usize {
    let mut assessments = RiskAssessmentServiceClient::new(env.coordinator(channel));
    assessments
        .list_queue(ListQueueRequest {
            area: area.into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .assessments
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_has_exactly_one_effect() {
    let env = TestEnv::new().await;
    let platform = env.start_all().await;
    let channel = connect(&platform).await;
    let area = "X".to_owned();
    let referral_id = uuid::Uuid::now_v7().to_string();
    let envelope =
        cpm_runtime::bus::outbox::envelope("test", &submitted(&referral_id, "agency-x", &area));
    let bytes = envelope.encode_to_vec();
    // Wait until the consumer queues exist, then deliver the same event three times.
    eventually(
        Duration::from_secs(20),
        "risk-assessment's queue exists",
        || async { publish_ok(&env, &bytes).await },
    )
    .await;
    publish_raw(&env, "referral.submitted", &bytes).await;
    publish_raw(&env, "referral.submitted", &bytes).await;

    eventually(Duration::from_secs(20), "the assessment opens", || async {
        queue_length(&env, &channel, &area).await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        queue_length(&env, &channel, &area).await,
        1,
        "one assessment, however often delivered"
    );
    let pool = env.database().await;
    let opened: i64 =
        sqlx::query_scalar("SELECT count(*) FROM risk_assessment.inbox WHERE event_id = $1::uuid")
            .bind(&envelope.event_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(opened, 1);
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// True once a mandatory publish is routed (some queue is bound).
async fn publish_ok(env: &TestEnv, body: &[u8]) -> bool {
    let (connection, channel) = env.amqp_channel().await;
    channel.confirm_select(Default::default()).await.unwrap();
    let confirmation = channel
        .basic_publish(
            format!("{}.events", env.namespace).as_str().into(),
            "referral.submitted".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            BasicProperties::default(),
        )
        .await;
    let routed = match confirmation {
        Ok(confirm) => matches!(confirm.await, Ok(lapin::Confirmation::Ack(None))),
        Err(_) => false,
    };
    crate::harness::close_quietly(connection).await;
    routed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_and_the_queue_keeps_flowing() {
    let env = TestEnv::new().await;
    let platform = env.start_all().await;
    let channel = connect(&platform).await;
    let poison = b"\xff\xfe not a protobuf envelope";
    eventually(
        Duration::from_secs(20),
        "the poison message is routed",
        || async { publish_ok(&env, poison).await },
    )
    .await;

    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-p"));
    let referral = submit(&mut intake, referral_request("Darlington")).await;
    await_status(
        &mut intake,
        &referral.referral_id,
        ReferralStatus::UnderAssessment,
        Duration::from_secs(20),
    )
    .await;

    let dead_letters = format!("{}.dlq", env.queue("risk-assessment", "referrals"));
    eventually(
        Duration::from_secs(10),
        "the poison message is in the dead-letter queue",
        || async { env.queue_depth(&dead_letters).await == 1 },
    )
    .await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// Fails on one referral's events until `fixed`, succeeds on the others.
struct FailsOnOne {
    failing: String,
    fixed: Arc<std::sync::atomic::AtomicBool>,
    applied: Arc<Mutex<Vec<String>>>,
}

impl EventHandler for FailsOnOne {
    async fn handle(&self, _: &mut Tx, event: &ReceivedEvent) -> Result<(), HandlerError> {
        let event: ReferralSubmitted = event.decode()?;
        if event.referral_id == self.failing
            && !self.fixed.load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(HandlerError::Transient("this one never works".into()));
        }
        self.applied.lock().unwrap().push(event.referral_id);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_always_fails_ends_in_the_dead_letter_queue_after_the_delivery_limit() {
    let env = TestEnv::new().await;
    let schema = "bus_test";
    let pool = bus_tables(&env, schema).await;
    let bus = Bus::new(&env.settings.platform.amqp);
    let shutdown = cpm_runtime::Shutdown::new();
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let applied = Arc::new(Mutex::new(Vec::new()));
    let spec = ConsumerSpec {
        service: "bus-test",
        name: "flaky",
        routing_keys: vec!["referral.submitted"],
    };
    let (relay, handle) = relay_with_handle(&env, &pool, &bus, schema);
    let consumer = Consumer::new(
        handle.clone(),
        bus.clone(),
        spec,
        Arc::new(FailsOnOne {
            failing: "bad".into(),
            fixed: fixed.clone(),
            applied: applied.clone(),
        }),
    );
    let consumer_task = tokio::spawn(consumer.run(shutdown.clone()));
    let relay_task = tokio::spawn(relay.run(shutdown.clone()));
    let queue = env.queue("bus-test", "flaky");
    eventually(Duration::from_secs(20), "the consumer queue exists", || {
        env.queue_exists(&queue)
    })
    .await;

    let mut transaction = handle.begin().await.unwrap();
    for id in ["good-1", "bad", "good-2"] {
        cpm_runtime::bus::outbox::enqueue(&mut transaction, "test", &submitted(id, "a", "x"))
            .await
            .unwrap();
    }
    transaction.commit().await.unwrap();

    eventually(
        Duration::from_secs(30),
        "both good events are applied",
        || async { applied.lock().unwrap().len() == 2 },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the failing event is dead-lettered",
        || async { env.queue_depth(&format!("{queue}.dlq")).await == 1 },
    )
    .await;
    assert_eq!(env.queue_depth(&queue).await, 0);
    assert_eq!(*applied.lock().unwrap(), ["good-1", "good-2"]);

    // Once the cause is fixed, an operator replays the dead letter
    // (`cpm dead-letters --replay bus-test.flaky`) and it is applied.
    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let spec = ConsumerSpec {
        service: "bus-test",
        name: "flaky",
        routing_keys: vec!["referral.submitted"],
    };
    // The operator's command runs apart from the service, on its own connection.
    let operator = Bus::new(&env.settings.platform.amqp);
    let counts = cpm_runtime::bus::dead_letters::count(&operator, std::slice::from_ref(&spec))
        .await
        .unwrap();
    assert_eq!(counts[0].messages, 1);
    let replayed = cpm_runtime::bus::dead_letters::replay(&operator, &spec, 100, |_| {})
        .await
        .unwrap();
    operator.close().await;
    assert_eq!(replayed, 1);
    eventually(
        Duration::from_secs(20),
        "the replayed event is applied",
        || async { applied.lock().unwrap().len() == 3 },
    )
    .await;
    assert_eq!(env.queue_depth(&format!("{queue}.dlq")).await, 0);
    shutdown.cancel();
    consumer_task.await.unwrap();
    relay_task.await.unwrap();
    bus.close().await;
    pool.close().await;
    let (connection, channel) = env.amqp_channel().await;
    for name in [queue.clone(), format!("{queue}.dlq")] {
        let _ = channel
            .queue_delete(name.as_str().into(), Default::default())
            .await;
    }
    crate::harness::close_quietly(connection).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_relays_publish_each_outbox_row_exactly_once() {
    let env = TestEnv::new().await;
    let schema = "relay_test";
    let pool = bus_tables(&env, schema).await;

    let (connection, channel) = env.amqp_channel().await;
    let counter_queue = declare_counter_queue(&env, &channel, "relay-counter").await;

    const EVENTS: usize = 600;
    // Written before any relay runs: they find the rows by polling.
    let handle = ServiceHandle::new(pool.clone(), RelayWaker::default());
    enqueue_submitted(&handle, EVENTS).await;

    let shutdown = cpm_runtime::Shutdown::new();
    let mut relays = Vec::new();
    for _ in 0..3 {
        let bus = Bus::new(&env.settings.platform.amqp);
        let relay = Relay::new(pool.clone(), bus, schema, &env.settings.platform.outbox);
        relays.push(tokio::spawn(relay.run(shutdown.clone())));
    }
    eventually(Duration::from_secs(30), "the outbox is empty", || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM relay_test.outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        left == 0
    })
    .await;
    shutdown.cancel();
    for relay in relays {
        relay.await.unwrap();
    }

    let mut consumer = channel
        .basic_consume(
            counter_queue.as_str().into(),
            "counter".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    use futures::StreamExt as _;
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_secs(2), consumer.next()).await
    {
        let envelope = cpm_proto::v1::EventEnvelope::decode(delivery.data.as_slice()).unwrap();
        assert!(
            seen.insert(envelope.event_id),
            "an event was published twice"
        );
    }
    assert_eq!(seen.len(), EVENTS);
    let _ = channel
        .queue_delete(counter_queue.as_str().into(), Default::default())
        .await;
    crate::harness::close_quietly(connection).await;
    pool.close().await;
    env.cleanup().await;
}

/// A relay on a schema of its own whose polling is an hour apart, so that
/// only its waker makes it publish, with a queue counting what it publishes.
struct WakeOnlyRelay {
    pool: sqlx::PgPool,
    connection: lapin::Connection,
    channel: lapin::Channel,
    queue: String,
    waker: RelayWaker,
    shutdown: cpm_runtime::Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl WakeOnlyRelay {
    async fn start(env: &TestEnv, schema: &str) -> Self {
        let pool = bus_tables(env, schema).await;
        let (connection, channel) = env.amqp_channel().await;
        let queue = declare_counter_queue(env, &channel, schema).await;
        let mut outbox = env.settings.platform.outbox.clone();
        outbox.poll_interval_ms = 3_600_000;
        let shutdown = cpm_runtime::Shutdown::new();
        let relay = Relay::new(
            pool.clone(),
            Bus::new(&env.settings.platform.amqp),
            schema,
            &outbox,
        );
        let waker = relay.waker();
        let task = tokio::spawn(relay.run(shutdown.clone()));
        Self {
            pool,
            connection,
            channel,
            queue,
            waker,
            shutdown,
            task,
        }
    }

    async fn stop(self, env: TestEnv) {
        self.shutdown.cancel();
        self.task.await.unwrap();
        let _ = self
            .channel
            .queue_delete(self.queue.as_str().into(), Default::default())
            .await;
        crate::harness::close_quietly(self.connection).await;
        self.pool.close().await;
        env.cleanup().await;
    }
}

/// With polling an hour apart, only the commit of a handle's transaction
/// can make the relay publish: once idle, through a burst that it works
/// through in batches, and once idle again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_commit_of_a_handles_transaction_wakes_the_relay_before_and_after_a_busy_spell() {
    let env = TestEnv::new().await;
    let schema = "relay_wake";
    let relay = WakeOnlyRelay::start(&env, schema).await;
    let handle = ServiceHandle::new(relay.pool.clone(), relay.waker.clone());
    let queue = &relay.queue;
    let enqueue = |n: usize| {
        let handle = handle.clone();
        async move {
            let mut transaction = handle.begin().await.unwrap();
            cpm_runtime::bus::outbox::enqueue(
                &mut transaction,
                "test",
                &submitted(&format!("r-{n}"), "a", "x"),
            )
            .await
            .unwrap();
            transaction.commit().await.unwrap();
        }
    };

    enqueue(0).await;
    eventually(
        Duration::from_secs(20),
        "the first event is published",
        || async { env.queue_depth(queue).await == 1 },
    )
    .await;

    const BURST: usize = 300;
    futures::future::join_all((1..=BURST).map(enqueue)).await;
    eventually(
        Duration::from_secs(30),
        "the burst is published",
        || async { env.queue_depth(queue).await == 1 + BURST as u32 },
    )
    .await;

    tokio::time::sleep(Duration::from_millis(200)).await;
    enqueue(BURST + 1).await;
    eventually(
        Duration::from_secs(20),
        "the last event is published",
        || async { env.queue_depth(queue).await == 2 + BURST as u32 },
    )
    .await;
    relay.stop(env).await;
}

/// A single autocommit statement's event (SubmitReferral's hot path) is
/// published once its writer wakes the relay, and not before: polling is
/// an hour apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_statements_event_is_published_when_its_writer_wakes_the_relay() {
    let env = TestEnv::new().await;
    let schema = "relay_waker";
    let relay = WakeOnlyRelay::start(&env, schema).await;
    let (pool, queue) = (&relay.pool, &relay.queue);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let row = OutboxRow::new("test", &submitted("r-1", "a", "x"));
    let sql = format!(
        "WITH {} SELECT 1",
        OutboxRow::cte("written", "(SELECT) AS one", 1)
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(row.event_id)
        .bind(row.event_type)
        .bind(&row.envelope)
        .bind(&row.trace_context)
        .execute(pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        env.queue_depth(queue).await,
        0,
        "without a wake-up the idle relay has not looked"
    );
    relay.waker.wake();
    eventually(
        Duration::from_secs(20),
        "the event is published after the wake-up",
        || async { env.queue_depth(queue).await == 1 },
    )
    .await;
    relay.stop(env).await;
}

/// The inbox forgets events older than its retention and keeps the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_is_pruned_past_its_retention() {
    let env = TestEnv::new().await;
    let platform = env.start(&[cpm::Target::REFERRAL_INTAKE]).await;
    let pool = cpm_runtime::db::pool(&env.settings.platform.database, "referral_intake").unwrap();
    for (age_days, count) in [(45, 12_000), (1, 3)] {
        sqlx::query(
            "INSERT INTO inbox (consumer, event_id, event_type, processed_at) \
             SELECT 'test', gen_random_uuid(), 'x', now() - make_interval(days => $1) \
             FROM generate_series(1, $2)",
        )
        .bind(age_days)
        .bind(count)
        .execute(&pool)
        .await
        .unwrap();
    }
    let deleted = cpm_runtime::bus::inbox::prune(&pool, Duration::from_secs(30 * 24 * 3600))
        .await
        .unwrap();
    assert_eq!(deleted, 12_000, "old rows go, in several batches");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE consumer = 'test'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 3, "recent rows stay");
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// Least privilege: each service works as a role of its own that reaches
/// its own schema and nothing else, so a query that strays into another
/// service's data is refused by PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_reaches_only_its_own_schema() {
    let env = TestEnv::new().await;
    let platform = env.start_all().await;
    let matching =
        cpm_runtime::db::service_pool(&env.settings.platform.database, "mentor_matching").unwrap();
    let own: Result<i64, _> = sqlx::query_scalar("SELECT count(*) FROM mentor_matching.mentor")
        .fetch_one(&matching)
        .await;
    assert!(own.is_ok(), "{own:?}");
    for foreign in [
        "SELECT count(*) FROM referral_intake.referral",
        "SELECT count(*) FROM referral_intake.client_record",
        "SELECT count(*) FROM risk_assessment.assessment",
    ] {
        let refused = sqlx::query_scalar::<_, i64>(foreign)
            .fetch_one(&matching)
            .await
            .unwrap_err();
        let code = refused
            .as_database_error()
            .and_then(|error| error.code())
            .map(|code| code.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{foreign}: {refused}");
    }
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&matching)
        .await
        .unwrap();
    assert_eq!(role, "cpm_mentor_matching");
    matching.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}
