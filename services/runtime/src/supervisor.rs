//! One supervisor for a process's background work: relays, consumers,
//! workers, listeners, stream pumps and the health monitor.
//!
//! A task that returns an error, panics, or (when it should run until
//! shutdown) returns early is logged with its name and started afresh
//! after a back-off that doubles up to a ceiling. While an essential task
//! of a service is down, [`Supervisor::service_up`] is false and the
//! service's health turns NOT_SERVING. A task that keeps failing (more than
//! `max_restarts` restarts within `restart_window`) is given up on: the
//! supervisor stops the process, which then exits non-zero so that its
//! orchestrator starts a fresh one. Without this a background task that
//! died did so silently while gRPC and health carried on (issue 9).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::Shutdown;

/// How a supervised task is restarted (`[supervision]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SupervisionConfig {
    /// The pause before the first restart; it doubles with each failure.
    pub restart_backoff_ms: u64,
    /// The longest pause between restarts.
    pub max_backoff_ms: u64,
    /// Restarts allowed within `restart_window_secs` before the process
    /// gives up and exits non-zero.
    pub max_restarts: u32,
    pub restart_window_secs: u64,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self {
            restart_backoff_ms: 100,
            max_backoff_ms: 30_000,
            max_restarts: 10,
            restart_window_secs: 300,
        }
    }
}

impl SupervisionConfig {
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        use crate::config::ConfigError;
        if self.restart_backoff_ms == 0 {
            return Err(ConfigError::invalid(
                "supervision.restart_backoff_ms",
                "must be at least 1",
            ));
        }
        if self.max_backoff_ms < self.restart_backoff_ms {
            return Err(ConfigError::invalid(
                "supervision.max_backoff_ms",
                "must not be below supervision.restart_backoff_ms",
            ));
        }
        if self.max_restarts == 0 {
            return Err(ConfigError::invalid(
                "supervision.max_restarts",
                "must be at least 1",
            ));
        }
        if self.restart_window_secs == 0 {
            return Err(ConfigError::invalid(
                "supervision.restart_window_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// When a task's end is expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Runs until shutdown; returning before it is a failure.
    UntilShutdown,
    /// Finishes by itself (a client's stream, say); returning `Ok` is done.
    UntilDone,
}

/// What the supervisor knows of a task before starting it.
#[derive(Clone, Debug)]
pub struct TaskSpec {
    /// Shown in logs, e.g. `referral-intake.relay`.
    pub name: String,
    /// The service whose health depends on it ("" for the process).
    pub service: &'static str,
    /// While down, its service is NOT_SERVING.
    pub essential: bool,
    pub lifetime: Lifetime,
}

impl TaskSpec {
    /// A task its service cannot serve without, running until shutdown.
    pub fn essential(service: &'static str, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            service,
            essential: true,
            lifetime: Lifetime::UntilShutdown,
        }
    }

    /// A task serving one client, finished when it returns `Ok`.
    pub fn per_client(service: &'static str, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            service,
            essential: false,
            lifetime: Lifetime::UntilDone,
        }
    }
}

struct TaskState {
    spec: TaskSpec,
    up: bool,
    restarts: u32,
}

struct Inner {
    shutdown: Shutdown,
    tracker: TaskTracker,
    config: SupervisionConfig,
    next_id: AtomicU64,
    tasks: Mutex<HashMap<u64, TaskState>>,
    /// Bumped whenever a task goes down or comes back up.
    changed: watch::Sender<u64>,
    gave_up_on: Mutex<Option<String>>,
}

/// Starts, watches and restarts a process's background tasks.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl Supervisor {
    pub fn new(config: SupervisionConfig, shutdown: Shutdown) -> Self {
        Self {
            inner: Arc::new(Inner {
                shutdown,
                tracker: TaskTracker::new(),
                config,
                next_id: AtomicU64::new(0),
                tasks: Mutex::new(HashMap::new()),
                changed: watch::channel(0).0,
                gave_up_on: Mutex::new(None),
            }),
        }
    }

