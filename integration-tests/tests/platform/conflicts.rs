//! A statement PostgreSQL refuses for a concurrent transaction is a
//! conflict: a consumer applies the event again at once
//! (`consumer_batch::…deadlock…`), and a gRPC caller hears ABORTED (the
//! call did nothing and may be retried), not INTERNAL.

use cpm_runtime::bus::HandlerError;
use cpm_runtime::grpc::ApiError;
use tonic::Code;

use crate::harness::TestEnv;

#[tokio::test]
async fn a_row_locked_by_another_transaction_is_a_conflict_not_an_internal_error() {
    let env = TestEnv::new().await;
    let pool = env.database().await;
    sqlx::query("CREATE TABLE row_held (id int PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO row_held VALUES (1)")
        .execute(&pool)
        .await
        .unwrap();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM row_held WHERE id = 1 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let refused = || async {
        sqlx::query("SELECT id FROM row_held WHERE id = 1 FOR UPDATE NOWAIT")
            .execute(&pool)
            .await
            .expect_err("the row is locked")
    };

    let error = refused().await;
    assert!(cpm_runtime::db::is_conflict(&error), "{error}");
    assert!(!cpm_runtime::db::is_unavailable(&error), "{error}");
    assert!(matches!(
        HandlerError::from(refused().await),
        HandlerError::Conflict(_)
    ));
    let status = tonic::Status::from(ApiError::from(refused().await));
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("retry"), "{status:?}");

    // Any other refusal stays what it was.
    let other = sqlx::query("SELECT no_such_column FROM row_held")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(!cpm_runtime::db::is_conflict(&other));
    assert!(matches!(
        HandlerError::from(other),
        HandlerError::Transient(_)
    ));
    holder.rollback().await.unwrap();
    pool.close().await;
    env.cleanup().await;
}
