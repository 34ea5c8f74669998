//! The webhook worker. It claims endpoints with due deliveries in a short
//! transaction (a lease on the webhook: at most one batch in flight per
//! endpoint, across every replica), posts outside any transaction, several
//! endpoints at once, and records the attempts in short transactions of
//! their own, a run of one endpoint's posts at a time (see
//! [`WebhookWorker::post_round`]), so a slow or dead endpoint delays only
//! itself and a busy one costs a few statements a run, not five a post. A
//! claim whose posts go well serves what became due meanwhile, and a
//! wake-up for agencies whose endpoints the worker already holds makes no
//! claim, so a busy endpoint costs about one claim a second, not one a
//! notice.
//! Endpoints whose last attempt failed or was slow are served in a lane of
//! their own, a quarter the size, and a post still open after the slow mark
//! stops counting in the prompt lane: however many hang, even ones never
//! tried before, the prompt endpoints keep their slots. The lease covers
//! one post and is renewed at each record of attempts, so a worker killed
//! mid-batch holds its endpoints for one lease at most. Each post is signed
//! (see [`crate::signing`]) and goes only to addresses checked just then
//! (see [`crate::destinations`]). A failure is retried with back-off until
//! the retry window ends, then dead-lettered; an endpoint that keeps
//! failing has its circuit opened (see [`crate::retry_policy`]). A delivery
//! row exists once per webhook and notification, so a redelivered event
//! never causes a second post. The body carries IDs and statuses only, and
//! for a discharge the proforma feedback (dates, counts and categories).
//! The first confirmed delivery of a discharge is announced as
//! `feedback.delivered`, so the date the referrer received the feedback is
//! recorded where the case file and the referral are kept.

use std::time::Duration;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use cpm_proto::v1::{DeliveryErrorKind, FeedbackDelivered, NotificationKind};
use cpm_runtime::bus::{ServiceHandle, outbox};
use cpm_runtime::crypto::KeyRing;
use cpm_runtime::grpc::values::timestamp;
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::destinations::{DestinationPolicy, GuardedResolver, Lookup};
use crate::retry_policy::{AfterFailure, Breaker, RetryPolicy};
use crate::signing::{self, WebhookSecret};
use crate::webhook_store::{self as store, ClaimedWebhook, DueDelivery, Lane, state};

pub struct WebhookWorker {
    handle: ServiceHandle,
    client: reqwest::Client,
    keys: KeyRing,
    policy: Arc<DestinationPolicy>,
    lookup: Lookup,
    retry: RetryPolicy,
    timeout: Duration,
    poll_interval: Duration,
    /// Endpoints posted to at once by this worker, in the prompt lane.
    concurrency: usize,
    /// Endpoints posted to at once in the suspect lane.
    suspect_concurrency: usize,
    /// A post open this long is slow (see [`crate::Config::webhook_slow_ms`]).
    slow_mark: Duration,
    /// Deliveries posted per claim of one endpoint (in sequence order).
    batch: i64,
}

/// What became of one post.
#[derive(Debug)]
struct Outcome {
    status_code: i32,
    latency_ms: i32,
    error: DeliveryErrorKind,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        self.error == DeliveryErrorKind::None
    }

    /// The error as the delivery shows it: a category and a status, never
    /// an address or a message from the agency's network.
    fn description(&self) -> Option<String> {
        match self.error {
            DeliveryErrorKind::None => None,
            DeliveryErrorKind::HttpStatus => {
                Some(format!("endpoint answered {}", self.status_code))
            }
            DeliveryErrorKind::Timeout => Some("timed out".into()),
            DeliveryErrorKind::Connection => Some("could not connect".into()),
            DeliveryErrorKind::Tls => Some("TLS handshake failed".into()),
            DeliveryErrorKind::DestinationRefused => {
                Some(format!("host {}", crate::destinations::REFUSED_MESSAGE))
            }
            DeliveryErrorKind::Other | DeliveryErrorKind::Unspecified => {
                Some("request failed".into())
            }
        }
    }
}