    /// Runs the future `start` makes, and makes a new one whenever the last
    /// failed, until shutdown (or, for [`Lifetime::UntilDone`], success).
    pub fn spawn<F, Fut>(&self, spec: TaskSpec, start: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.tasks.lock().unwrap().insert(
            id,
            TaskState {
                spec: spec.clone(),
                up: true,
                restarts: 0,
            },
        );
        self.inner
            .tracker
            .spawn(supervise(self.inner.clone(), id, spec, start));
    }

    /// True while every essential task of `service` runs.
    pub fn service_up(&self, service: &str) -> bool {
        self.inner
            .tasks
            .lock()
            .unwrap()
            .values()
            .all(|task| !(task.spec.essential && task.spec.service == service) || task.up)
    }

    /// Restarts so far of the tasks named `name`.
    pub fn restarts(&self, name: &str) -> u32 {
        self.inner
            .tasks
            .lock()
            .unwrap()
            .values()
            .filter(|task| task.spec.name == name)
            .map(|task| task.restarts)
            .sum()
    }

    /// Changes whenever a task goes down or comes back.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// The task the supervisor gave up on, when it did: the process must
    /// exit non-zero.
    pub fn gave_up_on(&self) -> Option<String> {
        self.inner.gave_up_on.lock().unwrap().clone()
    }

    /// Waits for every task to finish after shutdown, at most `timeout`.
    pub async fn drain(&self, timeout: Duration) {
        self.inner.tracker.close();
        if tokio::time::timeout(timeout, self.inner.tracker.wait())
            .await
            .is_err()
        {
            let left: Vec<String> = self
                .inner
                .tasks
                .lock()
                .unwrap()
                .values()
                .map(|task| task.spec.name.clone())
                .collect();
            tracing::warn!(?left, "background work did not stop in time");
        }
    }
}

impl Inner {
    fn set_up(&self, id: u64, up: bool) {
        if let Some(task) = self.tasks.lock().unwrap().get_mut(&id)
            && task.up != up
        {
            task.up = up;
            if up {
                task.restarts += 1;
            }
            self.changed.send_modify(|n| *n += 1);
        }
    }

    fn remove(&self, id: u64) {
        self.tasks.lock().unwrap().remove(&id);
    }
}

/// Why a run of a task ended, or `None` when it ended as it should.
fn failure(
    result: Result<anyhow::Result<()>, tokio::task::JoinError>,
    lifetime: Lifetime,
) -> Option<String> {
    match result {
        Ok(Ok(())) if lifetime == Lifetime::UntilDone => None,
        Ok(Ok(())) => Some("returned before shutdown".to_owned()),
        Ok(Err(error)) => Some(format!("failed: {error:#}")),
        Err(join) if join.is_panic() => {
            let payload = join.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text payload".to_owned());
            Some(format!("panicked: {message}"))
        }
        Err(_) => Some("was cancelled".to_owned()),
    }
}

