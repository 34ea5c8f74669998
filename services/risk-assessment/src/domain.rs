//! Requests parsed at the edge, and the rules of an assessment: which
//! checks exist, what they recommend, and when a decision needs a reason.
//! Handlers never see a raw protobuf request; every violation is collected
//! so a coordinator fixes all of them at once.

use cpm_proto::v1::{
    CheckKind, DecideRequest, Decision, GetAssessmentRequest, ListQueueRequest,
    NonEngagementReason, NonEngagementStage, RecordCheckRequest,
};
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::{check_text, parse_enum, parse_id};
use uuid::Uuid;

/// Longest free text accepted in one field.
pub const MAX_TEXT: usize = 4000;
/// Queue page size when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: i32 = 50;
/// Largest queue page a caller may ask for.
pub const MAX_PAGE_SIZE: i32 = 500;
/// The checks that must all be recorded before a client can be accepted.
pub const REQUIRED_CHECKS: [CheckKind; 3] = [
    CheckKind::AdultAtReferral,
    CheckKind::RiskToVolunteers,
    CheckKind::WillWantCapacity,
];
/// The violation an unexplained override gets.
pub const OVERRIDE_NEEDS_REASON: &str = "an override of the recommendation needs a reason";

/// The latest check of one kind: the one that counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckOutcome {
    pub kind: CheckKind,
    pub satisfied: bool,
}

/// What the latest checks suggest. Any check that found the client
/// unsuitable suggests not taking them on; all three satisfied suggest
/// accepting; anything short of that suggests nothing yet. A coordinator
/// decides either way: the recommendation only makes an override explicit.
pub fn recommend(latest_checks: &[CheckOutcome]) -> Decision {
    if latest_checks.iter().any(|check| !check.satisfied) {
        return Decision::NotTakenOn;
    }
    let all_satisfied = REQUIRED_CHECKS.iter().all(|required| {
        latest_checks
            .iter()
            .any(|check| check.kind == *required && check.satisfied)
    });
    if all_satisfied {
        Decision::Accept
    } else {
        Decision::Unspecified
    }
}

/// The required checks with no record yet, in their canonical order.
pub fn missing_checks(latest_checks: &[CheckOutcome]) -> Vec<CheckKind> {
    REQUIRED_CHECKS
        .into_iter()
        .filter(|required| !latest_checks.iter().any(|check| check.kind == *required))
        .collect()
}

/// A decision that differs from a firm recommendation must say why.
pub fn check_override(
    recommendation: Decision,
    decision: Decision,
    rationale: &str,
) -> Result<(), FieldViolations> {
    let mut violations = FieldViolations::new();
    if recommendation != Decision::Unspecified
        && decision != recommendation
        && rationale.trim().is_empty()
    {
        violations.add("rationale", OVERRIDE_NEEDS_REASON);
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// Which assessment a GetAssessment request names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssessmentLookup {
    Assessment(Uuid),
    Referral(Uuid),
}

impl AssessmentLookup {
    /// Exactly one of `assessment_id` and `referral_id` must be given.
    pub fn parse(request: &GetAssessmentRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let lookup = match (
            request.assessment_id.is_empty(),
            request.referral_id.is_empty(),
        ) {
            (true, true) => {
                violations.add(
                    "assessment_id",
                    "one of assessment_id or referral_id is required",
                );
                None
            }
            (false, false) => {
                violations.add("referral_id", "give assessment_id or referral_id, not both");
                None
            }
            (false, true) => parse_id("assessment_id", &request.assessment_id, &mut violations)
                .map(Self::Assessment),
            (true, false) => {
                parse_id("referral_id", &request.referral_id, &mut violations).map(Self::Referral)
            }
        };
        match lookup {
            Some(lookup) if violations.is_empty() => Ok(lookup),
            _ => Err(violations),
        }
    }
}

/// A valid ListQueue request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueQuery {
    /// `None` lists every area.
    pub area: Option<String>,
    pub page_size: i32,
}

