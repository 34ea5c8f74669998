//! Action-named queries on the `risk_assessment` schema. State changes lock
//! the assessment row first (`lock_assessment`), so checks and decisions on
//! one assessment happen one at a time.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// An assessment as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AssessmentRow {
    pub assessment_id: Uuid,
    pub referral_id: Uuid,
    pub agency_id: String,
    pub area: String,
    pub vulnerabilities: Vec<i32>,
    pub client_gender: i32,
    pub state: i32,
    pub opened_at: DateTime<Utc>,
    pub decision: Option<i32>,
    pub stage: Option<i32>,
    pub reason: Option<i32>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub rationale: Option<String>,
    pub open_reviews: i32,
}

const ASSESSMENT_COLUMNS: &str = "assessment_id, referral_id, agency_id, area, vulnerabilities, \
    client_gender, state, opened_at, decision, stage, reason, decided_by, decided_at, rationale, \
    (SELECT count(*) FROM review_request r WHERE r.assessment_id = assessment.assessment_id \
     AND r.resolved_at IS NULL)::integer AS open_reviews";

/// One recorded check.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CheckRow {
    pub assessment_id: Uuid,
    pub kind: i32,
    pub satisfied: bool,
    pub notes: String,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
}

/// What a new assessment holds.
pub struct NewAssessmentRow<'a> {
    pub assessment_id: Uuid,
    pub referral_id: Uuid,
    pub agency_id: &'a str,
    pub area: &'a str,
    pub vulnerabilities: &'a [i32],
    pub client_gender: i32,
    pub state: i32,
}

/// Opens an assessment; false when the referral already has one.
pub async fn insert_assessment(
    connection: &mut PgConnection,
    row: &NewAssessmentRow<'_>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO assessment (assessment_id, referral_id, agency_id, area, vulnerabilities, \
         client_gender, state) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT ON CONSTRAINT assessment_referral DO NOTHING",
    )
    .bind(row.assessment_id)
    .bind(row.referral_id)
    .bind(row.agency_id)
    .bind(row.area)
    .bind(row.vulnerabilities)
    .bind(row.client_gender)
    .bind(row.state)
    .execute(connection)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Moves the referral's assessment from `from_state` to `to_state`.
/// Returns whether it was in `from_state`.
pub async fn close_assessment_of_referral(
    connection: &mut PgConnection,
    referral_id: Uuid,
    from_state: i32,
    to_state: i32,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE assessment SET state = $3, closed_at = now() WHERE referral_id = $1 AND state = $2",
    )
    .bind(referral_id)
    .bind(from_state)
    .bind(to_state)
    .execute(connection)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Assessments in `state`, in `area` when given, oldest first.
pub async fn list_assessments_in_state(
    connection: &mut PgConnection,
    state: i32,
    area: Option<&str>,
    limit: i64,
) -> Result<Vec<AssessmentRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ASSESSMENT_COLUMNS} FROM assessment \
         WHERE state = $1 AND ($2::text IS NULL OR area = $2) \
         ORDER BY opened_at, assessment_id LIMIT $3"
    )))
    .bind(state)
    .bind(area)
    .bind(limit)
    .fetch_all(connection)
    .await
}

pub async fn fetch_assessment(
    connection: &mut PgConnection,
    assessment_id: Uuid,
) -> Result<Option<AssessmentRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ASSESSMENT_COLUMNS} FROM assessment WHERE assessment_id = $1"
    )))
    .bind(assessment_id)
    .fetch_optional(connection)
    .await
}

pub async fn fetch_assessment_of_referral(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Option<AssessmentRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ASSESSMENT_COLUMNS} FROM assessment WHERE referral_id = $1"
    )))
    .bind(referral_id)
    .fetch_optional(connection)
    .await
}

/// Locks an assessment for a check or a decision until the transaction ends.
pub async fn lock_assessment(
    connection: &mut PgConnection,
    assessment_id: Uuid,
) -> Result<Option<AssessmentRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ASSESSMENT_COLUMNS} FROM assessment WHERE assessment_id = $1 FOR UPDATE"
    )))
    .bind(assessment_id)
    .fetch_optional(connection)
    .await
}

/// What a recorded check holds.
pub struct NewCheckRow<'a> {
    pub assessment_id: Uuid,
    pub kind: i32,
    pub satisfied: bool,
    pub notes: &'a str,
    pub recorded_by: &'a str,
}

/// Adds a check to the assessment's history.
pub async fn insert_check(
    connection: &mut PgConnection,
    row: &NewCheckRow<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO assessment_check (assessment_id, kind, satisfied, notes, recorded_by) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(row.assessment_id)
    .bind(row.kind)
    .bind(row.satisfied)
    .bind(row.notes)
    .bind(row.recorded_by)
    .execute(connection)
    .await?;
    Ok(())
}

/// The latest check of each kind for each of `assessment_ids`, ordered by
/// assessment and kind.
pub async fn latest_checks(
    connection: &mut PgConnection,
    assessment_ids: &[Uuid],
) -> Result<Vec<CheckRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (assessment_id, kind) \
         assessment_id, kind, satisfied, notes, recorded_by, recorded_at \
         FROM assessment_check WHERE assessment_id = ANY($1) \
         ORDER BY assessment_id, kind, recorded_at DESC, assessment_check_id DESC",
    )
    .bind(assessment_ids)
    .fetch_all(connection)
    .await
}

/// What a coordinator decided.
pub struct DecisionRow<'a> {
    pub decision: i32,
    pub stage: Option<i32>,
    pub reason: Option<i32>,
    pub decided_by: &'a str,
    pub rationale: &'a str,
    pub state: i32,
}

/// Records the decision on a locked assessment and returns it as decided.
pub async fn record_decision(
    connection: &mut PgConnection,
    assessment_id: Uuid,
    row: &DecisionRow<'_>,
) -> Result<AssessmentRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE assessment SET decision = $2, stage = $3, reason = $4, decided_by = $5, \
         decided_at = now(), rationale = $6, state = $7 \
         WHERE assessment_id = $1 RETURNING {ASSESSMENT_COLUMNS}"
    )))
    .bind(assessment_id)
    .bind(row.decision)
    .bind(row.stage)
    .bind(row.reason)
    .bind(row.decided_by)
    .bind(row.rationale)
    .bind(row.state)
    .fetch_one(connection)
    .await
}

/// Asks for a review of the referral's assessment after a contact; false
/// when the contact already asked, or the referral has no assessment.
pub async fn request_review(
    connection: &mut PgConnection,
    referral_id: Uuid,
    contact_id: Uuid,
    trigger: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO review_request (assessment_id, contact_id, trigger) \
         SELECT assessment_id, $2, $3 FROM assessment WHERE referral_id = $1 \
         ON CONFLICT (contact_id) DO NOTHING",
    )
    .bind(referral_id)
    .bind(contact_id)
    .bind(trigger)
    .execute(connection)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}
