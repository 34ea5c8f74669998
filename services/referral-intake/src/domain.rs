//! Requests parsed at the edge (a submission, the agency register, privacy
//! requests): handlers never see a raw protobuf request. Every violation is
//! collected so the caller fixes all at once.

use chrono::{DateTime, Datelike as _, NaiveDate, SubsecRound as _, Utc};
use cpm_proto::v1::{
    AgencyKind, ClientIdentity, CrimeType, Demand, Gender, KnownRisk, ReferralStatus, ReferrerRole,
    RegisterAgencyRequest, RegisterReferrerRequest, SubmitReferralRequest, Vulnerability,
};
use cpm_runtime::config::ProgrammeConfig;
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::{check_text, parse_enum, parse_id};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

/// Longest free text accepted in one field.
pub const MAX_TEXT: usize = 4000;
/// Longest name, address line or phone number.
pub const MAX_SHORT_TEXT: usize = 200;
/// The age a client must have reached at referral.
pub const ADULT_AGE: u32 = 18;

/// The personal and free-text part of a referral: stored encrypted only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedDetails {
    pub given_name: String,
    pub family_name: String,
    pub date_of_birth: NaiveDate,
    pub address: String,
    pub phone: String,
    pub safe_contact_instructions: String,
    pub referrer_name: String,
    pub referrer_role: i32,
    pub referrer_contact: String,
    pub reason: String,
    pub desired_outcomes: String,
    pub known_risks: String,
    #[serde(default)]
    pub crime_other: String,
    #[serde(default)]
    pub vulnerability_other: String,
    #[serde(default)]
    pub other_professionals: Vec<Professional>,
}

/// A professional already involved; their contact details are personal
/// data too, so they are sealed with the client's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Professional {
    pub role: String,
    pub organisation: String,
    pub contact: String,
}

/// The most professionals one referral may name.
pub const MAX_PROFESSIONALS: usize = 20;
/// The most calls or reports a count may claim in a year.
pub const MAX_COUNT: i32 = 100_000;

/// A valid submission.
#[derive(Clone, Debug)]
pub struct NewReferral {
    pub idempotency_key: String,
    /// Tells a retry from another request reusing its idempotency key.
    pub request_hash: Vec<u8>,
    pub area: String,
    pub gender: Gender,
    pub vulnerabilities: Vec<Vulnerability>,
    pub emergency_calls_last_12_months: i32,
    pub victim_of: Vec<CrimeType>,
    pub perpetrator_of: Vec<CrimeType>,
    pub known_risk_types: Vec<KnownRisk>,
    pub referrer_will_co_visit: bool,
    pub demand: Option<Demand>,
    pub details: SealedDetails,
    /// When it arrived (to the microsecond PostgreSQL keeps).
    pub submitted_at: DateTime<Utc>,
}

/// Parses a repeated closed-list field: every entry known, duplicates dropped.
/// The most entries an enum list may have: more than any vocabulary holds,
/// so repeats pass, yet a flood is one violation and is not read.
pub const MAX_LISTED: usize = 32;

/// [`cpm_runtime::grpc::values::parse_enum_list`] of at most [`MAX_LISTED`] entries.
fn parse_enum_list<E>(field: &str, values: &[i32], violations: &mut FieldViolations) -> Vec<E>
where
    E: TryFrom<i32> + PartialEq,
{
    cpm_runtime::grpc::values::parse_enum_list(field, values, MAX_LISTED, violations)
}

fn check_count(field: &str, value: i32, violations: &mut FieldViolations) {
    if value < 0 {
        violations.add(field, "must not be negative");
    } else if value > MAX_COUNT {
        violations.add(field, "is implausibly high");
    }
}

