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
    pub referred_at: DateTime<Utc>,
    pub earlier_referral_id: Option<Uuid>,
    pub referred_to: Option<i32>,
    /// When the first check of any kind was recorded.
    pub first_checked_at: Option<DateTime<Utc>>,
    /// The latest re-assessment's cpm.v1.EngagementAction.
    pub engagement: Option<i32>,
    pub known_risk_types: Vec<i32>,
    pub referrer_will_co_visit: bool,
    pub emergency_calls_last_12_months: i32,
}

const ASSESSMENT_COLUMNS: &str = "assessment_id, referral_id, agency_id, area, vulnerabilities, \
    client_gender, state, opened_at, decision, stage, reason, decided_by, decided_at, rationale, \
    (SELECT count(*) FROM review_request r WHERE r.assessment_id = assessment.assessment_id \
     AND r.resolved_at IS NULL)::integer AS open_reviews, \
    referred_at, earlier_referral_id, referred_to, \
    (SELECT min(c.recorded_at) FROM assessment_check c \
     WHERE c.assessment_id = assessment.assessment_id) AS first_checked_at, \
    (SELECT v.action FROM review v WHERE v.assessment_id = assessment.assessment_id \
     ORDER BY v.reviewed_at DESC, v.review_id DESC LIMIT 1) AS engagement, \
    known_risk_types, referrer_will_co_visit, emergency_calls_last_12_months";

/// One recorded check.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CheckRow {
    pub assessment_id: Uuid,
    pub kind: i32,
    pub satisfied: bool,
    pub notes: String,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
    pub risk_level: Option<i32>,
    pub will_score: Option<i32>,
    pub want_score: Option<i32>,
    pub capacity_score: Option<i32>,
    pub databases: Option<Vec<String>>,
    pub professionals: Option<Vec<String>>,
    pub visit_attended_by: Option<Vec<String>>,
    pub referrer_co_visited: Option<bool>,
    pub phone_contact_first: Option<bool>,
}

const CHECK_COLUMNS: &str = "assessment_id, kind, satisfied, notes, recorded_by, recorded_at, \
    risk_level, will_score, want_score, capacity_score, databases, professionals, \
    visit_attended_by, referrer_co_visited, phone_contact_first";

/// What a new assessment holds.
pub struct NewAssessmentRow<'a> {
    pub assessment_id: Uuid,
    pub referral_id: Uuid,
    pub agency_id: &'a str,
    pub area: &'a str,
    pub vulnerabilities: &'a [i32],
    pub client_gender: i32,
    pub state: i32,
    pub referred_at: DateTime<Utc>,
    pub earlier_referral_id: Option<Uuid>,
    pub known_risk_types: &'a [i32],
    pub referrer_will_co_visit: bool,
    pub emergency_calls_last_12_months: i32,
}

/// Opens an assessment; false when the referral already has one.
pub async fn insert_assessment(
    connection: &mut PgConnection,
    row: &NewAssessmentRow<'_>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO assessment (assessment_id, referral_id, agency_id, area, vulnerabilities, \
         client_gender, state, referred_at, earlier_referral_id, known_risk_types, \
         referrer_will_co_visit, emergency_calls_last_12_months) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT ON CONSTRAINT assessment_referral DO NOTHING",
    )
    .bind(row.assessment_id)
    .bind(row.referral_id)
    .bind(row.agency_id)
    .bind(row.area)
    .bind(row.vulnerabilities)
    .bind(row.client_gender)
    .bind(row.state)
    .bind(row.referred_at)
    .bind(row.earlier_referral_id)
    .bind(row.known_risk_types)
    .bind(row.referrer_will_co_visit)
    .bind(row.emergency_calls_last_12_months)
    .execute(connection)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Moves the referral's assessment from `from_state` to `to_state`.
/// Returns the assessment when it was in `from_state`.
pub async fn close_assessment_of_referral(
    connection: &mut PgConnection,
    referral_id: Uuid,
    from_state: i32,
    to_state: i32,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE assessment SET state = $3, closed_at = now() WHERE referral_id = $1 AND state = $2 \
         RETURNING assessment_id",
    )
    .bind(referral_id)
    .bind(from_state)
    .bind(to_state)
    .fetch_optional(connection)
    .await
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

/// Locks the referral's assessment for a re-assessment.
pub async fn lock_assessment_of_referral(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Option<AssessmentRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ASSESSMENT_COLUMNS} FROM assessment WHERE referral_id = $1 FOR UPDATE"
    )))
    .bind(referral_id)
    .fetch_optional(connection)
    .await
}

