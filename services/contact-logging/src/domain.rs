//! Requests parsed at the edge, and the access rule ([`CaseAccess`]: staff
//! by the areas they work in, mentors by their own cases). Handlers never
//! see a raw protobuf request; every violation is collected so the caller
//! fixes all of them at once. No request on a case names an area: a case
//! file's area is the allocation's, and only decides who may reach it.
//! Reports may narrow themselves to one of the caller's areas
//! ([`report_areas`]).

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use cpm_proto::v1::{
    ConcernCategory, ConcernUrgency, ContactActivity, ContactChannel, DischargeOutcome,
    DischargeRequest, LogContactRequest, RelapseSign, ResolveConcernRequest,
};
use cpm_runtime::auth::{AreaScope, Caller, Role};
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::{
    check_text, from_timestamp, parse_enum, parse_enum_list, parse_id,
};
use uuid::Uuid;

use crate::commands::CaseError;

/// Longest free text accepted in one field.
pub const MAX_TEXT: usize = 4000;
/// The fewest minutes a contact may take.
pub const MIN_MINUTES: i32 = 1;
/// The most minutes one contact may take: a whole working day is logged as
/// several contacts.
pub const MAX_MINUTES: i32 = 600;
/// How far ahead of the server's clock a contact may be dated, to allow for
/// a caller's clock running slightly fast.
pub const FUTURE_TOLERANCE: TimeDelta = TimeDelta::minutes(5);

/// The roles that read case files and log contacts.
pub const CASE_WORKERS: &[Role] = &[Role::Coordinator, Role::Admin, Role::Mentor];
/// The roles that discharge, record demand and read reports.
pub const CASE_MANAGERS: &[Role] = &[Role::Coordinator, Role::Admin];
/// The role that records what the programme cost.
pub const ADMINS: &[Role] = &[Role::Admin];

/// The most relapse signs one discharge names (there are eight).
pub const MAX_RELAPSE_SIGNS: usize = 8;

/// A concern raised at a contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewConcern {
    pub category: ConcernCategory,
    pub urgency: ConcernUrgency,
}

/// A valid contact to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewContact {
    pub referral_id: Uuid,
    pub activity: ContactActivity,
    pub channel: ContactChannel,
    /// Attempted but not made.
    pub attempted: bool,
    pub minutes: i32,
    pub occurred_at: DateTime<Utc>,
    pub summary: String,
    pub concern: Option<NewConcern>,
}

impl NewContact {
    /// Parses a request as of `now`, or every reason it is refused.
    pub fn parse(request: &LogContactRequest, now: DateTime<Utc>) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let referral_id = parse_id("referral_id", &request.referral_id, &mut violations);
        let activity = parse_enum::<ContactActivity>("activity", request.activity, &mut violations);
        let channel = parse_enum::<ContactChannel>("channel", request.channel, &mut violations);
        let concern = parse_concern(request, &mut violations);
        if !(MIN_MINUTES..=MAX_MINUTES).contains(&request.minutes) {
            violations.add(
                "minutes",
                format!("must be between {MIN_MINUTES} and {MAX_MINUTES}"),
            );
        }
        let occurred_at = match request.occurred_at.as_ref() {
            None => Some(now),
            Some(at) => match from_timestamp(at) {
                None => {
                    violations.add("occurred_at", "is not a valid time");
                    None
                }
                Some(at) if at > now + FUTURE_TOLERANCE => {
                    violations.add("occurred_at", "must not be in the future");
                    None
                }
                Some(at) => Some(at),
            },
        };
        check_text(
            "summary",
            &request.summary,
            false,
            MAX_TEXT,
            &mut violations,
        );
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            referral_id: referral_id.expect("validated"),
            activity: activity.expect("validated"),
            channel: channel.expect("validated"),
            attempted: request.attempted,
            minutes: request.minutes,
            occurred_at: occurred_at.expect("validated"),
            summary: request.summary.clone(),
            concern,
        })
    }
}

