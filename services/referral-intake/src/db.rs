//! Action-named queries on the `referral_intake` schema. Every query that
//! serves an agency filters by its agency ID here, in SQL, so no handler can
//! forget to.

use chrono::{DateTime, Utc};
use cpm_proto::v1::ReferralLinkState;
use cpm_runtime::bus::outbox::OutboxRow;
use sqlx::PgConnection;
use uuid::Uuid;

/// A referral row without personal data.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ReferralRow {
    pub referral_id: Uuid,
    pub agency_id: String,
    pub request_hash: Vec<u8>,
    pub submitted_at: DateTime<Utc>,
    pub area: String,
    pub client_gender: i32,
    pub vulnerabilities: Vec<i32>,
    pub earlier_referral_id: Option<Uuid>,
    pub status: i32,
    pub status_changed_at: DateTime<Utc>,
    pub not_taken_on_stage: Option<i32>,
    pub not_taken_on_reason: Option<i32>,
    pub estimated_start: Option<DateTime<Utc>>,
    pub estimated_start_latest: Option<DateTime<Utc>>,
    pub discharged_at: Option<DateTime<Utc>>,
    pub emergency_calls_last_12_months: i32,
    pub victim_of: Vec<i32>,
    pub perpetrator_of: Vec<i32>,
    pub known_risk_types: Vec<i32>,
    pub referrer_will_co_visit: bool,
    pub police_calls: Option<i32>,
    pub ambulance_calls: Option<i32>,
    pub nhs_111_calls: Option<i32>,
    pub other_calls: Option<i32>,
    pub police_staff_hours: Option<f64>,
    pub safeguarding_reports: Option<i32>,
    pub erased_at: Option<DateTime<Utc>>,
    /// cpm.v1.ReferralLinkState of `earlier_referral_id`.
    pub link_state: i16,
    pub earlier_agency_id: Option<String>,
    pub withdrawn_at_status: Option<i32>,
    pub withdrawal_reason_sealed: Option<Vec<u8>>,
    /// The encoded `cpm.v1.DischargeFeedback` sent at discharge.
    pub discharge_feedback: Option<Vec<u8>>,
    pub feedback_received_at: Option<DateTime<Utc>>,
}

/// `query_as!` into [`ReferralRow`]: its columns from `referral`, then
/// `$rest` (a string literal: the `WHERE` clause and what follows).
macro_rules! select_referrals {
    ($rest:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            ReferralRow,
            "SELECT referral_id, agency_id, request_hash, submitted_at, area, \
             client_gender, vulnerabilities, earlier_referral_id, status, status_changed_at, \
             not_taken_on_stage, not_taken_on_reason, estimated_start, estimated_start_latest, \
             discharged_at, \
             emergency_calls_last_12_months, victim_of, perpetrator_of, known_risk_types, \
             referrer_will_co_visit, police_calls, ambulance_calls, nhs_111_calls, other_calls, \
             police_staff_hours, safeguarding_reports, erased_at, link_state, \
             earlier_agency_id, withdrawn_at_status, withdrawal_reason_sealed, \
             discharge_feedback, feedback_received_at \
             FROM referral_intake.referral " + $rest
            $(, $arg)*
        )
    };
}

/// What a new referral row holds.
pub struct NewReferralRow<'a> {
    pub referral_id: Uuid,
    pub agency_id: &'a str,
    /// The keyed hash of the agency's idempotency key, under the current key.
    pub idempotency_key_hash: &'a [u8],
    pub request_hash: &'a [u8],
    pub submitted_by: &'a str,
    pub area: &'a str,
    pub client_gender: i32,
    pub vulnerabilities: Vec<i32>,
    pub emergency_calls_last_12_months: i32,
    pub client_fingerprint: &'a [u8],
    /// A possible earlier referral of the same client, and its agency.
    pub earlier_referral_id: Option<Uuid>,
    pub earlier_agency_id: Option<&'a str>,
    pub status: i32,
    pub status_rank: i32,
    pub victim_of: Vec<i32>,
    pub perpetrator_of: Vec<i32>,
    pub known_risk_types: Vec<i32>,
    pub referrer_will_co_visit: bool,
    pub demand: Option<cpm_proto::v1::Demand>,
    /// Also the event's: set here rather than by the database, so both agree.
    pub submitted_at: DateTime<Utc>,
}

