//! What mentor matching does, one function per use case: each takes the
//! parsed request and who asks, does its work in one transaction, and
//! answers with rows or a [`MatchingError`]. `grpc.rs` keeps tokens,
//! parsing and messages; nothing here knows about gRPC.
//!
//! Staff work in their areas (the [`AreaScope`] of `ProgrammeConfig::staff_scope`):
//! a coordinator registers mentors only there and lists only there (another
//! area is PERMISSION_DENIED); a mentor is theirs when the mentor works in
//! at least one of their areas, and a waiting client or a mentor elsewhere
//! does not exist for them (NOT_FOUND), so nothing outside their areas is
//! proposed, allocated or revealed. An admin works in every area.

use chrono::{DateTime, SubsecRound as _, Utc};
use cpm_proto::v1::{
    AllocationConfirmed, AllocationEndReason, AllocationEnded, CrimeType, Gender, MentorStatus,
    TrainingFormat, Vulnerability,
};
use cpm_runtime::areas::OutsideAreas;
use cpm_runtime::auth::{AreaScope, Caller, Role};
use cpm_runtime::bus::{ServiceHandle, outbox};
use cpm_runtime::grpc::ApiError;
use cpm_runtime::grpc::values::timestamp;
use cpm_runtime::standing::{self, Principal};
use uuid::Uuid;

use crate::alerts::{self, AlertQuery, AlertRow, AlertRules, CheckIn};
use crate::batch::{self, PoolClient};
use crate::db::{
    self, MentorDetails, MentorQuery, MentorRow, NewMentorRow, TrainingColumns, WaitingClientRow,
};
use crate::domain::{
    INITIAL_STATUS, MentorFilter, MentorLoad, MentorUpdate, NewAllocation, NewMentor,
    ProposalQuery, Training, TrainingRecord, outside_client_area,
};
use crate::fit::{self, AllocationRow, IncompatiblePair, PoorFitReport};
use crate::matching::{self, Candidate, ClientNeeds, PairHistory, Proposal, Weights};
use crate::safety::{self, Exclusion};
use crate::status::{self, StatusChange};
use crate::wait::{AreaLoad, Quoter, WaitEstimate};

