//! Action-named queries on the `risk_assessment` schema. State changes lock
//! the assessment row first (`lock_assessment`), so checks and decisions on
//! one assessment happen one at a time. An assessment's area never changes
//! after it opens; lists and counts take the areas they cover as
//! `Option<&[String]>`, `None` for every area.

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
    /// The decision's rationale: legacy plaintext as stored, or what
    /// [`crate::sealed`] opened from `rationale_sealed`.
    pub rationale: Option<String>,
    /// The rationale sealed under the client's key (rows since 0104).
    pub rationale_sealed: Option<Vec<u8>>,
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
    /// cpm.v1.CrimeType values, for matching.
    pub victim_of: Vec<i32>,
    pub perpetrator_of: Vec<i32>,
}

/// `query_as!` into [`AssessmentRow`]: `$before` (string literal), the
/// row's columns of the `assessment` row in scope, then `$after`.
macro_rules! assessments {
    ($before:literal, $after:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            AssessmentRow,
            $before
                + " assessment_id, referral_id, agency_id, area, vulnerabilities, \
                client_gender, state, opened_at, decision, stage, reason, decided_by, decided_at, \
                rationale, rationale_sealed, \
                (SELECT count(*) FROM risk_assessment.review_request r \
                 WHERE r.assessment_id = assessment.assessment_id \
                 AND r.resolved_at IS NULL)::integer AS \"open_reviews!\", \
                referred_at, earlier_referral_id, referred_to, \
                (SELECT min(c.recorded_at) FROM risk_assessment.assessment_check c \
                 WHERE c.assessment_id = assessment.assessment_id) AS first_checked_at, \
                (SELECT v.action FROM risk_assessment.review v \
                 WHERE v.assessment_id = assessment.assessment_id \
                 ORDER BY v.reviewed_at DESC, v.review_id DESC LIMIT 1) AS engagement, \
                known_risk_types, referrer_will_co_visit, emergency_calls_last_12_months, \
                victim_of, perpetrator_of "
                + $after
            $(, $arg)*
        )
    };
}

/// One recorded check. Its free text (notes, databases, professionals,
/// staff who visited) is legacy plaintext as stored, or what
/// [`crate::sealed`] opened from `sealed_text`.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CheckRow {
    pub assessment_id: Uuid,
    /// The assessment's referral: whose key seals the text.
    pub referral_id: Uuid,
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
    /// The free text as one sealed JSON document (rows since 0104).
    pub sealed_text: Option<Vec<u8>>,
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
    pub referred_at: DateTime<Utc>,
    pub earlier_referral_id: Option<Uuid>,
    pub known_risk_types: &'a [i32],
    pub referrer_will_co_visit: bool,
    pub emergency_calls_last_12_months: i32,
    pub victim_of: &'a [i32],
    pub perpetrator_of: &'a [i32],
}

/// Opens an assessment; false when the referral already has one.
pub async fn insert_assessment(
    connection: &mut PgConnection,
    row: &NewAssessmentRow<'_>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!(
        "INSERT INTO risk_assessment.assessment (assessment_id, referral_id, agency_id, area, \
         vulnerabilities, client_gender, state, referred_at, earlier_referral_id, \
         known_risk_types, referrer_will_co_visit, emergency_calls_last_12_months, \
         victim_of, perpetrator_of) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT ON CONSTRAINT assessment_referral DO NOTHING",
        row.assessment_id,
        row.referral_id,
        row.agency_id,
        row.area,
        row.vulnerabilities,
        row.client_gender,
        row.state,
        row.referred_at,
        row.earlier_referral_id,
        row.known_risk_types,
        row.referrer_will_co_visit,
        row.emergency_calls_last_12_months,
        row.victim_of,
        row.perpetrator_of,
    )
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
    sqlx::query_scalar!(
        "UPDATE risk_assessment.assessment SET state = $3, closed_at = now() \
         WHERE referral_id = $1 AND state = $2 \
         RETURNING assessment_id",
        referral_id,
        from_state,
        to_state
    )
    .fetch_optional(connection)
    .await
}

