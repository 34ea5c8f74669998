//! What notifications does for a caller, one function per use case, each
//! answering with rows or a [`NoticeError`]. `grpc.rs` keeps tokens,
//! parsing, the stream's plumbing and messages.

use cpm_runtime::grpc::ApiError;
use sqlx::PgPool;

use crate::db::{self, NotificationRow};

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
