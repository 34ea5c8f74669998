//! `cpm.v1.RiskAssessmentService`: coordinators work the area queues, record
//! checks and decide. The system recommends from the latest checks; only a
//! named coordinator decides, and overriding the recommendation needs a
//! rationale.

use cpm_proto::v1::risk_assessment_service_server::RiskAssessmentService;
use cpm_proto::v1::{
    Assessment, AssessmentDecided, AssessmentState, Check, CheckKind, DecideRequest,
    DecideResponse, Decision, GetAssessmentRequest, GetAssessmentResponse, ListQueueRequest,
    ListQueueResponse, RecordCheckRequest, RecordCheckResponse,
};
use cpm_runtime::auth::{Caller, Role};
use cpm_runtime::bus::outbox;
use cpm_runtime::grpc::ApiError;
use cpm_runtime::grpc::values::{optional_timestamp, timestamp};
use sqlx::{PgConnection, PgPool};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::db::{self, AssessmentRow, CheckRow};
use crate::domain::{
    AssessmentLookup, CheckOutcome, NewCheck, NewDecision, QueueQuery, check_override,
    missing_checks, recommend,
};

/// The roles that assess referrals.
const ASSESSORS: &[Role] = &[Role::Coordinator, Role::Admin];

pub struct RiskAssessment {
    pool: PgPool,
}

impl RiskAssessment {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
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
                })
        })
        .collect()
}

/// The assessment with its latest checks (those of other assessments in
/// `latest_checks` are ignored) and the recommendation they make.
fn to_proto(row: &AssessmentRow, latest_checks: &[CheckRow]) -> Assessment {
    let checks: Vec<&CheckRow> = latest_checks
        .iter()
        .filter(|check| check.assessment_id == row.assessment_id)
        .collect();
    Assessment {
        assessment_id: row.assessment_id.to_string(),
        referral_id: row.referral_id.to_string(),
        agency_id: row.agency_id.clone(),
        area: row.area.clone(),
        state: row.state,
        opened_at: Some(timestamp(row.opened_at)),
        recommendation: recommend(&outcomes(&checks)) as i32,
        checks: checks
            .iter()
            .map(|check| Check {
                kind: check.kind,
                satisfied: check.satisfied,
                notes: check.notes.clone(),
                recorded_by: check.recorded_by.clone(),
                recorded_at: Some(timestamp(check.recorded_at)),
            })
            .collect(),
        decision: row.decision.unwrap_or_default(),
        stage: row.stage.unwrap_or_default(),
        reason: row.reason.unwrap_or_default(),
        decided_by: row.decided_by.clone().unwrap_or_default(),
        decided_at: optional_timestamp(row.decided_at),
        rationale: row.rationale.clone().unwrap_or_default(),
        open_reviews: row.open_reviews,
    }
}

/// One assessment as the API shows it.
async fn load_assessment(
    connection: &mut PgConnection,
    row: &AssessmentRow,
) -> Result<Assessment, ApiError> {
    let checks = db::latest_checks(connection, &[row.assessment_id]).await?;
    Ok(to_proto(row, &checks))
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
        Caller::of(&request)?.require(ASSESSORS)?;
        let query = QueueQuery::parse(request.get_ref()).map_err(ApiError::InvalidArgument)?;
        let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
        let rows = db::list_assessments_in_state(
            &mut connection,
            AssessmentState::Open as i32,
            query.area.as_deref(),
            i64::from(query.page_size),
        )
        .await
        .map_err(ApiError::from)?;
        let ids: Vec<Uuid> = rows.iter().map(|row| row.assessment_id).collect();
        let checks = db::latest_checks(&mut connection, &ids)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(ListQueueResponse {
            assessments: rows.iter().map(|row| to_proto(row, &checks)).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_assessment(
        &self,
        request: Request<GetAssessmentRequest>,
    ) -> Result<Response<GetAssessmentResponse>, Status> {
        Caller::of(&request)?.require(ASSESSORS)?;
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
        let assessment = load_assessment(&mut connection, &row).await?;
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
        caller.require(ASSESSORS)?;
        let check = NewCheck::parse(request.get_ref()).map_err(ApiError::InvalidArgument)?;
        let mut transaction = self.pool.begin().await.map_err(ApiError::from)?;
        let row =
            lock_open_assessment(&mut transaction, check.assessment_id, "record checks").await?;
        db::insert_check(
            &mut transaction,
            &db::NewCheckRow {
                assessment_id: check.assessment_id,
                kind: check.kind as i32,
                satisfied: check.satisfied,
                notes: &check.notes,
                recorded_by: &caller.subject,
            },
        )
        .await
        .map_err(ApiError::from)?;
        let assessment = load_assessment(&mut transaction, &row).await?;
        transaction.commit().await.map_err(ApiError::from)?;
        tracing::info!(
            kind = check.kind.as_str_name(),
            satisfied = check.satisfied,
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
        caller.require(ASSESSORS)?;
        let decision = NewDecision::parse(request.get_ref()).map_err(ApiError::InvalidArgument)?;
        let mut transaction = self.pool.begin().await.map_err(ApiError::from)?;
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
        transaction.commit().await.map_err(ApiError::from)?;
        tracing::info!(
            referral_id = %decided.referral_id,
            decision = decision.decision.as_str_name(),
            recommendation = recommendation.as_str_name(),
            "assessment decided"
        );
        Ok(Response::new(DecideResponse {
            assessment: Some(to_proto(&decided, &checks)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

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
        }
    }

    #[test]
    fn an_assessment_shows_only_its_own_checks_and_their_recommendation() {
        let mine = Uuid::now_v7();
        let other = Uuid::now_v7();
        let checks = [
            check(mine, CheckKind::AdultAtReferral, true),
            check(mine, CheckKind::RiskToVolunteers, true),
            check(mine, CheckKind::WillWantCapacity, true),
            check(other, CheckKind::RiskToVolunteers, false),
        ];
        let assessment = to_proto(&row(mine), &checks);
        assert_eq!(assessment.checks.len(), 3);
        assert_eq!(assessment.recommendation(), Decision::Accept);
        assert_eq!(assessment.decision(), Decision::Unspecified);
        let assessment = to_proto(&row(other), &checks);
        assert_eq!(assessment.recommendation(), Decision::NotTakenOn);
    }
}