fn check_demand(demand: &Demand, total_calls: i32, violations: &mut FieldViolations) {
    check_count("demand.police_calls", demand.police_calls, violations);
    check_count("demand.ambulance_calls", demand.ambulance_calls, violations);
    check_count("demand.nhs_111_calls", demand.nhs_111_calls, violations);
    check_count("demand.other_calls", demand.other_calls, violations);
    check_count(
        "demand.safeguarding_reports",
        demand.safeguarding_reports,
        violations,
    );
    let hours = demand.police_staff_hours;
    if !hours.is_finite() || hours < 0.0 {
        violations.add(
            "demand.police_staff_hours",
            "must be a number of hours, not negative",
        );
    } else if hours > 100_000.0 {
        violations.add("demand.police_staff_hours", "is implausibly high");
    }
    let by_service = i64::from(demand.police_calls)
        + i64::from(demand.ambulance_calls)
        + i64::from(demand.nhs_111_calls)
        + i64::from(demand.other_calls);
    if by_service > i64::from(total_calls) {
        violations.add(
            "emergency_calls_last_12_months",
            "must be at least the calls counted by service in `demand`",
        );
    }
}

/// Whole years between `born` and `on`.
pub fn age_on(born: NaiveDate, on: NaiveDate) -> u32 {
    let mut age = on.year() - born.year();
    if (on.month(), on.day()) < (born.month(), born.day()) {
        age -= 1;
    }
    age.max(0) as u32
}

/// The normalised identity the re-referral fingerprint is computed from.
pub fn identity_key(details: &SealedDetails) -> String {
    let normalise = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    format!(
        "{}|{}|{}",
        normalise(&details.given_name),
        normalise(&details.family_name),
        details.date_of_birth
    )
}

/// The hash of everything but the idempotency key, which tells a retry from
/// another request reusing its key. The key is lifted out for the encoding
/// and put back, rather than copying the whole request.
fn request_hash(request: &mut SubmitReferralRequest) -> Vec<u8> {
    let key = std::mem::take(&mut request.idempotency_key);
    let hash = Sha256::digest(request.encode_to_vec()).to_vec();
    request.idempotency_key = key;
    hash
}

