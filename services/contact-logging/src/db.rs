//! Action-named queries on the `contact_logging` schema.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A case file with its mentors and the totals of its contacts.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CaseFileRow {
    pub case_file_id: Uuid,
    pub referral_id: Uuid,
    pub agency_id: String,
    pub area: String,
    pub state: i32,
    pub opened_at: DateTime<Utc>,
    pub discharged_at: Option<DateTime<Utc>>,
    pub discharged_by: Option<String>,
    /// Legacy plaintext; opened from `discharge_reason_sealed` by commands.
    pub discharge_reason: Option<String>,
    pub discharge_reason_sealed: Option<Vec<u8>>,
    /// Who confirmed the current allocation ('' for case files from before).
    pub coordinator: String,
    pub closed_at: Option<DateTime<Utc>>,
    pub discharge_outcome: Option<i32>,
    pub relapse_signs: Vec<i32>,
    pub feedback_contacts: Option<i32>,
    pub feedback_goals_set: Option<i32>,
    pub feedback_goals_achieved: Option<i32>,
    pub feedback_delivered_at: Option<DateTime<Utc>>,
    pub mentor_ids: Vec<String>,
    pub contacts: i64,
    pub minutes: i64,
    pub open_concerns: i64,
}

/// A logged contact.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ContactRow {
    pub contact_id: Uuid,
    pub case_file_id: Uuid,
    pub activity: i32,
    pub minutes: i32,
    pub occurred_at: DateTime<Utc>,
    pub logged_by: String,
    pub logged_by_role: String,
    /// Legacy plaintext; opened from `summary_sealed` by commands.
    pub summary: String,
    pub summary_sealed: Option<Vec<u8>>,
    pub concern_raised: bool,
    pub logged_at: DateTime<Utc>,
    pub channel: i32,
    pub attempted: bool,
    /// The concern raised at this contact, if any.
    pub concern_id: Option<Uuid>,
}

/// How a read case file row is locked until the transaction ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaseLock {
    /// A plain read.
    None,
    /// Held while logging a contact, so a concurrent discharge waits for it.
    Share,
    /// Held while discharging.
    Update,
}

/// `query_as!` into [`CaseFileRow`]: the case file of referral `$1`,
/// then `$lock` (a string literal: the locking clause or nothing).
macro_rules! case_file_of_referral {
    ($lock:literal, $referral_id:expr) => {
        sqlx::query_as!(
            CaseFileRow,
            "SELECT case_file.case_file_id, referral_id, agency_id, area, state, opened_at, \
               discharged_at, discharged_by, discharge_reason, discharge_reason_sealed, \
               coordinator, closed_at, discharge_outcome, relapse_signs, feedback_contacts, \
               feedback_goals_set, feedback_goals_achieved, feedback_delivered_at, \
               ARRAY(SELECT mentor_id FROM contact_logging.case_mentor \
                     WHERE case_mentor.case_file_id = case_file.case_file_id ORDER BY mentor_id) \
                 AS \"mentor_ids!\", \
               (SELECT count(*) FROM contact_logging.contact \
                WHERE contact.case_file_id = case_file.case_file_id) AS \"contacts!\", \
               (SELECT COALESCE(sum(minutes), 0)::bigint FROM contact_logging.contact \
                WHERE contact.case_file_id = case_file.case_file_id) AS \"minutes!\", \
               (SELECT count(*) FROM contact_logging.concern \
                WHERE concern.case_file_id = case_file.case_file_id \
                  AND concern.resolved_at IS NULL) AS \"open_concerns!\" \
             FROM contact_logging.case_file WHERE referral_id = $1 "
                + $lock,
            $referral_id
        )
    };
}

/// What a new case file holds.
pub struct NewCaseFile<'a> {
    pub case_file_id: Uuid,
    pub referral_id: Uuid,
    pub agency_id: &'a str,
    pub area: &'a str,
    pub state: i32,
    pub opened_at: DateTime<Utc>,
    /// Who confirmed the allocation.
    pub coordinator: &'a str,
}

