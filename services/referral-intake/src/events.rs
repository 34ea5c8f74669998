//! The status projection: downstream events move a referral's status as
//! its agency sees it, and each move is announced ([`crate::status`]). Each
//! handler only advances the status (see [`cpm_proto::status_rank`]), so
//! late or repeated events change nothing and announce nothing.
//!
//! The `allocations` consumer keeps which mentors may read a client's
//! minimal record ([`crate::mentor_view`]): the mentors of a confirmed
//! allocation until it ends (`allocation.ended`), and nobody once support
//! ended (`case.discharged`, or `engagement.changed` with END). An ending
//! is final whatever order the events arrive in.

use cpm_proto::Event as _;
use cpm_proto::v1::{
    AllocationConfirmed, AllocationEnded, AreaWaitQuoted, AssessmentDecided, AssessmentOpened,
    CaseDischarged, Decision, EngagementAction, EngagementChanged, FeedbackDelivered,
    MentorsAwaited, ReferralStatus, ReferralSubmitted,
};
use cpm_runtime::bus::{HandlerError, On, ReceivedEvent, Router, Tx, referral_id};
use cpm_runtime::grpc::values::from_timestamp;
use uuid::Uuid;

use crate::db::{self, StatusChange};
use crate::domain::status_rank;
use crate::status;

/// The status projection's routes.
pub fn status_projection() -> Router<StatusProjection> {
    Router::new(crate::NAME, "status", StatusProjection)
        .on::<ReferralSubmitted>()
        .on::<AssessmentOpened>()
        .on::<AssessmentDecided>()
        .on::<MentorsAwaited>()
        .on::<AllocationConfirmed>()
        .on::<CaseDischarged>()
        .on::<EngagementChanged>()
        .on::<FeedbackDelivered>()
        .on::<AreaWaitQuoted>()
}

pub struct StatusProjection;

fn change(status: ReferralStatus) -> StatusChange {
    StatusChange {
        status: status as i32,
        rank: status_rank(status),
        ..StatusChange::default()
    }
}

/// `change` dated when its event says the step happened (now without a time).
fn at(change: StatusChange, time: Option<&prost_types::Timestamp>) -> StatusChange {
    StatusChange {
        changed_at: time.and_then(from_timestamp),
        ..change
    }
}

/// Moves the referral's status forward to `change`, if it is ahead, and
/// announces it.
async fn project(
    connection: &mut Tx,
    referral: &str,
    change: StatusChange,
) -> Result<(), HandlerError> {
    let referral_id = referral_id(referral)?;
    let advanced = status::advance(connection, referral_id, &change).await?;
    tracing::info!(%referral_id, status = change.status, advanced, "referral status projected");
    Ok(())
}

impl On<ReferralSubmitted> for StatusProjection {
    /// A submission is RECEIVED as it is written (SubmitReferral's one
    /// statement stays as lean as it is); it is announced from here.
    async fn on(
        &self,
        connection: &mut Tx,
        e: ReferralSubmitted,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let referral_id = referral_id(&e.referral_id)?;
        let mut received = at(change(ReferralStatus::Received), e.submitted_at.as_ref());
        // Acknowledged with the area's current wait, when mentor matching
        // quoted one in the last day.
        let submitted_at = e
            .submitted_at
            .as_ref()
            .and_then(from_timestamp)
            .unwrap_or_else(chrono::Utc::now);
        if let Some((p50, p90)) = crate::db::area_wait(
            connection,
            &e.area,
            submitted_at - chrono::Duration::days(1),
        )
        .await?
        {
            received.estimated_start = Some(submitted_at + chrono::Duration::days(p50.into()));
            received.estimated_start_latest =
                Some(submitted_at + chrono::Duration::days(p90.into()));
        }
        status::announce(
            connection,
            &status::Announced {
                referral_id,
                agency_id: &e.agency_id,
                submitted_by: &e.submitted_by,
            },
            ReferralStatus::Unspecified,
            &received,
        )
        .await?;
        Ok(())
    }
}

