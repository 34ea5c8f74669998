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
    ($($message:ident => $routing_key:literal $(by $field:ident)?),* $(,)?) => {
        $(
            impl Event for v1::$message {
                const TYPE: &'static str = $routing_key;
                fn correlation_id(&self) -> &str {
                    events!(@correlation self $($field)?)
                }
            }
        )*
        /// Every event type the platform publishes.
        pub const ALL_EVENT_TYPES: &[&str] = &[$($routing_key),*];
    };
    (@correlation $self:ident) => { &$self.referral_id };
    (@correlation $self:ident $field:ident) => { &$self.$field };
}

events! {
    ReferralSubmitted => "referral.submitted",
    ReferralWithdrawn => "referral.withdrawn",
    ReferralLinked => "referral.linked",
    ReferralStatusChanged => "referral.status_changed",
    AssessmentOpened => "assessment.opened",
    AssessmentDecided => "assessment.decided",
    MentorsAwaited => "matching.awaiting_mentors",
    AllocationConfirmed => "allocation.confirmed",
    AllocationEnded => "allocation.ended",
    ContactLogged => "contact.logged",
    CaseDischarged => "case.discharged",
    ConcernRaised => "concern.raised",
    FeedbackDelivered => "feedback.delivered",
    EngagementChanged => "engagement.changed",
    ClientErased => "client.erased",
    // About a person or an agency, not a referral: correlated by who it is.
    PrincipalStatusChanged => "principal.status_changed" by principal_id,
    MentorAlertRaised => "mentor.alert_raised" by mentor_id,
    AreaWaitQuoted => "matching.area_wait_quoted" by area,
}

/// The order of a referral's statuses as its referrer sees them: a status
/// only ever moves to a higher rank. The three ends share the top rank, so
/// none replaces another.
pub fn status_rank(status: v1::ReferralStatus) -> i32 {
    use v1::ReferralStatus;
    match status {
        ReferralStatus::Unspecified => -1,
        ReferralStatus::Received => 0,
        ReferralStatus::UnderAssessment => 1,
        ReferralStatus::Accepted => 2,
        ReferralStatus::AwaitingMentors => 3,
        ReferralStatus::InSupport => 4,
        ReferralStatus::Discharged | ReferralStatus::NotTakenOn | ReferralStatus::Withdrawn => 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::ReferralStatus;

    #[test]
    fn statuses_rank_along_the_journey_and_the_ends_are_final() {
        let journey = [
            ReferralStatus::Received,
            ReferralStatus::UnderAssessment,
            ReferralStatus::Accepted,
            ReferralStatus::AwaitingMentors,
            ReferralStatus::InSupport,
            ReferralStatus::Discharged,
        ];
        for pair in journey.windows(2) {
            assert!(status_rank(pair[0]) < status_rank(pair[1]), "{pair:?}");
        }
        assert_eq!(
            status_rank(ReferralStatus::NotTakenOn),
            status_rank(ReferralStatus::Withdrawn)
        );
    }
}
