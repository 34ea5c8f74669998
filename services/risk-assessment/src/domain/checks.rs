//! Checks: what a RecordCheck request may carry for each kind of check, and
//! what the latest checks recommend. The recommendation is deliberately
//! strict, since a coordinator who disagrees overrides it with a rationale,
//! which makes the disagreement explicit rather than silent.

use cpm_proto::v1::{
    CheckKind, Decision, HomeVisit, RecordCheckRequest, RiskLevel, WillWantCapacityScores,
};
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::{check_entries, check_text, parse_enum, parse_id};
use uuid::Uuid;

use super::{
    MAX_LIST_ENTRIES, MAX_LIST_ENTRY, MAX_SCORE, MAX_TEXT, OVERRIDE_NEEDS_REASON, REQUIRED_CHECKS,
};

/// The latest check of one kind: the one that counts, with the details
/// that bear on the recommendation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckOutcome {
    pub kind: CheckKind,
    pub satisfied: bool,
    pub risk_level: Option<RiskLevel>,
    /// The lowest of the will, want and capacity scores, when scored.
    pub lowest_score: Option<i32>,
}

impl CheckOutcome {
    /// A check with no details.
    pub fn plain(kind: CheckKind, satisfied: bool) -> Self {
        Self {
            kind,
            satisfied,
            risk_level: None,
            lowest_score: None,
        }
    }

    /// Whether the check speaks against taking the client on: the
    /// coordinator found them unsuitable, or the details do (a HIGH risk to
    /// staff and volunteers, or no will, want or capacity at all). The
    /// stricter reading wins; a coordinator who disagrees overrides with a
    /// rationale.
    pub fn finds_unsuitable(&self) -> bool {
        !self.satisfied || self.risk_level == Some(RiskLevel::High) || self.lowest_score == Some(0)
    }
}

/// What the latest checks suggest. Any check that found the client
/// unsuitable suggests not taking them on; all three required checks
/// satisfied suggest accepting; anything short of that suggests nothing
/// yet. A coordinator decides either way: the recommendation only makes an
/// override explicit.
pub fn recommend(latest_checks: &[CheckOutcome]) -> Decision {
    if latest_checks.iter().any(CheckOutcome::finds_unsuitable) {
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

/// Will, want and capacity to change, each 0 to [`MAX_SCORE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scores {
    pub will: i32,
    pub want: i32,
    pub capacity: i32,
}

impl Scores {
    pub fn lowest(&self) -> i32 {
        self.will.min(self.want).min(self.capacity)
    }
}

/// How a home visit was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HomeVisitDetails {
    pub attended_by: Vec<String>,
    pub referrer_co_visited: bool,
    pub phone_contact_first: bool,
}

/// A valid RecordCheck request. Each kind carries only its own details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCheck {
    pub assessment_id: Uuid,
    pub kind: CheckKind,
    pub satisfied: bool,
    pub notes: String,
    /// RISK_TO_VOLUNTEERS: the level, when graded.
    pub risk_level: Option<RiskLevel>,
    /// WILL_WANT_CAPACITY: the scores, when scored.
    pub scores: Option<Scores>,
    /// DATABASES_CHECKED: at least one.
    pub databases: Vec<String>,
    /// PROFESSIONALS_CONSULTED: at least one role.
    pub professionals: Vec<String>,
    /// HOME_VISIT: always.
    pub home_visit: Option<HomeVisitDetails>,
}

/// A list of short texts: at most [`MAX_LIST_ENTRIES`], none empty or too
/// long. Returns the trimmed entries.
fn check_list(field: &str, entries: &[String], violations: &mut FieldViolations) -> Vec<String> {
    if !check_entries(field, entries, MAX_LIST_ENTRIES, violations) {
        // Not read further: a flood costs one violation, not one per entry.
        return Vec::new();
    }
    for (index, entry) in entries.iter().enumerate() {
        check_text(
            &format!("{field}[{index}]"),
            entry,
            true,
            MAX_LIST_ENTRY,
            violations,
        );
    }
    entries
        .iter()
        .map(|entry| entry.trim().to_owned())
        .collect()
}

fn only_for(kind: CheckKind) -> String {
    format!("is only given with a {} check", kind.as_str_name())
}

