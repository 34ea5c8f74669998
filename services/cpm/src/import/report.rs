//! What became of each row and how it is told: the per-row status and
//! outcome, the counts `cpm import` prints, and the optional report file with
//! one line per row. Outcomes carry a row number, a column and a problem,
//! never a cell's value, so the summary and the report are safe to share.

use std::fmt;
use std::path::Path;

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
    pub(super) fn from_outcomes(mut outcomes: Vec<RowOutcome>) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
