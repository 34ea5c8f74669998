//! Requests parsed at the edge, and the rules of an assessment: which
//! checks exist, what they recommend, and when a decision needs a reason.
//! Handlers never see a raw protobuf request; every violation is collected
//! so a coordinator fixes all of them at once.

use chrono::{DateTime, Datelike, NaiveDate, Utc, Weekday};
use cpm_proto::v1::{
    AssessmentState, AssessmentStatsRequest, CheckKind, DecideRequest, Decision, EngagementAction,
    GetAssessmentRequest, HomeVisit, ListQueueRequest, NonEngagementReason, NonEngagementStage,
    ReassessRequest, RecordCheckRequest, ReferredTo, RiskLevel, WillWantCapacityScores,
};
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::{check_text, from_timestamp, parse_enum, parse_id};
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
/// The highest will, want or capacity score; 0 means none at all.
pub const MAX_SCORE: i32 = 5;
/// Most entries in one list of a check (databases, professionals, staff).
pub const MAX_LIST_ENTRIES: usize = 20;
/// Longest entry in such a list.
pub const MAX_LIST_ENTRY: usize = 200;
/// Working days to a first check when the configuration says nothing.
pub const DEFAULT_FIRST_ASSESSMENT_TARGET_DAYS: u32 = 5;

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
    if entries.len() > MAX_LIST_ENTRIES {
        violations.add(
            field,
            format!("must have at most {MAX_LIST_ENTRIES} entries"),
        );
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

/// Working days (Monday to Friday) after `from` up to and including `to`:
/// 0 on the same day, 1 from a Friday to the next Monday. Public holidays
/// are not known to the system and count as working days.
pub fn working_days_between(from: NaiveDate, to: NaiveDate) -> i64 {
    if to <= from {
        return 0;
    }
    let days = (to - from).num_days();
    let (full_weeks, remainder) = (days / 7, days % 7);
    // Every full week holds five working days; the days left over follow
    // `from` directly.
    let mut day = from.weekday();
    let mut extra = 0;
    for _ in 0..remainder {
        day = day.succ();
        if is_working_day(day) {
            extra += 1;
        }
    }
    full_weeks * 5 + extra
}

/// How long an assessment has waited for its first check, against the
/// target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Age {
    pub working_days: i64,
    pub overdue: bool,
}

/// The first-assessment target: so many working days from the referral to
/// the first check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgeRule {
    pub target_working_days: i64,
}

impl AgeRule {
    /// Counts up to the first check once there is one, else up to `now`;
    /// overdue once the count passes the target.
    pub fn age(
        &self,
        referred_at: DateTime<Utc>,
        first_checked_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Age {
        let until = first_checked_at.unwrap_or(now);
        let working_days = working_days_between(referred_at.date_naive(), until.date_naive());
        Age {
            working_days,
            overdue: working_days > self.target_working_days,
        }
    }
}

/// Monday to Friday.
fn is_working_day(day: Weekday) -> bool {
    !matches!(day, Weekday::Sat | Weekday::Sun)
}

/// A valid AssessmentStats request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// `None` counts every area.
    pub area: Option<String>,
}

impl StatsQuery {
    pub fn parse(request: &AssessmentStatsRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let mut bound = |field: &str, value: &Option<prost_types::Timestamp>| match value {
            None => {
                violations.add(field, "is required");
                None
            }
            Some(value) => {
                let parsed = from_timestamp(value);
                if parsed.is_none() {
                    violations.add(field, "is not a valid time");
                }
                parsed
            }
        };
        let from = bound("from", &request.from);
        let to = bound("to", &request.to);
        if let (Some(from), Some(to)) = (from, to)
            && to <= from
        {
            violations.add("to", "must be after from");
        }
        check_text("area", &request.area, false, 200, &mut violations);
        match (from, to) {
            (Some(from), Some(to)) if violations.is_empty() => {
                let area = request.area.trim();
                Ok(Self {
                    from,
                    to,
                    area: (!area.is_empty()).then(|| area.to_owned()),
                })
            }
            _ => Err(violations),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn satisfied(kind: CheckKind) -> CheckOutcome {
        CheckOutcome::plain(kind, true)
    }

    fn unsatisfied(kind: CheckKind) -> CheckOutcome {
        CheckOutcome::plain(kind, false)
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
            ..Default::default()
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
            referred_to: 0,
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

    fn date(year: i32, month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, month, day).unwrap()
    }

    /// Counting one day at a time, as the rule reads.
    fn working_days_by_hand(from: NaiveDate, to: NaiveDate) -> i64 {
        from.iter_days()
            .skip(1)
            .take_while(|day| *day <= to)
            .filter(|day| is_working_day(day.weekday()))
            .count() as i64
    }

    #[test]
    fn working_days_skip_weekends() {
        // 2024-06-03 is a Monday.
        let monday = date(2024, 6, 3);
        assert_eq!(working_days_between(monday, monday), 0);
        assert_eq!(working_days_between(monday, date(2024, 6, 7)), 4);
        assert_eq!(working_days_between(monday, date(2024, 6, 10)), 5);
        assert_eq!(working_days_between(date(2024, 6, 7), date(2024, 6, 10)), 1);
        assert_eq!(working_days_between(date(2024, 6, 8), date(2024, 6, 9)), 0);
        assert_eq!(working_days_between(date(2024, 6, 8), date(2024, 6, 10)), 1);
        assert_eq!(working_days_between(date(2024, 6, 10), monday), 0);
        for start in 0..14 {
            let from = monday + chrono::Duration::days(start);
            for length in 0..40 {
                let to = from + chrono::Duration::days(length);
                assert_eq!(
                    working_days_between(from, to),
                    working_days_by_hand(from, to),
                    "{from} to {to}"
                );
            }
        }
    }

    #[test]
    fn an_assessment_is_overdue_after_the_target_without_a_check() {
        let rule = AgeRule {
            target_working_days: 5,
        };
        let referred = date(2024, 6, 3).and_hms_opt(9, 0, 0).unwrap().and_utc();
        let day = |n: i64| referred + chrono::Duration::days(n);
        // Five working days later (next Monday) it is due, not yet overdue.
        assert_eq!(
            rule.age(referred, None, day(7)),
            Age {
                working_days: 5,
                overdue: false
            }
        );
        assert_eq!(
            rule.age(referred, None, day(8)),
            Age {
                working_days: 6,
                overdue: true
            }
        );
        // A first check on the Friday stops the clock.
        assert_eq!(
            rule.age(referred, Some(day(4)), day(30)),
            Age {
                working_days: 4,
                overdue: false
            }
        );
        // A late first check stays late.
        assert!(rule.age(referred, Some(day(9)), day(30)).overdue);
    }

    #[test]
    fn stats_need_a_period_that_runs_forwards() {
        let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        let query = StatsQuery::parse(&AssessmentStatsRequest {
            from: at(1_700_000_000),
            to: at(1_710_000_000),
            area: " Darlington ".into(),
        })
        .unwrap();
        assert_eq!(query.area.as_deref(), Some("Darlington"));
        assert!(query.from < query.to);
        assert_eq!(
            fields(StatsQuery::parse(&AssessmentStatsRequest::default()).unwrap_err()),
            ["from", "to"]
        );
        let backwards = AssessmentStatsRequest {
            from: at(1_710_000_000),
            to: at(1_700_000_000),
            area: "x".repeat(201),
        };
        assert_eq!(
            fields(StatsQuery::parse(&backwards).unwrap_err()),
            ["to", "area"]
        );
    }
}
