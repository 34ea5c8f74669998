//! Decisions: whether a client is taken on, and later whether their support
//! continues, pauses or ends. Both record why a client is not, or no longer,
//! supported in the same terms (stage, reason and where they were referred
//! on), so the rule for where a client was referred on is kept here once.

use cpm_proto::v1::{
    AssessmentState, DecideRequest, Decision, EngagementAction, NonEngagementReason,
    NonEngagementStage, ReassessRequest, ReferredTo,
};
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::{check_text, parse_enum, parse_id};
use uuid::Uuid;

use super::MAX_TEXT;

/// Where a client referred on was sent: required exactly when the reason
/// is REFERRED_ON.
fn parse_referred_to(
    reason: Option<NonEngagementReason>,
    referred_to: i32,
    violations: &mut FieldViolations,
) -> Option<ReferredTo> {
    match reason {
        Some(NonEngagementReason::ReferredOn) => {
            parse_enum::<ReferredTo>("referred_to", referred_to, violations)
        }
        _ if referred_to != 0 => {
            violations.add(
                "referred_to",
                "is only given when the reason is REFERRED_ON",
            );
            None
        }
        _ => None,
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
    /// Set exactly when the reason is REFERRED_ON.
    pub referred_to: Option<ReferredTo>,
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
        if stage == Some(NonEngagementStage::DuringEngagement) {
            violations.add(
                "stage",
                "support has not started at the decision; a re-assessment ends an engagement",
            );
        }
        let referred_to = parse_referred_to(reason, request.referred_to, &mut violations);
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
                referred_to,
                rationale: request.rationale.trim().to_owned(),
            }),
            _ => Err(violations),
        }
    }
}

/// How support ends after a re-assessment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    pub stage: NonEngagementStage,
    pub reason: NonEngagementReason,
    pub referred_to: Option<ReferredTo>,
}

/// A valid Reassess request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewReassessment {
    pub referral_id: Uuid,
    pub action: EngagementAction,
    /// Set exactly when the action is END.
    pub ending: Option<Ending>,
    pub rationale: String,
}

impl NewReassessment {
    pub fn parse(request: &ReassessRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let referral_id = parse_id("referral_id", &request.referral_id, &mut violations);
        let action = parse_enum::<EngagementAction>("action", request.action, &mut violations);
        let ending = match action {
            Some(EngagementAction::End) => {
                // Ending support is normally decided during the engagement.
                let stage = if request.stage == 0 {
                    Some(NonEngagementStage::DuringEngagement)
                } else {
                    parse_enum::<NonEngagementStage>("stage", request.stage, &mut violations)
                };
                let reason =
                    parse_enum::<NonEngagementReason>("reason", request.reason, &mut violations);
                let referred_to = parse_referred_to(reason, request.referred_to, &mut violations);
                stage.zip(reason).map(|(stage, reason)| Ending {
                    stage,
                    reason,
                    referred_to,
                })
            }
            _ => {
                for (field, value) in [
                    ("stage", request.stage),
                    ("reason", request.reason),
                    ("referred_to", request.referred_to),
                ] {
                    if value != 0 {
                        violations.add(field, "is only given when support ends");
                    }
                }
                None
            }
        };
        check_text(
            "rationale",
            &request.rationale,
            false,
            MAX_TEXT,
            &mut violations,
        );
        match (referral_id, action) {
            (Some(referral_id), Some(action)) if violations.is_empty() => Ok(Self {
                referral_id,
                action,
                ending,
                rationale: request.rationale.trim().to_owned(),
            }),
            _ => Err(violations),
        }
    }
}

