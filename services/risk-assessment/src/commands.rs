//! What risk assessment does, one function per use case: each takes the
//! parsed request and who asks, does its work (a change in one transaction,
//! with its audit entry and event) and answers with rows or an
//! [`AssessmentError`]. `grpc.rs` keeps tokens, parsing and messages;
//! nothing here knows about gRPC.
//!
//! Free text about the client is sealed under the client's key before it
//! is written and opened after it is read ([`crate::sealed`]), so the rows
//! a use case answers with carry plaintext and the tables hold none. Once
//! the client was erased, a write with text is refused
//! ([`AssessmentError::ClientErased`]) and the text read back is empty.
//!
//! Each use case takes the caller's [`AreaScope`] (`ProgrammeConfig::staff_scope`):
//! an assessment outside it is [`AssessmentError::NotFound`], exactly as one
//! that does not exist, found so before anything is sealed, opened or
//! changed; a list or a count covers only the scope's areas, and asking for
//! another area is [`AssessmentError::OutsideAreas`].
//!
//! A change seals its text before it locks the assessment: erasure shreds
//! the client's key (`client_key`) before it forgets (the assessment's
//! rows), and taking the two in the same order here means the two cannot
//! deadlock when the client's first text and their erasure meet.

use chrono::{DateTime, SubsecRound as _, Utc};
use cpm_proto::v1::{
    AssessmentDecided, AssessmentState, CheckKind, Decision, EngagementAction, EngagementChanged,
    RiskLevel,
};
use cpm_runtime::areas::OutsideAreas;
use cpm_runtime::auth::{AreaScope, Caller};
use cpm_runtime::bus::{ServiceHandle, outbox};
use cpm_runtime::client_keys::{ClientKeys, Reader, Reading, SealError};
use cpm_runtime::grpc::values::timestamp;
use cpm_runtime::grpc::{ApiError, FieldViolations};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::{
    self, AssessmentRow, CheckRow, EarlierAssessmentRow, OutcomeCountRow, ReviewRow, StatsTotalsRow,
};
use crate::domain::{
    AssessmentLookup, CheckOutcome, NewCheck, NewDecision, NewReassessment, OVERRIDE_NEEDS_REASON,
    QueueQuery, StatsQuery, check_override, check_reassessable, missing_checks, recommend,
};
use crate::sealed::{self, CheckText};

/// Why a use case of risk assessment did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AssessmentError {
    /// No such assessment, none for the referral, or one in an area the
    /// caller does not work in, which they cannot tell apart from none.
    #[error("assessment not found")]
    NotFound,
    /// A queue or a count of an area the caller does not work in.
    #[error(transparent)]
    OutsideAreas(#[from] OutsideAreas),
    /// Checks and decisions only change an open assessment.
    #[error(
        "the assessment is {}; only an open assessment can {action}",
        .state.as_str_name()
    )]
    NotOpen {
        state: AssessmentState,
        /// What was refused, as in "only an open assessment can {action}".
        action: &'static str,
    },
    /// Accepting before the required checks are recorded.
    #[error("accepting needs every check recorded; missing: {}", kind_names(.0))]
    ChecksMissing(Vec<CheckKind>),
    /// A decision against a firm recommendation without a rationale.
    #[error("{}", OVERRIDE_NEEDS_REASON)]
    OverrideNeedsRationale(FieldViolations),
    /// Not an accepted assessment still in support; says which way.
    #[error("{0}")]
    NotReassessable(String),
    /// Free text about a client who was erased: nothing new about them is
    /// kept (the text could not be sealed, their key being shredded).
    #[error("{}", SealError::Erased)]
    ClientErased,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

