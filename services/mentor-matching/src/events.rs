//! The `decisions` consumer: an accepted referral becomes a client waiting
//! for a mentor pair, and the referrer learns the estimated start through
//! `matching.awaiting_mentors`. Other decisions concern nobody here. When
//! support ends, by a discharge (`case.discharged`) or a coordinator ending
//! the engagement (`engagement.changed` END), the client stops waiting and
//! the allocation ends, freeing both mentors' places. The events share one
//! queue, so an ending never overtakes its acceptance. Each logged contact
//! counts towards the early fit window of the client's allocation.

use chrono::{Duration, Utc};
use cpm_proto::v1::{
    AllocationEndReason, AssessmentDecided, CaseDischarged, ContactLogged, Decision,
    EngagementAction, EngagementChanged, MentorsAwaited,
};
use cpm_runtime::bus::{Forget, HandlerError, On, ReceivedEvent, Router, Tx, outbox, referral_id};
use cpm_runtime::grpc::values::{from_timestamp, timestamp};

use crate::db::{self, NewWaitingClient};
use crate::wait;

/// The `decisions` consumer's routes.
pub fn decisions(config: &crate::Config) -> Router<Decisions> {
    let decisions = Decisions {
        quoter: wait::Quoter::new(config),
    };
    Router::new(crate::NAME, "decisions", decisions)
        .on::<AssessmentDecided>()
        .on::<EngagementChanged>()
        .on::<CaseDischarged>()
        .on::<ContactLogged>()
        .on_erasure()
}

/// What the consumer needs to quote a wait at acceptance.
pub struct Decisions {
    quoter: wait::Quoter,
}

impl On<AssessmentDecided> for Decisions {
    async fn on(
        &self,
        connection: &mut Tx,
        decided: AssessmentDecided,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        if decided.decision != Decision::Accept as i32 {
            return Ok(());
        }
        let referral_id = referral_id(&decided.referral_id)?;
        let area = decided.area.trim();
        // Computed before the insert, the load counts the clients already
        // waiting: the estimate is the wait of this newly accepted client.
        let perpetrator_of = crate::commands::crimes(&decided.perpetrator_of);
        let (_, quote) = self
            .quoter
            .quote(connection, area, &perpetrator_of, Some(referral_id))
            .await?;
        let now = Utc::now();
        let estimated_start = now + Duration::days(i64::from(quote.p50_days));
        let estimated_start_latest = now + Duration::days(i64::from(quote.p90_days));
        let inserted = db::insert_waiting_client(
            connection,
            &NewWaitingClient {
                referral_id,
                agency_id: &decided.agency_id,
                area,
                vulnerabilities: decided.vulnerabilities.clone(),
                client_gender: decided.client_gender,
                accepted_at: decided
                    .decided_at
                    .as_ref()
                    .and_then(from_timestamp)
                    .unwrap_or(now),
                estimated_start,
                victim_of: decided.victim_of.clone(),
                perpetrator_of: decided.perpetrator_of.clone(),
            },
        )
        .await?;
        if !inserted {
            tracing::info!(%referral_id, "accepted client already waiting");
            return Ok(());
        }
        outbox::enqueue(
            connection,
            crate::NAME,
            &MentorsAwaited {
                referral_id: referral_id.to_string(),
                agency_id: decided.agency_id.clone(),
                area: area.to_owned(),
                estimated_start: Some(timestamp(estimated_start)),
                estimated_start_latest: Some(timestamp(estimated_start_latest)),
            },
        )
        .await?;
        tracing::info!(
            %referral_id,
            p50_days = quote.p50_days,
            p90_days = quote.p90_days,
            "accepted client awaits mentors"
        );
        Ok(())
    }
}

impl On<EngagementChanged> for Decisions {
    /// Frees the mentors of a client whose support ended; continuing or
    /// pausing keeps them allocated.
    async fn on(
        &self,
        connection: &mut Tx,
        changed: EngagementChanged,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        if changed.action != EngagementAction::End as i32 {
            return Ok(());
        }
        let referral_id = referral_id(&changed.referral_id)?;
        let ended = db::end_support(
            connection,
            referral_id,
            AllocationEndReason::EngagementEnded,
        )
        .await?;
        tracing::info!(
            %referral_id,
            client_ended = ended.client_ended,
            mentors_freed = ended.allocation_ended,
            "support ended"
        );
        Ok(())
    }
}

impl On<CaseDischarged> for Decisions {
    /// Frees the mentors of a discharged client: their places count again
    /// from now on, so the same mentors can be proposed to the next client.
    async fn on(
        &self,
        connection: &mut Tx,
        discharged: CaseDischarged,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let referral_id = referral_id(&discharged.referral_id)?;
        let ended =
            db::end_support(connection, referral_id, AllocationEndReason::Discharged).await?;
        tracing::info!(
            %referral_id,
            mentors_freed = ended.allocation_ended,
            "client discharged"
        );
        Ok(())
    }
}

impl On<ContactLogged> for Decisions {
    /// Counts the contact towards the early fit window of the client's
    /// current allocation.
    async fn on(
        &self,
        connection: &mut Tx,
        contact: ContactLogged,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let referral_id = referral_id(&contact.referral_id)?;
        if !crate::fit::count_contact(connection, referral_id).await? {
            tracing::info!(%referral_id, "contact for a client without an active allocation");
        }
        Ok(())
    }
}

impl Forget for Decisions {
    const WHAT: &'static str = "categories";

    async fn forget(
        &self,
        connection: &mut Tx,
        referral_id: uuid::Uuid,
    ) -> Result<u64, HandlerError> {
        Ok(db::forget_client_categories(connection, referral_id).await?)
    }
}
