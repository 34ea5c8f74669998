//! Action-named queries on the `mentor_matching` schema. A mentor's current
//! clients are counted from the active allocations naming them, never
//! stored, so ending an allocation frees the place by itself. A client whose
//! support ended is no longer known as waiting.

use chrono::{DateTime, NaiveDate, Utc};
use cpm_proto::v1::{AllocationEndReason, MentorStatus};
use sqlx::PgConnection;
use uuid::Uuid;

/// `query_as!` into [`MentorRow`]: the columns of every `mentor` row with
/// its current clients (the number of its active allocations, as
/// `load.current_clients`) and when its first allocation was confirmed,
/// then `$rest` (a string literal: conditions, order, limit), with its
/// arguments. Both come from one pass over the mentor's allocations, which
/// the join visits whether or not they are active.
macro_rules! mentors {
    ($rest:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            MentorRow,
            "SELECT mentor.mentor_id, mentor.display_name, mentor.gender, mentor.area, \
               mentor.areas, mentor.lived_experience, mentor.status, mentor.capacity, \
               mentor.trained_on, mentor.training_cohort, mentor.training_format, \
               mentor.training_completed_on, mentor.safeguarding_trained_on, \
               mentor.agreement_signed_on, mentor.vetted_on, mentor.age_band, \
               mentor.availability, mentor.ex_service_user, \
               load.current_clients AS \"current_clients!\", load.first_allocated_at \
             FROM mentor_matching.mentor \
             CROSS JOIN LATERAL (SELECT \
                 (count(*) FILTER (WHERE allocation.active))::integer AS current_clients, \
                 min(allocation.confirmed_at) AS first_allocated_at \
               FROM mentor_matching.allocation_mentor \
               JOIN mentor_matching.allocation \
                 ON allocation.allocation_id = allocation_mentor.allocation_id \
               WHERE allocation_mentor.mentor_id = mentor.mentor_id) AS load "
                + $rest
            $(, $arg)*
        )
    };
}

/// The statuses in which a mentor may be proposed and allocated: waiting
/// for a first client, or active. With safeguarding training and a signed
/// agreement on record and a free place, such a mentor is *proposable*
/// (`domain::MentorLoad::unavailable_because` says the same in Rust).
const PROPOSABLE_STATUSES: [i32; 2] = [MentorStatus::Trained as i32, MentorStatus::Active as i32];

/// A mentor with their current number of clients.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MentorRow {
    pub mentor_id: Uuid,
    pub display_name: String,
    pub gender: i32,
    /// The primary area: the first of `areas`.
    pub area: String,
    pub areas: Vec<String>,
    pub lived_experience: Vec<i32>,
    pub status: i32,
    pub capacity: i32,
    pub trained_on: DateTime<Utc>,
    pub training_cohort: String,
    pub training_format: i32,
    pub training_completed_on: Option<NaiveDate>,
    pub safeguarding_trained_on: Option<NaiveDate>,
    pub agreement_signed_on: Option<NaiveDate>,
    pub vetted_on: Option<NaiveDate>,
    pub age_band: i32,
    pub availability: Vec<i32>,
    pub ex_service_user: bool,
    pub current_clients: i32,
    /// When the mentor's first allocation was confirmed, whether or not it
    /// lasted; `None` before one.
    pub first_allocated_at: Option<DateTime<Utc>>,
}

/// What a new mentor row holds.
pub struct NewMentorRow<'a> {
    pub mentor_id: Uuid,
    pub status: i32,
    pub registered_by: &'a str,
    pub details: MentorDetails,
    pub training: TrainingColumns,
}

/// The details UpdateMentorDetails changes, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MentorDetails {
    pub display_name: String,
    pub gender: i32,
    pub age_band: i32,
    /// The primary area first.
    pub areas: Vec<String>,
    pub availability: Vec<i32>,
    pub capacity: i32,
    pub lived_experience: Vec<i32>,
    pub ex_service_user: bool,
}

