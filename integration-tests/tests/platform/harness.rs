//! Test harness: each test gets its own database and its own broker
//! namespace (exchange and queue names), so tests run in parallel against
//! the machine's real PostgreSQL and RabbitMQ, and clean up after themselves.

use std::time::Duration;

use base64::Engine as _;
use cpm::{Platform, Settings, Target};
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_proto::v1::{
    ClientIdentity, Gender, GetReferralRequest, Referral, ReferralStatus, Referrer, ReferrerRole,
    SubmitReferralRequest, Vulnerability,
};
use cpm_runtime::auth::{Authenticator, Role};
use cpm_runtime::config::Secret;
use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use rand::RngCore as _;
use tonic::transport::Channel;

pub use cpm::client::Authed;

/// The programme areas of every test: the DOMAIN's and the names tests
/// use to keep their referrals apart.
pub const TEST_AREAS: [&str; 26] = [
    "Darlington",
    "South Durham",
    "East Durham",
    "North Durham",
    "Durham",
    "Hartlepool",
    "Redcar",
    "Stockton",
    "Northshire",
    "Restart",
    "Notices",
    "Limits",
    "Early",
    "Sealed",
    "Outage",
    "Good",
    "Bad",
    "Roles",
    "Paging",
    "A",
    "B",
    "X",
    "Flow",
    "Sigterm",
    "BrokerKill",
    "Faults",
];

pub fn admin_database_url() -> String {
    std::env::var("CPM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@localhost/postgres".into())
}

pub fn amqp_url() -> String {
    std::env::var("CPM_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn random_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One test's private database and broker namespace, removed when the
/// test ends, pass or fail: by [`TestEnv::cleanup`], or else on drop.
pub struct TestEnv {
    pub settings: Settings,
    pub authenticator: Authenticator,
    pub database_url: String,
    pub namespace: String,
    cleaned: bool,
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with_amqp_url(&amqp_url()).await
    }

    pub async fn with_amqp_url(amqp: &str) -> Self {
        Self::with_servers(&admin_database_url(), amqp).await
    }

    /// A test database on the PostgreSQL server `admin` reaches (a private
    /// cluster in the fault tests) and a namespace on the broker at `amqp`.
    pub async fn with_servers(admin: &str, amqp: &str) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let admin = admin.to_owned();
        let base = admin
            .rsplit_once('/')
            .map(|(base, _)| base)
            .unwrap_or(&admin);
        let database_url = format!("{base}/cpm_test_{id}");
        let mut settings = Settings::default();
        settings.platform.grpc.listen = "127.0.0.1:0".into();
        settings.platform.grpc.shutdown_timeout_secs = 5;
        settings.platform.database.url = Secret::new(database_url.clone());
        settings.platform.database.max_connections = 4;
        settings.platform.amqp.url = Secret::new(amqp);
        settings.platform.amqp.namespace = format!("test-{id}");
        settings.platform.amqp.delivery_limit = 3;
        settings.platform.outbox.poll_interval_ms = 200;
        settings.platform.auth.hs256_secret = Secret::new(random_key());
        settings.platform.crypto.master_key = Secret::new(random_key());
        settings.set("notifications.webhook_poll_interval_ms", 200);
        settings.platform.programme.areas = TEST_AREAS.map(str::to_owned).to_vec();
        settings.validate().expect("test settings are valid");
        cpm_runtime::db::ensure_database(&database_url)
            .await
            .expect("test database created");
        let authenticator = Authenticator::from_config(&settings.platform.auth).unwrap();
        Self {
            namespace: settings.platform.amqp.namespace.clone(),
            settings,
            authenticator,
            database_url,
            cleaned: false,
        }
    }

    pub async fn start(&self, targets: &[Target]) -> Platform {
        Platform::start(self.settings.clone(), targets)
            .await
            .expect("platform starts")
    }

    pub async fn start_all(&self) -> Platform {
        self.start(&Target::ALL).await
    }

    pub fn token(
        &self,
        subject: &str,
        role: Role,
        agency: Option<&str>,
        mentor: Option<&str>,
    ) -> String {
        self.authenticator
            .mint(subject, role, agency, mentor, chrono::Duration::hours(1))
            .unwrap()
    }

    pub fn referrer(&self, channel: &Channel, agency: &str) -> Authed {
        cpm::client::authed(
            channel,
            &self.token("referrer", Role::Referrer, Some(agency), None),
        )
        .unwrap()
    }

    /// A coordinator working in every test area.
    pub fn coordinator(&self, channel: &Channel) -> Authed {
        self.coordinator_in(channel, &TEST_AREAS)
    }

    /// A coordinator working in `areas` only.
    pub fn coordinator_in(&self, channel: &Channel, areas: &[&str]) -> Authed {
        let areas: Vec<String> = areas.iter().map(|area| (*area).to_owned()).collect();
        let token = self
            .authenticator
            .mint_with_areas(
                "coordinator",
                Role::Coordinator,
                None,
                None,
                &areas,
                chrono::Duration::hours(1),
            )
            .unwrap();
        cpm::client::authed(channel, &token).unwrap()
    }

    pub fn mentor(&self, channel: &Channel, mentor_id: &str) -> Authed {
        cpm::client::authed(
            channel,
            &self.token("mentor", Role::Mentor, None, Some(mentor_id)),
        )
        .unwrap()
    }

    /// A plain connection to the test database (for checks at the SQL level).
    pub async fn database(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.database_url)
            .await
            .unwrap()
    }

    pub async fn amqp_channel(&self) -> (lapin::Connection, lapin::Channel) {
        let connection = lapin::Connection::connect(
            self.settings.platform.amqp.url.expose(),
            lapin::ConnectionProperties::default(),
        )
        .await
        .unwrap();
        let channel = connection.create_channel().await.unwrap();
        (connection, channel)
    }

    pub fn queue(&self, service: &str, consumer: &str) -> String {
        format!("{}.{service}.{consumer}", self.namespace)
    }

    /// Messages ready in a queue that must exist.
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        ready_messages(self.settings.platform.amqp.url.expose(), queue)
            .await
            .unwrap_or_else(|| panic!("queue {queue} does not exist"))
    }

    pub async fn queue_exists(&self, queue: &str) -> bool {
        ready_messages(self.settings.platform.amqp.url.expose(), queue)
            .await
            .is_some()
    }

    /// Drops the database and deletes the namespace's queues and exchanges.
    pub async fn cleanup(mut self) {
        remove_resources(
            self.database_url.clone(),
            self.settings.platform.amqp.url.expose().to_owned(),
            self.namespace.clone(),
        )
        .await;
        self.cleaned = true;
    }
}

