//! The status projection: downstream events move a referral's status as
//! its agency sees it, and each move is announced ([`crate::status`]). Each
//! handler only advances the status (see [`cpm_proto::status_rank`]), so
//! late or repeated events change nothing and announce nothing.

use cpm_proto::v1::{
    AllocationConfirmed, AssessmentDecided, AssessmentOpened, CaseDischarged, Decision,
    EngagementAction, EngagementChanged, MentorsAwaited, ReferralStatus, ReferralSubmitted,
};
use cpm_runtime::bus::{HandlerError, On, ReceivedEvent, Router, Tx, referral_id};
use cpm_runtime::grpc::values::from_timestamp;

use crate::db::StatusChange;
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
}

pub struct StatusProjection;

fn change(status: ReferralStatus) -> StatusChange {
    StatusChange {
        status: status as i32,
        rank: status_rank(status),
        ..StatusChange::default()
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
        let received = change(ReferralStatus::Received);
        status::announce(
            connection,
            referral_id,
            &e.agency_id,
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
            change(ReferralStatus::InSupport),
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
        let status_change = StatusChange {
            discharged_at: e.discharged_at.as_ref().and_then(from_timestamp),
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
        let status_change = StatusChange {
            not_taken_on_stage: Some(e.stage),
            not_taken_on_reason: Some(e.reason),
            ..change(ReferralStatus::NotTakenOn)
        };
        project(connection, &e.referral_id, status_change).await
    }
}