/// The training columns, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainingColumns {
    pub training_cohort: String,
    pub training_format: i32,
    pub training_completed_on: Option<NaiveDate>,
    pub safeguarding_trained_on: Option<NaiveDate>,
    pub agreement_signed_on: Option<NaiveDate>,
    pub vetted_on: Option<NaiveDate>,
}

/// Inserts a mentor.
pub async fn insert_mentor(
    connection: &mut PgConnection,
    row: &NewMentorRow<'_>,
) -> Result<(), sqlx::Error> {
    let (details, training) = (&row.details, &row.training);
    sqlx::query!(
        "INSERT INTO mentor_matching.mentor (mentor_id, display_name, gender, area, areas, \
         lived_experience, status, capacity, registered_by, training_cohort, training_format, \
         training_completed_on, safeguarding_trained_on, agreement_signed_on, vetted_on, \
         age_band, availability, ex_service_user) \
         VALUES ($1, $2, $3, ($4::text[])[1], $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
         $17)",
        row.mentor_id,
        details.display_name,
        details.gender,
        &details.areas,
        &details.lived_experience,
        row.status,
        details.capacity,
        row.registered_by,
        training.training_cohort,
        training.training_format,
        training.training_completed_on,
        training.safeguarding_trained_on,
        training.agreement_signed_on,
        training.vetted_on,
        details.age_band,
        &details.availability,
        details.ex_service_user,
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Sets a mentor's details.
pub async fn update_details(
    connection: &mut PgConnection,
    mentor_id: Uuid,
    details: &MentorDetails,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE mentor_matching.mentor SET display_name = $2, gender = $3, area = ($4::text[])[1], \
         areas = $4, availability = $5, capacity = $6, lived_experience = $7, \
         ex_service_user = $8, age_band = $9 WHERE mentor_id = $1",
        mentor_id,
        details.display_name,
        details.gender,
        &details.areas,
        &details.availability,
        details.capacity,
        &details.lived_experience,
        details.ex_service_user,
        details.age_band,
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Sets a mentor's training columns.
pub async fn record_training(
    connection: &mut PgConnection,
    mentor_id: Uuid,
    training: &TrainingColumns,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE mentor_matching.mentor SET training_cohort = $2, training_format = $3, \
         training_completed_on = $4, safeguarding_trained_on = $5, agreement_signed_on = $6, \
         vetted_on = $7 WHERE mentor_id = $1",
        mentor_id,
        training.training_cohort,
        training.training_format,
        training.training_completed_on,
        training.safeguarding_trained_on,
        training.agreement_signed_on,
        training.vetted_on,
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// What ListMentors asks the register for.
pub struct MentorQuery<'a> {
    /// Mentors who work in at least one of these (`None`: every area).
    pub areas: Option<&'a [String]>,
    pub status: Option<i32>,
    pub proposable_only: bool,
    /// The display name and ID the page starts after.
    pub after: Option<(&'a str, Uuid)>,
    pub limit: i64,
}

/// The mentors `query` asks for, by display name then ID; never an erased one.
pub async fn list_mentors(
    connection: &mut PgConnection,
    query: &MentorQuery<'_>,
) -> Result<Vec<MentorRow>, sqlx::Error> {
    mentors!(
        "WHERE ($1::text[] IS NULL OR mentor.areas && $1) AND mentor.erased_at IS NULL \
         AND ($2::text IS NULL OR (mentor.display_name, mentor.mentor_id) > ($2, $3)) \
         AND ($5::integer IS NULL OR mentor.status = $5) \
         AND (NOT $6 OR (mentor.status = ANY($7) \
           AND mentor.safeguarding_trained_on IS NOT NULL \
           AND mentor.agreement_signed_on IS NOT NULL \
           AND load.current_clients < mentor.capacity)) \
         ORDER BY mentor.display_name, mentor.mentor_id LIMIT $4",
        query.areas,
        query.after.map(|(name, _)| name),
        query.after.map(|(_, id)| id),
        query.limit,
        query.status,
        query.proposable_only,
        &PROPOSABLE_STATUSES,
    )
    .fetch_all(connection)
    .await
}

/// The mentors who may be proposed for a client of any of `areas` (every
/// area when `None`).
pub async fn list_candidates_in(
    connection: &mut PgConnection,
    areas: Option<&[String]>,
) -> Result<Vec<MentorRow>, sqlx::Error> {
    mentors!(
        "WHERE ($1::text[] IS NULL OR mentor.areas && $1) \
           AND mentor.status = ANY($2) \
           AND mentor.safeguarding_trained_on IS NOT NULL \
           AND mentor.agreement_signed_on IS NOT NULL \
           AND load.current_clients < mentor.capacity \
         ORDER BY mentor.mentor_id",
        areas,
        &PROPOSABLE_STATUSES,
    )
    .fetch_all(connection)
    .await
}

/// Locks the named mentors, in ID order so concurrent allocations cannot
/// deadlock. Their current clients are counted separately, after the lock
/// is held, so the count sees allocations committed while waiting for it.
pub async fn lock_mentors(
    connection: &mut PgConnection,
    mentor_ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT mentor_id FROM mentor_matching.mentor WHERE mentor_id = ANY($1) \
         ORDER BY mentor_id FOR UPDATE",
        mentor_ids
    )
    .fetch_all(connection)
    .await
}

/// The named mentors with their current clients; an erased mentor is not
/// on the register any more (see [`crate::retention`]).
pub async fn fetch_mentors(
    connection: &mut PgConnection,
    mentor_ids: &[Uuid],
) -> Result<Vec<MentorRow>, sqlx::Error> {
    mentors!(
        "WHERE mentor.mentor_id = ANY($1) AND mentor.erased_at IS NULL \
         ORDER BY mentor.mentor_id",
        mentor_ids
    )
    .fetch_all(connection)
    .await
}

/// Sets one mentor's status and keeps the change, with its reason, in
/// `mentor_status_change`.
pub async fn change_status(
    connection: &mut PgConnection,
    mentor_id: Uuid,
    from: MentorStatus,
    to: MentorStatus,
    reason: &str,
    changed_by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH changed AS (UPDATE mentor_matching.mentor SET status = $3 WHERE mentor_id = $1) \
         INSERT INTO mentor_matching.mentor_status_change \
           (mentor_id, from_status, to_status, reason, changed_by) \
         VALUES ($1, $2, $3, $4, $5)",
        mentor_id,
        from as i32,
        to as i32,
        reason,
        changed_by
    )
    .execute(connection)
    .await?;
    Ok(())
}

pub async fn set_mentors_status(
    connection: &mut PgConnection,
    mentor_ids: &[Uuid],
    status: MentorStatus,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE mentor_matching.mentor SET status = $2 WHERE mentor_id = ANY($1)",
        mentor_ids,
        status as i32
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// A client waiting for, or already given, a mentor pair.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct WaitingClientRow {
    pub referral_id: Uuid,
    pub agency_id: String,
    pub area: String,
    pub vulnerabilities: Vec<i32>,
    pub client_gender: i32,
    pub accepted_at: DateTime<Utc>,
    pub estimated_start: DateTime<Utc>,
    pub allocated: bool,
    /// cpm.v1.CrimeType values, for the safety exclusions.
    pub victim_of: Vec<i32>,
    pub perpetrator_of: Vec<i32>,
}

/// What a newly accepted client's row holds.
pub struct NewWaitingClient<'a> {
    pub referral_id: Uuid,
    pub agency_id: &'a str,
    pub area: &'a str,
    pub vulnerabilities: Vec<i32>,
    pub client_gender: i32,
    pub accepted_at: DateTime<Utc>,
    pub estimated_start: DateTime<Utc>,
    pub victim_of: Vec<i32>,
    pub perpetrator_of: Vec<i32>,
}

