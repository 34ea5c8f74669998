//! Action-named queries on the `mentor_matching` schema. A mentor's current
//! clients are counted from the active allocations naming them, never
//! stored, so ending an allocation frees the place by itself. A client whose
//! support ended is no longer known as waiting.

use chrono::{DateTime, Utc};
use cpm_proto::v1::MentorStatus;
use sqlx::PgConnection;
use uuid::Uuid;

/// The number of active allocations of the `mentor` row in scope.
const CURRENT_CLIENTS: &str = "(SELECT count(*) FROM allocation_mentor \
    JOIN allocation ON allocation.allocation_id = allocation_mentor.allocation_id \
    WHERE allocation_mentor.mentor_id = mentor.mentor_id AND allocation.active)::integer";

const MENTOR_COLUMNS: &str = "mentor.mentor_id, mentor.display_name, mentor.gender, mentor.area, \
    mentor.lived_experience, mentor.safeguarding_trained, mentor.status, mentor.capacity, \
    mentor.trained_on";

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
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO mentor (mentor_id, display_name, gender, area, lived_experience, \
         safeguarding_trained, status, capacity, registered_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         RETURNING {MENTOR_COLUMNS}, 0 AS current_clients"
    )))
    .bind(row.mentor_id)
    .bind(row.display_name)
    .bind(row.gender)
    .bind(row.area)
    .bind(&row.lived_experience)
    .bind(row.safeguarding_trained)
    .bind(row.status)
    .bind(row.capacity)
    .bind(row.registered_by)
    .fetch_one(connection)
    .await
}

/// Every mentor, or those of one area, by display name.
pub async fn list_mentors(
    connection: &mut PgConnection,
    area: Option<&str>,
) -> Result<Vec<MentorRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MENTOR_COLUMNS}, {CURRENT_CLIENTS} AS current_clients FROM mentor \
         WHERE ($1::text IS NULL OR area = $1) \
         ORDER BY display_name, mentor_id"
    )))
    .bind(area)
    .fetch_all(connection)
    .await
}

/// Mentors who may be proposed: active, safeguarding-trained and below capacity.
pub async fn list_candidates(connection: &mut PgConnection) -> Result<Vec<MentorRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM (SELECT {MENTOR_COLUMNS}, {CURRENT_CLIENTS} AS current_clients FROM mentor \
         WHERE status = $1 AND safeguarding_trained) AS candidate \
         WHERE current_clients < capacity ORDER BY mentor_id"
    )))
    .bind(MentorStatus::Active as i32)
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
    sqlx::query_scalar(
        "SELECT mentor_id FROM mentor WHERE mentor_id = ANY($1) ORDER BY mentor_id FOR UPDATE",
    )
    .bind(mentor_ids)
    .fetch_all(connection)
    .await
}

/// The named mentors with their current clients.
pub async fn fetch_mentors(
    connection: &mut PgConnection,
    mentor_ids: &[Uuid],
) -> Result<Vec<MentorRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MENTOR_COLUMNS}, {CURRENT_CLIENTS} AS current_clients FROM mentor \
         WHERE mentor_id = ANY($1) ORDER BY mentor_id"
    )))
    .bind(mentor_ids)
    .fetch_all(connection)
    .await
}

pub async fn set_mentors_status(
    connection: &mut PgConnection,
    mentor_ids: &[Uuid],
    status: MentorStatus,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE mentor SET status = $2 WHERE mentor_id = ANY($1)")
        .bind(mentor_ids)
        .bind(status as i32)
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

const WAITING_CLIENT_COLUMNS: &str = "referral_id, agency_id, area, vulnerabilities, \
    client_gender, accepted_at, estimated_start, allocated";

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
    let inserted = sqlx::query(
        "INSERT INTO waiting_client (referral_id, agency_id, area, vulnerabilities, client_gender, \
         accepted_at, estimated_start) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (referral_id) DO NOTHING",
    )
    .bind(row.referral_id)
    .bind(row.agency_id)
    .bind(row.area)
    .bind(&row.vulnerabilities)
    .bind(row.client_gender)
    .bind(row.accepted_at)
    .bind(row.estimated_start)
    .execute(connection)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub async fn fetch_waiting_client(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Option<WaitingClientRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {WAITING_CLIENT_COLUMNS} FROM waiting_client \
         WHERE referral_id = $1 AND ended_at IS NULL"
    )))
    .bind(referral_id)
    .fetch_optional(connection)
    .await
}

/// Locks a client's row for allocation.
pub async fn lock_waiting_client(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Option<WaitingClientRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {WAITING_CLIENT_COLUMNS} FROM waiting_client \
         WHERE referral_id = $1 AND ended_at IS NULL FOR UPDATE"
    )))
    .bind(referral_id)
    .fetch_optional(connection)
    .await
}

pub async fn mark_client_allocated(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE waiting_client SET allocated = true WHERE referral_id = $1")
        .bind(referral_id)
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
    let confirmed_at = sqlx::query_scalar(
        "INSERT INTO allocation (allocation_id, referral_id, confirmed_by) VALUES ($1, $2, $3) \
         RETURNING confirmed_at",
    )
    .bind(allocation_id)
    .bind(referral_id)
    .bind(confirmed_by)
    .fetch_one(&mut *connection)
    .await?;
    sqlx::query(
        "INSERT INTO allocation_mentor (allocation_id, mentor_id) SELECT $1, unnest($2::uuid[])",
    )
    .bind(allocation_id)
    .bind(mentor_ids)
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
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT \
           (SELECT count(*) FROM waiting_client WHERE area = $1 AND NOT allocated \
              AND ended_at IS NULL \
              AND ($2::uuid IS NULL OR referral_id <> $2)) AS clients_waiting, \
           (SELECT COALESCE(sum(GREATEST(capacity - {CURRENT_CLIENTS}, 0)), 0)::bigint FROM mentor \
              WHERE area = $1 AND status = $3 AND safeguarding_trained) AS free_mentor_places"
    )))
    .bind(area)
    .bind(excluded_referral)
    .bind(MentorStatus::Active as i32)
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
    let client_ended = sqlx::query(
        "UPDATE waiting_client SET ended_at = now() \
         WHERE referral_id = $1 AND ended_at IS NULL",
    )
    .bind(referral_id)
    .execute(&mut *connection)
    .await?
    .rows_affected()
        == 1;
    let allocation_ended = sqlx::query(
        "UPDATE allocation SET active = false, ended_at = now() \
         WHERE referral_id = $1 AND active",
    )
    .bind(referral_id)
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
    Ok(sqlx::query(
        "UPDATE waiting_client SET vulnerabilities = '{}', client_gender = 0 WHERE referral_id = $1",
    )
    .bind(referral_id)
    .execute(connection)
    .await?
    .rows_affected())
}