impl NewReferralRow<'_> {
    /// The row as [`insert_referral`] stores it.
    fn stored(&self) -> ReferralRow {
        let demand = self.demand;
        ReferralRow {
            referral_id: self.referral_id,
            agency_id: self.agency_id.to_owned(),
            request_hash: self.request_hash.to_vec(),
            submitted_at: self.submitted_at,
            area: self.area.to_owned(),
            client_gender: self.client_gender,
            vulnerabilities: self.vulnerabilities.clone(),
            earlier_referral_id: self.earlier_referral_id,
            status: self.status,
            status_changed_at: self.submitted_at,
            not_taken_on_stage: None,
            not_taken_on_reason: None,
            estimated_start: None,
            estimated_start_latest: None,
            discharged_at: None,
            emergency_calls_last_12_months: self.emergency_calls_last_12_months,
            victim_of: self.victim_of.clone(),
            perpetrator_of: self.perpetrator_of.clone(),
            known_risk_types: self.known_risk_types.clone(),
            referrer_will_co_visit: self.referrer_will_co_visit,
            police_calls: demand.map(|d| d.police_calls),
            ambulance_calls: demand.map(|d| d.ambulance_calls),
            nhs_111_calls: demand.map(|d| d.nhs_111_calls),
            other_calls: demand.map(|d| d.other_calls),
            police_staff_hours: demand.map(|d| d.police_staff_hours),
            safeguarding_reports: demand.map(|d| d.safeguarding_reports),
            erased_at: None,
            link_state: self.link_state(),
            earlier_agency_id: self.earlier_agency_id.map(str::to_owned),
            withdrawn_at_status: None,
            withdrawal_reason_sealed: None,
            discharge_feedback: None,
            feedback_received_at: None,
        }
    }

    /// Possible when an earlier referral was found, else none.
    fn link_state(&self) -> i16 {
        if self.earlier_referral_id.is_some() {
            ReferralLinkState::Possible as i16
        } else {
            ReferralLinkState::Unspecified as i16
        }
    }
}

/// Inserts a referral with its sealed client record and its
/// `referral.submitted` event, in one statement (so atomic without an
/// explicit transaction, and one round trip), and returns it as stored;
/// `None` (and nothing written) when the agency already used the
/// idempotency key. Run it in autocommit, then wake the relay: the
/// statement raises no NOTIFY.
pub async fn insert_referral(
    connection: &mut PgConnection,
    row: &NewReferralRow<'_>,
    wrapped_data_key: &[u8],
    sealed_details: &[u8],
    event: &OutboxRow,
) -> Result<Option<ReferralRow>, sqlx::Error> {
    // The last CTE is what `OutboxRow::cte("announced", "inserted", 27)`
    // writes, spelled out so the statement is checked. The caller wakes its
    // relay once this has committed.
    let inserted = sqlx::query_scalar!(
        "WITH inserted AS (INSERT INTO referral_intake.referral (referral_id, agency_id, \
         idempotency_key_hash, request_hash, submitted_by, area, client_gender, vulnerabilities, \
         emergency_calls_last_12_months, client_consented, client_fingerprint, \
         earlier_referral_id, status, status_rank, victim_of, perpetrator_of, \
         known_risk_types, referrer_will_co_visit, police_calls, ambulance_calls, \
         nhs_111_calls, other_calls, police_staff_hours, safeguarding_reports, \
         submitted_at, status_changed_at, link_state, earlier_agency_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, true, $10, $11, $12, $13, $14, $15, $16, \
         $17, $18, $19, $20, $21, $22, $23, $24, $24, $31, $32) \
         ON CONFLICT ON CONSTRAINT referral_idempotency_key DO NOTHING \
         RETURNING referral_id), \
         sealed AS (INSERT INTO referral_intake.client_record (referral_id, wrapped_data_key, \
                    sealed_details) SELECT referral_id, $25, $26 FROM inserted), \
         announced AS (INSERT INTO referral_intake.outbox (event_id, event_type, envelope, \
                       trace_context) SELECT $27, $28, $29, $30 FROM inserted) \
         SELECT referral_id AS \"referral_id!\" FROM inserted",
        row.referral_id,
        row.agency_id,
        row.idempotency_key_hash,
        row.request_hash,
        row.submitted_by,
        row.area,
        row.client_gender,
        &row.vulnerabilities,
        row.emergency_calls_last_12_months,
        row.client_fingerprint,
        row.earlier_referral_id,
        row.status,
        row.status_rank,
        &row.victim_of,
        &row.perpetrator_of,
        &row.known_risk_types,
        row.referrer_will_co_visit,
        row.demand.map(|d| d.police_calls),
        row.demand.map(|d| d.ambulance_calls),
        row.demand.map(|d| d.nhs_111_calls),
        row.demand.map(|d| d.other_calls),
        row.demand.map(|d| d.police_staff_hours),
        row.demand.map(|d| d.safeguarding_reports),
        row.submitted_at,
        wrapped_data_key,
        sealed_details,
        event.event_id,
        event.event_type,
        &event.envelope,
        &event.trace_context,
        row.link_state(),
        row.earlier_agency_id,
    )
    .fetch_optional(connection)
    .await?;
    // Every column is known already: nothing to read back.
    Ok(inserted.map(|_| row.stored()))
}