/// Assessments in `state`, in one of `areas` unless `None`, oldest first.
pub async fn list_assessments_in_state(
    connection: &mut PgConnection,
    state: i32,
    areas: Option<&[String]>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<AssessmentRow>, sqlx::Error> {
    assessments!(
        "SELECT",
        "FROM risk_assessment.assessment \
         WHERE state = $1 AND ($2::text[] IS NULL OR area = ANY($2)) \
         AND ($3::timestamptz IS NULL OR (opened_at, assessment_id) > ($3, $4)) \
         ORDER BY opened_at, assessment_id LIMIT $5",
        state,
        areas,
        after.map(|(at, _)| at),
        after.map(|(_, id)| id),
        limit
    )
    .fetch_all(connection)
    .await
}

pub async fn fetch_assessment(
    connection: &mut PgConnection,
    assessment_id: Uuid,
) -> Result<Option<AssessmentRow>, sqlx::Error> {
    assessments!(
        "SELECT",
        "FROM risk_assessment.assessment WHERE assessment_id = $1",
        assessment_id
    )
    .fetch_optional(connection)
    .await
}

pub async fn fetch_assessment_of_referral(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Option<AssessmentRow>, sqlx::Error> {
    assessments!(
        "SELECT",
        "FROM risk_assessment.assessment WHERE referral_id = $1",
        referral_id
    )
    .fetch_optional(connection)
    .await
}

/// Whose an assessment is and where: neither ever changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub referral_id: Uuid,
    pub area: String,
}

/// The referral an assessment belongs to and its area, read without a lock.
pub async fn placement_of_assessment(
    connection: &mut PgConnection,
    assessment_id: Uuid,
) -> Result<Option<Placement>, sqlx::Error> {
    sqlx::query_as!(
        Placement,
        "SELECT referral_id, area FROM risk_assessment.assessment WHERE assessment_id = $1",
        assessment_id
    )
    .fetch_optional(connection)
    .await
}

/// The area of the referral's assessment, read without a lock.
pub async fn area_of_referral(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT area FROM risk_assessment.assessment WHERE referral_id = $1",
        referral_id
    )
    .fetch_optional(connection)
    .await
}

/// Locks an assessment for a check or a decision until the transaction ends.
pub async fn lock_assessment(
    connection: &mut PgConnection,
    assessment_id: Uuid,
) -> Result<Option<AssessmentRow>, sqlx::Error> {
    assessments!(
        "SELECT",
        "FROM risk_assessment.assessment WHERE assessment_id = $1 FOR UPDATE",
        assessment_id
    )
    .fetch_optional(connection)
    .await
}

/// Locks the referral's assessment for a re-assessment.
pub async fn lock_assessment_of_referral(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Option<AssessmentRow>, sqlx::Error> {
    assessments!(
        "SELECT",
        "FROM risk_assessment.assessment WHERE referral_id = $1 FOR UPDATE",
        referral_id
    )
    .fetch_optional(connection)
    .await
}

/// What a recorded check holds; the details of other kinds stay `None`.
/// Its free text is only in `sealed_text`: the plaintext columns of a new
/// check stay empty.
pub struct NewCheckRow<'a> {
    pub assessment_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    pub kind: i32,
    pub satisfied: bool,
    pub recorded_by: &'a str,
    pub risk_level: Option<i32>,
    /// Will, want and capacity.
    pub scores: Option<(i32, i32, i32)>,
    pub referrer_co_visited: Option<bool>,
    pub phone_contact_first: Option<bool>,
    /// Notes, databases, professionals and the staff who visited, sealed
    /// under the client's key; `None` when the check has none.
    pub sealed_text: Option<&'a [u8]>,
}

