//! `cpm.v1.RiskAssessmentService`: coordinators work the area queues, record
//! checks and decide. The system recommends from the latest checks; only a
//! named coordinator decides, and overriding the recommendation needs a
//! rationale.

use chrono::Utc;
use cpm_proto::v1::risk_assessment_service_server::RiskAssessmentService;
use cpm_proto::v1::{
    Assessment, AssessmentDecided, AssessmentState, AssessmentStatsRequest,
    AssessmentStatsResponse, Check, CheckKind, DecideRequest, DecideResponse, Decision,
    EarlierAssessment, EngagementAction, EngagementChanged, GetAssessmentRequest,
    GetAssessmentResponse, HomeVisit, HoursDistribution, ListQueueRequest, ListQueueResponse,
    OutcomeCount, ReassessRequest, ReassessResponse, RecordCheckRequest, RecordCheckResponse,
    Review, RiskLevel, WillWantCapacityScores,
};
use cpm_runtime::auth::Caller;
use cpm_runtime::bus::{ServiceHandle, outbox};
use cpm_runtime::grpc::ApiError;
use cpm_runtime::grpc::access::{AccessTable, STAFF};
use cpm_runtime::grpc::page;
use cpm_runtime::grpc::values::{optional_timestamp, timestamp};
use sqlx::{PgConnection, PgPool};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::db::{self, AssessmentRow, CheckRow, EarlierAssessmentRow, ReviewRow};
use crate::domain::{
    AgeRule, AssessmentLookup, CheckOutcome, NewCheck, NewDecision, NewReassessment, QueueQuery,
    StatsQuery, check_override, check_reassessable, missing_checks, recommend,
};

/// Only staff assess referrals.
pub static ACCESS: AccessTable = AccessTable::new(&[
    ("ListQueue", STAFF),
    ("GetAssessment", STAFF),
    ("RecordCheck", STAFF),
    ("Decide", STAFF),
    ("Reassess", STAFF),
    ("AssessmentStats", STAFF),
]);

pub struct RiskAssessment {
    handle: ServiceHandle,
    pool: PgPool,
    age_rule: AgeRule,
}

impl RiskAssessment {
    pub fn new(handle: ServiceHandle, first_assessment_target_days: u32) -> Self {
        Self {
            pool: handle.pool().clone(),
            handle,
            age_rule: AgeRule {
                target_working_days: i64::from(first_assessment_target_days),
            },
        }
    }
}

fn outcomes(checks: &[&CheckRow]) -> Vec<CheckOutcome> {
    checks
        .iter()
        .filter_map(|check| {
            CheckKind::try_from(check.kind)
                .ok()
                .map(|kind| CheckOutcome {
                    kind,
                    satisfied: check.satisfied,
                    risk_level: check
                        .risk_level
                        .and_then(|level| RiskLevel::try_from(level).ok()),
                    lowest_score: [check.will_score, check.want_score, check.capacity_score]
                        .into_iter()
                        .flatten()
                        .min(),
                })
        })
        .collect()
}

fn check_to_proto(check: &CheckRow) -> Check {
    let scores = match (check.will_score, check.want_score, check.capacity_score) {
        (Some(will), Some(want), Some(capacity)) => Some(WillWantCapacityScores {
            will,
            want,
            capacity,
        }),
        _ => None,
    };
    let home_visit = check
        .visit_attended_by
        .as_ref()
        .map(|attended_by| HomeVisit {
            attended_by: attended_by.clone(),
            referrer_co_visited: check.referrer_co_visited.unwrap_or_default(),
            phone_contact_first: check.phone_contact_first.unwrap_or_default(),
        });
    Check {
        kind: check.kind,
        satisfied: check.satisfied,
        notes: check.notes.clone(),
        recorded_by: check.recorded_by.clone(),
        recorded_at: Some(timestamp(check.recorded_at)),
        risk_level: check.risk_level.unwrap_or_default(),
        scores,
        databases: check.databases.clone().unwrap_or_default(),
        professionals: check.professionals.clone().unwrap_or_default(),
        home_visit,
    }
}