/// Why a use case of mentor matching did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MatchingError {
    #[error("accepted referral")]
    ReferralNotFound,
    #[error("the referral already has a mentor pair allocated")]
    AlreadyAllocated,
    #[error("mentor {0}")]
    MentorNotFound(Uuid),
    #[error("mentor {0} {1}")]
    MentorUnavailable(Uuid, &'static str),
    #[error("{0}")]
    StatusRefused(String),
    #[error("mentor {0} must never be paired with this client: {1}")]
    Excluded(Uuid, String),
    #[error("{0}: say why in `reason`")]
    ReasonNeeded(String),
    #[error("allocation")]
    AllocationNotFound,
    #[error("{0}")]
    TooLate(String),
    #[error("{0}")]
    NotPermitted(&'static str),
    #[error("these two mentors were marked never to be proposed together")]
    PairIncompatible,
    #[error("a capacity of {capacity} is below the {current} client(s) the mentor supports now")]
    CapacityBelowClients { capacity: i32, current: i32 },
    #[error(transparent)]
    OutsideAreas(#[from] OutsideAreas),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<MatchingError> for ApiError {
    fn from(error: MatchingError) -> Self {
        match error {
            MatchingError::ReferralNotFound
            | MatchingError::MentorNotFound(_)
            | MatchingError::AllocationNotFound => ApiError::NotFound(error.to_string()),
            MatchingError::AlreadyAllocated
            | MatchingError::MentorUnavailable(..)
            | MatchingError::StatusRefused(_)
            | MatchingError::CapacityBelowClients { .. }
            | MatchingError::Excluded(..)
            | MatchingError::ReasonNeeded(_)
            | MatchingError::TooLate(_)
            | MatchingError::PairIncompatible => ApiError::FailedPrecondition(error.to_string()),
            MatchingError::OutsideAreas(_) | MatchingError::NotPermitted(_) => {
                ApiError::PermissionDenied(error.to_string())
            }
            MatchingError::Internal(error) => ApiError::Internal(anyhow::anyhow!(error)),
            MatchingError::Database(error) => error.into(),
        }
    }
}

impl From<MatchingError> for tonic::Status {
    fn from(error: MatchingError) -> Self {
        ApiError::from(error).into()
    }
}

/// Puts a mentor on the register, in areas of the caller's `scope` (all
/// of them), as TRAINED: waiting for a first client.
pub async fn register_mentor(
    handle: &ServiceHandle,
    caller: &Caller,
    scope: &AreaScope,
    mentor: &NewMentor,
) -> Result<MentorRow, MatchingError> {
    for area in &mentor.areas {
        scope.require(area)?;
    }
    let mentor_id = Uuid::now_v7();
    tracing::Span::current().record("mentor_id", tracing::field::display(mentor_id));
    let mut transaction = handle.begin().await?;
    db::insert_mentor(
        &mut transaction,
        &NewMentorRow {
            mentor_id,
            status: INITIAL_STATUS as i32,
            registered_by: &caller.subject,
            details: MentorDetails {
                display_name: mentor.display_name.clone(),
                gender: mentor.gender as i32,
                age_band: mentor.age_band as i32,
                areas: mentor.areas.clone(),
                availability: mentor.availability.iter().map(|a| *a as i32).collect(),
                capacity: mentor.capacity,
                lived_experience: mentor.lived_experience.iter().map(|e| *e as i32).collect(),
                ex_service_user: mentor.ex_service_user,
            },
            training: training_columns(&mentor.training),
        },
    )
    .await?;
    // Every service admits the mentor's token from now on (and refuses it
    // once they leave).
    standing::publish(
        &mut transaction,
        crate::NAME,
        &Principal::mentor(&mentor_id.to_string()),
        true,
    )
    .await?;
    let row = fetch_one(&mut transaction, mentor_id).await?;
    transaction.commit().await?;
    tracing::info!(
        status = INITIAL_STATUS.as_str_name(),
        areas = mentor.areas.len(),
        "mentor registered"
    );
    Ok(row)
}

/// One page of the register, by display name then ID, after `after`;
/// `limit` rows at most: the mentors `filter` asks for who work in its
/// area, which must be in the caller's `scope`, or else in any area of it.
pub async fn list_mentors(
    handle: &ServiceHandle,
    scope: &AreaScope,
    filter: &MentorFilter,
    after: Option<(&str, Uuid)>,
    limit: i64,
) -> Result<Vec<MentorRow>, MatchingError> {
    let listed = scope.covering(filter.area.as_deref())?;
    let mut connection = handle.pool().acquire().await?;
    Ok(db::list_mentors(
        &mut connection,
        &MentorQuery {
            areas: listed.as_deref(),
            status: filter.status.map(|status| status as i32),
            proposable_only: filter.available_for_proposal,
            after,
            limit,
        },
    )
    .await?)
}

/// Records a mentor's training, safeguarding, agreement or vetting; what
/// `record` leaves out is kept. The mentor must work in an area of the
/// caller's `scope`.
pub async fn record_training(
    handle: &ServiceHandle,
    scope: &AreaScope,
    record: &TrainingRecord,
) -> Result<MentorRow, MatchingError> {
    let id = record.mentor_id;
    let mut transaction = handle.begin().await?;
    let mentor = lock_seen(&mut transaction, scope, id).await?;
    let training = record.applied_to(&training_of(&mentor));
    db::record_training(&mut transaction, id, &training_columns(&training)).await?;
    let row = fetch_one(&mut transaction, id).await?;
    transaction.commit().await?;
    tracing::info!(
        mentor_id = %id,
        proposable = load_of(&row).unavailable_because().is_none(),
        "mentor training recorded"
    );
    Ok(row)
}

/// Sets the details `update` names for a mentor who works in an area of
/// the caller's `scope`. Every area added or removed must be the
/// caller's; the capacity may not fall below the clients the mentor
/// supports now.
pub async fn update_mentor_details(
    handle: &ServiceHandle,
    scope: &AreaScope,
    update: &MentorUpdate,
) -> Result<MentorRow, MatchingError> {
    let id = update.mentor_id;
    let mut transaction = handle.begin().await?;
    let mentor = lock_seen(&mut transaction, scope, id).await?;
    let details = updated_details(&mentor, update);
    for area in details
        .areas
        .iter()
        .filter(|area| !mentor.areas.contains(area))
        .chain(
            mentor
                .areas
                .iter()
                .filter(|area| !details.areas.contains(area)),
        )
    {
        scope.require(area)?;
    }
    if details.capacity < mentor.current_clients {
        return Err(MatchingError::CapacityBelowClients {
            capacity: details.capacity,
            current: mentor.current_clients,
        });
    }
    db::update_details(&mut transaction, id, &details).await?;
    let row = fetch_one(&mut transaction, id).await?;
    transaction.commit().await?;
    tracing::info!(mentor_id = %id, "mentor details updated");
    Ok(row)
}

/// `mentor`'s details with what `update` names laid over them.
fn updated_details(mentor: &MentorRow, update: &MentorUpdate) -> MentorDetails {
    MentorDetails {
        display_name: update
            .display_name
            .clone()
            .unwrap_or_else(|| mentor.display_name.clone()),
        gender: update.gender.map_or(mentor.gender, |gender| gender as i32),
        age_band: update.age_band.map_or(mentor.age_band, |band| band as i32),
        areas: update.areas.clone().unwrap_or_else(|| mentor.areas.clone()),
        availability: update.availability.as_ref().map_or_else(
            || mentor.availability.clone(),
            |values| values.iter().map(|value| *value as i32).collect(),
        ),
        capacity: update.capacity.unwrap_or(mentor.capacity),
        lived_experience: update.lived_experience.as_ref().map_or_else(
            || mentor.lived_experience.clone(),
            |values| values.iter().map(|value| *value as i32).collect(),
        ),
        ex_service_user: update.ex_service_user.unwrap_or(mentor.ex_service_user),
    }
}

/// Whether a mentor is one of the caller's: they share an area.
fn sees(scope: &AreaScope, mentor: &MentorRow) -> bool {
    mentor.areas.iter().any(|area| scope.admits(area))
}

/// Locks a mentor the caller sees and returns their row; NOT_FOUND when
/// there is none or they work in no area of the caller's.
async fn lock_seen(
    connection: &mut sqlx::PgConnection,
    scope: &AreaScope,
    id: Uuid,
) -> Result<MentorRow, MatchingError> {
    db::lock_mentors(connection, &[id]).await?;
    db::fetch_mentors(connection, &[id])
        .await?
        .into_iter()
        .next()
        .filter(|row| sees(scope, row))
        .ok_or(MatchingError::MentorNotFound(id))
}

async fn fetch_one(
    connection: &mut sqlx::PgConnection,
    id: Uuid,
) -> Result<MentorRow, MatchingError> {
    db::fetch_mentors(connection, &[id])
        .await?
        .into_iter()
        .next()
        .ok_or(MatchingError::MentorNotFound(id))
}

fn training_columns(training: &Training) -> TrainingColumns {
    TrainingColumns {
        training_cohort: training.cohort.clone(),
        training_format: training.format as i32,
        training_completed_on: training.completed_on,
        safeguarding_trained_on: training.safeguarding_trained_on,
        agreement_signed_on: training.agreement_signed_on,
        vetted_on: training.vetted_on,
    }
}

fn training_of(row: &MentorRow) -> Training {
    Training {
        cohort: row.training_cohort.clone(),
        format: TrainingFormat::try_from(row.training_format).unwrap_or_default(),
        completed_on: row.training_completed_on,
        safeguarding_trained_on: row.safeguarding_trained_on,
        agreement_signed_on: row.agreement_signed_on,
        vetted_on: row.vetted_on,
    }
}

/// Ranked mentor pairs for a waiting client in the caller's `scope`, from
/// the mentors of that scope.
pub async fn propose_matches(
    handle: &ServiceHandle,
    caller: &Caller,
    scope: &AreaScope,
    exclusions: &[Exclusion],
    weights: &Weights,
    query: &ProposalQuery,
) -> Result<Proposed, MatchingError> {
    let mut connection = handle.pool().acquire().await?;
    let client = db::fetch_waiting_client(&mut connection, query.referral_id)
        .await?
        .filter(|client| scope.admits(&client.area))
        .ok_or(MatchingError::ReferralNotFound)?;
    if client.allocated {
        return Err(MatchingError::AlreadyAllocated);
    }
    let committed = crimes(&client.perpetrator_of);
    // Every candidate works in the client's area, which is the caller's.
    let mut candidates = Vec::new();
    let mut excluded = Vec::new();
    for candidate in
        db::list_candidates_in(&mut connection, Some(std::slice::from_ref(&client.area)))
            .await?
            .iter()
            .map(to_candidate)
    {
        match safety::excluded_by(exclusions, &committed, &candidate.lived_experience) {
            Some(rule) => excluded.push(Excluded {
                mentor_id: candidate.mentor_id,
                display_name: candidate.display_name.clone(),
                rule: rule.name.clone(),
            }),
            None => candidates.push(candidate),
        }
    }
    let needs = needs_of(&client);
    let mut history = history_among(&mut connection, &candidates).await?;
    // A pair that did not work for this client is not proposed to them again.
    for pair in fit::poor_fit_pairs(&mut connection, client.referral_id).await? {
        if let [a, b] = pair[..] {
            history.record_incompatible(a, b);
        }
    }
    let started = std::time::Instant::now();
    let proposals = matching::propose(&needs, &candidates, &history, weights, query.limit);
    metrics::histogram!("cpm_matching_duration_seconds", "kind" => "propose")
        .record(started.elapsed().as_secs_f64());
    // Stored, so a confirmation can say which proposal it took up and any
    // proposal can be explained later by the weights that made it.
    let ids = db::insert_proposals(
        &mut connection,
        client.referral_id,
        &proposals,
        &weights.version,
        &caller.subject,
    )
    .await?;
    tracing::info!(
        candidates = candidates.len(),
        excluded = excluded.len(),
        proposals = proposals.len(),
        "mentor pairs proposed"
    );
    Ok(Proposed {
        proposals: ids.into_iter().zip(proposals).collect(),
        excluded,
    })
}

/// Whole-pool matching for the clients waiting in the caller's areas (or
/// the one asked for): one pair each for as many as the free places allow,
/// maximising the total score ([`batch`]). Each pair is stored as a
/// proposal, as ProposeMatches stores its own, for a coordinator to
/// confirm one by one. A pair that did not work for a waiting client is
/// left out of the whole batch.
pub async fn propose_pool_matches(
    handle: &ServiceHandle,
    caller: &Caller,
    scope: &AreaScope,
    exclusions: &[Exclusion],
    weights: &Weights,
    area: Option<&str>,
) -> Result<PoolProposed, MatchingError> {
    let areas = scope.covering(area)?;
    let mut connection = handle.pool().acquire().await?;
    let waiting = db::list_waiting_clients(&mut connection, areas.as_deref()).await?;
    let mentors: Vec<Candidate> = db::list_candidates_in(&mut connection, areas.as_deref())
        .await?
        .iter()
        .map(to_candidate)
        .collect();
    let mut history = history_among(&mut connection, &mentors).await?;
    for pair in db::poor_fit_pairs_in(&mut connection, areas.as_deref()).await? {
        if let [a, b] = pair[..] {
            history.record_incompatible(a, b);
        }
    }
    let clients: Vec<PoolClient> = waiting
        .iter()
        .map(|row| PoolClient {
            referral_id: row.referral_id,
            needs: needs_of(row),
        })
        .collect();
    let exclusions = exclusions.to_vec();
    let weights_owned = weights.clone();
    // CPU-bound for a large pool: off the request threads.
    let (clients, assignments) = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let assignments = batch::match_pool(
            &clients,
            &mentors,
            &history,
            &weights_owned,
            |client, mentor| {
                mentor.areas.contains(&client.needs.area)
                    && safety::excluded_by(
                        &exclusions,
                        &client.needs.perpetrator_of,
                        &mentor.lived_experience,
                    )
                    .is_none()
            },
        );
        metrics::histogram!("cpm_matching_duration_seconds", "kind" => "pool")
            .record(started.elapsed().as_secs_f64());
        (clients, assignments)
    })
    .await
    .map_err(|error| MatchingError::Internal(error.to_string()))?;
    let mut proposals = Vec::new();
    for assignment in &assignments {
        let ids = db::insert_proposals(
            &mut connection,
            assignment.referral_id,
            std::slice::from_ref(&assignment.proposal),
            &weights.version,
            &caller.subject,
        )
        .await?;
        proposals.push((assignment.referral_id, ids[0], assignment.proposal.clone()));
    }
    let matched: std::collections::HashSet<Uuid> =
        assignments.iter().map(|a| a.referral_id).collect();
    let unmatched = clients
        .iter()
        .map(|client| client.referral_id)
        .filter(|id| !matched.contains(id))
        .collect();
    tracing::info!(
        waiting = clients.len(),
        proposed = proposals.len(),
        "whole-pool proposals"
    );
    Ok(PoolProposed {
        proposals,
        unmatched,
    })
}