/// Adds a check to the assessment's history.
pub async fn insert_check(
    connection: &mut PgConnection,
    row: &NewCheckRow<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO risk_assessment.assessment_check (assessment_id, kind, satisfied, notes, \
         recorded_by, risk_level, will_score, want_score, capacity_score, databases, \
         professionals, visit_attended_by, referrer_co_visited, phone_contact_first, \
         sealed_text, recorded_at) \
         VALUES ($1, $2, $3, '', $4, $5, $6, $7, $8, NULL, NULL, NULL, $9, $10, $11, $12)",
        row.assessment_id,
        row.kind,
        row.satisfied,
        row.recorded_by,
        row.risk_level,
        row.scores.map(|scores| scores.0),
        row.scores.map(|scores| scores.1),
        row.scores.map(|scores| scores.2),
        row.referrer_co_visited,
        row.phone_contact_first,
        row.sealed_text,
        row.recorded_at,
    )
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
    sqlx::query_as!(
        CheckRow,
        "SELECT DISTINCT ON (c.assessment_id, c.kind) c.assessment_id, a.referral_id, c.kind, \
           c.satisfied, c.notes, c.recorded_by, c.recorded_at, c.risk_level, c.will_score, \
           c.want_score, c.capacity_score, c.databases, c.professionals, c.visit_attended_by, \
           c.referrer_co_visited, c.phone_contact_first, c.sealed_text \
         FROM risk_assessment.assessment_check c \
         JOIN risk_assessment.assessment a ON a.assessment_id = c.assessment_id \
         WHERE c.assessment_id = ANY($1) \
         ORDER BY c.assessment_id, c.kind, c.recorded_at DESC, c.assessment_check_id DESC",
        assessment_ids
    )
    .fetch_all(connection)
    .await
}

/// What a coordinator decided.
pub struct DecisionRow<'a> {
    pub decision: i32,
    pub decided_at: DateTime<Utc>,
    pub stage: Option<i32>,
    pub reason: Option<i32>,
    pub referred_to: Option<i32>,
    pub decided_by: &'a str,
    /// The rationale sealed under the client's key; `None` when there is
    /// none. The plaintext column is left NULL.
    pub rationale_sealed: Option<&'a [u8]>,
    pub state: i32,
}

/// Records the decision on a locked assessment and returns it as decided.
pub async fn record_decision(
    connection: &mut PgConnection,
    assessment_id: Uuid,
    row: &DecisionRow<'_>,
) -> Result<AssessmentRow, sqlx::Error> {
    assessments!(
        "UPDATE risk_assessment.assessment SET decision = $2, stage = $3, reason = $4, \
         decided_by = $5, decided_at = $9, rationale = NULL, rationale_sealed = $6, \
         state = $7, referred_to = $8 \
         WHERE assessment_id = $1 RETURNING",
        "",
        assessment_id,
        row.decision,
        row.stage,
        row.reason,
        row.decided_by,
        row.rationale_sealed,
        row.state,
        row.referred_to,
        row.decided_at,
    )
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
    sqlx::query_scalar!(
        "INSERT INTO risk_assessment.review_request (assessment_id, contact_id, trigger) \
         SELECT assessment_id, $2, $3 FROM risk_assessment.assessment WHERE referral_id = $1 \
         ON CONFLICT (contact_id) DO NOTHING RETURNING assessment_id",
        referral_id,
        contact_id,
        trigger
    )
    .fetch_optional(connection)
    .await
}

/// Resolves every open review request of a locked assessment; returns how many.
pub async fn resolve_review_requests(
    connection: &mut PgConnection,
    assessment_id: Uuid,
    resolved_by: &str,
) -> Result<i32, sqlx::Error> {
    let resolved = sqlx::query!(
        "UPDATE risk_assessment.review_request SET resolved_at = now(), resolved_by = $2 \
         WHERE assessment_id = $1 AND resolved_at IS NULL",
        assessment_id,
        resolved_by
    )
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
    /// Legacy plaintext as stored, or what [`crate::sealed`] opened from
    /// `rationale_sealed`.
    pub rationale: String,
    pub reviewed_by: String,
    pub reviewed_at: DateTime<Utc>,
    pub resolved_requests: i32,
    /// The rationale sealed under the client's key (rows since 0104).
    pub rationale_sealed: Option<Vec<u8>>,
}