fn parse_scores(scores: &WillWantCapacityScores, violations: &mut FieldViolations) -> Scores {
    for (field, value) in [
        ("scores.will", scores.will),
        ("scores.want", scores.want),
        ("scores.capacity", scores.capacity),
    ] {
        if !(0..=MAX_SCORE).contains(&value) {
            violations.add(field, format!("must be between 0 and {MAX_SCORE}"));
        }
    }
    Scores {
        will: scores.will,
        want: scores.want,
        capacity: scores.capacity,
    }
}

/// A home visit is made with the referrer if possible; otherwise a phone
/// contact comes first and then two staff visit.
fn parse_home_visit(visit: &HomeVisit, violations: &mut FieldViolations) -> HomeVisitDetails {
    let attended_by = check_list("home_visit.attended_by", &visit.attended_by, violations);
    if attended_by.is_empty() {
        violations.add(
            "home_visit.attended_by",
            "name at least one member of staff",
        );
    } else if !visit.referrer_co_visited && attended_by.len() < 2 {
        violations.add(
            "home_visit.attended_by",
            "without the referrer, two staff visit",
        );
    }
    if !visit.referrer_co_visited && !visit.phone_contact_first {
        violations.add(
            "home_visit.phone_contact_first",
            "without the referrer, a phone contact comes first",
        );
    }
    HomeVisitDetails {
        attended_by,
        referrer_co_visited: visit.referrer_co_visited,
        phone_contact_first: visit.phone_contact_first,
    }
}

impl NewCheck {
    pub fn parse(request: &RecordCheckRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let assessment_id = parse_id("assessment_id", &request.assessment_id, &mut violations);
        let kind = parse_enum::<CheckKind>("kind", request.kind, &mut violations);
        check_text("notes", &request.notes, false, MAX_TEXT, &mut violations);

        // Each detail belongs to one kind; it is checked for its own sake
        // even when the kind is missing, so every violation shows at once.
        let risk_level = if request.risk_level == 0 {
            None
        } else if kind.is_some_and(|kind| kind != CheckKind::RiskToVolunteers) {
            violations.add("risk_level", only_for(CheckKind::RiskToVolunteers));
            None
        } else {
            parse_enum::<RiskLevel>("risk_level", request.risk_level, &mut violations)
        };
        if matches!(risk_level, Some(RiskLevel::Medium | RiskLevel::High))
            && request.notes.trim().is_empty()
        {
            violations.add("notes", "a MEDIUM or HIGH risk needs notes");
        }
        let scores = match &request.scores {
            None => None,
            Some(_) if kind.is_some_and(|kind| kind != CheckKind::WillWantCapacity) => {
                violations.add("scores", only_for(CheckKind::WillWantCapacity));
                None
            }
            Some(scores) => Some(parse_scores(scores, &mut violations)),
        };
        let databases = Self::kind_list(
            kind,
            CheckKind::DatabasesChecked,
            "databases",
            &request.databases,
            "name at least one database checked",
            &mut violations,
        );
        let professionals = Self::kind_list(
            kind,
            CheckKind::ProfessionalsConsulted,
            "professionals",
            &request.professionals,
            "name the role of at least one professional consulted",
            &mut violations,
        );
        let home_visit = match (&request.home_visit, kind) {
            (Some(_), Some(kind)) if kind != CheckKind::HomeVisit => {
                violations.add("home_visit", only_for(CheckKind::HomeVisit));
                None
            }
            (Some(visit), _) => Some(parse_home_visit(visit, &mut violations)),
            (None, Some(CheckKind::HomeVisit)) => {
                violations.add("home_visit", "is required with a home visit check");
                None
            }
            (None, _) => None,
        };

        match (assessment_id, kind) {
            (Some(assessment_id), Some(kind)) if violations.is_empty() => Ok(Self {
                assessment_id,
                kind,
                satisfied: request.satisfied,
                notes: request.notes.clone(),
                risk_level,
                scores,
                databases,
                professionals,
                home_visit,
            }),
            _ => Err(violations),
        }
    }

    /// A list that `owner` checks require and other kinds must leave empty.
    fn kind_list(
        kind: Option<CheckKind>,
        owner: CheckKind,
        field: &str,
        entries: &[String],
        required: &str,
        violations: &mut FieldViolations,
    ) -> Vec<String> {
        match kind {
            Some(kind) if kind == owner && entries.is_empty() => {
                violations.add(field, required);
                Vec::new()
            }
            Some(kind) if kind != owner && !entries.is_empty() => {
                violations.add(field, only_for(owner));
                Vec::new()
            }
            _ => check_list(field, entries, violations),
        }
    }

