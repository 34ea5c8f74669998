//! The referrer-visible status, of which referral intake is the one owner.
//! A change only moves it forward and, when it moved, is announced as
//! `referral.status_changed` in the same transaction: the only status input
//! of notifications, so what an agency is told and what GetReferral shows
//! follow one rule and never disagree for longer than the bus takes.

use chrono::Utc;
use cpm_proto::v1::{ReferralStatus, ReferralStatusChanged};
use cpm_runtime::bus::{Tx, outbox};
use cpm_runtime::grpc::values::timestamp;
use uuid::Uuid;

use crate::db::{self, StatusChange};

/// Moves the referral's status forward to `change` if it is ahead, and
/// announces it. Returns whether it moved.
pub async fn advance(
    tx: &mut Tx,
    referral_id: Uuid,
    change: &StatusChange,
) -> Result<bool, sqlx::Error> {
    let Some(advanced) = db::advance_status(tx, referral_id, change).await? else {
        return Ok(false);
    };
    let previous = ReferralStatus::try_from(advanced.previous_status).unwrap_or_default();
    let referral = Announced {
        referral_id,
        agency_id: &advanced.agency_id,
        submitted_by: &advanced.submitted_by,
    };
    announce(tx, &referral, previous, change).await?;
    Ok(true)
}

/// The referral a status change is announced for, and whom it concerns.
pub struct Announced<'a> {
    pub referral_id: Uuid,
    pub agency_id: &'a str,
    /// The referrer who submitted it.
    pub submitted_by: &'a str,
}

/// Writes `referral.status_changed` for `change`, from `previous`.
pub async fn announce(
    tx: &mut Tx,
    referral: &Announced<'_>,
    previous: ReferralStatus,
    change: &StatusChange,
) -> Result<(), sqlx::Error> {
    let (referral_id, agency_id) = (referral.referral_id, referral.agency_id);
    outbox::enqueue(
        tx,
        crate::NAME,
        &ReferralStatusChanged {
            referral_id: referral_id.to_string(),
            agency_id: agency_id.to_owned(),
            status: change.status,
            previous_status: previous as i32,
            stage: change.not_taken_on_stage.unwrap_or_default(),
            reason: change.not_taken_on_reason.unwrap_or_default(),
            estimated_start: change.estimated_start.map(timestamp),
            estimated_start_latest: change.estimated_start_latest.map(timestamp),
            changed_at: Some(timestamp(change.changed_at.unwrap_or_else(Utc::now))),
            feedback: change.discharge_feedback.clone(),
            submitted_by: referral.submitted_by.to_owned(),
        },
    )
    .await?;
    Ok(())
}