/// Adds an accepted client; false when the referral is already known.
pub async fn insert_waiting_client(
    connection: &mut PgConnection,
    row: &NewWaitingClient<'_>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!(
        "INSERT INTO mentor_matching.waiting_client (referral_id, agency_id, area, \
         vulnerabilities, client_gender, accepted_at, estimated_start, victim_of, perpetrator_of) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (referral_id) DO NOTHING",
        row.referral_id,
        row.agency_id,
        row.area,
        &row.vulnerabilities,
        row.client_gender,
        row.accepted_at,
        row.estimated_start,
        &row.victim_of,
        &row.perpetrator_of,
    )
    .execute(connection)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub async fn fetch_waiting_client(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Option<WaitingClientRow>, sqlx::Error> {
    sqlx::query_as!(
        WaitingClientRow,
        "SELECT referral_id, agency_id, area, vulnerabilities, client_gender, accepted_at, \
           estimated_start, allocated, victim_of, perpetrator_of \
         FROM mentor_matching.waiting_client \
         WHERE referral_id = $1 AND ended_at IS NULL",
        referral_id
    )
    .fetch_optional(connection)
    .await
}

/// The clients waiting for a pair in any of `areas` (every area when
/// `None`), longest waiting first.
pub async fn list_waiting_clients(
    connection: &mut PgConnection,
    areas: Option<&[String]>,
) -> Result<Vec<WaitingClientRow>, sqlx::Error> {
    sqlx::query_as!(
        WaitingClientRow,
        "SELECT referral_id, agency_id, area, vulnerabilities, client_gender, accepted_at, \
           estimated_start, allocated, victim_of, perpetrator_of \
         FROM mentor_matching.waiting_client \
         WHERE NOT allocated AND ended_at IS NULL AND ($1::text[] IS NULL OR area = ANY($1)) \
         ORDER BY accepted_at, referral_id",
        areas
    )
    .fetch_all(connection)
    .await
}

/// The poor-fit pairs (ascending) of every client waiting in `areas`.
pub async fn poor_fit_pairs_in(
    connection: &mut PgConnection,
    areas: Option<&[String]>,
) -> Result<Vec<Vec<Uuid>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT ARRAY(SELECT mentor_id FROM mentor_matching.allocation_mentor AS pair \
                 WHERE pair.allocation_id = allocation.allocation_id ORDER BY mentor_id) \
           AS \"mentor_ids!\" \
         FROM mentor_matching.allocation \
         JOIN mentor_matching.waiting_client AS client USING (referral_id) \
         WHERE allocation.end_reason = $2 AND NOT client.allocated \
           AND client.ended_at IS NULL AND ($1::text[] IS NULL OR client.area = ANY($1))",
        areas,
        cpm_proto::v1::AllocationEndReason::PoorFit as i32
    )
    .fetch_all(connection)
    .await
}

