//! Any bytes, decoded as any of the requests the validators parse: parsing
//! never panics, and a refusal reports at most 50 violations.
#![no_main]

use chrono::Utc;
use cpm_proto::v1::{
    DecideRequest, LogContactRequest, RecordCheckRequest, RegisterMentorRequest,
    SubmitReferralRequest,
};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fn bounded(violations: cpm_runtime::grpc::FieldViolations) {
    assert!(violations.fields().count() <= cpm_runtime::grpc::errors::MAX_REPORTED);
}

fuzz_target!(|data: &[u8]| {
    let Some((which, bytes)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok(mut request) = SubmitReferralRequest::decode(bytes) {
                let now = Utc::now();
                if let Err(violations) = referral_intake::domain::NewReferral::parse(
                    &mut request,
                    now,
                    &cpm_runtime::config::ProgrammeConfig::default(),
                ) {
                    bounded(violations);
                }
            }
        }
        1 => {
            if let Ok(request) = LogContactRequest::decode(bytes) {
                if let Err(violations) =
                    contact_logging::domain::NewContact::parse(&request, Utc::now())
                {
                    bounded(violations);
                }
            }
        }
        2 => {
            if let Ok(request) = RegisterMentorRequest::decode(bytes) {
                if let Err(violations) = mentor_matching::domain::NewMentor::parse(
                    &request,
                    &cpm_runtime::config::ProgrammeConfig::default(),
                    Utc::now().date_naive(),
                ) {
                    bounded(violations);
                }
            }
        }
        3 => {
            if let Ok(request) = RecordCheckRequest::decode(bytes) {
                if let Err(violations) = risk_assessment::domain::NewCheck::parse(&request) {
                    bounded(violations);
                }
            }
        }
        _ => {
            if let Ok(request) = DecideRequest::decode(bytes) {
                if let Err(violations) = risk_assessment::domain::NewDecision::parse(&request) {
                    bounded(violations);
                }
            }
        }
    }
});