/// Opens a case file; false when the referral already has one.
pub async fn insert_case_file(
    connection: &mut PgConnection,
    case_file: &NewCaseFile<'_>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!(
        "INSERT INTO contact_logging.case_file (case_file_id, referral_id, agency_id, area, \
         state, opened_at, coordinator) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (referral_id) DO NOTHING",
        case_file.case_file_id,
        case_file.referral_id,
        case_file.agency_id,
        case_file.area,
        case_file.state,
        case_file.opened_at,
        case_file.coordinator,
    )
    .execute(connection)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Allocates mentors to a case file through `allocation_id`; repeated IDs
/// are stored once, and a mentor already there now holds access through
/// this allocation.
pub async fn insert_case_mentors(
    connection: &mut PgConnection,
    case_file_id: Uuid,
    allocation_id: Option<Uuid>,
    mentor_ids: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO contact_logging.case_mentor (case_file_id, mentor_id, allocation_id) \
         SELECT $1, mentor_id, $3 FROM unnest($2::text[]) AS mentor_id WHERE mentor_id <> '' \
         ON CONFLICT (case_file_id, mentor_id) DO UPDATE SET allocation_id = $3",
        case_file_id,
        mentor_ids,
        allocation_id
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Makes `coordinator` (who confirmed a new pair) responsible for a case.
pub async fn set_coordinator(
    connection: &mut PgConnection,
    case_file_id: Uuid,
    coordinator: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE contact_logging.case_file SET coordinator = $2 WHERE case_file_id = $1",
        case_file_id,
        coordinator
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Takes a case away from the mentors an ended allocation gave it to
/// (those of `mentor_ids` holding it through no allocation, from before
/// allocations were recorded, too). Returns how many lost access.
pub async fn remove_case_mentors(
    connection: &mut PgConnection,
    referral_id: Uuid,
    allocation_id: Uuid,
    mentor_ids: &[String],
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "DELETE FROM contact_logging.case_mentor AS m USING contact_logging.case_file AS c \
         WHERE m.case_file_id = c.case_file_id AND c.referral_id = $1 \
           AND (m.allocation_id = $2 OR (m.allocation_id IS NULL AND m.mentor_id = ANY($3)))",
        referral_id,
        allocation_id,
        mentor_ids
    )
    .execute(connection)
    .await?
    .rows_affected())
}

/// The case file of a referral, locked as `lock` says.
pub async fn fetch_case_file(
    connection: &mut PgConnection,
    referral_id: Uuid,
    lock: CaseLock,
) -> Result<Option<CaseFileRow>, sqlx::Error> {
    match lock {
        CaseLock::None => {
            case_file_of_referral!("", referral_id)
                .fetch_optional(connection)
                .await
        }
        CaseLock::Share => {
            case_file_of_referral!("FOR SHARE OF case_file", referral_id)
                .fetch_optional(connection)
                .await
        }
        CaseLock::Update => {
            case_file_of_referral!("FOR UPDATE OF case_file", referral_id)
                .fetch_optional(connection)
                .await
        }
    }
}

/// What a new contact row holds.
pub struct NewContactRow<'a> {
    pub contact_id: Uuid,
    pub case_file_id: Uuid,
    pub activity: i32,
    pub minutes: i32,
    pub occurred_at: DateTime<Utc>,
    pub logged_by: &'a str,
    pub logged_by_role: &'a str,
    /// The summary sealed under the client's key.
    pub summary_sealed: Option<&'a [u8]>,
    pub concern_raised: bool,
    pub channel: i32,
    pub attempted: bool,
    /// The mentor who logged it; `None` for staff.
    pub mentor_id: Option<&'a str>,
}

