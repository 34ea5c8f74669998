//! Event types and their routing keys. The routing key is the event type;
//! consumers bind their queues to the keys they need.

use crate::v1;

/// A message that travels on the event exchange inside an `EventEnvelope`.
pub trait Event: prost::Message + Default {
    /// The event type and routing key, e.g. `referral.submitted`.
    const TYPE: &'static str;
    /// The referral this event belongs to.
    fn correlation_id(&self) -> &str;
}

macro_rules! events {
    ($($message:ident => $routing_key:literal),* $(,)?) => {
        $(
            impl Event for v1::$message {
                const TYPE: &'static str = $routing_key;
                fn correlation_id(&self) -> &str {
                    &self.referral_id
                }
            }
        )*
        /// Every event type the platform publishes.
        pub const ALL_EVENT_TYPES: &[&str] = &[$($routing_key),*];
    };
}

events! {
    ReferralSubmitted => "referral.submitted",
    ReferralWithdrawn => "referral.withdrawn",
    AssessmentOpened => "assessment.opened",
    AssessmentDecided => "assessment.decided",
    MentorsAwaited => "matching.awaiting_mentors",
    AllocationConfirmed => "allocation.confirmed",
    ContactLogged => "contact.logged",
    CaseDischarged => "case.discharged",
    EngagementChanged => "engagement.changed",
    ClientErased => "client.erased",
}
