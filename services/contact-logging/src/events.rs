//! The `allocations` consumer keeps case files, in the consumer's inbox
//! transaction: a confirmed allocation opens one, and an ended engagement
//! (`engagement.changed` END) closes it, so no contact can be logged any
//! more. No event follows: referral intake moves the referral's status on
//! both events itself. An ending is remembered even before the case file
//! opens, so an allocation that arrives after it opens the file closed.
//! When a pair is found not to work (`allocation.ended`), its mentors lose
//! the case, and the next pair's allocation gives it to the new mentors
//! (and the coordinator who confirmed it becomes responsible). When
//! notifications confirms the discharge feedback reached the referrer
//! (`feedback.delivered`), the date is recorded on the case file.

use chrono::Utc;
use cpm_proto::v1::{
    AllocationConfirmed, AllocationEnded, CaseState, EngagementAction, EngagementChanged,
    FeedbackDelivered,
};
use cpm_runtime::bus::{Forget, HandlerError, On, ReceivedEvent, Router, Tx, referral_id};
use cpm_runtime::grpc::values::from_timestamp;
use uuid::Uuid;

use crate::db::{self, CaseLock, NewCaseFile};

/// The `allocations` consumer's routes.
pub fn allocations() -> Router<CaseFiles> {
    Router::new(crate::NAME, "allocations", CaseFiles)
        .on::<AllocationConfirmed>()
        .on::<AllocationEnded>()
        .on::<EngagementChanged>()
        .on::<FeedbackDelivered>()
        .on_erasure()
}

pub struct CaseFiles;

impl On<AllocationConfirmed> for CaseFiles {
    async fn on(
        &self,
        connection: &mut Tx,
        allocation: AllocationConfirmed,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let referral_id = referral_id(&allocation.referral_id)?;
        let case_file_id = Uuid::now_v7();
        let opened = db::insert_case_file(
            connection,
            &NewCaseFile {
                case_file_id,
                referral_id,
                agency_id: &allocation.agency_id,
                area: &allocation.area,
                state: CaseState::Open as i32,
                opened_at: allocation
                    .confirmed_at
                    .as_ref()
                    .and_then(from_timestamp)
                    .unwrap_or_else(Utc::now),
                coordinator: &allocation.confirmed_by,
            },
        )
        .await?;
        let allocation_id = Uuid::parse_str(&allocation.allocation_id).ok();
        if !opened {
            // A re-match: the new pair takes over the open case file.
            let Some(case) = db::fetch_case_file(connection, referral_id, CaseLock::Share).await?
            else {
                return Ok(());
            };
            db::insert_case_mentors(
                connection,
                case.case_file_id,
                allocation_id,
                &allocation.mentor_ids,
            )
            .await?;
            db::set_coordinator(connection, case.case_file_id, &allocation.confirmed_by).await?;
            tracing::info!(%referral_id, "case file given to the new pair");
            return Ok(());
        }
        db::insert_case_mentors(
            connection,
            case_file_id,
            allocation_id,
            &allocation.mentor_ids,
        )
        .await?;
        let closed = db::close_case_file_if_ended(
            connection,
            referral_id,
            CaseState::Open as i32,
            CaseState::Closed as i32,
        )
        .await?;
        tracing::info!(
            %referral_id,
            %case_file_id,
            mentors = allocation.mentor_ids.len(),
            closed,
            "case file opened"
        );
        Ok(())
    }
}

impl On<AllocationEnded> for CaseFiles {
    /// The former pair loses the case; the case stays open for the next.
    async fn on(
        &self,
        connection: &mut Tx,
        ended: AllocationEnded,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let referral_id = referral_id(&ended.referral_id)?;
        let allocation_id = Uuid::parse_str(&ended.allocation_id)
            .map_err(|_| HandlerError::Permanent("allocation.ended names no allocation".into()))?;
        let removed =
            db::remove_case_mentors(connection, referral_id, allocation_id, &ended.mentor_ids)
                .await?;
        tracing::info!(%referral_id, removed, "former mentors lost the case");
        Ok(())
    }
}

impl On<EngagementChanged> for CaseFiles {
    /// Closes the case file of a client whose support ended (not a
    /// discharge: the referrer hears of it as not taken on).
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
        let ended_at = changed
            .decided_at
            .as_ref()
            .and_then(from_timestamp)
            .unwrap_or_else(Utc::now);
        db::insert_ended_engagement(connection, referral_id, &changed.decided_by, ended_at).await?;
        let closed = db::close_case_file_if_ended(
            connection,
            referral_id,
            CaseState::Open as i32,
            CaseState::Closed as i32,
        )
        .await?;
        tracing::info!(%referral_id, closed, "engagement ended");
        Ok(())
    }
}

impl On<FeedbackDelivered> for CaseFiles {
    /// Records when the discharge feedback reached the referrer: the date
    /// the proforma asks for, and what the case file shows from then on.
    async fn on(
        &self,
        connection: &mut Tx,
        delivered: FeedbackDelivered,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let referral_id = referral_id(&delivered.referral_id)?;
        let delivered_at = delivered
            .delivered_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| HandlerError::Permanent("feedback.delivered has no time".into()))?;
        let recorded = db::record_feedback_delivered(connection, referral_id, delivered_at).await?;
        tracing::info!(%referral_id, recorded, channel = %delivered.channel, "feedback delivered");
        Ok(())
    }
}

impl Forget for CaseFiles {
    const WHAT: &'static str = "free text";

    /// Drops the client's sealed text and resolves their open concerns,
    /// which can no longer be resolved with a note.
    async fn forget(&self, connection: &mut Tx, referral_id: Uuid) -> Result<u64, HandlerError> {
        let text = db::forget_client_text(connection, referral_id).await?;
        let goals = crate::goals::forget_goal_text(connection, referral_id).await?;
        let concerns = crate::concerns::resolve_for_erasure(connection, referral_id).await?;
        Ok(text + goals + concerns)
    }
}