/// Inserts a contact and returns it as stored.
pub async fn insert_contact(
    connection: &mut PgConnection,
    contact: &NewContactRow<'_>,
) -> Result<ContactRow, sqlx::Error> {
    sqlx::query_as!(
        ContactRow,
        "INSERT INTO contact_logging.contact (contact_id, case_file_id, activity, minutes, \
         occurred_at, logged_by, logged_by_role, summary, summary_sealed, concern_raised, \
         channel, attempted, mentor_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, '', $8, $9, $10, $11, $12) \
         RETURNING contact_id, case_file_id, activity, minutes, occurred_at, \
         logged_by, logged_by_role, summary, summary_sealed, concern_raised, logged_at, \
         channel, attempted, NULL::uuid AS concern_id",
        contact.contact_id,
        contact.case_file_id,
        contact.activity,
        contact.minutes,
        contact.occurred_at,
        contact.logged_by,
        contact.logged_by_role,
        contact.summary_sealed,
        contact.concern_raised,
        contact.channel,
        contact.attempted,
        contact.mentor_id,
    )
    .fetch_one(connection)
    .await
}

/// The contacts of a case file, newest first.
pub async fn list_contacts(
    connection: &mut PgConnection,
    case_file_id: Uuid,
    after: Option<(DateTime<Utc>, DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ContactRow>, sqlx::Error> {
    sqlx::query_as!(
        ContactRow,
        "SELECT contact.contact_id, contact.case_file_id, activity, minutes, occurred_at, \
         logged_by, logged_by_role, summary, summary_sealed, concern_raised, logged_at, \
         channel, attempted, concern.concern_id AS \"concern_id?\" \
         FROM contact_logging.contact \
         LEFT JOIN contact_logging.concern USING (contact_id) \
         WHERE contact.case_file_id = $1 \
         AND ($2::timestamptz IS NULL OR (occurred_at, logged_at, contact.contact_id) < ($2, $3, $4)) \
         ORDER BY occurred_at DESC, logged_at DESC, contact.contact_id DESC LIMIT $5",
        case_file_id,
        after.map(|(occurred, _, _)| occurred),
        after.map(|(_, logged, _)| logged),
        after.map(|(_, _, id)| id),
        limit
    )
    .fetch_all(connection)
    .await
}

/// What a discharge records besides its state: the internal note and the
/// proforma feedback the referrer is sent.
pub struct DischargeRecord<'a> {
    pub discharged_by: &'a str,
    pub discharged_at: DateTime<Utc>,
    pub reason_sealed: Option<&'a [u8]>,
    pub outcome: i32,
    pub relapse_signs: &'a [i32],
    pub contacts: i32,
    pub goals_set: i32,
    pub goals_achieved: i32,
}

/// Marks a case file discharged and returns when; `None` when it was not
/// in `open_state` (the caller holds the row lock, so this only guards).
pub async fn discharge_case_file(
    connection: &mut PgConnection,
    case_file_id: Uuid,
    open_state: i32,
    discharged_state: i32,
    record: &DischargeRecord<'_>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    // The column is nullable, but this statement has just set it.
    sqlx::query_scalar!(
        "UPDATE contact_logging.case_file SET state = $3, discharged_at = $11, \
         discharged_by = $4, discharge_reason = '', discharge_reason_sealed = $5, \
         discharge_outcome = $6, relapse_signs = $7, feedback_contacts = $8, \
         feedback_goals_set = $9, feedback_goals_achieved = $10 \
         WHERE case_file_id = $1 AND state = $2 \
         RETURNING discharged_at AS \"discharged_at!\"",
        case_file_id,
        open_state,
        discharged_state,
        record.discharged_by,
        record.reason_sealed,
        record.outcome,
        record.relapse_signs,
        record.contacts,
        record.goals_set,
        record.goals_achieved,
        record.discharged_at,
    )
    .fetch_optional(connection)
    .await
}

/// The goals set on a case file and how many were achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoalCounts {
    pub set: i64,
    pub achieved: i64,
}

