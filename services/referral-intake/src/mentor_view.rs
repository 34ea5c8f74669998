//! The mentor's minimal record: what DOMAIN calls the measured set of
//! client information — first name, how to contact the client safely, the
//! risks to volunteers the referrer knows of, and the area — read by a
//! mentor allocated to the client while support lasts, and nothing else.
//!
//! Who is allocated comes from the `allocations` consumer
//! ([`crate::events::mentor_allocations`]): a mentor reads a client only
//! while one of their allocations to that referral is active and support
//! has not ended; anything else answers NOT_FOUND, exactly as a missing
//! referral. Every read opens the sealed record through
//! [`ClientVault::open`], which records the mentor's subject, role and
//! [`PURPOSE`] in `personal_data_access` in the read's transaction. After
//! erasure the record opens to nothing, and only the referral ID and
//! `erased` are answered.

use cpm_proto::v1::GetMentorClientRecordRequest;
use cpm_runtime::auth::Caller;
use cpm_runtime::bus::ServiceHandle;
use cpm_runtime::grpc::ApiError;
use cpm_runtime::grpc::values::require_id;
use uuid::Uuid;

use crate::commands::IntakeError;
use crate::db::{self, MentorViewRow};
use crate::domain::SealedDetails;
use crate::privacy::ClientVault;

/// Why a mentor's read is recorded in the personal data access log.
pub const PURPOSE: &str = "GetMentorClientRecord";

/// A mentor's request for one client's minimal record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MentorRecordRequest {
    /// The mentor ID the caller's token names.
    pub mentor_id: String,
    pub referral_id: Uuid,
}

impl MentorRecordRequest {
    /// The request of `caller`, whose token must name a mentor (a mentor
    /// token without one is refused at authentication, so this is a second
    /// wall), for a valid referral ID.
    pub fn parse(
        caller: &Caller,
        request: &GetMentorClientRecordRequest,
    ) -> Result<Self, ApiError> {
        let mentor_id = caller
            .mentor_id
            .as_deref()
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| ApiError::PermissionDenied("the token names no mentor".into()))?;
        let referral_id = require_id("referral_id", &request.referral_id)?;
        Ok(Self {
            mentor_id: mentor_id.to_owned(),
            referral_id,
        })
    }
}

/// The measured set, and only it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MinimalRecord {
    pub referral_id: Uuid,
    /// The given name as the referrer wrote it: referral intake stores the
    /// given and family names apart, so no name is split here.
    pub first_name: String,
    pub safe_contact_instructions: String,
    /// cpm.v1.KnownRisk values.
    pub known_risk_types: Vec<i32>,
    /// The referrer's own words on those risks.
    pub known_risks: String,
    pub area: String,
    pub erased: bool,
}

impl MinimalRecord {
    /// The measured set of a referral the mentor may read, from its row
    /// and its opened details; the rest of the details is dropped here.
    /// Once the client was erased (or the record did not open) it is the
    /// referral ID alone: even categories tied to a known referral say
    /// something about the person.
    pub fn of(row: MentorViewRow, details: Option<SealedDetails>) -> Self {
        match details {
            Some(details) if row.erased_at.is_none() => Self {
                referral_id: row.referral_id,
                first_name: details.given_name,
                safe_contact_instructions: details.safe_contact_instructions,
                known_risk_types: row.known_risk_types,
                known_risks: details.known_risks,
                area: row.area,
                erased: false,
            },
            _ => Self {
                referral_id: row.referral_id,
                erased: true,
                ..Self::default()
            },
        }
    }
}