/// A post made and not yet recorded.
struct Posted<'a> {
    delivery: &'a DueDelivery,
    attempted_at: chrono::DateTime<Utc>,
    outcome: Outcome,
}

/// A claim's posts are recorded at least this often, whatever the batch:
/// each record renews the lease, which covers one post and a margin.
const RECORD_AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// Sorts a client error into a category.
fn error_kind(error: &reqwest::Error) -> DeliveryErrorKind {
    if crate::destinations::refused_in(error) {
        return DeliveryErrorKind::DestinationRefused;
    }
    if error.is_timeout() {
        return DeliveryErrorKind::Timeout;
    }
    let mut chain = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        chain.push_str(&error.to_string().to_ascii_lowercase());
        chain.push(' ');
        source = error.source();
    }
    if ["certificate", "tls", "handshake"]
        .iter()
        .any(|word| chain.contains(word))
    {
        DeliveryErrorKind::Tls
    } else if error.is_connect() {
        DeliveryErrorKind::Connection
    } else {
        DeliveryErrorKind::Other
    }
}

/// The agencies named by the NOTIFYs since the worker last looked (see
/// [`crate::db::notify_committed`]); an empty name stands for any agency.
#[derive(Clone, Debug, Default)]
pub struct WokenAgencies(Arc<std::sync::Mutex<std::collections::HashSet<String>>>);

impl WokenAgencies {
    pub fn note(&self, agency_id: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(agency_id.to_owned());
    }