/// Only an accepted client is re-assessed, and only until support ends.
/// `last_action` is the latest re-assessment, if any.
pub fn check_reassessable(
    state: AssessmentState,
    decision: Option<Decision>,
    last_action: Option<EngagementAction>,
) -> Result<(), String> {
    if state != AssessmentState::Decided || decision != Some(Decision::Accept) {
        return Err(format!(
            "only an accepted assessment can be re-assessed; this one is {}{}",
            state.as_str_name(),
            match decision {
                Some(Decision::NotTakenOn) => " (not taken on)",
                _ => "",
            }
        ));
    }
    if last_action == Some(EngagementAction::End) {
        return Err("support has already ended; refer the client again to restart".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::test_support::fields;

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
            referred_to: 0,
        }
    }

    fn decide_fields(request: &DecideRequest) -> Vec<String> {
        fields(NewDecision::parse(request).unwrap_err())
    }

    fn reassess(action: EngagementAction) -> ReassessRequest {
        ReassessRequest {
            referral_id: Uuid::now_v7().to_string(),
            action: action as i32,
            ..Default::default()
        }
    }

    fn reassess_fields(request: &ReassessRequest) -> Vec<String> {
        fields(NewReassessment::parse(request).unwrap_err())
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
    fn referred_on_needs_to_whom_and_nothing_else_takes_it() {
        let mut request = not_taken_on();
        request.reason = NonEngagementReason::ReferredOn as i32;
        assert_eq!(decide_fields(&request), ["referred_to"]);
        request.referred_to = ReferredTo::Mediation as i32;
        let decision = NewDecision::parse(&request).unwrap();
        assert_eq!(decision.referred_to, Some(ReferredTo::Mediation));
        request.referred_to = 17;
        assert_eq!(decide_fields(&request), ["referred_to"]);
        let mut request = not_taken_on();
        request.referred_to = ReferredTo::OtherService as i32;
        assert_eq!(decide_fields(&request), ["referred_to"]);
        let mut request = accept();
        request.referred_to = ReferredTo::RestorativeIntervention as i32;
        assert_eq!(decide_fields(&request), ["referred_to"]);
    }

    #[test]
    fn a_decision_cannot_be_during_engagement() {
        let mut request = not_taken_on();
        request.stage = NonEngagementStage::DuringEngagement as i32;
        assert_eq!(decide_fields(&request), ["stage"]);
    }

    #[test]
    fn every_stage_and_reason_of_the_evaluation_can_be_recorded() {
        for stage in [
            NonEngagementStage::InitialRiskAssessment,
            NonEngagementStage::HomeVisit,
            NonEngagementStage::OtherProfessionalsAdvice,
            NonEngagementStage::ClientDeclined,
            NonEngagementStage::ExternalOrganisationRequest,
        ] {
            for reason in [
                NonEngagementReason::RiskToVolunteers,
                NonEngagementReason::NoWillWantOrCapacity,
                NonEngagementReason::ClientDeclined,
                NonEngagementReason::ExternalRequest,
                NonEngagementReason::Ineligible,
            ] {
                let mut request = not_taken_on();
                request.stage = stage as i32;
                request.reason = reason as i32;
                assert!(NewDecision::parse(&request).is_ok(), "{stage:?} {reason:?}");
            }
        }
    }

    #[test]
    fn continuing_or_pausing_carries_no_ending() {
        for action in [EngagementAction::Continue, EngagementAction::Pause] {
            let parsed = NewReassessment::parse(&reassess(action)).unwrap();
            assert_eq!(parsed.action, action);
            assert_eq!(parsed.ending, None);
            let mut request = reassess(action);
            request.stage = NonEngagementStage::DuringEngagement as i32;
            request.reason = NonEngagementReason::ClientDeclined as i32;
            request.referred_to = ReferredTo::Mediation as i32;
            assert_eq!(
                reassess_fields(&request),
                ["stage", "reason", "referred_to"]
            );
        }
    }

    #[test]
    fn ending_needs_a_reason_and_defaults_to_during_engagement() {
        let mut request = reassess(EngagementAction::End);
        assert_eq!(reassess_fields(&request), ["reason"]);
        request.reason = NonEngagementReason::RiskToVolunteers as i32;
        let parsed = NewReassessment::parse(&request).unwrap();
        assert_eq!(
            parsed.ending,
            Some(Ending {
                stage: NonEngagementStage::DuringEngagement,
                reason: NonEngagementReason::RiskToVolunteers,
                referred_to: None,
            })
        );
        request.stage = NonEngagementStage::OtherProfessionalsAdvice as i32;
        request.reason = NonEngagementReason::ReferredOn as i32;
        assert_eq!(reassess_fields(&request), ["referred_to"]);
        request.referred_to = ReferredTo::RestorativeIntervention as i32;
        let ending = NewReassessment::parse(&request).unwrap().ending.unwrap();
        assert_eq!(ending.stage, NonEngagementStage::OtherProfessionalsAdvice);
        assert_eq!(
            ending.referred_to,
            Some(ReferredTo::RestorativeIntervention)
        );
    }

    #[test]
    fn a_reassessment_needs_a_referral_and_an_action() {
        let request = ReassessRequest {
            referral_id: "nope".into(),
            rationale: "x".repeat(MAX_TEXT + 1),
            ..Default::default()
        };
        assert_eq!(
            reassess_fields(&request),
            ["referral_id", "action", "rationale"]
        );
    }

    #[test]
    fn only_an_accepted_client_in_support_is_reassessed() {
        let decided = AssessmentState::Decided;
        assert!(check_reassessable(decided, Some(Decision::Accept), None).is_ok());
        assert!(
            check_reassessable(
                decided,
                Some(Decision::Accept),
                Some(EngagementAction::Pause)
            )
            .is_ok()
        );
        let ended =
            check_reassessable(decided, Some(Decision::Accept), Some(EngagementAction::End))
                .unwrap_err();
        assert!(ended.contains("already ended"), "{ended}");
        assert!(check_reassessable(decided, Some(Decision::NotTakenOn), None).is_err());
        assert!(check_reassessable(AssessmentState::Open, None, None).is_err());
        assert!(check_reassessable(AssessmentState::Closed, None, None).is_err());
    }
}