/// The agency's referral whose idempotency key hashes to one of `hashes`
/// (one per master key, so a retry during a key rotation still matches).
pub async fn find_by_idempotency_key(
    connection: &mut PgConnection,
    agency_id: &str,
    hashes: &[Vec<u8>],
) -> Result<Option<ReferralRow>, sqlx::Error> {
    select_referrals!(
        "WHERE agency_id = $1 AND idempotency_key_hash = ANY($2)",
        agency_id,
        hashes
    )
    .fetch_optional(connection)
    .await
}

/// What a submission needs to know first, in one round trip.
#[derive(Debug, sqlx::FromRow)]
pub struct SubmissionContext {
    /// `None` when the agency is not registered.
    pub agency_active: Option<bool>,
    /// The most recent earlier referral with the same fingerprint, from any
    /// agency: a possible earlier referral of the same client.
    pub earlier_referral_id: Option<Uuid>,
    pub earlier_agency_id: Option<String>,
}

/// Whether the agency may refer, and the client's latest earlier referral.
pub async fn submission_context(
    connection: &mut PgConnection,
    agency_id: &str,
    client_fingerprints: &[Vec<u8>],
) -> Result<SubmissionContext, sqlx::Error> {
    // One index probe per fingerprint with a scalar `=`, so the plan never
    // depends on how the planner guesses an array's size. With one master
    // key (no rotation under way) the array is skipped altogether.
    match client_fingerprints {
        [current] => {
            sqlx::query_as!(
                SubmissionContext,
                "SELECT (SELECT active FROM referral_intake.agency WHERE agency_id = $1) \
                   AS agency_active, \
                 latest.referral_id AS \"earlier_referral_id?\", \
                 latest.agency_id AS \"earlier_agency_id?\" \
                 FROM (SELECT 1) AS one LEFT JOIN LATERAL ( \
                     SELECT referral_id, agency_id FROM referral_intake.referral \
                     WHERE client_fingerprint = $2 \
                     ORDER BY submitted_at DESC, referral_id DESC LIMIT 1 \
                 ) AS latest ON true",
                agency_id,
                current,
            )
            .fetch_one(connection)
            .await
        }
        all => {
            sqlx::query_as!(
                SubmissionContext,
                "SELECT (SELECT active FROM referral_intake.agency WHERE agency_id = $1) \
                   AS agency_active, \
                 newest.referral_id AS \"earlier_referral_id?\", \
                 newest.agency_id AS \"earlier_agency_id?\" \
                 FROM (SELECT 1) AS one LEFT JOIN LATERAL ( \
                     SELECT latest.referral_id, latest.agency_id \
                     FROM unnest($2::bytea[]) AS fingerprint (value) \
                     CROSS JOIN LATERAL ( \
                         SELECT referral_id, agency_id, submitted_at \
                         FROM referral_intake.referral \
                         WHERE client_fingerprint = fingerprint.value \
                         ORDER BY submitted_at DESC, referral_id DESC LIMIT 1 \
                     ) AS latest \
                     ORDER BY latest.submitted_at DESC, latest.referral_id DESC LIMIT 1 \
                 ) AS newest ON true",
                agency_id,
                all,
            )
            .fetch_one(connection)
            .await
        }
    }
}

