//! The `referrals` consumer: a submitted referral opens an assessment in its
//! area's queue; a withdrawn one closes an assessment that is still open; a
//! confirmed link to an earlier referral of the same client shows that
//! client's earlier assessments. Each effect is idempotent on its own (a
//! referral has at most one assessment; only an OPEN assessment closes; a
//! link is set, not added), on top of the inbox.
//!
//! After `client.erased` nothing new about that client is kept, whatever
//! order events arrive in: the runtime shreds the client's key (so no text
//! is sealed for them again) and [`Forget`] drops their text and
//! categories; a `referral.submitted` handled after that opens the
//! assessment without the categories.

use chrono::Utc;
use cpm_proto::v1::{
    AssessmentOpened, AssessmentState, ContactActivity, ContactLogged, ReferralLinked,
    ReferralSubmitted, ReferralWithdrawn,
};
use cpm_runtime::bus::{Forget, HandlerError, On, ReceivedEvent, Router, Tx, outbox, referral_id};
use cpm_runtime::client_keys;
use cpm_runtime::grpc::values::from_timestamp;
use uuid::Uuid;

use crate::db;

/// The actor and role the audit trail names for this service's own changes.
const SERVICE_ROLE: &str = "service";

async fn audit(
    connection: &mut Tx,
    assessment_id: Uuid,
    action: &str,
    detail: &str,
) -> Result<(), HandlerError> {
    db::insert_audit(
        connection,
        &db::AuditEntry {
            assessment_id,
            actor: crate::NAME,
            role: SERVICE_ROLE,
            action,
            detail,
        },
    )
    .await?;
    Ok(())
}

/// The `referrals` consumer's routes.
pub fn referrals() -> Router<ReferralEvents> {
    Router::new(crate::NAME, "referrals", ReferralEvents)
        .on::<ReferralSubmitted>()
        .on::<ReferralWithdrawn>()
        .on::<ReferralLinked>()
        .on_erasure()
}

pub struct ReferralEvents;

/// The categories an assessment keeps about its client, from the event, or
/// none once the client was erased.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCategories {
    pub vulnerabilities: Vec<i32>,
    pub client_gender: i32,
    pub known_risk_types: Vec<i32>,
    pub victim_of: Vec<i32>,
    pub perpetrator_of: Vec<i32>,
}

impl ClientCategories {
    pub fn of(event: &ReferralSubmitted, erased: bool) -> Self {
        if erased {
            return Self::default();
        }
        Self {
            vulnerabilities: event.vulnerabilities.clone(),
            client_gender: event.client_gender,
            known_risk_types: event.known_risk_types.clone(),
            victim_of: event.victim_of.clone(),
            perpetrator_of: event.perpetrator_of.clone(),
        }
    }
}

impl On<ReferralSubmitted> for ReferralEvents {
    /// Opens the referral's assessment in its area's queue.
    ///
    /// A client erased before this event is handled (a late or redelivered
    /// `referral.submitted`) still gets an assessment, without their
    /// vulnerabilities, gender or kinds of known risk: what remains is IDs,
    /// agency, area and counts, none of it about who the client is, and the
    /// referral's status flow (`assessment.opened`, then a decision or the
    /// withdrawal closing it) needs an assessment to move on. Skipping it
    /// would leave the referral stuck as received, and a later
    /// `referral.withdrawn` or `referral.linked` with nothing to act on.
    async fn on(
        &self,
        connection: &mut Tx,
        event: ReferralSubmitted,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let referral_id = referral_id(&event.referral_id)?;
        // Ordered with forgetting the client (see `Forget` below): whichever
        // runs second sees what the other committed.
        db::lock_client(connection, referral_id).await?;
        let erased = client_keys::is_erased(connection, referral_id).await?;
        let categories = ClientCategories::of(&event, erased);
        // A fingerprint match is not a link: only `referral.linked`, sent
        // when a coordinator confirms one, joins two referrals here (an
        // event from before that rule may still carry an unconfirmed one).
        let earlier_referral_id = None;
        let assessment_id = Uuid::now_v7();
        let opened = db::insert_assessment(
            connection,
            &db::NewAssessmentRow {
                assessment_id,
                referral_id,
                agency_id: &event.agency_id,
                area: &event.area,
                vulnerabilities: &categories.vulnerabilities,
                client_gender: categories.client_gender,
                state: AssessmentState::Open as i32,
                referred_at: event
                    .submitted_at
                    .as_ref()
                    .and_then(from_timestamp)
                    .unwrap_or_else(Utc::now),
                earlier_referral_id,
                known_risk_types: &categories.known_risk_types,
                referrer_will_co_visit: event.referrer_will_co_visit,
                emergency_calls_last_12_months: event.emergency_calls_last_12_months,
                victim_of: &categories.victim_of,
                perpetrator_of: &categories.perpetrator_of,
            },
        )
        .await?;
        if !opened {
            tracing::info!(%referral_id, "referral already has an assessment");
            return Ok(());
        }
        outbox::enqueue(
            connection,
            crate::NAME,
            &AssessmentOpened {
                assessment_id: assessment_id.to_string(),
                referral_id: referral_id.to_string(),
                agency_id: event.agency_id.clone(),
                area: event.area.clone(),
            },
        )
        .await?;
        audit(
            connection,
            assessment_id,
            "opened",
            if earlier_referral_id.is_some() {
                "re-referral"
            } else {
                ""
            },
        )
        .await?;
        tracing::info!(%referral_id, %assessment_id, erased, "assessment opened");
        Ok(())
    }
}

