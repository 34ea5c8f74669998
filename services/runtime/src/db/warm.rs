//! Connections kept warm between the requests of a hot path.
//!
//! sqlx tests every connection handed back to its pool with a round trip
//! (a Sync and its ReadyForQuery), even when the work on it finished
//! cleanly. SubmitReferral runs two statements, so that test was a third
//! round trip on every request. A [`WarmConnection`] that its caller
//! declares clean ([`WarmConnection::release`]) goes to a small cache
//! instead and serves the next request as it is. Anything else (an error,
//! a future dropped mid-query) goes back through sqlx, which tests it.
//!
//! Other users of the pool are never starved for long: the cache holds at
//! most `max_connections - 1` connections, gives a connection straight back
//! to the pool while one of its own callers waits for the pool, and hands
//! back every connection idle for longer than [`MAX_IDLE`]. Every
//! connection also goes back through sqlx once it has been warm for
//! [`MAX_WARM`], so sqlx's own checks (its test, `max_lifetime`) still see
//! it regularly under steady load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

/// How long a connection may sit in the cache before it goes back to the pool.
pub const MAX_IDLE: Duration = Duration::from_millis(100);
/// How long a connection may go from request to request without sqlx.
pub const MAX_WARM: Duration = Duration::from_secs(60);

/// A cached connection: when it left sqlx, and since when it is idle.
struct Idle {
    connection: PoolConnection<Postgres>,
    taken: Instant,
    since: Instant,
}

/// A pool's front for one hot path. Cloning shares the cache.
#[derive(Clone)]
pub struct WarmPool {
    shared: Arc<Shared>,
}

struct Shared {
    pool: PgPool,
    idle: Mutex<Vec<Idle>>,
    capacity: usize,
    /// Callers of [`WarmPool::acquire`] waiting for the pool.
    waiting: AtomicUsize,
}

impl WarmPool {
    /// Spawns the task that hands idle connections back, so it must be
    /// called inside a Tokio runtime.
    pub fn new(pool: PgPool) -> Self {
        let capacity = (pool.options().get_max_connections() as usize).saturating_sub(1);
        let shared = Arc::new(Shared {
            pool,
            idle: Mutex::new(Vec::new()),
            capacity,
            waiting: AtomicUsize::new(0),
        });
        tokio::spawn(hand_back_idle(Arc::downgrade(&shared)));
        Self { shared }
    }

    /// The most recently released warm connection, else one from the pool.
    pub async fn acquire(&self) -> Result<WarmConnection, sqlx::Error> {
        let cached = self.shared.lock_idle().pop();
        let (connection, taken) = match cached {
            Some(idle) => (idle.connection, idle.taken),
            None => {
                let _waiting = Waiting::count(&self.shared.waiting);
                (self.shared.pool.acquire().await?, Instant::now())
            }
        };
        Ok(WarmConnection {
            connection: Some(connection),
            shared: self.shared.clone(),
            taken,
            clean: false,
        })
    }

    /// How many connections the cache holds now.
    pub fn idle(&self) -> usize {
        self.shared.lock_idle().len()
    }
}

impl Shared {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic while holding this lock leaves a valid Vec behind.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Counts a caller waiting for the pool, until dropped (also on cancellation).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection from a [`WarmPool`]. Dropped without [`release`](Self::release),
/// it goes back to the pool through sqlx's test.
pub struct WarmConnection {
    connection: Option<PoolConnection<Postgres>>,
    shared: Arc<Shared>,
    /// When it left sqlx's pool.
    taken: Instant,
    clean: bool,
}

impl WarmConnection {
    /// Declares the connection clean: every statement run on it completed
    /// and no transaction is open. It then skips sqlx's test and waits in
    /// the cache for the next request.
    pub fn release(mut self) {
        self.clean = true;
    }
}

impl std::ops::Deref for WarmConnection {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.connection.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for WarmConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.connection.as_mut().expect("present until dropped")
    }
}

impl Drop for WarmConnection {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        let shared = &self.shared;
        if self.clean
            && self.taken.elapsed() < MAX_WARM
            && !shared.pool.is_closed()
            && shared.waiting.load(Ordering::SeqCst) == 0
        {
            let mut idle = shared.lock_idle();
            if idle.len() < shared.capacity {
                idle.push(Idle {
                    connection,
                    taken: self.taken,
                    since: Instant::now(),
                });
                return;
            }
        }
        // Back to the pool: sqlx tests it there, off this task.
        drop(connection);
    }
}

/// Every half [`MAX_IDLE`], hands back the connections idle for longer,
/// and all of them once the pool is closing (its `close` waits for them).
async fn hand_back_idle(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(MAX_IDLE / 2).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let closing = shared.pool.is_closed();
        let stale: Vec<_> = {
            let mut idle = shared.lock_idle();
            let now = Instant::now();
            let (stale, fresh) = idle
                .drain(..)
                .partition(|idle| closing || now.duration_since(idle.since) > MAX_IDLE);
            *idle = fresh;
            stale
        };
        drop(stale);
        if closing {
            return;
        }
    }
}