/// What a re-assessment records.
pub struct NewReviewRow<'a> {
    pub assessment_id: Uuid,
    pub action: i32,
    pub stage: Option<i32>,
    pub reason: Option<i32>,
    pub referred_to: Option<i32>,
    /// The rationale sealed under the client's key; `None` when there is
    /// none. The plaintext column is left empty.
    pub rationale_sealed: Option<&'a [u8]>,
    pub reviewed_by: &'a str,
    pub reviewed_at: DateTime<Utc>,
    pub resolved_requests: i32,
}

/// Records a re-assessment and returns it as stored.
pub async fn insert_review(
    connection: &mut PgConnection,
    row: &NewReviewRow<'_>,
) -> Result<ReviewRow, sqlx::Error> {
    sqlx::query_as!(
        ReviewRow,
        "INSERT INTO risk_assessment.review (assessment_id, action, stage, reason, referred_to, \
         rationale, rationale_sealed, reviewed_by, resolved_requests, reviewed_at) \
         VALUES ($1, $2, $3, $4, $5, '', $6, $7, $8, $9) \
         RETURNING assessment_id, action, stage, reason, referred_to, rationale, \
         reviewed_by, reviewed_at, resolved_requests, rationale_sealed",
        row.assessment_id,
        row.action,
        row.stage,
        row.reason,
        row.referred_to,
        row.rationale_sealed,
        row.reviewed_by,
        row.resolved_requests,
        row.reviewed_at,
    )
    .fetch_one(connection)
    .await
}