/// The concern a contact raises: `concern` with a known category and
/// urgency, `concern_raised` agreeing with it (a flag without the concern
/// is refused, so no concern is raised without saying what it is about).
fn parse_concern(
    request: &LogContactRequest,
    violations: &mut FieldViolations,
) -> Option<NewConcern> {
    let Some(concern) = request.concern.as_ref() else {
        if request.concern_raised {
            violations.add("concern", "a raised concern needs its category and urgency");
        }
        return None;
    };
    let category = parse_enum::<ConcernCategory>("concern.category", concern.category, violations);
    let urgency = parse_enum::<ConcernUrgency>("concern.urgency", concern.urgency, violations);
    Some(NewConcern {
        category: category?,
        urgency: urgency?,
    })
}

/// A valid discharge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DischargeOrder {
    pub referral_id: Uuid,
    /// The coordinator's internal note: sealed, never sent.
    pub reason: String,
    pub outcome: DischargeOutcome,
    pub relapse_signs: Vec<RelapseSign>,
}

impl DischargeOrder {
    /// Parses a request, or every reason it is refused.
    pub fn parse(request: &DischargeRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let referral_id = parse_id("referral_id", &request.referral_id, &mut violations);
        check_text("reason", &request.reason, true, MAX_TEXT, &mut violations);
        let outcome = parse_enum::<DischargeOutcome>("outcome", request.outcome, &mut violations);
        let relapse_signs = parse_enum_list(
            "relapse_signs",
            &request.relapse_signs,
            MAX_RELAPSE_SIGNS,
            &mut violations,
        );
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            referral_id: referral_id.expect("validated"),
            reason: request.reason.clone(),
            outcome: outcome.expect("validated"),
            relapse_signs,
        })
    }
}

/// A valid resolution of a concern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub concern_id: Uuid,
    pub note: String,
}

impl Resolution {
    /// Parses a request, or every reason it is refused.
    pub fn parse(request: &ResolveConcernRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let concern_id = parse_id("concern_id", &request.concern_id, &mut violations);
        check_text("note", &request.note, true, MAX_TEXT, &mut violations);
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            concern_id: concern_id.expect("validated"),
            note: request.note.clone(),
        })
    }
}

/// The longest area name a report request may name.
pub const MAX_AREA: usize = 200;

/// A calendar date written `2026-03-14`; `None` (with a violation unless
/// `required` is false and the value is empty) otherwise.
pub fn parse_day(
    field: &str,
    value: &str,
    required: bool,
    violations: &mut FieldViolations,
) -> Option<NaiveDate> {
    let value = value.trim();
    if value.is_empty() {
        if required {
            violations.add(field, "is required");
        }
        return None;
    }
    match NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        Ok(date) => Some(date),
        Err(_) => {
            violations.add(field, "must be a date like 2026-03-14");
            None
        }
    }
}

/// The areas a report covers, lower-cased for the queries' `lower(area) =
/// ANY(..)`: `None` for every area (an admin asking for none). A requested
/// area must be one the caller works in; empty means all of theirs.
pub fn report_areas(caller: &Caller, requested: &str) -> Result<Option<Vec<String>>, CaseError> {
    let mut violations = FieldViolations::new();
    check_text("area", requested, false, MAX_AREA, &mut violations);
    if !violations.is_empty() {
        return Err(CaseError::Invalid(violations));
    }
    let requested = requested.trim();
    let scope = caller.area_scope();
    if !requested.is_empty() {
        if !scope.admits(requested) {
            return Err(CaseError::Denied(format!(
                "{requested} is not one of the areas you work in"
            )));
        }
        return Ok(Some(vec![requested.to_lowercase()]));
    }
    Ok(scope
        .as_filter()
        .map(|areas| areas.iter().map(|area| area.to_lowercase()).collect()))
}

