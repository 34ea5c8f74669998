//! Sending the parsed rows: readable rows go to `SubmitReferral` with a
//! bounded number in flight, each retried with back-off while the server is
//! unavailable (safe because every row carries an idempotency key), and rows
//! that could not be read are counted without being sent. The server's field
//! violations are translated back to CSV column names, and an optional
//! progress bar shows how far the import has got.

use std::time::Duration;

use cpm_proto::v1::SubmitReferralRequest;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use futures::StreamExt as _;
use tonic_types::StatusExt as _;

use super::csv_rows::ParsedRow;
use super::report::{RowOutcome, RowStatus};
use crate::client::Authed;

/// Attempts per row when the server answers UNAVAILABLE; retrying is safe
/// because every row carries an idempotency key.
const ATTEMPTS: u32 = 4;

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
    let mut delays =
        cpm_runtime::retry::backoff(Duration::from_millis(250), Duration::from_secs(4));
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
                let pause = delays.next_pause();
                tokio::time::sleep(pause).await;
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

/// Submits the readable rows with at most `concurrency` in flight and counts
/// the unreadable ones without sending them; returns one outcome per row, in
/// the order they finished.
pub(super) async fn submit_rows(
    client: ReferralIntakeServiceClient<Authed>,
    rows: Vec<ParsedRow>,
    concurrency: usize,
    show_progress: bool,
) -> Vec<RowOutcome> {
    let bar = progress_bar(rows.len(), show_progress);
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
        .buffer_unordered(concurrency.max(1));
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
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_fields_map_to_csv_columns() {
        assert_eq!(column_of_field("client.date_of_birth"), "date_of_birth");
        assert_eq!(column_of_field("referrer.role"), "referrer_role");
        assert_eq!(column_of_field("vulnerabilities[3]"), "vulnerabilities");
        assert_eq!(column_of_field("client_consented"), "client_consented");
        assert_eq!(column_of_field("idempotency_key"), "idempotency_key");
    }
}
