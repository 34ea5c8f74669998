//! `cpm import`: bulk intake for agencies moving off spreadsheets. Each row
//! of a CSV file becomes one `SubmitReferral` call, several in flight at
//! once; the outcome of every row is counted and, on request, written to a
//! report file.
//!
//! # Memory
//! The import streams: rows are read only a bounded distance ahead of the
//! submissions, and each row's outcome is counted, written to the report as
//! soon as the rows before it are done, and dropped. What is held is a fixed number
//! of rows (the channel from the reading thread, `concurrency` rows, and the
//! rows in flight or waiting for an earlier one, 4 × `concurrency`), the
//! counts, and the first [`LISTED_PROBLEMS`] rows that were not imported. A
//! file of a million rows needs the same memory as one of a hundred.
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
//!
//! # Layout
//! `csv_rows` reads the header and turns each row into a request or its
//! problems, using `cell_values` for the cells that are not free text;
//! `submit` sends the readable rows and yields their outcomes in row order;
//! `report` counts the outcomes and writes the report file; `progress` draws
//! the bar. Everything public is re-exported here, so callers
//! use `cpm::import::…` without knowing the layout.

mod cell_values;
mod csv_rows;
mod progress;
mod report;
mod submit;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_runtime::auth::{Authenticator, Role};
use futures::StreamExt as _;
use tokio::sync::mpsc;

use crate::client::{authed, connect};

pub use cell_values::{gender_names, referrer_role_names, vulnerability_names};
pub use csv_rows::{COLUMNS, CellError, ParsedRow, REQUIRED_COLUMNS, Rows, count_rows, read_rows};
pub use report::{ImportSummary, LISTED_PROBLEMS, ReportFile, RowOutcome, RowStatus};
pub use submit::column_of_field;

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

/// Imports a file as it reads it: rows are parsed one by one, submitted with
/// at most `concurrency` in flight, and each outcome is counted and written
/// to the report as it arrives, so memory stays the same for any length of
/// file. Errors when nothing can be attempted (unreadable file or header,
/// no server, no report file), and when the file cannot be read on or the
/// report written part-way; row failures are counted in the summary.
pub async fn run(options: ImportOptions) -> anyhow::Result<ImportSummary> {
    let path = options.file.clone();
    let agency_id = options.agency_id.clone();
    // Opening and reading may block (a pipe waits for its writer).
    let rows = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        read_rows(file, &agency_id).with_context(|| format!("{}", path.display()))
    })
    .await
    .context("the file reader stopped")??;
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
    let mut report = options
        .report
        .as_deref()
        .map(ReportFile::create)
        .transpose()?;

    let bar = progress::bar(&options.file, options.show_progress);
    let concurrency = options.concurrency.max(1);
    let (mut parsed, reader) = read_in_background(rows, concurrency);
    let rows = futures::stream::poll_fn(move |context| parsed.poll_recv(context));
    let mut outcomes = std::pin::pin!(submit::outcomes_in_row_order(client, rows, concurrency));
    let mut summary = ImportSummary::default();
    while let Some(outcome) = outcomes.next().await {
        if let Some(report) = &mut report {
            report.write(&outcome)?;
        }
        if !outcome.status.is_success() {
            bar.set_message(format!("({} with problems)", summary.problem_rows() + 1));
        }
        summary.record(outcome);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(report) = report {
        report.finish()?;
    }
    reader
        .await
        .context("the file reader stopped")?
        .with_context(|| {
            format!(
                "{}: stopped after {} rows ({} imported; running the file again replays them)",
                options.file.display(),
                summary.rows(),
                summary.submitted + summary.replayed
            )
        })?;
    Ok(summary)
}

/// Parses rows on a blocking thread, handing them over through a channel
/// of `capacity`, which bounds how far reading runs ahead of submitting.
/// The thread ends at the end of the file, at a read error (its result), or
/// when the receiver is dropped.
fn read_in_background(
    rows: Rows<std::fs::File>,
    capacity: usize,
) -> (
    mpsc::Receiver<ParsedRow>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let (sender, receiver) = mpsc::channel(capacity);
    let reader = tokio::task::spawn_blocking(move || {
        for row in rows {
            if sender.blocking_send(row?).is_err() {
                break;
            }
        }
        Ok(())
    });
    (receiver, reader)
}