fn review_to_proto(review: &ReviewRow) -> Review {
    Review {
        action: review.action,
        stage: review.stage.unwrap_or_default(),
        reason: review.reason.unwrap_or_default(),
        referred_to: review.referred_to.unwrap_or_default(),
        rationale: review.rationale.clone(),
        reviewed_by: review.reviewed_by.clone(),
        reviewed_at: Some(timestamp(review.reviewed_at)),
        resolved_requests: review.resolved_requests,
    }
}

fn earlier_to_proto(row: &EarlierAssessmentRow) -> EarlierAssessment {
    EarlierAssessment {
        assessment_id: row.assessment_id.to_string(),
        referral_id: row.referral_id.to_string(),
        area: row.area.clone(),
        state: row.state,
        opened_at: Some(timestamp(row.opened_at)),
        decision: row.decision.unwrap_or_default(),
        stage: row.stage.unwrap_or_default(),
        reason: row.reason.unwrap_or_default(),
        referred_to: row.referred_to.unwrap_or_default(),
        decided_by: row.decided_by.clone().unwrap_or_default(),
        decided_at: optional_timestamp(row.decided_at),
        engagement: row.engagement.unwrap_or_default(),
        ended_stage: row.ended_stage.unwrap_or_default(),
        ended_reason: row.ended_reason.unwrap_or_default(),
        ended_at: optional_timestamp(row.ended_at),
    }
}

/// The assessment with its latest checks (those of other assessments in
/// `latest_checks` are ignored), the recommendation they make and its age
/// against the first-assessment target. Reviews and history are added by
/// the callers that show them.
fn to_proto(row: &AssessmentRow, latest_checks: &[CheckRow], age_rule: AgeRule) -> Assessment {
    let checks: Vec<&CheckRow> = latest_checks
        .iter()
        .filter(|check| check.assessment_id == row.assessment_id)
        .collect();
    let age = age_rule.age(row.referred_at, row.first_checked_at, Utc::now());
    Assessment {
        assessment_id: row.assessment_id.to_string(),
        referral_id: row.referral_id.to_string(),
        agency_id: row.agency_id.clone(),
        area: row.area.clone(),
        state: row.state,
        opened_at: Some(timestamp(row.opened_at)),
        recommendation: recommend(&outcomes(&checks)) as i32,
        checks: checks.iter().map(|check| check_to_proto(check)).collect(),
        decision: row.decision.unwrap_or_default(),
        stage: row.stage.unwrap_or_default(),
        reason: row.reason.unwrap_or_default(),
        decided_by: row.decided_by.clone().unwrap_or_default(),
        decided_at: optional_timestamp(row.decided_at),
        rationale: row.rationale.clone().unwrap_or_default(),
        open_reviews: row.open_reviews,
        referred_at: Some(timestamp(row.referred_at)),
        working_days_open: i32::try_from(age.working_days).unwrap_or(i32::MAX),
        overdue: age.overdue,
        first_checked_at: optional_timestamp(row.first_checked_at),
        referred_to: row.referred_to.unwrap_or_default(),
        reviews: Vec::new(),
        engagement: row.engagement.unwrap_or_default(),
        earlier_referral_id: row
            .earlier_referral_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        history: Vec::new(),
        known_risk_types: row.known_risk_types.clone(),
        referrer_will_co_visit: row.referrer_will_co_visit,
        emergency_calls_last_12_months: row.emergency_calls_last_12_months,
    }
}

/// Hours as the stats show them: 0 when nothing was measured.
fn distribution(count: i64, median: Option<f64>, p90: Option<f64>) -> HoursDistribution {
    HoursDistribution {
        count: i32::try_from(count).unwrap_or(i32::MAX),
        median_hours: median.unwrap_or_default(),
        p90_hours: p90.unwrap_or_default(),
    }
}

