//! The status projection: downstream events move a referral's status as
//! its agency sees it. Each handler only advances the status (see
//! [`crate::domain::status_rank`]), so late or repeated events are harmless.

use cpm_proto::Event;
use cpm_proto::v1::{
    AllocationConfirmed, AssessmentDecided, AssessmentOpened, CaseDischarged, Decision,
    EngagementAction, EngagementChanged, MentorsAwaited, ReferralStatus,
};
use cpm_runtime::bus::{EventHandler, HandlerError, ReceivedEvent, referral_id};
use cpm_runtime::grpc::values::from_timestamp;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::{self, StatusChange};
use crate::domain::status_rank;

/// The events this projection listens to.
pub const STATUS_EVENTS: &[&str] = &[
    AssessmentOpened::TYPE,
    AssessmentDecided::TYPE,
    MentorsAwaited::TYPE,
    AllocationConfirmed::TYPE,
    CaseDischarged::TYPE,
    EngagementChanged::TYPE,
];

pub struct StatusProjection;

fn change(status: ReferralStatus) -> StatusChange {
    StatusChange {
        status: status as i32,
        rank: status_rank(status),
        ..StatusChange::default()
    }
}

impl StatusProjection {
    /// The status change an event makes, if any.
    fn status_change(event: &ReceivedEvent) -> Result<Option<(Uuid, StatusChange)>, HandlerError> {
        Ok(Some(match event.event_type() {
            AssessmentOpened::TYPE => {
                let e: AssessmentOpened = event.decode()?;
                (
                    referral_id(&e.referral_id)?,
                    change(ReferralStatus::UnderAssessment),
                )
            }
            AssessmentDecided::TYPE => {
                let e: AssessmentDecided = event.decode()?;
                let status_change = if e.decision == Decision::Accept as i32 {
                    change(ReferralStatus::Accepted)
                } else {
                    StatusChange {
                        not_taken_on_stage: Some(e.stage),
                        not_taken_on_reason: Some(e.reason),
                        ..change(ReferralStatus::NotTakenOn)
                    }
                };
                (referral_id(&e.referral_id)?, status_change)
            }
            MentorsAwaited::TYPE => {
                let e: MentorsAwaited = event.decode()?;
                (
                    referral_id(&e.referral_id)?,
                    StatusChange {
                        estimated_start: e.estimated_start.as_ref().and_then(from_timestamp),
                        ..change(ReferralStatus::AwaitingMentors)
                    },
                )
            }
            AllocationConfirmed::TYPE => {
                let e: AllocationConfirmed = event.decode()?;
                (
                    referral_id(&e.referral_id)?,
                    change(ReferralStatus::InSupport),
                )
            }
            CaseDischarged::TYPE => {
                let e: CaseDischarged = event.decode()?;
                (
                    referral_id(&e.referral_id)?,
                    StatusChange {
                        discharged_at: e.discharged_at.as_ref().and_then(from_timestamp),
                        ..change(ReferralStatus::Discharged)
                    },
                )
            }
            EngagementChanged::TYPE => {
                let e: EngagementChanged = event.decode()?;
                if e.action != EngagementAction::End as i32 {
                    // Continuing or pausing leaves the referrer's view as it is.
                    return Ok(None);
                }
                (
                    referral_id(&e.referral_id)?,
                    StatusChange {
                        not_taken_on_stage: Some(e.stage),
                        not_taken_on_reason: Some(e.reason),
                        ..change(ReferralStatus::NotTakenOn)
                    },
                )
            }
            other => {
                return Err(HandlerError::unexpected("status projection", other));
            }
        }))
    }
}

impl EventHandler for StatusProjection {
    async fn handle(
        &self,
        connection: &mut PgConnection,
        event: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let Some((referral_id, status_change)) = Self::status_change(event)? else {
            return Ok(());
        };
        let advanced = db::advance_status(connection, referral_id, &status_change).await?;
        tracing::info!(%referral_id, status = status_change.status, advanced, "referral status projected");
        Ok(())
    }
}
