//! Which events an agency hears about, and which webhook URLs are accepted.

use cpm_proto::Event;
use cpm_proto::v1::{
    AllocationConfirmed, AssessmentDecided, AssessmentOpened, CaseDischarged, Decision,
    EngagementAction, EngagementChanged, MentorsAwaited, NotificationKind, ReferralStatus,
    ReferralSubmitted, ReferralWithdrawn,
};
use cpm_runtime::bus::{HandlerError, ReceivedEvent};
use cpm_runtime::grpc::FieldViolations;

/// Every referrer-visible status event.
pub const NOTIFYING_EVENTS: &[&str] = &[
    ReferralSubmitted::TYPE,
    ReferralWithdrawn::TYPE,
    AssessmentOpened::TYPE,
    AssessmentDecided::TYPE,
    MentorsAwaited::TYPE,
    AllocationConfirmed::TYPE,
    CaseDischarged::TYPE,
    EngagementChanged::TYPE,
];

/// What an agency is told about one event.
#[derive(Debug, PartialEq, Eq)]
pub struct Notice {
    pub agency_id: String,
    pub referral_id: String,
    pub kind: NotificationKind,
    pub status: ReferralStatus,
}

fn notice(agency_id: String, referral_id: String, status: ReferralStatus) -> Notice {
    let kind = if status == ReferralStatus::Discharged {
        NotificationKind::Discharged
    } else {
        NotificationKind::StatusChanged
    };
    Notice {
        agency_id,
        referral_id,
        kind,
        status,
    }
}

/// The notice an event gives its referring agency, if any.
pub fn notice_for(event: &ReceivedEvent) -> Result<Option<Notice>, HandlerError> {
    Ok(Some(match event.event_type() {
        ReferralSubmitted::TYPE => {
            let e: ReferralSubmitted = event.decode()?;
            notice(e.agency_id, e.referral_id, ReferralStatus::Received)
        }
        ReferralWithdrawn::TYPE => {
            let e: ReferralWithdrawn = event.decode()?;
            notice(e.agency_id, e.referral_id, ReferralStatus::Withdrawn)
        }
        AssessmentOpened::TYPE => {
            let e: AssessmentOpened = event.decode()?;
            notice(e.agency_id, e.referral_id, ReferralStatus::UnderAssessment)
        }
        AssessmentDecided::TYPE => {
            let e: AssessmentDecided = event.decode()?;
            let status = if e.decision == Decision::Accept as i32 {
                ReferralStatus::Accepted
            } else {
                ReferralStatus::NotTakenOn
            };
            notice(e.agency_id, e.referral_id, status)
        }
        MentorsAwaited::TYPE => {
            let e: MentorsAwaited = event.decode()?;
            notice(e.agency_id, e.referral_id, ReferralStatus::AwaitingMentors)
        }
        AllocationConfirmed::TYPE => {
            let e: AllocationConfirmed = event.decode()?;
            notice(e.agency_id, e.referral_id, ReferralStatus::InSupport)
        }
        CaseDischarged::TYPE => {
            let e: CaseDischarged = event.decode()?;
            notice(e.agency_id, e.referral_id, ReferralStatus::Discharged)
        }
        EngagementChanged::TYPE => {
            let e: EngagementChanged = event.decode()?;
            if e.action != EngagementAction::End as i32 {
                return Ok(None);
            }
            notice(e.agency_id, e.referral_id, ReferralStatus::NotTakenOn)
        }
        other => {
            return Err(HandlerError::unexpected("notifications", other));
        }
    }))
}

/// A webhook URL: absolute, HTTPS (plain HTTP only in development), no
/// credentials in it, at most 2000 characters.
pub fn check_webhook_url(url: &str, allow_plain_http: bool, violations: &mut FieldViolations) {
    let trimmed = url.trim();
    if trimmed.is_empty() {
        violations.add("url", "is required");
        return;
    }
    if trimmed.len() > 2000 {
        violations.add("url", "must be at most 2000 characters");
        return;
    }
    let Ok(parsed) = reqwest::Url::parse(trimmed) else {
        violations.add("url", "must be an absolute URL");
        return;
    };
    match parsed.scheme() {
        "https" => {}
        "http" if allow_plain_http => {}
        "http" => violations.add("url", "must use https"),
        _ => violations.add("url", "must be an http(s) URL"),
    }
    if parsed.host_str().is_none() {
        violations.add("url", "must name a host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        violations.add("url", "must not carry credentials");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations_for(url: &str, allow_plain_http: bool) -> usize {
        let mut violations = FieldViolations::new();
        check_webhook_url(url, allow_plain_http, &mut violations);
        violations.fields().count()
    }

    #[test]
    fn webhook_urls_are_checked() {
        assert_eq!(violations_for("https://agency.example/hooks/cpm", false), 0);
        assert_eq!(violations_for("http://127.0.0.1:8080/hook", true), 0);
        assert_eq!(violations_for("http://agency.example/hook", false), 1);
        assert_eq!(violations_for("", true), 1);
        assert_eq!(violations_for("not a url", true), 1);
        assert_eq!(violations_for("ftp://agency.example/x", true), 1);
        assert_eq!(violations_for("https://user:pw@agency.example/x", true), 1);
        assert_eq!(
            violations_for(&format!("https://a.example/{}", "x".repeat(2000)), true),
            1
        );
    }

    #[test]
    fn a_discharge_is_its_own_kind() {
        let discharged = notice("a".into(), "r".into(), ReferralStatus::Discharged);
        assert_eq!(discharged.kind, NotificationKind::Discharged);
        let accepted = notice("a".into(), "r".into(), ReferralStatus::Accepted);
        assert_eq!(accepted.kind, NotificationKind::StatusChanged);
    }
}