/// The batch's pairs (referral, stored proposal, pair) and the clients
/// left without one.
#[derive(Clone, Debug)]
pub struct PoolProposed {
    pub proposals: Vec<(Uuid, Uuid, Proposal)>,
    pub unmatched: Vec<Uuid>,
}

/// Ranked pairs, each with its stored proposal's ID, and the mentors the
/// safety rules left out.
#[derive(Clone, Debug)]
pub struct Proposed {
    pub proposals: Vec<(Uuid, Proposal)>,
    pub excluded: Vec<Excluded>,
}

/// A mentor a safety rule keeps from this client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excluded {
    pub mentor_id: Uuid,
    pub display_name: String,
    pub rule: String,
}

/// Stored crime values as crime types (an unknown value is dropped).
pub(crate) fn crimes(values: &[i32]) -> Vec<CrimeType> {
    values
        .iter()
        .filter_map(|value| CrimeType::try_from(*value).ok())
        .collect()
}

/// An allocation a coordinator confirmed.
#[derive(Clone, Debug)]
pub struct Confirmed {
    pub allocation_id: Uuid,
    pub referral_id: Uuid,
    pub mentor_ids: [Uuid; 2],
    pub confirmed_by: String,
    pub confirmed_at: DateTime<Utc>,
    pub proposal_id: Option<Uuid>,
    pub reason: Option<String>,
}

