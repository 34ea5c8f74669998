//! The free text risk assessment holds about a client, sealed under that
//! client's key ([`cpm_runtime::client_keys`]): a check's notes, databases
//! searched, professionals consulted and staff who visited (one JSON
//! document per check), and the rationales of decisions and reviews.
//! `client.erased` shreds the key, so none of it opens again, and nothing
//! new is sealed for that client ([`AssessmentError::ClientErased`]).
//!
//! Commands seal before they write and open what they read, so the rows
//! that reach `grpc.rs` carry plaintext. Rows from before the sealed
//! columns (migration 0104) still hold their text in the plaintext
//! columns and are shown from them; erasure blanks those.

use cpm_runtime::client_keys::{ClientKeys, Reading, SealError};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::commands::AssessmentError;
use crate::db::{AssessmentRow, CheckRow, ReviewRow};
use crate::domain::NewCheck;

/// The free text of one check, as its sealed JSON document holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckText {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub notes: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub professionals: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub visit_attended_by: Vec<String>,
}

impl CheckText {
    /// The free text of a check to be recorded.
    pub fn of(check: &NewCheck) -> Self {
        Self {
            notes: check.notes.clone(),
            databases: check.databases.clone(),
            professionals: check.professionals.clone(),
            visit_attended_by: check
                .home_visit
                .as_ref()
                .map(|visit| visit.attended_by.clone())
                .unwrap_or_default(),
        }
    }

    /// No text at all: nothing to seal (and no key needed).
    pub fn is_empty(&self) -> bool {
        self.notes.is_empty()
            && self.databases.is_empty()
            && self.professionals.is_empty()
            && self.visit_attended_by.is_empty()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("strings and lists of strings serialise")
    }

    pub fn from_json(document: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(document)
    }

    /// Puts the text into `row` where its plaintext columns would show it:
    /// an empty list as none, as a check of another kind stores it.
    pub fn fill(self, row: &mut CheckRow) {
        fn listed(entries: Vec<String>) -> Option<Vec<String>> {
            (!entries.is_empty()).then_some(entries)
        }
        row.notes = self.notes;
        row.databases = listed(self.databases);
        row.professionals = listed(self.professionals);
        row.visit_attended_by = listed(self.visit_attended_by);
    }
}

/// Why text could not be sealed or opened, as a use case's error: an
/// erased client is a precondition that no longer holds; the database
/// keeps its own mapping; a record that does not open is internal.
impl From<SealError> for AssessmentError {
    fn from(error: SealError) -> Self {
        match error {
            SealError::Erased => AssessmentError::ClientErased,
            SealError::Database(error) => AssessmentError::Database(error),
            SealError::Crypto(error) => AssessmentError::Internal(error.into()),
        }
    }
}

/// A check's free text sealed under the client's key; `None` when it has
/// none. Fails with [`AssessmentError::ClientErased`] when there is text
/// and the client was erased.
pub async fn seal_check(
    keys: &ClientKeys,
    connection: &mut PgConnection,
    referral_id: Uuid,
    text: &CheckText,
) -> Result<Option<Vec<u8>>, AssessmentError> {
    if text.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        keys.seal(connection, referral_id, &text.to_json()).await?,
    ))
}

/// A rationale sealed under the client's key; `None` when it is empty.
/// Fails with [`AssessmentError::ClientErased`] when there is text and the
/// client was erased.
pub async fn seal_rationale(
    keys: &ClientKeys,
    connection: &mut PgConnection,
    referral_id: Uuid,
    rationale: &str,
) -> Result<Option<Vec<u8>>, AssessmentError> {
    Ok(keys.seal_text(connection, referral_id, rationale).await?)
}

/// Opens the decision's rationale into `row.rationale`; none once erased.
pub async fn open_assessment(
    reading: &mut Reading<'_>,
    connection: &mut PgConnection,
    row: &mut AssessmentRow,
) -> Result<(), AssessmentError> {
    if let Some(sealed) = row.rationale_sealed.take() {
        let rationale = reading
            .open_text(connection, row.referral_id, Some(&sealed))
            .await?;
        row.rationale = (!rationale.is_empty()).then_some(rationale);
    }
    Ok(())
}

/// [`open_assessment`] for each of `rows`.
pub async fn open_assessments(
    reading: &mut Reading<'_>,
    connection: &mut PgConnection,
    rows: &mut [AssessmentRow],
) -> Result<(), AssessmentError> {
    for row in rows {
        open_assessment(reading, connection, row).await?;
    }
    Ok(())
}

