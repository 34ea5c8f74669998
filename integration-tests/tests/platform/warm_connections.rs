//! `WarmPool` against a real PostgreSQL: a released connection serves the
//! next request as it is; anything else goes back through sqlx; the cache
//! never keeps the whole pool, empties when idle, and never holds up
//! closing the pool.

use std::time::Duration;

use cpm_runtime::db::warm::WarmPool;
use sqlx::PgPool;

use crate::harness::{TestEnv, eventually};

async fn pool_of(env: &TestEnv, max_connections: u32) -> PgPool {
    let mut config = env.settings.platform.database.clone();
    config.max_connections = max_connections;
    cpm_runtime::db::pool(&config, "public").unwrap()
}

async fn backend_pid(connection: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(connection)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_connection_serves_the_next_request_and_any_other_goes_back_to_the_pool() {
    let env = TestEnv::new().await;
    let pool = pool_of(&env, 3).await;
    let warm = WarmPool::new(pool.clone());

    let mut first = warm.acquire().await.unwrap();
    let pid = backend_pid(&mut first).await;
    first.release();
    assert_eq!(warm.idle(), 1);

    let mut second = warm.acquire().await.unwrap();
    assert_eq!(warm.idle(), 0);
    assert_eq!(
        backend_pid(&mut second).await,
        pid,
        "the warm connection is reused"
    );
    drop(second);
    assert_eq!(warm.idle(), 0, "a connection not released is not kept");

    // A query cancelled half-way leaves the connection to sqlx, and the
    // next caller still gets a working one.
    let mut cancelled = warm.acquire().await.unwrap();
    let timed_out = tokio::time::timeout(
        Duration::from_millis(200),
        sqlx::query("SELECT pg_sleep(5)").execute(&mut *cancelled),
    )
    .await;
    assert!(timed_out.is_err());
    drop(cancelled);
    assert_eq!(warm.idle(), 0);
    let mut next = warm.acquire().await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *next)
        .await
        .unwrap();
    assert_eq!(one, 1);
    next.release();

    drop(warm);
    pool.close().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_keeps_all_but_one_connection_and_hands_them_back_when_idle_or_closing() {
    let env = TestEnv::new().await;
    let pool = pool_of(&env, 3).await;
    let warm = WarmPool::new(pool.clone());

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(warm.acquire().await.unwrap());
    }
    for connection in held {
        connection.release();
    }
    assert_eq!(
        warm.idle(),
        2,
        "one connection always goes back to the pool"
    );
    eventually(
        Duration::from_secs(5),
        "idle connections go back to the pool",
        || async { warm.idle() == 0 },
    )
    .await;

    warm.acquire().await.unwrap().release();
    assert_eq!(warm.idle(), 1);
    tokio::time::timeout(Duration::from_secs(5), pool.close())
        .await
        .expect("closing the pool is not held up by warm connections");
    assert_eq!(warm.idle(), 0);
    env.cleanup().await;
}
