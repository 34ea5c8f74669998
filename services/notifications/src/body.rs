//! What a webhook and the agency feed carry of a notification, as JSON:
//! IDs, the status, and what the status comes with — the stage and reason
//! category of a NOT_TAKEN_ON, the expected start range of an
//! AWAITING_MENTORS, the discharge feedback of a DISCHARGED. Enum values by
//! their names; never personal data.

use cpm_proto::v1::{
    DischargeFeedback, DischargeOutcome, NonEngagementReason, NonEngagementStage, NotificationKind,
    ReferralStatus, RelapseSign,
};
use prost::Message as _;
use serde::Serialize;

use crate::db::NotificationRow;

/// One notification as JSON.
#[derive(Debug, PartialEq, Serialize)]
pub struct NotificationBody {
    pub notification_id: String,
    pub sequence: i64,
    pub agency_id: String,
    pub referral_id: String,
    pub kind: &'static str,
    pub status: &'static str,
    pub created_at: String,
    /// For NOT_TAKEN_ON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// For AWAITING_MENTORS: half of such clients start by the first date,
    /// nine in ten by the second (YYYY-MM-DD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_start_latest: Option<String>,
    /// For DISCHARGED only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<FeedbackBody>,
}

impl From<&NotificationRow> for NotificationBody {
    fn from(row: &NotificationRow) -> Self {
        Self {
            notification_id: row.notification_id.to_string(),
            sequence: row.sequence,
            agency_id: row.agency_id.clone(),
            referral_id: row.referral_id.to_string(),
            kind: NotificationKind::try_from(row.kind)
                .unwrap_or_default()
                .as_str_name(),
            status: ReferralStatus::try_from(row.status)
                .unwrap_or_default()
                .as_str_name(),
            created_at: row.created_at.to_rfc3339(),
            stage: row
                .stage
                .and_then(|stage| NonEngagementStage::try_from(stage).ok())
                .map(|stage| stage.as_str_name()),
            reason: row
                .reason
                .and_then(|reason| NonEngagementReason::try_from(reason).ok())
                .map(|reason| reason.as_str_name()),
            estimated_start: row.estimated_start.map(|day| day.to_string()),
            estimated_start_latest: row.estimated_start_latest.map(|day| day.to_string()),
            feedback: decode_feedback(row.feedback.as_deref())
                .as_ref()
                .map(FeedbackBody::from),
        }
    }
}

/// The discharge feedback as JSON: enum values by their names.
#[derive(Debug, PartialEq, Serialize)]
pub struct FeedbackBody {
    pub started_on: String,
    pub discharged_on: String,
    pub contacts: i32,
    pub goals_set: i32,
    pub goals_achieved: i32,
    pub outcome: &'static str,
    pub relapse_signs: Vec<&'static str>,
    pub how_to_re_refer: String,
}

impl From<&DischargeFeedback> for FeedbackBody {
    fn from(feedback: &DischargeFeedback) -> Self {
        Self {
            started_on: feedback.started_on.clone(),
            discharged_on: feedback.discharged_on.clone(),
            contacts: feedback.contacts,
            goals_set: feedback.goals_set,
            goals_achieved: feedback.goals_achieved,
            outcome: DischargeOutcome::try_from(feedback.outcome)
                .unwrap_or_default()
                .as_str_name(),
            relapse_signs: feedback
                .relapse_signs
                .iter()
                .map(|sign| {
                    RelapseSign::try_from(*sign)
                        .unwrap_or_default()
                        .as_str_name()
                })
                .collect(),
            how_to_re_refer: feedback.how_to_re_refer.clone(),
        }
    }
}

/// A stored feedback, decoded; `None` when there is none (or it does not
/// decode, which only a corrupted row could cause).
pub fn decode_feedback(stored: Option<&[u8]>) -> Option<DischargeFeedback> {
    stored.and_then(|bytes| DischargeFeedback::decode(bytes).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: ReferralStatus) -> NotificationRow {
        NotificationRow {
            notification_id: uuid::Uuid::now_v7(),
            agency_id: "agency-a".into(),
            sequence: 7,
            referral_id: uuid::Uuid::now_v7(),
            kind: NotificationKind::StatusChanged as i32,
            status: status as i32,
            created_at: chrono::Utc::now(),
            feedback: None,
            stage: None,
            reason: None,
            estimated_start: None,
            estimated_start_latest: None,
        }
    }

    #[test]
    fn a_not_taken_on_says_where_and_why_and_an_acceptance_when_support_starts() {
        let not_taken_on = NotificationRow {
            stage: Some(NonEngagementStage::HomeVisit as i32),
            reason: Some(NonEngagementReason::RiskToVolunteers as i32),
            ..row(ReferralStatus::NotTakenOn)
        };
        let json = serde_json::to_value(NotificationBody::from(&not_taken_on)).unwrap();
        assert_eq!(json["stage"], "NON_ENGAGEMENT_STAGE_HOME_VISIT");
        assert_eq!(json["reason"], "NON_ENGAGEMENT_REASON_RISK_TO_VOLUNTEERS");
        assert!(json.get("estimated_start").is_none());
        let day = |d| chrono::NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        let awaiting = NotificationRow {
            estimated_start: Some(day(10)),
            estimated_start_latest: Some(day(31)),
            ..row(ReferralStatus::AwaitingMentors)
        };
        let json = serde_json::to_value(NotificationBody::from(&awaiting)).unwrap();
        assert_eq!(json["estimated_start"], "2026-12-10");
        assert_eq!(json["estimated_start_latest"], "2026-12-31");
        assert!(json.get("stage").is_none() && json.get("feedback").is_none());
    }
}
