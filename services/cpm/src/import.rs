//! `cpm import`: bulk intake for agencies moving off spreadsheets. Each row
//! of a CSV file becomes one `SubmitReferral` call, several in flight at
//! once; the outcome of every row is counted and, on request, written to a
//! report file.
//!
//! # File format
//! A header row names the columns, in any order, case-insensitive. Required:
//! `given_name`, `family_name`, `date_of_birth` (`1979-04-01`), `gender`,
//! `area`, `referrer_name`, `referrer_role`, `referrer_contact`, `reason`,
//! `client_consented`. Optional: `idempotency_key`, `address`, `phone`,
//! `safe_contact_instructions`, `desired_outcomes`, `vulnerabilities`
//! (semicolon-separated), `emergency_calls_last_12_months`, `known_risks`.
//! Rows are numbered as a spreadsheet shows them: the header is row 1.
//! Rows whose cells are all empty are skipped.
//!
//! # Idempotency
//! A row without an `idempotency_key` gets one derived from the agency and
//! the row's content, so running the same file again replays every row
//! instead of referring anyone twice. Editing a row changes its derived key:
//! agencies that correct rows and re-import should supply their own keys.
//!
//! # Personal data
//! Messages and the report name a row, a column and a problem, never a
//! cell's value: a misaligned file may put a name where a gender belongs.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_proto::v1::{
    ClientIdentity, Gender, Referrer, ReferrerRole, SubmitReferralRequest, Vulnerability,
};
use cpm_runtime::auth::{Authenticator, Role};
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tonic_types::StatusExt as _;

use crate::client::{Authed, authed, connect};

/// Every column the importer knows, in the order the derived key hashes them.
pub const COLUMNS: &[&str] = &[
    "idempotency_key",
    "given_name",
    "family_name",
    "date_of_birth",
    "gender",
    "address",
    "area",
    "phone",
    "safe_contact_instructions",
    "referrer_name",
    "referrer_role",
    "referrer_contact",
    "reason",
    "desired_outcomes",
    "client_consented",
    "vulnerabilities",
    "emergency_calls_last_12_months",
    "known_risks",
];

/// Columns a file must have; the server requires a value in each.
pub const REQUIRED_COLUMNS: &[&str] = &[
    "given_name",
    "family_name",
    "date_of_birth",
    "gender",
    "area",
    "referrer_name",
    "referrer_role",
    "referrer_contact",
    "reason",
    "client_consented",
];

/// Attempts per row when the server answers UNAVAILABLE; retrying is safe
/// because every row carries an idempotency key.
const ATTEMPTS: u32 = 4;

/// What to import, where to, and as which agency.
pub struct ImportOptions {
    pub file: PathBuf,
    pub endpoint: String,
    pub agency_id: String,
    /// Mints the referrer token. Development only: production agencies hold
    /// tokens from the programme's issuer.
    pub authenticator: Authenticator,
    /// Where to write the per-row outcomes, if anywhere.
    pub report: Option<PathBuf>,
    /// Submissions in flight at once.
    pub concurrency: usize,
    /// Draw a progress bar on standard error.
    pub show_progress: bool,
}

impl ImportOptions {
    pub fn new(file: &Path, endpoint: &str, agency_id: &str, authenticator: Authenticator) -> Self {
        Self {
            file: file.to_owned(),
            endpoint: endpoint.to_owned(),
            agency_id: agency_id.to_owned(),
            authenticator,
            report: None,
            concurrency: 8,
            show_progress: false,
        }
    }
}

/// What became of one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowStatus {
    /// A new referral was created.
    Submitted,
    /// The server already had this row's referral (same idempotency key).
    Replayed,
    /// The server refused the row (INVALID_ARGUMENT with field violations).
    Rejected,
    /// The row could not be read, so it was not sent.
    Unparsable,
    /// The call failed for another reason (transport, auth, server error).
    Failed,
}

impl RowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "submitted",
            Self::Replayed => "replayed",
            Self::Rejected => "rejected",
            Self::Unparsable => "unparsable",
            Self::Failed => "failed",
        }
    }

    /// Whether the row's referral is on the platform.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Submitted | Self::Replayed)
    }
}

impl fmt::Display for RowStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// One row's outcome: never any of the row's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowOutcome {
    pub row: usize,
    pub status: RowStatus,
    /// Empty unless the referral is on the platform.
    pub referral_id: String,
    /// `column: problem` for each problem found.
    pub errors: Vec<String>,
}

