//! `cpm.v1.RiskAssessmentService`: coordinators work the area queues, record
//! checks and decide. The system recommends from the latest checks; only a
//! named coordinator decides, and overriding the recommendation needs a
//! rationale. Handlers parse, call [`crate::commands`] and answer; who may
//! call what is [`ACCESS`]. The rows they answer from carry the client's
//! free text already opened ([`crate::sealed`]); empty once erased.
//!
//! Staff work in areas: an area a request names must be one of the
//! programme's (INVALID_ARGUMENT otherwise), a coordinator sees the
//! assessments of the areas their token names and an admin every area
//! (`ProgrammeConfig::staff_scope`). Another area's queue or stats are
//! PERMISSION_DENIED; another area's assessment is NOT_FOUND, as one that
//! does not exist.

use chrono::Utc;
use cpm_proto::v1::risk_assessment_service_server::RiskAssessmentService;
use cpm_proto::v1::{
    Assessment, AssessmentStatsRequest, AssessmentStatsResponse, Check, DecideRequest,
    DecideResponse, EarlierAssessment, GetAssessmentRequest, GetAssessmentResponse, HomeVisit,
    HoursDistribution, ListQueueRequest, ListQueueResponse, OutcomeCount, ReassessRequest,
    ReassessResponse, RecordCheckRequest, RecordCheckResponse, Review, WillWantCapacityScores,
};
use cpm_runtime::auth::Caller;
use cpm_runtime::bus::ServiceHandle;
use cpm_runtime::client_keys::ClientKeys;
use cpm_runtime::config::ProgrammeConfig;
use cpm_runtime::grpc::access::{AccessTable, STAFF};
use cpm_runtime::grpc::page;
use cpm_runtime::grpc::values::{optional_timestamp, timestamp};
use tonic::{Request, Response, Status};

use crate::commands::{self, AssessmentView};
use crate::db::{AssessmentRow, CheckRow, EarlierAssessmentRow, ReviewRow};
use crate::domain::{
    AgeRule, AssessmentLookup, NewCheck, NewDecision, NewReassessment, QueueQuery, StatsQuery,
    recommend,
};

/// Only staff assess referrals, each in their own areas.
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
    /// Seals and opens the free text held about each client.
    client_keys: ClientKeys,
    /// How an assessment's age is shown; nothing stored depends on it.
    age_rule: AgeRule,
    /// The programme's areas: those a request may name, in their spelling.
    programme: ProgrammeConfig,
}

impl RiskAssessment {
    pub fn new(
        handle: ServiceHandle,
        client_keys: ClientKeys,
        first_assessment_target_days: u32,
        programme: ProgrammeConfig,
    ) -> Self {
        Self {
            handle,
            client_keys,
            age_rule: AgeRule {
                target_working_days: i64::from(first_assessment_target_days),
            },
            programme,
        }
    }

