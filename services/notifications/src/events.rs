//! Turns referrer-visible events into notifications and pending webhook
//! deliveries, in the consumer's inbox transaction: one route per event
//! type, each saying which status its agency is told of.

use cpm_proto::v1::{
    AllocationConfirmed, AssessmentDecided, AssessmentOpened, CaseDischarged, Decision,
    EngagementAction, EngagementChanged, MentorsAwaited, ReferralStatus, ReferralSubmitted,
    ReferralWithdrawn,
};
use cpm_runtime::bus::{HandlerError, On, ReceivedEvent, Router, Tx, referral_id};
use uuid::Uuid;

use crate::db::{self, NotificationRow};
use crate::domain::{Notice, notice};

/// The `status` consumer's routes: every referrer-visible status event.
pub fn status_notices() -> Router<NotificationWriter> {
    Router::new(crate::NAME, "status", NotificationWriter)
        .on::<ReferralSubmitted>()
        .on::<ReferralWithdrawn>()
        .on::<AssessmentOpened>()
        .on::<AssessmentDecided>()
        .on::<MentorsAwaited>()
        .on::<AllocationConfirmed>()
        .on::<CaseDischarged>()
        .on::<EngagementChanged>()
}

pub struct NotificationWriter;

impl NotificationWriter {
    /// Records `notice` and a pending delivery per webhook of its agency.
    async fn write(
        connection: &mut Tx,
        notice: Notice,
        received: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let referral_id = referral_id(&notice.referral_id)?;
        if notice.agency_id.is_empty() {
            return Err(HandlerError::Permanent("event names no agency".into()));
        }
        let sequence = db::next_sequence(connection, &notice.agency_id).await?;
        let row = NotificationRow {
            notification_id: Uuid::now_v7(),
            agency_id: notice.agency_id.clone(),
            sequence,
            referral_id,
            kind: notice.kind as i32,
            status: notice.status as i32,
            created_at: chrono::Utc::now(),
        };
        db::insert_notification(connection, &row, received.event_id).await?;
        let deliveries =
            db::insert_deliveries(connection, &notice.agency_id, row.notification_id).await?;
        db::notify_committed(connection).await?;
        tracing::info!(%referral_id, status = notice.status.as_str_name(), deliveries, "agency notified");
        Ok(())
    }
}

/// `impl On<Event>` writing the notice of a fixed status.
macro_rules! notify_of {
    ($($event:ty => $status:expr),* $(,)?) => {$(
        impl On<$event> for NotificationWriter {
            async fn on(
                &self,
                connection: &mut Tx,
                e: $event,
                received: &ReceivedEvent,
            ) -> Result<(), HandlerError> {
                Self::write(connection, notice(e.agency_id, e.referral_id, $status), received).await
            }
        }
    )*};
}

notify_of! {
    ReferralSubmitted => ReferralStatus::Received,
    ReferralWithdrawn => ReferralStatus::Withdrawn,
    AssessmentOpened => ReferralStatus::UnderAssessment,
    MentorsAwaited => ReferralStatus::AwaitingMentors,
    AllocationConfirmed => ReferralStatus::InSupport,
    CaseDischarged => ReferralStatus::Discharged,
}

impl On<AssessmentDecided> for NotificationWriter {
    async fn on(
        &self,
        connection: &mut Tx,
        e: AssessmentDecided,
        received: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let status = if e.decision == Decision::Accept as i32 {
            ReferralStatus::Accepted
        } else {
            ReferralStatus::NotTakenOn
        };
        Self::write(
            connection,
            notice(e.agency_id, e.referral_id, status),
            received,
        )
        .await
    }
}

impl On<EngagementChanged> for NotificationWriter {
    async fn on(
        &self,
        connection: &mut Tx,
        e: EngagementChanged,
        received: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        if e.action != EngagementAction::End as i32 {
            // Continuing or pausing leaves the referrer's view as it is.
            return Ok(());
        }
        let notice = notice(e.agency_id, e.referral_id, ReferralStatus::NotTakenOn);
        Self::write(connection, notice, received).await
    }
}