/// Counts by outcome, and every row's outcome in row order.
#[derive(Clone, Debug, Default)]
pub struct ImportSummary {
    pub submitted: usize,
    pub replayed: usize,
    pub rejected: usize,
    pub unparsable: usize,
    pub failed: usize,
    pub outcomes: Vec<RowOutcome>,
}

impl ImportSummary {
    fn from_outcomes(mut outcomes: Vec<RowOutcome>) -> Self {
        outcomes.sort_by_key(|outcome| outcome.row);
        let mut summary = Self::default();
        for outcome in &outcomes {
            *match outcome.status {
                RowStatus::Submitted => &mut summary.submitted,
                RowStatus::Replayed => &mut summary.replayed,
                RowStatus::Rejected => &mut summary.rejected,
                RowStatus::Unparsable => &mut summary.unparsable,
                RowStatus::Failed => &mut summary.failed,
            } += 1;
        }
        summary.outcomes = outcomes;
        summary
    }

    pub fn rows(&self) -> usize {
        self.outcomes.len()
    }

    /// True when every row's referral is on the platform.
    pub fn all_succeeded(&self) -> bool {
        self.rejected + self.unparsable + self.failed == 0
    }

    /// The text `cpm import` prints: the counts, then each failed row.
    pub fn render(&self) -> String {
        let mut text = format!(
            "{} rows: {} submitted, {} replayed (already imported), {} rejected by the server, \
             {} failed to parse, {} failed\n",
            self.rows(),
            self.submitted,
            self.replayed,
            self.rejected,
            self.unparsable,
            self.failed
        );
        for outcome in self.outcomes.iter().filter(|o| !o.status.is_success()) {
            text.push_str(&format!(
                "row {}: {}: {}\n",
                outcome.row,
                outcome.status,
                outcome.errors.join("; ")
            ));
        }
        text
    }
}

/// A problem with one cell (or, for `row`, with the row as a whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CellError {
    pub column: String,
    pub problem: String,
}

impl CellError {
    fn new(column: &str, problem: impl Into<String>) -> Self {
        Self {
            column: column.to_owned(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for CellError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.column, self.problem)
    }
}

/// One data row, ready to send or refused with every problem found.
#[derive(Clone, Debug)]
pub struct ParsedRow {
    /// As a spreadsheet numbers it: the header is row 1.
    pub row: usize,
    pub request: Result<SubmitReferralRequest, Vec<CellError>>,
}

/// Where each known column is in the file.
struct Columns {
    index: HashMap<&'static str, usize>,
    width: usize,
}

impl Columns {
    fn from_header(header: &csv::StringRecord) -> anyhow::Result<Self> {
        let mut index = HashMap::new();
        let mut problems = Vec::new();
        for (position, name) in header.iter().enumerate() {
            let name = name
                .trim_start_matches('\u{feff}')
                .trim()
                .to_lowercase()
                .replace([' ', '-'], "_");
            match COLUMNS.iter().find(|known| **known == name) {
                Some(known) => {
                    if index.insert(*known, position).is_some() {
                        problems.push(format!("column {known} appears more than once"));
                    }
                }
                // The name itself is not echoed: a file without a header
                // row would have a client's details here.
                None => problems.push(format!(
                    "header cell {} is not a known column name",
                    position + 1
                )),
            }
        }
        for required in REQUIRED_COLUMNS {
            if !index.contains_key(required) {
                problems.push(format!("required column {required} is missing"));
            }
        }
        if !problems.is_empty() {
            anyhow::bail!(
                "the header row is not usable: {}; the known columns are {}",
                problems.join("; "),
                COLUMNS.join(", ")
            );
        }
        Ok(Self {
            index,
            width: header.len(),
        })
    }

    /// The trimmed cell of `column`, empty when the file lacks the column.
    fn cell<'r>(&self, record: &'r csv::StringRecord, column: &str) -> &'r str {
        self.index
            .get(column)
            .and_then(|position| record.get(*position))
            .map(str::trim)
            .unwrap_or_default()
    }

    fn name_at(&self, position: usize) -> &'static str {
        self.index
            .iter()
            .find(|(_, at)| **at == position)
            .map(|(name, _)| *name)
            .unwrap_or("row")
    }
}

/// Lowercase, with spaces and hyphens as underscores: `Non-binary` → `non_binary`.
fn normalise_name(value: &str) -> String {
    value.trim().to_lowercase().replace([' ', '-'], "_")
}