/// The minimal record of `request.referral_id` for the mentor `caller`,
/// audited; NOT_FOUND unless the mentor is on an active allocation of it
/// and support has not ended.
pub async fn get_mentor_client_record(
    handle: &ServiceHandle,
    vault: &ClientVault,
    caller: &Caller,
    request: &MentorRecordRequest,
) -> Result<MinimalRecord, IntakeError> {
    let mut transaction = handle.begin().await?;
    let row = db::fetch_mentor_view(&mut transaction, request.referral_id, &request.mentor_id)
        .await?
        .ok_or(IntakeError::ReferralNotFound)?;
    let details = vault
        .open(&mut transaction, request.referral_id, caller, PURPOSE)
        .await?;
    transaction.commit().await?;
    Ok(MinimalRecord::of(row, details))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, Utc};
    use cpm_proto::v1::KnownRisk;
    use cpm_runtime::auth::Role;

    fn caller(role: Role, mentor_id: Option<&str>) -> Caller {
        Caller {
            subject: "someone".into(),
            role,
            agency_id: None,
            mentor_id: mentor_id.map(str::to_owned),
            areas: Vec::new(),
        }
    }

    fn request(referral_id: &str) -> GetMentorClientRecordRequest {
        GetMentorClientRecordRequest {
            referral_id: referral_id.into(),
        }
    }

    #[test]
    fn a_mentor_asks_for_one_referral_by_its_id() {
        let referral_id = Uuid::now_v7();
        let parsed = MentorRecordRequest::parse(
            &caller(Role::Mentor, Some("m-1")),
            &request(&referral_id.to_string()),
        )
        .unwrap();
        assert_eq!(
            parsed,
            MentorRecordRequest {
                mentor_id: "m-1".into(),
                referral_id
            }
        );
    }

    #[test]
    fn a_missing_or_malformed_referral_id_is_a_violation_of_that_field() {
        for bad in ["", "  ", "not-a-uuid", "12345"] {
            match MentorRecordRequest::parse(&caller(Role::Mentor, Some("m-1")), &request(bad)) {
                Err(ApiError::InvalidArgument(violations)) => {
                    assert_eq!(violations.fields().collect::<Vec<_>>(), ["referral_id"]);
                }
                other => panic!("{bad:?}: expected a field violation, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_token_naming_no_mentor_is_refused_before_the_request_is_read() {
        for mentor_id in [None, Some(""), Some("  ")] {
            let refused =
                MentorRecordRequest::parse(&caller(Role::Mentor, mentor_id), &request(""));
            assert!(
                matches!(refused, Err(ApiError::PermissionDenied(_))),
                "{mentor_id:?}: {refused:?}"
            );
        }
    }

    fn details() -> SealedDetails {
        SealedDetails {
            given_name: "Robin".into(),
            family_name: "Secret".into(),
            date_of_birth: NaiveDate::from_ymd_opt(1975, 6, 30).unwrap(),
            address: "27 Confidential Road".into(),
            phone: "07700 900123".into(),
            safe_contact_instructions: "text first, never call after 8pm".into(),
            referrer_name: "PCSO Tester".into(),
            referrer_role: 1,
            referrer_contact: "tester@police.example".into(),
            reason: "calls 999 nightly".into(),
            desired_outcomes: "a routine".into(),
            known_risks: "a large dog; shouts at visitors".into(),
            crime_other: "something else".into(),
            vulnerability_other: "another thing".into(),
            other_professionals: Vec::new(),
        }
    }

    fn row(erased: bool) -> MentorViewRow {
        MentorViewRow {
            referral_id: Uuid::now_v7(),
            area: "Darlington".into(),
            known_risk_types: vec![KnownRisk::DogsOrAnimals as i32],
            erased_at: erased.then(Utc::now),
        }
    }

    #[test]
    fn the_record_holds_the_measured_set_and_nothing_else_of_the_details() {
        let row = row(false);
        let referral_id = row.referral_id;
        let record = MinimalRecord::of(row, Some(details()));
        assert_eq!(
            record,
            MinimalRecord {
                referral_id,
                first_name: "Robin".into(),
                safe_contact_instructions: "text first, never call after 8pm".into(),
                known_risk_types: vec![KnownRisk::DogsOrAnimals as i32],
                known_risks: "a large dog; shouts at visitors".into(),
                area: "Darlington".into(),
                erased: false,
            }
        );
        let shown = format!("{record:?}");
        for hidden in [
            "Secret",
            "1975",
            "Confidential",
            "07700",
            "PCSO",
            "999",
            "routine",
        ] {
            assert!(!shown.contains(hidden), "{hidden} leaked: {shown}");
        }
    }

    #[test]
    fn an_erased_client_is_the_referral_id_alone() {
        for (row, details) in [
            (row(true), Some(details())),
            (row(true), None),
            (row(false), None),
        ] {
            let referral_id = row.referral_id;
            assert_eq!(
                MinimalRecord::of(row, details),
                MinimalRecord {
                    referral_id,
                    erased: true,
                    ..MinimalRecord::default()
                }
            );
        }
    }
}