fn count(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

impl RiskAssessment {
    /// One assessment as the API shows it, with its re-assessments.
    async fn load_assessment(
        &self,
        connection: &mut PgConnection,
        row: &AssessmentRow,
    ) -> Result<Assessment, ApiError> {
        let checks = db::latest_checks(connection, &[row.assessment_id]).await?;
        let reviews = db::list_reviews(connection, row.assessment_id).await?;
        let mut assessment = to_proto(row, &checks, self.age_rule);
        assessment.reviews = reviews.iter().map(review_to_proto).collect();
        Ok(assessment)
    }

    /// The assessment read again inside the transaction that just changed it,
    /// so derived fields (first check, recommendation, reviews) include the change.
    async fn reload_assessment(
        &self,
        connection: &mut PgConnection,
        assessment_id: Uuid,
    ) -> Result<Assessment, ApiError> {
        let row = db::fetch_assessment(connection, assessment_id)
            .await?
            .ok_or_else(|| ApiError::NotFound("assessment".into()))?;
        self.load_assessment(connection, &row).await
    }
}

/// Appends the caller's change to the audit trail.
async fn audit(
    connection: &mut PgConnection,
    caller: &Caller,
    assessment_id: Uuid,
    action: &str,
    detail: &str,
) -> Result<(), ApiError> {
    db::insert_audit(
        connection,
        &db::AuditEntry {
            assessment_id,
            actor: &caller.subject,
            role: caller.role.as_str(),
            action,
            detail,
        },
    )
    .await?;
    Ok(())
}

/// Locks an assessment that must still be open.
async fn lock_open_assessment(
    connection: &mut PgConnection,
    assessment_id: Uuid,
    action: &str,
) -> Result<AssessmentRow, ApiError> {
    let row = db::lock_assessment(connection, assessment_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("assessment".into()))?;
    if row.state != AssessmentState::Open as i32 {
        let state = AssessmentState::try_from(row.state).unwrap_or_default();
        return Err(ApiError::FailedPrecondition(format!(
            "the assessment is {}; only an open assessment can {action}",
            state.as_str_name()
        )));
    }
    Ok(row)
}

#[tonic::async_trait]
impl RiskAssessmentService for RiskAssessment {
    #[tracing::instrument(skip_all)]
    async fn list_queue(
        &self,
        request: Request<ListQueueRequest>,
    ) -> Result<Response<ListQueueResponse>, Status> {
        let query = QueueQuery::parse(request.get_ref()).map_err(ApiError::InvalidArgument)?;
        let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
        let mut rows = db::list_assessments_in_state(
            &mut connection,
            AssessmentState::Open as i32,
            query.area.as_deref(),
            query.after,
            query.page_size + 1,
        )
        .await
        .map_err(ApiError::from)?;
        let next_page_token = page::finish_page(&mut rows, query.page_size, |row| {
            page::time_and_id_token(row.opened_at, row.assessment_id)
        });
        let ids: Vec<Uuid> = rows.iter().map(|row| row.assessment_id).collect();
        let checks = db::latest_checks(&mut connection, &ids)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(ListQueueResponse {
            assessments: rows
                .iter()
                .map(|row| to_proto(row, &checks, self.age_rule))
                .collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_assessment(
        &self,
        request: Request<GetAssessmentRequest>,
    ) -> Result<Response<GetAssessmentResponse>, Status> {
        let lookup =
            AssessmentLookup::parse(request.get_ref()).map_err(ApiError::InvalidArgument)?;
        let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
        let row = match lookup {
            AssessmentLookup::Assessment(id) => db::fetch_assessment(&mut connection, id).await,
            AssessmentLookup::Referral(id) => {
                db::fetch_assessment_of_referral(&mut connection, id).await
            }
        }
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::NotFound("assessment".into()))?;
        let mut assessment = self.load_assessment(&mut connection, &row).await?;
        if let Some(earlier_referral_id) = row.earlier_referral_id {
            let history = db::earlier_assessments(&mut connection, earlier_referral_id)
                .await
                .map_err(ApiError::from)?;
            assessment.history = history.iter().map(earlier_to_proto).collect();
        }
        Ok(Response::new(GetAssessmentResponse {
            assessment: Some(assessment),
        }))
    }

    #[tracing::instrument(skip_all, fields(assessment_id = %request.get_ref().assessment_id))]
    async fn record_check(
        &self,
        request: Request<RecordCheckRequest>,
    ) -> Result<Response<RecordCheckResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let check = NewCheck::parse(request.get_ref()).map_err(ApiError::InvalidArgument)?;
        let mut transaction = self.handle.begin().await.map_err(ApiError::from)?;
        lock_open_assessment(&mut transaction, check.assessment_id, "record checks").await?;
        let visit = check.home_visit.as_ref();
        db::insert_check(
            &mut transaction,
            &db::NewCheckRow {
                assessment_id: check.assessment_id,
                kind: check.kind as i32,
                satisfied: check.satisfied,
                notes: &check.notes,
                recorded_by: &caller.subject,
                risk_level: check.risk_level.map(|level| level as i32),
                scores: check
                    .scores
                    .map(|scores| (scores.will, scores.want, scores.capacity)),
                databases: (!check.databases.is_empty()).then_some(check.databases.as_slice()),
                professionals: (!check.professionals.is_empty())
                    .then_some(check.professionals.as_slice()),
                visit_attended_by: visit.map(|visit| visit.attended_by.as_slice()),
                referrer_co_visited: visit.map(|visit| visit.referrer_co_visited),
                phone_contact_first: visit.map(|visit| visit.phone_contact_first),
            },
        )
        .await
        .map_err(ApiError::from)?;
        let outcome = check.outcome();
        audit(
            &mut transaction,
            &caller,
            check.assessment_id,
            "check_recorded",
            &format!(
                "{} {}",
                check.kind.as_str_name(),
                if outcome.finds_unsuitable() {
                    "unsuitable"
                } else {
                    "suitable"
                }
            ),
        )
        .await?;
        // Re-read after the insert, so the first check time and the
        // recommendation include this check.
        let assessment = self
            .reload_assessment(&mut transaction, check.assessment_id)
            .await?;
        transaction.commit().await.map_err(ApiError::from)?;
        tracing::info!(
            kind = check.kind.as_str_name(),
            satisfied = check.satisfied,
            finds_unsuitable = outcome.finds_unsuitable(),
            "check recorded"
        );
        Ok(Response::new(RecordCheckResponse {
            assessment: Some(assessment),
        }))
    }

    #[tracing::instrument(skip_all, fields(assessment_id = %request.get_ref().assessment_id))]
    async fn decide(
        &self,
        request: Request<DecideRequest>,
    ) -> Result<Response<DecideResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let decision = NewDecision::parse(request.get_ref()).map_err(ApiError::InvalidArgument)?;
        let mut transaction = self.handle.begin().await.map_err(ApiError::from)?;
        let row =
            lock_open_assessment(&mut transaction, decision.assessment_id, "be decided").await?;
        let checks = db::latest_checks(&mut transaction, &[row.assessment_id])
            .await
            .map_err(ApiError::from)?;
        let latest = outcomes(&checks.iter().collect::<Vec<_>>());
        if decision.decision == Decision::Accept {
            let missing = missing_checks(&latest);
            if !missing.is_empty() {
                let names: Vec<&str> = missing.iter().map(|kind| kind.as_str_name()).collect();
                return Err(ApiError::FailedPrecondition(format!(
                    "accepting needs every check recorded; missing: {}",
                    names.join(", ")
                ))
                .into());
            }
        }
        let recommendation = recommend(&latest);
        check_override(recommendation, decision.decision, &decision.rationale)
            .map_err(ApiError::InvalidArgument)?;

        let decided = db::record_decision(
            &mut transaction,
            row.assessment_id,
            &db::DecisionRow {
                decision: decision.decision as i32,
                stage: decision.stage.map(|stage| stage as i32),
                reason: decision.reason.map(|reason| reason as i32),
                referred_to: decision.referred_to.map(|to| to as i32),
                decided_by: &caller.subject,
                rationale: &decision.rationale,
                state: AssessmentState::Decided as i32,
            },
        )
        .await
        .map_err(ApiError::from)?;
        let decided_at = decided.decided_at.ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("decision recorded without a time"))
        })?;
        outbox::enqueue(
            &mut transaction,
            crate::NAME,
            &AssessmentDecided {
                assessment_id: decided.assessment_id.to_string(),
                referral_id: decided.referral_id.to_string(),
                agency_id: decided.agency_id.clone(),
                area: decided.area.clone(),
                decision: decision.decision as i32,
                stage: decided.stage.unwrap_or_default(),
                reason: decided.reason.unwrap_or_default(),
                decided_by: caller.subject.clone(),
                decided_at: Some(timestamp(decided_at)),
                vulnerabilities: decided.vulnerabilities.clone(),
                client_gender: decided.client_gender,
            },
        )
        .await
        .map_err(ApiError::from)?;
        let overridden =
            recommendation != Decision::Unspecified && recommendation != decision.decision;
        audit(
            &mut transaction,
            &caller,
            decided.assessment_id,
            "decided",
            &format!(
                "{} recommendation {}{}",
                decision.decision.as_str_name(),
                recommendation.as_str_name(),
                if overridden { " overridden" } else { "" }
            ),
        )
        .await?;
        transaction.commit().await.map_err(ApiError::from)?;
        tracing::info!(
            referral_id = %decided.referral_id,
            decision = decision.decision.as_str_name(),
            recommendation = recommendation.as_str_name(),
            overridden,
            "assessment decided"
        );
        Ok(Response::new(DecideResponse {
            assessment: Some(to_proto(&decided, &checks, self.age_rule)),
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn reassess(
        &self,
        request: Request<ReassessRequest>,
    ) -> Result<Response<ReassessResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let reassessment =
            NewReassessment::parse(request.get_ref()).map_err(ApiError::InvalidArgument)?;
        let mut transaction = self.handle.begin().await.map_err(ApiError::from)?;
        let row = db::lock_assessment_of_referral(&mut transaction, reassessment.referral_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound("assessment".into()))?;
        check_reassessable(
            AssessmentState::try_from(row.state).unwrap_or_default(),
            row.decision
                .and_then(|decision| Decision::try_from(decision).ok()),
            row.engagement
                .and_then(|action| EngagementAction::try_from(action).ok()),
        )
        .map_err(ApiError::FailedPrecondition)?;

        let resolved =
            db::resolve_review_requests(&mut transaction, row.assessment_id, &caller.subject)
                .await
                .map_err(ApiError::from)?;
        let ending = reassessment.ending;
        let review = db::insert_review(
            &mut transaction,
            &db::NewReviewRow {
                assessment_id: row.assessment_id,
                action: reassessment.action as i32,
                stage: ending.map(|ending| ending.stage as i32),
                reason: ending.map(|ending| ending.reason as i32),
                referred_to: ending.and_then(|ending| ending.referred_to.map(|to| to as i32)),
                rationale: &reassessment.rationale,
                reviewed_by: &caller.subject,
                resolved_requests: resolved,
            },
        )
        .await
        .map_err(ApiError::from)?;
        outbox::enqueue(
            &mut transaction,
            crate::NAME,
            &EngagementChanged {
                referral_id: row.referral_id.to_string(),
                agency_id: row.agency_id.clone(),
                action: reassessment.action as i32,
                stage: review.stage.unwrap_or_default(),
                reason: review.reason.unwrap_or_default(),
                decided_by: caller.subject.clone(),
                decided_at: Some(timestamp(review.reviewed_at)),
            },
        )
        .await
        .map_err(ApiError::from)?;
        audit(
            &mut transaction,
            &caller,
            row.assessment_id,
            "reassessed",
            &format!(
                "{} resolved {resolved} review request(s)",
                reassessment.action.as_str_name()
            ),
        )
        .await?;
        let assessment = self
            .reload_assessment(&mut transaction, row.assessment_id)
            .await?;
        transaction.commit().await.map_err(ApiError::from)?;
        tracing::info!(
            action = reassessment.action.as_str_name(),
            resolved_requests = resolved,
            "engagement re-assessed"
        );
        Ok(Response::new(ReassessResponse {
            assessment: Some(assessment),
            review: Some(review_to_proto(&review)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn assessment_stats(
        &self,
        request: Request<AssessmentStatsRequest>,
    ) -> Result<Response<AssessmentStatsResponse>, Status> {
        let query = StatsQuery::parse(request.get_ref()).map_err(ApiError::InvalidArgument)?;
        let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
        let area = query.area.as_deref();
        let totals = db::stats_totals(
            &mut connection,
            query.from,
            query.to,
            area,
            &db::StatsCodes {
                open: AssessmentState::Open as i32,
                closed: AssessmentState::Closed as i32,
                accept: Decision::Accept as i32,
                not_taken_on: Decision::NotTakenOn as i32,
            },
        )
        .await
        .map_err(ApiError::from)?;
        let outcomes = db::stats_outcomes(
            &mut connection,
            query.from,
            query.to,
            area,
            Decision::NotTakenOn as i32,
        )
        .await
        .map_err(ApiError::from)?;
        Ok(Response::new(AssessmentStatsResponse {
            referrals: count(totals.referrals),
            still_open: count(totals.still_open),
            closed: count(totals.closed),
            accepted: count(totals.accepted),
            not_taken_on: count(totals.not_taken_on),
            outcomes: outcomes
                .iter()
                .map(|outcome| OutcomeCount {
                    stage: outcome.stage,
                    reason: outcome.reason,
                    referred_to: outcome.referred_to,
                    count: count(outcome.count),
                })
                .collect(),
            to_first_check: Some(distribution(
                totals.first_checked,
                totals.first_check_median_hours,
                totals.first_check_p90_hours,
            )),
            to_decision: Some(distribution(
                totals.decided,
                totals.decision_median_hours,
                totals.decision_p90_hours,
            )),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};

    const RULE: AgeRule = AgeRule {
        target_working_days: 5,
    };

    fn row(assessment_id: Uuid) -> AssessmentRow {
        AssessmentRow {
            assessment_id,
            referral_id: Uuid::now_v7(),
            agency_id: "agency".into(),
            area: "Darlington".into(),
            vulnerabilities: vec![1, 2],
            client_gender: 1,
            state: AssessmentState::Open as i32,
            opened_at: Utc::now(),
            decision: None,
            stage: None,
            reason: None,
            decided_by: None,
            decided_at: None,
            rationale: None,
            open_reviews: 0,
            referred_at: Utc::now(),
            earlier_referral_id: None,
            referred_to: None,
            first_checked_at: None,
            engagement: None,
            known_risk_types: vec![],
            referrer_will_co_visit: false,
            emergency_calls_last_12_months: 0,
        }
    }

    fn check(assessment_id: Uuid, kind: CheckKind, satisfied: bool) -> CheckRow {
        CheckRow {
            assessment_id,
            kind: kind as i32,
            satisfied,
            notes: String::new(),
            recorded_by: "coordinator".into(),
            recorded_at: Utc::now(),
            risk_level: None,
            will_score: None,
            want_score: None,
            capacity_score: None,
            databases: None,
            professionals: None,
            visit_attended_by: None,
            referrer_co_visited: None,
            phone_contact_first: None,
        }
    }

    fn required_checks(assessment_id: Uuid) -> Vec<CheckRow> {
        vec![
            check(assessment_id, CheckKind::AdultAtReferral, true),
            check(assessment_id, CheckKind::RiskToVolunteers, true),
            check(assessment_id, CheckKind::WillWantCapacity, true),
        ]
    }

    #[test]
    fn an_assessment_shows_only_its_own_checks_and_their_recommendation() {
        let mine = Uuid::now_v7();
        let other = Uuid::now_v7();
        let mut checks = required_checks(mine);
        checks.push(check(other, CheckKind::RiskToVolunteers, false));
        let assessment = to_proto(&row(mine), &checks, RULE);
        assert_eq!(assessment.checks.len(), 3);
        assert_eq!(assessment.recommendation(), Decision::Accept);
        assert_eq!(assessment.decision(), Decision::Unspecified);
        let assessment = to_proto(&row(other), &checks, RULE);
        assert_eq!(assessment.recommendation(), Decision::NotTakenOn);
    }

    #[test]
    fn a_high_risk_level_recommends_not_taking_on_though_marked_satisfied() {
        let id = Uuid::now_v7();
        let mut checks = required_checks(id);
        checks[1].risk_level = Some(RiskLevel::High as i32);
        let assessment = to_proto(&row(id), &checks, RULE);
        assert_eq!(assessment.recommendation(), Decision::NotTakenOn);
        assert_eq!(assessment.checks[1].risk_level(), RiskLevel::High);
        checks[1].risk_level = Some(RiskLevel::Medium as i32);
        assert_eq!(
            to_proto(&row(id), &checks, RULE).recommendation(),
            Decision::Accept
        );
    }

    #[test]
    fn a_zero_score_recommends_not_taking_on_and_the_scores_are_shown() {
        let id = Uuid::now_v7();
        let mut checks = required_checks(id);
        checks[2].will_score = Some(4);
        checks[2].want_score = Some(0);
        checks[2].capacity_score = Some(3);
        let assessment = to_proto(&row(id), &checks, RULE);
        assert_eq!(assessment.recommendation(), Decision::NotTakenOn);
        assert_eq!(
            assessment.checks[2].scores,
            Some(WillWantCapacityScores {
                will: 4,
                want: 0,
                capacity: 3
            })
        );
    }

    #[test]
    fn home_visit_details_are_shown_only_on_a_home_visit_check() {
        let id = Uuid::now_v7();
        let mut visit = check(id, CheckKind::HomeVisit, true);
        visit.visit_attended_by = Some(vec!["coordinator a".into(), "coordinator b".into()]);
        visit.referrer_co_visited = Some(false);
        visit.phone_contact_first = Some(true);
        let checks = [visit, check(id, CheckKind::AdultAtReferral, true)];
        let assessment = to_proto(&row(id), &checks, RULE);
        let shown = assessment.checks[0].home_visit.clone().unwrap();
        assert_eq!(shown.attended_by.len(), 2);
        assert!(shown.phone_contact_first && !shown.referrer_co_visited);
        assert!(assessment.checks[1].home_visit.is_none());
    }

    #[test]
    fn an_unchecked_assessment_past_the_target_is_overdue() {
        let id = Uuid::now_v7();
        let mut stale = row(id);
        stale.referred_at = Utc::now() - Duration::days(21);
        let assessment = to_proto(&stale, &[], RULE);
        assert!(assessment.working_days_open >= 14);
        assert!(assessment.overdue);
        let fresh = to_proto(&row(id), &[], RULE);
        assert_eq!(fresh.working_days_open, 0);
        assert!(!fresh.overdue);
        // Checked the next day: the age stops at the first check.
        stale.first_checked_at = Some(stale.referred_at + Duration::days(1));
        let checked = to_proto(&stale, &[], RULE);
        assert!(checked.working_days_open <= 1);
        assert!(!checked.overdue);
    }
}
