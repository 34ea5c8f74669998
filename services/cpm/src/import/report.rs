//! What became of each row and how it is told: the per-row status and
//! outcome, the counts `cpm import` prints, and the optional report file with
//! one line per row, written as the rows finish. Outcomes carry a row number, a column and a problem,
//! never a cell's value, so the summary and the report are safe to share.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

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

/// Rows not imported that the summary lists one by one; beyond these it
/// only counts them, so a file of a million bad rows cannot fill the
/// memory or the terminal. The report file lists every row.
pub const LISTED_PROBLEMS: usize = 1000;

/// Counts by outcome, and the first [`LISTED_PROBLEMS`] rows that were not
/// imported, in row order. Its size does not grow with the file.
#[derive(Clone, Debug, Default)]
pub struct ImportSummary {
    pub submitted: usize,
    pub replayed: usize,
    pub rejected: usize,
    pub unparsable: usize,
    pub failed: usize,
    /// Rows not imported, in the order recorded, at most [`LISTED_PROBLEMS`].
    pub problems: Vec<RowOutcome>,
}

impl ImportSummary {
    /// Counts one row's outcome; outcomes come in row order.
    pub(super) fn record(&mut self, outcome: RowOutcome) {
        *match outcome.status {
            RowStatus::Submitted => &mut self.submitted,
            RowStatus::Replayed => &mut self.replayed,
            RowStatus::Rejected => &mut self.rejected,
            RowStatus::Unparsable => &mut self.unparsable,
            RowStatus::Failed => &mut self.failed,
        } += 1;
        if !outcome.status.is_success() && self.problems.len() < LISTED_PROBLEMS {
            self.problems.push(outcome);
        }
    }

    pub fn rows(&self) -> usize {
        self.submitted + self.replayed + self.problem_rows()
    }

    /// Rows whose referral is not on the platform.
    pub fn problem_rows(&self) -> usize {
        self.rejected + self.unparsable + self.failed
    }

    /// True when every row's referral is on the platform.
    pub fn all_succeeded(&self) -> bool {
        self.problem_rows() == 0
    }

    /// The text `cpm import` prints: the counts, then each failed row (the
    /// first [`LISTED_PROBLEMS`] of them).
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
        for outcome in &self.problems {
            text.push_str(&format!(
                "row {}: {}: {}\n",
                outcome.row,
                outcome.status,
                outcome.errors.join("; ")
            ));
        }
        let unlisted = self.problem_rows() - self.problems.len();
        if unlisted > 0 {
            text.push_str(&format!(
                "… and {unlisted} more rows not imported; --report FILE lists every row\n"
            ));
        }
        text
    }
}

/// The report file, `row,status,referral_id,errors`: one line per row,
/// written as each row's outcome arrives (in row order) rather than kept.
pub struct ReportFile {
    writer: csv::Writer<std::fs::File>,
    path: PathBuf,
}

impl ReportFile {
    /// Creates (or truncates) the file and writes its header line.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let context = || format!("cannot write the report {}", path.display());
        let mut writer = csv::Writer::from_path(path).with_context(context)?;
        writer
            .write_record(["row", "status", "referral_id", "errors"])
            .with_context(context)?;
        Ok(Self {
            writer,
            path: path.to_owned(),
        })
    }

    pub fn write(&mut self, outcome: &RowOutcome) -> anyhow::Result<()> {
        self.writer
            .write_record([
                outcome.row.to_string().as_str(),
                outcome.status.as_str(),
                outcome.referral_id.as_str(),
                outcome.errors.join("; ").as_str(),
            ])
            .with_context(|| format!("cannot write the report {}", self.path.display()))
    }

    /// Writes out what is still buffered.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.writer
            .flush()
            .with_context(|| format!("cannot write the report {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(row: usize, status: RowStatus) -> RowOutcome {
        RowOutcome {
            row,
            status,
            referral_id: String::new(),
            errors: vec!["gender: must be one of …".into()],
        }
    }

    #[test]
    fn the_summary_counts_and_lists_failed_rows() {
        let mut summary = ImportSummary::default();
        for (row, status) in [
            (2, RowStatus::Submitted),
            (3, RowStatus::Replayed),
            (4, RowStatus::Unparsable),
            (5, RowStatus::Rejected),
        ] {
            summary.record(outcome(row, status));
        }
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
        assert_eq!(summary.problems.len(), 2);
        assert!(!summary.all_succeeded());
        let text = summary.render();
        assert!(text.starts_with("4 rows: 1 submitted, 1 replayed"));
        assert!(text.contains("row 4: unparsable: gender"));
        assert!(text.contains("row 5: rejected: gender"));
        assert!(!text.contains("row 2:"));
        assert!(!text.contains("more rows not imported"));
    }

    #[test]
    fn the_summary_lists_a_bounded_number_of_failed_rows_and_counts_the_rest() {
        let mut summary = ImportSummary::default();
        for row in 2..LISTED_PROBLEMS + 12 {
            summary.record(outcome(row, RowStatus::Rejected));
        }
        assert_eq!(summary.rejected, LISTED_PROBLEMS + 10);
        assert_eq!(summary.problems.len(), LISTED_PROBLEMS);
        let text = summary.render();
        assert!(text.contains(&format!("row {}: rejected", LISTED_PROBLEMS + 1)));
        assert!(!text.contains(&format!("row {}: rejected", LISTED_PROBLEMS + 2)));
        assert!(text.ends_with("… and 10 more rows not imported; --report FILE lists every row\n"));
    }

    #[test]
    fn the_report_has_one_line_per_row() {
        let path = std::env::temp_dir().join(format!("cpm-report-{}.csv", uuid::Uuid::new_v4()));
        let mut report = ReportFile::create(&path).unwrap();
        report
            .write(&RowOutcome {
                row: 2,
                status: RowStatus::Submitted,
                referral_id: "r-1".into(),
                errors: vec![],
            })
            .unwrap();
        report
            .write(&RowOutcome {
                row: 3,
                status: RowStatus::Rejected,
                referral_id: String::new(),
                errors: vec!["reason: is required".into(), "gender: bad, really".into()],
            })
            .unwrap();
        report.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            text,
            "row,status,referral_id,errors\n2,submitted,r-1,\n\
             3,rejected,,\"reason: is required; gender: bad, really\"\n"
        );
    }
}