async fn supervise<F, Fut>(inner: Arc<Inner>, id: u64, spec: TaskSpec, mut start: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let config = &inner.config;
    let window = Duration::from_secs(config.restart_window_secs);
    let restarts = || {
        crate::retry::backoff(
            Duration::from_millis(config.restart_backoff_ms),
            Duration::from_millis(config.max_backoff_ms),
        )
    };
    let mut delays = restarts();
    let mut recent: VecDeque<Instant> = VecDeque::new();
    loop {
        let started = Instant::now();
        // A task of its own, so a panic ends that run, not the supervisor.
        let result = tokio::spawn(start()).await;
        let stopping = inner.shutdown.is_cancelled();
        let Some(reason) = failure(result, spec.lifetime) else {
            break;
        };
        if stopping {
            tracing::debug!(task = %spec.name, %reason, "background task ended at shutdown");
            break;
        }
        inner.set_up(id, false);
        let now = Instant::now();
        if now.duration_since(started) >= window {
            // It had run well for a whole window: a fresh failure.
            delays = restarts();
        }
        recent.retain(|at| now.duration_since(*at) < window);
        recent.push_back(now);
        if recent.len() > config.max_restarts as usize {
            tracing::error!(
                task = %spec.name,
                service = spec.service,
                %reason,
                restarts = recent.len() - 1,
                window_secs = window.as_secs(),
                "background task keeps failing; giving up, the process stops and exits non-zero"
            );
            inner
                .gave_up_on
                .lock()
                .unwrap()
                .get_or_insert_with(|| spec.name.clone());
            inner.shutdown.cancel();
            break;
        }
        let backoff = delays.next_pause();
        tracing::error!(
            task = %spec.name,
            service = spec.service,
            %reason,
            restart_in_ms = backoff.as_millis() as u64,
            "background task stopped; restarting"
        );
        tokio::select! {
            () = inner.shutdown.cancelled() => break,
            () = tokio::time::sleep(backoff) => {}
        }
        inner.set_up(id, true);
    }
    inner.remove(id);
    inner.changed.send_modify(|n| *n += 1);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    fn quick() -> SupervisionConfig {
        SupervisionConfig {
            restart_backoff_ms: 10,
            max_backoff_ms: 40,
            max_restarts: 3,
            restart_window_secs: 60,
        }
    }

    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_task_is_restarted_and_its_service_is_down_meanwhile() {
        let shutdown = Shutdown::new();
        let supervisor = Supervisor::new(
            SupervisionConfig {
                restart_backoff_ms: 300,
                ..quick()
            },
            shutdown.clone(),
        );
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let stop = shutdown.clone();
        supervisor.spawn(TaskSpec::essential("svc", "svc.worker"), move || {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            let stop = stop.clone();
            async move {
                assert!(run > 0, "first run fails");
                stop.cancelled().await;
                Ok(())
            }
        });
        until("the task is down", || !supervisor.service_up("svc")).await;
        assert!(supervisor.service_up("other"), "other services unaffected");
        until("the task is back", || supervisor.service_up("svc")).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(supervisor.restarts("svc.worker"), 1);
        shutdown.cancel();
        supervisor.drain(Duration::from_secs(5)).await;
        assert_eq!(supervisor.gave_up_on(), None);
    }

    #[tokio::test]
    async fn errors_and_early_returns_are_failures_but_a_finished_client_task_is_not() {
        assert_eq!(failure(Ok(Ok(())), Lifetime::UntilDone), None);
        assert_eq!(
            failure(Ok(Ok(())), Lifetime::UntilShutdown).as_deref(),
            Some("returned before shutdown")
        );
        assert_eq!(
            failure(Ok(Err(anyhow::anyhow!("boom"))), Lifetime::UntilDone).as_deref(),
            Some("failed: boom")
        );
        let panicked = tokio::spawn(async { panic!("kaboom") }).await;
        assert_eq!(
            failure(panicked.map(|()| Ok(())), Lifetime::UntilShutdown).as_deref(),
            Some("panicked: kaboom")
        );
    }

    #[tokio::test]
    async fn a_task_that_keeps_failing_is_given_up_on_and_stops_the_process() {
        let shutdown = Shutdown::new();
        let supervisor = Supervisor::new(quick(), shutdown.clone());
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        supervisor.spawn(TaskSpec::essential("svc", "svc.doomed"), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { anyhow::bail!("always") }
        });
        tokio::time::timeout(Duration::from_secs(5), shutdown.cancelled())
            .await
            .expect("the supervisor stops the process");
        supervisor.drain(Duration::from_secs(5)).await;
        assert_eq!(supervisor.gave_up_on().as_deref(), Some("svc.doomed"));
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "the first run and 3 restarts"
        );
    }

    #[tokio::test]
    async fn a_finished_client_task_is_not_restarted() {
        let shutdown = Shutdown::new();
        let supervisor = Supervisor::new(quick(), shutdown.clone());
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        supervisor.spawn(TaskSpec::per_client("svc", "svc.stream"), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(!shutdown.is_cancelled());
        shutdown.cancel();
        supervisor.drain(Duration::from_secs(5)).await;
    }

    #[test]
    fn bad_settings_are_refused_with_their_key() {
        let zero = SupervisionConfig {
            max_restarts: 0,
            ..SupervisionConfig::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .to_string()
                .contains("supervision.max_restarts")
        );
        let inverted = SupervisionConfig {
            max_backoff_ms: 1,
            restart_backoff_ms: 10,
            ..SupervisionConfig::default()
        };
        assert!(
            inverted
                .validate()
                .unwrap_err()
                .to_string()
                .contains("supervision.max_backoff_ms")
        );
        assert!(SupervisionConfig::default().validate().is_ok());
    }
}