/// Which case files a caller may act on: the access rule every RPC applies.
///
/// Which roles may call at all is the access table's to say, checked before
/// anything is read. Staff reach the case files of the areas they work in
/// (a coordinator the areas their token names, an admin every area); a
/// mentor the cases they are allocated to, whatever their area. Any other
/// case answers NOT_FOUND, exactly as a missing one does, so its existence
/// is not revealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaseAccess {
    /// Coordinators and admins: the case files of the areas in this scope.
    Staff(AreaScope),
    /// A mentor: only the case files naming this mentor ID.
    AllocatedMentor(String),
}

/// What [`CaseAccess`] looks at in a case file: its area, its mentors and
/// whether it is still open.
pub trait CaseParties {
    /// The programme area the case file is in.
    fn area(&self) -> &str;
    /// The IDs of the mentors allocated to it.
    fn mentor_ids(&self) -> &[String];
    /// Whether support goes on: once discharged or closed, the mentors
    /// lose the case.
    fn is_open(&self) -> bool;
}

impl CaseAccess {
    /// The access of `caller`: denied to a role that works on no case
    /// file, or a mentor token without a mentor ID.
    pub fn of(caller: &Caller) -> Result<Self, CaseError> {
        match caller.role {
            Role::Coordinator | Role::Admin => Ok(Self::Staff(caller.area_scope())),
            Role::Mentor => match caller.mentor_id.as_deref() {
                Some(mentor_id) if !mentor_id.is_empty() => {
                    Ok(Self::AllocatedMentor(mentor_id.to_owned()))
                }
                _ => Err(CaseError::Denied("the token names no mentor".into())),
            },
            other => Err(CaseError::Denied(format!(
                "role {other} may not act on case files"
            ))),
        }
    }

    /// Whether a record of `area` with no case file (a referral not taken
    /// on) may be acted on: by staff of the area only.
    pub fn admits_area(&self, area: &str) -> bool {
        matches!(self, Self::Staff(scope) if scope.admits(area))
    }

    /// Whether `case_file` may be acted on: by staff of its area, or by a
    /// mentor allocated to it while it is open.
    pub fn admits<T: CaseParties>(&self, case_file: &T) -> bool {
        match self {
            Self::Staff(scope) => scope.admits(case_file.area()),
            Self::AllocatedMentor(mentor_id) => {
                case_file.is_open() && case_file.mentor_ids().iter().any(|id| id == mentor_id)
            }
        }
    }