/// The goals of a case file, counted for the discharge feedback.
pub async fn goal_counts(
    connection: &mut PgConnection,
    case_file_id: Uuid,
) -> Result<GoalCounts, sqlx::Error> {
    sqlx::query_as!(
        GoalCounts,
        "SELECT count(*) AS \"set!\", count(*) FILTER (WHERE state = $2) AS \"achieved!\" \
         FROM contact_logging.goal WHERE case_file_id = $1",
        case_file_id,
        cpm_proto::v1::GoalState::Achieved as i32,
    )
    .fetch_one(connection)
    .await
}

/// The contacts made (attempts not counted) on a case file.
pub async fn count_contacts_made(
    connection: &mut PgConnection,
    case_file_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT count(*) AS \"made!\" FROM contact_logging.contact \
         WHERE case_file_id = $1 AND NOT attempted",
        case_file_id
    )
    .fetch_one(connection)
    .await
}

/// Records when the discharge feedback of a referral reached the referrer;
/// the first confirmation stands. Returns whether this one was recorded.
pub async fn record_feedback_delivered(
    connection: &mut PgConnection,
    referral_id: Uuid,
    delivered_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE contact_logging.case_file SET feedback_delivered_at = $2 \
         WHERE referral_id = $1 AND discharged_at IS NOT NULL \
           AND feedback_delivered_at IS NULL",
        referral_id,
        delivered_at
    )
    .execute(connection)
    .await?
    .rows_affected()
        == 1)
}

/// Remembers that support of a referral ended; a repeat changes nothing.
pub async fn insert_ended_engagement(
    connection: &mut PgConnection,
    referral_id: Uuid,
    ended_by: &str,
    ended_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO contact_logging.ended_engagement (referral_id, ended_by, ended_at) \
         VALUES ($1, $2, $3) \
         ON CONFLICT (referral_id) DO NOTHING",
        referral_id,
        ended_by,
        ended_at
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Closes the referral's case file when it is in `open_state` and its
/// engagement has ended; returns whether it closed now.
pub async fn close_case_file_if_ended(
    connection: &mut PgConnection,
    referral_id: Uuid,
    open_state: i32,
    closed_state: i32,
) -> Result<bool, sqlx::Error> {
    let closed = sqlx::query!(
        "UPDATE contact_logging.case_file \
         SET state = $3, closed_at = ended.ended_at, closed_by = ended.ended_by \
         FROM contact_logging.ended_engagement ended \
         WHERE case_file.referral_id = $1 AND ended.referral_id = $1 AND case_file.state = $2",
        referral_id,
        open_state,
        closed_state
    )
    .execute(connection)
    .await?
    .rows_affected();
    Ok(closed == 1)
}

/// Drops the free text held about an erased client: its sealed copies (the
/// client's key is already shredded; this leaves nothing even to attack)
/// and any legacy plaintext. Activities, minutes and dates stay, as counts.
/// Returns the rows changed.
pub async fn forget_client_text(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<u64, sqlx::Error> {
    let contacts = sqlx::query!(
        "UPDATE contact_logging.contact SET summary = '', summary_sealed = NULL \
         WHERE (summary <> '' OR summary_sealed IS NOT NULL) AND case_file_id IN \
         (SELECT case_file_id FROM contact_logging.case_file WHERE referral_id = $1)",
        referral_id
    )
    .execute(&mut *connection)
    .await?
    .rows_affected();
    let case_files = sqlx::query!(
        "UPDATE contact_logging.case_file \
         SET discharge_reason = '', discharge_reason_sealed = NULL \
         WHERE (discharge_reason <> '' OR discharge_reason_sealed IS NOT NULL) \
           AND referral_id = $1",
        referral_id
    )
    .execute(&mut *connection)
    .await?
    .rows_affected();
    let concerns = sqlx::query!(
        "UPDATE contact_logging.concern SET resolution_sealed = NULL \
         WHERE resolution_sealed IS NOT NULL AND case_file_id IN \
         (SELECT case_file_id FROM contact_logging.case_file WHERE referral_id = $1)",
        referral_id
    )
    .execute(connection)
    .await?
    .rows_affected();
    Ok(contacts + case_files + concerns)
}