/// Allocates the pair a coordinator chose, and announces it. The client
/// and both mentors must be in the caller's `scope`; otherwise nothing
/// changes and they are not found. A mentor a safety rule keeps from this
/// client is refused whoever confirms. The decision is stored beside the
/// proposal it takes up; a pair nobody proposed for this client, or a
/// mentor from outside the client's area, needs the coordinator's reason.
pub async fn confirm_allocation(
    handle: &ServiceHandle,
    caller: &Caller,
    scope: &AreaScope,
    exclusions: &[Exclusion],
    allocation: &NewAllocation,
    now: DateTime<Utc>,
) -> Result<Confirmed, MatchingError> {
    let mentor_ids = allocation.mentor_ids;
    let mut transaction = handle.begin().await?;
    let client = db::lock_waiting_client(&mut transaction, allocation.referral_id)
        .await?
        .filter(|client| scope.admits(&client.area))
        .ok_or(MatchingError::ReferralNotFound)?;
    if client.allocated {
        return Err(MatchingError::AlreadyAllocated);
    }
    let locked = db::lock_mentors(&mut transaction, &mentor_ids).await?;
    if let Some(missing) = mentor_ids.iter().find(|id| !locked.contains(id)) {
        return Err(MatchingError::MentorNotFound(*missing));
    }
    let mentors = db::fetch_mentors(&mut transaction, &mentor_ids).await?;
    let mut needs_reason = None;
    for id in mentor_ids {
        let mentor = mentors
            .iter()
            .find(|row| row.mentor_id == id && sees(scope, row))
            .ok_or(MatchingError::MentorNotFound(id))?;
        if let Some(reason) = load_of(mentor).unavailable_because() {
            return Err(MatchingError::MentorUnavailable(id, reason));
        }
        if let Some(outside) = outside_client_area(&mentor.areas, &client.area) {
            needs_reason.get_or_insert(format!("mentor {id} {outside}"));
        }
        if let Some(rule) = safety::excluded_by(
            exclusions,
            &crimes(&client.perpetrator_of),
            &to_candidate(mentor).lived_experience,
        ) {
            return Err(MatchingError::Excluded(id, rule.name.clone()));
        }
    }
    let mut pair = mentor_ids;
    pair.sort();
    if fit::is_incompatible(&mut transaction, pair).await? {
        return Err(MatchingError::PairIncompatible);
    }
    let proposal_id = db::find_proposal(&mut transaction, allocation.referral_id, &pair).await?;
    if proposal_id.is_none() {
        needs_reason.get_or_insert("this pair was not proposed for the client".to_owned());
    }
    if let (Some(why), None) = (needs_reason, &allocation.reason) {
        return Err(MatchingError::ReasonNeeded(why));
    }

    let allocation_id = Uuid::now_v7();
    tracing::Span::current().record("allocation_id", tracing::field::display(allocation_id));
    let confirmed_at = now.trunc_subsecs(6);
    db::insert_allocation(
        &mut transaction,
        &db::NewAllocationRow {
            allocation_id,
            referral_id: allocation.referral_id,
            mentor_ids: &mentor_ids,
            confirmed_by: &caller.subject,
            confirmed_at,
            proposal_id,
            reason: allocation.reason.as_deref(),
        },
    )
    .await?;
    db::mark_client_allocated(&mut transaction, allocation.referral_id).await?;
    db::set_mentors_status(&mut transaction, &mentor_ids, MentorStatus::Active).await?;
    outbox::enqueue(
        &mut transaction,
        crate::NAME,
        &AllocationConfirmed {
            allocation_id: allocation_id.to_string(),
            referral_id: allocation.referral_id.to_string(),
            agency_id: client.agency_id.clone(),
            area: client.area.clone(),
            mentor_ids: mentor_ids.iter().map(Uuid::to_string).collect(),
            confirmed_by: caller.subject.clone(),
            confirmed_at: Some(timestamp(confirmed_at)),
        },
    )
    .await?;
    transaction.commit().await?;
    tracing::info!("allocation confirmed");
    Ok(Confirmed {
        allocation_id,
        referral_id: allocation.referral_id,
        mentor_ids,
        confirmed_by: caller.subject.clone(),
        confirmed_at,
        proposal_id,
        reason: allocation.reason.clone(),
    })
}

