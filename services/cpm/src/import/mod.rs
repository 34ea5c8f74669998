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
//!
//! # Layout
//! `csv_rows` reads the header and turns each row into a request or its
//! problems, using `cell_values` for the cells that are not free text;
//! `submit` sends the readable rows; `report` holds the outcomes, the summary
//! and the report file. Everything public is re-exported here, so callers
//! use `cpm::import::…` without knowing the layout.

mod cell_values;
mod csv_rows;
mod report;
mod submit;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_runtime::auth::{Authenticator, Role};

use crate::client::{authed, connect};

pub use cell_values::{gender_names, referrer_role_names, vulnerability_names};
pub use csv_rows::{COLUMNS, CellError, ParsedRow, REQUIRED_COLUMNS, parse_file};
pub use report::{ImportSummary, RowOutcome, RowStatus, write_report};
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

    let outcomes =
        submit::submit_rows(client, rows, options.concurrency, options.show_progress).await;

    let summary = ImportSummary::from_outcomes(outcomes);
    if let Some(report) = &options.report {
        write_report(report, &summary.outcomes)?;
    }
    Ok(summary)
}