impl On<ReferralWithdrawn> for ReferralEvents {
    /// Closes the referral's assessment while it is still open.
    async fn on(
        &self,
        connection: &mut Tx,
        event: ReferralWithdrawn,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let referral_id = referral_id(&event.referral_id)?;
        let closed = db::close_assessment_of_referral(
            connection,
            referral_id,
            AssessmentState::Open as i32,
            AssessmentState::Closed as i32,
        )
        .await?;
        if let Some(assessment_id) = closed {
            audit(connection, assessment_id, "closed", "referral withdrawn").await?;
        }
        tracing::info!(%referral_id, closed = closed.is_some(), "referral withdrawn");
        Ok(())
    }
}

impl On<ReferralLinked> for ReferralEvents {
    /// Shows the earlier referral's assessments with this referral's.
    async fn on(
        &self,
        connection: &mut Tx,
        event: ReferralLinked,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let referral_id = referral_id(&event.referral_id)?;
        let earlier_referral_id = self::referral_id(&event.earlier_referral_id)?;
        let Some(assessment_id) =
            db::link_earlier_referral(connection, referral_id, earlier_referral_id).await?
        else {
            // Submitted, but its assessment not opened yet: try again later.
            return Err(HandlerError::Transient(format!(
                "no assessment yet for linked referral {referral_id}"
            )));
        };
        audit(
            connection,
            assessment_id,
            "linked",
            &format!("same client as referral {earlier_referral_id}"),
        )
        .await?;
        tracing::info!(%referral_id, %earlier_referral_id, "earlier referral linked");
        Ok(())
    }
}

impl Forget for ReferralEvents {
    const WHAT: &'static str = "free text and categories";

    /// Runs after the runtime shredded the client's key, which already
    /// made every sealed text unreadable; drops the sealed copies, the
    /// plaintext of rows from before sealing and the client's categories.
    /// Takes the lock `referral.submitted` takes, so an assessment being
    /// opened concurrently is either seen here or sees the erasure.
    async fn forget(&self, connection: &mut Tx, referral_id: Uuid) -> Result<u64, HandlerError> {
        db::lock_client(connection, referral_id).await?;
        let text = db::forget_client_text(connection, referral_id).await?;
        let categories = db::forget_client_categories(connection, referral_id).await?;
        Ok(text + categories)
    }
}

/// The `engagement` consumer's routes.
pub fn engagement() -> Router<EngagementEvents> {
    Router::new(crate::NAME, "engagement", EngagementEvents).on::<ContactLogged>()
}

/// The `engagement` consumer: every home visit and every raised concern asks
/// a coordinator to review the client's suitability. The system only asks;
/// a coordinator decides.
pub struct EngagementEvents;

/// Why a contact asks for a review, if it does.
pub fn review_trigger(contact: &ContactLogged) -> Option<&'static str> {
    if contact.concern_raised {
        Some("concern_raised")
    } else if contact.activity == ContactActivity::HomeVisit as i32 {
        Some("home_visit")
    } else {
        None
    }
}

impl On<ContactLogged> for EngagementEvents {
    async fn on(
        &self,
        connection: &mut Tx,
        contact: ContactLogged,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let Some(trigger) = review_trigger(&contact) else {
            return Ok(());
        };
        let referral_id = referral_id(&contact.referral_id)?;
        let contact_id = Uuid::parse_str(&contact.contact_id)
            .map_err(|_| HandlerError::Permanent("bad contact id".into()))?;
        let requested = db::request_review(connection, referral_id, contact_id, trigger).await?;
        if let Some(assessment_id) = requested {
            audit(connection, assessment_id, "review_requested", trigger).await?;
        }
        tracing::info!(
            %referral_id,
            trigger,
            requested = requested.is_some(),
            "review of suitability requested"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_erased_client_s_assessment_keeps_no_categories() {
        let event = ReferralSubmitted {
            vulnerabilities: vec![1, 3],
            client_gender: 2,
            known_risk_types: vec![4],
            victim_of: vec![2],
            perpetrator_of: vec![4, 6],
            ..Default::default()
        };
        let kept = ClientCategories::of(&event, false);
        assert_eq!(kept.vulnerabilities, [1, 3]);
        assert_eq!(kept.client_gender, 2);
        assert_eq!(kept.known_risk_types, [4]);
        assert_eq!((kept.victim_of, kept.perpetrator_of), (vec![2], vec![4, 6]));
        assert_eq!(
            ClientCategories::of(&event, true),
            ClientCategories::default()
        );
    }

    #[test]
    fn home_visits_and_concerns_ask_for_a_review() {
        let mut contact = ContactLogged {
            activity: ContactActivity::Telephone as i32,
            ..Default::default()
        };
        assert_eq!(review_trigger(&contact), None);
        contact.activity = ContactActivity::HomeVisit as i32;
        assert_eq!(review_trigger(&contact), Some("home_visit"));
        contact.concern_raised = true;
        assert_eq!(review_trigger(&contact), Some("concern_raised"));
    }
}