impl NewReferral {
    /// Parses a request arriving at `now`, or every reason it is refused; the
    /// client's area must be one of `programme`'s and is kept in its
    /// registered spelling. `request` is only borrowed mutably to hash it
    /// without a copy (see `request_hash`); it is left as it was.
    pub fn parse(
        request: &mut SubmitReferralRequest,
        now: DateTime<Utc>,
        programme: &ProgrammeConfig,
    ) -> Result<Self, FieldViolations> {
        let today = now.date_naive();
        let mut violations = FieldViolations::new();
        let key = request.idempotency_key.trim();
        if key.is_empty() {
            violations.add("idempotency_key", "is required");
        } else if key.len() > 128 {
            violations.add("idempotency_key", "must be at most 128 characters");
        }
        let default_client = ClientIdentity::default();
        let client = match request.client.as_ref() {
            Some(client) => client,
            None => {
                violations.add("client", "is required");
                &default_client
            }
        };
        check_text(
            "client.given_name",
            &client.given_name,
            true,
            MAX_SHORT_TEXT,
            &mut violations,
        );
        check_text(
            "client.family_name",
            &client.family_name,
            true,
            MAX_SHORT_TEXT,
            &mut violations,
        );
        // One of the programme's areas, in its registered spelling: a
        // look-alike (another case aside) would file the referral in a queue
        // no coordinator works in.
        let area = programme.check_area("client.area", &client.area, &mut violations);
        check_text(
            "client.address",
            &client.address,
            false,
            MAX_SHORT_TEXT,
            &mut violations,
        );
        check_text("client.phone", &client.phone, false, 40, &mut violations);
        check_text(
            "client.safe_contact_instructions",
            &client.safe_contact_instructions,
            false,
            MAX_TEXT,
            &mut violations,
        );
        let date_of_birth = match NaiveDate::parse_from_str(&client.date_of_birth, "%Y-%m-%d") {
            Ok(born) if born > today => {
                violations.add("client.date_of_birth", "must not be in the future");
                None
            }
            Ok(born) if age_on(born, today) < ADULT_AGE => {
                violations.add(
                    "client.date_of_birth",
                    "the client must be 18 or over at referral",
                );
                None
            }
            Ok(born) if age_on(born, today) > 120 => {
                violations.add("client.date_of_birth", "is implausibly long ago");
                None
            }
            Ok(born) => Some(born),
            Err(_) if client.date_of_birth.is_empty() => {
                violations.add("client.date_of_birth", "is required");
                None
            }
            Err(_) => {
                violations.add("client.date_of_birth", "must be a date like 1979-04-01");
                None
            }
        };
        let gender = parse_enum::<Gender>("client.gender", client.gender, &mut violations);

        let default_referrer = Default::default();
        let referrer = match request.referrer.as_ref() {
            Some(referrer) => referrer,
            None => {
                violations.add("referrer", "is required");
                &default_referrer
            }
        };
        check_text(
            "referrer.name",
            &referrer.name,
            true,
            MAX_SHORT_TEXT,
            &mut violations,
        );
        check_text(
            "referrer.contact",
            &referrer.contact,
            true,
            MAX_SHORT_TEXT,
            &mut violations,
        );
        parse_enum::<ReferrerRole>("referrer.role", referrer.role, &mut violations);

        check_text("reason", &request.reason, true, MAX_TEXT, &mut violations);
        check_text(
            "desired_outcomes",
            &request.desired_outcomes,
            false,
            MAX_TEXT,
            &mut violations,
        );
        check_text(
            "known_risks",
            &request.known_risks,
            false,
            MAX_TEXT,
            &mut violations,
        );
        if !request.client_consented {
            violations.add(
                "client_consented",
                "the client must know of and agree to the referral",
            );
        }
        let vulnerabilities = parse_enum_list::<Vulnerability>(
            "vulnerabilities",
            &request.vulnerabilities,
            &mut violations,
        );
        check_text(
            "vulnerability_other",
            &request.vulnerability_other,
            false,
            MAX_TEXT,
            &mut violations,
        );
        check_count(
            "emergency_calls_last_12_months",
            request.emergency_calls_last_12_months,
            &mut violations,
        );
        let victim_of =
            parse_enum_list::<CrimeType>("victim_of", &request.victim_of, &mut violations);
        let perpetrator_of = parse_enum_list::<CrimeType>(
            "perpetrator_of",
            &request.perpetrator_of,
            &mut violations,
        );
        check_text(
            "crime_other",
            &request.crime_other,
            false,
            MAX_SHORT_TEXT,
            &mut violations,
        );
        if (victim_of.contains(&CrimeType::Other) || perpetrator_of.contains(&CrimeType::Other))
            && request.crime_other.trim().is_empty()
        {
            violations.add("crime_other", "must say which crime when OTHER is chosen");
        }
        let known_risk_types = parse_enum_list::<KnownRisk>(
            "known_risk_types",
            &request.known_risk_types,
            &mut violations,
        );
        if known_risk_types.contains(&KnownRisk::Other) && request.known_risks.trim().is_empty() {
            violations.add("known_risks", "must describe the risk when OTHER is chosen");
        }
        if let Some(demand) = &request.demand {
            check_demand(
                demand,
                request.emergency_calls_last_12_months,
                &mut violations,
            );
        }
        if request.other_professionals.len() > MAX_PROFESSIONALS {
            violations.add(
                "other_professionals",
                format!("must list at most {MAX_PROFESSIONALS} professionals"),
            );
        }
        let mut other_professionals = Vec::new();
        for (index, professional) in request
            .other_professionals
            .iter()
            .take(MAX_PROFESSIONALS)
            .enumerate()
        {
            let field = |name: &str| format!("other_professionals[{index}].{name}");
            check_text(
                &field("role"),
                &professional.role,
                true,
                MAX_SHORT_TEXT,
                &mut violations,
            );
            check_text(
                &field("organisation"),
                &professional.organisation,
                false,
                MAX_SHORT_TEXT,
                &mut violations,
            );
            check_text(
                &field("contact"),
                &professional.contact,
                false,
                MAX_SHORT_TEXT,
                &mut violations,
            );
            other_professionals.push(Professional {
                role: professional.role.trim().to_owned(),
                organisation: professional.organisation.trim().to_owned(),
                contact: professional.contact.trim().to_owned(),
            });
        }

        if !violations.is_empty() {
            return Err(violations);
        }
        let mut referral = Self {
            idempotency_key: key.to_owned(),
            request_hash: Vec::new(),
            area: area.expect("validated"),
            gender: gender.expect("validated"),
            vulnerabilities,
            emergency_calls_last_12_months: request.emergency_calls_last_12_months,
            victim_of,
            perpetrator_of,
            known_risk_types,
            referrer_will_co_visit: request.referrer_will_co_visit,
            demand: request.demand,
            submitted_at: now.trunc_subsecs(6),
            details: SealedDetails {
                given_name: client.given_name.trim().to_owned(),
                family_name: client.family_name.trim().to_owned(),
                date_of_birth: date_of_birth.expect("validated"),
                address: client.address.trim().to_owned(),
                phone: client.phone.trim().to_owned(),
                safe_contact_instructions: client.safe_contact_instructions.clone(),
                referrer_name: referrer.name.trim().to_owned(),
                referrer_role: referrer.role,
                referrer_contact: referrer.contact.trim().to_owned(),
                reason: request.reason.clone(),
                desired_outcomes: request.desired_outcomes.clone(),
                known_risks: request.known_risks.clone(),
                crime_other: request.crime_other.trim().to_owned(),
                vulnerability_other: request.vulnerability_other.clone(),
                other_professionals,
            },
        };
        referral.request_hash = request_hash(request);
        Ok(referral)
    }
}