    /// The outcome this check adds to the recommendation.
    pub fn outcome(&self) -> CheckOutcome {
        CheckOutcome {
            kind: self.kind,
            satisfied: self.satisfied,
            risk_level: self.risk_level,
            lowest_score: self.scores.map(|scores| scores.lowest()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::test_support::fields;

    fn satisfied(kind: CheckKind) -> CheckOutcome {
        CheckOutcome::plain(kind, true)
    }

    fn unsatisfied(kind: CheckKind) -> CheckOutcome {
        CheckOutcome::plain(kind, false)
    }

    fn valid_check() -> RecordCheckRequest {
        RecordCheckRequest {
            assessment_id: Uuid::now_v7().to_string(),
            kind: CheckKind::RiskToVolunteers as i32,
            satisfied: true,
            notes: "no history of violence".into(),
            ..Default::default()
        }
    }

    fn check_fields(request: &RecordCheckRequest) -> Vec<String> {
        fields(NewCheck::parse(request).unwrap_err())
    }

    fn check_of(kind: CheckKind) -> RecordCheckRequest {
        RecordCheckRequest {
            assessment_id: Uuid::now_v7().to_string(),
            kind: kind as i32,
            satisfied: true,
            ..Default::default()
        }
    }

    fn two_staff_after_a_call() -> HomeVisit {
        HomeVisit {
            attended_by: vec!["coordinator a".into(), "coordinator b".into()],
            referrer_co_visited: false,
            phone_contact_first: true,
        }
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
            ..Default::default()
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
    fn a_high_risk_or_a_zero_score_finds_the_client_unsuitable() {
        let mut risk = satisfied(CheckKind::RiskToVolunteers);
        risk.risk_level = Some(RiskLevel::High);
        assert!(risk.finds_unsuitable());
        risk.risk_level = Some(RiskLevel::Medium);
        assert!(!risk.finds_unsuitable());
        let mut will = satisfied(CheckKind::WillWantCapacity);
        will.lowest_score = Some(0);
        assert!(will.finds_unsuitable());
        will.lowest_score = Some(1);
        assert!(!will.finds_unsuitable());

        let mut checks = REQUIRED_CHECKS.map(satisfied);
        checks[1].risk_level = Some(RiskLevel::High);
        assert_eq!(recommend(&checks), Decision::NotTakenOn);
        let mut checks = REQUIRED_CHECKS.map(satisfied);
        checks[2].lowest_score = Some(0);
        assert_eq!(recommend(&checks), Decision::NotTakenOn);
    }

    #[test]
    fn an_unsatisfied_optional_check_recommends_not_taking_on() {
        let mut checks = REQUIRED_CHECKS.map(satisfied).to_vec();
        checks.push(unsatisfied(CheckKind::DatabasesChecked));
        assert_eq!(recommend(&checks), Decision::NotTakenOn);
        checks.pop();
        checks.push(satisfied(CheckKind::HomeVisit));
        assert_eq!(recommend(&checks), Decision::Accept);
    }

    #[test]
    fn a_graded_risk_check_with_notes_parses() {
        let mut request = valid_check();
        request.risk_level = RiskLevel::High as i32;
        let check = NewCheck::parse(&request).unwrap();
        assert_eq!(check.risk_level, Some(RiskLevel::High));
        assert!(check.outcome().finds_unsuitable());
        request.risk_level = RiskLevel::Low as i32;
        request.notes.clear();
        assert!(
            NewCheck::parse(&request).is_ok(),
            "a low risk needs no notes"
        );
    }

    #[test]
    fn a_medium_or_high_risk_needs_notes_and_a_known_level() {
        for level in [RiskLevel::Medium, RiskLevel::High] {
            let mut request = valid_check();
            request.risk_level = level as i32;
            request.notes = "  ".into();
            assert_eq!(check_fields(&request), ["notes"]);
        }
        let mut request = valid_check();
        request.risk_level = 9;
        assert_eq!(check_fields(&request), ["risk_level"]);
    }

    #[test]
    fn details_of_another_kind_are_refused_all_at_once() {
        let mut request = check_of(CheckKind::AdultAtReferral);
        request.risk_level = RiskLevel::Low as i32;
        request.scores = Some(WillWantCapacityScores {
            will: 1,
            want: 1,
            capacity: 1,
        });
        request.databases = vec!["police".into()];
        request.professionals = vec!["GP".into()];
        request.home_visit = Some(two_staff_after_a_call());
        assert_eq!(
            check_fields(&request),
            [
                "risk_level",
                "scores",
                "databases",
                "professionals",
                "home_visit"
            ]
        );
    }

    #[test]
    fn scores_run_from_zero_to_five() {
        let mut request = check_of(CheckKind::WillWantCapacity);
        request.scores = Some(WillWantCapacityScores {
            will: 0,
            want: 5,
            capacity: 3,
        });
        let check = NewCheck::parse(&request).unwrap();
        assert_eq!(check.scores.map(|scores| scores.lowest()), Some(0));
        assert!(check.outcome().finds_unsuitable());
        request.scores = Some(WillWantCapacityScores {
            will: -1,
            want: 6,
            capacity: 2,
        });
        assert_eq!(check_fields(&request), ["scores.will", "scores.want"]);
        let unscored = NewCheck::parse(&check_of(CheckKind::WillWantCapacity)).unwrap();
        assert_eq!(unscored.scores, None, "scores are optional");
    }

    #[test]
    fn databases_and_professionals_must_be_named_for_their_checks() {
        assert_eq!(
            check_fields(&check_of(CheckKind::DatabasesChecked)),
            ["databases"]
        );
        assert_eq!(
            check_fields(&check_of(CheckKind::ProfessionalsConsulted)),
            ["professionals"]
        );
        let mut request = check_of(CheckKind::DatabasesChecked);
        request.databases = vec![" police national computer ".into(), "social care".into()];
        let check = NewCheck::parse(&request).unwrap();
        assert_eq!(check.databases[0], "police national computer");
        request.databases = vec!["".into(), "x".repeat(MAX_LIST_ENTRY + 1)];
        assert_eq!(check_fields(&request), ["databases[0]", "databases[1]"]);
        request.databases = vec!["db".into(); MAX_LIST_ENTRIES + 1];
        assert_eq!(check_fields(&request), ["databases"]);
        let mut request = check_of(CheckKind::ProfessionalsConsulted);
        request.professionals = vec!["community psychiatric nurse".into()];
        assert!(NewCheck::parse(&request).is_ok());
    }

    #[test]
    fn a_home_visit_needs_the_referrer_or_a_call_then_two_staff() {
        assert_eq!(
            check_fields(&check_of(CheckKind::HomeVisit)),
            ["home_visit"]
        );
        let mut request = check_of(CheckKind::HomeVisit);
        request.home_visit = Some(two_staff_after_a_call());
        assert!(NewCheck::parse(&request).is_ok());
        request.home_visit = Some(HomeVisit {
            attended_by: vec!["coordinator a".into()],
            referrer_co_visited: true,
            phone_contact_first: false,
        });
        assert!(
            NewCheck::parse(&request).is_ok(),
            "one coordinator with the referrer"
        );
        request.home_visit = Some(HomeVisit {
            attended_by: vec!["coordinator a".into()],
            referrer_co_visited: false,
            phone_contact_first: false,
        });
        assert_eq!(
            check_fields(&request),
            ["home_visit.attended_by", "home_visit.phone_contact_first"]
        );
        request.home_visit = Some(HomeVisit {
            attended_by: Vec::new(),
            referrer_co_visited: true,
            phone_contact_first: false,
        });
        assert_eq!(check_fields(&request), ["home_visit.attended_by"]);
    }

    mod properties {
        use super::*;
        use cpm_runtime::grpc::values::is_hidden;
        use proptest::prelude::*;

        proptest! {
            /// Any check: parsing never panics; an accepted one keeps no
            /// hidden character and no list beyond its cap.
            #[test]
            fn any_check_parses_or_is_refused_cleanly(
                kind in any::<i32>(),
                notes in any::<String>(),
                databases in proptest::collection::vec(any::<String>(), 0..40),
                professionals in proptest::collection::vec("[a-z ]{0,12}", 0..40),
                risk_level in any::<i32>(),
            ) {
                let request = RecordCheckRequest {
                    kind,
                    notes,
                    databases,
                    professionals,
                    risk_level,
                    ..valid_check()
                };
                match NewCheck::parse(&request) {
                    Ok(check) => {
                        prop_assert!(!check.notes.chars().any(is_hidden));
                        prop_assert!(check.databases.len() <= MAX_LIST_ENTRIES);
                        prop_assert!(check.professionals.len() <= MAX_LIST_ENTRIES);
                        prop_assert!(check.databases.iter().all(|d| !d.chars().any(is_hidden)));
                    }
                    Err(violations) => prop_assert!(!violations.is_empty()),
                }
            }
        }
    }
}