/// What a recorded check holds; the details of other kinds stay `None`.
pub struct NewCheckRow<'a> {
    pub assessment_id: Uuid,
    pub kind: i32,
    pub satisfied: bool,
    pub notes: &'a str,
    pub recorded_by: &'a str,
    pub risk_level: Option<i32>,
    /// Will, want and capacity.
    pub scores: Option<(i32, i32, i32)>,
    pub databases: Option<&'a [String]>,
    pub professionals: Option<&'a [String]>,
    pub visit_attended_by: Option<&'a [String]>,
    pub referrer_co_visited: Option<bool>,
    pub phone_contact_first: Option<bool>,
}

/// Adds a check to the assessment's history.
pub async fn insert_check(
    connection: &mut PgConnection,
    row: &NewCheckRow<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO assessment_check (assessment_id, kind, satisfied, notes, recorded_by, \
         risk_level, will_score, want_score, capacity_score, databases, professionals, \
         visit_attended_by, referrer_co_visited, phone_contact_first) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(row.assessment_id)
    .bind(row.kind)
    .bind(row.satisfied)
    .bind(row.notes)
    .bind(row.recorded_by)
    .bind(row.risk_level)
    .bind(row.scores.map(|scores| scores.0))
    .bind(row.scores.map(|scores| scores.1))
    .bind(row.scores.map(|scores| scores.2))
    .bind(row.databases)
    .bind(row.professionals)
    .bind(row.visit_attended_by)
    .bind(row.referrer_co_visited)
    .bind(row.phone_contact_first)
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
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT ON (assessment_id, kind) {CHECK_COLUMNS} \
         FROM assessment_check WHERE assessment_id = ANY($1) \
         ORDER BY assessment_id, kind, recorded_at DESC, assessment_check_id DESC"
    )))
    .bind(assessment_ids)
    .fetch_all(connection)
    .await
}

/// What a coordinator decided.
pub struct DecisionRow<'a> {
    pub decision: i32,
    pub stage: Option<i32>,
    pub reason: Option<i32>,
    pub referred_to: Option<i32>,
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
         decided_at = now(), rationale = $6, state = $7, referred_to = $8 \
         WHERE assessment_id = $1 RETURNING {ASSESSMENT_COLUMNS}"
    )))
    .bind(assessment_id)
    .bind(row.decision)
    .bind(row.stage)
    .bind(row.reason)
    .bind(row.decided_by)
    .bind(row.rationale)
    .bind(row.state)
    .bind(row.referred_to)
    .fetch_one(connection)
    .await
}

/// Asks for a review of the referral's assessment after a contact; returns
/// the assessment, or `None` when the contact already asked or the
/// referral has no assessment.
pub async fn request_review(
    connection: &mut PgConnection,
    referral_id: Uuid,
    contact_id: Uuid,
    trigger: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO review_request (assessment_id, contact_id, trigger) \
         SELECT assessment_id, $2, $3 FROM assessment WHERE referral_id = $1 \
         ON CONFLICT (contact_id) DO NOTHING RETURNING assessment_id",
    )
    .bind(referral_id)
    .bind(contact_id)
    .bind(trigger)
    .fetch_optional(connection)
    .await
}

/// Resolves every open review request of a locked assessment; returns how many.
pub async fn resolve_review_requests(
    connection: &mut PgConnection,
    assessment_id: Uuid,
    resolved_by: &str,
) -> Result<i32, sqlx::Error> {
    let resolved = sqlx::query(
        "UPDATE review_request SET resolved_at = now(), resolved_by = $2 \
         WHERE assessment_id = $1 AND resolved_at IS NULL",
    )
    .bind(assessment_id)
    .bind(resolved_by)
    .execute(connection)
    .await?
    .rows_affected();
    Ok(i32::try_from(resolved).unwrap_or(i32::MAX))
}

/// A re-assessment as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ReviewRow {
    pub assessment_id: Uuid,
    pub action: i32,
    pub stage: Option<i32>,
    pub reason: Option<i32>,
    pub referred_to: Option<i32>,
    pub rationale: String,
    pub reviewed_by: String,
    pub reviewed_at: DateTime<Utc>,
    pub resolved_requests: i32,
}

const REVIEW_COLUMNS: &str = "assessment_id, action, stage, reason, referred_to, rationale, \
    reviewed_by, reviewed_at, resolved_requests";

/// What a re-assessment records.
pub struct NewReviewRow<'a> {
    pub assessment_id: Uuid,
    pub action: i32,
    pub stage: Option<i32>,
    pub reason: Option<i32>,
    pub referred_to: Option<i32>,
    pub rationale: &'a str,
    pub reviewed_by: &'a str,
    pub resolved_requests: i32,
}

