//! A client's goals: set with GROW (Goal, Reality, Options, Way forward), a
//! SMART target date and the client's commitment (1 to 10), then updated
//! with progress until achieved or dropped (both final). Goals are set and
//! updated only on an open case file, by whoever may log contacts on it.
//!
//! Goal text and progress notes are free text about the client: sealed
//! under the client's key like contact summaries, opened (and the reading
//! audited) only to answer the caller, blanked and unreadable once the
//! client is erased, after which nothing new is accepted.

use chrono::{DateTime, Months, NaiveDate, SubsecRound, Utc};
use cpm_proto::v1::{
    CaseState, Goal, GoalProgress, GoalState, RecordGoalProgressRequest, SetGoalRequest,
};
use cpm_runtime::auth::Caller;
use cpm_runtime::bus::ServiceHandle;
use cpm_runtime::client_keys::{ClientKeys, Opener, Reader};
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::{check_text, parse_enum, parse_id, timestamp};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::commands::{CaseError, admitted_case_file, case_state, refusal_when_erased, seal_for};
use crate::db::{CaseFileRow, CaseLock};
use crate::domain::{CaseAccess, MAX_TEXT, parse_day};

/// How far ahead a target date may be: a SMART goal is time-bound.
pub const MAX_TARGET_MONTHS: u32 = 36;
/// The client's commitment is rated on this scale.
pub const COMMITMENT: std::ops::RangeInclusive<i32> = 1..=10;

/// A valid new goal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewGoal {
    pub referral_id: Uuid,
    pub goal: String,
    pub reality: String,
    pub options: String,
    pub way_forward: String,
    pub target_date: NaiveDate,
    pub commitment: i16,
}

fn check_commitment(field: &str, value: i32, violations: &mut FieldViolations) {
    if !COMMITMENT.contains(&value) {
        violations.add(field, "must be between 1 and 10");
    }
}

impl NewGoal {
    /// Parses a request as of `today`, or every reason it is refused.
    pub fn parse(request: &SetGoalRequest, today: NaiveDate) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let referral_id = parse_id("referral_id", &request.referral_id, &mut violations);
        check_text("goal", &request.goal, true, MAX_TEXT, &mut violations);
        check_text(
            "reality",
            &request.reality,
            false,
            MAX_TEXT,
            &mut violations,
        );
        check_text(
            "options",
            &request.options,
            false,
            MAX_TEXT,
            &mut violations,
        );
        check_text(
            "way_forward",
            &request.way_forward,
            true,
            MAX_TEXT,
            &mut violations,
        );
        let latest = today + Months::new(MAX_TARGET_MONTHS);
        let target_date =
            match parse_day("target_date", &request.target_date, true, &mut violations) {
                Some(date) if date < today => {
                    violations.add("target_date", "must not be in the past");
                    None
                }
                Some(date) if date > latest => {
                    violations.add(
                        "target_date",
                        format!("must be at most {MAX_TARGET_MONTHS} months ahead"),
                    );
                    None
                }
                date => date,
            };
        check_commitment("commitment", request.commitment, &mut violations);
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            referral_id: referral_id.expect("validated"),
            goal: request.goal.clone(),
            reality: request.reality.clone(),
            options: request.options.clone(),
            way_forward: request.way_forward.clone(),
            target_date: target_date.expect("validated"),
            commitment: request.commitment as i16,
        })
    }
}

/// A valid progress update: a note, a new commitment, an end, or several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoalUpdate {
    pub referral_id: Uuid,
    pub goal_id: Uuid,
    pub note: String,
    pub commitment: Option<i16>,
    /// The state the goal moves to; `None` keeps it ongoing.
    pub state: Option<GoalState>,
}

impl GoalUpdate {
    /// Parses a request, or every reason it is refused.
    pub fn parse(request: &RecordGoalProgressRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let referral_id = parse_id("referral_id", &request.referral_id, &mut violations);
        let goal_id = parse_id("goal_id", &request.goal_id, &mut violations);
        check_text("note", &request.note, false, MAX_TEXT, &mut violations);
        let commitment = match request.commitment {
            0 => None,
            value => {
                check_commitment("commitment", value, &mut violations);
                Some(value as i16)
            }
        };
        let state = match request.state {
            0 => None,
            value => parse_enum::<GoalState>("state", value, &mut violations),
        };
        if request.note.trim().is_empty()
            && request.commitment == 0
            && request.state == 0
            && !violations.fields().any(|field| field == "note")
        {
            violations.add("note", "must not be empty when nothing else changes");
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            referral_id: referral_id.expect("validated"),
            goal_id: goal_id.expect("validated"),
            note: request.note.clone(),
            commitment,
            state,
        })
    }
}