/// A referral; with `agency_id` set, only when that agency made it; with
/// `areas` set (a coordinator's), only when it is in one of them.
pub async fn fetch_referral(
    connection: &mut PgConnection,
    referral_id: Uuid,
    agency_id: Option<&str>,
    areas: Option<&[String]>,
) -> Result<Option<ReferralRow>, sqlx::Error> {
    select_referrals!(
        "WHERE referral_id = $1 AND ($2::text IS NULL OR agency_id = $2) \
           AND ($3::text[] IS NULL OR area = ANY($3))",
        referral_id,
        agency_id,
        areas
    )
    .fetch_optional(connection)
    .await
}

/// The wrapped key and sealed details; `None` fields once erased.
pub async fn fetch_client_record(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Option<(Option<Vec<u8>>, Option<Vec<u8>>)>, sqlx::Error> {
    let record = sqlx::query!(
        "SELECT wrapped_data_key, sealed_details FROM referral_intake.client_record \
         WHERE referral_id = $1",
        referral_id
    )
    .fetch_optional(connection)
    .await?;
    Ok(record.map(|record| (record.wrapped_data_key, record.sealed_details)))
}

pub async fn record_personal_data_access(
    connection: &mut PgConnection,
    referral_id: Uuid,
    accessed_by: &str,
    role: &str,
    purpose: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO referral_intake.personal_data_access (referral_id, accessed_by, role, purpose) \
         VALUES ($1, $2, $3, $4)",
        referral_id,
        accessed_by,
        role,
        purpose
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// One page of an agency's referrals, newest first, after a keyset cursor.
/// Which of an agency's referrals to list.
#[derive(Debug, Default)]
pub struct ReferralFilter {
    pub status: Option<i32>,
    pub submitted_from: Option<DateTime<Utc>>,
    pub submitted_to: Option<DateTime<Utc>>,
}

pub async fn list_referrals(
    connection: &mut PgConnection,
    agency_id: &str,
    filter: &ReferralFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ReferralRow>, sqlx::Error> {
    let (after_time, after_id) = after.unzip();
    select_referrals!(
        "WHERE agency_id = $1 AND ($2::integer IS NULL OR status = $2) \
           AND ($3::timestamptz IS NULL OR (submitted_at, referral_id) < ($3, $4)) \
           AND ($6::timestamptz IS NULL OR submitted_at >= $6) \
           AND ($7::timestamptz IS NULL OR submitted_at < $7) \
         ORDER BY submitted_at DESC, referral_id DESC LIMIT $5",
        agency_id,
        filter.status,
        after_time,
        after_id,
        limit,
        filter.submitted_from,
        filter.submitted_to,
    )
    .fetch_all(connection)
    .await
}

/// A status change from a downstream event or a withdrawal.
#[derive(Debug, Default)]
pub struct StatusChange {
    pub status: i32,
    pub rank: i32,
    pub not_taken_on_stage: Option<i32>,
    pub not_taken_on_reason: Option<i32>,
    pub estimated_start: Option<DateTime<Utc>>,
    pub estimated_start_latest: Option<DateTime<Utc>>,
    pub discharged_at: Option<DateTime<Utc>>,
    /// For DISCHARGED: the proforma feedback, kept and announced with it.
    pub discharge_feedback: Option<cpm_proto::v1::DischargeFeedback>,
    /// When the step that made the change happened, as its event says (a
    /// decision's, an allocation's, a discharge's time); `None`: now. On a
    /// development platform with the simulated clock this is the simulated
    /// time, so consumers date the change as the step was dated.
    pub changed_at: Option<DateTime<Utc>>,
}

/// The status a referral left, and its agency, when a change moved it.
#[derive(Debug)]
pub struct Advanced {
    pub previous_status: i32,
    pub agency_id: String,
    pub submitted_by: String,
}

/// Applies a change only when it moves the status forward. Returns what
/// it left when it did.
pub async fn advance_status(
    connection: &mut PgConnection,
    referral_id: Uuid,
    change: &StatusChange,
) -> Result<Option<Advanced>, sqlx::Error> {
    sqlx::query_as!(
        Advanced,
        "UPDATE referral_intake.referral AS r SET status = $2, status_rank = $3, \
         status_changed_at = COALESCE($10, now()), \
         not_taken_on_stage = COALESCE($4, r.not_taken_on_stage), \
         not_taken_on_reason = COALESCE($5, r.not_taken_on_reason), \
         estimated_start = COALESCE($6, r.estimated_start), \
         discharged_at = COALESCE($7, r.discharged_at), \
         estimated_start_latest = COALESCE($8, r.estimated_start_latest), \
         discharge_feedback = COALESCE($9, r.discharge_feedback) \
         FROM (SELECT referral_id, status FROM referral_intake.referral \
               WHERE referral_id = $1 FOR UPDATE) AS before \
         WHERE r.referral_id = before.referral_id AND r.status_rank < $3 \
         RETURNING before.status AS \"previous_status!\", r.agency_id, r.submitted_by",
        referral_id,
        change.status,
        change.rank,
        change.not_taken_on_stage,
        change.not_taken_on_reason,
        change.estimated_start,
        change.discharged_at,
        change.estimated_start_latest,
        change
            .discharge_feedback
            .as_ref()
            .map(prost::Message::encode_to_vec),
        change.changed_at,
    )
    .fetch_optional(connection)
    .await
}

/// Records when the discharge feedback reached the referrer; the first
/// confirmation stands. Returns whether this one was recorded.
pub async fn record_feedback_received(
    connection: &mut PgConnection,
    referral_id: Uuid,
    received_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE referral_intake.referral SET feedback_received_at = $2 \
         WHERE referral_id = $1 AND feedback_received_at IS NULL",
        referral_id,
        received_at
    )
    .execute(connection)
    .await?
    .rows_affected()
        == 1)
}

/// Locks a referral of `agency_id` for a state change.
pub async fn lock_referral(
    connection: &mut PgConnection,
    referral_id: Uuid,
    agency_id: &str,
) -> Result<Option<ReferralRow>, sqlx::Error> {
    select_referrals!(
        "WHERE referral_id = $1 AND agency_id = $2 FOR UPDATE",
        referral_id,
        agency_id
    )
    .fetch_optional(connection)
    .await
}

/// A registered agency.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AgencyRow {
    pub agency_id: String,
    pub name: String,
    pub kind: i32,
    pub active: bool,
    pub registered_at: DateTime<Utc>,
}

