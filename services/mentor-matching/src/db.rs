//! Action-named queries on the `mentor_matching` schema. A mentor's current
//! clients are counted from the active allocations naming them, never
//! stored, so ending an allocation frees the place by itself. A client whose
//! support ended is no longer known as waiting.

use chrono::{DateTime, Utc};
use cpm_proto::v1::MentorStatus;
use sqlx::PgConnection;
use uuid::Uuid;

/// `query_as!` into [`MentorRow`]: `$before` (a string literal), the
/// columns of the `mentor` row in scope with its current clients (the
/// number of its active allocations), then `$after`.
macro_rules! mentors {
    ($before:literal, $after:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            MentorRow,
            $before
                + " mentor.mentor_id, mentor.display_name, mentor.gender, mentor.area, \
                mentor.lived_experience, mentor.safeguarding_trained, mentor.status, \
                mentor.capacity, mentor.trained_on, \
                (SELECT count(*) FROM mentor_matching.allocation_mentor \
                 JOIN mentor_matching.allocation \
                   ON allocation.allocation_id = allocation_mentor.allocation_id \
                 WHERE allocation_mentor.mentor_id = mentor.mentor_id \
                   AND allocation.active)::integer AS \"current_clients!\" "
                + $after
            $(, $arg)*
        )
    };
}

/// A mentor with their current number of clients.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MentorRow {
    pub mentor_id: Uuid,
    pub display_name: String,
    pub gender: i32,
    pub area: String,
    pub lived_experience: Vec<i32>,
    pub safeguarding_trained: bool,
    pub status: i32,
    pub capacity: i32,
    pub trained_on: DateTime<Utc>,
    pub current_clients: i32,
}

/// What a new mentor row holds.
pub struct NewMentorRow<'a> {
    pub mentor_id: Uuid,
    pub display_name: &'a str,
    pub gender: i32,
    pub area: &'a str,
    pub lived_experience: Vec<i32>,
    pub safeguarding_trained: bool,
    pub status: i32,
    pub capacity: i32,
    pub registered_by: &'a str,
}

/// Inserts a mentor and returns the row as stored.
pub async fn insert_mentor(
    connection: &mut PgConnection,
    row: &NewMentorRow<'_>,
) -> Result<MentorRow, sqlx::Error> {
    sqlx::query_as!(
        MentorRow,
        "INSERT INTO mentor_matching.mentor (mentor_id, display_name, gender, area, \
         lived_experience, safeguarding_trained, status, capacity, registered_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         RETURNING mentor.mentor_id, mentor.display_name, mentor.gender, mentor.area, \
         mentor.lived_experience, mentor.safeguarding_trained, mentor.status, mentor.capacity, \
         mentor.trained_on, 0 AS \"current_clients!\"",
        row.mentor_id,
        row.display_name,
        row.gender,
        row.area,
        &row.lived_experience,
        row.safeguarding_trained,
        row.status,
        row.capacity,
        row.registered_by,
    )
    .fetch_one(connection)
    .await
}

/// The mentors of `areas` (`None`: every area), by display name.
pub async fn list_mentors(
    connection: &mut PgConnection,
    areas: Option<&[String]>,
    after: Option<(&str, Uuid)>,
    limit: i64,
) -> Result<Vec<MentorRow>, sqlx::Error> {
    mentors!(
        "SELECT",
        "FROM mentor_matching.mentor \
         WHERE ($1::text[] IS NULL OR area = ANY($1)) \
         AND ($2::text IS NULL OR (display_name, mentor_id) > ($2, $3)) \
         ORDER BY display_name, mentor_id LIMIT $4",
        areas,
        after.map(|(name, _)| name),
        after.map(|(_, id)| id),
        limit
    )
    .fetch_all(connection)
    .await
}

