//! Concerns: what a mentor or coordinator raises at a contact (a
//! safeguarding worry, a police or agency interaction the mentor must
//! report at once, a risk to volunteers…) and the area's coordinators must
//! resolve, each with a note. A concern is raised with its contact, in the
//! same transaction, and announced as `concern.raised` (categories only, no
//! text): notifications tells the area's coordinators of an urgent one, and
//! risk assessment asks for a review of the client's suitability (it
//! already does for a contact with `concern_raised`).
//!
//! The queue is staff's: a coordinator sees and resolves the concerns of
//! the areas their token names; any other concern is NOT_FOUND. Resolution
//! notes are sealed under the client's key like every note of this
//! service; an erased client's open concerns are resolved by the erasure,
//! since no note about them can be kept any more.

use chrono::{DateTime, Utc};
use cpm_proto::v1::{ConcernRaised, ConcernState};
use cpm_runtime::auth::{AreaScope, Caller};
use cpm_runtime::bus::{ServiceHandle, Tx, outbox};
use cpm_runtime::client_keys::{ClientKeys, Reader, SealError};
use cpm_runtime::grpc::values::timestamp;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::commands::CaseError;
use crate::domain::{CaseAccess, NewConcern, Resolution};

/// Who the erasure of a client is recorded as having resolved their open
/// concerns.
pub const RESOLVED_BY_ERASURE: &str = "client erased";

/// A concern with the case it belongs to.
#[derive(Clone, Debug)]
pub struct ConcernRow {
    pub concern_id: Uuid,
    pub case_file_id: Uuid,
    pub referral_id: Uuid,
    pub area: String,
    pub contact_id: Uuid,
    pub category: i32,
    pub urgency: i32,
    pub raised_by: String,
    pub raised_at: DateTime<Utc>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution_sealed: Option<Vec<u8>>,
    /// Opened from `resolution_sealed` for the caller ("" when none).
    pub resolution_note: String,
}

/// `query_as!` into [`ConcernRow`] with its case's referral and area, then
/// `$rest` (conditions, order, limit), with its arguments.
macro_rules! concerns {
    ($rest:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            ConcernRow,
            "SELECT concern.concern_id, concern.case_file_id, case_file.referral_id, \
               case_file.area, concern.contact_id, concern.category, concern.urgency, \
               concern.raised_by, concern.raised_at, concern.resolved_by, \
               concern.resolved_at, concern.resolution_sealed, \
               '' AS \"resolution_note!\" \
             FROM contact_logging.concern \
             JOIN contact_logging.case_file USING (case_file_id) "
                + $rest
            $(, $arg)*
        )
    };
}

/// Which concerns a page of the queue shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConcernQuery {
    pub state: ConcernState,
    pub urgent_only: bool,
    /// Where the last concern shown sorts: when raised, its ID.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// Records a concern raised at `contact_id` and announces it, in the
/// contact's transaction.
pub async fn raise(
    connection: &mut Tx,
    case_file: &crate::db::CaseFileRow,
    contact_id: Uuid,
    raised_by: &str,
    concern: NewConcern,
) -> Result<Uuid, sqlx::Error> {
    let concern_id = Uuid::now_v7();
    let raised_at = sqlx::query_scalar!(
        "INSERT INTO contact_logging.concern (concern_id, case_file_id, contact_id, category, \
         urgency, raised_by, raised_at) VALUES ($1, $2, $3, $4, $5, $6, now()) \
         RETURNING raised_at",
        concern_id,
        case_file.case_file_id,
        contact_id,
        concern.category as i32,
        concern.urgency as i32,
        raised_by,
    )
    .fetch_one(&mut **connection)
    .await?;
    outbox::enqueue(
        connection,
        crate::NAME,
        &ConcernRaised {
            concern_id: concern_id.to_string(),
            referral_id: case_file.referral_id.to_string(),
            case_file_id: case_file.case_file_id.to_string(),
            area: case_file.area.clone(),
            category: concern.category as i32,
            urgency: concern.urgency as i32,
            raised_at: Some(timestamp(raised_at)),
        },
    )
    .await?;
    Ok(concern_id)
}

/// Areas as the queue compares them: letter case aside, as
/// [`AreaScope::admits`] does.
fn area_filter(scope: &AreaScope) -> Option<Vec<String>> {
    scope
        .as_filter()
        .map(|areas| areas.iter().map(|area| area.to_lowercase()).collect())
}

