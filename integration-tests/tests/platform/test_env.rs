//! The test environment removes its database and broker namespace even
//! when a test fails before calling `cleanup`.

use cpm::Target;
use futures::FutureExt as _;

use crate::harness::{TestEnv, ready_messages};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_leaves_no_database_and_no_queues_behind() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    platform.stop().await.unwrap();
    let database = env
        .database_url
        .rsplit_once('/')
        .map(|(_, name)| name.to_owned())
        .unwrap();
    let queue = env.queue("risk-assessment", "referrals");
    let amqp = env.settings.platform.amqp.url.expose().to_owned();

    let failed = std::panic::AssertUnwindSafe(async move {
        let _env = env;
        panic!("a test failing before its cleanup");
    })
    .catch_unwind()
    .await;
    assert!(failed.is_err());

    let admin = sqlx::PgPool::connect(&crate::harness::admin_database_url())
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&database)
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(left, 0, "database {database} was left behind");
    admin.close().await;

    assert!(
        ready_messages(&amqp, &queue).await.is_none(),
        "queue {queue} was left behind"
    );
}