/// Mentors of `areas` (`None`: every area) who may be proposed: active,
/// safeguarding-trained and below capacity.
pub async fn list_candidates(
    connection: &mut PgConnection,
    areas: Option<&[String]>,
) -> Result<Vec<MentorRow>, sqlx::Error> {
    // The count is named for the outer query, so it cannot carry the
    // non-NULL override of `mentors!`: the outer list restates the columns.
    sqlx::query_as!(
        MentorRow,
        "SELECT mentor_id, display_name, gender, area, lived_experience, safeguarding_trained, \
           status, capacity, trained_on, current_clients AS \"current_clients!\" \
         FROM (SELECT mentor.mentor_id, mentor.display_name, mentor.gender, mentor.area, \
           mentor.lived_experience, mentor.safeguarding_trained, mentor.status, \
           mentor.capacity, mentor.trained_on, \
           (SELECT count(*) FROM mentor_matching.allocation_mentor \
            JOIN mentor_matching.allocation \
              ON allocation.allocation_id = allocation_mentor.allocation_id \
            WHERE allocation_mentor.mentor_id = mentor.mentor_id \
              AND allocation.active)::integer AS current_clients \
           FROM mentor_matching.mentor \
           WHERE status = $1 AND safeguarding_trained \
             AND ($2::text[] IS NULL OR area = ANY($2))) AS candidate \
         WHERE current_clients < capacity ORDER BY mentor_id",
        MentorStatus::Active as i32,
        areas
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

/// The named mentors with their current clients.
pub async fn fetch_mentors(
    connection: &mut PgConnection,
    mentor_ids: &[Uuid],
) -> Result<Vec<MentorRow>, sqlx::Error> {
    mentors!(
        "SELECT",
        "FROM mentor_matching.mentor WHERE mentor_id = ANY($1) ORDER BY mentor_id",
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
}

/// Adds an accepted client; false when the referral is already known.
pub async fn insert_waiting_client(
    connection: &mut PgConnection,
    row: &NewWaitingClient<'_>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!(
        "INSERT INTO mentor_matching.waiting_client (referral_id, agency_id, area, \
         vulnerabilities, client_gender, accepted_at, estimated_start) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (referral_id) DO NOTHING",
        row.referral_id,
        row.agency_id,
        row.area,
        &row.vulnerabilities,
        row.client_gender,
        row.accepted_at,
        row.estimated_start,
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
           estimated_start, allocated \
         FROM mentor_matching.waiting_client \
         WHERE referral_id = $1 AND ended_at IS NULL",
        referral_id
    )
    .fetch_optional(connection)
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
           estimated_start, allocated \
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
pub async fn insert_allocation(
    connection: &mut PgConnection,
    allocation_id: Uuid,
    referral_id: Uuid,
    mentor_ids: &[Uuid],
    confirmed_by: &str,
) -> Result<DateTime<Utc>, sqlx::Error> {
    let confirmed_at = sqlx::query_scalar!(
        "INSERT INTO mentor_matching.allocation (allocation_id, referral_id, confirmed_by) \
         VALUES ($1, $2, $3) RETURNING confirmed_at",
        allocation_id,
        referral_id,
        confirmed_by
    )
    .fetch_one(&mut *connection)
    .await?;
    sqlx::query!(
        "INSERT INTO mentor_matching.allocation_mentor (allocation_id, mentor_id) \
         SELECT $1, unnest($2::uuid[])",
        allocation_id,
        mentor_ids
    )
    .execute(&mut *connection)
    .await?;
    Ok(confirmed_at)
}

/// The load of an area: unallocated clients waiting there, and the free
/// places of its active, safeguarding-trained mentors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct AreaLoad {
    pub clients_waiting: i64,
    pub free_mentor_places: i64,
}

/// The load of `area`, leaving out `excluded_referral` from the clients waiting.
pub async fn area_load(
    connection: &mut PgConnection,
    area: &str,
    excluded_referral: Option<Uuid>,
) -> Result<AreaLoad, sqlx::Error> {
    sqlx::query_as!(
        AreaLoad,
        "SELECT \
           (SELECT count(*) FROM mentor_matching.waiting_client \
            WHERE area = $1 AND NOT allocated \
              AND ended_at IS NULL \
              AND ($2::uuid IS NULL OR referral_id <> $2)) AS \"clients_waiting!\", \
           (SELECT COALESCE(sum(GREATEST(capacity - \
              (SELECT count(*) FROM mentor_matching.allocation_mentor \
               JOIN mentor_matching.allocation \
                 ON allocation.allocation_id = allocation_mentor.allocation_id \
               WHERE allocation_mentor.mentor_id = mentor.mentor_id \
                 AND allocation.active)::integer, 0)), 0)::bigint \
            FROM mentor_matching.mentor \
            WHERE area = $1 AND status = $3 AND safeguarding_trained) \
             AS \"free_mentor_places!\"",
        area,
        excluded_referral,
        MentorStatus::Active as i32
    )
    .fetch_one(connection)
    .await
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
/// allocation stops counting against its mentors. Repeating it changes
/// nothing.
pub async fn end_support(
    connection: &mut PgConnection,
    referral_id: Uuid,
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
    let allocation_ended = sqlx::query!(
        "UPDATE mentor_matching.allocation SET active = false, ended_at = now() \
         WHERE referral_id = $1 AND active",
        referral_id
    )
    .execute(&mut *connection)
    .await?
    .rows_affected()
        == 1;
    Ok(EndedSupport {
        client_ended,
        allocation_ended,
    })
}

/// Drops what matching held about an erased client beyond IDs: the
/// vulnerabilities and gender it matched on. Returns the rows changed.
pub async fn forget_client_categories(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE mentor_matching.waiting_client SET vulnerabilities = '{}', client_gender = 0 \
         WHERE referral_id = $1",
        referral_id
    )
    .execute(connection)
    .await?
    .rows_affected())
}