/// Opens each check's free text into its plaintext fields; a check of an
/// erased client keeps them empty.
pub async fn open_checks(
    reading: &mut Reading<'_>,
    connection: &mut PgConnection,
    rows: &mut [CheckRow],
) -> Result<(), AssessmentError> {
    for row in rows {
        let Some(sealed) = row.sealed_text.take() else {
            continue;
        };
        let Some(document) = reading.open(connection, row.referral_id, &sealed).await? else {
            continue;
        };
        CheckText::from_json(&document)
            .map_err(|error| {
                AssessmentError::Internal(anyhow::anyhow!("a check's sealed text: {error}"))
            })?
            .fill(row);
    }
    Ok(())
}

/// Opens each review's rationale; a review of an erased client keeps it empty.
pub async fn open_reviews(
    reading: &mut Reading<'_>,
    connection: &mut PgConnection,
    referral_id: Uuid,
    rows: &mut [ReviewRow],
) -> Result<(), AssessmentError> {
    for row in rows {
        if let Some(sealed) = row.rationale_sealed.take() {
            row.rationale = reading
                .open_text(connection, referral_id, Some(&sealed))
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::HomeVisitDetails;
    use cpm_proto::v1::CheckKind;
    use tonic::Code;

    fn check() -> NewCheck {
        NewCheck {
            assessment_id: Uuid::now_v7(),
            kind: CheckKind::HomeVisit,
            satisfied: true,
            notes: String::new(),
            risk_level: None,
            scores: None,
            databases: Vec::new(),
            professionals: Vec::new(),
            home_visit: None,
        }
    }

    fn row() -> CheckRow {
        CheckRow {
            referral_id: Uuid::now_v7(),
            referrer_co_visited: Some(true),
            phone_contact_first: Some(false),
            ..crate::db::check_row(Uuid::now_v7(), CheckKind::HomeVisit as i32, true)
        }
    }

    #[test]
    fn a_check_without_text_has_nothing_to_seal() {
        assert!(CheckText::of(&check()).is_empty());
        let visited = NewCheck {
            home_visit: Some(HomeVisitDetails {
                attended_by: vec!["coordinator a".into()],
                referrer_co_visited: true,
                phone_contact_first: false,
            }),
            ..check()
        };
        assert!(!CheckText::of(&visited).is_empty());
        let noted = NewCheck {
            notes: "lives alone".into(),
            ..check()
        };
        assert!(!CheckText::of(&noted).is_empty());
    }

    #[test]
    fn the_document_round_trips_and_fills_the_row_as_the_columns_did() {
        let text = CheckText {
            notes: "volatile when drinking".into(),
            databases: vec!["police national computer".into()],
            professionals: Vec::new(),
            visit_attended_by: vec!["coordinator a".into(), "coordinator b".into()],
        };
        let document = text.to_json();
        let json = String::from_utf8(document.clone()).unwrap();
        assert!(!json.contains("professionals"), "{json}");
        assert_eq!(CheckText::from_json(&document).unwrap(), text);
        let mut row = row();
        text.fill(&mut row);
        assert_eq!(row.notes, "volatile when drinking");
        assert_eq!(row.databases.as_deref().map(<[String]>::len), Some(1));
        assert_eq!(row.professionals, None, "an empty list is none");
        assert_eq!(row.visit_attended_by.map(|staff| staff.len()), Some(2));
        // A document missing a field reads it as empty.
        assert_eq!(
            CheckText::from_json(br#"{"notes":"n"}"#).unwrap(),
            CheckText {
                notes: "n".into(),
                ..CheckText::default()
            }
        );
    }

    #[test]
    fn an_erased_client_is_a_failed_precondition_with_the_runtime_s_message() {
        let error = AssessmentError::from(SealError::Erased);
        assert!(matches!(error, AssessmentError::ClientErased));
        let status = tonic::Status::from(error);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), SealError::Erased.to_string());
    }

    #[test]
    fn database_and_crypto_failures_keep_their_own_mapping() {
        let database = AssessmentError::from(SealError::Database(sqlx::Error::PoolTimedOut));
        assert!(matches!(database, AssessmentError::Database(_)));
        assert_eq!(tonic::Status::from(database).code(), Code::Unavailable);
        let crypto = SealError::Crypto(cpm_runtime::crypto::CryptoError::Decrypt);
        let error = AssessmentError::from(crypto);
        assert!(matches!(error, AssessmentError::Internal(_)));
        let status = tonic::Status::from(error);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("decrypt"), "{status:?}");
    }
}