/// The re-assessments of an assessment, oldest first.
pub async fn list_reviews(
    connection: &mut PgConnection,
    assessment_id: Uuid,
) -> Result<Vec<ReviewRow>, sqlx::Error> {
    sqlx::query_as!(
        ReviewRow,
        "SELECT assessment_id, action, stage, reason, referred_to, rationale, \
         reviewed_by, reviewed_at, resolved_requests, rationale_sealed \
         FROM risk_assessment.review WHERE assessment_id = $1 \
         ORDER BY reviewed_at, review_id",
        assessment_id
    )
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
    // `?`: the LEFT JOINs' columns are NULL without a review, which sqlx's
    // inference misses for some of them (an Option field compiles anyway).
    sqlx::query_as!(
        EarlierAssessmentRow,
        "WITH RECURSIVE chain (referral_id, depth) AS ( \
           SELECT $1::uuid, 1 \
           UNION ALL \
           SELECT a.earlier_referral_id, chain.depth + 1 FROM risk_assessment.assessment a \
           JOIN chain ON a.referral_id = chain.referral_id \
           WHERE a.earlier_referral_id IS NOT NULL AND chain.depth < $2) \
         SELECT a.assessment_id, a.referral_id, a.area, a.state, a.opened_at, a.decision, \
           a.stage, a.reason, a.referred_to, a.decided_by, a.decided_at, \
           last_review.action AS \"engagement?\", ended.stage AS \"ended_stage?\", \
           ended.reason AS \"ended_reason?\", ended.reviewed_at AS \"ended_at?\" \
         FROM chain JOIN risk_assessment.assessment a ON a.referral_id = chain.referral_id \
         LEFT JOIN LATERAL (SELECT v.action FROM risk_assessment.review v \
           WHERE v.assessment_id = a.assessment_id \
           ORDER BY v.reviewed_at DESC, v.review_id DESC LIMIT 1) AS last_review ON true \
         LEFT JOIN risk_assessment.review ended \
           ON ended.assessment_id = a.assessment_id AND ended.stage IS NOT NULL \
         ORDER BY chain.depth",
        earlier_referral_id,
        MAX_HISTORY
    )
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
    sqlx::query!(
        "INSERT INTO risk_assessment.assessment_audit (assessment_id, actor, role, action, detail) \
         VALUES ($1, $2, $3, $4, $5)",
        entry.assessment_id,
        entry.actor,
        entry.role,
        entry.action,
        entry.detail
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// `query_as!` into `$record` over `cohort`, the referrals of a period
/// (from `$1` to `$2`, in the areas `$3` when not NULL) as stats count them: each
/// assessment with its first check and, when support ended, the ending.
/// `$rest` (a string literal) follows the CTE.
macro_rules! stats_of_cohort {
    ($record:path, $rest:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $record,
            "WITH cohort AS ( \
               SELECT a.state, a.decision, a.stage, a.reason, a.referred_to, a.referred_at, \
                 a.decided_at, \
                 (SELECT min(c.recorded_at) FROM risk_assessment.assessment_check c \
                  WHERE c.assessment_id = a.assessment_id) AS first_checked_at, \
                 ended.stage AS ended_stage, ended.reason AS ended_reason, \
                 ended.referred_to AS ended_referred_to \
               FROM risk_assessment.assessment a \
               LEFT JOIN risk_assessment.review ended \
                 ON ended.assessment_id = a.assessment_id AND ended.stage IS NOT NULL \
               WHERE a.referred_at >= $1 AND a.referred_at < $2 \
                 AND ($3::text[] IS NULL OR a.area = ANY($3)))"
                + $rest
            $(, $arg)*
        )
    };
}

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
    areas: Option<&[String]>,
    codes: &StatsCodes,
) -> Result<StatsTotalsRow, sqlx::Error> {
    stats_of_cohort!(
        StatsTotalsRow,
        " SELECT count(*) AS \"referrals!\", \
           count(*) FILTER (WHERE state = $4) AS \"still_open!\", \
           count(*) FILTER (WHERE state = $5) AS \"closed!\", \
           count(*) FILTER (WHERE decision = $6 AND ended_stage IS NULL) AS \"accepted!\", \
           count(*) FILTER (WHERE decision = $7 OR ended_stage IS NOT NULL) \
             AS \"not_taken_on!\", \
           count(first_checked_at) AS \"first_checked!\", \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY \
             (extract(epoch FROM first_checked_at - referred_at) / 3600)::double precision) \
             AS first_check_median_hours, \
           percentile_cont(0.9) WITHIN GROUP (ORDER BY \
             (extract(epoch FROM first_checked_at - referred_at) / 3600)::double precision) \
             AS first_check_p90_hours, \
           count(decided_at) AS \"decided!\", \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY \
             (extract(epoch FROM decided_at - referred_at) / 3600)::double precision) \
             AS decision_median_hours, \
           percentile_cont(0.9) WITHIN GROUP (ORDER BY \
             (extract(epoch FROM decided_at - referred_at) / 3600)::double precision) \
             AS decision_p90_hours \
         FROM cohort",
        from,
        to,
        areas,
        codes.open,
        codes.closed,
        codes.accept,
        codes.not_taken_on,
    )
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
    areas: Option<&[String]>,
    not_taken_on: i32,
) -> Result<Vec<OutcomeCountRow>, sqlx::Error> {
    stats_of_cohort!(
        OutcomeCountRow,
        ", outcome AS ( \
           SELECT CASE WHEN ended_stage IS NOT NULL THEN ended_stage ELSE stage END AS stage, \
             CASE WHEN ended_stage IS NOT NULL THEN ended_reason ELSE reason END AS reason, \
             CASE WHEN ended_stage IS NOT NULL THEN ended_referred_to ELSE referred_to END \
               AS referred_to \
           FROM cohort WHERE decision = $4 OR ended_stage IS NOT NULL) \
         SELECT COALESCE(stage, 0) AS \"stage!\", COALESCE(reason, 0) AS \"reason!\", \
           COALESCE(referred_to, 0) AS \"referred_to!\", count(*) AS \"count!\" \
         FROM outcome GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3",
        from,
        to,
        areas,
        not_taken_on,
    )
    .fetch_all(connection)
    .await
}

