//! How pairs fare once allocated: the contacts counted for the early fit
//! check, an allocation ended because the pair was not working (the client
//! waits again; the history stays), and what coordinators know of two
//! mentors as a pair (`mentor_pair`: clients supported together through to
//! discharge, or marked never to be proposed together). Queries on the
//! `mentor_matching` schema.

use chrono::{DateTime, Utc};
use cpm_proto::v1::{AllocationEndReason, MarkPairIncompatibleRequest, ReportPoorFitRequest};
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::{check_text, parse_id};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{finish, parse_pair};
use crate::matching::PairHistory;

/// An allocation with its pair and its client's area.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AllocationRow {
    pub allocation_id: Uuid,
    pub referral_id: Uuid,
    pub agency_id: String,
    pub area: String,
    /// Ascending.
    pub mentor_ids: Vec<Uuid>,
    pub confirmed_by: String,
    pub confirmed_at: DateTime<Utc>,
    pub proposal_id: Option<Uuid>,
    pub reason: Option<String>,
    pub active: bool,
    pub ended_at: Option<DateTime<Utc>>,
    /// cpm.v1.AllocationEndReason.
    pub end_reason: i32,
    pub contacts: i32,
}

/// One allocation, locked for a change when `lock` (the client's row too,
/// so a confirmation and an early end of the same client queue up).
pub async fn fetch_allocation(
    connection: &mut PgConnection,
    allocation_id: Uuid,
) -> Result<Option<AllocationRow>, sqlx::Error> {
    sqlx::query_as!(
        AllocationRow,
        "SELECT allocation.allocation_id, allocation.referral_id, client.agency_id, client.area, \
           ARRAY(SELECT mentor_id FROM mentor_matching.allocation_mentor AS pair \
                 WHERE pair.allocation_id = allocation.allocation_id ORDER BY mentor_id) \
             AS \"mentor_ids!\", \
           allocation.confirmed_by, allocation.confirmed_at, allocation.proposal_id, \
           allocation.reason, allocation.active, allocation.ended_at, allocation.end_reason, \
           allocation.contacts \
         FROM mentor_matching.allocation \
         JOIN mentor_matching.waiting_client AS client USING (referral_id) \
         WHERE allocation.allocation_id = $1 \
         FOR UPDATE OF allocation, client",
        allocation_id
    )
    .fetch_optional(connection)
    .await
}

/// Counts one logged contact against the client's active allocation.
pub async fn count_contact(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE mentor_matching.allocation SET contacts = contacts + 1 \
         WHERE referral_id = $1 AND active",
        referral_id
    )
    .execute(connection)
    .await?
    .rows_affected()
        == 1)
}

/// Ends an active allocation because the pair was not working: its mentors'
/// places are free again and the client waits again, keeping the place in
/// the queue their acceptance gave them. Returns when it ended.
pub async fn end_for_poor_fit(
    connection: &mut PgConnection,
    allocation: &AllocationRow,
    ended_by: &str,
    note: &str,
) -> Result<DateTime<Utc>, sqlx::Error> {
    let ended_at = sqlx::query_scalar!(
        "UPDATE mentor_matching.allocation SET active = false, ended_at = now(), \
           end_reason = $2, ended_by = $3, end_note = $4 \
         WHERE allocation_id = $1 RETURNING ended_at AS \"ended_at!\"",
        allocation.allocation_id,
        AllocationEndReason::PoorFit as i32,
        ended_by,
        note
    )
    .fetch_one(&mut *connection)
    .await?;
    sqlx::query!(
        "UPDATE mentor_matching.waiting_client SET allocated = false WHERE referral_id = $1",
        allocation.referral_id
    )
    .execute(&mut *connection)
    .await?;
    Ok(ended_at)
}

/// The pairs (ascending) whose allocation to this client ended for poor fit.
pub async fn poor_fit_pairs(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Vec<Vec<Uuid>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT ARRAY(SELECT mentor_id FROM mentor_matching.allocation_mentor AS pair \
                 WHERE pair.allocation_id = allocation.allocation_id ORDER BY mentor_id) \
           AS \"mentor_ids!\" \
         FROM mentor_matching.allocation WHERE referral_id = $1 AND end_reason = $2",
        referral_id,
        AllocationEndReason::PoorFit as i32
    )
    .fetch_all(connection)
    .await
}

/// What is known of a pair among some mentors.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct PairRecord {
    pub mentor_a: Uuid,
    pub mentor_b: Uuid,
    pub clients_completed: i32,
    pub incompatible: bool,
}

/// The pairs both of whose mentors are among `mentor_ids` that have a
/// history: a client completed together, or marked incompatible.
pub async fn pairs_among(
    connection: &mut PgConnection,
    mentor_ids: &[Uuid],
) -> Result<Vec<PairRecord>, sqlx::Error> {
    sqlx::query_as!(
        PairRecord,
        "SELECT mentor_a, mentor_b, clients_completed, \
           incompatible_at IS NOT NULL AS \"incompatible!\" \
         FROM mentor_matching.mentor_pair \
         WHERE mentor_a = ANY($1) AND mentor_b = ANY($1) \
           AND (clients_completed > 0 OR incompatible_at IS NOT NULL)",
        mentor_ids
    )
    .fetch_all(connection)
    .await
}