/// Agency IDs travel in tokens and URLs: short, lowercase, no spaces.
fn check_agency_id(field: &str, agency_id: &str, violations: &mut FieldViolations) {
    let valid = !agency_id.is_empty()
        && agency_id.len() <= 64
        && agency_id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        violations.add(
            field,
            "must be 1 to 64 lowercase letters, digits, '-' or '_'",
        );
    }
}

/// An agency to register, or to update (`active: false` suspends it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAgency {
    pub agency_id: String,
    pub name: String,
    pub kind: AgencyKind,
    pub active: bool,
}

impl NewAgency {
    pub fn parse(request: &RegisterAgencyRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        check_agency_id("agency_id", &request.agency_id, &mut violations);
        check_text("name", &request.name, true, MAX_SHORT_TEXT, &mut violations);
        let kind = parse_enum::<AgencyKind>("kind", request.kind, &mut violations);
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            agency_id: request.agency_id.clone(),
            name: request.name.trim().to_owned(),
            kind: kind.expect("validated"),
            active: request.active,
        })
    }
}

/// A referrer of a registered agency, known by their token's subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewReferrer {
    pub agency_id: String,
    pub subject: String,
    pub name: String,
    pub role: ReferrerRole,
    pub contact: String,
}

impl NewReferrer {
    pub fn parse(request: &RegisterReferrerRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        check_agency_id("agency_id", &request.agency_id, &mut violations);
        for (field, value) in [
            ("subject", &request.subject),
            ("name", &request.name),
            ("contact", &request.contact),
        ] {
            check_text(field, value, true, MAX_SHORT_TEXT, &mut violations);
        }
        let role = parse_enum::<ReferrerRole>("role", request.role, &mut violations);
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            agency_id: request.agency_id.clone(),
            subject: request.subject.trim().to_owned(),
            name: request.name.trim().to_owned(),
            role: role.expect("validated"),
            contact: request.contact.trim().to_owned(),
        })
    }
}

/// An erasure or subject access request: which client (by any referral of
/// theirs) and why, kept in the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivacyRequest {
    pub referral_id: Uuid,
    pub reason: String,
}

impl PrivacyRequest {
    pub fn parse(referral_id: &str, reason: &str) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let referral_id = parse_id("referral_id", referral_id, &mut violations);
        check_text("reason", reason, true, MAX_TEXT, &mut violations);
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            referral_id: referral_id.expect("validated"),
            reason: reason.to_owned(),
        })
    }
}

