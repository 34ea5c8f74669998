//! What contact logging does, one function per use case: each takes who
//! asks (as a [`CaseAccess`]) and the parsed request, does its work in one
//! transaction, and answers with rows or a [`CaseError`]. `grpc.rs` keeps
//! tokens, parsing and messages.
//!
//! Every use case reads the case file through [`CaseAccess`] before it
//! changes or shows anything: a case file in an area the coordinator does
//! not work in, or a mentor's who is not allocated to it, is NOT_FOUND as
//! a missing one is, and the transaction is rolled back untouched.

use chrono::{DateTime, SubsecRound as _, Utc};
use cpm_proto::v1::{CaseDischarged, CaseState, ContactLogged, DischargeFeedback};
use cpm_runtime::auth::Caller;
use cpm_runtime::bus::{ServiceHandle, outbox};
use cpm_runtime::client_keys::{ClientKeys, Opener, Reader, SealError};
use cpm_runtime::grpc::values::timestamp;
use cpm_runtime::grpc::{ApiError, FieldViolations};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::concerns;
use crate::db::{self, CaseFileRow, CaseLock, ContactRow, DischargeRecord};
use crate::domain::{CaseAccess, CaseParties, DischargeOrder, NewContact};

/// Why a use case of contact logging did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// Missing, or not the caller's: the two look the same.
    #[error("case file")]
    NotFound,
    #[error("{0}")]
    Denied(String),
    #[error(
        "the case file is {}; contacts can only be logged on an open case file",
        .0.as_str_name()
    )]
    ClosedToContacts(CaseState),
    #[error(
        "the case file is {}; only an open case file can be discharged",
        .0.as_str_name()
    )]
    NotOpenToDischarge(CaseState),
    #[error("the concern is already resolved")]
    AlreadyResolved,
    /// A goal that is missing or not on the case file named.
    #[error("goal")]
    GoalNotFound,
    /// Goals, demand or reports asked of a record in the wrong state.
    #[error("{0}")]
    WrongState(String),
    /// The client was erased: no new text about them is kept.
    #[error("the client's personal data was erased; nothing new about them is accepted")]
    Erased,
    /// A sealed record that does not open: logged, not shown.
    #[error("a sealed record does not open")]
    Unreadable(#[source] cpm_runtime::client_keys::SealError),
    /// A field that only the case file shows to be wrong.
    #[error("invalid request")]
    Invalid(FieldViolations),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<CaseError> for ApiError {
    fn from(error: CaseError) -> Self {
        match error {
            CaseError::NotFound | CaseError::GoalNotFound => ApiError::NotFound(error.to_string()),
            CaseError::Denied(message) => ApiError::PermissionDenied(message),
            CaseError::ClosedToContacts(_)
            | CaseError::NotOpenToDischarge(_)
            | CaseError::AlreadyResolved
            | CaseError::WrongState(_)
            | CaseError::Erased => ApiError::FailedPrecondition(error.to_string()),
            CaseError::Invalid(violations) => ApiError::InvalidArgument(violations),
            CaseError::Unreadable(error) => ApiError::Internal(error.into()),
            CaseError::Database(error) => error.into(),
        }
    }
}

impl From<SealError> for CaseError {
    fn from(error: SealError) -> Self {
        match error {
            SealError::Erased => CaseError::Erased,
            SealError::Database(error) => CaseError::Database(error),
            crypto @ SealError::Crypto(_) => CaseError::Unreadable(crypto),
        }
    }
}

impl From<CaseError> for tonic::Status {
    fn from(error: CaseError) -> Self {
        ApiError::from(error).into()
    }
}

pub(crate) fn case_state(row: &CaseFileRow) -> CaseState {
    CaseState::try_from(row.state).unwrap_or_default()
}

/// The discharge reason opened under the client's key (legacy rows: their
/// plaintext); "" once the client was erased.
fn open_case_file(mut row: CaseFileRow, opener: Option<&Opener>) -> Result<CaseFileRow, CaseError> {
    if let Some(sealed) = row.discharge_reason_sealed.take() {
        row.discharge_reason = Some(match opener {
            Some(opener) => opener.open_text(Some(&sealed))?,
            None => String::new(),
        });
    }
    Ok(row)
}

/// A contact's summary opened under the client's key (legacy rows: their
/// plaintext); "" once the client was erased.
fn open_contact(mut row: ContactRow, opener: Option<&Opener>) -> Result<ContactRow, CaseError> {
    if let Some(sealed) = row.summary_sealed.take() {
        row.summary = match opener {
            Some(opener) => opener.open_text(Some(&sealed))?,
            None => String::new(),
        };
    }
    Ok(row)
}

impl CaseParties for CaseFileRow {
    fn area(&self) -> &str {
        &self.area
    }

    fn mentor_ids(&self) -> &[String] {
        &self.mentor_ids
    }

    fn is_open(&self) -> bool {
        self.state == CaseState::Open as i32
    }
}

/// The case file of `referral_id` when `access` admits it (by its area for
/// staff, its mentors for a mentor), locked as `lock` says; NOT_FOUND when
/// it is missing or not the caller's.
pub(crate) async fn admitted_case_file(
    connection: &mut PgConnection,
    access: &CaseAccess,
    referral_id: Uuid,
    lock: CaseLock,
) -> Result<CaseFileRow, CaseError> {
    let case_file = db::fetch_case_file(connection, referral_id, lock).await?;
    access.admit(case_file)
}

/// Why new text about an erased client is refused: that they were erased
/// when the caller may reach their case file, and otherwise NOT_FOUND, as
/// for any case file the caller may not reach (so a case in another area,
/// or another mentor's, does not show through its client's erasure).
pub(crate) async fn refusal_when_erased(
    connection: &mut PgConnection,
    access: &CaseAccess,
    referral_id: Uuid,
) -> CaseError {
    match admitted_case_file(connection, access, referral_id, CaseLock::None).await {
        Ok(_) => CaseError::Erased,
        Err(error) => error,
    }
}

/// [`ClientKeys::seal_text`], refusing an erased client as
/// [`refusal_when_erased`] says.
pub(crate) async fn seal_for(
    connection: &mut PgConnection,
    keys: &ClientKeys,
    access: &CaseAccess,
    referral_id: Uuid,
    text: &str,
) -> Result<Option<Vec<u8>>, CaseError> {
    match keys.seal_text(connection, referral_id, text).await {
        Ok(sealed) => Ok(sealed),
        Err(SealError::Erased) => Err(refusal_when_erased(connection, access, referral_id).await),
        Err(error) => Err(error.into()),
    }
}

/// The case file of a referral, its free text opened.
pub async fn case_file(
    handle: &ServiceHandle,
    keys: &ClientKeys,
    caller: &Caller,
    access: &CaseAccess,
    referral_id: Uuid,
) -> Result<CaseFileRow, CaseError> {
    let mut connection = handle.pool().acquire().await?;
    let row = admitted_case_file(&mut connection, access, referral_id, CaseLock::None).await?;
    let reader = Reader::of(caller, "GetCaseFile");
    let opener = keys.opener(&mut connection, referral_id, &reader).await?;
    open_case_file(row, opener.as_ref())
}

/// Logs a contact on an open case file, and announces it.
pub async fn log_contact(
    handle: &ServiceHandle,
    keys: &ClientKeys,
    caller: &Caller,
    access: &CaseAccess,
    contact: &NewContact,
) -> Result<ContactRow, CaseError> {
    let mut transaction = handle.begin().await?;
    // The client's key before the case file: erasure takes them in this
    // order too, so the two never wait for each other in a cycle.
    // Refused once the client was erased, even with an empty summary: the
    // contact itself is something new about them.
    // (Sealing a summary refuses an erased client by itself.) Whatever is
    // written before the case file is admitted is rolled back with the
    // transaction when it is not.
    let summary_sealed = if contact.summary.is_empty() {
        if cpm_runtime::client_keys::is_erased(&mut transaction, contact.referral_id).await? {
            return Err(refusal_when_erased(&mut transaction, access, contact.referral_id).await);
        }
        None
    } else {
        seal_for(
            &mut transaction,
            keys,
            access,
            contact.referral_id,
            &contact.summary,
        )
        .await?
    };
    let case_file = admitted_case_file(
        &mut transaction,
        access,
        contact.referral_id,
        CaseLock::Share,
    )
    .await?;
    if case_state(&case_file) != CaseState::Open {
        return Err(CaseError::ClosedToContacts(case_state(&case_file)));
    }
    if contact.occurred_at < case_file.opened_at {
        let mut violations = FieldViolations::new();
        violations.add("occurred_at", "must not be before the case file opened");
        return Err(CaseError::Invalid(violations));
    }
    let row = db::insert_contact(
        &mut transaction,
        &db::NewContactRow {
            contact_id: Uuid::now_v7(),
            case_file_id: case_file.case_file_id,
            activity: contact.activity as i32,
            minutes: contact.minutes,
            occurred_at: contact.occurred_at,
            logged_by: &caller.subject,
            logged_by_role: caller.role.as_str(),
            summary_sealed: summary_sealed.as_deref(),
            concern_raised: contact.concern.is_some(),
            channel: contact.channel as i32,
            attempted: contact.attempted,
            mentor_id: match access {
                CaseAccess::AllocatedMentor(mentor_id) => Some(mentor_id),
                CaseAccess::Staff(_) => None,
            },
        },
    )
    .await?;
    let concern_id = match contact.concern {
        Some(concern) => Some(
            concerns::raise(
                &mut transaction,
                &case_file,
                row.contact_id,
                &caller.subject,
                concern,
            )
            .await?,
        ),
        None => None,
    };
    outbox::enqueue(
        &mut transaction,
        crate::NAME,
        &ContactLogged {
            contact_id: row.contact_id.to_string(),
            referral_id: case_file.referral_id.to_string(),
            case_file_id: case_file.case_file_id.to_string(),
            activity: row.activity,
            minutes: row.minutes,
            occurred_at: Some(timestamp(row.occurred_at)),
            concern_raised: row.concern_raised,
            channel: row.channel,
            attempted: row.attempted,
        },
    )
    .await?;
    transaction.commit().await?;
    tracing::info!(
        contact_id = %row.contact_id,
        activity = contact.activity.as_str_name(),
        channel = contact.channel.as_str_name(),
        attempted = row.attempted,
        minutes = row.minutes,
        concern_raised = row.concern_raised,
        "contact logged"
    );
    Ok(ContactRow {
        summary: contact.summary.clone(),
        summary_sealed: None,
        concern_id,
        ..row
    })
}

/// One page of a case file's contacts, newest first, after `after`
/// (when it happened, when it was logged, its ID); `limit` rows at most.
pub async fn list_contacts(
    handle: &ServiceHandle,
    keys: &ClientKeys,
    caller: &Caller,
    access: &CaseAccess,
    referral_id: Uuid,
    after: Option<(DateTime<Utc>, DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ContactRow>, CaseError> {
    let mut transaction = handle.begin().await?;
    let case_file =
        admitted_case_file(&mut transaction, access, referral_id, CaseLock::None).await?;
    let rows = db::list_contacts(&mut transaction, case_file.case_file_id, after, limit).await?;
    let reader = Reader::of(caller, "ListContacts");
    let opener = keys.opener(&mut transaction, referral_id, &reader).await?;
    transaction.commit().await?;
    rows.into_iter()
        .map(|row| open_contact(row, opener.as_ref()))
        .collect()
}

/// Closes an open case file with its outcome, and announces the discharge
/// with the proforma feedback for the referrer: dates, contacts made,
/// outcome, goals, relapse signs and how to re-refer — nothing that
/// identifies anyone (the coordinator's note stays sealed here).
pub async fn discharge(
    handle: &ServiceHandle,
    keys: &ClientKeys,
    caller: &Caller,
    access: &CaseAccess,
    order: &DischargeOrder,
    how_to_re_refer: &str,
    now: DateTime<Utc>,
) -> Result<CaseFileRow, CaseError> {
    let mut transaction = handle.begin().await?;
    // The client's key first, as erasure takes it (see log_contact).
    let reason_sealed = seal_for(
        &mut transaction,
        keys,
        access,
        order.referral_id,
        &order.reason,
    )
    .await?;
    let case_file = admitted_case_file(
        &mut transaction,
        access,
        order.referral_id,
        CaseLock::Update,
    )
    .await?;
    let state = case_state(&case_file);
    if state != CaseState::Open {
        return Err(CaseError::NotOpenToDischarge(state));
    }
    let contacts = db::count_contacts_made(&mut transaction, case_file.case_file_id).await?;
    let goals = db::goal_counts(&mut transaction, case_file.case_file_id).await?;
    let relapse_signs: Vec<i32> = order
        .relapse_signs
        .iter()
        .map(|sign| *sign as i32)
        .collect();
    let record = DischargeRecord {
        discharged_by: &caller.subject,
        discharged_at: now.trunc_subsecs(6),
        reason_sealed: reason_sealed.as_deref(),
        outcome: order.outcome as i32,
        relapse_signs: &relapse_signs,
        contacts: saturate(contacts),
        goals_set: saturate(goals.set),
        goals_achieved: saturate(goals.achieved),
    };
    let discharged_at = db::discharge_case_file(
        &mut transaction,
        case_file.case_file_id,
        CaseState::Open as i32,
        CaseState::Discharged as i32,
        &record,
    )
    .await?
    .ok_or(CaseError::NotOpenToDischarge(state))?;
    outbox::enqueue(
        &mut transaction,
        crate::NAME,
        &CaseDischarged {
            case_file_id: case_file.case_file_id.to_string(),
            referral_id: case_file.referral_id.to_string(),
            agency_id: case_file.agency_id.clone(),
            discharged_at: Some(timestamp(discharged_at)),
            discharged_by: caller.subject.clone(),
            feedback: Some(feedback(
                &case_file,
                discharged_at,
                &record,
                how_to_re_refer,
            )),
        },
    )
    .await?;
    let row =
        admitted_case_file(&mut transaction, access, order.referral_id, CaseLock::None).await?;
    let reader = Reader::of(caller, "Discharge");
    let opener = keys
        .opener(&mut transaction, order.referral_id, &reader)
        .await?;
    let row = open_case_file(row, opener.as_ref())?;
    transaction.commit().await?;
    tracing::info!(case_file_id = %row.case_file_id, "case discharged");
    Ok(row)
}

fn saturate(count: i64) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}

/// The discharge proforma the referrer receives: the referral's reference,
/// dates, counts and closed categories, and the programme's own
/// instructions for referring again.
pub fn feedback(
    case_file: &CaseFileRow,
    discharged_at: DateTime<Utc>,
    record: &DischargeRecord<'_>,
    how_to_re_refer: &str,
) -> DischargeFeedback {
    DischargeFeedback {
        referral_id: case_file.referral_id.to_string(),
        started_on: case_file.opened_at.date_naive().to_string(),
        discharged_on: discharged_at.date_naive().to_string(),
        contacts: record.contacts,
        outcome: record.outcome,
        relapse_signs: record.relapse_signs.to_vec(),
        how_to_re_refer: how_to_re_refer.to_owned(),
        goals_set: record.goals_set,
        goals_achieved: record.goals_achieved,
    }
}

/// The feedback a discharged case file recorded; `None` before discharge.
pub fn recorded_feedback(row: &CaseFileRow, how_to_re_refer: &str) -> Option<DischargeFeedback> {
    let discharged_at = row.discharged_at?;
    let record = DischargeRecord {
        discharged_by: "",
        discharged_at,
        reason_sealed: None,
        outcome: row.discharge_outcome.unwrap_or_default(),
        relapse_signs: &row.relapse_signs,
        contacts: row.feedback_contacts.unwrap_or_default(),
        goals_set: row.feedback_goals_set.unwrap_or_default(),
        goals_achieved: row.feedback_goals_achieved.unwrap_or_default(),
    };
    Some(feedback(row, discharged_at, &record, how_to_re_refer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn errors_map_to_the_status_a_caller_can_act_on() {
        let status = |error: CaseError| tonic::Status::from(error);
        assert_eq!(status(CaseError::NotFound).code(), Code::NotFound);
        assert_eq!(status(CaseError::NotFound).message(), "case file not found");
        assert_eq!(
            status(CaseError::Denied("no".into())).code(),
            Code::PermissionDenied
        );
        let closed = status(CaseError::ClosedToContacts(CaseState::Discharged));
        assert_eq!(closed.code(), Code::FailedPrecondition);
        assert_eq!(
            closed.message(),
            "the case file is CASE_STATE_DISCHARGED; contacts can only be logged on an open case file"
        );
        let discharged = status(CaseError::NotOpenToDischarge(CaseState::Discharged));
        assert_eq!(discharged.code(), Code::FailedPrecondition);
        assert!(discharged.message().contains("only an open case file"));
    }
}