/// Records a re-assessment and returns it as stored.
pub async fn insert_review(
    connection: &mut PgConnection,
    row: &NewReviewRow<'_>,
) -> Result<ReviewRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO review (assessment_id, action, stage, reason, referred_to, rationale, \
         reviewed_by, resolved_requests) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         RETURNING {REVIEW_COLUMNS}"
    )))
    .bind(row.assessment_id)
    .bind(row.action)
    .bind(row.stage)
    .bind(row.reason)
    .bind(row.referred_to)
    .bind(row.rationale)
    .bind(row.reviewed_by)
    .bind(row.resolved_requests)
    .fetch_one(connection)
    .await
}

/// The re-assessments of an assessment, oldest first.
pub async fn list_reviews(
    connection: &mut PgConnection,
    assessment_id: Uuid,
) -> Result<Vec<ReviewRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {REVIEW_COLUMNS} FROM review WHERE assessment_id = $1 \
         ORDER BY reviewed_at, review_id"
    )))
    .bind(assessment_id)
    .fetch_all(connection)
    .await
}

/// An earlier assessment of a re-referred client, with how its engagement
/// last changed.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EarlierAssessmentRow {
    pub assessment_id: Uuid,
    pub referral_id: Uuid,
    pub area: String,
    pub state: i32,
    pub opened_at: DateTime<Utc>,
    pub decision: Option<i32>,
    pub stage: Option<i32>,
    pub reason: Option<i32>,
    pub referred_to: Option<i32>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub engagement: Option<i32>,
    pub ended_stage: Option<i32>,
    pub ended_reason: Option<i32>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// Longest chain of re-referrals followed back; it also stops a cycle.
const MAX_HISTORY: i32 = 50;

/// The assessments of the referrals before `earlier_referral_id`, following
/// each one's own earlier referral; newest first.
pub async fn earlier_assessments(
    connection: &mut PgConnection,
    earlier_referral_id: Uuid,
) -> Result<Vec<EarlierAssessmentRow>, sqlx::Error> {
    sqlx::query_as(
        "WITH RECURSIVE chain (referral_id, depth) AS ( \
           SELECT $1::uuid, 1 \
           UNION ALL \
           SELECT a.earlier_referral_id, chain.depth + 1 FROM assessment a \
           JOIN chain ON a.referral_id = chain.referral_id \
           WHERE a.earlier_referral_id IS NOT NULL AND chain.depth < $2) \
         SELECT a.assessment_id, a.referral_id, a.area, a.state, a.opened_at, a.decision, \
           a.stage, a.reason, a.referred_to, a.decided_by, a.decided_at, \
           last_review.action AS engagement, ended.stage AS ended_stage, \
           ended.reason AS ended_reason, ended.reviewed_at AS ended_at \
         FROM chain JOIN assessment a ON a.referral_id = chain.referral_id \
         LEFT JOIN LATERAL (SELECT v.action FROM review v \
           WHERE v.assessment_id = a.assessment_id \
           ORDER BY v.reviewed_at DESC, v.review_id DESC LIMIT 1) AS last_review ON true \
         LEFT JOIN review ended ON ended.assessment_id = a.assessment_id AND ended.stage IS NOT NULL \
         ORDER BY chain.depth",
    )
    .bind(earlier_referral_id)
    .bind(MAX_HISTORY)
    .fetch_all(connection)
    .await
}

/// Who changed an assessment, and how. `detail` holds codes only.
pub struct AuditEntry<'a> {
    pub assessment_id: Uuid,
    pub actor: &'a str,
    pub role: &'a str,
    pub action: &'a str,
    pub detail: &'a str,
}

/// Appends to the audit trail, in the caller's transaction.
pub async fn insert_audit(
    connection: &mut PgConnection,
    entry: &AuditEntry<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO assessment_audit (assessment_id, actor, role, action, detail) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(entry.assessment_id)
    .bind(entry.actor)
    .bind(entry.role)
    .bind(entry.action)
    .bind(entry.detail)
    .execute(connection)
    .await?;
    Ok(())
}

/// The referrals of a period (and an area) as stats count them: each
/// assessment with its first check and, when support ended, the ending.
const STATS_COHORT: &str = "WITH cohort AS ( \
    SELECT a.state, a.decision, a.stage, a.reason, a.referred_to, a.referred_at, a.decided_at, \
      (SELECT min(c.recorded_at) FROM assessment_check c \
       WHERE c.assessment_id = a.assessment_id) AS first_checked_at, \
      ended.stage AS ended_stage, ended.reason AS ended_reason, \
      ended.referred_to AS ended_referred_to \
    FROM assessment a \
    LEFT JOIN review ended ON ended.assessment_id = a.assessment_id AND ended.stage IS NOT NULL \
    WHERE a.referred_at >= $1 AND a.referred_at < $2 AND ($3::text IS NULL OR a.area = $3))";