/// The names of an enum's values without its prefix, for messages.
fn names_of<E>(prefix: &str, name: fn(&E) -> &'static str) -> Vec<String>
where
    E: TryFrom<i32>,
{
    (1..)
        .map_while(|value| E::try_from(value).ok())
        .map(|value| name(&value).trim_start_matches(prefix).to_lowercase())
        .collect()
}

pub fn gender_names() -> Vec<String> {
    names_of::<Gender>("GENDER_", |g| g.as_str_name())
}

pub fn referrer_role_names() -> Vec<String> {
    names_of::<ReferrerRole>("REFERRER_ROLE_", |r| r.as_str_name())
}

pub fn vulnerability_names() -> Vec<String> {
    names_of::<Vulnerability>("VULNERABILITY_", |v| v.as_str_name())
}

fn parse_gender(value: &str) -> Result<i32, String> {
    let name = normalise_name(value);
    if name.is_empty() {
        return Err("is required".into());
    }
    match Gender::from_str_name(&format!("GENDER_{}", name.to_uppercase())) {
        Some(Gender::Unspecified) | None => {
            Err(format!("must be one of {}", gender_names().join(", ")))
        }
        Some(gender) => Ok(gender as i32),
    }
}

fn parse_referrer_role(value: &str) -> Result<i32, String> {
    let name = normalise_name(value);
    if name.is_empty() {
        return Err("is required".into());
    }
    match ReferrerRole::from_str_name(&format!("REFERRER_ROLE_{}", name.to_uppercase())) {
        Some(ReferrerRole::Unspecified) | None => Err(format!(
            "must be one of {}",
            referrer_role_names().join(", ")
        )),
        Some(role) => Ok(role as i32),
    }
}

fn parse_consent(value: &str) -> Result<bool, String> {
    match value.trim().to_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        "" => Err("is required: yes or no".into()),
        _ => Err("must be yes, no, true or false".into()),
    }
}

fn parse_vulnerabilities(value: &str) -> Result<Vec<i32>, String> {
    let mut parsed = Vec::new();
    let mut unknown = Vec::new();
    for (position, item) in value
        .split(';')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .enumerate()
    {
        let name = normalise_name(item).to_uppercase();
        match Vulnerability::from_str_name(&format!("VULNERABILITY_{name}")) {
            Some(Vulnerability::Unspecified) | None => unknown.push((position + 1).to_string()),
            Some(vulnerability) => parsed.push(vulnerability as i32),
        }
    }
    if unknown.is_empty() {
        Ok(parsed)
    } else {
        Err(format!(
            "item {} is not a known vulnerability (known: {})",
            unknown.join(", "),
            vulnerability_names().join(", ")
        ))
    }
}

fn parse_count(value: &str) -> Result<i32, String> {
    if value.is_empty() {
        return Ok(0);
    }
    value
        .parse()
        .map_err(|_| "must be a whole number (empty means 0)".to_owned())
}

/// A key derived from the agency and the row's content (not its position),
/// so re-running a file, or the same rows in another order, replays.
/// Fields are length-prefixed so no two different rows hash alike.
fn derived_idempotency_key(
    agency_id: &str,
    columns: &Columns,
    record: &csv::StringRecord,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"cpm-import-v1\0");
    hasher.update((agency_id.len() as u64).to_be_bytes());
    hasher.update(agency_id.as_bytes());
    for column in COLUMNS.iter().filter(|c| **c != "idempotency_key") {
        let value = columns.cell(record, column);
        hasher.update((column.len() as u64).to_be_bytes());
        hasher.update(column.as_bytes());
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value.as_bytes());
    }
    format!("import-{}", &hex::encode(hasher.finalize())[..40])
}

