//! Requests parsed at the edge, and the rules of an assessment: which
//! checks exist, what they recommend, and when a decision needs a reason.
//! Handlers never see a raw protobuf request; every violation is collected
//! so a coordinator fixes all of them at once.
//!
//! The rules are split by what they govern: `checks` (recording a check
//! and recommending from the latest ones), `decisions` (deciding and
//! re-assessing), `age` (the first-assessment target in working days),
//! `queries` (lookups, queues and statistics); the programme's areas and
//! which a caller sees are `cpm_runtime::areas`. Everything is
//! re-exported here, so callers name it as `crate::domain::X`.

use cpm_proto::v1::CheckKind;

mod age;
mod checks;
mod decisions;
mod queries;
#[cfg(test)]
mod test_support;

pub use age::{Age, AgeRule, working_days_between};
pub use checks::{
    CheckOutcome, HomeVisitDetails, NewCheck, Scores, check_override, missing_checks, recommend,
};
pub use decisions::{Ending, NewDecision, NewReassessment, check_reassessable};
pub use queries::{AssessmentLookup, QueueQuery, StatsQuery};

/// Longest free text accepted in one field.
pub const MAX_TEXT: usize = 4000;
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
