//! Sending the parsed rows as they are read: readable rows go to
//! `SubmitReferral` with a bounded number in flight, each retried with
//! back-off while the server is unavailable (safe because every row carries
//! an idempotency key), and rows that could not be read are counted without
//! being sent. Outcomes come back in row order, with a bounded number of rows
//! held, and the server's field violations are translated back to CSV column
//! names.

use std::sync::Arc;
use std::time::Duration;

use cpm_proto::v1::SubmitReferralRequest;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use futures::{Stream, StreamExt as _};
use tokio::sync::Semaphore;
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

/// Rows read ahead per submission slot. Outcomes leave in row order, so a
/// slow row holds back the ones after it; with this much room, the other
/// slots keep submitting while one row waits out a retry, and the rows held
/// stay a small, fixed number.
const ROWS_PER_SLOT: usize = 4;

/// Each row's outcome, in row order: readable rows are submitted with at
/// most `concurrency` in flight, unreadable ones are counted without being
/// sent. At most `ROWS_PER_SLOT × concurrency` rows are taken from `rows`
/// ahead of the outcome last yielded, so memory does not grow with the file.
pub(super) fn outcomes_in_row_order(
    client: ReferralIntakeServiceClient<Authed>,
    rows: impl Stream<Item = ParsedRow>,
    concurrency: usize,
) -> impl Stream<Item = RowOutcome> {
    let concurrency = concurrency.max(1);
    let slots = Arc::new(Semaphore::new(concurrency));
    rows.map(move |parsed| {
        let client = client.clone();
        let slots = Arc::clone(&slots);
        async move {
            match parsed.request {
                Ok(request) => {
                    // Never closed, so never `Err`.
                    let _slot = slots.acquire_owned().await.ok();
                    submit(client, parsed.row, request).await
                }
                Err(errors) => RowOutcome {
                    row: parsed.row,
                    status: RowStatus::Unparsable,
                    referral_id: String::new(),
                    errors: errors.iter().map(ToString::to_string).collect(),
                },
            }
        }
    })
    .buffered(concurrency * ROWS_PER_SLOT)
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
