//! The progress bar on standard error.
//!
//! Someone importing a million rows wants to know how long it will take, and
//! only a bar with a known length can say (a spinner with a rate leaves the
//! arithmetic to them). The length needs a pass over the file, so a second
//! reader counts its rows (records, without parsing or keeping them: about a
//! second per 200 MB) *while* the import runs: the first rows go out at once,
//! the bar starts as a counter with a rate and becomes a bar with an ETA when
//! the count is in. A file that cannot be read twice (a pipe) keeps the
//! counter; without a terminal there is no bar and no count.

use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::csv_rows::count_rows;

const COUNTER: &str = "{spinner} [{elapsed_precise}] {human_pos} rows ({per_sec:0}) {msg}";
const BAR: &str = "{spinner} [{elapsed_precise}] {bar:40} {human_pos}/{human_len} rows ({per_sec:0}, {eta} left) {msg}";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// A bar for importing `file`, hidden unless `visible`. Call from within the
/// runtime: the count runs on its blocking pool.
pub(super) fn bar(file: &Path, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::no_length().with_style(style(COUNTER));
    bar.enable_steady_tick(Duration::from_millis(200));
    // Hidden also when standard error is not a terminal: no bar, no count.
    if !bar.is_hidden() && std::fs::metadata(file).is_ok_and(|metadata| metadata.is_file()) {
        let bar = bar.clone();
        let file = file.to_owned();
        tokio::task::spawn_blocking(move || {
            let counted = std::fs::File::open(&file)
                .map_err(anyhow::Error::from)
                .and_then(count_rows);
            // Unreadable now: the import itself will say so.
            if let Ok(rows) = counted
                && !bar.is_finished()
            {
                bar.set_length(rows);
                bar.set_style(style(BAR));
            }
        });
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_templates_parse() {
        for template in [COUNTER, BAR] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }
}