fn parse_record(
    agency_id: &str,
    columns: &Columns,
    record: &csv::StringRecord,
) -> Result<SubmitReferralRequest, Vec<CellError>> {
    let mut errors = Vec::new();
    if record.len() != columns.width {
        errors.push(CellError::new(
            "row",
            format!(
                "has {} cells but the header has {}",
                record.len(),
                columns.width
            ),
        ));
        return Err(errors);
    }
    let cell = |column: &str| columns.cell(record, column).to_owned();
    fn check<T>(errors: &mut Vec<CellError>, column: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|problem| errors.push(CellError::new(column, problem)))
            .ok()
    }
    let gender = check(&mut errors, "gender", parse_gender(&cell("gender")));
    let referrer_role = check(
        &mut errors,
        "referrer_role",
        parse_referrer_role(&cell("referrer_role")),
    );
    let client_consented = check(
        &mut errors,
        "client_consented",
        parse_consent(&cell("client_consented")),
    );
    let vulnerabilities = check(
        &mut errors,
        "vulnerabilities",
        parse_vulnerabilities(&cell("vulnerabilities")),
    );
    let emergency_calls = check(
        &mut errors,
        "emergency_calls_last_12_months",
        parse_count(&cell("emergency_calls_last_12_months")),
    );
    let (
        Some(gender),
        Some(referrer_role),
        Some(client_consented),
        Some(vulnerabilities),
        Some(emergency_calls),
    ) = (
        gender,
        referrer_role,
        client_consented,
        vulnerabilities,
        emergency_calls,
    )
    else {
        return Err(errors);
    };
    let idempotency_key = match cell("idempotency_key") {
        key if key.is_empty() => derived_idempotency_key(agency_id, columns, record),
        key => key,
    };
    // The contract may grow optional fields; the importer leaves them at
    // their defaults.
    #[allow(clippy::needless_update)]
    let request = SubmitReferralRequest {
        idempotency_key,
        client: Some(ClientIdentity {
            given_name: cell("given_name"),
            family_name: cell("family_name"),
            date_of_birth: cell("date_of_birth"),
            gender,
            address: cell("address"),
            area: cell("area"),
            phone: cell("phone"),
            safe_contact_instructions: cell("safe_contact_instructions"),
            ..Default::default()
        }),
        referrer: Some(Referrer {
            name: cell("referrer_name"),
            role: referrer_role,
            contact: cell("referrer_contact"),
            ..Default::default()
        }),
        reason: cell("reason"),
        desired_outcomes: cell("desired_outcomes"),
        client_consented,
        vulnerabilities,
        emergency_calls_last_12_months: emergency_calls,
        known_risks: cell("known_risks"),
        ..Default::default()
    };
    Ok(request)
}

/// Reads every data row of a CSV file. A row that cannot be read is kept
/// with its problems; a file whose header is unusable is an error.
pub fn parse_file(reader: impl Read, agency_id: &str) -> anyhow::Result<Vec<ParsedRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(reader);
    let header = reader
        .headers()
        .context("the header row cannot be read")?
        .clone();
    if header.is_empty() || header.iter().all(|name| name.trim().is_empty()) {
        anyhow::bail!("the file is empty: expected a header row naming the columns");
    }
    let columns = Columns::from_header(&header)?;
    let mut rows = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let row = index + 2;
        let record = match record {
            Ok(record) => record,
            Err(error) => match error.kind() {
                csv::ErrorKind::Utf8 { err, .. } => {
                    rows.push(ParsedRow {
                        row,
                        request: Err(vec![CellError::new(
                            columns.name_at(err.field()),
                            "is not valid UTF-8 text (save the file as CSV UTF-8)",
                        )]),
                    });
                    continue;
                }
                _ => return Err(anyhow::anyhow!("row {row} cannot be read: {error}")),
            },
        };
        if record.iter().all(|cell| cell.trim().is_empty()) {
            continue;
        }
        rows.push(ParsedRow {
            row,
            request: parse_record(agency_id, &columns, &record),
        });
    }
    Ok(rows)
}

/// The CSV column a server-side field violation is about:
/// `client.date_of_birth` → `date_of_birth`, `referrer.role` →
/// `referrer_role`, `vulnerabilities[2]` → `vulnerabilities`.
pub fn column_of_field(field: &str) -> String {
    let field = field.split('[').next().unwrap_or(field);
    if let Some(rest) = field.strip_prefix("client.") {
        rest.to_owned()
    } else if let Some(rest) = field.strip_prefix("referrer.") {
        format!("referrer_{rest}")
    } else {
        field.to_owned()
    }
}

fn retryable(code: tonic::Code) -> bool {
    code == tonic::Code::Unavailable
}

