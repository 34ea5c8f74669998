//! Applying the deliveries a consumer already has in hand in one
//! transaction.
//!
//! Under load a consumer's prefetched deliveries are waiting when it
//! finishes one. Taken one transaction each, every event pays a `BEGIN`, an
//! inbox insert and a commit (a WAL flush), and a consumer that gets two or
//! three events a referral falls behind: the end-to-end bench saw intake's,
//! contact logging's and notifications' queues hold events for over a
//! second at 100 referrals/s while risk assessment's, with one event a
//! referral, kept up. A batch records all its event IDs in the inbox with
//! one statement, runs each handler after a savepoint, and commits once.
//!
//! A handler that fails is rolled back to its savepoint and its inbox row
//! removed; its delivery is requeued or dead-lettered as it would be alone,
//! while the others commit. When the batch itself fails (the database went
//! away, a statement of ours failed, the commit) nothing of it took effect,
//! and each delivery is applied again on its own; so too when PostgreSQL
//! gives one of its handlers up for another transaction (a deadlock between
//! replicas' batches), which no delivery should pay for. A handler may therefore
//! run more than once for one event, as after any crash before a commit:
//! only what it writes in its transaction counts.

use futures::{FutureExt as _, StreamExt as _};
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use tracing::Instrument as _;

use super::{
    Consumer, EventHandler, HandlerError, Outcome, ReceivedEvent, answered, failed, received,
    record_in_inbox,
};
use crate::Shutdown;

/// The most deliveries applied in one transaction. Each applied event opens
/// a subtransaction (its savepoint) that writes; PostgreSQL keeps 64 of a
/// backend's subtransaction IDs in shared memory, and past that every
/// snapshot must look them up on disk, so a batch stays well below 64.
const MOST: usize = 32;

/// `first` and the deliveries ready behind it, up to [`MOST`], without
/// waiting for any; also the error that ended the stream, if it ended
/// meanwhile (the deliveries gathered are still to be settled or returned).
pub(super) fn gather(
    first: Delivery,
    consumer: &mut lapin::Consumer,
) -> (Vec<Delivery>, Option<anyhow::Error>) {
    let mut deliveries = vec![first];
    while deliveries.len() < MOST {
        match consumer.next().now_or_never() {
            Some(Some(Ok(delivery))) => deliveries.push(delivery),
            Some(Some(Err(error))) => return (deliveries, Some(error.into())),
            Some(None) => return (deliveries, Some(anyhow::anyhow!("consumer stream ended"))),
            None => break,
        }
    }
    (deliveries, None)
}

/// A delivery of a batch: its span, and its event unless it is unreadable.
struct InHand {
    delivery: Delivery,
    span: tracing::Span,
    event: Option<ReceivedEvent>,
}

impl<H: EventHandler> Consumer<H> {
    /// Applies `deliveries` in one transaction and settles each; one at a
    /// time when the batch fails.
    pub(super) async fn process_batch(
        &self,
        deliveries: Vec<Delivery>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        let in_hand: Vec<InHand> = deliveries
            .into_iter()
            .map(|delivery| {
                let span = self.span(&delivery);
                let event = span.in_scope(|| received(&delivery));
                InHand {
                    delivery,
                    span,
                    event,
                }
            })
            .collect();
        metrics::histogram!("cpm_consumer_batch_deliveries", "queue" => self.spec.inbox_name())
            .record(in_hand.len() as f64);
        match self.apply_batch(&in_hand).await {
            Ok(outcomes) => self.settle_batch(in_hand, outcomes).await,
            Err(error) => {
                tracing::warn!(
                    queue = %self.spec.inbox_name(),
                    deliveries = in_hand.len(),
                    %error,
                    "a batch failed and took no effect: applying its deliveries one at a time"
                );
                for item in in_hand {
                    self.process(item.delivery, item.span, shutdown).await?;
                }
                Ok(())
            }
        }
    }

    /// The outcome of each delivery of a batch, in order, once the batch has
    /// committed; an error when nothing of it took effect.
    async fn apply_batch(&self, in_hand: &[InHand]) -> Result<Vec<Outcome>, HandlerError> {
        let consumer = self.spec.inbox_name();
        let mut transaction = self.handle.begin().await?;
        let events = in_hand.iter().filter_map(|item| item.event.as_ref());
        let mut fresh = record_in_inbox(&mut transaction, &consumer, events).await?;
        let mut outcomes = Vec::with_capacity(in_hand.len());
        for item in in_hand {
            let Some(event) = &item.event else {
                outcomes.push(Outcome::DeadLetter);
                continue;
            };
            // Taken out, so a second copy of an event in the same batch is
            // a duplicate of the first; should the first fail, its requeue
            // or dead letter carries the event.
            if !fresh.remove(&event.event_id) {
                item.span
                    .in_scope(|| tracing::debug!("duplicate delivery ignored"));
                outcomes.push(Outcome::Duplicate);
                continue;
            }
            sqlx::query("SAVEPOINT event")
                .execute(&mut *transaction)
                .await?;
            let handled = self
                .handler
                .handle(&mut transaction, event)
                .instrument(item.span.clone())
                .await;
            let Err(failure) = handled else {
                outcomes.push(Outcome::Applied);
                continue;
            };
            // Another transaction needs what this batch holds (two replicas'
            // batches locking the same rows in opposite orders): keeping the
            // rest would hold those locks to the commit and spend this
            // delivery. Dropping the batch frees them; one event a
            // transaction holds few, and a conflict there is tried again.
            if let HandlerError::Conflict(_) = failure {
                return Err(failure);
            }
            let Some(outcome) = item.span.in_scope(|| failed(failure, event)) else {
                return Err(HandlerError::Unavailable(
                    "the database went away during a batch".into(),
                ));
            };
            sqlx::query("ROLLBACK TO SAVEPOINT event")
                .execute(&mut *transaction)
                .await?;
            // Dynamic, as above. Its redelivery must not look applied.
            sqlx::query("DELETE FROM inbox WHERE consumer = $1 AND event_id = $2")
                .bind(&consumer)
                .bind(event.event_id)
                .execute(&mut *transaction)
                .await?;
            outcomes.push(outcome);
        }
        transaction.commit().await?;
        Ok(outcomes)
    }

    /// Settles a committed batch: one acknowledgement for the lot when every
    /// delivery is done with, each on its own otherwise.
    async fn settle_batch(
        &self,
        in_hand: Vec<InHand>,
        outcomes: Vec<Outcome>,
    ) -> anyhow::Result<()> {
        let all_done = outcomes
            .iter()
            .all(|outcome| matches!(outcome, Outcome::Applied | Outcome::Duplicate));
        if all_done {
            for (item, outcome) in in_hand.iter().zip(&outcomes) {
                self.count(&item.delivery, outcome);
            }
            // `multiple` acknowledges every delivery of the channel up to the
            // last: the consumer settles deliveries in order, so the earlier
            // ones outside this batch are settled already.
            let last = &in_hand.last().expect("a batch is never empty").delivery;
            return answered(last.acker.ack(BasicAckOptions { multiple: true })).await;
        }
        for (item, outcome) in in_hand.into_iter().zip(outcomes) {
            self.settle(&item.delivery, outcome)
                .instrument(item.span)
                .await?;
        }
        Ok(())
    }
}