/// The totals and the time distributions of a period.
#[derive(Clone, Debug, Default, sqlx::FromRow)]
pub struct StatsTotalsRow {
    pub referrals: i64,
    pub still_open: i64,
    pub closed: i64,
    pub accepted: i64,
    pub not_taken_on: i64,
    pub first_checked: i64,
    pub first_check_median_hours: Option<f64>,
    pub first_check_p90_hours: Option<f64>,
    pub decided: i64,
    pub decision_median_hours: Option<f64>,
    pub decision_p90_hours: Option<f64>,
}

/// cpm.v1.AssessmentState and Decision codes the stats compare with.
pub struct StatsCodes {
    pub open: i32,
    pub closed: i32,
    pub accept: i32,
    pub not_taken_on: i32,
}

pub async fn stats_totals(
    connection: &mut PgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    area: Option<&str>,
    codes: &StatsCodes,
) -> Result<StatsTotalsRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{STATS_COHORT} SELECT count(*) AS referrals, \
           count(*) FILTER (WHERE state = $4) AS still_open, \
           count(*) FILTER (WHERE state = $5) AS closed, \
           count(*) FILTER (WHERE decision = $6 AND ended_stage IS NULL) AS accepted, \
           count(*) FILTER (WHERE decision = $7 OR ended_stage IS NOT NULL) AS not_taken_on, \
           count(first_checked_at) AS first_checked, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY \
             (extract(epoch FROM first_checked_at - referred_at) / 3600)::double precision) \
             AS first_check_median_hours, \
           percentile_cont(0.9) WITHIN GROUP (ORDER BY \
             (extract(epoch FROM first_checked_at - referred_at) / 3600)::double precision) \
             AS first_check_p90_hours, \
           count(decided_at) AS decided, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY \
             (extract(epoch FROM decided_at - referred_at) / 3600)::double precision) \
             AS decision_median_hours, \
           percentile_cont(0.9) WITHIN GROUP (ORDER BY \
             (extract(epoch FROM decided_at - referred_at) / 3600)::double precision) \
             AS decision_p90_hours \
         FROM cohort"
    )))
    .bind(from)
    .bind(to)
    .bind(area)
    .bind(codes.open)
    .bind(codes.closed)
    .bind(codes.accept)
    .bind(codes.not_taken_on)
    .fetch_one(connection)
    .await
}

/// One line of the non-engagement breakdown.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OutcomeCountRow {
    pub stage: i32,
    pub reason: i32,
    pub referred_to: i32,
    pub count: i64,
}

/// Non-engagements of a period by stage, reason and (when referred on)
/// where to: a decision not to take the client on, or an ended engagement.
pub async fn stats_outcomes(
    connection: &mut PgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    area: Option<&str>,
    not_taken_on: i32,
) -> Result<Vec<OutcomeCountRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{STATS_COHORT}, outcome AS ( \
           SELECT CASE WHEN ended_stage IS NOT NULL THEN ended_stage ELSE stage END AS stage, \
             CASE WHEN ended_stage IS NOT NULL THEN ended_reason ELSE reason END AS reason, \
             CASE WHEN ended_stage IS NOT NULL THEN ended_referred_to ELSE referred_to END \
               AS referred_to \
           FROM cohort WHERE decision = $4 OR ended_stage IS NOT NULL) \
         SELECT COALESCE(stage, 0) AS stage, COALESCE(reason, 0) AS reason, \
           COALESCE(referred_to, 0) AS referred_to, count(*) AS count \
         FROM outcome GROUP BY 1, 2, 3 ORDER BY count DESC, 1, 2, 3"
    )))
    .bind(from)
    .bind(to)
    .bind(area)
    .bind(not_taken_on)
    .fetch_all(connection)
    .await
}

/// Drops the free text held about an erased client (check notes, decision
/// and review rationales); codes, dates and who decided stay for the record.
/// Returns the rows changed.
pub async fn forget_client_text(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<u64, sqlx::Error> {
    let mut changed = 0;
    for statement in [
        "UPDATE assessment_check SET notes = '' WHERE notes <> '' AND assessment_id IN \
         (SELECT assessment_id FROM assessment WHERE referral_id = $1)",
        "UPDATE assessment SET rationale = NULL WHERE rationale IS NOT NULL AND referral_id = $1",
        "UPDATE review SET rationale = '' WHERE rationale <> '' AND assessment_id IN \
         (SELECT assessment_id FROM assessment WHERE referral_id = $1)",
    ] {
        changed += sqlx::query(statement)
            .bind(referral_id)
            .execute(&mut *connection)
            .await?
            .rows_affected();
    }
    Ok(changed)
}