/// Sends one row, retrying with back-off while the server is unavailable.
async fn submit(
    mut client: ReferralIntakeServiceClient<Authed>,
    row: usize,
    request: SubmitReferralRequest,
) -> RowOutcome {
    let mut attempt = 1;
    loop {
        let outcome = |status, referral_id, errors| RowOutcome {
            row,
            status,
            referral_id,
            errors,
        };
        match client.submit_referral(request.clone()).await {
            Ok(response) => {
                let response = response.into_inner();
                let referral_id = response
                    .referral
                    .map(|referral| referral.referral_id)
                    .unwrap_or_default();
                let status = if response.replayed {
                    RowStatus::Replayed
                } else {
                    RowStatus::Submitted
                };
                return outcome(status, referral_id, Vec::new());
            }
            Err(status) if retryable(status.code()) && attempt < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                attempt += 1;
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                let errors = match status.get_details_bad_request() {
                    Some(bad_request) if !bad_request.field_violations.is_empty() => bad_request
                        .field_violations
                        .iter()
                        .map(|violation| {
                            format!(
                                "{}: {}",
                                column_of_field(&violation.field),
                                violation.description
                            )
                        })
                        .collect(),
                    _ => vec![status.message().to_owned()],
                };
                return outcome(RowStatus::Rejected, String::new(), errors);
            }
            Err(status) => {
                let error = format!("{:?}: {}", status.code(), status.message());
                return outcome(RowStatus::Failed, String::new(), vec![error]);
            }
        }
    }
}

/// Writes `row,status,referral_id,errors`, one line per row.
pub fn write_report(path: &Path, outcomes: &[RowOutcome]) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_path(path)
        .with_context(|| format!("cannot write the report {}", path.display()))?;
    writer.write_record(["row", "status", "referral_id", "errors"])?;
    for outcome in outcomes {
        writer.write_record([
            outcome.row.to_string().as_str(),
            outcome.status.as_str(),
            outcome.referral_id.as_str(),
            outcome.errors.join("; ").as_str(),
        ])?;
    }
    writer.flush()?;
    Ok(())
}

