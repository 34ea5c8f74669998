//! A submission parsed at the edge: handlers never see a raw protobuf
//! request. Every violation is collected so the agency fixes all at once.

use chrono::{Datelike as _, NaiveDate};
use cpm_proto::v1::{
    ClientIdentity, Gender, ReferralStatus, ReferrerRole, SubmitReferralRequest, Vulnerability,
};
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::{check_text, parse_enum};
use serde::{Deserialize, Serialize};

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
}

/// A valid submission.
#[derive(Clone, Debug)]
pub struct NewReferral {
    pub idempotency_key: String,
    pub area: String,
    pub gender: Gender,
    pub vulnerabilities: Vec<Vulnerability>,
    pub emergency_calls_last_12_months: i32,
    pub details: SealedDetails,
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

impl NewReferral {
    /// Parses a request as of `today`, or every reason it is refused.
    pub fn parse(
        request: &SubmitReferralRequest,
        today: NaiveDate,
    ) -> Result<Self, FieldViolations> {
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
        check_text(
            "client.area",
            &client.area,
            true,
            MAX_SHORT_TEXT,
            &mut violations,
        );
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
        let mut vulnerabilities = Vec::new();
        for (index, value) in request.vulnerabilities.iter().enumerate() {
            let field = format!("vulnerabilities[{index}]");
            if let Some(vulnerability) =
                parse_enum::<Vulnerability>(&field, *value, &mut violations)
                && !vulnerabilities.contains(&vulnerability)
            {
                vulnerabilities.push(vulnerability);
            }
        }
        if request.emergency_calls_last_12_months < 0 {
            violations.add("emergency_calls_last_12_months", "must not be negative");
        } else if request.emergency_calls_last_12_months > 100_000 {
            violations.add("emergency_calls_last_12_months", "is implausibly high");
        }

        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            idempotency_key: key.to_owned(),
            area: client.area.trim().to_owned(),
            gender: gender.expect("validated"),
            vulnerabilities,
            emergency_calls_last_12_months: request.emergency_calls_last_12_months,
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
            },
        })
    }
}

/// How far along the journey a status is. A projection only moves to a
/// higher rank, so events arriving out of order never move a status back;
/// final statuses share the top rank.
pub fn status_rank(status: ReferralStatus) -> i32 {
    match status {
        ReferralStatus::Unspecified => -1,
        ReferralStatus::Received => 0,
        ReferralStatus::UnderAssessment => 1,
        ReferralStatus::Accepted => 2,
        ReferralStatus::AwaitingMentors => 3,
        ReferralStatus::InSupport => 4,
        ReferralStatus::Discharged | ReferralStatus::NotTakenOn | ReferralStatus::Withdrawn => 10,
    }
}

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
        }
    }

    fn fields(request: &SubmitReferralRequest) -> Vec<String> {
        NewReferral::parse(request, today())
            .unwrap_err()
            .fields()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_complete_request_parses() {
        let parsed = NewReferral::parse(&valid_request(), today()).unwrap();
        assert_eq!(parsed.area, "Darlington");
        assert_eq!(parsed.details.date_of_birth.to_string(), "1980-05-17");
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
            NewReferral::parse(&request, today()).is_ok(),
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
    fn the_identity_key_ignores_case_and_spacing() {
        let a = NewReferral::parse(&valid_request(), today()).unwrap();
        let mut request = valid_request();
        request.client.as_mut().unwrap().given_name = "  ALEX ".into();
        let b = NewReferral::parse(&request, today()).unwrap();
        assert_eq!(identity_key(&a.details), identity_key(&b.details));
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
}
