//! A database outage loses nothing and dead-letters nothing: a consumer
//! that cannot reach PostgreSQL holds its delivery until the database
//! answers, spending none of the message's deliveries.
//!
//! The outage is a network cut made by a proxy this test runs between the
//! platform and the shared PostgreSQL: the server itself is never stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cpm::Target;
use cpm_proto::Event as _;
use cpm_proto::v1::ReferralSubmitted;
use cpm_runtime::config::Secret;
use prost::Message as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::bus::publish_raw;
use crate::harness::{TestEnv, eventually};

/// A TCP proxy to PostgreSQL that can cut every connection and refuse new
/// ones until restored.
struct CuttableProxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    async fn start(target: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Notify::new());
        let task = tokio::spawn({
            let (up, cut) = (up.clone(), cut.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is refused
                    }
                    let cut = cut.clone();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            () = cut.notified() => {}
                        }
                    });
                }
            }
        });
        Self {
            port,
            up,
            cut,
            task,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_dead_letters_nothing_and_loses_nothing() {
    let mut env = TestEnv::new().await;
    let proxy = CuttableProxy::start("127.0.0.1:5432").await;
    let through_proxy = env
        .database_url
        .replacen("localhost", "127.0.0.1", 1)
        .replacen("127.0.0.1/", &format!("127.0.0.1:{}/", proxy.port), 1);
    assert!(
        through_proxy.contains(&proxy.port.to_string()),
        "{through_proxy}"
    );
    env.settings.platform.database.url = Secret::new(through_proxy);
    env.settings.platform.database.acquire_timeout_secs = 1;
    let platform = env.start(&[Target::RISK_ASSESSMENT]).await;

    proxy.cut();
    let referrals: Vec<String> = (0..10).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for referral_id in &referrals {
        let event = ReferralSubmitted {
            referral_id: referral_id.clone(),
            agency_id: "agency-outage".into(),
            area: "Outage".into(),
            client_gender: 1,
            ..Default::default()
        };
        let envelope = cpm_runtime::bus::outbox::envelope("referral-intake", &event);
        publish_raw(&env, ReferralSubmitted::TYPE, &envelope.encode_to_vec()).await;
    }
    // Long enough for every delivery the queue allows (3 here), with the
    // requeue pauses, to have been spent many times over.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let queue = env.queue("risk-assessment", "referrals");
    let dead_letters = format!("{queue}.dlq");
    assert_eq!(
        env.queue_depth(&dead_letters).await,
        0,
        "an outage must not dead-letter live events"
    );

    proxy.restore();
    let database = env.database().await;
    eventually(
        Duration::from_secs(60),
        "every event applied after the outage",
        || {
            let database = database.clone();
            let referrals = referrals.clone();
            async move {
                let ids: Vec<uuid::Uuid> = referrals.iter().map(|id| id.parse().unwrap()).collect();
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM risk_assessment.assessment WHERE referral_id = ANY($1)",
                )
                .bind(&ids)
                .fetch_one(&database)
                .await
                .is_ok_and(|count| count == ids.len() as i64)
            }
        },
    )
    .await;
    assert_eq!(env.queue_depth(&dead_letters).await, 0);
    database.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}