/// Whose referrals a caller may read or act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadScope<'a> {
    /// A referrer: their agency's referrals, in every area (the database's
    /// row-level security holds them to it too).
    Agency(&'a str),
    /// Staff: referrals in these areas, in the programme's spelling; `None`
    /// for every area (admins). A referral outside them answers as a missing one.
    Staff(Option<Vec<String>>),
}

impl ReadScope<'_> {
    /// The agency a referrer is held to; `None` for staff.
    pub fn agency(&self) -> Option<&str> {
        match self {
            ReadScope::Agency(agency_id) => Some(agency_id),
            ReadScope::Staff(_) => None,
        }
    }

    /// The areas staff are held to, for `($n::text[] IS NULL OR area =
    /// ANY($n))`; `None` for every area, and for a referrer (whose agency
    /// scopes them instead).
    pub fn areas(&self) -> Option<&[String]> {
        match self {
            ReadScope::Agency(_) | ReadScope::Staff(None) => None,
            ReadScope::Staff(Some(areas)) => Some(areas),
        }
    }
}

/// The order of statuses lives in the contracts crate.
pub use cpm_proto::status_rank;

/// Statuses from which an agency may still withdraw.
pub fn can_withdraw(status: ReferralStatus) -> bool {
    status_rank(status) < status_rank(ReferralStatus::InSupport)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpm_proto::v1::Referrer;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
    }

    fn now() -> DateTime<Utc> {
        today().and_hms_opt(10, 0, 0).unwrap().and_utc()
    }

    /// The programme of these tests: the default areas (Darlington, South,
    /// East and North Durham).
    fn programme() -> ProgrammeConfig {
        ProgrammeConfig::default()
    }

    pub(crate) fn valid_request() -> SubmitReferralRequest {
        SubmitReferralRequest {
            idempotency_key: "key-1".into(),
            client: Some(ClientIdentity {
                given_name: "Alex".into(),
                family_name: "Example".into(),
                date_of_birth: "1980-05-17".into(),
                gender: Gender::Female as i32,
                address: "1 High Street".into(),
                area: "Darlington".into(),
                phone: "01325 000000".into(),
                safe_contact_instructions: "text first".into(),
            }),
            referrer: Some(Referrer {
                name: "PC Smith".into(),
                role: ReferrerRole::Frontline as i32,
                contact: "pc.smith@police.example".into(),
            }),
            reason: "repeated calls".into(),
            desired_outcomes: "feel less alone".into(),
            client_consented: true,
            vulnerabilities: vec![Vulnerability::HighImpactUser as i32],
            emergency_calls_last_12_months: 42,
            known_risks: String::new(),
            ..Default::default()
        }
    }

    fn fields(request: &SubmitReferralRequest) -> Vec<String> {
        NewReferral::parse(&mut request.clone(), now(), &programme())
            .unwrap_err()
            .fields()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_complete_request_parses() {
        let parsed = NewReferral::parse(&mut valid_request(), now(), &programme()).unwrap();
        assert_eq!(parsed.area, "Darlington");
        assert_eq!(parsed.details.date_of_birth.to_string(), "1980-05-17");
    }

    #[test]
    fn the_area_must_be_one_of_the_programme_s_and_is_kept_as_registered() {
        let mut request = valid_request();
        for unknown in ["Nowhere", "Darlington\u{200b}", "Darl ington", ""] {
            request.client.as_mut().unwrap().area = unknown.into();
            assert_eq!(fields(&request), ["client.area"], "{unknown:?}");
        }
        // Refused alongside every other violation, not on its own.
        request.client.as_mut().unwrap().area = "Nowhere".into();
        request.reason.clear();
        assert_eq!(fields(&request), ["client.area", "reason"]);

        for (sent, stored) in [
            ("darlington ", "Darlington"),
            (" EAST durham", "East Durham"),
            ("North Durham", "North Durham"),
        ] {
            let mut request = valid_request();
            request.client.as_mut().unwrap().area = sent.into();
            let parsed = NewReferral::parse(&mut request, now(), &programme()).unwrap();
            assert_eq!(parsed.area, stored);
        }

        let mut request = valid_request();
        request.client.as_mut().unwrap().area = "Northshire".into();
        let elsewhere = ProgrammeConfig {
            areas: vec!["Northshire".into()],
        };
        assert_eq!(
            NewReferral::parse(&mut request, now(), &elsewhere)
                .unwrap()
                .area,
            "Northshire",
            "the programme's areas are configuration"
        );
    }

    #[test]
    fn staff_read_in_their_areas_and_referrers_in_their_agency() {
        let scope = ReadScope::Staff(Some(vec!["Darlington".to_owned()]));
        assert_eq!(scope.areas(), Some(&["Darlington".to_owned()][..]));
        assert_eq!(scope.agency(), None);

        let admin = ReadScope::Staff(None);
        assert_eq!((admin.areas(), admin.agency()), (None, None));

        let referrer = ReadScope::Agency("durham-police");
        assert_eq!(referrer.agency(), Some("durham-police"));
        assert_eq!(
            referrer.areas(),
            None,
            "an agency's referrals in every area"
        );
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let mut request = valid_request();
        request.idempotency_key.clear();
        request.reason = "   ".into();
        request.client_consented = false;
        request.emergency_calls_last_12_months = -1;
        request.vulnerabilities = vec![0, 999];
        let fields = fields(&request);
        assert_eq!(
            fields,
            [
                "idempotency_key",
                "reason",
                "client_consented",
                "vulnerabilities[0]",
                "vulnerabilities[1]",
                "emergency_calls_last_12_months"
            ]
        );
    }

    #[test]
    fn a_minor_or_unborn_client_is_refused() {
        let mut request = valid_request();
        request.client.as_mut().unwrap().date_of_birth = "2008-11-28".into();
        assert_eq!(fields(&request), ["client.date_of_birth"]);
        request.client.as_mut().unwrap().date_of_birth = "2027-01-01".into();
        assert_eq!(fields(&request), ["client.date_of_birth"]);
        request.client.as_mut().unwrap().date_of_birth = "01/02/1980".into();
        assert_eq!(fields(&request), ["client.date_of_birth"]);
        request.client.as_mut().unwrap().date_of_birth = "2008-11-27".into();
        assert!(
            NewReferral::parse(&mut request, now(), &programme()).is_ok(),
            "18 today is an adult"
        );
    }

    #[test]
    fn missing_client_and_referrer_are_named() {
        let mut request = valid_request();
        request.client = None;
        request.referrer = None;
        let fields = fields(&request);
        assert!(fields.contains(&"client".to_owned()));
        assert!(fields.contains(&"referrer".to_owned()));
        assert!(fields.contains(&"client.gender".to_owned()));
        assert!(fields.contains(&"referrer.role".to_owned()));
    }

    #[test]
    fn oversized_text_and_unknown_enums_are_refused() {
        let mut request = valid_request();
        request.reason = "x".repeat(MAX_TEXT + 1);
        request.client.as_mut().unwrap().gender = 42;
        assert_eq!(fields(&request), ["client.gender", "reason"]);
    }

    #[test]
    fn crime_types_risks_demand_and_professionals_are_checked() {
        use cpm_proto::v1::OtherProfessional;
        let mut request = valid_request();
        request.victim_of = vec![CrimeType::Theft as i32, CrimeType::Other as i32, 77];
        request.perpetrator_of = vec![0];
        request.known_risk_types = vec![KnownRisk::Other as i32];
        request.demand = Some(Demand {
            police_calls: 45,
            ambulance_calls: 3,
            nhs_111_calls: -1,
            other_calls: 0,
            police_staff_hours: f64::NAN,
            safeguarding_reports: 2,
        });
        request.other_professionals = vec![OtherProfessional {
            role: String::new(),
            organisation: "x".repeat(MAX_SHORT_TEXT + 1),
            contact: String::new(),
        }];
        assert_eq!(
            fields(&request),
            [
                "victim_of[2]",
                "perpetrator_of[0]",
                "crime_other",
                "known_risks",
                "demand.nhs_111_calls",
                "demand.police_staff_hours",
                "emergency_calls_last_12_months",
                "other_professionals[0].role",
                "other_professionals[0].organisation",
            ]
        );
    }

    #[test]
    fn a_full_form_parses_and_keeps_its_details() {
        use cpm_proto::v1::OtherProfessional;
        let mut request = valid_request();
        request.victim_of = vec![
            CrimeType::HarassmentOrStalking as i32,
            CrimeType::HarassmentOrStalking as i32,
        ];
        request.perpetrator_of = vec![CrimeType::Other as i32];
        request.crime_other = "fly-tipping".into();
        request.known_risk_types = vec![KnownRisk::DogsOrAnimals as i32];
        request.referrer_will_co_visit = true;
        request.demand = Some(Demand {
            police_calls: 30,
            ambulance_calls: 10,
            nhs_111_calls: 2,
            other_calls: 0,
            police_staff_hours: 61.5,
            safeguarding_reports: 1,
        });
        request.other_professionals = vec![OtherProfessional {
            role: "GP".into(),
            organisation: "Surgery".into(),
            contact: "reception".into(),
        }];
        let parsed = NewReferral::parse(&mut request, now(), &programme()).unwrap();
        assert_eq!(parsed.victim_of, [CrimeType::HarassmentOrStalking]);
        assert!(parsed.referrer_will_co_visit);
        assert_eq!(parsed.details.other_professionals[0].role, "GP");
        assert_eq!(parsed.details.crime_other, "fly-tipping");
    }

    #[test]
    fn too_many_professionals_are_refused() {
        let mut request = valid_request();
        request.other_professionals = vec![
            cpm_proto::v1::OtherProfessional {
                role: "GP".into(),
                ..Default::default()
            };
            MAX_PROFESSIONALS + 1
        ];
        assert_eq!(fields(&request), ["other_professionals"]);
    }

    #[test]
    fn the_identity_key_ignores_case_and_spacing() {
        let a = NewReferral::parse(&mut valid_request(), now(), &programme()).unwrap();
        let mut request = valid_request();
        request.client.as_mut().unwrap().given_name = "  ALEX ".into();
        let b = NewReferral::parse(&mut request, now(), &programme()).unwrap();
        assert_eq!(identity_key(&a.details), identity_key(&b.details));
    }

    #[test]
    fn the_request_hash_ignores_the_key_only() {
        let mut a = SubmitReferralRequest {
            idempotency_key: "one".into(),
            reason: "r".into(),
            ..Default::default()
        };
        let mut b = a.clone();
        b.idempotency_key = "two".into();
        assert_eq!(request_hash(&mut a), request_hash(&mut b));
        assert_eq!(a.idempotency_key, "one", "the key is put back");
        a.reason = "other".into();
        assert_ne!(request_hash(&mut a), request_hash(&mut b));
    }

    #[test]
    fn a_parsed_submission_carries_its_hash_and_leaves_the_request_alone() {
        let mut request = valid_request();
        let parsed = NewReferral::parse(&mut request, now(), &programme()).unwrap();
        assert_eq!(request, valid_request());
        assert_eq!(parsed.request_hash, request_hash(&mut request));
    }

    #[test]
    fn an_agency_needs_a_token_safe_id_a_name_and_a_kind() {
        let bad = NewAgency::parse(&RegisterAgencyRequest {
            agency_id: "Durham Police".into(),
            name: " ".into(),
            kind: 0,
            active: true,
        })
        .unwrap_err();
        assert_eq!(
            bad.fields().collect::<Vec<_>>(),
            ["agency_id", "name", "kind"]
        );
        let agency = NewAgency::parse(&RegisterAgencyRequest {
            agency_id: "durham-police".into(),
            name: " Durham ".into(),
            kind: AgencyKind::Police as i32,
            active: false,
        })
        .unwrap();
        assert_eq!(agency.name, "Durham");
        assert!(!agency.active);
    }

    #[test]
    fn a_referrer_names_every_field() {
        let bad = NewReferrer::parse(&RegisterReferrerRequest {
            agency_id: "x".repeat(65),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            bad.fields().collect::<Vec<_>>(),
            ["agency_id", "subject", "name", "contact", "role"]
        );
        let referrer = NewReferrer::parse(&RegisterReferrerRequest {
            agency_id: "durham-police".into(),
            subject: " pc-1 ".into(),
            name: "PC Example".into(),
            role: ReferrerRole::Frontline as i32,
            contact: "pc@police.example".into(),
        })
        .unwrap();
        assert_eq!(referrer.subject, "pc-1");
        assert_eq!(referrer.role, ReferrerRole::Frontline);
    }

    #[test]
    fn a_privacy_request_must_say_why() {
        let bad = PrivacyRequest::parse("nope", "  ").unwrap_err();
        assert_eq!(bad.fields().collect::<Vec<_>>(), ["referral_id", "reason"]);
        let id = Uuid::now_v7();
        let request = PrivacyRequest::parse(&id.to_string(), "SAR 2026-11").unwrap();
        assert_eq!(request.referral_id, id);
    }

    #[test]
    fn statuses_only_move_forward_and_finals_are_final() {
        use ReferralStatus::*;
        let order = [
            Received,
            UnderAssessment,
            Accepted,
            AwaitingMentors,
            InSupport,
            Discharged,
        ];
        for pair in order.windows(2) {
            assert!(status_rank(pair[0]) < status_rank(pair[1]));
        }
        assert!(status_rank(NotTakenOn) > status_rank(InSupport));
        assert!(can_withdraw(AwaitingMentors));
        assert!(!can_withdraw(InSupport));
        assert!(!can_withdraw(Withdrawn));
    }

    mod properties {
        use super::*;
        use cpm_runtime::grpc::values::is_hidden;
        use proptest::prelude::*;

        /// Text as callers send it: ordinary, blank, too long, or holding
        /// controls and invisible characters.
        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-zA-Z ]{0,20}",
                any::<String>(),
                "[ \\t\\n]{0,4}",
                Just("y".repeat(MAX_TEXT + 1)),
            ]
        }

        fn numbers() -> impl Strategy<Value = Vec<i32>> {
            proptest::collection::vec(prop_oneof![0..20i32, any::<i32>()], 0..48)
        }

        proptest! {
            /// A submission with any of its fields replaced: parsing never
            /// panics, reports at most 50 violations, and what it accepts
            /// holds no hidden character and a registered area, and the
            /// request is put back as it came.
            #[test]
            fn any_submission_parses_or_is_refused_cleanly(
                name in text(),
                area in prop_oneof![
                    text(),
                    Just("darlington ".to_owned()),
                    Just("East Durham".to_owned()),
                ],
                reason in text(),
                date_of_birth in prop_oneof!["[0-9-]{0,12}", any::<String>()],
                gender in any::<i32>(),
                vulnerabilities in numbers(),
                perpetrator_of in numbers(),
                calls in any::<i32>(),
                key in text(),
            ) {
                let mut request = valid_request();
                let client = request.client.as_mut().unwrap();
                client.given_name = name;
                client.area = area;
                client.date_of_birth = date_of_birth;
                client.gender = gender;
                request.reason = reason;
                request.vulnerabilities = vulnerabilities;
                request.perpetrator_of = perpetrator_of;
                request.emergency_calls_last_12_months = calls;
                request.idempotency_key = key;
                let before = request.clone();
                match NewReferral::parse(&mut request, now(), &programme()) {
                    Ok(parsed) => {
                        prop_assert!(!parsed.area.is_empty());
                        prop_assert!(!parsed.area.chars().any(is_hidden));
                        prop_assert_eq!(
                            programme().area(&parsed.area).map(str::to_owned),
                            Some(parsed.area.clone()),
                            "only a registered area, as registered"
                        );
                        prop_assert!(!parsed.details.given_name.chars().any(is_hidden));
                        prop_assert!(!parsed.details.reason.chars().any(is_hidden));
                        prop_assert!(parsed.vulnerabilities.len() <= MAX_LISTED);
                    }
                    Err(violations) => {
                        prop_assert!(!violations.is_empty());
                        prop_assert!(violations.fields().count() <= 50);
                    }
                }
                prop_assert_eq!(request, before, "the request is left as it came");
            }
        }
    }
}
