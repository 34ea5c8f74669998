//! One retry policy for every reconnect and retry loop in the platform:
//! exponential back-off with jitter, from `backon`, so that the replicas
//! that lost the same dependency at the same moment do not all come back
//! in lockstep.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::BackoffBuilder as _;

use crate::Shutdown;

/// Pauses that never run out: from `first`, doubling up to `max`, each with
/// jitter.
pub struct Backoff {
    delays: backon::ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// The pause before the next attempt.
    pub fn next_pause(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// The pause after `failures` failures (0: the first pause).
    pub fn pause_after(mut self, failures: usize) -> Duration {
        for _ in 0..failures {
            self.next_pause();
        }
        self.next_pause()
    }
}

/// Pauses from `first`, doubling up to `max`, each with jitter, for ever.
pub fn backoff(first: Duration, max: Duration) -> Backoff {
    let delays = backon::ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build();
    Backoff { delays, max }
}

/// The pauses between attempts to reach a dependency (database, broker):
/// from 200 ms up to 5 s.
pub fn reconnect() -> Backoff {
    backoff(Duration::from_millis(200), Duration::from_secs(5))
}

/// Runs `attempt` until it succeeds, pausing [`reconnect`]'s delays between
/// failures (each logged with `what`); gives up only when `shutdown` fires.
pub async fn until_ok<T, E, F, Fut>(
    what: &str,
    shutdown: &Shutdown,
    mut attempt: F,
) -> anyhow::Result<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delays = reconnect();
    loop {
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let delay = delays.next_pause();
        tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "{what} not reachable yet");
        tokio::select! {
            () = shutdown.cancelled() => anyhow::bail!("shut down while waiting for {what}"),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_with_jitter_and_stay_within_the_ceiling() {
        let mut pauses = backoff(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..12).map(|_| pauses.next_pause()).collect();
        assert!(delays[0] >= Duration::from_millis(100));
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(2)),
            "{delays:?}"
        );
        assert!(delays[11] >= Duration::from_secs(1), "{delays:?}");
    }

    #[tokio::test]
    async fn until_ok_retries_and_stops_at_shutdown() {
        let shutdown = Shutdown::new();
        let mut tries = 0;
        let value = until_ok("a flaky thing", &shutdown, || {
            tries += 1;
            let ok = tries >= 3;
            async move { if ok { Ok(7) } else { Err("not yet") } }
        })
        .await
        .unwrap();
        assert_eq!((value, tries), (7, 3));
        shutdown.cancel();
        let never = until_ok("nothing", &shutdown, || async { Err::<(), _>("down") }).await;
        assert!(never.unwrap_err().to_string().contains("shut down"));
    }
}
