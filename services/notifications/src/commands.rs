//! What notifications does for a caller, one function per use case, each
//! answering with rows or a [`NoticeError`]. `grpc.rs` keeps tokens,
//! parsing, the stream's plumbing and messages.

use cpm_runtime::auth::Caller;
use cpm_runtime::grpc::ApiError;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{self, DeliveryRow, NotificationRow, WebhookRow};

/// Why a use case of notifications did not happen.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<NoticeError> for ApiError {
    fn from(error: NoticeError) -> Self {
        match error {
            NoticeError::Database(error) => error.into(),
        }
    }
}

impl From<NoticeError> for tonic::Status {
    fn from(error: NoticeError) -> Self {
        ApiError::from(error).into()
    }
}

/// Points the caller's agency's deliveries at `url` (one webhook per agency).
pub async fn register_webhook(
    pool: &PgPool,
    caller: &Caller,
    agency_id: &str,
    url: &str,
) -> Result<WebhookRow, NoticeError> {
    let mut connection = pool.acquire().await?;
    let row = db::upsert_webhook(&mut connection, agency_id, url, &caller.subject).await?;
    tracing::info!(webhook_id = %row.webhook_id, "webhook registered");
    Ok(row)
}

/// One page of an agency's deliveries, newest first, after `after`
/// (notification ID, delivery ID); `limit` rows at most.
pub async fn list_deliveries(
    pool: &PgPool,
    agency_id: &str,
    after: Option<(Uuid, Uuid)>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, NoticeError> {
    let mut connection = pool.acquire().await?;
    Ok(db::list_deliveries(&mut connection, agency_id, after, limit).await?)
}

/// An agency's notifications after sequence `after`, oldest first.
pub async fn notifications_after(
    pool: &PgPool,
    agency_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<NotificationRow>, NoticeError> {
    let mut connection = pool.acquire().await?;
    Ok(db::notifications_after(&mut connection, agency_id, after, limit).await?)
}