/// Moves a mentor of the caller's `scope` to another status, keeping the
/// reason; a mentor who leaves or declines loses their standing in every
/// service in the same transaction (`principal.status_changed`).
pub async fn change_mentor_status(
    handle: &ServiceHandle,
    caller: &Caller,
    scope: &AreaScope,
    change: &StatusChange,
) -> Result<MentorRow, MatchingError> {
    let id = change.mentor_id;
    let mut transaction = handle.begin().await?;
    let mentor = lock_seen(&mut transaction, scope, id).await?;
    let from = MentorStatus::try_from(mentor.status).unwrap_or_default();
    if let Some(refused) = status::refusal(
        from,
        change.to,
        mentor.current_clients,
        mentor.safeguarding_trained_on.is_some(),
        mentor.agreement_signed_on.is_some(),
    ) {
        return Err(MatchingError::StatusRefused(refused));
    }
    db::change_status(
        &mut transaction,
        id,
        from,
        change.to,
        &change.reason,
        &caller.subject,
    )
    .await?;
    if status::in_good_standing(from) != status::in_good_standing(change.to) {
        standing::publish(
            &mut transaction,
            crate::NAME,
            &Principal::mentor(&id.to_string()),
            status::in_good_standing(change.to),
        )
        .await?;
    }
    let row = fetch_one(&mut transaction, id).await?;
    transaction.commit().await?;
    tracing::info!(
        mentor_id = %id,
        from = from.as_str_name(),
        to = change.to.as_str_name(),
        "mentor status changed"
    );
    Ok(row)
}