impl QueueQuery {
    pub fn parse(request: &ListQueueRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        if !(0..=MAX_PAGE_SIZE).contains(&request.page_size) {
            violations.add(
                "page_size",
                format!("must be between 0 and {MAX_PAGE_SIZE}"),
            );
        }
        check_text("area", &request.area, false, 200, &mut violations);
        if !violations.is_empty() {
            return Err(violations);
        }
        let area = request.area.trim();
        Ok(Self {
            area: (!area.is_empty()).then(|| area.to_owned()),
            page_size: if request.page_size == 0 {
                DEFAULT_PAGE_SIZE
            } else {
                request.page_size
            },
        })
    }
}

/// A valid RecordCheck request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCheck {
    pub assessment_id: Uuid,
    pub kind: CheckKind,
    pub satisfied: bool,
    pub notes: String,
}

impl NewCheck {
    pub fn parse(request: &RecordCheckRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let assessment_id = parse_id("assessment_id", &request.assessment_id, &mut violations);
        let kind = parse_enum::<CheckKind>("kind", request.kind, &mut violations);
        check_text("notes", &request.notes, false, MAX_TEXT, &mut violations);
        match (assessment_id, kind) {
            (Some(assessment_id), Some(kind)) if violations.is_empty() => Ok(Self {
                assessment_id,
                kind,
                satisfied: request.satisfied,
                notes: request.notes.clone(),
            }),
            _ => Err(violations),
        }
    }
}

/// A valid Decide request; whether it fits the assessment's checks is
/// decided against the stored assessment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDecision {
    pub assessment_id: Uuid,
    pub decision: Decision,
    /// Set exactly when the client is not taken on.
    pub stage: Option<NonEngagementStage>,
    pub reason: Option<NonEngagementReason>,
    pub rationale: String,
}

