//! What one outbox relay batch costs PostgreSQL in round trips, counted on
//! the wire by a proxy, and that a batch dropped half-way leaves no row
//! locked behind it.

use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cpm_runtime::bus::relay::Relay;
use cpm_runtime::bus::{Bus, ServiceHandle};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::bus::{bus_tables, declare_counter_queue, enqueue_submitted, relay_with_handle};
use crate::harness::{TestEnv, eventually};

/// A TCP proxy to PostgreSQL counting the ReadyForQuery messages the server
/// sends: one at the end of every round trip (a simple query, an extended
/// query's Sync, sqlx's ping). Plain TCP only, so the client must not ask
/// for TLS.
struct CountingProxy {
    port: u16,
    ready_for_query: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ready_for_query = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let counted = ready_for_query.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        continue;
                    };
                    let counted = counted.clone();
                    tokio::spawn(async move {
                        let (mut client_read, mut client_write) = client.into_split();
                        let (mut server_read, mut server_write) = server.into_split();
                        let upstream = tokio::io::copy(&mut client_read, &mut server_write);
                        let downstream = async {
                            let mut framing = Framing::default();
                            let mut buffer = vec![0u8; 16 * 1024];
                            loop {
                                let read = match server_read.read(&mut buffer).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(read) => read,
                                };
                                let ready = framing.ready_for_query_in(&buffer[..read]);
                                counted.fetch_add(ready, Ordering::SeqCst);
                                if client_write.write_all(&buffer[..read]).await.is_err() {
                                    break;
                                }
                            }
                        };
                        tokio::select! {
                            _ = upstream => {}
                            () = downstream => {}
                        }
                    });
                }
            }
        });
        Self {
            port,
            ready_for_query,
            task,
        }
    }

    fn round_trips(&self) -> usize {
        self.ready_for_query.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The server's message framing (a type byte, then a length that counts
/// itself), followed across reads.
#[derive(Default)]
struct Framing {
    header: Vec<u8>,
    /// Bytes of the current message's body still to come.
    body_left: usize,
}

impl Framing {
    fn ready_for_query_in(&mut self, mut bytes: &[u8]) -> usize {
        let mut ready = 0;
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let skipped = self.body_left.min(bytes.len());
                self.body_left -= skipped;
                bytes = &bytes[skipped..];
                continue;
            }
            let wanted = 5 - self.header.len();
            let taken = wanted.min(bytes.len());
            self.header.extend_from_slice(&bytes[..taken]);
            bytes = &bytes[taken..];
            if self.header.len() == 5 {
                if self.header[0] == b'Z' {
                    ready += 1;
                }
                let length = u32::from_be_bytes(self.header[1..5].try_into().unwrap());
                self.body_left = (length as usize).saturating_sub(4);
                self.header.clear();
            }
        }
        ready
    }
}

/// A pool on `schema` whose connections go through `proxy`, without TLS.
fn pool_through(env: &TestEnv, proxy: &CountingProxy, schema: &str) -> sqlx::PgPool {
    let options = PgConnectOptions::from_str(env.settings.platform.database.url.expose())
        .unwrap()
        .host("127.0.0.1")
        .port(proxy.port)
        .ssl_mode(PgSslMode::Disable)
        .options([("search_path", schema)]);
    PgPoolOptions::new()
        .max_connections(2)
        .test_before_acquire(false)
        .connect_lazy_with(options)
}

fn server_address(env: &TestEnv) -> String {
    let options = PgConnectOptions::from_str(env.settings.platform.database.url.expose()).unwrap();
    format!("{}:{}", options.get_host(), options.get_port())
}

async fn outbox_rows(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_batch_costs_two_round_trips_to_postgresql() {
    let env = TestEnv::new().await;
    let schema = "relay_round_trips";
    let pool = bus_tables(&env, schema).await;
    let (connection, channel) = env.amqp_channel().await;
    let queue = declare_counter_queue(&env, &channel, schema).await;
    let proxy = CountingProxy::start(server_address(&env)).await;
    let relay_pool = pool_through(&env, &proxy, schema);
    let relay = Relay::new(
        relay_pool.clone(),
        Bus::new(&env.settings.platform.amqp),
        schema,
        &env.settings.platform.outbox,
    );
    // Writers use the direct pool: only the relay's traffic is counted.
    let handle = ServiceHandle::new(pool.clone(), relay.waker());

    // The first batch opens the relay's connection.
    enqueue_submitted(&handle, 1).await;
    assert_eq!(relay.publish_due_batch().await.unwrap().published, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;

    for batch in 0..3 {
        enqueue_submitted(&handle, 10).await;
        let before = proxy.round_trips();
        let outcome = relay.publish_due_batch().await.unwrap();
        assert_eq!(outcome.published, 10, "batch {batch}");
        // Anything sqlx does after handing the batch back counts too.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            proxy.round_trips() - before,
            2,
            "batch {batch}: BEGIN with the SELECT, then the DELETE with the COMMIT"
        );
    }
    assert_eq!(outbox_rows(&pool).await, 0);
    assert_eq!(env.queue_depth(&queue).await, 31);

    let _ = channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
    crate::harness::close_quietly(connection).await;
    drop(relay);
    relay_pool.close().await;
    pool.close().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_dropped_half_way_leaves_its_rows_to_the_next_batch() {
    let env = TestEnv::new().await;
    let schema = "relay_dropped_batch";
    let pool = bus_tables(&env, schema).await;
    let (connection, channel) = env.amqp_channel().await;
    let queue = declare_counter_queue(&env, &channel, schema).await;
    let bus = Bus::new(&env.settings.platform.amqp);
    let (relay, handle) = relay_with_handle(&env, &pool, &bus, schema);

    // Warm: the relay keeps a connection from here on.
    enqueue_submitted(&handle, 1).await;
    assert_eq!(relay.publish_due_batch().await.unwrap().published, 1);
    enqueue_submitted(&handle, 10).await;
    // Dropped at the timer's next tick (about a millisecond): after its
    // locking SELECT at the earliest, before its DELETE and COMMIT, so its
    // rows may have been published already; the next batch publishes them
    // again (at least once; consumers drop the repeat by event ID).
    let dropped = tokio::time::timeout(Duration::ZERO, relay.publish_due_batch()).await;
    assert!(dropped.is_err(), "the batch was cut short");

    // Neither the same relay nor another one waits on its locks.
    let other = Relay::new(pool.clone(), bus, schema, &env.settings.platform.outbox);
    let published = Arc::new(AtomicUsize::new(0));
    eventually(
        Duration::from_secs(10),
        "the rows of the dropped batch are published",
        || {
            let (relay, other, published) = (relay.clone(), other.clone(), published.clone());
            async move {
                let now = relay.publish_due_batch().await.unwrap().published
                    + other.publish_due_batch().await.unwrap().published;
                published.fetch_add(now, Ordering::SeqCst) + now >= 10
            }
        },
    )
    .await;
    assert_eq!(outbox_rows(&pool).await, 0);
    eventually(
        Duration::from_secs(10),
        "the queue holds every event at least once",
        || {
            let env = &env;
            let queue = &queue;
            async move { env.queue_depth(queue).await >= 11 }
        },
    )
    .await;

    let _ = channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
    crate::harness::close_quietly(connection).await;
    drop((relay, other));
    pool.close().await;
    env.cleanup().await;
}
