//! Requests parsed at the edge, and the access rule ([`CaseAccess`]: staff
//! by the areas they work in, mentors by their own cases). Handlers never
//! see a raw protobuf request; every violation is collected so the caller
//! fixes all of them at once. No request on a case names an area: a case
//! file's area is the allocation's, and only decides who may reach it.
//! Reports may narrow themselves to one of the caller's areas
//! ([`report_areas`]).

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use cpm_proto::v1::{ContactActivity, DischargeRequest, LogContactRequest};
use cpm_runtime::auth::{AreaScope, Caller, Role};
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::{check_text, from_timestamp, parse_enum, parse_id};
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

/// A valid contact to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewContact {
    pub referral_id: Uuid,
    pub activity: ContactActivity,
    pub minutes: i32,
    pub occurred_at: DateTime<Utc>,
    pub summary: String,
    pub concern_raised: bool,
}

impl NewContact {
    /// Parses a request as of `now`, or every reason it is refused.
    pub fn parse(request: &LogContactRequest, now: DateTime<Utc>) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let referral_id = parse_id("referral_id", &request.referral_id, &mut violations);
        let activity = parse_enum::<ContactActivity>("activity", request.activity, &mut violations);
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
            minutes: request.minutes,
            occurred_at: occurred_at.expect("validated"),
            summary: request.summary.clone(),
            concern_raised: request.concern_raised,
        })
    }
}

/// A valid discharge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DischargeOrder {
    pub referral_id: Uuid,
    pub reason: String,
}

impl DischargeOrder {
    /// Parses a request, or every reason it is refused.
    pub fn parse(request: &DischargeRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let referral_id = parse_id("referral_id", &request.referral_id, &mut violations);
        check_text("reason", &request.reason, true, MAX_TEXT, &mut violations);
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            referral_id: referral_id.expect("validated"),
            reason: request.reason.clone(),
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

/// What [`CaseAccess`] looks at in a case file: its area and its mentors.
pub trait CaseParties {
    /// The programme area the case file is in.
    fn area(&self) -> &str;
    /// The IDs of the mentors allocated to it.
    fn mentor_ids(&self) -> &[String];
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

    /// Whether a case file in `area` allocated to `mentor_ids` may be acted on.
    pub fn admits(&self, area: &str, mentor_ids: &[String]) -> bool {
        match self {
            Self::Staff(scope) => scope.admits(area),
            Self::AllocatedMentor(mentor_id) => mentor_ids.iter().any(|id| id == mentor_id),
        }
    }

    /// The case file itself when it exists and may be acted on; NOT_FOUND
    /// otherwise, whether it is missing, in an area the caller does not
    /// work in, or another mentor's.
    pub fn admit<T: CaseParties>(&self, case_file: Option<T>) -> Result<T, CaseError> {
        match case_file {
            Some(case_file) if self.admits(case_file.area(), case_file.mentor_ids()) => {
                Ok(case_file)
            }
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
        };
        assert_eq!(
            contact_fields(&request),
            [
                "referral_id",
                "activity",
                "minutes",
                "occurred_at",
                "summary"
            ]
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
        })
        .unwrap();
        assert_eq!(order.referral_id, referral_id);
        assert_eq!(order.reason, "goals met");
    }

    #[test]
    fn every_discharge_violation_is_reported_at_once() {
        let request = DischargeRequest {
            referral_id: "nope".into(),
            reason: "   ".into(),
        };
        assert_eq!(discharge_fields(&request), ["referral_id", "reason"]);
        let request = DischargeRequest {
            referral_id: String::new(),
            reason: "x".repeat(MAX_TEXT + 1),
        };
        assert_eq!(discharge_fields(&request), ["referral_id", "reason"]);
    }

    /// A case file as the access rule sees it.
    #[derive(Debug)]
    struct Case {
        area: &'static str,
        mentor_ids: Vec<String>,
    }

    impl CaseParties for Case {
        fn area(&self) -> &str {
            self.area
        }
        fn mentor_ids(&self) -> &[String] {
            &self.mentor_ids
        }
    }

    fn case(area: &'static str, mentor_ids: &[&str]) -> Case {
        Case {
            area,
            mentor_ids: mentor_ids.iter().map(|id| (*id).to_owned()).collect(),
        }
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
            assert!(access.admits(area, &[]));
            assert!(access.admit(Some(case(area, &["m-1"]))).is_ok());
        }
    }

    #[test]
    fn a_coordinator_acts_only_on_cases_in_their_areas() {
        let access = coordinator_in(&["Darlington", "Stockton"]);
        assert!(access.admits("Darlington", &[]));
        assert!(access.admits("Stockton", &["m-1".into()]));
        assert!(
            access.admits("darlington", &[]),
            "letter case aside, as areas are registered"
        );
        assert!(!access.admits("East Durham", &[]));
        assert!(
            !access.admits("Darlington\u{200b}", &[]),
            "a look-alike is another area"
        );
        assert!(access.admit(Some(case("Darlington", &[]))).is_ok());
    }

    #[test]
    fn a_coordinator_whose_token_names_no_area_acts_on_no_case() {
        let access = coordinator_in(&[]);
        assert_eq!(access, CaseAccess::Staff(AreaScope::Only(Vec::new())));
        for area in ["Darlington", "East Durham", ""] {
            assert!(!access.admits(area, &[]), "{area:?}");
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
        assert!(access.admits("East Durham", &["m-2".into(), "m-1".into()]));
        assert!(access.admits("Darlington", &["m-1".into()]));
        assert!(!access.admits("Darlington", &["m-2".into()]));
        assert!(!access.admits("Darlington", &[]));
    }

    #[test]
    fn a_mentors_token_areas_do_not_widen_their_cases() {
        let access = CaseAccess::of(&Caller {
            areas: vec!["Darlington".into()],
            ..caller(Role::Mentor, Some("m-1"))
        })
        .unwrap();
        assert!(!access.admits("Darlington", &["m-2".into()]));
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
            ) {
                let request = LogContactRequest {
                    referral_id,
                    activity,
                    minutes,
                    occurred_at: Some(Timestamp { seconds, nanos }),
                    summary,
                    concern_raised: false,
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