/// A goal as stored, its text sealed.
#[derive(Clone, Debug)]
pub struct GoalRow {
    pub goal_id: Uuid,
    pub case_file_id: Uuid,
    pub goal_sealed: Option<Vec<u8>>,
    pub reality_sealed: Option<Vec<u8>>,
    pub options_sealed: Option<Vec<u8>>,
    pub way_forward_sealed: Option<Vec<u8>>,
    pub target_date: NaiveDate,
    pub commitment: i16,
    pub state: i32,
    pub set_by: String,
    pub set_at: DateTime<Utc>,
}

/// A progress update as stored, its note sealed.
#[derive(Clone, Debug)]
pub struct GoalProgressRow {
    pub goal_progress_id: Uuid,
    pub goal_id: Uuid,
    pub note_sealed: Option<Vec<u8>>,
    pub commitment: Option<i16>,
    pub state: i32,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
}

async fn insert_goal(connection: &mut PgConnection, goal: &GoalRow) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO contact_logging.goal (goal_id, case_file_id, goal_sealed, reality_sealed, \
         options_sealed, way_forward_sealed, target_date, commitment, state, set_by, set_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        goal.goal_id,
        goal.case_file_id,
        goal.goal_sealed,
        goal.reality_sealed,
        goal.options_sealed,
        goal.way_forward_sealed,
        goal.target_date,
        goal.commitment,
        goal.state,
        goal.set_by,
        goal.set_at,
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// The goals of a case file, oldest first; `goal_id` narrows to one.
async fn fetch_goals(
    connection: &mut PgConnection,
    case_file_id: Uuid,
    goal_id: Option<Uuid>,
) -> Result<Vec<GoalRow>, sqlx::Error> {
    sqlx::query_as!(
        GoalRow,
        "SELECT goal_id, case_file_id, goal_sealed, reality_sealed, options_sealed, \
         way_forward_sealed, target_date, commitment, state, set_by, set_at \
         FROM contact_logging.goal \
         WHERE case_file_id = $1 AND ($2::uuid IS NULL OR goal_id = $2) \
         ORDER BY set_at, goal_id",
        case_file_id,
        goal_id
    )
    .fetch_all(connection)
    .await
}

/// One goal of a case file, locked until the transaction ends, so two
/// updates of the same goal (say one achieving and one dropping it) take
/// turns and the second sees the first's state.
async fn lock_goal(
    connection: &mut PgConnection,
    case_file_id: Uuid,
    goal_id: Uuid,
) -> Result<Option<GoalRow>, sqlx::Error> {
    sqlx::query_as!(
        GoalRow,
        "SELECT goal_id, case_file_id, goal_sealed, reality_sealed, options_sealed, \
         way_forward_sealed, target_date, commitment, state, set_by, set_at \
         FROM contact_logging.goal WHERE case_file_id = $1 AND goal_id = $2 FOR UPDATE",
        case_file_id,
        goal_id
    )
    .fetch_optional(connection)
    .await
}

async fn fetch_progress(
    connection: &mut PgConnection,
    goal_ids: &[Uuid],
) -> Result<Vec<GoalProgressRow>, sqlx::Error> {
    sqlx::query_as!(
        GoalProgressRow,
        "SELECT goal_progress_id, goal_id, note_sealed, commitment, state, recorded_by, \
         recorded_at FROM contact_logging.goal_progress WHERE goal_id = ANY($1) \
         ORDER BY recorded_at, goal_progress_id",
        goal_ids
    )
    .fetch_all(connection)
    .await
}

async fn insert_progress(
    connection: &mut PgConnection,
    progress: &GoalProgressRow,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO contact_logging.goal_progress (goal_progress_id, goal_id, note_sealed, \
         commitment, state, recorded_by, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        progress.goal_progress_id,
        progress.goal_id,
        progress.note_sealed,
        progress.commitment,
        progress.state,
        progress.recorded_by,
        progress.recorded_at,
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        "UPDATE contact_logging.goal SET state = $2, commitment = COALESCE($3, commitment) \
         WHERE goal_id = $1",
        progress.goal_id,
        progress.state,
        progress.commitment
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Drops the sealed goal text and notes of an erased client (the key is
/// already shredded); states, dates and commitments stay. Returns the rows
/// changed.
pub async fn forget_goal_text(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<u64, sqlx::Error> {
    let goals = sqlx::query!(
        "UPDATE contact_logging.goal SET goal_sealed = NULL, reality_sealed = NULL, \
         options_sealed = NULL, way_forward_sealed = NULL \
         WHERE (goal_sealed IS NOT NULL OR reality_sealed IS NOT NULL \
                OR options_sealed IS NOT NULL OR way_forward_sealed IS NOT NULL) \
           AND case_file_id IN \
           (SELECT case_file_id FROM contact_logging.case_file WHERE referral_id = $1)",
        referral_id
    )
    .execute(&mut *connection)
    .await?
    .rows_affected();
    let notes = sqlx::query!(
        "UPDATE contact_logging.goal_progress SET note_sealed = NULL \
         WHERE note_sealed IS NOT NULL AND goal_id IN \
           (SELECT goal_id FROM contact_logging.goal JOIN contact_logging.case_file \
            USING (case_file_id) WHERE referral_id = $1)",
        referral_id
    )
    .execute(connection)
    .await?
    .rows_affected();
    Ok(goals + notes)
}

/// The open case file `access` admits, or why goals cannot change on it.
async fn open_case_file_for_goals(
    connection: &mut PgConnection,
    access: &CaseAccess,
    referral_id: Uuid,
) -> Result<CaseFileRow, CaseError> {
    let case_file = admitted_case_file(connection, access, referral_id, CaseLock::Share).await?;
    let state = case_state(&case_file);
    if state != CaseState::Open {
        return Err(CaseError::WrongState(format!(
            "the case file is {}; goals change only on an open case file",
            state.as_str_name()
        )));
    }
    Ok(case_file)
}

/// Refuses new facts about an erased client even when they carry no text.
async fn refuse_when_erased(
    connection: &mut PgConnection,
    access: &CaseAccess,
    referral_id: Uuid,
) -> Result<(), CaseError> {
    if cpm_runtime::client_keys::is_erased(connection, referral_id).await? {
        return Err(refusal_when_erased(connection, access, referral_id).await);
    }
    Ok(())
}

/// Sets a goal on an open case file.
pub async fn set_goal(
    handle: &ServiceHandle,
    keys: &ClientKeys,
    caller: &Caller,
    access: &CaseAccess,
    new: &NewGoal,
) -> Result<Goal, CaseError> {
    let mut transaction = handle.begin().await?;
    let referral_id = new.referral_id;
    // The client's key before the case file, as erasure takes them (see
    // commands::log_contact); a refusal rolls back whatever was written.
    let mut sealed = Vec::with_capacity(4);
    for text in [&new.goal, &new.reality, &new.options, &new.way_forward] {
        sealed.push(seal_for(&mut transaction, keys, access, referral_id, text).await?);
    }
    let case_file = open_case_file_for_goals(&mut transaction, access, referral_id).await?;
    let mut sealed = sealed.into_iter();
    let row = GoalRow {
        goal_id: Uuid::now_v7(),
        case_file_id: case_file.case_file_id,
        goal_sealed: sealed.next().flatten(),
        reality_sealed: sealed.next().flatten(),
        options_sealed: sealed.next().flatten(),
        way_forward_sealed: sealed.next().flatten(),
        target_date: new.target_date,
        commitment: new.commitment,
        state: GoalState::Ongoing as i32,
        set_by: caller.subject.clone(),
        set_at: Utc::now().trunc_subsecs(6),
    };
    insert_goal(&mut transaction, &row).await?;
    transaction.commit().await?;
    tracing::info!(goal_id = %row.goal_id, case_file_id = %row.case_file_id, "goal set");
    Ok(Goal {
        goal: new.goal.clone(),
        reality: new.reality.clone(),
        options: new.options.clone(),
        way_forward: new.way_forward.clone(),
        ..goal_to_proto(referral_id, &row)
    })
}

/// Records progress on an ongoing goal, and answers the goal as it now is.
pub async fn record_progress(
    handle: &ServiceHandle,
    keys: &ClientKeys,
    caller: &Caller,
    access: &CaseAccess,
    update: &GoalUpdate,
) -> Result<Goal, CaseError> {
    let mut transaction = handle.begin().await?;
    let referral_id = update.referral_id;
    let note_sealed = if update.note.is_empty() {
        refuse_when_erased(&mut transaction, access, referral_id).await?;
        None
    } else {
        seal_for(&mut transaction, keys, access, referral_id, &update.note).await?
    };
    let case_file = open_case_file_for_goals(&mut transaction, access, referral_id).await?;
    let goal = lock_goal(&mut transaction, case_file.case_file_id, update.goal_id)
        .await?
        .ok_or(CaseError::GoalNotFound)?;
    let state = GoalState::try_from(goal.state).unwrap_or_default();
    if state != GoalState::Ongoing {
        return Err(CaseError::WrongState(format!(
            "the goal is {}; set a new goal instead",
            state.as_str_name()
        )));
    }
    insert_progress(
        &mut transaction,
        &GoalProgressRow {
            goal_progress_id: Uuid::now_v7(),
            goal_id: goal.goal_id,
            note_sealed,
            commitment: update.commitment,
            state: update.state.unwrap_or(GoalState::Ongoing) as i32,
            recorded_by: caller.subject.clone(),
            recorded_at: Utc::now().trunc_subsecs(6),
        },
    )
    .await?;
    let mut goals = read_goals(
        &mut transaction,
        keys,
        caller,
        &case_file,
        Some(goal.goal_id),
        "RecordGoalProgress",
    )
    .await?;
    transaction.commit().await?;
    tracing::info!(goal_id = %goal.goal_id, state = ?update.state, "goal progress recorded");
    goals.pop().ok_or(CaseError::GoalNotFound)
}

/// The goals of a case file with their progress, oldest first.
pub async fn list_goals(
    handle: &ServiceHandle,
    keys: &ClientKeys,
    caller: &Caller,
    access: &CaseAccess,
    referral_id: Uuid,
) -> Result<Vec<Goal>, CaseError> {
    let mut transaction = handle.begin().await?;
    let case_file =
        admitted_case_file(&mut transaction, access, referral_id, CaseLock::None).await?;
    let goals = read_goals(
        &mut transaction,
        keys,
        caller,
        &case_file,
        None,
        "ListGoals",
    )
    .await?;
    transaction.commit().await?;
    Ok(goals)
}

/// The goals (or one goal) of `case_file`, their text opened for `caller`
/// (the reading audited); empty text once the client was erased.
async fn read_goals(
    connection: &mut PgConnection,
    keys: &ClientKeys,
    caller: &Caller,
    case_file: &CaseFileRow,
    goal_id: Option<Uuid>,
    purpose: &str,
) -> Result<Vec<Goal>, CaseError> {
    let rows = fetch_goals(connection, case_file.case_file_id, goal_id).await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|row| row.goal_id).collect();
    let progress = fetch_progress(connection, &ids).await?;
    let reader = Reader::of(caller, purpose);
    let opener = keys
        .opener(connection, case_file.referral_id, &reader)
        .await?;
    let opener = opener.as_ref();
    rows.iter()
        .map(|row| {
            let updates = progress
                .iter()
                .filter(|update| update.goal_id == row.goal_id)
                .map(|update| {
                    Ok(GoalProgress {
                        note: open(opener, &update.note_sealed)?,
                        commitment: update.commitment.map(i32::from).unwrap_or(0),
                        state: update.state,
                        recorded_by: update.recorded_by.clone(),
                        recorded_at: Some(timestamp(update.recorded_at)),
                    })
                })
                .collect::<Result<Vec<_>, CaseError>>()?;
            Ok(Goal {
                goal: open(opener, &row.goal_sealed)?,
                reality: open(opener, &row.reality_sealed)?,
                options: open(opener, &row.options_sealed)?,
                way_forward: open(opener, &row.way_forward_sealed)?,
                progress: updates,
                ..goal_to_proto(case_file.referral_id, row)
            })
        })
        .collect()
}

fn open(opener: Option<&Opener>, sealed: &Option<Vec<u8>>) -> Result<String, CaseError> {
    match opener {
        Some(opener) => Ok(opener.open_text(sealed.as_deref())?),
        None => Ok(String::new()),
    }
}

/// A goal's figures; its text is the caller's to fill in.
fn goal_to_proto(referral_id: Uuid, row: &GoalRow) -> Goal {
    Goal {
        goal_id: row.goal_id.to_string(),
        referral_id: referral_id.to_string(),
        target_date: row.target_date.to_string(),
        commitment: i32::from(row.commitment),
        state: row.state,
        set_by: row.set_by.clone(),
        set_at: Some(timestamp(row.set_at)),
        ..Goal::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 3).unwrap()
    }

    fn valid_goal() -> SetGoalRequest {
        SetGoalRequest {
            referral_id: Uuid::now_v7().to_string(),
            goal: "go to the community cafe on my own".into(),
            reality: "I have not left the house alone since spring".into(),
            options: "walk there with a mentor first; take the bus".into(),
            way_forward: "walk there together on Tuesday".into(),
            target_date: "2027-03-01".into(),
            commitment: 7,
        }
    }

    fn goal_fields(request: &SetGoalRequest) -> Vec<String> {
        NewGoal::parse(request, today())
            .unwrap_err()
            .fields()
            .map(str::to_owned)
            .collect()
    }

    fn update_fields(request: &RecordGoalProgressRequest) -> Vec<String> {
        GoalUpdate::parse(request)
            .unwrap_err()
            .fields()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_complete_goal_parses() {
        let goal = NewGoal::parse(&valid_goal(), today()).unwrap();
        assert_eq!(
            goal.target_date,
            NaiveDate::from_ymd_opt(2027, 3, 1).unwrap()
        );
        assert_eq!(goal.commitment, 7);
        assert_eq!(goal.way_forward, "walk there together on Tuesday");
    }

    #[test]
    fn every_goal_violation_is_reported_at_once() {
        let request = SetGoalRequest {
            referral_id: "nope".into(),
            goal: " ".into(),
            reality: "x".repeat(MAX_TEXT + 1),
            options: "tab\tis fine but a bell \u{7} is not".into(),
            way_forward: "hidden\u{200B}space".into(),
            target_date: "1 March".into(),
            commitment: 11,
        };
        assert_eq!(
            goal_fields(&request),
            [
                "referral_id",
                "goal",
                "reality",
                "options",
                "way_forward",
                "target_date",
                "commitment"
            ]
        );
    }

    #[test]
    fn a_target_date_is_required_from_today_to_three_years_ahead() {
        let mut request = valid_goal();
        for (date, ok) in [
            ("", false),
            ("2026-12-02", false),
            ("2026-12-03", true),
            ("2029-12-03", true),
            ("2029-12-04", false),
            ("2027-02-30", false),
        ] {
            request.target_date = date.into();
            assert_eq!(
                NewGoal::parse(&request, today()).is_ok(),
                ok,
                "target date {date:?}"
            );
        }
    }

    #[test]
    fn commitment_is_rated_1_to_10() {
        let mut request = valid_goal();
        for commitment in [0, -1, 11] {
            request.commitment = commitment;
            assert_eq!(goal_fields(&request), ["commitment"], "{commitment}");
        }
        for commitment in [1, 10] {
            request.commitment = commitment;
            assert!(NewGoal::parse(&request, today()).is_ok());
        }
    }

    #[test]
    fn a_progress_update_must_change_something_and_names_every_bad_field() {
        let empty = RecordGoalProgressRequest {
            referral_id: Uuid::now_v7().to_string(),
            goal_id: Uuid::now_v7().to_string(),
            ..Default::default()
        };
        assert_eq!(update_fields(&empty), ["note"]);
        let bad = RecordGoalProgressRequest {
            referral_id: String::new(),
            goal_id: "x".into(),
            note: "\u{202E}reversed".into(),
            commitment: 12,
            state: 9,
        };
        assert_eq!(
            update_fields(&bad),
            ["referral_id", "goal_id", "note", "commitment", "state"]
        );
        let achieved = GoalUpdate::parse(&RecordGoalProgressRequest {
            state: GoalState::Achieved as i32,
            ..empty.clone()
        })
        .unwrap();
        assert_eq!(achieved.state, Some(GoalState::Achieved));
        assert_eq!(achieved.commitment, None);
        let rated = GoalUpdate::parse(&RecordGoalProgressRequest {
            commitment: 9,
            ..empty
        })
        .unwrap();
        assert_eq!((rated.commitment, rated.state), (Some(9), None));
    }
}