impl On<AssessmentOpened> for StatusProjection {
    async fn on(
        &self,
        connection: &mut Tx,
        e: AssessmentOpened,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        project(
            connection,
            &e.referral_id,
            change(ReferralStatus::UnderAssessment),
        )
        .await
    }
}

impl On<AssessmentDecided> for StatusProjection {
    async fn on(
        &self,
        connection: &mut Tx,
        e: AssessmentDecided,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let status_change = if e.decision == Decision::Accept as i32 {
            change(ReferralStatus::Accepted)
        } else {
            StatusChange {
                not_taken_on_stage: Some(e.stage),
                not_taken_on_reason: Some(e.reason),
                ..change(ReferralStatus::NotTakenOn)
            }
        };
        let status_change = at(status_change, e.decided_at.as_ref());
        project(connection, &e.referral_id, status_change).await
    }
}

impl On<MentorsAwaited> for StatusProjection {
    async fn on(
        &self,
        connection: &mut Tx,
        e: MentorsAwaited,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let status_change = StatusChange {
            estimated_start: e.estimated_start.as_ref().and_then(from_timestamp),
            estimated_start_latest: e.estimated_start_latest.as_ref().and_then(from_timestamp),
            ..change(ReferralStatus::AwaitingMentors)
        };
        project(connection, &e.referral_id, status_change).await
    }
}

impl On<AllocationConfirmed> for StatusProjection {
    async fn on(
        &self,
        connection: &mut Tx,
        e: AllocationConfirmed,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        project(
            connection,
            &e.referral_id,
            at(change(ReferralStatus::InSupport), e.confirmed_at.as_ref()),
        )
        .await
    }
}

impl On<CaseDischarged> for StatusProjection {
    async fn on(
        &self,
        connection: &mut Tx,
        e: CaseDischarged,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let discharged_at = e.discharged_at.as_ref().and_then(from_timestamp);
        let status_change = StatusChange {
            discharged_at,
            discharge_feedback: e.feedback,
            changed_at: discharged_at,
            ..change(ReferralStatus::Discharged)
        };
        project(connection, &e.referral_id, status_change).await
    }
}

impl On<EngagementChanged> for StatusProjection {
    async fn on(
        &self,
        connection: &mut Tx,
        e: EngagementChanged,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        if e.action != EngagementAction::End as i32 {
            // Continuing or pausing leaves the referrer's view as it is.
            return Ok(());
        }
        let status_change = at(
            StatusChange {
                not_taken_on_stage: Some(e.stage),
                not_taken_on_reason: Some(e.reason),
                ..change(ReferralStatus::NotTakenOn)
            },
            e.decided_at.as_ref(),
        );
        project(connection, &e.referral_id, status_change).await
    }
}

/// The `allocations` consumer's routes: who may read a client's minimal record.
pub fn mentor_allocations() -> Router<MentorAllocations> {
    Router::new(crate::NAME, "allocations", MentorAllocations)
        .on::<AllocationConfirmed>()
        .on::<AllocationEnded>()
        .on::<CaseDischarged>()
        .on::<EngagementChanged>()
}

pub struct MentorAllocations;

fn allocation_id(value: &str, event_type: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(value)
        .map_err(|_| HandlerError::Permanent(format!("{event_type} names no allocation")))
}

/// The mentor IDs an event names, without blanks.
fn named_mentors(mentor_ids: Vec<String>) -> Vec<String> {
    mentor_ids
        .into_iter()
        .filter(|mentor_id| !mentor_id.trim().is_empty())
        .collect()
}