    fn take(&self) -> std::collections::HashSet<String> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// An endpoint a delivery task holds.
struct Held {
    webhook_id: Uuid,
    lane: Lane,
    since: tokio::time::Instant,
    agency_id: String,
    /// The agency's open webhooks when this one was claimed.
    agency_webhooks: usize,
}

/// Whether a wake-up for `woken` agencies can find work no task here
/// already has: false only when every agency named has all its open
/// webhooks held by this worker. Those tasks serve what became due before
/// they release (see [`WebhookWorker::deliver_batch`]), and the worker
/// claims again as each ends, so nothing waits on the skipped claim.
fn wake_needs_claim(
    held: &HashMap<tokio::task::Id, Held>,
    woken: &std::collections::HashSet<String>,
) -> bool {
    woken.is_empty()
        || woken.iter().any(|agency| {
            let mine: Vec<&Held> = held
                .values()
                .filter(|task| task.agency_id == *agency)
                .collect();
            mine.is_empty()
                || mine.len() < mine.iter().map(|t| t.agency_webhooks).max().unwrap_or(0)
        })
}

impl Held {
    /// The lane whose slot the task takes: a prompt post gives its slot up
    /// once it is slow, so endpoints never tried before that hang hold the
    /// prompt lane for the slow mark only, not the whole timeout.
    fn counts_in(&self, slow_mark: Duration) -> Lane {
        if self.lane == Lane::Prompt && self.since.elapsed() < slow_mark {
            Lane::Prompt
        } else {
            Lane::Suspect
        }
    }
}

/// How often pending deliveries held back past their window are dead-lettered.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// What a lease adds to the post timeout: time to record the attempt while
/// the database is slow.
const LEASE_MARGIN: Duration = Duration::from_secs(15);

impl WebhookWorker {
    pub fn new(
        handle: ServiceHandle,
        config: &crate::Config,
        keys: KeyRing,
        policy: Arc<DestinationPolicy>,
        lookup: Lookup,
    ) -> anyhow::Result<Self> {
        let timeout = Duration::from_secs(config.webhook_timeout_secs);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect to addresses this worker never checked.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
                lookup: lookup.clone(),
            }))
            .build()?;
        Ok(Self {
            handle,
            client,
            keys,
            policy,
            lookup,
            retry: config.retry_policy(),
            timeout,
            poll_interval: Duration::from_millis(config.webhook_poll_interval_ms),
            concurrency: config.webhook_concurrency.max(1),
            suspect_concurrency: (config.webhook_concurrency / 4).max(1),
            slow_mark: Duration::from_millis(config.webhook_slow_ms),
            batch: i64::from(config.webhook_batch.max(1)),
        })
    }

    /// How long a claim holds an endpoint: one post and its record, with
    /// room to spare; renewed at each recorded attempt, so only a worker that
    /// died leaves a claim to expire, and that within one lease.
    fn lease(&self) -> Duration {
        self.timeout + LEASE_MARGIN
    }

    fn lane_size(&self, lane: Lane) -> usize {
        match lane {
            Lane::Prompt => self.concurrency,
            Lane::Suspect => self.suspect_concurrency,
        }
    }

    pub async fn run(
        self: Arc<Self>,
        mut wake: watch::Receiver<u64>,
        woken: WokenAgencies,
        shutdown: cpm_runtime::Shutdown,
    ) {
        let mut in_flight = JoinSet::new();
        // Which endpoint each task holds, from which lane and since when, to
        // count each lane's free slots and release what shutdown abandons.
        let mut held: HashMap<tokio::task::Id, Held> = HashMap::new();
        let mut last_sweep: Option<tokio::time::Instant> = None;
        // False after a wake-up whose agencies this worker already serves.
        let mut claim_now = true;
        loop {
            if last_sweep.is_none_or(|at| at.elapsed() >= SWEEP_INTERVAL) {
                last_sweep = Some(tokio::time::Instant::now());
                if let Err(error) = self.dead_letter_expired().await {
                    tracing::warn!(%error, "webhook dead-letter sweep failed");
                }
            }
            // Each lane claims what its free slots take; what stays due waits
            // for a slot to free, a wake-up or the next poll.
            let free: Vec<(Lane, usize)> = [Lane::Prompt, Lane::Suspect]
                .into_iter()
                .map(|lane| {
                    let busy = held
                        .values()
                        .filter(|task| task.counts_in(self.slow_mark) == lane)
                        .count();
                    (lane, self.lane_size(lane).saturating_sub(busy))
                })
                .filter(|(_, free)| *free > 0)
                .collect();
            if claim_now && !free.is_empty() {
                match self.claim(&free).await {
                    Ok(batches) => {
                        for (lane, webhook, deliveries) in batches {
                            let webhook_id = webhook.webhook_id;
                            let agency_id = webhook.agency_id.clone();
                            let agency_webhooks =
                                usize::try_from(webhook.agency_webhooks).unwrap_or(usize::MAX);
                            let task =
                                in_flight.spawn(self.clone().deliver_batch(webhook, deliveries));
                            held.insert(
                                task.id(),
                                Held {
                                    webhook_id,
                                    lane,
                                    since: tokio::time::Instant::now(),
                                    agency_id,
                                    agency_webhooks,
                                },
                            );
                        }
                    }
                    Err(error) => tracing::warn!(%error, "claiming webhook deliveries failed"),
                }
            }
            // The next prompt post to turn slow frees a prompt slot then.
            let next_slow = held
                .values()
                .filter(|task| task.counts_in(self.slow_mark) == Lane::Prompt)
                .map(|task| task.since + self.slow_mark)
                .min();
            claim_now = true;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(next_slow.unwrap_or_else(tokio::time::Instant::now)),
                    if next_slow.is_some() => {}
                Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    match done {
                        Ok((id, ())) => {
                            held.remove(&id);
                        }
                        Err(error) => {
                            tracing::error!(%error, "webhook delivery task failed");
                            if let Some(Held { webhook_id, .. }) = held.remove(&error.id())
                                && let Ok(mut connection) = self.handle.pool().acquire().await
                            {
                                let _ = store::release_webhook(&mut connection, webhook_id).await;
                            }
                        }
                    }
                }
                _ = wake.changed() => claim_now = wake_needs_claim(&held, &woken.take()),
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
        // Posts under way may finish briefly; the rest are abandoned and
        // their endpoints released for the next worker.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(done) = in_flight.join_next_with_id().await {
                if let Ok((id, ())) = done {
                    held.remove(&id);
                }
            }
        })
        .await;
        in_flight.shutdown().await;
        if !held.is_empty()
            && let Ok(mut connection) = self.handle.pool().acquire().await
        {
            for Held { webhook_id, .. } in held.into_values() {
                let _ = store::release_webhook(&mut connection, webhook_id).await;
            }
        }
    }

    async fn dead_letter_expired(&self) -> anyhow::Result<()> {
        let mut connection = self.handle.pool().acquire().await?;
        let dead = store::dead_letter_expired(
            &mut connection,
            self.retry.window.as_secs_f64(),
            self.lease().as_secs_f64(),
        )
        .await?;
        if dead > 0 {
            tracing::info!(dead, "webhook deliveries dead-lettered after their window");
        }
        Ok(())
    }

    /// Claims endpoints and their due deliveries, up to each lane's free
    /// slots, in one short transaction.
    async fn claim(
        &self,
        free: &[(Lane, usize)],
    ) -> anyhow::Result<Vec<(Lane, ClaimedWebhook, Vec<DueDelivery>)>> {
        let mut transaction = self.handle.begin().await?;
        let mut webhooks = Vec::new();
        for &(lane, limit) in free {
            let claimed = store::claim_webhooks(
                &mut transaction,
                lane,
                i64::try_from(limit).unwrap_or(i64::MAX),
                self.lease().as_secs_f64(),
                i32::try_from(self.slow_mark.as_millis()).unwrap_or(i32::MAX),
            )
            .await?;
            webhooks.extend(claimed.into_iter().map(|webhook| (lane, webhook)));
        }
        let mut batches = Vec::with_capacity(webhooks.len());
        for (lane, webhook) in webhooks {
            let breaker = Breaker {
                consecutive_failures: webhook.consecutive_failures,
                open_until: webhook.circuit_open_until,
            };
            // A tripped circuit lets one probe through at a time.
            let batch = if breaker.is_tripped(&self.retry) {
                1
            } else {
                self.batch
            };
            let deliveries =
                store::due_deliveries(&mut transaction, webhook.webhook_id, batch).await?;
            batches.push((lane, webhook, deliveries));
        }
        transaction.commit().await?;
        metrics::counter!(
            "cpm_webhook_claims_total",
            "outcome" => if batches.is_empty() { "empty" } else { "claimed" },
        )
        .increment(1);
        Ok(batches)
    }

    /// Posts one endpoint's claimed deliveries in order, stopping at the
    /// first failure (the rest stay due), then ends the claim. While every
    /// post succeeds and the claim is young (under half the slow mark), it
    /// serves what became due meanwhile under the same lease: a busy
    /// endpoint's next notices arrive while it is being posted to, and
    /// releasing and claiming it again for each cost two transactions and
    /// an empty claim for every wake-up in between.
    async fn deliver_batch(
        self: Arc<Self>,
        webhook: ClaimedWebhook,
        mut deliveries: Vec<DueDelivery>,
    ) {
        let claimed_at = tokio::time::Instant::now();
        let secrets = self.secrets_of(&webhook);
        let mut breaker = Breaker {
            consecutive_failures: webhook.consecutive_failures,
            open_until: webhook.circuit_open_until,
        };
        loop {
            if !self
                .post_round(&webhook, &secrets, &deliveries, &mut breaker)
                .await
            {
                break;
            }
            if claimed_at.elapsed() >= self.slow_mark / 2 {
                break;
            }
            deliveries = match self.still_due(webhook.webhook_id).await {
                Ok(due) if !due.is_empty() => due,
                _ => break,
            };
        }
        self.release(webhook.webhook_id).await;
    }

    /// Posts `deliveries` in order and records the attempts a transaction
    /// at a time rather than one each: after a failure (the round stops
    /// there, the rest stay due), after a post that ends a second or more
    /// since the last record (so the lease stays renewed), and at the
    /// round's end. False when the claim should end: a post failed, or its
    /// record did not go through. A worker killed between a post and its
    /// record sends it again after the lease, with the same `webhook-id`,
    /// as it did when the record followed each post.
    async fn post_round(
        &self,
        webhook: &ClaimedWebhook,
        secrets: &[WebhookSecret],
        deliveries: &[DueDelivery],
        breaker: &mut Breaker,
    ) -> bool {
        let mut unrecorded = Vec::new();
        let mut recorded_at = tokio::time::Instant::now();
        let mut rest = deliveries.iter().peekable();
        while let Some(delivery) = rest.next() {
            let attempted_at = Utc::now();
            let outcome = self.post(webhook, secrets, delivery).await;
            metrics::counter!(
                "cpm_webhook_deliveries_total",
                "outcome" => if outcome.succeeded() { "delivered" } else { "failed" },
            )
            .increment(1);
            metrics::histogram!("cpm_webhook_duration_seconds")
                .record(f64::from(outcome.latency_ms) / 1000.0);
            *breaker = if outcome.succeeded() {
                breaker.after_success()
            } else {
                breaker.after_failure(&self.retry, Utc::now())
            };
            let failed = !outcome.succeeded();
            unrecorded.push(Posted {
                delivery,
                attempted_at,
                outcome,
            });
            if failed || rest.peek().is_none() || recorded_at.elapsed() >= RECORD_AT_LEAST_EVERY {
                if let Err(error) = self.record(webhook, &unrecorded, *breaker).await {
                    // The posts may be sent again (same webhook-id) once the
                    // database answers; the claim is released all the same.
                    tracing::warn!(posts = unrecorded.len(), %error, "recording webhook attempts failed");
                    return false;
                }
                unrecorded.clear();
                recorded_at = tokio::time::Instant::now();
            }
            if failed {
                return false;
            }
        }
        true
    }

    /// The endpoint's deliveries due now, for a claim that goes on.
    async fn still_due(&self, webhook_id: Uuid) -> Result<Vec<DueDelivery>, sqlx::Error> {
        let mut connection = self.handle.pool().acquire().await?;
        store::due_deliveries(&mut connection, webhook_id, self.batch).await
    }

    /// Ends the claim on an endpoint, trying again while the database is
    /// away: a claim left behind would hold every later notice of that
    /// agency until its lease ran out, minutes after the database returned.
    /// Gives up when the lease would have ended anyway.
    async fn release(&self, webhook_id: Uuid) {
        let deadline = tokio::time::Instant::now() + self.lease();
        loop {
            let released = match self.handle.pool().acquire().await {
                Ok(mut connection) => store::release_webhook(&mut connection, webhook_id)
                    .await
                    .map_err(anyhow::Error::from),
                Err(error) => Err(anyhow::Error::from(error)),
            };
            match released {
                Ok(_) => return,
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(%error, "releasing a webhook claim failed; its lease will end it");
                    return;
                }
                Err(error) => {
                    tracing::debug!(%error, "releasing a webhook claim failed, trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The secrets that sign this endpoint's posts, current first; none for
    /// a webhook registered before signing (until its secret is rotated).
    fn secrets_of(&self, webhook: &ClaimedWebhook) -> Vec<WebhookSecret> {
        let (Some(key), Some(current)) = (&webhook.secret_key, &webhook.secret_sealed) else {
            return Vec::new();
        };
        match signing::open(
            &self.keys,
            webhook.webhook_id,
            key,
            current,
            webhook.previous_secret_sealed.as_deref(),
        ) {
            Ok((current, previous)) => std::iter::once(current).chain(previous).collect(),
            Err(error) => {
                tracing::error!(webhook_id = %webhook.webhook_id, %error, "webhook secret does not open; posting unsigned is refused");
                Vec::new()
            }
        }
    }

    async fn post(
        &self,
        webhook: &ClaimedWebhook,
        secrets: &[WebhookSecret],
        delivery: &DueDelivery,
    ) -> Outcome {
        let started = tokio::time::Instant::now();
        let elapsed = |started: tokio::time::Instant| {
            i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX)
        };
        let refused = |kind| Outcome {
            status_code: 0,
            latency_ms: 0,
            error: kind,
        };
        if webhook.secret_sealed.is_some() && secrets.is_empty() {
            return refused(DeliveryErrorKind::Other);
        }
        let Ok(url) = reqwest::Url::parse(&webhook.url) else {
            return refused(DeliveryErrorKind::Other);
        };
        // The client resolves names through the policy; an address literal
        // it does not resolve, so it is checked here.
        let literal = url.host_str().is_some_and(|host| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok()
        });
        if literal && self.policy.check_url(&self.lookup, &url).await.is_err() {
            return refused(DeliveryErrorKind::DestinationRefused);
        }
        let body = serde_json::to_vec(&crate::body::NotificationBody::from(
            &delivery.notification(),
        ))
        .expect("the body serialises");
        let message_id = delivery.notification_id.to_string();
        let sent_at = Utc::now().timestamp();
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            // The Standard Webhooks headers: the ID stays the same across
            // retries and webhooks, for receivers to deduplicate by.
            .header("webhook-id", &message_id)
            .header("webhook-timestamp", sent_at.to_string())
            .header("x-cpm-notification-id", &message_id);
        if !secrets.is_empty() {
            let secrets: Vec<&WebhookSecret> = secrets.iter().collect();
            request = request.header(
                "webhook-signature",
                signing::signature_header(&secrets, &message_id, sent_at, &body),
            );
        }
        match request.body(body).send().await {
            Ok(response) => {
                let status = response.status();
                Outcome {
                    status_code: i32::from(status.as_u16()),
                    latency_ms: elapsed(started),
                    error: if status.is_success() {
                        DeliveryErrorKind::None
                    } else {
                        DeliveryErrorKind::HttpStatus
                    },
                }
            }
            Err(error) => Outcome {
                status_code: 0,
                latency_ms: elapsed(started),
                error: error_kind(&error),
            },
        }
    }

    /// Logs the attempts and their outcomes, and keeps the breaker, in one
    /// short transaction; announces the first confirmed delivery of a
    /// discharge.
    async fn record(
        &self,
        webhook: &ClaimedWebhook,
        posted: &[Posted<'_>],
        breaker: Breaker,
    ) -> anyhow::Result<()> {
        let Some(last) = posted.last() else {
            return Ok(());
        };
        let now = Utc::now();
        let attempts: Vec<store::Attempt> = posted
            .iter()
            .map(
                |Posted {
                     delivery,
                     attempted_at,
                     outcome,
                 }| {
                    let (new_state, next_attempt_at) = if outcome.succeeded() {
                        (state::DELIVERED, now)
                    } else {
                        match self.retry.after_failure(
                            delivery.queued_at,
                            delivery.attempts + 1,
                            now,
                        ) {
                            AfterFailure::RetryAt(at) => (state::PENDING, at),
                            AfterFailure::Dead => (state::DEAD, now),
                        }
                    };
                    store::Attempt {
                        delivery_id: delivery.delivery_id,
                        attempted_at: *attempted_at,
                        status_code: outcome.status_code,
                        latency_ms: outcome.latency_ms,
                        error_kind: outcome.error as i32,
                        new_state,
                        next_attempt_at,
                        last_error: outcome.description(),
                    }
                },
            )
            .collect();
        let mut transaction = self.handle.begin().await?;
        let recorded = store::record_attempts(&mut transaction, &attempts).await?;
        store::store_endpoint_health(
            &mut transaction,
            webhook.webhook_id,
            breaker.consecutive_failures,
            breaker.open_until,
            last.outcome.latency_ms,
            self.lease().as_secs_f64(),
        )
        .await?;
        let delivered: Vec<&DueDelivery> = posted
            .iter()
            .filter(|p| p.outcome.succeeded() && recorded.contains(&p.delivery.delivery_id))
            .map(|p| p.delivery)
            .collect();
        if !delivered.is_empty() {
            let ids: Vec<Uuid> = delivered.iter().map(|d| d.notification_id).collect();
            let first = crate::db::mark_first_delivered_of(&mut transaction, &ids).await?;
            for delivery in delivered {
                if first.contains(&delivery.notification_id)
                    && delivery.kind == NotificationKind::Discharged as i32
                {
                    outbox::enqueue(
                        &mut transaction,
                        crate::NAME,
                        &FeedbackDelivered {
                            referral_id: delivery.referral_id.to_string(),
                            agency_id: delivery.agency_id.clone(),
                            delivered_at: Some(timestamp(now)),
                            channel: "WEBHOOK".into(),
                        },
                    )
                    .await?;
                }
            }
        }
        transaction.commit().await?;
        for (
            Posted {
                delivery, outcome, ..
            },
            attempt,
        ) in posted.iter().zip(&attempts)
        {
            match (outcome.succeeded(), attempt.new_state) {
                (true, _) => {
                    tracing::info!(delivery_id = %delivery.delivery_id, latency_ms = outcome.latency_ms, "webhook delivered")
                }
                (false, state::DEAD) => {
                    tracing::warn!(delivery_id = %delivery.delivery_id, error = ?outcome.error, "webhook delivery dead-lettered")
                }
                (false, _) => {
                    tracing::warn!(delivery_id = %delivery.delivery_id, error = ?outcome.error, status = outcome.status_code, "webhook attempt failed")
                }
            }
        }
        if breaker.open_until.is_some() && !last.outcome.succeeded() {
            tracing::warn!(webhook_id = %webhook.webhook_id, failures = breaker.consecutive_failures, "webhook circuit open");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_up_is_skipped_only_for_agencies_whose_every_webhook_is_held_here() {
        // Task IDs come from real tasks.
        let mut tasks = JoinSet::new();
        let mut held = HashMap::new();
        for (agency, webhooks) in [("a", 1), ("b", 2)] {
            let id = tasks.spawn(async {}).id();
            held.insert(
                id,
                Held {
                    webhook_id: Uuid::now_v7(),
                    lane: Lane::Prompt,
                    since: tokio::time::Instant::now(),
                    agency_id: agency.into(),
                    agency_webhooks: webhooks,
                },
            );
        }
        let woken = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        assert!(
            !wake_needs_claim(&held, &woken(&["a"])),
            "a's one webhook is held"
        );
        assert!(
            wake_needs_claim(&held, &woken(&["b"])),
            "b's second webhook is free"
        );
        assert!(
            wake_needs_claim(&held, &woken(&["c"])),
            "nothing of c is held"
        );
        assert!(wake_needs_claim(&held, &woken(&["a", "c"])));
        assert!(
            wake_needs_claim(&held, &woken(&[])),
            "an unnamed wake-up claims"
        );
        assert!(
            wake_needs_claim(&held, &woken(&[""])),
            "so does an empty name"
        );
        assert!(wake_needs_claim(&HashMap::new(), &woken(&["a"])));
    }

    fn client(timeout: Duration, policy: DestinationPolicy) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: Arc::new(policy),
                lookup: crate::destinations::system_lookup(),
            }))
            .build()
            .unwrap()
    }

    async fn kind_of(client: &reqwest::Client, url: &str) -> DeliveryErrorKind {
        error_kind(&client.post(url).send().await.expect_err("fails"))
    }

    #[tokio::test]
    async fn client_errors_are_sorted_into_categories_that_name_no_address() {
        let loopback = || DestinationPolicy::new(&[], true).unwrap();
        // Nothing listens on a port just released.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let quick = client(Duration::from_secs(5), loopback());
        assert_eq!(
            kind_of(&quick, &format!("http://localhost:{port}/")).await,
            DeliveryErrorKind::Connection
        );
        // A listener that never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://localhost:{}/", silent.local_addr().unwrap().port());
        let impatient = client(Duration::from_millis(300), loopback());
        assert_eq!(kind_of(&impatient, &url).await, DeliveryErrorKind::Timeout);
        // A name the rule refuses never gets a connection.
        let strict = client(
            Duration::from_secs(5),
            DestinationPolicy::new(&[], false).unwrap(),
        );
        assert_eq!(
            kind_of(&strict, &url).await,
            DeliveryErrorKind::DestinationRefused
        );
        for error in [
            DeliveryErrorKind::Connection,
            DeliveryErrorKind::Timeout,
            DeliveryErrorKind::DestinationRefused,
            DeliveryErrorKind::Tls,
            DeliveryErrorKind::HttpStatus,
        ] {
            let shown = Outcome {
                status_code: 503,
                latency_ms: 1,
                error,
            }
            .description()
            .unwrap();
            assert!(
                !shown.contains("127.0.0.1") && !shown.contains("localhost"),
                "{shown}"
            );
        }
    }
}