/// Locks a client's row for allocation.
pub async fn lock_waiting_client(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Option<WaitingClientRow>, sqlx::Error> {
    sqlx::query_as!(
        WaitingClientRow,
        "SELECT referral_id, agency_id, area, vulnerabilities, client_gender, accepted_at, \
           estimated_start, allocated, victim_of, perpetrator_of \
         FROM mentor_matching.waiting_client \
         WHERE referral_id = $1 AND ended_at IS NULL FOR UPDATE",
        referral_id
    )
    .fetch_optional(connection)
    .await
}

pub async fn mark_client_allocated(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE mentor_matching.waiting_client SET allocated = true WHERE referral_id = $1",
        referral_id
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Records an allocation and its two mentors; returns when it was confirmed.
/// Stores the pairs proposed for `referral_id` (each pair in ascending
/// order), with what scored them; returns their IDs in the same order.
pub async fn insert_proposals(
    connection: &mut PgConnection,
    referral_id: Uuid,
    proposals: &[crate::matching::Proposal],
    weights_version: &str,
    proposed_by: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let ids: Vec<Uuid> = proposals.iter().map(|_| Uuid::now_v7()).collect();
    for (id, proposal) in ids.iter().zip(proposals) {
        sqlx::query!(
            "INSERT INTO mentor_matching.proposal (proposal_id, referral_id, mentor_ids, score, \
             reasons, weights_version, proposed_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            id,
            referral_id,
            &proposal.mentor_ids[..],
            proposal.score,
            &proposal.reasons,
            weights_version,
            proposed_by
        )
        .execute(&mut *connection)
        .await?;
    }
    Ok(ids)
}

/// The latest proposal of exactly this pair (ascending) for `referral_id`.
pub async fn find_proposal(
    connection: &mut PgConnection,
    referral_id: Uuid,
    pair: &[Uuid; 2],
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT proposal_id FROM mentor_matching.proposal \
         WHERE referral_id = $1 AND mentor_ids = $2 ORDER BY proposed_at DESC LIMIT 1",
        referral_id,
        &pair[..]
    )
    .fetch_optional(connection)
    .await
}

/// A confirmed allocation to write.
pub struct NewAllocationRow<'a> {
    pub allocation_id: Uuid,
    pub referral_id: Uuid,
    pub mentor_ids: &'a [Uuid],
    pub confirmed_by: &'a str,
    pub confirmed_at: DateTime<Utc>,
    pub proposal_id: Option<Uuid>,
    pub reason: Option<&'a str>,
}