/// Registers an agency, or updates its name, kind and whether it is active.
pub async fn upsert_agency(
    connection: &mut PgConnection,
    agency_id: &str,
    name: &str,
    kind: i32,
    active: bool,
    registered_by: &str,
) -> Result<AgencyRow, sqlx::Error> {
    sqlx::query_as!(
        AgencyRow,
        "INSERT INTO referral_intake.agency (agency_id, name, kind, active, registered_by) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (agency_id) DO UPDATE SET name = $2, kind = $3, active = $4 \
         RETURNING agency_id, name, kind, active, registered_at",
        agency_id,
        name,
        kind,
        active,
        registered_by
    )
    .fetch_one(connection)
    .await
}

/// Registers an agency seen for the first time (development mode only).
pub async fn register_agency_if_missing(
    connection: &mut PgConnection,
    agency_id: &str,
    kind: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO referral_intake.agency (agency_id, name, kind, registered_by) \
         VALUES ($1, $1, $2, 'auto-registration') \
         ON CONFLICT (agency_id) DO NOTHING",
        agency_id,
        kind
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Whether an agency may act (refer, read, withdraw): `None` when it is
/// not registered.
pub async fn agency_is_active(
    connection: &mut PgConnection,
    agency_id: &str,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT active FROM referral_intake.agency WHERE agency_id = $1",
        agency_id
    )
    .fetch_optional(connection)
    .await
}

pub async fn list_agencies(
    connection: &mut PgConnection,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<AgencyRow>, sqlx::Error> {
    sqlx::query_as!(
        AgencyRow,
        "SELECT agency_id, name, kind, active, registered_at FROM referral_intake.agency \
         WHERE ($1::text IS NULL OR agency_id > $1) ORDER BY agency_id LIMIT $2",
        after,
        limit
    )
    .fetch_all(connection)
    .await
}

/// Registers a referrer (or updates their details); returns the referrer ID.
pub async fn upsert_referrer(
    connection: &mut PgConnection,
    agency_id: &str,
    subject: &str,
    name: &str,
    role: i32,
    contact: &str,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO referral_intake.referrer (referrer_id, agency_id, subject, name, role, contact) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT ON CONSTRAINT referrer_subject DO UPDATE SET name = $4, role = $5, contact = $6 \
         RETURNING referrer_id",
        Uuid::now_v7(),
        agency_id,
        subject,
        name,
        role,
        contact
    )
    .fetch_one(connection)
    .await
}

