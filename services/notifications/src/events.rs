//! Turns referral intake's `referral.status_changed` into notifications and
//! pending webhook deliveries and e-mails (on the channels the agency and its
//! referrers chose, [`crate::preferences`]), in the consumer's inbox
//! transaction. Which event moves a referral to which status is referral
//! intake's rule alone.

use std::sync::Arc;

use chrono::NaiveDate;
use cpm_proto::v1::{
    ConcernCategory, ConcernRaised, ConcernUrgency, MentorAlertKind, MentorAlertRaised,
    ReferralStatusChanged,
};
use cpm_runtime::bus::{HandlerError, On, ReceivedEvent, Router, Tx, referral_id};
use cpm_runtime::grpc::values::from_timestamp;
use uuid::Uuid;

use crate::db::{self, NotificationRow};
use crate::domain::{Notice, notice};
use crate::templates::{Placeholders, Purpose, Templates};
use crate::{email, preferences};

/// The `status` consumer's routes: referral intake's announcements of the
/// referrer-visible status, its only input.
/// E-mails are rendered with `templates`, and queued only when
/// `email_enabled` (an SMTP server is configured).
pub fn status_notices(
    templates: Arc<Templates>,
    email_enabled: bool,
) -> Router<NotificationWriter> {
    Router::new(
        crate::NAME,
        "status",
        NotificationWriter {
            templates,
            email_enabled,
        },
    )
    .on::<ReferralStatusChanged>()
}

pub struct NotificationWriter {
    templates: Arc<Templates>,
    email_enabled: bool,
}

impl NotificationWriter {
    /// Records `notice`, a pending delivery per webhook of its agency and
    /// an e-mail per chosen address (the agency's, and those of the
    /// referrer who submitted the referral), rendered with `values`.
    async fn write(
        &self,
        connection: &mut Tx,
        notice: Notice,
        submitted_by: &str,
        mut values: Placeholders,
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
            feedback: notice.feedback.as_ref().map(prost::Message::encode_to_vec),
            stage: values.stage.map(|stage| stage as i32),
            reason: values.reason.map(|reason| reason as i32),
            estimated_start: values.estimated_start,
            estimated_start_latest: values.estimated_start_latest,
        };
        let channels =
            preferences::channels_for(connection, &notice.agency_id, submitted_by, notice.kind)
                .await?;
        db::insert_notification(connection, &row, &channels, received.event_id).await?;
        let deliveries = if channels.webhook {
            db::insert_deliveries(connection, &notice.agency_id, row.notification_id).await?
        } else {
            0
        };
        let mut emails = 0;
        if let Some(purpose) = Purpose::for_status(notice.status)
            && self.email_enabled
            && !channels.email_recipients.is_empty()
        {
            values.notification_id = Some(row.notification_id);
            let rendered = self.templates.render(purpose, &values);
            emails = email::queue(
                connection,
                email::About::Notification(row.notification_id),
                &rendered,
                &channels.email_recipients,
            )
            .await?;
        }
        db::notify_committed(connection, &notice.agency_id).await?;
        tracing::info!(%referral_id, status = notice.status.as_str_name(), deliveries, emails, "agency notified");
        Ok(())
    }
}

impl On<ReferralStatusChanged> for NotificationWriter {
    async fn on(
        &self,
        connection: &mut Tx,
        mut e: ReferralStatusChanged,
        received: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let status = e.status();
        let values = Placeholders::of_status_change(&e);
        let submitted_by = std::mem::take(&mut e.submitted_by);
        self.write(
            connection,
            notice(e.agency_id, e.referral_id, status, e.feedback),
            &submitted_by,
            values,
            received,
        )
        .await
    }
}