impl Drop for TestEnv {
    /// A test that failed before its `cleanup` still leaves nothing behind:
    /// the database is dropped (with FORCE, whatever still holds it) and the
    /// broker namespace deleted, from a runtime of its own since the test's
    /// may be unwinding.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let database_url = self.database_url.clone();
        let amqp_url = self.settings.platform.amqp.url.expose().to_owned();
        let namespace = self.namespace.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(remove_resources(database_url, amqp_url, namespace));
        })
        .join();
    }
}

/// Messages ready in `queue` on the broker at `amqp` (a passive declare), or
/// `None` when the queue does not exist.
pub async fn ready_messages(amqp: &str, queue: &str) -> Option<u32> {
    declared(amqp, queue)
        .await
        .map(|queue| queue.message_count())
}

/// The broker's count of a queue's consumers; `None` when there is no such
/// queue.
pub async fn queue_consumers(amqp: &str, queue: &str) -> Option<u32> {
    declared(amqp, queue)
        .await
        .map(|queue| queue.consumer_count())
}

/// A queue as a passive declaration reports it, if it exists.
async fn declared(amqp: &str, queue: &str) -> Option<lapin::Queue> {
    let connection = lapin::Connection::connect(amqp, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .ok();
    close_quietly(connection).await;
    declared
}

/// Removes one test's database and broker namespace, as far as they exist.
async fn remove_resources(database_url: String, amqp_url: String, namespace: String) {
    let _ = cpm_runtime::db::drop_database(&database_url).await;
    let Ok(Ok(connection)) = tokio::time::timeout(
        Duration::from_secs(10),
        lapin::Connection::connect(&amqp_url, lapin::ConnectionProperties::default()),
    )
    .await
    else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        for spec in cpm::platform::all_consumers() {
            let queue = format!("{namespace}.{}.{}", spec.service, spec.name);
            for name in [queue.clone(), format!("{queue}.dlq")] {
                let _ = channel
                    .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        }
        for exchange in ["events", "agency-feed", "dead-letter"] {
            let _ = channel
                .exchange_delete(
                    format!("{namespace}.{exchange}").as_str().into(),
                    ExchangeDeleteOptions::default(),
                )
                .await;
        }
    }
    close_quietly(connection).await;
}

pub async fn connect(platform: &Platform) -> Channel {
    cpm::client::connect(&platform.endpoint()).await.unwrap()
}

/// A valid submission for `area` with a fresh idempotency key and client name.
pub fn referral_request(area: &str) -> SubmitReferralRequest {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    SubmitReferralRequest {
        idempotency_key: unique.clone(),
        client: Some(ClientIdentity {
            given_name: "Robin".into(),
            family_name: format!("Testperson{}", &unique[..10]),
            date_of_birth: "1975-06-30".into(),
            gender: Gender::Male as i32,
            address: "27 Confidential Road".into(),
            area: area.into(),
            phone: "07700 900123".into(),
            safe_contact_instructions: "do not leave voicemail".into(),
        }),
        referrer: Some(Referrer {
            name: "PCSO Tester".into(),
            role: ReferrerRole::Frontline as i32,
            contact: "tester@police.example".into(),
        }),
        reason: "isolated and calling 999 nightly".into(),
        desired_outcomes: "a routine".into(),
        client_consented: true,
        vulnerabilities: vec![Vulnerability::VulnerableAndIsolated as i32],
        emergency_calls_last_12_months: 12,
        known_risks: String::new(),
        ..Default::default()
    }
}

/// Submits a referral the service must accept, and returns it.
pub async fn submit(
    client: &mut ReferralIntakeServiceClient<Authed>,
    request: SubmitReferralRequest,
) -> Referral {
    client
        .submit_referral(request)
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
}

/// Reads a referral the caller must be able to see.
pub async fn fetch_referral(
    client: &mut ReferralIntakeServiceClient<Authed>,
    referral_id: &str,
) -> Referral {
    client
        .get_referral(GetReferralRequest {
            referral_id: referral_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
}

/// A coordinator's decision that `referral_id`'s possible earlier referral,
/// which must be `earlier_referral_id`, is (or is not) the same client.
pub async fn decide_link(
    env: &TestEnv,
    channel: &Channel,
    referral_id: &str,
    earlier_referral_id: &str,
    confirm: bool,
) -> Referral {
    let mut staff = ReferralIntakeServiceClient::new(env.coordinator(channel));
    let seen = fetch_referral(&mut staff, referral_id).await;
    assert_eq!(
        seen.possible_earlier_referral_id, earlier_referral_id,
        "staff see the possible earlier referral"
    );
    staff
        .decide_link(cpm_proto::v1::DecideLinkRequest {
            referral_id: referral_id.into(),
            earlier_referral_id: earlier_referral_id.into(),
            confirm,
        })
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
}

/// Closes a test's broker connection, giving up after a few seconds: a
/// connection the broker already dropped may never answer.
pub async fn close_quietly(connection: lapin::Connection) {
    let _ =
        tokio::time::timeout(Duration::from_secs(5), connection.close(200, "done".into())).await;
}

/// Polls GetReferral until `wanted` (or fails after `timeout`).
pub async fn await_status(
    client: &mut ReferralIntakeServiceClient<Authed>,
    referral_id: &str,
    wanted: ReferralStatus,
    timeout: Duration,
) -> Referral {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let referral = client
            .get_referral(GetReferralRequest {
                referral_id: referral_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .referral
            .unwrap();
        if referral.status() == wanted {
            return referral;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "referral {referral_id} is {:?}, expected {wanted:?} within {timeout:?}",
            referral.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Repeats `check` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fields named by an INVALID_ARGUMENT's field violations, in order.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt as _;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("field violations attached")
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect()
}

/// Each referral's status as GetReferral shows it, in order, `at_once`
/// requests in flight.
pub async fn statuses_of(
    client: &ReferralIntakeServiceClient<Authed>,
    referrals: &[String],
    at_once: usize,
) -> Vec<cpm_proto::v1::ReferralStatus> {
    use futures::StreamExt as _;
    futures::stream::iter(referrals.iter().cloned())
        .map(|referral_id| {
            let mut client = client.clone();
            async move {
                client
                    .get_referral(cpm_proto::v1::GetReferralRequest { referral_id })
                    .await
                    .unwrap()
                    .into_inner()
                    .referral
                    .unwrap()
                    .status()
            }
        })
        .buffered(at_once)
        .collect()
        .await
}