/// `referral_id` and every referral confirmed as the same client's (links
/// followed both ways, transitively), locked, oldest first.
pub async fn lock_referrals_of_client(
    connection: &mut PgConnection,
    referral_id: Uuid,
) -> Result<Vec<ReferralRow>, sqlx::Error> {
    // Confirmed links, followed both ways from `referral_id`: the client's
    // referrals a coordinator joined, never a mere fingerprint match.
    select_referrals!(
        "WHERE referral_id IN ( \
             WITH RECURSIVE edge (from_id, to_id) AS ( \
                 SELECT referral_id, earlier_referral_id FROM referral_intake.referral \
                 WHERE link_state = 2 \
                 UNION ALL \
                 SELECT earlier_referral_id, referral_id FROM referral_intake.referral \
                 WHERE link_state = 2), \
             client (referral_id) AS ( \
                 SELECT $1::uuid \
                 UNION \
                 SELECT edge.to_id FROM edge JOIN client ON edge.from_id = client.referral_id) \
             SELECT referral_id FROM client) \
         ORDER BY submitted_at, referral_id FOR UPDATE",
        referral_id
    )
    .fetch_all(connection)
    .await
}

/// Destroys the data keys and sealed details of these referrals and their
/// fingerprints; the ciphertext in backups becomes unreadable.
pub async fn erase_client_records(
    connection: &mut PgConnection,
    referral_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE referral_intake.client_record \
         SET wrapped_data_key = NULL, sealed_details = NULL, erased_at = now() \
         WHERE referral_id = ANY($1)",
        referral_ids
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        "UPDATE referral_intake.referral SET client_fingerprint = NULL, erased_at = now() \
         WHERE referral_id = ANY($1)",
        referral_ids
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub async fn record_erasure(
    connection: &mut PgConnection,
    referral_id: Uuid,
    erased_by: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO referral_intake.erasure (referral_id, erased_by, reason) VALUES ($1, $2, $3)",
        referral_id,
        erased_by,
        reason
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// One entry of the personal data access log.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct AccessRow {
    pub referral_id: Uuid,
    pub accessed_by: String,
    pub role: String,
    pub purpose: String,
    pub accessed_at: DateTime<Utc>,
}

pub async fn access_log(
    connection: &mut PgConnection,
    referral_ids: &[Uuid],
) -> Result<Vec<AccessRow>, sqlx::Error> {
    sqlx::query_as!(
        AccessRow,
        "SELECT referral_id, accessed_by, role, purpose, accessed_at \
         FROM referral_intake.personal_data_access \
         WHERE referral_id = ANY($1) ORDER BY accessed_at, access_id",
        referral_ids
    )
    .fetch_all(connection)
    .await
}

/// A client record still wrapped, for re-keying.
#[derive(Debug, sqlx::FromRow)]
pub struct WrappedRecord {
    pub referral_id: Uuid,
    pub wrapped_data_key: Vec<u8>,
    pub sealed_details: Vec<u8>,
}

/// The next batch of unerased client records after `after`, locked.
pub async fn lock_wrapped_records(
    connection: &mut PgConnection,
    after: Uuid,
    limit: i64,
) -> Result<Vec<WrappedRecord>, sqlx::Error> {
    // Both columns are nullable; the WHERE clause rules NULL out here.
    sqlx::query_as!(
        WrappedRecord,
        "SELECT referral_id, wrapped_data_key AS \"wrapped_data_key!\", \
           sealed_details AS \"sealed_details!\" \
         FROM referral_intake.client_record \
         WHERE wrapped_data_key IS NOT NULL AND sealed_details IS NOT NULL AND referral_id > $1 \
         ORDER BY referral_id LIMIT $2 FOR UPDATE",
        after,
        limit
    )
    .fetch_all(connection)
    .await
}

pub async fn count_wrapped_records(connection: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT count(*) AS \"count!\" FROM referral_intake.client_record \
         WHERE wrapped_data_key IS NOT NULL"
    )
    .fetch_one(connection)
    .await
}

