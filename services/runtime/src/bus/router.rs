//! Typed event routing: one list per consumer (`Router::new(..).on::<E>()`)
//! gives both the queue's bindings and the dispatch, so the two cannot
//! drift apart. Each route decodes its payload as its type before the
//! handler sees it; an event type the list does not name is a permanent
//! failure (dead-lettered), as a binding and a handler that disagree cannot
//! be fixed by retrying.
//!
//! `client.erased` is routed once for every service by
//! [`Router::on_erasure`]: it shreds the service's key for that client
//! ([`crate::client_keys`]) and a service supplies only what else it
//! forgets ([`Forget`]); decoding, the referral ID and the log are here.

use std::future::Future;

use cpm_proto::Event;
use cpm_proto::v1::ClientErased;
use futures::future::BoxFuture;
use uuid::Uuid;

use super::consumer::{ConsumerSpec, EventHandler, HandlerError, ReceivedEvent, referral_id};
use super::outbox::Tx;

/// A handler of events of type `E`.
pub trait On<E: Event>: Send + Sync + 'static {
    /// Applies `event` inside the consumer's transaction (see
    /// [`EventHandler`]); `received` has its envelope and delivery count.
    fn on(
        &self,
        tx: &mut Tx,
        event: E,
        received: &ReceivedEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// What a service forgets about a client when referral-intake erases them:
/// free text it sealed, categories it keeps, and so on.
pub trait Forget: Send + Sync + 'static {
    /// What it drops, for the log, e.g. `free text`.
    const WHAT: &'static str;

    /// Drops what this service holds about the client of `referral_id`;
    /// returns how many rows changed.
    fn forget(
        &self,
        tx: &mut Tx,
        referral_id: Uuid,
    ) -> impl Future<Output = Result<u64, HandlerError>> + Send;
}

type Dispatch<S> =
    for<'a> fn(&'a S, &'a mut Tx, &'a ReceivedEvent) -> BoxFuture<'a, Result<(), HandlerError>>;

struct Route<S> {
    event_type: &'static str,
    dispatch: Dispatch<S>,
}

/// A consumer's handlers, one per event type, over shared state `S`.
pub struct Router<S> {
    service: &'static str,
    name: &'static str,
    state: S,
    routes: Vec<Route<S>>,
}

fn dispatch<'a, S, E>(
    state: &'a S,
    tx: &'a mut Tx,
    received: &'a ReceivedEvent,
) -> BoxFuture<'a, Result<(), HandlerError>>
where
    S: On<E>,
    E: Event + Send + 'static,
{
    Box::pin(async move {
        let event = received.decode::<E>()?;
        state.on(tx, event, received).await
    })
}

fn dispatch_erasure<'a, S: Forget>(
    state: &'a S,
    tx: &'a mut Tx,
    received: &'a ReceivedEvent,
) -> BoxFuture<'a, Result<(), HandlerError>> {
    Box::pin(async move {
        let referral_id = referral_id(&received.decode::<ClientErased>()?.referral_id)?;
        // First the service's client key: what it sealed is shredded, and
        // nothing new is sealed for this client after.
        crate::client_keys::shred(tx, referral_id).await?;
        let forgotten = state.forget(tx, referral_id).await?;
        tracing::info!(%referral_id, forgotten, what = S::WHAT, "an erased client's data dropped");
        Ok(())
    })
}

impl<S: Send + Sync + 'static> Router<S> {
    /// The `name` consumer of `service`, handling events with `state`.
    pub fn new(service: &'static str, name: &'static str, state: S) -> Self {
        Self {
            service,
            name,
            state,
            routes: Vec::new(),
        }
    }

    /// Routes events of type `E` to `S`'s [`On<E>`].
    pub fn on<E>(mut self) -> Self
    where
        S: On<E>,
        E: Event + Send + 'static,
    {
        self.routes.push(Route {
            event_type: E::TYPE,
            dispatch: dispatch::<S, E>,
        });
        self
    }

    /// Routes `client.erased` to `S`'s [`Forget`].
    pub fn on_erasure(mut self) -> Self
    where
        S: Forget,
    {
        self.routes.push(Route {
            event_type: ClientErased::TYPE,
            dispatch: dispatch_erasure::<S>,
        });
        self
    }

    /// The event types routed, in the order listed: the queue's bindings.
    pub fn event_types(&self) -> Vec<&'static str> {
        self.routes.iter().map(|route| route.event_type).collect()
    }

    /// The consumer's queue and bindings.
    pub fn spec(&self) -> ConsumerSpec {
        ConsumerSpec {
            service: self.service,
            name: self.name,
            routing_keys: self.event_types(),
        }
    }
}

impl<S: Send + Sync + 'static> EventHandler for Router<S> {
    async fn handle(&self, tx: &mut Tx, event: &ReceivedEvent) -> Result<(), HandlerError> {
        let Some(route) = self
            .routes
            .iter()
            .find(|route| route.event_type == event.event_type())
        else {
            return Err(HandlerError::unexpected(
                &format!("{}.{}", self.service, self.name),
                event.event_type(),
            ));
        };
        (route.dispatch)(&self.state, tx, event).await
    }
}

#[cfg(test)]
mod tests {
    use cpm_proto::v1::{ReferralSubmitted, ReferralWithdrawn};

    use super::*;

    struct Handler;

    impl On<ReferralSubmitted> for Handler {
        async fn on(
            &self,
            _: &mut Tx,
            _: ReferralSubmitted,
            _: &ReceivedEvent,
        ) -> Result<(), HandlerError> {
            Ok(())
        }
    }

    impl On<ReferralWithdrawn> for Handler {
        async fn on(
            &self,
            _: &mut Tx,
            _: ReferralWithdrawn,
            _: &ReceivedEvent,
        ) -> Result<(), HandlerError> {
            Ok(())
        }
    }

    impl Forget for Handler {
        const WHAT: &'static str = "everything";

        async fn forget(&self, _: &mut Tx, _: Uuid) -> Result<u64, HandlerError> {
            Ok(0)
        }
    }

    #[test]
    fn the_route_list_is_the_queue_binding_list() {
        let router = Router::new("svc", "things", Handler)
            .on::<ReferralSubmitted>()
            .on::<ReferralWithdrawn>()
            .on_erasure();
        let spec = router.spec();
        assert_eq!(spec.inbox_name(), "svc.things");
        assert_eq!(
            spec.routing_keys,
            vec![
                ReferralSubmitted::TYPE,
                ReferralWithdrawn::TYPE,
                ClientErased::TYPE
            ]
        );
    }
}