fn progress_bar(rows: usize, visible: bool) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(rows as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} rows {msg}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Imports a file: parses every row, submits the readable ones with at most
/// `concurrency` in flight, and writes the report when asked. Errors only
/// when nothing can be attempted (unreadable file or header, no server);
/// row failures are counted in the summary.
pub async fn run(options: ImportOptions) -> anyhow::Result<ImportSummary> {
    let file = std::fs::File::open(&options.file)
        .with_context(|| format!("cannot open {}", options.file.display()))?;
    let rows = parse_file(std::io::BufReader::new(file), &options.agency_id)
        .with_context(|| format!("{}", options.file.display()))?;
    let token = options
        .authenticator
        .mint(
            "cpm-import",
            Role::Referrer,
            Some(&options.agency_id),
            None,
            chrono::Duration::hours(12),
        )
        .context("cannot mint a referrer token")?;
    let channel = connect(&options.endpoint)
        .await
        .with_context(|| format!("cannot connect to {}", options.endpoint))?;
    let client = ReferralIntakeServiceClient::new(authed(&channel, &token)?);

    let bar = progress_bar(rows.len(), options.show_progress);
    let mut outcomes = Vec::with_capacity(rows.len());
    let mut sendable = Vec::new();
    for parsed in rows {
        match parsed.request {
            Ok(request) => sendable.push((parsed.row, request)),
            Err(errors) => {
                bar.inc(1);
                outcomes.push(RowOutcome {
                    row: parsed.row,
                    status: RowStatus::Unparsable,
                    referral_id: String::new(),
                    errors: errors.iter().map(ToString::to_string).collect(),
                });
            }
        }
    }
    let mut submissions = futures::stream::iter(sendable)
        .map(|(row, request)| submit(client.clone(), row, request))
        .buffer_unordered(options.concurrency.max(1));
    let mut problems = outcomes.len();
    while let Some(outcome) = submissions.next().await {
        if !outcome.status.is_success() {
            problems += 1;
            bar.set_message(format!("({problems} with problems)"));
        }
        outcomes.push(outcome);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let summary = ImportSummary::from_outcomes(outcomes);
    if let Some(report) = &options.report {
        write_report(report, &summary.outcomes)?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "idempotency_key,given_name,family_name,date_of_birth,gender,address,area,phone,\
safe_contact_instructions,referrer_name,referrer_role,referrer_contact,reason,desired_outcomes,\
client_consented,vulnerabilities,emergency_calls_last_12_months,known_risks";

    const GOOD: &str = ",Alex,Example,1980-05-17,female,1 High Street,Darlington,01325 000000,\
text first,PC Smith,frontline,pc.smith@police.example,repeated calls,a routine,yes,\
high_impact_user;alcohol_addiction,42,";

    fn parse(text: &str) -> Vec<ParsedRow> {
        parse_file(text.as_bytes(), "agency-a").unwrap()
    }

    fn only_request(text: &str) -> SubmitReferralRequest {
        let rows = parse(text);
        assert_eq!(rows.len(), 1);
        rows.into_iter().next().unwrap().request.unwrap()
    }

    /// The columns a single bad row's problems are about.
    fn refused_columns(row: &str) -> Vec<String> {
        let rows = parse(&format!("{HEADER}\n{row}\n"));
        assert_eq!(rows.len(), 1);
        rows[0]
            .request
            .as_ref()
            .unwrap_err()
            .iter()
            .map(|error| error.column.clone())
            .collect()
    }

    fn with_cell(column: &str, value: &str) -> String {
        let position = HEADER.split(',').position(|c| c == column).unwrap();
        let mut cells: Vec<String> = GOOD.split(',').map(str::to_owned).collect();
        cells[position] = value.to_owned();
        cells.join(",")
    }

    #[test]
    fn a_good_row_becomes_a_complete_request() {
        let request = only_request(&format!("{HEADER}\n{GOOD}\n"));
        let client = request.client.as_ref().unwrap();
        assert_eq!(client.given_name, "Alex");
        assert_eq!(client.date_of_birth, "1980-05-17");
        assert_eq!(client.gender, Gender::Female as i32);
        assert_eq!(client.area, "Darlington");
        let referrer = request.referrer.as_ref().unwrap();
        assert_eq!(referrer.role, ReferrerRole::Frontline as i32);
        assert!(request.client_consented);
        assert_eq!(
            request.vulnerabilities,
            [
                Vulnerability::HighImpactUser as i32,
                Vulnerability::AlcoholAddiction as i32
            ]
        );
        assert_eq!(request.emergency_calls_last_12_months, 42);
        assert!(request.idempotency_key.starts_with("import-"));
    }

    #[test]
    fn names_are_case_insensitive_and_accept_spaces_and_hyphens() {
        let row = with_cell("gender", "Non-Binary");
        let row = row.replacen("frontline", "Middle Manager", 1);
        let row = row.replacen("high_impact_user;alcohol_addiction", " MENTAL_HEALTH ; ", 1);
        let row = row.replacen(",yes,", ",TRUE,", 1);
        let request = only_request(&format!("{HEADER}\n{row}\n"));
        assert_eq!(request.client.unwrap().gender, Gender::NonBinary as i32);
        assert_eq!(
            request.referrer.unwrap().role,
            ReferrerRole::MiddleManager as i32
        );
        assert_eq!(
            request.vulnerabilities,
            [Vulnerability::MentalHealth as i32]
        );
        assert!(request.client_consented);
    }

    #[test]
    fn the_derived_key_is_stable_and_depends_on_agency_and_content_only() {
        let file = format!("{HEADER}\n{GOOD}\n");
        let first = only_request(&file).idempotency_key;
        assert_eq!(first, only_request(&file).idempotency_key);
        let with_blank_row_before = format!("{HEADER}\n,,,,,,,,,,,,,,,,,\n{GOOD}\n");
        assert_eq!(first, only_request(&with_blank_row_before).idempotency_key);
        let other_agency = parse_file(file.as_bytes(), "agency-b").unwrap();
        assert_ne!(
            first,
            other_agency[0].request.as_ref().unwrap().idempotency_key
        );
        let edited = format!("{HEADER}\n{}\n", with_cell("area", "Stockton"));
        assert_ne!(first, only_request(&edited).idempotency_key);
        assert!(first.len() <= 128);
    }

    #[test]
    fn a_supplied_key_is_used_as_it_is() {
        let row = with_cell("idempotency_key", "crm-4711");
        assert_eq!(
            only_request(&format!("{HEADER}\n{row}\n")).idempotency_key,
            "crm-4711"
        );
    }

    #[test]
    fn column_order_does_not_matter_and_optional_columns_may_be_left_out() {
        let file = "Reason,client_consented,given_name,family_name,date_of_birth,gender,area,\
referrer_name,referrer_role,referrer_contact\n\
calls,no,Sam,Sample,1970-01-01,male,Hartlepool,A Worker,senior,a@b.example\n";
        let request = only_request(file);
        assert_eq!(request.reason, "calls");
        assert!(!request.client_consented, "consent is sent as given");
        assert_eq!(request.referrer.unwrap().role, ReferrerRole::Senior as i32);
        assert!(request.vulnerabilities.is_empty());
        assert_eq!(request.emergency_calls_last_12_months, 0);
    }

    #[test]
    fn a_byte_order_mark_before_the_header_is_ignored() {
        let request = only_request(&format!("\u{feff}{HEADER}\n{GOOD}\n"));
        assert!(request.idempotency_key.starts_with("import-"));
    }

    #[test]
    fn an_unknown_or_empty_gender_is_refused() {
        assert_eq!(refused_columns(&with_cell("gender", "robot")), ["gender"]);
        assert_eq!(refused_columns(&with_cell("gender", "")), ["gender"]);
        assert_eq!(
            refused_columns(&with_cell("gender", "unspecified")),
            ["gender"]
        );
    }

    #[test]
    fn an_unknown_or_empty_referrer_role_is_refused() {
        assert_eq!(
            refused_columns(&with_cell("referrer_role", "chief")),
            ["referrer_role"]
        );
        assert_eq!(
            refused_columns(&with_cell("referrer_role", "")),
            ["referrer_role"]
        );
    }

    #[test]
    fn consent_must_be_yes_no_true_or_false() {
        assert_eq!(
            refused_columns(&with_cell("client_consented", "maybe")),
            ["client_consented"]
        );
        assert_eq!(
            refused_columns(&with_cell("client_consented", "")),
            ["client_consented"]
        );
    }

    #[test]
    fn an_unknown_vulnerability_is_refused_by_position() {
        let rows = parse(&format!(
            "{HEADER}\n{}\n",
            with_cell("vulnerabilities", "mental_health;SecretName;unspecified")
        ));
        let errors = rows[0].request.as_ref().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].column, "vulnerabilities");
        assert!(errors[0].problem.starts_with("item 2, 3 is not"));
        assert!(!errors[0].problem.contains("SecretName"));
    }

    #[test]
    fn a_count_that_is_not_a_whole_number_is_refused() {
        for bad in ["many", "1.5", "99999999999"] {
            assert_eq!(
                refused_columns(&with_cell("emergency_calls_last_12_months", bad)),
                ["emergency_calls_last_12_months"]
            );
        }
    }

    #[test]
    fn every_problem_of_a_row_is_reported_at_once() {
        let row = with_cell("gender", "x")
            .replacen("frontline", "x", 1)
            .replacen(",yes,", ",x,", 1);
        assert_eq!(
            refused_columns(&row),
            ["gender", "referrer_role", "client_consented"]
        );
    }

    #[test]
    fn a_row_with_the_wrong_number_of_cells_is_refused() {
        assert_eq!(refused_columns("just,three,cells"), ["row"]);
        assert_eq!(refused_columns(&format!("{GOOD},extra")), ["row"]);
    }

    #[test]
    fn invalid_utf8_is_refused_naming_the_column() {
        let mut bytes = format!("{HEADER}\n").into_bytes();
        bytes.extend(with_cell("area", "Xx").replacen("Xx", "\u{1}", 1).bytes());
        let position = bytes.iter().position(|b| *b == 1).unwrap();
        bytes[position] = 0xff;
        bytes.push(b'\n');
        bytes.extend(format!("{GOOD}\n").bytes());
        let rows = parse_file(&bytes[..], "agency-a").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].row, 2);
        assert_eq!(rows[0].request.as_ref().unwrap_err()[0].column, "area");
        assert!(rows[1].request.is_ok(), "later rows are still read");
    }

    #[test]
    fn problems_never_echo_cell_values() {
        let row = with_cell("gender", "Alex Example")
            .replacen("frontline", "07700 900123", 1)
            .replacen(",yes,", ",1 High Street,", 1);
        let rows = parse(&format!("{HEADER}\n{row}\n"));
        let text: String = rows[0]
            .request
            .as_ref()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        for value in ["Alex Example", "07700", "High Street"] {
            assert!(!text.contains(value), "{text}");
        }
    }

    #[test]
    fn rows_are_numbered_as_a_spreadsheet_shows_them_and_blank_rows_skipped() {
        let file = format!(
            "{HEADER}\n{GOOD}\n,,,,,,,,,,,,,,,,,\n{}\n\"\",,,,,,,,,,,,,,,,,\n{}\n",
            with_cell("gender", "x"),
            with_cell("reason", "\"two\nlines\"")
        );
        let rows = parse(&file);
        let numbers: Vec<usize> = rows.iter().map(|r| r.row).collect();
        assert_eq!(numbers, [2, 4, 6]);
        assert!(rows[1].request.is_err());
        assert_eq!(rows[2].request.as_ref().unwrap().reason, "two\nlines");
    }

    #[test]
    fn a_header_with_unknown_duplicate_or_missing_columns_is_refused() {
        let unknown = parse_file(format!("{HEADER},secret\n").as_bytes(), "a").unwrap_err();
        let message = format!("{unknown:#}");
        assert!(message.contains("header cell 19 is not a known column name"));
        assert!(!message.contains("secret"));
        let duplicate = parse_file(format!("{HEADER},gender\n").as_bytes(), "a").unwrap_err();
        assert!(format!("{duplicate:#}").contains("column gender appears more than once"));
        let missing = parse_file("given_name,family_name\n".as_bytes(), "a").unwrap_err();
        let message = format!("{missing:#}");
        assert!(message.contains("required column reason is missing"));
        assert!(message.contains("required column client_consented is missing"));
    }

    #[test]
    fn a_header_that_is_a_row_of_personal_data_is_refused_without_echoing_it() {
        let error = parse_file(format!("{GOOD}\n").as_bytes(), "a").unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("not a known column name"));
        assert!(!message.contains("Alex"));
    }

    #[test]
    fn an_empty_file_is_refused() {
        assert!(parse_file("".as_bytes(), "a").is_err());
        assert!(parse_file("\n\n".as_bytes(), "a").is_err());
    }

    #[test]
    fn server_fields_map_to_csv_columns() {
        assert_eq!(column_of_field("client.date_of_birth"), "date_of_birth");
        assert_eq!(column_of_field("referrer.role"), "referrer_role");
        assert_eq!(column_of_field("vulnerabilities[3]"), "vulnerabilities");
        assert_eq!(column_of_field("client_consented"), "client_consented");
        assert_eq!(column_of_field("idempotency_key"), "idempotency_key");
    }

    #[test]
    fn the_summary_counts_sorts_and_lists_failed_rows() {
        let outcome = |row, status| RowOutcome {
            row,
            status,
            referral_id: String::new(),
            errors: vec!["gender: must be one of …".into()],
        };
        let summary = ImportSummary::from_outcomes(vec![
            outcome(5, RowStatus::Rejected),
            outcome(2, RowStatus::Submitted),
            outcome(3, RowStatus::Replayed),
            outcome(4, RowStatus::Unparsable),
        ]);
        assert_eq!(
            (
                summary.submitted,
                summary.replayed,
                summary.rejected,
                summary.unparsable,
                summary.failed
            ),
            (1, 1, 1, 1, 0)
        );
        assert_eq!(summary.outcomes[0].row, 2);
        assert!(!summary.all_succeeded());
        let text = summary.render();
        assert!(text.starts_with("4 rows: 1 submitted, 1 replayed"));
        assert!(text.contains("row 4: unparsable: gender"));
        assert!(text.contains("row 5: rejected: gender"));
        assert!(!text.contains("row 2:"));
    }

    #[test]
    fn the_report_has_one_line_per_row() {
        let path = std::env::temp_dir().join(format!("cpm-report-{}.csv", uuid::Uuid::new_v4()));
        write_report(
            &path,
            &[
                RowOutcome {
                    row: 2,
                    status: RowStatus::Submitted,
                    referral_id: "r-1".into(),
                    errors: vec![],
                },
                RowOutcome {
                    row: 3,
                    status: RowStatus::Rejected,
                    referral_id: String::new(),
                    errors: vec!["reason: is required".into(), "gender: bad, really".into()],
                },
            ],
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            text,
            "row,status,referral_id,errors\n2,submitted,r-1,\n\
             3,rejected,,\"reason: is required; gender: bad, really\"\n"
        );
    }

    #[test]
    fn the_enum_name_lists_are_complete() {
        assert_eq!(
            gender_names(),
            ["female", "male", "transgender", "non_binary", "undisclosed"]
        );
        assert_eq!(
            referrer_role_names(),
            ["frontline", "middle_manager", "senior"]
        );
        assert!(vulnerability_names().contains(&"high_impact_user".to_owned()));
        assert!(!vulnerability_names().contains(&"unspecified".to_owned()));
    }
}