    /// The case file itself when it exists and may be acted on; NOT_FOUND
    /// otherwise, whether it is missing, in an area the caller does not
    /// work in, or another mentor's.
    pub fn admit<T: CaseParties>(&self, case_file: Option<T>) -> Result<T, CaseError> {
        match case_file {
            Some(case_file) if self.admits(&case_file) => Ok(case_file),
            _ => Err(CaseError::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn at(time: DateTime<Utc>) -> Option<Timestamp> {
        Some(cpm_runtime::grpc::values::timestamp(time))
    }

    fn valid_contact() -> LogContactRequest {
        LogContactRequest {
            referral_id: Uuid::now_v7().to_string(),
            activity: ContactActivity::HomeVisit as i32,
            minutes: 45,
            occurred_at: at(now() - TimeDelta::hours(2)),
            summary: "talked about the week ahead".into(),
            concern_raised: false,
            channel: ContactChannel::InPerson as i32,
            attempted: false,
            concern: None,
        }
    }

    fn contact_fields(request: &LogContactRequest) -> Vec<String> {
        NewContact::parse(request, now())
            .unwrap_err()
            .fields()
            .map(str::to_owned)
            .collect()
    }

    fn discharge_fields(request: &DischargeRequest) -> Vec<String> {
        DischargeOrder::parse(request)
            .unwrap_err()
            .fields()
            .map(str::to_owned)
            .collect()
    }

    fn caller(role: Role, mentor_id: Option<&str>) -> Caller {
        Caller {
            subject: "user-1".into(),
            role,
            agency_id: None,
            mentor_id: mentor_id.map(str::to_owned),
            areas: Vec::new(),
        }
    }

    fn code(error: CaseError) -> tonic::Code {
        tonic::Status::from(error).code()
    }

    #[test]
    fn a_complete_contact_parses() {
        let request = valid_contact();
        let contact = NewContact::parse(&request, now()).unwrap();
        assert_eq!(contact.referral_id.to_string(), request.referral_id);
        assert_eq!(contact.activity, ContactActivity::HomeVisit);
        assert_eq!(contact.minutes, 45);
        assert_eq!(contact.occurred_at, now() - TimeDelta::hours(2));
        assert_eq!(contact.summary, request.summary);
    }

    #[test]
    fn a_contact_without_a_time_happened_now() {
        let mut request = valid_contact();
        request.occurred_at = None;
        assert_eq!(
            NewContact::parse(&request, now()).unwrap().occurred_at,
            now()
        );
    }

    #[test]
    fn every_contact_violation_is_reported_at_once() {
        let request = LogContactRequest {
            referral_id: String::new(),
            activity: 0,
            minutes: 0,
            occurred_at: at(now() + TimeDelta::hours(1)),
            summary: "x".repeat(MAX_TEXT + 1),
            concern_raised: true,
            channel: 0,
            attempted: true,
            concern: None,
        };
        assert_eq!(
            contact_fields(&request),
            [
                "referral_id",
                "activity",
                "channel",
                "concern",
                "minutes",
                "occurred_at",
                "summary"
            ]
        );
    }

    #[test]
    fn a_channel_is_one_of_the_four() {
        let mut request = valid_contact();
        for channel in [0, 5, -1] {
            request.channel = channel;
            assert_eq!(contact_fields(&request), ["channel"], "{channel}");
        }
        request.channel = ContactChannel::Video as i32;
        request.attempted = true;
        let contact = NewContact::parse(&request, now()).unwrap();
        assert_eq!(
            (contact.channel, contact.attempted),
            (ContactChannel::Video, true)
        );
    }

    #[test]
    fn a_concern_says_what_it_is_about_and_how_urgent_it_is() {
        use cpm_proto::v1::ConcernReport;
        let mut request = valid_contact();
        request.concern_raised = true;
        assert_eq!(contact_fields(&request), ["concern"], "a bare flag");
        request.concern = Some(ConcernReport {
            category: 0,
            urgency: 9,
        });
        assert_eq!(
            contact_fields(&request),
            ["concern.category", "concern.urgency"]
        );
        request.concern = Some(ConcernReport {
            category: ConcernCategory::PoliceOrAgencyInteraction as i32,
            urgency: ConcernUrgency::Urgent as i32,
        });
        let expected = Some(NewConcern {
            category: ConcernCategory::PoliceOrAgencyInteraction,
            urgency: ConcernUrgency::Urgent,
        });
        assert_eq!(
            NewContact::parse(&request, now()).unwrap().concern,
            expected
        );
        request.concern_raised = false;
        assert_eq!(
            NewContact::parse(&request, now()).unwrap().concern,
            expected,
            "the concern itself raises it"
        );
        assert_eq!(
            NewContact::parse(&valid_contact(), now()).unwrap().concern,
            None
        );
    }

    #[test]
    fn a_resolution_needs_a_concern_and_a_visible_note() {
        let fields = |concern_id: &str, note: &str| {
            Resolution::parse(&ResolveConcernRequest {
                concern_id: concern_id.into(),
                note: note.into(),
            })
            .map_err(|violations| violations.fields().map(str::to_owned).collect::<Vec<_>>())
        };
        let id = Uuid::now_v7().to_string();
        assert_eq!(
            fields(&id, "spoke to the client; safe").unwrap().note,
            "spoke to the client; safe"
        );
        assert_eq!(fields("", " ").unwrap_err(), ["concern_id", "note"]);
        assert_eq!(fields(&id, "a\u{0}b").unwrap_err(), ["note"]);
        assert_eq!(
            fields(&id, &"x".repeat(MAX_TEXT + 1)).unwrap_err(),
            ["note"]
        );
    }

    #[test]
    fn a_malformed_referral_id_is_refused() {
        let mut request = valid_contact();
        request.referral_id = "not-a-uuid".into();
        assert_eq!(contact_fields(&request), ["referral_id"]);
    }

    #[test]
    fn an_unknown_or_unspecified_activity_is_refused() {
        let mut request = valid_contact();
        request.activity = ContactActivity::Unspecified as i32;
        assert_eq!(contact_fields(&request), ["activity"]);
        request.activity = 99;
        assert_eq!(contact_fields(&request), ["activity"]);
        request.activity = -1;
        assert_eq!(contact_fields(&request), ["activity"]);
    }

    #[test]
    fn minutes_must_be_between_1_and_600() {
        let mut request = valid_contact();
        for minutes in [0, -5, 601, i32::MAX] {
            request.minutes = minutes;
            assert_eq!(contact_fields(&request), ["minutes"], "{minutes} minutes");
        }
        for minutes in [1, 600] {
            request.minutes = minutes;
            assert!(
                NewContact::parse(&request, now()).is_ok(),
                "{minutes} minutes"
            );
        }
    }

    #[test]
    fn a_contact_more_than_five_minutes_ahead_is_refused() {
        let mut request = valid_contact();
        request.occurred_at = at(now() + FUTURE_TOLERANCE + TimeDelta::seconds(1));
        assert_eq!(contact_fields(&request), ["occurred_at"]);
        request.occurred_at = at(now() + FUTURE_TOLERANCE);
        assert!(
            NewContact::parse(&request, now()).is_ok(),
            "a slightly fast clock is allowed"
        );
    }

    #[test]
    fn an_impossible_timestamp_is_refused() {
        let mut request = valid_contact();
        request.occurred_at = Some(Timestamp {
            seconds: 0,
            nanos: -1,
        });
        assert_eq!(contact_fields(&request), ["occurred_at"]);
        request.occurred_at = Some(Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        });
        assert_eq!(contact_fields(&request), ["occurred_at"]);
    }

    #[test]
    fn a_summary_over_4000_characters_is_refused_and_an_empty_one_allowed() {
        let mut request = valid_contact();
        request.summary = "é".repeat(MAX_TEXT);
        assert!(
            NewContact::parse(&request, now()).is_ok(),
            "characters, not bytes"
        );
        request.summary = "x".repeat(MAX_TEXT + 1);
        assert_eq!(contact_fields(&request), ["summary"]);
        request.summary.clear();
        assert!(NewContact::parse(&request, now()).is_ok());
    }

    #[test]
    fn a_complete_discharge_parses() {
        let referral_id = Uuid::now_v7();
        let order = DischargeOrder::parse(&DischargeRequest {
            referral_id: referral_id.to_string(),
            reason: "goals met".into(),
            outcome: DischargeOutcome::GoalsAchieved as i32,
            relapse_signs: vec![
                RelapseSign::Isolation as i32,
                RelapseSign::Isolation as i32,
                RelapseSign::EmergencyCallsRising as i32,
            ],
        })
        .unwrap();
        assert_eq!(order.referral_id, referral_id);
        assert_eq!(order.reason, "goals met");
        assert_eq!(order.outcome, DischargeOutcome::GoalsAchieved);
        assert_eq!(
            order.relapse_signs,
            [RelapseSign::Isolation, RelapseSign::EmergencyCallsRising]
        );
    }

    #[test]
    fn every_discharge_violation_is_reported_at_once() {
        let request = DischargeRequest {
            referral_id: "nope".into(),
            reason: "   ".into(),
            outcome: 0,
            relapse_signs: vec![0],
        };
        assert_eq!(
            discharge_fields(&request),
            ["referral_id", "reason", "outcome", "relapse_signs[0]"]
        );
        let request = DischargeRequest {
            referral_id: String::new(),
            reason: "x".repeat(MAX_TEXT + 1),
            outcome: 99,
            relapse_signs: vec![1; MAX_RELAPSE_SIGNS + 1],
        };
        assert_eq!(
            discharge_fields(&request),
            ["referral_id", "reason", "outcome", "relapse_signs"]
        );
    }

    /// A case file as the access rule sees it.
    #[derive(Debug)]
    struct Case {
        area: &'static str,
        mentor_ids: Vec<String>,
        open: bool,
    }

    impl CaseParties for Case {
        fn area(&self) -> &str {
            self.area
        }
        fn mentor_ids(&self) -> &[String] {
            &self.mentor_ids
        }
        fn is_open(&self) -> bool {
            self.open
        }
    }

    fn case(area: &'static str, mentor_ids: &[&str]) -> Case {
        Case {
            area,
            mentor_ids: mentor_ids.iter().map(|id| (*id).to_owned()).collect(),
            open: true,
        }
    }

    /// Whether `access` admits an open case in `area` allocated to `mentor_ids`.
    fn admits(access: &CaseAccess, area: &'static str, mentor_ids: &[String]) -> bool {
        access.admits(&Case {
            area,
            mentor_ids: mentor_ids.to_vec(),
            open: true,
        })
    }

    fn coordinator_in(areas: &[&str]) -> CaseAccess {
        CaseAccess::of(&Caller {
            areas: areas.iter().map(|area| (*area).to_owned()).collect(),
            ..caller(Role::Coordinator, None)
        })
        .unwrap()
    }

    /// NOT_FOUND, exactly as for a case file that does not exist.
    fn assert_looks_missing(access: &CaseAccess, case_file: Case) {
        let refused = tonic::Status::from(access.admit(Some(case_file)).unwrap_err());
        let missing = tonic::Status::from(access.admit(None::<Case>).unwrap_err());
        assert_eq!(refused.code(), tonic::Code::NotFound);
        assert_eq!(
            (refused.code(), refused.message()),
            (missing.code(), missing.message())
        );
    }

    #[test]
    fn an_admin_acts_on_a_case_in_any_area() {
        let access = CaseAccess::of(&caller(Role::Admin, None)).unwrap();
        assert_eq!(access, CaseAccess::Staff(AreaScope::Every));
        for area in ["Darlington", "East Durham", "Anywhere"] {
            assert!(admits(&access, area, &[]));
            assert!(access.admit(Some(case(area, &["m-1"]))).is_ok());
        }
    }

    #[test]
    fn a_coordinator_acts_only_on_cases_in_their_areas() {
        let access = coordinator_in(&["Darlington", "Stockton"]);
        assert!(admits(&access, "Darlington", &[]));
        assert!(admits(&access, "Stockton", &["m-1".into()]));
        assert!(
            admits(&access, "darlington", &[]),
            "letter case aside, as areas are registered"
        );
        assert!(!admits(&access, "East Durham", &[]));
        assert!(
            !admits(&access, "Darlington\u{200b}", &[]),
            "a look-alike is another area"
        );
        assert!(access.admit(Some(case("Darlington", &[]))).is_ok());
    }

    #[test]
    fn a_coordinator_whose_token_names_no_area_acts_on_no_case() {
        let access = coordinator_in(&[]);
        assert_eq!(access, CaseAccess::Staff(AreaScope::Only(Vec::new())));
        for area in ["Darlington", "East Durham", ""] {
            assert!(!admits(&access, area, &[]), "{area:?}");
        }
    }

    #[test]
    fn a_case_in_another_area_looks_exactly_like_a_missing_one() {
        let access = coordinator_in(&["Darlington"]);
        assert_looks_missing(&access, case("East Durham", &["m-1"]));
    }

    #[test]
    fn a_mentor_acts_only_on_their_own_cases_whatever_their_area() {
        let access = CaseAccess::of(&caller(Role::Mentor, Some("m-1"))).unwrap();
        assert!(admits(
            &access,
            "East Durham",
            &["m-2".into(), "m-1".into()]
        ));
        assert!(admits(&access, "Darlington", &["m-1".into()]));
        assert!(!admits(&access, "Darlington", &["m-2".into()]));
        assert!(!admits(&access, "Darlington", &[]));
    }

    #[test]
    fn once_a_case_closes_its_mentors_lose_it_and_staff_keep_it() {
        let closed = || Case {
            open: false,
            ..case("Darlington", &["m-1", "m-2"])
        };
        let mentor = CaseAccess::of(&caller(Role::Mentor, Some("m-1"))).unwrap();
        assert_looks_missing(&mentor, closed());
        assert!(
            coordinator_in(&["Darlington"])
                .admit(Some(closed()))
                .is_ok()
        );
    }

    #[test]
    fn a_mentors_token_areas_do_not_widen_their_cases() {
        let access = CaseAccess::of(&Caller {
            areas: vec!["Darlington".into()],
            ..caller(Role::Mentor, Some("m-1"))
        })
        .unwrap();
        assert!(!admits(&access, "Darlington", &["m-2".into()]));
    }

    #[test]
    fn another_mentors_case_looks_exactly_like_a_missing_one() {
        let access = CaseAccess::of(&caller(Role::Mentor, Some("m-1"))).unwrap();
        assert_looks_missing(&access, case("Darlington", &["m-2"]));
        assert!(access.admit(Some(case("Darlington", &["m-1"]))).is_ok());
    }

    #[test]
    fn other_roles_are_denied() {
        for role in [Role::Referrer, Role::Service] {
            let error = CaseAccess::of(&caller(role, None)).unwrap_err();
            assert_eq!(code(error), tonic::Code::PermissionDenied);
        }
    }

    #[test]
    fn a_mentor_token_without_a_mentor_id_is_denied() {
        for mentor_id in [None, Some("")] {
            let error = CaseAccess::of(&caller(Role::Mentor, mentor_id)).unwrap_err();
            assert_eq!(code(error), tonic::Code::PermissionDenied);
        }
    }

    mod properties {
        use super::*;
        use cpm_runtime::grpc::values::is_hidden;
        use proptest::prelude::*;

        proptest! {
            /// Any contact: parsing never panics; an accepted one is within
            /// its bounds, dated neither ahead of now nor absurdly far back,
            /// and holds no hidden character.
            #[test]
            fn any_contact_parses_or_is_refused_cleanly(
                activity in any::<i32>(),
                minutes in any::<i32>(),
                seconds in any::<i64>(),
                nanos in any::<i32>(),
                summary in prop_oneof![any::<String>(), "[a-z ]{0,30}"],
                referral_id in prop_oneof![any::<String>(), Just(Uuid::now_v7().to_string())],
                channel in -1..6,
                concern in proptest::option::of((-1..7, -1..4)),
            ) {
                let request = LogContactRequest {
                    referral_id,
                    activity,
                    minutes,
                    occurred_at: Some(Timestamp { seconds, nanos }),
                    summary,
                    concern_raised: concern.is_some(),
                    channel,
                    attempted: false,
                    concern: concern.map(|(category, urgency)| cpm_proto::v1::ConcernReport {
                        category,
                        urgency,
                    }),
                };
                match NewContact::parse(&request, now()) {
                    Ok(contact) => {
                        prop_assert!((MIN_MINUTES..=MAX_MINUTES).contains(&contact.minutes));
                        prop_assert!(contact.occurred_at <= now() + FUTURE_TOLERANCE);
                        prop_assert!(!contact.summary.chars().any(is_hidden));
                    }
                    Err(violations) => prop_assert!(!violations.is_empty()),
                }
            }
        }
    }
}