/// Stores a data key re-wrapped under the current master key, with the
/// fingerprint recomputed under it.
pub async fn store_rewrapped(
    connection: &mut PgConnection,
    referral_id: Uuid,
    wrapped_data_key: &[u8],
    client_fingerprint: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE referral_intake.client_record SET wrapped_data_key = $2 WHERE referral_id = $1",
        referral_id,
        wrapped_data_key
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        "UPDATE referral_intake.referral SET client_fingerprint = $2 \
         WHERE referral_id = $1 AND erased_at IS NULL",
        referral_id,
        client_fingerprint
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// A referral, locked for a coordinator's decision on its link; with
/// `areas` set, only when it is in one of them.
pub async fn lock_referral_in_areas(
    connection: &mut PgConnection,
    referral_id: Uuid,
    areas: Option<&[String]>,
) -> Result<Option<ReferralRow>, sqlx::Error> {
    select_referrals!(
        "WHERE referral_id = $1 AND ($2::text[] IS NULL OR area = ANY($2)) FOR UPDATE",
        referral_id,
        areas
    )
    .fetch_optional(connection)
    .await
}

impl ReferralRow {
    /// Whether the referral's link to `earlier_referral_id` is undecided.
    pub fn has_possible_link_to(&self, earlier_referral_id: Uuid) -> bool {
        self.link_state == ReferralLinkState::Possible as i16
            && self.earlier_referral_id == Some(earlier_referral_id)
    }
}

/// Records a coordinator's decision on a possible link; returns the row.
pub async fn decide_link(
    connection: &mut PgConnection,
    referral_id: Uuid,
    state: ReferralLinkState,
    decided_by: &str,
) -> Result<ReferralRow, sqlx::Error> {
    sqlx::query!(
        "UPDATE referral_intake.referral \
         SET link_state = $2, link_decided_by = $3, link_decided_at = now() \
         WHERE referral_id = $1",
        referral_id,
        state as i16,
        decided_by
    )
    .execute(&mut *connection)
    .await?;
    select_referrals!("WHERE referral_id = $1", referral_id)
        .fetch_one(connection)
        .await
}

/// Referrals with an undecided possible link, oldest first, after `after`
/// (submission time, ID); with `areas` set (a coordinator's), only those
/// in one of them.
pub async fn list_possible_links(
    connection: &mut PgConnection,
    areas: Option<&[String]>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ReferralRow>, sqlx::Error> {
    let (after_time, after_id) = after.unzip();
    select_referrals!(
        "WHERE link_state = 1 \
           AND ($1::timestamptz IS NULL OR (submitted_at, referral_id) > ($1, $2)) \
           AND ($4::text[] IS NULL OR area = ANY($4)) \
         ORDER BY submitted_at, referral_id LIMIT $3",
        after_time,
        after_id,
        limit,
        areas
    )
    .fetch_all(connection)
    .await
}

/// Records what a withdrawal said: the status it came at and its reason,
/// sealed under the client's key.
pub async fn record_withdrawal(
    connection: &mut PgConnection,
    referral_id: Uuid,
    withdrawn_at_status: i32,
    reason_sealed: Option<&[u8]>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE referral_intake.referral \
         SET withdrawn_at_status = $2, withdrawal_reason_sealed = $3 WHERE referral_id = $1",
        referral_id,
        withdrawn_at_status,
        reason_sealed
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// What a mentor's minimal record needs of a referral row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MentorViewRow {
    pub referral_id: Uuid,
    pub area: String,
    pub known_risk_types: Vec<i32>,
    pub erased_at: Option<DateTime<Utc>>,
}

/// The referral, when `mentor_id` is on an active allocation of it and its
/// support has not ended; `None` otherwise, as for a missing one.
pub async fn fetch_mentor_view(
    connection: &mut PgConnection,
    referral_id: Uuid,
    mentor_id: &str,
) -> Result<Option<MentorViewRow>, sqlx::Error> {
    sqlx::query_as!(
        MentorViewRow,
        "SELECT referral.referral_id, referral.area, referral.known_risk_types, referral.erased_at \
         FROM referral_intake.referral \
         WHERE referral.referral_id = $1 \
           AND EXISTS (SELECT 1 FROM referral_intake.mentor_allocation AS allocation \
                       WHERE allocation.referral_id = referral.referral_id \
                         AND allocation.mentor_id = $2 AND allocation.active) \
           AND NOT EXISTS (SELECT 1 FROM referral_intake.mentor_access_ended AS ended \
                           WHERE ended.referral_id = referral.referral_id)",
        referral_id,
        mentor_id
    )
    .fetch_optional(connection)
    .await
}

/// Records the mentors of a confirmed allocation as active; a mentor whose
/// row exists already (a redelivery, or an ending that overtook the
/// confirmation) is left as it is. Returns how many were added.
pub async fn insert_mentor_allocation(
    connection: &mut PgConnection,
    allocation_id: Uuid,
    referral_id: Uuid,
    mentor_ids: &[String],
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "INSERT INTO referral_intake.mentor_allocation \
           (allocation_id, mentor_id, referral_id, active) \
         SELECT $1, mentor_id, $2, true FROM unnest($3::text[]) AS mentor (mentor_id) \
         ON CONFLICT (allocation_id, mentor_id) DO NOTHING",
        allocation_id,
        referral_id,
        mentor_ids
    )
    .execute(connection)
    .await?
    .rows_affected())
}