/// Drops the free text held about an erased client: the sealed copies
/// (their key is already shredded, so this only leaves nothing to attack)
/// and the plaintext of rows from before 0104 (check notes, databases,
/// professionals and staff who visited; decision and review rationales).
/// Codes, dates and who decided stay for the record. Returns the rows
/// changed.
pub async fn forget_client_text(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<u64, sqlx::Error> {
    let checks = sqlx::query!(
        "UPDATE risk_assessment.assessment_check \
         SET notes = '', databases = NULL, professionals = NULL, visit_attended_by = NULL, \
           sealed_text = NULL \
         WHERE (notes <> '' OR databases IS NOT NULL OR professionals IS NOT NULL \
           OR visit_attended_by IS NOT NULL OR sealed_text IS NOT NULL) \
         AND assessment_id IN \
         (SELECT assessment_id FROM risk_assessment.assessment WHERE referral_id = $1)",
        referral_id
    )
    .execute(&mut *connection)
    .await?
    .rows_affected();
    let assessments = sqlx::query!(
        "UPDATE risk_assessment.assessment SET rationale = NULL, rationale_sealed = NULL \
         WHERE (rationale IS NOT NULL OR rationale_sealed IS NOT NULL) AND referral_id = $1",
        referral_id
    )
    .execute(&mut *connection)
    .await?
    .rows_affected();
    let reviews = sqlx::query!(
        "UPDATE risk_assessment.review SET rationale = '', rationale_sealed = NULL \
         WHERE (rationale <> '' OR rationale_sealed IS NOT NULL) AND assessment_id IN \
         (SELECT assessment_id FROM risk_assessment.assessment WHERE referral_id = $1)",
        referral_id
    )
    .execute(&mut *connection)
    .await?
    .rows_affected();
    Ok(checks + assessments + reviews)
}

/// Drops the categories held about an erased client (vulnerabilities,
/// gender, kinds of known risk), as mentor matching does with its copy.
/// Returns the rows changed.
pub async fn forget_client_categories(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE risk_assessment.assessment \
         SET vulnerabilities = '{}', client_gender = 0, known_risk_types = '{}', \
           victim_of = '{}', perpetrator_of = '{}' \
         WHERE referral_id = $1 AND (cardinality(vulnerabilities) > 0 OR client_gender <> 0 \
           OR cardinality(known_risk_types) > 0 OR cardinality(victim_of) > 0 \
           OR cardinality(perpetrator_of) > 0)",
        referral_id
    )
    .execute(connection)
    .await?
    .rows_affected())
}

/// Holds, until the transaction ends, the lock that orders opening a
/// client's assessment and forgetting that client: whichever comes second
/// sees what the first committed (the erasure's tombstone, or the
/// assessment's categories), so neither order nor concurrent replicas
/// leave an erased client's categories behind.
pub async fn lock_client(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<(), sqlx::Error> {
    cpm_runtime::db::lock_key(connection, &format!("risk_assessment.client {referral_id}")).await
}

/// Joins a referral's assessment to the client's earlier referral; the
/// assessment's ID, or `None` when the referral has no assessment yet.
pub async fn link_earlier_referral(
    connection: &mut PgConnection,
    referral_id: Uuid,
    earlier_referral_id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "UPDATE risk_assessment.assessment SET earlier_referral_id = $2 \
         WHERE referral_id = $1 RETURNING assessment_id",
        referral_id,
        earlier_referral_id
    )
    .fetch_optional(connection)
    .await
}

/// A check row with nothing recorded beyond its kind, for tests to adjust.
#[cfg(test)]
pub(crate) fn check_row(assessment_id: Uuid, kind: i32, satisfied: bool) -> CheckRow {
    CheckRow {
        assessment_id,
        referral_id: Uuid::nil(),
        kind,
        satisfied,
        notes: String::new(),
        recorded_by: "coordinator".into(),
        recorded_at: chrono::Utc::now(),
        risk_level: None,
        will_score: None,
        want_score: None,
        capacity_score: None,
        databases: None,
        professionals: None,
        visit_attended_by: None,
        referrer_co_visited: None,
        phone_contact_first: None,
        sealed_text: None,
    }
}
