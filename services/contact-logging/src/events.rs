//! Opens a case file when an allocation is confirmed, in the consumer's
//! inbox transaction. No event follows: referral intake already moves the
//! referral's status on `allocation.confirmed` itself.

use chrono::Utc;
use cpm_proto::v1::{AllocationConfirmed, CaseState};
use cpm_runtime::bus::{EventHandler, HandlerError, ReceivedEvent};
use cpm_runtime::grpc::values::from_timestamp;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::{self, NewCaseFile};

pub struct CaseFileOpener;

impl EventHandler for CaseFileOpener {
    async fn handle(
        &self,
        connection: &mut PgConnection,
        event: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let allocation: AllocationConfirmed = event.decode()?;
        let referral_id = Uuid::parse_str(&allocation.referral_id).map_err(|_| {
            HandlerError::Permanent(format!("bad referral id `{}`", allocation.referral_id))
        })?;
        let case_file_id = Uuid::now_v7();
        let opened = db::insert_case_file(
            connection,
            &NewCaseFile {
                case_file_id,
                referral_id,
                agency_id: &allocation.agency_id,
                area: &allocation.area,
                state: CaseState::Open as i32,
                opened_at: allocation
                    .confirmed_at
                    .as_ref()
                    .and_then(from_timestamp)
                    .unwrap_or_else(Utc::now),
            },
        )
        .await?;
        if !opened {
            tracing::info!(%referral_id, "case file already open");
            return Ok(());
        }
        db::insert_case_mentors(connection, case_file_id, &allocation.mentor_ids).await?;
        tracing::info!(
            %referral_id,
            %case_file_id,
            mentors = allocation.mentor_ids.len(),
            "case file opened"
        );
        Ok(())
    }
}
