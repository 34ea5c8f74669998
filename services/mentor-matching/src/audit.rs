//! The read audit of mentors' personal data: every read for a caller
//! (GetMentor, each mentor ListMentors returns, each mentor a ProposeMatches
//! answer names, ExportMentorData) is recorded in the append-only
//! `mentor_data_read`, once per mentor per call, before the answer is sent:
//! who read, in which role, through which RPC, and when. A mentor's export
//! includes their log ([`reads_of`]).

use chrono::{DateTime, Utc};
use cpm_runtime::auth::Caller;
use cpm_runtime::bus::ServiceHandle;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// The RPCs that read a mentor's personal data, as the log names them.
pub const GET_MENTOR: &str = "GetMentor";
pub const LIST_MENTORS: &str = "ListMentors";
pub const PROPOSE_MATCHES: &str = "ProposeMatches";
pub const EXPORT_MENTOR_DATA: &str = "ExportMentorData";
pub const PROPOSE_POOL_MATCHES: &str = "ProposePoolMatches";
pub const LIST_MENTOR_ALERTS: &str = "ListMentorAlerts";

/// `ids` once each, in their first order.
fn distinct(ids: impl IntoIterator<Item = Uuid>) -> Vec<Uuid> {
    let mut seen = Vec::new();
    for id in ids {
        if !seen.contains(&id) {
            seen.push(id);
        }
    }
    seen
}

/// Records that `caller` read the data of each of `mentor_ids` through
/// `purpose` (one row per mentor, however often the call named them), on
/// `connection`: in the transaction of the read where there is one.
pub async fn record(
    connection: &mut PgConnection,
    caller: &Caller,
    purpose: &str,
    mentor_ids: impl IntoIterator<Item = Uuid>,
) -> Result<(), sqlx::Error> {
    let ids = distinct(mentor_ids);
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "INSERT INTO mentor_matching.mentor_data_read (mentor_id, reader, role, purpose) \
         SELECT unnest($1::uuid[]), $2, $3, $4",
        &ids,
        caller.subject,
        caller.role.as_str(),
        purpose,
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// [`record`] on a connection of its own, for a read that was not in a
/// transaction: called before the answer is sent.
pub async fn record_read(
    handle: &ServiceHandle,
    caller: &Caller,
    purpose: &str,
    mentor_ids: impl IntoIterator<Item = Uuid>,
) -> Result<(), sqlx::Error> {
    let mut connection = handle.pool().acquire().await?;
    record(&mut connection, caller, purpose, mentor_ids).await
}

/// One read of a mentor's data, as their export shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Read {
    pub reader: String,
    pub role: String,
    pub purpose: String,
    pub read_at: DateTime<Utc>,
}

/// Every read of `mentor_id`'s data, oldest first.
pub async fn reads_of(
    connection: &mut PgConnection,
    mentor_id: Uuid,
) -> Result<Vec<Read>, sqlx::Error> {
    sqlx::query_as!(
        Read,
        "SELECT reader, role, purpose, read_at FROM mentor_matching.mentor_data_read \
         WHERE mentor_id = $1 ORDER BY read_at, read_id",
        mentor_id
    )
    .fetch_all(connection)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mentor_named_twice_in_one_call_is_read_once() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(distinct([a, b, a, b, a]), [a, b]);
        assert!(distinct([]).is_empty());
    }
}