pub async fn insert_allocation(
    connection: &mut PgConnection,
    row: &NewAllocationRow<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO mentor_matching.allocation (allocation_id, referral_id, confirmed_by, \
         proposal_id, reason, confirmed_at) VALUES ($1, $2, $3, $4, $5, $6)",
        row.allocation_id,
        row.referral_id,
        row.confirmed_by,
        row.proposal_id,
        row.reason,
        row.confirmed_at,
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        "INSERT INTO mentor_matching.allocation_mentor (allocation_id, mentor_id) \
         SELECT $1, unnest($2::uuid[])",
        row.allocation_id,
        row.mentor_ids
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// The recent history of an area's queue: clients waiting now, and the
/// allocations confirmed and ended there over the last `window_days`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct AreaHistory {
    pub clients_waiting: i64,
    pub allocations: i64,
    pub pairs_freed: i64,
}

/// The history of `area`, leaving out `excluded_referral` from the clients waiting.
pub async fn area_history(
    connection: &mut PgConnection,
    area: &str,
    excluded_referral: Option<Uuid>,
    window_days: i32,
) -> Result<AreaHistory, sqlx::Error> {
    sqlx::query_as!(
        AreaHistory,
        "SELECT \
           (SELECT count(*) FROM mentor_matching.waiting_client \
            WHERE area = $1 AND NOT allocated \
              AND ended_at IS NULL \
              AND ($2::uuid IS NULL OR referral_id <> $2)) AS \"clients_waiting!\", \
           (SELECT count(*) FROM mentor_matching.allocation \
            JOIN mentor_matching.waiting_client USING (referral_id) \
            WHERE waiting_client.area = $1 \
              AND allocation.confirmed_at > now() - make_interval(days => $3)) \
             AS \"allocations!\", \
           (SELECT count(*) FROM mentor_matching.allocation \
            JOIN mentor_matching.waiting_client USING (referral_id) \
            WHERE waiting_client.area = $1 \
              AND allocation.ended_at > now() - make_interval(days => $3)) \
             AS \"pairs_freed!\"",
        area,
        excluded_referral,
        window_days,
    )
    .fetch_one(connection)
    .await
}

/// A proposable mentor of an area as a wait estimate sees them: what they
/// lived through (for the safety exclusions), their capacity and their
/// places still free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MentorPlaces {
    pub lived_experience: Vec<i32>,
    pub capacity: i32,
    pub free_places: i32,
}