impl NewDecision {
    pub fn parse(request: &DecideRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let assessment_id = parse_id("assessment_id", &request.assessment_id, &mut violations);
        let decision = parse_enum::<Decision>("decision", request.decision, &mut violations);
        let (stage, reason) = match decision {
            Some(Decision::NotTakenOn) => (
                parse_enum::<NonEngagementStage>("stage", request.stage, &mut violations),
                parse_enum::<NonEngagementReason>("reason", request.reason, &mut violations),
            ),
            Some(Decision::Accept) => {
                if request.stage != 0 {
                    violations.add("stage", "is only given when the client is not taken on");
                }
                if request.reason != 0 {
                    violations.add("reason", "is only given when the client is not taken on");
                }
                (None, None)
            }
            // Without a valid decision, stage and reason are only checked for known values.
            _ => {
                if request.stage != 0 && NonEngagementStage::try_from(request.stage).is_err() {
                    violations.add("stage", format!("{} is not a known value", request.stage));
                }
                if request.reason != 0 && NonEngagementReason::try_from(request.reason).is_err() {
                    violations.add("reason", format!("{} is not a known value", request.reason));
                }
                (None, None)
            }
        };
        check_text(
            "rationale",
            &request.rationale,
            false,
            MAX_TEXT,
            &mut violations,
        );
        match (assessment_id, decision) {
            (Some(assessment_id), Some(decision)) if violations.is_empty() => Ok(Self {
                assessment_id,
                decision,
                stage,
                reason,
                rationale: request.rationale.trim().to_owned(),
            }),
            _ => Err(violations),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn satisfied(kind: CheckKind) -> CheckOutcome {
        CheckOutcome {
            kind,
            satisfied: true,
        }
    }

    fn unsatisfied(kind: CheckKind) -> CheckOutcome {
        CheckOutcome {
            kind,
            satisfied: false,
        }
    }

    fn fields(violations: FieldViolations) -> Vec<String> {
        violations.fields().map(str::to_owned).collect()
    }

    fn valid_check() -> RecordCheckRequest {
        RecordCheckRequest {
            assessment_id: Uuid::now_v7().to_string(),
            kind: CheckKind::RiskToVolunteers as i32,
            satisfied: true,
            notes: "no history of violence".into(),
        }
    }

    fn check_fields(request: &RecordCheckRequest) -> Vec<String> {
        fields(NewCheck::parse(request).unwrap_err())
    }

    fn accept() -> DecideRequest {
        DecideRequest {
            assessment_id: Uuid::now_v7().to_string(),
            decision: Decision::Accept as i32,
            ..Default::default()
        }
    }

    fn not_taken_on() -> DecideRequest {
        DecideRequest {
            assessment_id: Uuid::now_v7().to_string(),
            decision: Decision::NotTakenOn as i32,
            stage: NonEngagementStage::InitialRiskAssessment as i32,
            reason: NonEngagementReason::NoWillWantOrCapacity as i32,
            rationale: "does not want support now".into(),
        }
    }

    fn decide_fields(request: &DecideRequest) -> Vec<String> {
        fields(NewDecision::parse(request).unwrap_err())
    }

    #[test]
    fn three_satisfied_checks_recommend_accepting() {
        let checks = REQUIRED_CHECKS.map(satisfied);
        assert_eq!(recommend(&checks), Decision::Accept);
        assert!(missing_checks(&checks).is_empty());
    }

    #[test]
    fn any_unsatisfied_check_recommends_not_taking_on_even_when_others_are_missing() {
        assert_eq!(
            recommend(&[unsatisfied(CheckKind::RiskToVolunteers)]),
            Decision::NotTakenOn
        );
        let mut checks = REQUIRED_CHECKS.map(satisfied);
        checks[2].satisfied = false;
        assert_eq!(recommend(&checks), Decision::NotTakenOn);
    }

    #[test]
    fn incomplete_satisfied_checks_recommend_nothing() {
        assert_eq!(recommend(&[]), Decision::Unspecified);
        let checks = [
            satisfied(CheckKind::AdultAtReferral),
            satisfied(CheckKind::WillWantCapacity),
        ];
        assert_eq!(recommend(&checks), Decision::Unspecified);
        assert_eq!(missing_checks(&checks), [CheckKind::RiskToVolunteers]);
        assert_eq!(missing_checks(&[]), REQUIRED_CHECKS);
    }

    #[test]
    fn an_override_of_a_firm_recommendation_needs_a_rationale() {
        let refused = check_override(Decision::NotTakenOn, Decision::Accept, "  ").unwrap_err();
        assert_eq!(fields(refused), ["rationale"]);
        assert!(check_override(Decision::Accept, Decision::NotTakenOn, "").is_err());
        assert!(
            check_override(Decision::NotTakenOn, Decision::Accept, "seen at home, safe").is_ok()
        );
        assert!(check_override(Decision::Accept, Decision::Accept, "").is_ok());
        assert!(check_override(Decision::Unspecified, Decision::NotTakenOn, "").is_ok());
    }

    #[test]
    fn a_complete_check_parses() {
        let request = valid_check();
        let check = NewCheck::parse(&request).unwrap();
        assert_eq!(check.kind, CheckKind::RiskToVolunteers);
        assert!(check.satisfied);
        assert_eq!(check.assessment_id.to_string(), request.assessment_id);
    }

    #[test]
    fn a_check_without_id_kind_or_with_long_notes_reports_every_violation() {
        let request = RecordCheckRequest {
            assessment_id: String::new(),
            kind: 0,
            satisfied: false,
            notes: "x".repeat(MAX_TEXT + 1),
        };
        assert_eq!(check_fields(&request), ["assessment_id", "kind", "notes"]);
    }

    #[test]
    fn a_check_with_a_malformed_id_or_unknown_kind_is_refused() {
        let mut request = valid_check();
        request.assessment_id = "not-a-uuid".into();
        assert_eq!(check_fields(&request), ["assessment_id"]);
        let mut request = valid_check();
        request.kind = 99;
        assert_eq!(check_fields(&request), ["kind"]);
        let mut request = valid_check();
        request.notes = "x".repeat(MAX_TEXT);
        assert!(
            NewCheck::parse(&request).is_ok(),
            "notes of exactly the limit are fine"
        );
    }

    #[test]
    fn complete_decisions_parse() {
        let accepted = NewDecision::parse(&accept()).unwrap();
        assert_eq!(accepted.decision, Decision::Accept);
        assert_eq!((accepted.stage, accepted.reason), (None, None));
        let declined = NewDecision::parse(&not_taken_on()).unwrap();
        assert_eq!(
            declined.stage,
            Some(NonEngagementStage::InitialRiskAssessment)
        );
        assert_eq!(
            declined.reason,
            Some(NonEngagementReason::NoWillWantOrCapacity)
        );
    }

    #[test]
    fn a_decision_is_required() {
        let mut request = accept();
        request.decision = 0;
        assert_eq!(decide_fields(&request), ["decision"]);
        request.decision = 7;
        assert_eq!(decide_fields(&request), ["decision"]);
    }

    #[test]
    fn not_taking_on_needs_a_stage_and_a_reason() {
        let mut request = not_taken_on();
        request.stage = 0;
        request.reason = 0;
        assert_eq!(decide_fields(&request), ["stage", "reason"]);
        let mut request = not_taken_on();
        request.reason = 42;
        assert_eq!(decide_fields(&request), ["reason"]);
    }

    #[test]
    fn accepting_carries_no_stage_or_reason() {
        let mut request = accept();
        request.stage = NonEngagementStage::HomeVisit as i32;
        request.reason = NonEngagementReason::ClientDeclined as i32;
        assert_eq!(decide_fields(&request), ["stage", "reason"]);
    }

    #[test]
    fn a_bad_id_and_an_overlong_rationale_are_reported_together() {
        let mut request = not_taken_on();
        request.assessment_id = "nope".into();
        request.rationale = "x".repeat(MAX_TEXT + 1);
        assert_eq!(decide_fields(&request), ["assessment_id", "rationale"]);
        let mut request = accept();
        request.assessment_id.clear();
        request.decision = 0;
        request.stage = 99;
        assert_eq!(
            decide_fields(&request),
            ["assessment_id", "decision", "stage"]
        );
    }

    #[test]
    fn exactly_one_lookup_key_is_accepted() {
        let id = Uuid::now_v7();
        let by_assessment = GetAssessmentRequest {
            assessment_id: id.to_string(),
            referral_id: String::new(),
        };
        assert_eq!(
            AssessmentLookup::parse(&by_assessment),
            Ok(AssessmentLookup::Assessment(id))
        );
        let by_referral = GetAssessmentRequest {
            assessment_id: String::new(),
            referral_id: id.to_string(),
        };
        assert_eq!(
            AssessmentLookup::parse(&by_referral),
            Ok(AssessmentLookup::Referral(id))
        );
        let neither = GetAssessmentRequest::default();
        assert_eq!(
            fields(AssessmentLookup::parse(&neither).unwrap_err()),
            ["assessment_id"]
        );
        let both = GetAssessmentRequest {
            assessment_id: id.to_string(),
            referral_id: id.to_string(),
        };
        assert_eq!(
            fields(AssessmentLookup::parse(&both).unwrap_err()),
            ["referral_id"]
        );
        let malformed = GetAssessmentRequest {
            assessment_id: String::new(),
            referral_id: "x".into(),
        };
        assert_eq!(
            fields(AssessmentLookup::parse(&malformed).unwrap_err()),
            ["referral_id"]
        );
    }

    #[test]
    fn queue_pages_default_to_fifty_and_stop_at_five_hundred() {
        let query = QueueQuery::parse(&ListQueueRequest::default()).unwrap();
        assert_eq!(
            query,
            QueueQuery {
                area: None,
                page_size: DEFAULT_PAGE_SIZE
            }
        );
        let query = QueueQuery::parse(&ListQueueRequest {
            area: " Darlington ".into(),
            page_size: 500,
        })
        .unwrap();
        assert_eq!(query.area.as_deref(), Some("Darlington"));
        for page_size in [-1, 501] {
            let request = ListQueueRequest {
                area: String::new(),
                page_size,
            };
            assert_eq!(
                fields(QueueQuery::parse(&request).unwrap_err()),
                ["page_size"]
            );
        }
    }
}
