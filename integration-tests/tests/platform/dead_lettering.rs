//! Dead-lettering is at-least-once, and queues declared before it are moved
//! onto it without losing an event (`cpm_runtime::bus::queue_upgrade`).

use cpm::Target;
use cpm_runtime::bus::queue_upgrade::holding_queue;
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

use crate::harness::TestEnv;

/// A consumer queue's arguments as they were before at-least-once dead-lettering.
fn old_arguments(env: &TestEnv, queue: &str) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(env.settings.platform.amqp.delivery_limit as i32),
    );
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(format!("{}.dead-letter", env.namespace).into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(queue.into()),
    );
    arguments
}

/// Whether `queue` can be declared with `arguments` (RabbitMQ refuses
/// arguments that differ from the queue's).
async fn declares_with(env: &TestEnv, queue: &str, arguments: FieldTable) -> bool {
    let (connection, channel) = env.amqp_channel().await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), durable, arguments)
        .await
        .is_ok();
    let _ = connection.close(200, "checked".into()).await;
    declared
}

async fn publish_to(channel: &lapin::Channel, queue: &str, count: usize) {
    for n in 0..count {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                format!("event {n}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_from_before_at_least_once_dead_lettering_is_moved_onto_it_with_every_event() {
    let env = TestEnv::new().await;
    let spec = cpm::platform::all_consumers().remove(0);
    let queue = env.queue(spec.service, spec.name);
    let holding = holding_queue(&queue);

    // As an older release left it: the queue with its old arguments and
    // three waiting events, and (an upgrade cut short) a holding queue with two.
    let (connection, channel) = env.amqp_channel().await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.as_str().into(), durable, old_arguments(&env, &queue))
        .await
        .unwrap();
    channel
        .exchange_declare(
            format!("{}.events", env.namespace).as_str().into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for key in &spec.routing_keys {
        channel
            .queue_bind(
                queue.as_str().into(),
                format!("{}.events", env.namespace).as_str().into(),
                (*key).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    publish_to(&channel, &queue, 3).await;
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(holding.as_str().into(), durable, quorum)
        .await
        .unwrap();
    publish_to(&channel, &holding, 2).await;
    connection.close(200, "set up".into()).await.unwrap();

    // What the chart's migration job runs.
    cpm::platform::migrate(&env.settings, &Target::ALL)
        .await
        .expect("the migration upgrades the queue");

    assert_eq!(env.queue_depth(&queue).await, 5, "every event kept");
    assert!(
        !env.queue_exists(&holding).await,
        "the holding queue is gone"
    );
    let topology =
        cpm_runtime::bus::Topology::new(&env.namespace, env.settings.platform.amqp.delivery_limit);
    assert!(
        declares_with(&env, &queue, topology.consumer_queue_arguments(&queue)).await,
        "the queue now has the current arguments"
    );
    assert!(
        !declares_with(&env, &queue, old_arguments(&env, &queue)).await,
        "and no longer the old ones"
    );
    // A second run finds nothing to do.
    cpm::platform::migrate(&env.settings, &Target::ALL)
        .await
        .unwrap();
    assert_eq!(env.queue_depth(&queue).await, 5);
    env.cleanup().await;
}