/// How many clients wait in `area`, how many mentor places are free for a
/// client who committed `perpetrator_of`, and the wait range of such a
/// client joining the queue now.
pub async fn estimate_wait(
    handle: &ServiceHandle,
    quoter: &Quoter,
    area: &str,
    perpetrator_of: &[CrimeType],
) -> Result<(AreaLoad, WaitEstimate), MatchingError> {
    let mut connection = handle.pool().acquire().await?;
    Ok(quoter
        .quote(&mut connection, area, perpetrator_of, None)
        .await?)
}

/// Ends an allocation whose pair is not working, within the early fit
/// window (`early_fit_contacts` logged contacts): either mentor of the
/// pair, or staff of the client's area, may. The client waits again for
/// another pair and the former mentors hear of it through
/// `allocation.ended`; staff may also mark the two never to be proposed
/// together.
pub async fn report_poor_fit(
    handle: &ServiceHandle,
    caller: &Caller,
    scope: &AreaScope,
    early_fit_contacts: u32,
    report: &PoorFitReport,
) -> Result<AllocationRow, MatchingError> {
    let mut transaction = handle.begin().await?;
    let allocation = fit::fetch_allocation(&mut transaction, report.allocation_id)
        .await?
        .filter(|row| may_report_on(caller, scope, row))
        .ok_or(MatchingError::AllocationNotFound)?;
    if !allocation.active {
        return Err(MatchingError::TooLate(
            "the allocation has already ended".into(),
        ));
    }
    if i64::from(allocation.contacts) > i64::from(early_fit_contacts) {
        return Err(MatchingError::TooLate(format!(
            "{} contacts are past the early fit window of {early_fit_contacts}; \
             end the engagement instead",
            allocation.contacts
        )));
    }
    if report.mentors_incompatible {
        if caller.role == Role::Mentor {
            return Err(MatchingError::NotPermitted(
                "only staff may mark mentors never to be proposed together",
            ));
        }
        let pair = [allocation.mentor_ids[0], allocation.mentor_ids[1]];
        fit::mark_incompatible(&mut transaction, pair, &report.reason, &caller.subject).await?;
    }
    let ended_at = fit::end_for_poor_fit(
        &mut transaction,
        &allocation,
        &caller.subject,
        &report.reason,
    )
    .await?;
    outbox::enqueue(
        &mut transaction,
        crate::NAME,
        &AllocationEnded {
            allocation_id: allocation.allocation_id.to_string(),
            referral_id: allocation.referral_id.to_string(),
            agency_id: allocation.agency_id.clone(),
            area: allocation.area.clone(),
            mentor_ids: allocation.mentor_ids.iter().map(Uuid::to_string).collect(),
            reason: AllocationEndReason::PoorFit as i32,
            ended_by: caller.subject.clone(),
            ended_at: Some(timestamp(ended_at)),
        },
    )
    .await?;
    let ended = fit::fetch_allocation(&mut transaction, allocation.allocation_id)
        .await?
        .ok_or(MatchingError::AllocationNotFound)?;
    transaction.commit().await?;
    tracing::info!(
        allocation_id = %allocation.allocation_id,
        contacts = allocation.contacts,
        "allocation ended for poor fit; client waits for another pair"
    );
    Ok(ended)
}

/// A mentor may report on their own pair; staff on allocations in their areas.
fn may_report_on(caller: &Caller, scope: &AreaScope, allocation: &AllocationRow) -> bool {
    match caller.role {
        Role::Mentor => caller
            .mentor_id
            .as_deref()
            .and_then(|id| Uuid::parse_str(id).ok())
            .is_some_and(|id| allocation.mentor_ids.contains(&id)),
        _ => scope.admits(&allocation.area),
    }
}

/// Marks two mentors the caller sees as never to be proposed together.
pub async fn mark_pair_incompatible(
    handle: &ServiceHandle,
    caller: &Caller,
    scope: &AreaScope,
    marked: &IncompatiblePair,
) -> Result<(), MatchingError> {
    let mut transaction = handle.begin().await?;
    for id in marked.pair {
        lock_seen(&mut transaction, scope, id).await?;
    }
    fit::mark_incompatible(
        &mut transaction,
        marked.pair,
        &marked.reason,
        &caller.subject,
    )
    .await?;
    transaction.commit().await?;
    tracing::info!(mentor_a = %marked.pair[0], mentor_b = %marked.pair[1], "pair marked incompatible");
    Ok(())
}

/// Records a progress check-in with a mentor the caller sees who is still
/// volunteering; returns when the next is due.
pub async fn record_check_in(
    handle: &ServiceHandle,
    caller: &Caller,
    scope: &AreaScope,
    rules: AlertRules,
    check_in: &CheckIn,
) -> Result<chrono::NaiveDate, MatchingError> {
    let mut transaction = handle.begin().await?;
    let mentor = lock_seen(&mut transaction, scope, check_in.mentor_id).await?;
    if !status::in_good_standing(MentorStatus::try_from(mentor.status).unwrap_or_default()) {
        return Err(MatchingError::StatusRefused(
            "the mentor no longer volunteers".into(),
        ));
    }
    let next_due = alerts::record_check_in(
        &mut transaction,
        check_in.mentor_id,
        check_in.held_on,
        &caller.subject,
        rules,
    )
    .await?;
    transaction.commit().await?;
    Ok(next_due)
}

