//! Where a mentor is in their volunteering, and how they move on.
//!
//! A mentor starts TRAINED (waiting for a first client); their first
//! allocation makes them ACTIVE. Staff then move them, always with a reason
//! kept in `mentor_status_change`:
//!
//! - ACTIVE → SABBATICAL (a break: not proposed) and back, which needs
//!   safeguarding training and a signed agreement on record;
//! - TRAINED, ACTIVE or SABBATICAL → LEFT, or → DECLINED (trained, but
//!   would not volunteer after all). Both are final, and a mentor who left
//!   or declined is refused on every RPC of every service (their standing,
//!   `cpm_runtime::standing`).
//!
//! A mentor still supporting clients cannot leave or take a sabbatical
//! until those clients have other mentors.

use cpm_proto::v1::{ChangeMentorStatusRequest, MentorStatus};
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::{check_text, parse_enum, parse_id};
use uuid::Uuid;

/// Longest reason for a status change.
pub const MAX_REASON: usize = 500;

/// A valid ChangeMentorStatus request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub mentor_id: Uuid,
    pub to: MentorStatus,
    pub reason: String,
}

impl StatusChange {
    pub fn parse(request: &ChangeMentorStatusRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let mentor_id = parse_id("mentor_id", &request.mentor_id, &mut violations);
        let to = parse_enum::<MentorStatus>("status", request.status, &mut violations);
        if to == Some(MentorStatus::Trained) {
            violations.add(
                "status",
                "a mentor cannot be moved back to TRAINED: choose ACTIVE, SABBATICAL, LEFT or DECLINED",
            );
        }
        check_text("reason", &request.reason, true, MAX_REASON, &mut violations);
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            mentor_id: mentor_id.expect("validated"),
            to: to.expect("validated"),
            reason: request.reason.trim().to_owned(),
        })
    }
}

/// Why a mentor in `from` cannot move to `to`, or `None` when they can.
/// `current_clients` counts the clients they support now;
/// `safeguarding_trained` and `agreement_signed` gate a return to ACTIVE.
/// A TRAINED mentor (no client yet) cannot take a sabbatical, so that
/// TRAINED keeps meaning "waiting for a first client" (back from a
/// sabbatical is ACTIVE); they leave or decline, both final.
pub fn refusal(
    from: MentorStatus,
    to: MentorStatus,
    current_clients: i32,
    safeguarding_trained: bool,
    agreement_signed: bool,
) -> Option<String> {
    use MentorStatus::{Active, Declined, Left, Sabbatical, Trained};
    let name = |status: MentorStatus| status.as_str_name().trim_start_matches("MENTOR_STATUS_");
    let allowed = match (from, to) {
        (Left | Declined, _) => {
            return Some(format!(
                "the mentor is {}: that is final",
                name(from).to_lowercase()
            ));
        }
        (Active, Sabbatical) | (Sabbatical, Active) => true,
        (Trained | Active | Sabbatical, Left | Declined) => true,
        _ => false,
    };
    if !allowed {
        return Some(format!(
            "a {} mentor cannot become {}",
            name(from),
            name(to)
        ));
    }
    if to == Active && !safeguarding_trained {
        return Some("a mentor without safeguarding training cannot be active".into());
    }
    if to == Active && !agreement_signed {
        return Some("a mentor who has not signed the mentor agreement cannot be active".into());
    }
    if matches!(to, Sabbatical | Left | Declined) && current_clients > 0 {
        return Some(format!(
            "the mentor still supports {current_clients} client(s): allocate them other mentors first"
        ));
    }
    None
}

/// Whether a mentor in `status` may still call the platform (their standing).
pub fn in_good_standing(status: MentorStatus) -> bool {
    !matches!(status, MentorStatus::Left | MentorStatus::Declined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MentorStatus::{Active, Declined, Left, Sabbatical, Trained};

    #[test]
    fn a_mentor_moves_only_along_the_volunteering_path() {
        let allowed = [
            (Active, Sabbatical),
            (Sabbatical, Active),
            (Trained, Left),
            (Trained, Declined),
            (Active, Left),
            (Active, Declined),
            (Sabbatical, Left),
            (Sabbatical, Declined),
        ];
        let all = [Trained, Active, Sabbatical, Left, Declined];
        for from in all {
            for to in all {
                let refused = refusal(from, to, 0, true, true);
                assert_eq!(
                    refused.is_none(),
                    allowed.contains(&(from, to)),
                    "{from:?} → {to:?}: {refused:?}"
                );
            }
        }
        assert!(
            refusal(Left, Active, 0, true, true)
                .unwrap()
                .contains("final")
        );
    }

    #[test]
    fn a_mentor_with_clients_stays_until_they_are_re_matched() {
        for to in [Sabbatical, Left, Declined] {
            let refused = refusal(Active, to, 1, true, true).unwrap();
            assert!(refused.contains("1 client"), "{refused}");
        }
    }

    #[test]
    fn back_from_a_sabbatical_needs_safeguarding_and_the_agreement() {
        assert_eq!(refusal(Sabbatical, Active, 0, true, true), None);
        assert!(
            refusal(Sabbatical, Active, 0, false, true)
                .unwrap()
                .contains("safeguarding")
        );
        assert!(
            refusal(Sabbatical, Active, 0, true, false)
                .unwrap()
                .contains("agreement")
        );
        // Neither gates a sabbatical or leaving.
        assert_eq!(refusal(Active, Sabbatical, 0, false, false), None);
        assert_eq!(refusal(Trained, Left, 0, false, false), None);
    }

    #[test]
    fn a_bad_request_names_every_field() {
        let violations = StatusChange::parse(&ChangeMentorStatusRequest {
            mentor_id: "nobody".into(),
            status: Trained as i32,
            reason: " \u{202e} ".into(),
        })
        .unwrap_err();
        assert_eq!(
            violations.fields().collect::<Vec<_>>(),
            ["mentor_id", "status", "reason"]
        );
        let unknown = StatusChange::parse(&ChangeMentorStatusRequest {
            mentor_id: Uuid::now_v7().to_string(),
            status: 42,
            reason: "x".repeat(MAX_REASON + 1),
        })
        .unwrap_err();
        assert_eq!(unknown.fields().collect::<Vec<_>>(), ["status", "reason"]);
        let change = StatusChange::parse(&ChangeMentorStatusRequest {
            mentor_id: Uuid::now_v7().to_string(),
            status: Left as i32,
            reason: "  moved away  ".into(),
        })
        .unwrap();
        assert_eq!((change.to, change.reason.as_str()), (Left, "moved away"));
    }

    #[test]
    fn only_leaving_or_declining_ends_a_standing() {
        for status in [Trained, Active, Sabbatical] {
            assert!(in_good_standing(status));
        }
        assert!(!in_good_standing(Left));
        assert!(!in_good_standing(Declined));
    }
}
