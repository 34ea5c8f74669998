//! What an agency is told of a status, and which webhook URLs are accepted.
//! Which events notify is the `status` consumer's route list
//! ([`crate::events::status_notices`]).

use cpm_proto::v1::{DischargeFeedback, NotificationKind, ReferralStatus};
use cpm_runtime::grpc::FieldViolations;

/// What an agency is told about one event.
#[derive(Debug, PartialEq, Eq)]
pub struct Notice {
    pub agency_id: String,
    pub referral_id: String,
    pub kind: NotificationKind,
    pub status: ReferralStatus,
    /// For a discharge: the proforma feedback.
    pub feedback: Option<DischargeFeedback>,
}

/// The notice of `status` for its referring agency, carrying `feedback`
/// when it is a discharge.
pub fn notice(
    agency_id: String,
    referral_id: String,
    status: ReferralStatus,
    feedback: Option<DischargeFeedback>,
) -> Notice {
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
        feedback: feedback.filter(|_| kind == NotificationKind::Discharged),
    }
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
        let feedback = DischargeFeedback {
            contacts: 31,
            ..Default::default()
        };
        let discharged = notice(
            "a".into(),
            "r".into(),
            ReferralStatus::Discharged,
            Some(feedback.clone()),
        );
        assert_eq!(discharged.kind, NotificationKind::Discharged);
        assert_eq!(discharged.feedback, Some(feedback.clone()));
        let accepted = notice(
            "a".into(),
            "r".into(),
            ReferralStatus::Accepted,
            Some(feedback),
        );
        assert_eq!(accepted.kind, NotificationKind::StatusChanged);
        assert_eq!(accepted.feedback, None, "only a discharge carries feedback");
    }
}
