//! Work a service does on a clock (pruning, sweeps): once at start, then
//! every interval until shutdown. Each tick handles its own errors, so a
//! failed tick is simply tried again at the next one; the loop itself is
//! supervised like any other task ([`crate::service::ServiceContext::spawn_loop`]).

use std::future::Future;
use std::time::Duration;

use crate::Shutdown;

/// Runs `tick` now and then every `interval` until `shutdown`.
pub async fn run_every<F, Fut>(interval: Duration, shutdown: Shutdown, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tick() => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Runs `batch` again and again while it finds work (returns more than
/// zero), then waits for a wake-up on `wake`, `poll` or shutdown: the loop of
/// a worker that drains a table of due rows as they commit. A failed batch
/// is logged (as `what`) and waited out like an idle one.
pub async fn drain_on_wake<F, Fut>(
    what: &str,
    mut wake: tokio::sync::watch::Receiver<u64>,
    poll: Duration,
    shutdown: Shutdown,
    mut batch: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<usize>>,
{
    loop {
        let busy = match batch().await {
            Ok(count) => count > 0,
            Err(error) => {
                tracing::warn!(%error, "{what} batch failed");
                false
            }
        };
        if busy {
            if shutdown.is_cancelled() {
                return;
            }
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = wake.changed() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn ticks_at_start_and_stops_at_shutdown_even_mid_wait() {
        let shutdown = Shutdown::new();
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticked = Arc::new(tokio::sync::Notify::new());
        let (counter, notify) = (ticks.clone(), ticked.clone());
        let task = tokio::spawn(run_every(
            Duration::from_secs(3600),
            shutdown.clone(),
            move || {
                let (counter, notify) = (counter.clone(), notify.clone());
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    notify.notify_one();
                }
            },
        ));
        ticked.notified().await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("returns at shutdown, not after the interval")
            .unwrap();
        assert_eq!(ticks.load(Ordering::SeqCst), 1);
    }
}