/// Marks two mentors (ascending) as never to be proposed together; the
/// first reason stands.
pub async fn mark_incompatible(
    connection: &mut PgConnection,
    pair: [Uuid; 2],
    reason: &str,
    marked_by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO mentor_matching.mentor_pair AS pair (mentor_a, mentor_b, incompatible_at, \
           incompatible_reason, marked_by) VALUES ($1, $2, now(), $3, $4) \
         ON CONFLICT (mentor_a, mentor_b) DO UPDATE SET \
           incompatible_at = COALESCE(pair.incompatible_at, now()), \
           incompatible_reason = COALESCE(pair.incompatible_reason, $3), \
           marked_by = COALESCE(pair.marked_by, $4)",
        pair[0],
        pair[1],
        reason,
        marked_by
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Whether two mentors (ascending) were marked incompatible.
pub async fn is_incompatible(
    connection: &mut PgConnection,
    pair: [Uuid; 2],
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM mentor_matching.mentor_pair \
           WHERE mentor_a = $1 AND mentor_b = $2 AND incompatible_at IS NOT NULL) AS \"e!\"",
        pair[0],
        pair[1]
    )
    .fetch_one(connection)
    .await
}

/// Longest reason for a poor fit or an incompatible pair.
pub const MAX_FIT_REASON: usize = 500;

/// A valid ReportPoorFit request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoorFitReport {
    pub allocation_id: Uuid,
    pub reason: String,
    pub mentors_incompatible: bool,
}

impl PoorFitReport {
    pub fn parse(request: &ReportPoorFitRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let allocation_id = parse_id("allocation_id", &request.allocation_id, &mut violations);
        check_text(
            "reason",
            &request.reason,
            true,
            MAX_FIT_REASON,
            &mut violations,
        );
        finish(violations)?;
        Ok(Self {
            allocation_id: allocation_id.expect("validated"),
            reason: request.reason.trim().to_owned(),
            mentors_incompatible: request.mentors_incompatible,
        })
    }
}

/// A valid MarkPairIncompatible request; the pair in ascending order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncompatiblePair {
    pub pair: [Uuid; 2],
    pub reason: String,
}

impl IncompatiblePair {
    pub fn parse(request: &MarkPairIncompatibleRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let pair = parse_pair("mentor_ids", &request.mentor_ids, &mut violations);
        check_text(
            "reason",
            &request.reason,
            true,
            MAX_FIT_REASON,
            &mut violations,
        );
        finish(violations)?;
        let [a, b] = pair.expect("validated");
        Ok(Self {
            pair: PairHistory::key(a, b),
            reason: request.reason.trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(violations: FieldViolations) -> Vec<String> {
        violations.fields().map(str::to_owned).collect()
    }

    const ID: &str = "0190a0a0-0000-7000-8000-000000000001";
    const OTHER: &str = "0190a0a0-0000-7000-8000-000000000002";

    #[test]
    fn a_poor_fit_needs_an_allocation_and_a_reason() {
        let report = |id: &str, reason: &str| {
            PoorFitReport::parse(&ReportPoorFitRequest {
                allocation_id: id.into(),
                reason: reason.into(),
                mentors_incompatible: false,
            })
        };
        assert_eq!(
            report(ID, " not getting on ").unwrap().reason,
            "not getting on"
        );
        assert_eq!(fields(report("", "x").unwrap_err()), ["allocation_id"]);
        assert_eq!(fields(report("nope", "x").unwrap_err()), ["allocation_id"]);
        assert_eq!(fields(report(ID, "  ").unwrap_err()), ["reason"]);
        assert_eq!(
            fields(report(ID, &"x".repeat(501)).unwrap_err()),
            ["reason"]
        );
        assert_eq!(fields(report(ID, "a\u{202e}b").unwrap_err()), ["reason"]);
    }

    #[test]
    fn an_incompatible_pair_is_two_different_mentors_kept_in_order() {
        let mark = |ids: &[&str], reason: &str| {
            IncompatiblePair::parse(&MarkPairIncompatibleRequest {
                mentor_ids: ids.iter().map(|id| (*id).to_owned()).collect(),
                reason: reason.into(),
            })
        };
        let marked = mark(&[OTHER, ID], "fell out").unwrap();
        assert!(marked.pair[0] < marked.pair[1]);
        assert_eq!(fields(mark(&[ID], "x").unwrap_err()), ["mentor_ids"]);
        assert_eq!(fields(mark(&[ID, ID], "x").unwrap_err()), ["mentor_ids"]);
        assert_eq!(
            fields(mark(&[ID, "x"], "x").unwrap_err()),
            ["mentor_ids[1]"]
        );
        assert_eq!(fields(mark(&[ID, OTHER], "").unwrap_err()), ["reason"]);
    }
}