/// The places of every proposable mentor working in `area` (a mentor of
/// several areas counts in each), full ones included.
pub async fn area_places(
    connection: &mut PgConnection,
    area: &str,
) -> Result<Vec<MentorPlaces>, sqlx::Error> {
    let mentors = mentors!(
        "WHERE $1 = ANY(mentor.areas) AND mentor.status = ANY($2) \
           AND mentor.safeguarding_trained_on IS NOT NULL \
           AND mentor.agreement_signed_on IS NOT NULL",
        area,
        &PROPOSABLE_STATUSES,
    )
    .fetch_all(connection)
    .await?;
    Ok(mentors
        .into_iter()
        .map(|mentor| MentorPlaces {
            free_places: (mentor.capacity - mentor.current_clients).max(0),
            capacity: mentor.capacity,
            lived_experience: mentor.lived_experience,
        })
        .collect())
}

/// What ending a client's support changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndedSupport {
    /// The client was known and had not ended before.
    pub client_ended: bool,
    /// An active allocation was ended, freeing its mentors' places.
    pub allocation_ended: bool,
}

/// Ends a client's support: the client stops waiting and an active
/// allocation stops counting against its mentors, ended for `reason`
/// (cpm.v1.AllocationEndReason). A discharge counts for the pair: they
/// supported a client through together. Repeating it changes nothing.
pub async fn end_support(
    connection: &mut PgConnection,
    referral_id: Uuid,
    reason: AllocationEndReason,
) -> Result<EndedSupport, sqlx::Error> {
    let client_ended = sqlx::query!(
        "UPDATE mentor_matching.waiting_client SET ended_at = now() \
         WHERE referral_id = $1 AND ended_at IS NULL",
        referral_id
    )
    .execute(&mut *connection)
    .await?
    .rows_affected()
        == 1;
    let ended = sqlx::query_scalar!(
        "UPDATE mentor_matching.allocation SET active = false, ended_at = now(), \
           end_reason = $2 \
         WHERE referral_id = $1 AND active RETURNING allocation_id",
        referral_id,
        reason as i32
    )
    .fetch_optional(&mut *connection)
    .await?;
    if let (Some(allocation_id), AllocationEndReason::Discharged) = (ended, reason) {
        sqlx::query!(
            "INSERT INTO mentor_matching.mentor_pair AS pair (mentor_a, mentor_b, \
               clients_completed) \
             SELECT min(mentor_id::text)::uuid, max(mentor_id::text)::uuid, 1 \
             FROM mentor_matching.allocation_mentor WHERE allocation_id = $1 \
             HAVING count(*) = 2 \
             ON CONFLICT (mentor_a, mentor_b) \
             DO UPDATE SET clients_completed = pair.clients_completed + 1",
            allocation_id
        )
        .execute(&mut *connection)
        .await?;
    }
    Ok(EndedSupport {
        client_ended,
        allocation_ended: ended.is_some(),
    })
}

/// Drops what matching held about an erased client beyond IDs: the
/// vulnerabilities and gender it matched on. Returns the rows changed.
pub async fn forget_client_categories(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE mentor_matching.waiting_client SET vulnerabilities = '{}', client_gender = 0, \
           victim_of = '{}', perpetrator_of = '{}' \
         WHERE referral_id = $1",
        referral_id
    )
    .execute(connection)
    .await?
    .rows_affected())
}

/// Records the weights `version` names, the first time it is used, and
/// returns the weights recorded for it (JSON): the first use's, for good.
pub async fn register_weights(
    connection: &mut PgConnection,
    version: &str,
    weights_json: &str,
) -> Result<String, sqlx::Error> {
    sqlx::query!(
        "INSERT INTO mentor_matching.weights_version (version, weights) VALUES ($1, $2) \
         ON CONFLICT (version) DO NOTHING",
        version,
        weights_json
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query_scalar!(
        "SELECT weights FROM mentor_matching.weights_version WHERE version = $1",
        version
    )
    .fetch_one(connection)
    .await
}