    /// The assessment with its checks, re-assessments and history.
    fn view_to_proto(&self, view: &AssessmentView) -> Assessment {
        let mut assessment = to_proto(&view.row, &view.checks, self.age_rule);
        assessment.reviews = view.reviews.iter().map(review_to_proto).collect();
        assessment.history = view.history.iter().map(earlier_to_proto).collect();
        assessment
    }
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
    // A home visit always records how it was arranged; who attended is
    // free text, gone once the client is erased.
    let home_visit = (check.referrer_co_visited.is_some()
        || check.phone_contact_first.is_some()
        || check.visit_attended_by.is_some())
    .then(|| HomeVisit {
        attended_by: check.visit_attended_by.clone().unwrap_or_default(),
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
/// [`RiskAssessment::view_to_proto`].
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
        recommendation: recommend(&commands::outcomes(checks.iter().copied())) as i32,
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

#[tonic::async_trait]
impl RiskAssessmentService for RiskAssessment {
    #[tracing::instrument(skip_all)]
    async fn list_queue(
        &self,
        request: Request<ListQueueRequest>,
    ) -> Result<Response<ListQueueResponse>, Status> {
        let caller = Caller::of(&request)?;
        let query = QueueQuery::parse(request.get_ref(), &self.programme)?;
        let scope = self.programme.staff_scope(caller);
        let mut queue =
            commands::list_queue(&self.handle, &self.client_keys, caller, &scope, &query).await?;
        let next_page_token = page::finish_page(&mut queue.rows, query.page_size, |row| {
            page::time_and_id_token(row.opened_at, row.assessment_id)
        });
        Ok(Response::new(ListQueueResponse {
            assessments: queue
                .rows
                .iter()
                .map(|row| to_proto(row, &queue.checks, self.age_rule))
                .collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_assessment(
        &self,
        request: Request<GetAssessmentRequest>,
    ) -> Result<Response<GetAssessmentResponse>, Status> {
        let caller = Caller::of(&request)?;
        let lookup = AssessmentLookup::parse(request.get_ref())?;
        let scope = self.programme.staff_scope(caller);
        let view =
            commands::get_assessment(&self.handle, &self.client_keys, caller, &scope, lookup)
                .await?;
        Ok(Response::new(GetAssessmentResponse {
            assessment: Some(self.view_to_proto(&view)),
        }))
    }

    #[tracing::instrument(skip_all, fields(assessment_id = %request.get_ref().assessment_id))]
    async fn record_check(
        &self,
        request: Request<RecordCheckRequest>,
    ) -> Result<Response<RecordCheckResponse>, Status> {
        let caller = Caller::of(&request)?;
        let check = NewCheck::parse(request.get_ref())?;
        let scope = self.programme.staff_scope(caller);
        let now = cpm_runtime::clock::now(&request);
        let view =
            commands::record_check(&self.handle, &self.client_keys, caller, &scope, &check, now)
                .await?;
        Ok(Response::new(RecordCheckResponse {
            assessment: Some(self.view_to_proto(&view)),
        }))
    }

    #[tracing::instrument(skip_all, fields(assessment_id = %request.get_ref().assessment_id))]
    async fn decide(
        &self,
        request: Request<DecideRequest>,
    ) -> Result<Response<DecideResponse>, Status> {
        let caller = Caller::of(&request)?;
        let decision = NewDecision::parse(request.get_ref())?;
        let scope = self.programme.staff_scope(caller);
        let now = cpm_runtime::clock::now(&request);
        let view = commands::decide(
            &self.handle,
            &self.client_keys,
            caller,
            &scope,
            &decision,
            now,
        )
        .await?;
        Ok(Response::new(DecideResponse {
            assessment: Some(self.view_to_proto(&view)),
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn reassess(
        &self,
        request: Request<ReassessRequest>,
    ) -> Result<Response<ReassessResponse>, Status> {
        let caller = Caller::of(&request)?;
        let reassessment = NewReassessment::parse(request.get_ref())?;
        let scope = self.programme.staff_scope(caller);
        let reassessed = commands::reassess(
            &self.handle,
            &self.client_keys,
            caller,
            &scope,
            &reassessment,
            cpm_runtime::clock::now(&request),
        )
        .await?;
        Ok(Response::new(ReassessResponse {
            assessment: Some(self.view_to_proto(&reassessed.assessment)),
            review: Some(review_to_proto(&reassessed.review)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn assessment_stats(
        &self,
        request: Request<AssessmentStatsRequest>,
    ) -> Result<Response<AssessmentStatsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let query = StatsQuery::parse(request.get_ref(), &self.programme)?;
        let scope = self.programme.staff_scope(caller);
        let commands::Stats { totals, outcomes } =
            commands::stats(&self.handle, &scope, &query).await?;
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
    use chrono::Duration;
    use cpm_proto::v1::{AssessmentState, CheckKind, Decision, RiskLevel};
    use uuid::Uuid;

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
            rationale_sealed: None,
            open_reviews: 0,
            referred_at: Utc::now(),
            earlier_referral_id: None,
            referred_to: None,
            first_checked_at: None,
            engagement: None,
            known_risk_types: vec![],
            referrer_will_co_visit: false,
            emergency_calls_last_12_months: 0,
            victim_of: vec![],
            perpetrator_of: vec![],
        }
    }

    fn check(assessment_id: Uuid, kind: CheckKind, satisfied: bool) -> CheckRow {
        crate::db::check_row(assessment_id, kind as i32, satisfied)
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
    fn an_erased_client_s_home_visit_still_shows_how_it_was_arranged() {
        let id = Uuid::now_v7();
        let mut visit = check(id, CheckKind::HomeVisit, true);
        // Who attended was sealed and no longer opens.
        visit.referrer_co_visited = Some(true);
        visit.phone_contact_first = Some(false);
        let assessment = to_proto(&row(id), &[visit], RULE);
        let shown = assessment.checks[0].home_visit.clone().unwrap();
        assert!(shown.attended_by.is_empty());
        assert!(shown.referrer_co_visited && !shown.phone_contact_first);
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