/// Ends an allocation for every mentor it had, and records `mentor_ids`
/// as ended even before its confirmation is seen (so a late confirmation
/// adds nothing active). Returns how many mentors lost access.
pub async fn end_mentor_allocation(
    connection: &mut PgConnection,
    allocation_id: Uuid,
    referral_id: Uuid,
    mentor_ids: &[String],
) -> Result<u64, sqlx::Error> {
    let ended = sqlx::query!(
        "UPDATE referral_intake.mentor_allocation SET active = false, ended_at = now() \
         WHERE allocation_id = $1 AND active",
        allocation_id
    )
    .execute(&mut *connection)
    .await?
    .rows_affected();
    sqlx::query!(
        "INSERT INTO referral_intake.mentor_allocation \
           (allocation_id, mentor_id, referral_id, active, ended_at) \
         SELECT $1, mentor_id, $2, false, now() FROM unnest($3::text[]) AS mentor (mentor_id) \
         ON CONFLICT (allocation_id, mentor_id) DO NOTHING",
        allocation_id,
        referral_id,
        mentor_ids
    )
    .execute(connection)
    .await?;
    Ok(ended)
}

/// Ends every mentor's access to a referral whose support ended, for good;
/// `ended_by` names the event. Returns whether this call ended it.
pub async fn end_mentor_access(
    connection: &mut PgConnection,
    referral_id: Uuid,
    ended_by: &str,
) -> Result<bool, sqlx::Error> {
    let ended = sqlx::query!(
        "INSERT INTO referral_intake.mentor_access_ended (referral_id, ended_by) \
         VALUES ($1, $2) ON CONFLICT (referral_id) DO NOTHING",
        referral_id,
        ended_by
    )
    .execute(&mut *connection)
    .await?
    .rows_affected();
    sqlx::query!(
        "UPDATE referral_intake.mentor_allocation SET active = false, ended_at = now() \
         WHERE referral_id = $1 AND active",
        referral_id
    )
    .execute(connection)
    .await?;
    Ok(ended == 1)
}

/// Keeps an area's wait as last quoted; an older quote changes nothing.
pub async fn record_area_wait(
    connection: &mut PgConnection,
    area: &str,
    p50_days: i32,
    p90_days: i32,
    quoted_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO referral_intake.area_wait (area, p50_days, p90_days, quoted_at) \
         VALUES (lower($1), $2, $3, $4) \
         ON CONFLICT (area) DO UPDATE SET p50_days = $2, p90_days = $3, quoted_at = $4 \
         WHERE area_wait.quoted_at < $4",
        area,
        p50_days,
        p90_days,
        quoted_at
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// An area's wait in days (median, ninth decile) when quoted since `since`.
pub async fn area_wait(
    connection: &mut PgConnection,
    area: &str,
    since: DateTime<Utc>,
) -> Result<Option<(i32, i32)>, sqlx::Error> {
    Ok(sqlx::query!(
        "SELECT p50_days, p90_days FROM referral_intake.area_wait \
         WHERE area = lower($1) AND quoted_at >= $2",
        area,
        since
    )
    .fetch_optional(connection)
    .await?
    .map(|row| (row.p50_days, row.p90_days)))
}