/// The coordinator report: alerts of the mentors working in the asked
/// area, or in every area of the caller's.
pub async fn list_mentor_alerts(
    handle: &ServiceHandle,
    scope: &AreaScope,
    rules: AlertRules,
    query: &AlertQuery,
) -> Result<Vec<AlertRow>, MatchingError> {
    let areas = scope.covering(query.area.as_deref())?;
    let mut connection = handle.pool().acquire().await?;
    Ok(alerts::list(
        &mut connection,
        rules,
        areas.as_deref(),
        query.after,
        query.page_size + 1,
    )
    .await?)
}

pub(crate) fn load_of(row: &MentorRow) -> MentorLoad {
    MentorLoad {
        status: row.status,
        safeguarding_trained: row.safeguarding_trained_on.is_some(),
        agreement_signed: row.agreement_signed_on.is_some(),
        capacity: row.capacity,
        current_clients: row.current_clients,
    }
}

fn to_candidate(row: &MentorRow) -> Candidate {
    // A TRAINED mentor has never had a client: they wait since training.
    let waiting_days = (row.status == MentorStatus::Trained as i32).then(|| {
        let trained = row
            .training_completed_on
            .unwrap_or_else(|| row.trained_on.date_naive());
        (Utc::now().date_naive() - trained).num_days().max(0)
    });
    Candidate {
        mentor_id: row.mentor_id,
        display_name: row.display_name.clone(),
        gender: Gender::try_from(row.gender).unwrap_or_default(),
        areas: row.areas.clone(),
        lived_experience: row
            .lived_experience
            .iter()
            .filter_map(|value| cpm_proto::v1::LivedExperience::try_from(*value).ok())
            .collect(),
        free_places: load_of(row).free_places(),
        waiting_days,
    }
}

/// What the client's needs are, from their waiting row.
fn needs_of(client: &WaitingClientRow) -> ClientNeeds {
    ClientNeeds {
        area: client.area.clone(),
        vulnerabilities: client
            .vulnerabilities
            .iter()
            .filter_map(|value| Vulnerability::try_from(*value).ok())
            .collect(),
        gender: Gender::try_from(client.client_gender).unwrap_or_default(),
        victim_of: crimes(&client.victim_of),
        perpetrator_of: crimes(&client.perpetrator_of),
    }
}