/// The `staff-alerts` consumer's routes: mentor matching's alerts for an
/// area's coordinators (a mentor waiting since training, a check-in due)
/// and contact logging's urgent concerns, kept once each, by their ID, for
/// delivery to those coordinators.
pub fn staff_alerts(templates: Arc<Templates>, email_enabled: bool) -> Router<StaffAlerts> {
    Router::new(
        crate::NAME,
        "staff-alerts",
        StaffAlerts {
            templates,
            email_enabled,
        },
    )
    .on::<MentorAlertRaised>()
    .on::<ConcernRaised>()
}

/// Keeps staff alerts, and e-mails each new one to its area's coordinators
/// when e-mail is on and an admin set their addresses.
pub struct StaffAlerts {
    templates: Arc<Templates>,
    email_enabled: bool,
}

impl StaffAlerts {
    /// E-mails a newly kept alert of `area` to the area's coordinators.
    async fn email(
        &self,
        connection: &mut Tx,
        area: &str,
        alert_id: Uuid,
        purpose: Purpose,
        values: Placeholders,
    ) -> Result<u64, HandlerError> {
        if !self.email_enabled {
            return Ok(0);
        }
        Ok(crate::staff_alerts::email_area(
            connection,
            &self.templates,
            area,
            alert_id,
            purpose,
            &values,
        )
        .await?)
    }
}

impl On<MentorAlertRaised> for StaffAlerts {
    async fn on(
        &self,
        connection: &mut Tx,
        e: MentorAlertRaised,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let permanent = |what: &str| HandlerError::Permanent(format!("mentor.alert_raised {what}"));
        let alert_id = Uuid::parse_str(&e.alert_id).map_err(|_| permanent("names no alert"))?;
        let mentor_id = Uuid::parse_str(&e.mentor_id).map_err(|_| permanent("names no mentor"))?;
        let since = NaiveDate::parse_from_str(&e.since, "%Y-%m-%d")
            .map_err(|_| permanent("has no date"))?;
        let raised_at = e
            .raised_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| permanent("has no time"))?;
        let kept = db::insert_staff_alert(
            connection,
            alert_id,
            e.area.trim(),
            e.kind,
            mentor_id,
            since,
            raised_at,
        )
        .await?;
        let emails = if kept {
            let values = Placeholders {
                mentor_id: Some(mentor_id),
                mentor_alert: MentorAlertKind::try_from(e.kind).ok(),
                since: Some(since),
                ..Placeholders::default()
            };
            self.email(
                connection,
                e.area.trim(),
                alert_id,
                Purpose::MentorAlert,
                values,
            )
            .await?
        } else {
            0
        };
        tracing::info!(%alert_id, kept, emails, "staff alert received");
        Ok(())
    }
}

impl On<ConcernRaised> for StaffAlerts {
    /// Keeps an urgent concern for the area's coordinators; a routine one
    /// waits in contact logging's queue and is not pushed to anyone.
    async fn on(
        &self,
        connection: &mut Tx,
        e: ConcernRaised,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        if e.urgency != ConcernUrgency::Urgent as i32 {
            return Ok(());
        }
        let permanent = |what: &str| HandlerError::Permanent(format!("concern.raised {what}"));
        let concern_id =
            Uuid::parse_str(&e.concern_id).map_err(|_| permanent("names no concern"))?;
        let referral_id = referral_id(&e.referral_id)?;
        let raised_at = e
            .raised_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| permanent("has no time"))?;
        let kept = db::insert_concern_alert(
            connection,
            concern_id,
            e.area.trim(),
            referral_id,
            e.category,
            raised_at,
        )
        .await?;
        let emails = if kept {
            let values = Placeholders {
                referral_id: Some(referral_id),
                concern_id: Some(concern_id),
                concern_category: ConcernCategory::try_from(e.category).ok(),
                ..Placeholders::default()
            };
            self.email(
                connection,
                e.area.trim(),
                concern_id,
                Purpose::UrgentConcern,
                values,
            )
            .await?
        } else {
            0
        };
        tracing::info!(%concern_id, kept, emails, "urgent concern received");
        Ok(())
    }
}