/// One page of the concern queue of `scope`'s areas, oldest first, the
/// resolution notes opened for `caller` (each read audited).
pub async fn list(
    handle: &ServiceHandle,
    keys: &ClientKeys,
    caller: &Caller,
    scope: &AreaScope,
    query: &ConcernQuery,
) -> Result<Vec<ConcernRow>, CaseError> {
    let (open, resolved) = match query.state {
        ConcernState::Open | ConcernState::Unspecified => (true, false),
        ConcernState::Resolved => (false, true),
        ConcernState::All => (true, true),
    };
    let areas = area_filter(scope);
    let mut transaction = handle.begin().await?;
    let mut rows = concerns!(
        "WHERE ($1::text[] IS NULL OR lower(case_file.area) = ANY($1)) \
           AND (($2 AND concern.resolved_at IS NULL) OR ($3 AND concern.resolved_at IS NOT NULL)) \
           AND (NOT $4 OR concern.urgency = $5) \
           AND ($6::timestamptz IS NULL OR (concern.raised_at, concern.concern_id) > ($6, $7)) \
         ORDER BY concern.raised_at, concern.concern_id LIMIT $8",
        areas.as_deref(),
        open,
        resolved,
        query.urgent_only,
        cpm_proto::v1::ConcernUrgency::Urgent as i32,
        query.after.map(|(at, _)| at),
        query.after.map(|(_, id)| id),
        query.limit,
    )
    .fetch_all(&mut *transaction)
    .await?;
    let mut reading = keys.reading(Reader::of(caller, "ListConcerns"));
    for row in &mut rows {
        if let Some(sealed) = row.resolution_sealed.take() {
            row.resolution_note = reading
                .open_text(&mut transaction, row.referral_id, Some(&sealed))
                .await?;
        }
    }
    transaction.commit().await?;
    Ok(rows)
}

/// Resolves an open concern of `access`'s areas with a note; NOT_FOUND for
/// a missing concern or one outside them, FAILED_PRECONDITION for one
/// already resolved or an erased client's.
pub async fn resolve(
    handle: &ServiceHandle,
    keys: &ClientKeys,
    caller: &Caller,
    access: &CaseAccess,
    resolution: &Resolution,
) -> Result<ConcernRow, CaseError> {
    let admitted = |row: Option<ConcernRow>| match (access, row) {
        (CaseAccess::Staff(scope), Some(row)) if scope.admits(&row.area) => Ok(row),
        _ => Err(CaseError::NotFound),
    };
    let mut transaction = handle.begin().await?;
    let found = admitted(
        concerns!("WHERE concern.concern_id = $1", resolution.concern_id)
            .fetch_optional(&mut *transaction)
            .await?,
    )?;
    // The client's key before the concern, as erasure takes them.
    let sealed = match keys
        .seal_text(&mut transaction, found.referral_id, &resolution.note)
        .await
    {
        Err(SealError::Erased) => return Err(CaseError::Erased),
        other => other?,
    };
    let row = admitted(
        concerns!(
            "WHERE concern.concern_id = $1 FOR UPDATE OF concern",
            resolution.concern_id
        )
        .fetch_optional(&mut *transaction)
        .await?,
    )?;
    if row.resolved_at.is_some() {
        return Err(CaseError::AlreadyResolved);
    }
    let resolved_at = sqlx::query_scalar!(
        "UPDATE contact_logging.concern SET resolved_by = $2, resolved_at = now(), \
         resolution_sealed = $3 WHERE concern_id = $1 RETURNING resolved_at AS \"at!\"",
        resolution.concern_id,
        caller.subject,
        sealed.as_deref(),
    )
    .fetch_one(&mut *transaction)
    .await?;
    transaction.commit().await?;
    tracing::info!(concern_id = %row.concern_id, "concern resolved");
    Ok(ConcernRow {
        resolved_by: Some(caller.subject.clone()),
        resolved_at: Some(resolved_at),
        resolution_note: resolution.note.clone(),
        resolution_sealed: None,
        ..row
    })
}

/// Resolves the open concerns of an erased client: no note about them can
/// be kept, and the queue must not wait for one for ever.
pub async fn resolve_for_erasure(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE contact_logging.concern SET resolved_by = $2, resolved_at = now() \
         WHERE resolved_at IS NULL AND case_file_id IN \
         (SELECT case_file_id FROM contact_logging.case_file WHERE referral_id = $1)",
        referral_id,
        RESOLVED_BY_ERASURE
    )
    .execute(connection)
    .await?
    .rows_affected())
}