fn kind_names(kinds: &[CheckKind]) -> String {
    kinds
        .iter()
        .map(|kind| kind.as_str_name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<AssessmentError> for ApiError {
    fn from(error: AssessmentError) -> Self {
        match error {
            AssessmentError::NotFound => ApiError::NotFound("assessment".into()),
            AssessmentError::OutsideAreas(_) => ApiError::PermissionDenied(error.to_string()),
            AssessmentError::NotOpen { .. }
            | AssessmentError::ChecksMissing(_)
            | AssessmentError::NotReassessable(_)
            | AssessmentError::ClientErased => ApiError::FailedPrecondition(error.to_string()),
            AssessmentError::OverrideNeedsRationale(violations) => {
                ApiError::InvalidArgument(violations)
            }
            AssessmentError::Database(error) => error.into(),
            AssessmentError::Internal(error) => ApiError::Internal(error),
        }
    }
}

impl From<AssessmentError> for tonic::Status {
    fn from(error: AssessmentError) -> Self {
        ApiError::from(error).into()
    }
}

/// An assessment with what its message shows besides the row: its latest
/// checks (rows of other assessments may be among them), re-assessments and
/// the assessments of the client's earlier referrals. A use case that does
/// not show a list leaves it empty.
#[derive(Clone, Debug)]
pub struct AssessmentView {
    pub row: AssessmentRow,
    pub checks: Vec<CheckRow>,
    pub reviews: Vec<ReviewRow>,
    pub history: Vec<EarlierAssessmentRow>,
}

/// The outcomes of the latest checks, for the recommendation; checks of an
/// unknown kind count for nothing.
pub fn outcomes<'a>(checks: impl IntoIterator<Item = &'a CheckRow>) -> Vec<CheckOutcome> {
    checks
        .into_iter()
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

/// One assessment with its latest checks and re-assessments, their text opened.
async fn load(
    connection: &mut PgConnection,
    reading: &mut Reading<'_>,
    mut row: AssessmentRow,
) -> Result<AssessmentView, AssessmentError> {
    sealed::open_assessment(reading, connection, &mut row).await?;
    let mut checks = db::latest_checks(connection, &[row.assessment_id]).await?;
    sealed::open_checks(reading, connection, &mut checks).await?;
    let mut reviews = db::list_reviews(connection, row.assessment_id).await?;
    sealed::open_reviews(reading, connection, row.referral_id, &mut reviews).await?;
    Ok(AssessmentView {
        row,
        checks,
        reviews,
        history: Vec::new(),
    })
}

/// `area`'s assessment when `scope` admits it, else not found: an
/// assessment the caller may not see is one that does not exist.
fn within(scope: &AreaScope, area: &str) -> Result<(), AssessmentError> {
    if scope.admits(area) {
        Ok(())
    } else {
        Err(AssessmentError::NotFound)
    }
}

/// The referral of an assessment in `scope`, read without a lock, before
/// anything about the client is sealed or changed.
async fn referral_in_scope(
    connection: &mut PgConnection,
    scope: &AreaScope,
    assessment_id: Uuid,
) -> Result<Uuid, AssessmentError> {
    let placement = db::placement_of_assessment(connection, assessment_id)
        .await?
        .ok_or(AssessmentError::NotFound)?;
    within(scope, &placement.area)?;
    Ok(placement.referral_id)
}

/// The assessment read again inside the transaction that just changed it,
/// so derived fields (first check, recommendation, reviews) include the change.
async fn reload(
    connection: &mut PgConnection,
    reading: &mut Reading<'_>,
    assessment_id: Uuid,
) -> Result<AssessmentView, AssessmentError> {
    let row = db::fetch_assessment(connection, assessment_id)
        .await?
        .ok_or(AssessmentError::NotFound)?;
    load(connection, reading, row).await
}

/// Appends the caller's change to the audit trail.
async fn audit(
    connection: &mut PgConnection,
    caller: &Caller,
    assessment_id: Uuid,
    action: &str,
    detail: &str,
) -> Result<(), AssessmentError> {
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

/// Locks an assessment in `scope` that must still be open to `action`.
async fn lock_open_assessment(
    connection: &mut PgConnection,
    scope: &AreaScope,
    assessment_id: Uuid,
    action: &'static str,
) -> Result<AssessmentRow, AssessmentError> {
    let row = db::lock_assessment(connection, assessment_id)
        .await?
        .ok_or(AssessmentError::NotFound)?;
    within(scope, &row.area)?;
    if row.state != AssessmentState::Open as i32 {
        return Err(AssessmentError::NotOpen {
            state: AssessmentState::try_from(row.state).unwrap_or_default(),
            action,
        });
    }
    Ok(row)
}

/// A page of the open queue, oldest first.
#[derive(Clone, Debug)]
pub struct QueuePage {
    /// Up to `page_size + 1` rows, so the caller can tell a next page follows.
    pub rows: Vec<AssessmentRow>,
    /// The latest checks of the first `page_size` rows, their text opened.
    pub checks: Vec<CheckRow>,
}

/// The open assessments of the area asked for (one of the caller's), or of
/// all the caller's areas, after the query's cursor.
pub async fn list_queue(
    handle: &ServiceHandle,
    keys: &ClientKeys,
    caller: &Caller,
    scope: &AreaScope,
    query: &QueueQuery,
) -> Result<QueuePage, AssessmentError> {
    let areas = scope.covering(query.area.as_deref())?;
    let mut reading = keys.reading(Reader::of(caller, "ListQueue"));
    let mut connection = handle.pool().acquire().await?;
    let mut rows = db::list_assessments_in_state(
        &mut connection,
        AssessmentState::Open as i32,
        areas.as_deref(),
        query.after,
        query.page_size + 1,
    )
    .await?;
    // The extra row only tells whether a next page follows; it is not shown.
    let shown = usize::try_from(query.page_size).unwrap_or(usize::MAX);
    let ids: Vec<Uuid> = rows
        .iter()
        .take(shown)
        .map(|row| row.assessment_id)
        .collect();
    sealed::open_assessments(&mut reading, &mut connection, &mut rows).await?;
    let mut checks = db::latest_checks(&mut connection, &ids).await?;
    sealed::open_checks(&mut reading, &mut connection, &mut checks).await?;
    Ok(QueuePage { rows, checks })
}

/// One assessment in `scope`, by its ID or its referral's, with the
/// client's earlier assessments in `scope` when the referral is a
/// re-referral.
pub async fn get_assessment(
    handle: &ServiceHandle,
    keys: &ClientKeys,
    caller: &Caller,
    scope: &AreaScope,
    lookup: AssessmentLookup,
) -> Result<AssessmentView, AssessmentError> {
    let mut reading = keys.reading(Reader::of(caller, "GetAssessment"));
    let mut connection = handle.pool().acquire().await?;
    let row = match lookup {
        AssessmentLookup::Assessment(id) => db::fetch_assessment(&mut connection, id).await?,
        AssessmentLookup::Referral(id) => {
            db::fetch_assessment_of_referral(&mut connection, id).await?
        }
    }
    .ok_or(AssessmentError::NotFound)?;
    // Before anything is opened: the read audit names only what was shown.
    within(scope, &row.area)?;
    let earlier_referral_id = row.earlier_referral_id;
    let mut view = load(&mut connection, &mut reading, row).await?;
    if let Some(earlier_referral_id) = earlier_referral_id {
        view.history = db::earlier_assessments(&mut connection, earlier_referral_id).await?;
        view.history.retain(|earlier| scope.admits(&earlier.area));
    }
    Ok(view)
}

/// Records a check on an open assessment in `scope`, its free text sealed;
/// answers with the assessment as it now stands. A check with text about
/// an erased client is refused ([`AssessmentError::ClientErased`]).
pub async fn record_check(
    handle: &ServiceHandle,
    keys: &ClientKeys,
    caller: &Caller,
    scope: &AreaScope,
    check: &NewCheck,
    now: DateTime<Utc>,
) -> Result<AssessmentView, AssessmentError> {
    let mut transaction = handle.begin().await?;
    let referral_id = referral_in_scope(&mut transaction, scope, check.assessment_id).await?;
    // Sealed before the lock: see the module's documentation.
    let sealed_text =
        sealed::seal_check(keys, &mut transaction, referral_id, &CheckText::of(check)).await?;
    lock_open_assessment(
        &mut transaction,
        scope,
        check.assessment_id,
        "record checks",
    )
    .await?;
    let visit = check.home_visit.as_ref();
    db::insert_check(
        &mut transaction,
        &db::NewCheckRow {
            assessment_id: check.assessment_id,
            recorded_at: now.trunc_subsecs(6),
            kind: check.kind as i32,
            satisfied: check.satisfied,
            recorded_by: &caller.subject,
            risk_level: check.risk_level.map(|level| level as i32),
            scores: check
                .scores
                .map(|scores| (scores.will, scores.want, scores.capacity)),
            referrer_co_visited: visit.map(|visit| visit.referrer_co_visited),
            phone_contact_first: visit.map(|visit| visit.phone_contact_first),
            sealed_text: sealed_text.as_deref(),
        },
    )
    .await?;
    let outcome = check.outcome();
    audit(
        &mut transaction,
        caller,
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
    let mut reading = keys.reading(Reader::of(caller, "RecordCheck"));
    let view = reload(&mut transaction, &mut reading, check.assessment_id).await?;
    transaction.commit().await?;
    tracing::info!(
        kind = check.kind.as_str_name(),
        satisfied = check.satisfied,
        finds_unsuitable = outcome.finds_unsuitable(),
        "check recorded"
    );
    Ok(view)
}

/// Decides an open assessment in `scope` and announces it. Accepting needs
/// every required check; going against a firm recommendation needs a
/// rationale, which is sealed (refused for an erased client). Answers with
/// the decided assessment and the checks it was decided on.
pub async fn decide(
    handle: &ServiceHandle,
    keys: &ClientKeys,
    caller: &Caller,
    scope: &AreaScope,
    decision: &NewDecision,
    now: DateTime<Utc>,
) -> Result<AssessmentView, AssessmentError> {
    let mut transaction = handle.begin().await?;
    let referral_id = referral_in_scope(&mut transaction, scope, decision.assessment_id).await?;
    // Sealed before the lock: see the module's documentation.
    let rationale_sealed =
        sealed::seal_rationale(keys, &mut transaction, referral_id, &decision.rationale).await?;
    let row = lock_open_assessment(
        &mut transaction,
        scope,
        decision.assessment_id,
        "be decided",
    )
    .await?;
    let mut checks = db::latest_checks(&mut transaction, &[row.assessment_id]).await?;
    let latest = outcomes(&checks);
    if decision.decision == Decision::Accept {
        let missing = missing_checks(&latest);
        if !missing.is_empty() {
            return Err(AssessmentError::ChecksMissing(missing));
        }
    }
    let recommendation = recommend(&latest);
    check_override(recommendation, decision.decision, &decision.rationale)
        .map_err(AssessmentError::OverrideNeedsRationale)?;

    let mut decided = db::record_decision(
        &mut transaction,
        row.assessment_id,
        &db::DecisionRow {
            decision: decision.decision as i32,
            decided_at: now.trunc_subsecs(6),
            stage: decision.stage.map(|stage| stage as i32),
            reason: decision.reason.map(|reason| reason as i32),
            referred_to: decision.referred_to.map(|to| to as i32),
            decided_by: &caller.subject,
            rationale_sealed: rationale_sealed.as_deref(),
            state: AssessmentState::Decided as i32,
        },
    )
    .await?;
    // Shown as written, without opening what was just sealed.
    decided.rationale_sealed = None;
    decided.rationale = Some(decision.rationale.clone());
    let mut reading = keys.reading(Reader::of(caller, "Decide"));
    sealed::open_checks(&mut reading, &mut transaction, &mut checks).await?;
    let decided_at = decided
        .decided_at
        .ok_or_else(|| anyhow::anyhow!("decision recorded without a time"))?;
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
            victim_of: decided.victim_of.clone(),
            perpetrator_of: decided.perpetrator_of.clone(),
        },
    )
    .await?;
    let overridden = recommendation != Decision::Unspecified && recommendation != decision.decision;
    audit(
        &mut transaction,
        caller,
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
    transaction.commit().await?;
    tracing::info!(
        referral_id = %decided.referral_id,
        decision = decision.decision.as_str_name(),
        recommendation = recommendation.as_str_name(),
        overridden,
        "assessment decided"
    );
    Ok(AssessmentView {
        row: decided,
        checks,
        reviews: Vec::new(),
        history: Vec::new(),
    })
}

/// A re-assessment as recorded, with the assessment after it.
#[derive(Clone, Debug)]
pub struct Reassessed {
    pub assessment: AssessmentView,
    pub review: ReviewRow,
}

/// Continues, pauses or ends the support of an accepted client in `scope`,
/// resolving the open review requests, and announces it. The rationale is
/// sealed (refused for an erased client).
pub async fn reassess(
    handle: &ServiceHandle,
    keys: &ClientKeys,
    caller: &Caller,
    scope: &AreaScope,
    reassessment: &NewReassessment,
    now: DateTime<Utc>,
) -> Result<Reassessed, AssessmentError> {
    let mut transaction = handle.begin().await?;
    let area = db::area_of_referral(&mut transaction, reassessment.referral_id)
        .await?
        .ok_or(AssessmentError::NotFound)?;
    within(scope, &area)?;
    // Sealed before the lock: see the module's documentation.
    let rationale_sealed = sealed::seal_rationale(
        keys,
        &mut transaction,
        reassessment.referral_id,
        &reassessment.rationale,
    )
    .await?;
    let row = db::lock_assessment_of_referral(&mut transaction, reassessment.referral_id)
        .await?
        .ok_or(AssessmentError::NotFound)?;
    within(scope, &row.area)?;
    check_reassessable(
        AssessmentState::try_from(row.state).unwrap_or_default(),
        row.decision
            .and_then(|decision| Decision::try_from(decision).ok()),
        row.engagement
            .and_then(|action| EngagementAction::try_from(action).ok()),
    )
    .map_err(AssessmentError::NotReassessable)?;

    let resolved =
        db::resolve_review_requests(&mut transaction, row.assessment_id, &caller.subject).await?;
    let ending = reassessment.ending;
    let mut review = db::insert_review(
        &mut transaction,
        &db::NewReviewRow {
            assessment_id: row.assessment_id,
            action: reassessment.action as i32,
            stage: ending.map(|ending| ending.stage as i32),
            reason: ending.map(|ending| ending.reason as i32),
            referred_to: ending.and_then(|ending| ending.referred_to.map(|to| to as i32)),
            rationale_sealed: rationale_sealed.as_deref(),
            reviewed_by: &caller.subject,
            reviewed_at: now.trunc_subsecs(6),
            resolved_requests: resolved,
        },
    )
    .await?;
    // Shown as written, without opening what was just sealed.
    review.rationale_sealed = None;
    review.rationale = reassessment.rationale.clone();
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
    .await?;
    audit(
        &mut transaction,
        caller,
        row.assessment_id,
        "reassessed",
        &format!(
            "{} resolved {resolved} review request(s)",
            reassessment.action.as_str_name()
        ),
    )
    .await?;
    let mut reading = keys.reading(Reader::of(caller, "Reassess"));
    let assessment = reload(&mut transaction, &mut reading, row.assessment_id).await?;
    transaction.commit().await?;
    tracing::info!(
        action = reassessment.action.as_str_name(),
        resolved_requests = resolved,
        "engagement re-assessed"
    );
    Ok(Reassessed { assessment, review })
}

/// The totals of a period and its non-engagements by stage and reason.
#[derive(Clone, Debug)]
pub struct Stats {
    pub totals: StatsTotalsRow,
    pub outcomes: Vec<OutcomeCountRow>,
}

/// Counts the referrals of the query's period in the area asked for (one
/// of the caller's), or in all the caller's areas.
pub async fn stats(
    handle: &ServiceHandle,
    scope: &AreaScope,
    query: &StatsQuery,
) -> Result<Stats, AssessmentError> {
    let covered = scope.covering(query.area.as_deref())?;
    let mut connection = handle.pool().acquire().await?;
    let areas = covered.as_deref();
    let totals = db::stats_totals(
        &mut connection,
        query.from,
        query.to,
        areas,
        &db::StatsCodes {
            open: AssessmentState::Open as i32,
            closed: AssessmentState::Closed as i32,
            accept: Decision::Accept as i32,
            not_taken_on: Decision::NotTakenOn as i32,
        },
    )
    .await?;
    let outcomes = db::stats_outcomes(
        &mut connection,
        query.from,
        query.to,
        areas,
        Decision::NotTakenOn as i32,
    )
    .await?;
    Ok(Stats { totals, outcomes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn status(error: AssessmentError) -> tonic::Status {
        error.into()
    }

    #[test]
    fn a_missing_assessment_is_not_found() {
        let missing = status(AssessmentError::NotFound);
        assert_eq!(missing.code(), Code::NotFound);
        assert_eq!(missing.message(), "assessment not found");
    }

    #[test]
    fn another_area_s_queue_is_refused_and_says_which_areas_are_the_caller_s() {
        let refused = status(AssessmentError::OutsideAreas(OutsideAreas {
            area: "East Durham".into(),
            yours: vec!["Darlington".into()],
        }));
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert_eq!(
            refused.message(),
            "you do not work in East Durham: your areas are Darlington"
        );
    }

    #[test]
    fn an_assessment_outside_the_caller_s_areas_is_not_found() {
        let darlington = AreaScope::Only(vec!["Darlington".into()]);
        assert!(within(&darlington, "Darlington").is_ok());
        assert!(within(&AreaScope::Every, "East Durham").is_ok());
        let hidden = status(within(&darlington, "East Durham").unwrap_err());
        let missing = status(AssessmentError::NotFound);
        assert_eq!(
            (hidden.code(), hidden.message()),
            (missing.code(), missing.message()),
            "told apart from a missing one by nothing"
        );
        assert!(within(&AreaScope::Only(Vec::new()), "Darlington").is_err());
    }

    #[test]
    fn the_wrong_state_is_a_failed_precondition_that_says_which() {
        let decided = status(AssessmentError::NotOpen {
            state: AssessmentState::Decided,
            action: "be decided",
        });
        assert_eq!(decided.code(), Code::FailedPrecondition);
        assert_eq!(
            decided.message(),
            "the assessment is ASSESSMENT_STATE_DECIDED; only an open assessment can be decided"
        );
        let reason = "support has already ended; refer the client again to restart";
        let ended = status(AssessmentError::NotReassessable(reason.into()));
        assert_eq!(ended.code(), Code::FailedPrecondition);
        assert_eq!(ended.message(), reason);
        let erased = status(AssessmentError::ClientErased);
        assert_eq!(erased.code(), Code::FailedPrecondition);
        assert_eq!(
            erased.message(),
            "the client's personal data was erased; nothing new about them is accepted"
        );
    }

    #[test]
    fn accepting_without_checks_names_the_missing_ones() {
        let missing = status(AssessmentError::ChecksMissing(vec![
            CheckKind::AdultAtReferral,
            CheckKind::WillWantCapacity,
        ]));
        assert_eq!(missing.code(), Code::FailedPrecondition);
        assert_eq!(
            missing.message(),
            "accepting needs every check recorded; missing: \
             CHECK_KIND_ADULT_AT_REFERRAL, CHECK_KIND_WILL_WANT_CAPACITY"
        );
    }

    #[test]
    fn an_unexplained_override_is_an_invalid_rationale() {
        let violations = check_override(Decision::Accept, Decision::NotTakenOn, " ").unwrap_err();
        let error = AssessmentError::OverrideNeedsRationale(violations.clone());
        assert_eq!(error.to_string(), OVERRIDE_NEEDS_REASON);
        match ApiError::from(error) {
            ApiError::InvalidArgument(mapped) => assert_eq!(mapped, violations),
            other => panic!("{other:?}"),
        }
        let refused = status(AssessmentError::OverrideNeedsRationale(violations));
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(refused.message(), "invalid request: rationale");
    }

    #[test]
    fn database_and_internal_causes_are_not_shown() {
        let internal = status(AssessmentError::Internal(anyhow::anyhow!(
            "decision recorded without a time"
        )));
        assert_eq!(internal.code(), Code::Internal);
        assert!(!internal.message().contains("decision"), "{internal:?}");
        let broken = status(AssessmentError::Database(sqlx::Error::RowNotFound));
        assert_eq!(broken.code(), Code::Internal);
        let down = status(AssessmentError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(down.code(), Code::Unavailable);
    }
}