/// What is known of the pairs among `candidates`: those who completed a
/// client together, and those never to be proposed together.
async fn history_among(
    connection: &mut sqlx::PgConnection,
    candidates: &[Candidate],
) -> Result<PairHistory, sqlx::Error> {
    let ids: Vec<Uuid> = candidates.iter().map(|c| c.mentor_id).collect();
    let mut history = PairHistory::default();
    for pair in fit::pairs_among(connection, &ids).await? {
        if pair.incompatible {
            history.record_incompatible(pair.mentor_a, pair.mentor_b);
        } else if pair.clients_completed > 0 {
            history.record_worked(pair.mentor_a, pair.mentor_b);
        }
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use cpm_proto::v1::{AgeBand, Availability, LivedExperience};

    fn row(status: MentorStatus, capacity: i32, current_clients: i32) -> MentorRow {
        MentorRow {
            mentor_id: Uuid::now_v7(),
            display_name: "Mentor A".into(),
            gender: Gender::Female as i32,
            area: "Darlington".into(),
            areas: vec!["Darlington".into(), "East Durham".into()],
            lived_experience: vec![LivedExperience::Debt as i32, 999],
            status: status as i32,
            capacity,
            trained_on: Utc::now(),
            training_cohort: "2026-03".into(),
            training_format: TrainingFormat::TwoDays as i32,
            training_completed_on: None,
            safeguarding_trained_on: NaiveDate::from_ymd_opt(2026, 3, 1),
            agreement_signed_on: None,
            vetted_on: None,
            age_band: AgeBand::Aged35To44 as i32,
            availability: vec![Availability::Weekends as i32],
            ex_service_user: false,
            current_clients,
            first_allocated_at: None,
        }
    }

    #[test]
    fn a_candidate_keeps_known_experience_and_counts_free_places() {
        let candidate = to_candidate(&row(MentorStatus::Active, 3, 1));
        assert_eq!(candidate.lived_experience, [LivedExperience::Debt]);
        assert_eq!(candidate.free_places, 2);
        assert_eq!(candidate.gender, Gender::Female);
        assert_eq!(candidate.areas, ["Darlington", "East Durham"]);
    }

    #[test]
    fn a_mentor_is_seen_by_staff_of_any_of_their_areas() {
        let mentor = row(MentorStatus::Active, 2, 0);
        let only =
            |areas: &[&str]| AreaScope::Only(areas.iter().map(|a| (*a).to_owned()).collect());
        assert!(sees(&only(&["East Durham"]), &mentor));
        assert!(sees(&only(&["Darlington", "North Durham"]), &mentor));
        assert!(!sees(&only(&["North Durham"]), &mentor));
        assert!(!sees(&only(&[]), &mentor));
        assert!(sees(&AreaScope::Every, &mentor));
    }

    #[test]
    fn a_mentor_load_reads_safeguarding_and_the_agreement_from_their_dates() {
        let mut mentor = row(MentorStatus::Trained, 2, 0);
        assert_eq!(
            load_of(&mentor).unavailable_because(),
            Some("has not signed the mentor agreement")
        );
        mentor.agreement_signed_on = NaiveDate::from_ymd_opt(2026, 3, 2);
        assert_eq!(load_of(&mentor).unavailable_because(), None);
        mentor.safeguarding_trained_on = None;
        assert_eq!(
            load_of(&mentor).unavailable_because(),
            Some("has no safeguarding training")
        );
    }

    #[test]
    fn an_update_lays_what_it_names_over_the_details_on_record() {
        let mentor = row(MentorStatus::Active, 2, 1);
        let kept = updated_details(
            &mentor,
            &MentorUpdate {
                mentor_id: mentor.mentor_id,
                ..MentorUpdate::default()
            },
        );
        assert_eq!(
            kept,
            MentorDetails {
                display_name: mentor.display_name.clone(),
                gender: mentor.gender,
                age_band: mentor.age_band,
                areas: mentor.areas.clone(),
                availability: mentor.availability.clone(),
                capacity: mentor.capacity,
                lived_experience: mentor.lived_experience.clone(),
                ex_service_user: mentor.ex_service_user,
            }
        );
        let changed = updated_details(
            &mentor,
            &MentorUpdate {
                mentor_id: mentor.mentor_id,
                areas: Some(vec!["North Durham".into()]),
                capacity: Some(4),
                lived_experience: Some(vec![]),
                ex_service_user: Some(true),
                ..MentorUpdate::default()
            },
        );
        assert_eq!(changed.areas, ["North Durham"]);
        assert_eq!(changed.capacity, 4);
        assert!(changed.lived_experience.is_empty());
        assert!(changed.ex_service_user);
        assert_eq!(changed.display_name, mentor.display_name);
        assert_eq!(changed.availability, mentor.availability);
    }

    #[test]
    fn training_survives_the_trip_to_its_columns_and_back() {
        let mentor = row(MentorStatus::Active, 2, 1);
        let training = training_of(&mentor);
        assert_eq!(training.format, TrainingFormat::TwoDays);
        let columns = training_columns(&training);
        assert_eq!(columns.training_cohort, mentor.training_cohort);
        assert_eq!(columns.training_format, mentor.training_format);
        assert_eq!(
            columns.safeguarding_trained_on,
            mentor.safeguarding_trained_on
        );
        assert_eq!(columns.agreement_signed_on, None);
    }

    #[test]
    fn errors_map_to_the_status_a_caller_can_act_on() {
        let id = Uuid::now_v7();
        let code = |error: MatchingError| tonic::Status::from(error).code();
        assert_eq!(code(MatchingError::ReferralNotFound), tonic::Code::NotFound);
        assert_eq!(
            code(MatchingError::MentorNotFound(id)),
            tonic::Code::NotFound
        );
        assert_eq!(
            code(MatchingError::AlreadyAllocated),
            tonic::Code::FailedPrecondition
        );
        let outside = tonic::Status::from(MatchingError::from(OutsideAreas {
            area: "East Durham".into(),
            yours: vec!["Darlington".into()],
        }));
        assert_eq!(outside.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            outside.message(),
            "you do not work in East Durham: your areas are Darlington"
        );
        let below = tonic::Status::from(MatchingError::CapacityBelowClients {
            capacity: 1,
            current: 2,
        });
        assert_eq!(below.code(), tonic::Code::FailedPrecondition);
        assert!(
            below.message().contains("below the 2 client(s)"),
            "{below:?}"
        );
        let excluded = tonic::Status::from(MatchingError::Excluded(id, "the rule".into()));
        assert_eq!(excluded.code(), tonic::Code::FailedPrecondition);
        assert!(
            excluded
                .message()
                .contains("must never be paired with this client: the rule"),
            "{excluded:?}"
        );
        let unavailable = tonic::Status::from(MatchingError::MentorUnavailable(id, "has left"));
        assert_eq!(unavailable.code(), tonic::Code::FailedPrecondition);
        assert_eq!(unavailable.message(), format!("mentor {id} has left"));
        assert_eq!(
            tonic::Status::from(MatchingError::ReferralNotFound).message(),
            "accepted referral not found"
        );
    }
}