impl On<AllocationConfirmed> for MentorAllocations {
    /// The pair may read the client's minimal record, unless support has
    /// ended or this allocation's ending came first.
    async fn on(
        &self,
        connection: &mut Tx,
        e: AllocationConfirmed,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let referral_id = referral_id(&e.referral_id)?;
        let allocation_id = allocation_id(&e.allocation_id, AllocationConfirmed::TYPE)?;
        let mentors = named_mentors(e.mentor_ids);
        let added =
            db::insert_mentor_allocation(connection, allocation_id, referral_id, &mentors).await?;
        tracing::info!(%referral_id, %allocation_id, added, "mentors may read the minimal record");
        Ok(())
    }
}

impl On<AllocationEnded> for MentorAllocations {
    /// The pair that did not work loses the client at once.
    async fn on(
        &self,
        connection: &mut Tx,
        e: AllocationEnded,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let referral_id = referral_id(&e.referral_id)?;
        let allocation_id = allocation_id(&e.allocation_id, AllocationEnded::TYPE)?;
        let mentors = named_mentors(e.mentor_ids);
        let ended =
            db::end_mentor_allocation(connection, allocation_id, referral_id, &mentors).await?;
        tracing::info!(%referral_id, %allocation_id, ended, "mentors lost the minimal record");
        Ok(())
    }
}

/// Support ended: no mentor reads the client again.
async fn end_mentor_access(
    connection: &mut Tx,
    referral: &str,
    event_type: &str,
) -> Result<(), HandlerError> {
    let referral_id = referral_id(referral)?;
    let ended = db::end_mentor_access(connection, referral_id, event_type).await?;
    tracing::info!(%referral_id, ended, "support ended; no mentor reads the minimal record");
    Ok(())
}

impl On<CaseDischarged> for MentorAllocations {
    async fn on(
        &self,
        connection: &mut Tx,
        e: CaseDischarged,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        end_mentor_access(connection, &e.referral_id, CaseDischarged::TYPE).await
    }
}

impl On<EngagementChanged> for MentorAllocations {
    /// Only an ending counts: a paused engagement keeps its mentors.
    async fn on(
        &self,
        connection: &mut Tx,
        e: EngagementChanged,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        if e.action != EngagementAction::End as i32 {
            return Ok(());
        }
        end_mentor_access(connection, &e.referral_id, EngagementChanged::TYPE).await
    }
}

impl On<FeedbackDelivered> for StatusProjection {
    /// Records when the discharge feedback reached the referrer: what the
    /// referral shows as `feedback_received_at`. No status moves.
    async fn on(
        &self,
        connection: &mut Tx,
        e: FeedbackDelivered,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let referral_id = referral_id(&e.referral_id)?;
        let received_at = e
            .delivered_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| HandlerError::Permanent("feedback.delivered has no time".into()))?;
        let recorded =
            crate::db::record_feedback_received(connection, referral_id, received_at).await?;
        tracing::info!(%referral_id, recorded, "discharge feedback received");
        Ok(())
    }
}

impl On<AreaWaitQuoted> for StatusProjection {
    /// Keeps the area's current wait, for acknowledging its referrals.
    async fn on(
        &self,
        connection: &mut Tx,
        e: AreaWaitQuoted,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let quoted_at = e
            .quoted_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| {
                HandlerError::Permanent("matching.area_wait_quoted has no time".into())
            })?;
        crate::db::record_area_wait(connection, e.area.trim(), e.p50_days, e.p90_days, quoted_at)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocations_consumer_hears_every_event_that_gives_or_ends_access() {
        assert_eq!(
            mentor_allocations().event_types(),
            [
                "allocation.confirmed",
                "allocation.ended",
                "case.discharged",
                "engagement.changed"
            ]
        );
    }

    #[test]
    fn blank_mentor_ids_are_dropped_and_a_bad_allocation_id_is_permanent() {
        assert_eq!(
            named_mentors(vec!["m-1".into(), "".into(), " ".into(), "m-2".into()]),
            ["m-1", "m-2"]
        );
        assert!(matches!(
            allocation_id("nope", AllocationEnded::TYPE),
            Err(HandlerError::Permanent(_))
        ));
    }
}
