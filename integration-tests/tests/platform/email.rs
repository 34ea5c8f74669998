//! E-mail to referring agencies, against a real SMTP server the test starts
//! (the `mailin` crate's SMTP state machine on a TCP port of its own): who
//! chose e-mail gets it, from the versioned templates; who did not, does not;
//! an agency that turned webhooks off gets no webhook deliveries; and no
//! client-identifying field of a referral ever reaches an e-mail.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpm_proto::Event as _;
use cpm_proto::v1::notifications_service_client::NotificationsServiceClient;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_proto::v1::{
    ClientIdentity, DischargeFeedback, DischargeOutcome, GetNotificationPreferencesRequest,
    NotificationChannel, NotificationKind, OtherProfessional, PreferenceScope, ReferralStatus,
    ReferralStatusChanged, Referrer, RegisterWebhookRequest, RelapseSign,
    SetNotificationPreferencesRequest, SubscribeRequest, WithdrawReferralRequest,
};
use cpm_runtime::auth::Role;
use prost::Message as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tonic::transport::Channel;

use crate::bus::publish_raw;
use crate::harness::{
    Authed, TestEnv, connect, eventually, referral_request, submit, violated_fields,
};
use crate::tls::TestPki;

/// One message the SMTP server accepted.
#[derive(Clone, Debug, Default)]
struct ReceivedMail {
    to: Vec<String>,
    /// The message as sent: headers and body.
    data: String,
}

/// Keeps each accepted message in `inbox`.
#[derive(Clone)]
struct Collect {
    inbox: Arc<Mutex<Vec<ReceivedMail>>>,
    current: ReceivedMail,
}

impl mailin::Handler for Collect {
    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        to: &[String],
    ) -> mailin::Response {
        self.current = ReceivedMail {
            to: to.to_vec(),
            data: String::new(),
        };
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.data.push_str(&String::from_utf8_lossy(buf));
        Ok(())
    }

    fn data_end(&mut self) -> mailin::Response {
        self.inbox.lock().unwrap().push(self.current.clone());
        mailin::response::OK
    }
}

/// How a test SMTP server protects its conversations.
#[derive(Clone)]
enum ServerTls {
    /// Plain SMTP, STARTTLS not offered.
    Plain,
    /// Offers STARTTLS and upgrades when asked.
    Starttls(tokio_rustls::TlsAcceptor),
    /// TLS from the first byte (SMTPS).
    Implicit(tokio_rustls::TlsAcceptor),
}

impl ServerTls {
    /// An acceptor with the test PKI's certificate for `localhost`.
    fn acceptor(pki: &TestPki) -> tokio_rustls::TlsAcceptor {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject as _;
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(&pki.read("server.pem"))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(&pki.read("server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// How one SMTP conversation ended.
enum Ended {
    Closed,
    /// The client asked for STARTTLS and was told to go ahead.
    Upgrade,
}

/// An SMTP server on 127.0.0.1 and a port of its own, for one test.
struct MailServer {
    port: u16,
    inbox: Arc<Mutex<Vec<ReceivedMail>>>,
    /// Conversations that ran over TLS (after STARTTLS or from the start).
    encrypted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl MailServer {
    async fn start() -> Self {
        Self::start_with(ServerTls::Plain).await
    }

    async fn start_with(tls: ServerTls) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let encrypted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handler = Collect {
            inbox: inbox.clone(),
            current: ReceivedMail::default(),
        };
        let counted = encrypted.clone();
        let task = tokio::spawn(async move {
            let mut builder = mailin::SessionBuilder::new("smtp.test.example");
            if matches!(tls, ServerTls::Starttls(_)) {
                builder.enable_start_tls();
            }
            while let Ok((stream, peer)) = listener.accept().await {
                let mut session = builder.build(peer.ip(), handler.clone());
                let (tls, counted) = (tls.clone(), counted.clone());
                tokio::spawn(async move {
                    let count = || counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    match tls {
                        ServerTls::Plain => {
                            converse(stream, &mut session, true).await;
                        }
                        ServerTls::Implicit(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                count();
                                converse(stream, &mut session, true).await;
                            }
                        }
                        ServerTls::Starttls(acceptor) => {
                            let mut stream = stream;
                            // The client says nothing more until the TLS handshake.
                            if let Ended::Upgrade = converse(&mut stream, &mut session, true).await
                                && let Ok(stream) = acceptor.accept(stream).await
                            {
                                count();
                                session.tls_active();
                                converse(stream, &mut session, false).await;
                            }
                        }
                    }
                });
            }
        });
        Self {
            port,
            inbox,
            encrypted,
            task,
        }
    }

    fn encrypted_conversations(&self) -> usize {
        self.encrypted.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn received(&self) -> Vec<ReceivedMail> {
        self.inbox.lock().unwrap().clone()
    }

    fn received_by(&self, address: &str) -> Vec<ReceivedMail> {
        self.received()
            .into_iter()
            .filter(|mail| mail.to.iter().any(|to| to.eq_ignore_ascii_case(address)))
            .collect()
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `session` over `stream` line by line (after the greeting when
/// `greet`) until the client leaves or asks for STARTTLS.
async fn converse<S>(stream: S, session: &mut mailin::Session<Collect>, greet: bool) -> Ended
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut stream = BufReader::new(stream);
    if greet {
        let greeting = session.greeting().buffer().unwrap();
        if stream.write_all(&greeting).await.is_err() {
            return Ended::Closed;
        }
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        match stream.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return Ended::Closed,
            Ok(_) => {}
        }
        let response = session.process(&line);
        if !matches!(response.action, mailin::Action::NoReply) {
            let bytes = response.buffer().unwrap();
            if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
                return Ended::Closed;
            }
        }
        match response.action {
            mailin::Action::Close => return Ended::Closed,
            mailin::Action::UpgradeTls => return Ended::Upgrade,
            mailin::Action::NoReply | mailin::Action::Reply => {}
        }
    }
}

/// A test environment whose notifications e-mail through `mail`.
async fn env_with_mail(mail: &MailServer) -> TestEnv {
    env_with_smtp(mail, |_| {}).await
}

/// As [`env_with_mail`], plain SMTP to 127.0.0.1 unless `adjust` says otherwise.
async fn env_with_smtp(mail: &MailServer, adjust: impl FnOnce(&mut toml::Table)) -> TestEnv {
    let mut env = TestEnv::new().await;
    let mut smtp = toml::Table::new();
    smtp.insert("host".into(), "127.0.0.1".into());
    smtp.insert("port".into(), i64::from(mail.port).into());
    smtp.insert("tls".into(), "none".into());
    adjust(&mut smtp);
    smtp.insert(
        "from".into(),
        "CPM programme <cpm@programme.example>".into(),
    );
    smtp.insert("poll_interval_ms".into(), 200.into());
    env.settings
        .set("notifications.smtp", toml::Value::Table(smtp));
    env.settings
        .validate()
        .expect("settings with SMTP are valid");
    env
}

fn referrer(env: &TestEnv, channel: &Channel, subject: &str, agency: &str) -> Authed {
    cpm::client::authed(
        channel,
        &env.token(subject, Role::Referrer, Some(agency), None),
    )
    .unwrap()
}

fn admin(env: &TestEnv, channel: &Channel) -> Authed {
    cpm::client::authed(channel, &env.token("admin", Role::Admin, None, None)).unwrap()
}

async fn choose_email(
    client: &mut NotificationsServiceClient<Authed>,
    kinds: &[NotificationKind],
    address: &str,
) {
    client
        .set_notification_preferences(SetNotificationPreferencesRequest {
            scope: PreferenceScope::Referrer as i32,
            agency_id: String::new(),
            kinds: kinds.iter().map(|kind| *kind as i32).collect(),
            channels: vec![NotificationChannel::Email as i32],
            email_addresses: vec![address.into()],
        })
        .await
        .unwrap();
}

/// Referral intake's announcement of a discharge, with the proforma.
/// Publishes the discharge of `referral_id`, submitted by the referrer
/// `submitted_by`.
async fn publish_discharge(
    env: &TestEnv,
    agency: &str,
    submitted_by: &str,
    referral_id: &str,
    how_to: &str,
) {
    let event = ReferralStatusChanged {
        referral_id: referral_id.into(),
        agency_id: agency.into(),
        submitted_by: submitted_by.into(),
        status: ReferralStatus::Discharged as i32,
        previous_status: ReferralStatus::InSupport as i32,
        changed_at: Some(cpm_runtime::grpc::values::timestamp(chrono::Utc::now())),
        feedback: Some(DischargeFeedback {
            referral_id: referral_id.into(),
            started_on: "2024-02-01".into(),
            discharged_on: "2024-11-29".into(),
            contacts: 37,
            outcome: DischargeOutcome::GoalsAchieved as i32,
            relapse_signs: vec![RelapseSign::Isolation as i32],
            how_to_re_refer: how_to.into(),
            goals_set: 5,
            goals_achieved: 4,
        }),
        ..Default::default()
    };
    let envelope = cpm_runtime::bus::outbox::envelope("referral-intake", &event);
    publish_raw(env, ReferralStatusChanged::TYPE, &envelope.encode_to_vec()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referrer_who_chose_email_for_discharges_gets_the_proforma_and_one_who_did_not_gets_none()
{
    let mail = MailServer::start().await;
    let env = env_with_mail(&mail).await;
    let platform = env.start_all().await;
    let channel = connect(&platform).await;
    let agency = "agency-email";
    let mut chose = NotificationsServiceClient::new(referrer(&env, &channel, "ref-chose", agency));
    choose_email(
        &mut chose,
        &[NotificationKind::Discharged],
        "chose@police.example",
    )
    .await;
    let mut status_only =
        NotificationsServiceClient::new(referrer(&env, &channel, "ref-status", agency));
    choose_email(
        &mut status_only,
        &[NotificationKind::StatusChanged],
        "status-only@police.example",
    )
    .await;
    // Another referrer of the agency who chose discharges too: the
    // referral is not theirs, so nothing reaches them.
    let mut other = NotificationsServiceClient::new(referrer(&env, &channel, "ref-other", agency));
    choose_email(
        &mut other,
        &[NotificationKind::Discharged],
        "other@police.example",
    )
    .await;
    // A referrer who chose nothing: their preferences are the defaults.
    let mut silent = NotificationsServiceClient::new(referrer(&env, &channel, "ref-none", agency));
    let defaults = silent
        .get_notification_preferences(GetNotificationPreferencesRequest {
            scope: PreferenceScope::Referrer as i32,
            agency_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    assert!(defaults.defaults && defaults.channels.is_empty());
    // E-mail without an address, or to a malformed one, is refused.
    let refused = silent
        .set_notification_preferences(SetNotificationPreferencesRequest {
            scope: PreferenceScope::Referrer as i32,
            kinds: vec![NotificationKind::Discharged as i32],
            channels: vec![NotificationChannel::Email as i32],
            email_addresses: vec!["me@police.example\r\nBcc: all@x.example".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&refused),
        vec!["email_addresses[0]", "email_addresses"]
    );

    let referral_id = uuid::Uuid::now_v7().to_string();
    publish_discharge(
        &env,
        agency,
        "ref-chose",
        &referral_id,
        "Submit a new referral",
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the discharge e-mail arrives",
        || async { !mail.received_by("chose@police.example").is_empty() },
    )
    .await;
    let received = mail.received_by("chose@police.example");
    assert_eq!(
        received.len(),
        1,
        "one e-mail per notification and recipient"
    );
    let message = &received[0].data;
    for expected in [
        referral_id.as_str(),
        "Support started: 2024-02-01",
        "Discharged: 2024-11-29",
        "Contacts made: 37",
        "Goals set: 5",
        "Goals achieved: 4",
        "Outcome: goals achieved",
        "watch for: isolation",
    ] {
        assert!(
            message.contains(expected),
            "{expected} missing from {message}"
        );
    }
    let version = notifications::templates::DEFAULT_VERSION;
    assert!(
        message.contains(&format!("X-CPM-Template-Version: {version}")),
        "{message}"
    );

    // The delivery is recorded with the server's reply and the version.
    let database = env.database().await;
    let (state, template_version, reply): (i32, String, Option<String>) = sqlx::query_as(
        "SELECT state, template_version, last_reply FROM notifications.email_delivery \
         WHERE recipient = 'chose@police.example'",
    )
    .fetch_one(&database)
    .await
    .unwrap();
    assert_eq!(state, 2, "delivered");
    assert_eq!(template_version, version);
    assert!(reply.unwrap_or_default().starts_with("250"));

    // Anything else would have arrived by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(mail.received_by("status-only@police.example").is_empty());
    assert!(
        mail.received_by("other@police.example").is_empty(),
        "another referrer's referral"
    );
    assert_eq!(
        mail.received().len(),
        1,
        "nobody else is e-mailed: {:?}",
        mail.received()
    );
    database.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_that_turned_webhooks_or_the_stream_off_gets_no_deliveries_there() {
    let mail = MailServer::start().await;
    let env = env_with_mail(&mail).await;
    let platform = env.start_all().await;
    let channel = connect(&platform).await;
    let agency = "agency-no-hooks";
    let mut notifications =
        NotificationsServiceClient::new(referrer(&env, &channel, "ref-hooks", agency));
    notifications
        .register_webhook(RegisterWebhookRequest {
            url: "http://127.0.0.1:9/hook".into(),
        })
        .await
        .unwrap();
    let database = env.database().await;
    let counts = || {
        let database = database.clone();
        async move {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT (SELECT count(*) FROM notifications.notification WHERE agency_id = $1), \
                        (SELECT count(*) FROM notifications.delivery d \
                           JOIN notifications.notification n USING (notification_id) \
                         WHERE n.agency_id = $1)",
            )
            .bind(agency)
            .fetch_one(&database)
            .await
            .unwrap()
        }
    };

    publish_discharge(&env, agency, "", &uuid::Uuid::now_v7().to_string(), "").await;
    eventually(
        Duration::from_secs(30),
        "the first notification",
        || async { counts().await == (1, 1) },
    )
    .await;

    // A referrer cannot set the agency's preferences; an admin can.
    let denied = notifications
        .set_notification_preferences(SetNotificationPreferencesRequest {
            scope: PreferenceScope::Agency as i32,
            kinds: vec![NotificationKind::Discharged as i32],
            channels: vec![NotificationChannel::Stream as i32],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let mut admin = NotificationsServiceClient::new(admin(&env, &channel));
    admin
        .set_notification_preferences(SetNotificationPreferencesRequest {
            scope: PreferenceScope::Agency as i32,
            agency_id: agency.into(),
            kinds: vec![
                NotificationKind::StatusChanged as i32,
                NotificationKind::Discharged as i32,
            ],
            channels: vec![NotificationChannel::Stream as i32],
            email_addresses: vec![],
        })
        .await
        .unwrap();
    let seen = notifications
        .get_notification_preferences(GetNotificationPreferencesRequest {
            scope: PreferenceScope::Agency as i32,
            agency_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap();
    assert!(!seen.defaults);
    assert_eq!(seen.channels, vec![NotificationChannel::Stream as i32]);

    publish_discharge(&env, agency, "", &uuid::Uuid::now_v7().to_string(), "").await;
    eventually(
        Duration::from_secs(30),
        "the second notification",
        || async { counts().await.0 == 2 },
    )
    .await;
    assert_eq!(
        counts().await,
        (2, 1),
        "no webhook delivery once webhooks are off"
    );

    // Taken off the stream: the notification is kept (and goes to the
    // webhook again) but the stream skips it.
    admin
        .set_notification_preferences(SetNotificationPreferencesRequest {
            scope: PreferenceScope::Agency as i32,
            agency_id: agency.into(),
            kinds: vec![NotificationKind::Discharged as i32],
            channels: vec![NotificationChannel::Webhook as i32],
            email_addresses: vec![],
        })
        .await
        .unwrap();
    publish_discharge(&env, agency, "", &uuid::Uuid::now_v7().to_string(), "").await;
    eventually(
        Duration::from_secs(30),
        "the third notification",
        || async { counts().await == (3, 2) },
    )
    .await;
    let mut stream = notifications
        .subscribe(SubscribeRequest { after_sequence: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    while let Ok(Ok(Some(message))) =
        tokio::time::timeout(Duration::from_secs(2), stream.message()).await
    {
        streamed.push(message.notification.unwrap().sequence);
    }
    assert_eq!(streamed, vec![1, 2], "the third is not streamed");
    database.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_identifying_field_of_a_referral_reaches_an_email() {
    let mail = MailServer::start().await;
    let env = env_with_mail(&mail).await;
    let platform = env.start_all().await;
    let channel = connect(&platform).await;
    let agency = "agency-markers";
    let marker = |field: &str| {
        format!(
            "Mk{field}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        )
    };
    let markers: Vec<(&str, String)> = [
        "GivenName",
        "FamilyName",
        "Address",
        "Phone",
        "SafeContact",
        "Reason",
        "Outcomes",
        "Risks",
        "CrimeOther",
        "VulnOther",
        "ProfRole",
        "ProfOrg",
        "ProfContact",
        "ReferrerName",
        "Withdrawal",
        "ReRefer",
    ]
    .into_iter()
    .map(|field| (field, marker(field)))
    .collect();
    let of = |field: &str| {
        markers
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, value)| value.clone())
            .unwrap()
    };
    let date_of_birth = "1931-02-17";

    let mut own = NotificationsServiceClient::new(referrer(&env, &channel, "ref-markers", agency));
    choose_email(
        &mut own,
        &[
            NotificationKind::StatusChanged,
            NotificationKind::Discharged,
        ],
        "markers@police.example",
    )
    .await;
    let mut admin = NotificationsServiceClient::new(admin(&env, &channel));
    admin
        .set_notification_preferences(SetNotificationPreferencesRequest {
            scope: PreferenceScope::Agency as i32,
            agency_id: agency.into(),
            kinds: vec![
                NotificationKind::StatusChanged as i32,
                NotificationKind::Discharged as i32,
            ],
            channels: vec![
                NotificationChannel::Stream as i32,
                NotificationChannel::Webhook as i32,
                NotificationChannel::Email as i32,
            ],
            email_addresses: vec!["team@police.example".into()],
        })
        .await
        .unwrap();

    let mut request = referral_request("Darlington");
    request.client = Some(ClientIdentity {
        given_name: of("GivenName"),
        family_name: of("FamilyName"),
        date_of_birth: date_of_birth.into(),
        address: of("Address"),
        phone: of("Phone"),
        safe_contact_instructions: of("SafeContact"),
        ..request.client.unwrap()
    });
    request.referrer = Some(Referrer {
        name: of("ReferrerName"),
        ..request.referrer.unwrap()
    });
    request.reason = of("Reason");
    request.desired_outcomes = of("Outcomes");
    request.known_risks = of("Risks");
    request.crime_other = of("CrimeOther");
    request.vulnerability_other = of("VulnOther");
    request.other_professionals = vec![OtherProfessional {
        role: of("ProfRole"),
        organisation: of("ProfOrg"),
        contact: of("ProfContact"),
    }];
    let mut intake =
        ReferralIntakeServiceClient::new(referrer(&env, &channel, "ref-markers", agency));
    let referral = submit(&mut intake, request).await;

    // RECEIVED and UNDER_ASSESSMENT, to both addresses.
    eventually(
        Duration::from_secs(30),
        "the first status e-mails",
        || async {
            mail.received_by("markers@police.example").len() >= 2
                && mail.received_by("team@police.example").len() >= 2
        },
    )
    .await;
    intake
        .withdraw_referral(WithdrawReferralRequest {
            referral_id: referral.referral_id.clone(),
            reason: of("Withdrawal"),
        })
        .await
        .unwrap();
    // A discharge whose free-text re-referral instructions hold a marker
    // too: the template says how to refer again, the event's text is not
    // rendered.
    publish_discharge(
        &env,
        agency,
        "ref-markers",
        &referral.referral_id,
        &of("ReRefer"),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the withdrawal and discharge e-mails",
        || async { mail.received_by("markers@police.example").len() >= 4 },
    )
    .await;

    let received = mail.received();
    assert!(received.len() >= 8, "{} e-mails", received.len());
    for mail in &received {
        assert!(
            mail.data.contains(&referral.referral_id),
            "each e-mail names the referral by its reference"
        );
        let folded = mail.data.to_lowercase();
        for (field, value) in &markers {
            assert!(
                !folded.contains(&value.to_lowercase()),
                "{field} reached an e-mail: {}",
                mail.data
            );
        }
        for date in [date_of_birth, "17/02/1931", "17 feb 1931", "1931-02"] {
            assert!(
                !folded.contains(date),
                "the date of birth reached an e-mail"
            );
        }
        assert!(!folded.contains("darlington"), "no area or address");
    }
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_template_texts_under_a_version_already_used_refuse_to_start() {
    let mail = MailServer::start().await;
    let mut env = env_with_mail(&mail).await;
    let accepted = |body: &str| {
        let mut text = toml::Table::new();
        text.insert("subject".into(), "Referral {referral_id} accepted".into());
        text.insert("body".into(), body.into());
        let mut templates = toml::Table::new();
        templates.insert("version".into(), "test-1".into());
        templates.insert("accepted".into(), toml::Value::Table(text));
        toml::Value::Table(templates)
    };
    env.settings.set(
        "notifications.templates",
        accepted("Accepted on {changed_on}."),
    );
    let platform = env.start(&[cpm::Target::NOTIFICATIONS]).await;
    platform.stop().await.unwrap();

    // The same texts again start; other texts under the same version do not.
    let platform = env.start(&[cpm::Target::NOTIFICATIONS]).await;
    platform.stop().await.unwrap();
    env.settings.set(
        "notifications.templates",
        accepted("Accepted, {changed_on}."),
    );
    let refused = cpm::Platform::start(env.settings.clone(), &[cpm::Target::NOTIFICATIONS])
        .await
        .err()
        .expect("changed texts under version test-1 refuse to start");
    assert!(
        format!("{refused:#}").contains("version \"test-1\" was used before"),
        "{refused:#}"
    );
    // An unknown placeholder is refused before anything starts.
    env.settings
        .set("notifications.templates", accepted("Dear {client_name}"));
    let invalid = env.settings.validate().unwrap_err();
    assert!(
        invalid
            .to_string()
            .contains("notifications.templates.accepted.body"),
        "{invalid}"
    );
    env.cleanup().await;
}

/// An area's staff alerts — a mentor needing attention, an urgent concern —
/// are e-mailed to the addresses an admin set for the area's coordinators,
/// once each, with IDs and categories only; an area without addresses gets
/// none, and only admins set them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_areas_staff_alerts_are_emailed_to_its_coordinators() {
    use cpm_proto::v1::{
        ConcernCategory, ConcernRaised, ConcernUrgency, GetStaffAlertRecipientsRequest,
        MentorAlertKind, MentorAlertRaised, SetStaffAlertRecipientsRequest,
    };
    let mail = MailServer::start().await;
    let env = env_with_mail(&mail).await;
    let platform = env.start(&[cpm::Target::NOTIFICATIONS]).await;
    let channel = connect(&platform).await;
    let mut admin = NotificationsServiceClient::new(admin(&env, &channel));

    let refused = admin
        .set_staff_alert_recipients(SetStaffAlertRecipientsRequest {
            area: "Atlantis".into(),
            email_addresses: vec!["not an address".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&refused),
        vec!["area", "email_addresses[0]"]
    );
    let mut referrer_client =
        NotificationsServiceClient::new(referrer(&env, &channel, "ref-staff", "agency-staff"));
    let denied = referrer_client
        .set_staff_alert_recipients(SetStaffAlertRecipientsRequest {
            area: "Darlington".into(),
            email_addresses: vec!["x@police.example".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let set = admin
        .set_staff_alert_recipients(SetStaffAlertRecipientsRequest {
            area: "darlington".into(),
            email_addresses: vec!["coordinators@darlington.example".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.area, "Darlington", "the registered spelling");
    let mut darlington =
        NotificationsServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    let seen = darlington
        .get_staff_alert_recipients(GetStaffAlertRecipientsRequest {
            area: "Darlington".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.email_addresses, ["coordinators@darlington.example"]);
    let elsewhere = darlington
        .get_staff_alert_recipients(GetStaffAlertRecipientsRequest {
            area: "Stockton".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(elsewhere.code(), tonic::Code::NotFound);

    let mentor_id = uuid::Uuid::now_v7().to_string();
    for area in ["Darlington", "Stockton"] {
        let alert = MentorAlertRaised {
            alert_id: uuid::Uuid::now_v7().to_string(),
            mentor_id: mentor_id.clone(),
            area: area.into(),
            kind: MentorAlertKind::CheckInOverdue as i32,
            since: "2026-08-01".into(),
            raised_at: Some(cpm_runtime::grpc::values::timestamp(chrono::Utc::now())),
        };
        let envelope = cpm_runtime::bus::outbox::envelope("mentor-matching", &alert);
        publish_raw(&env, MentorAlertRaised::TYPE, &envelope.encode_to_vec()).await;
    }
    let referral_id = uuid::Uuid::now_v7().to_string();
    let concern = ConcernRaised {
        concern_id: uuid::Uuid::now_v7().to_string(),
        referral_id: referral_id.clone(),
        case_file_id: uuid::Uuid::now_v7().to_string(),
        area: "Darlington".into(),
        category: ConcernCategory::Safeguarding as i32,
        urgency: ConcernUrgency::Urgent as i32,
        raised_at: Some(cpm_runtime::grpc::values::timestamp(chrono::Utc::now())),
    };
    let envelope = cpm_runtime::bus::outbox::envelope("contact-logging", &concern);
    publish_raw(&env, ConcernRaised::TYPE, &envelope.encode_to_vec()).await;

    eventually(
        Duration::from_secs(30),
        "the mentor alert and the urgent concern are e-mailed",
        || async { mail.received_by("coordinators@darlington.example").len() == 2 },
    )
    .await;
    let received = mail.received_by("coordinators@darlington.example");
    let texts: Vec<&str> = received.iter().map(|mail| mail.data.as_str()).collect();
    assert!(
        texts.iter().any(|text| text.contains(&mentor_id)),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|text| text.contains(&referral_id)),
        "{texts:?}"
    );
    // Stockton set no addresses: its alert is only listed, never e-mailed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mail.received().len(), 2, "{:?}", mail.received());
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// E-mail crosses networks protected: STARTTLS (required, never
/// opportunistic) and SMTPS, each checking the server's certificate, here
/// against the CA the operator names in `ca_file`. A server that does not
/// offer STARTTLS, or whose certificate no trusted CA signed, gets nothing:
/// no plain-text copy, and the failed attempt is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_mail_goes_out_over_starttls_or_smtps_checked_against_the_configured_ca_and_never_in_clear()
 {
    let pki = TestPki::create();
    let acceptor = ServerTls::acceptor(&pki);
    let cases = [
        (
            "starttls",
            ServerTls::Starttls(acceptor.clone()),
            true,
            true,
        ),
        ("tls", ServerTls::Implicit(acceptor.clone()), true, true),
        // STARTTLS is not offered: no downgrade to plain text.
        ("starttls", ServerTls::Plain, true, false),
        // The certificate is not signed by anything trusted.
        ("starttls", ServerTls::Starttls(acceptor), false, false),
    ];
    for (mode, server_tls, trust_ca, delivered) in cases {
        let case = format!(
            "tls = {mode}, trusting the CA: {trust_ca}, server offers TLS: {}",
            !matches!(server_tls, ServerTls::Plain)
        );
        let mail = MailServer::start_with(server_tls).await;
        let env = env_with_smtp(&mail, |smtp| {
            smtp.insert("host".into(), "localhost".into());
            smtp.insert("tls".into(), mode.into());
            if trust_ca {
                smtp.insert("ca_file".into(), pki.path("ca.pem").into());
            }
        })
        .await;
        let platform = env.start(&[cpm::Target::NOTIFICATIONS]).await;
        let channel = connect(&platform).await;
        let agency = "agency-smtp-tls";
        let mut chose =
            NotificationsServiceClient::new(referrer(&env, &channel, "ref-tls", agency));
        choose_email(
            &mut chose,
            &[NotificationKind::Discharged],
            "tls@police.example",
        )
        .await;
        let referral_id = uuid::Uuid::now_v7().to_string();
        publish_discharge(&env, agency, "ref-tls", &referral_id, "Refer again").await;

        let database = env.database().await;
        if delivered {
            eventually(Duration::from_secs(30), &case, || async {
                !mail.received_by("tls@police.example").is_empty()
            })
            .await;
            let received = mail.received_by("tls@police.example");
            assert_eq!(received.len(), 1, "{case}");
            assert!(received[0].data.contains(&referral_id), "{case}");
            assert_eq!(mail.encrypted_conversations(), 1, "{case}");
        } else {
            let attempt = || async {
                sqlx::query_as::<_, (i32, Option<String>)>(
                    "SELECT attempts, last_reply FROM notifications.email_delivery",
                )
                .fetch_optional(&database)
                .await
                .unwrap()
                .unwrap_or_default()
            };
            eventually(Duration::from_secs(30), &case, || async {
                attempt().await.0 >= 1
            })
            .await;
            let reply = attempt().await.1.unwrap_or_default();
            assert!(!reply.is_empty(), "{case}: the failure is recorded");
            assert!(mail.received().is_empty(), "{case}: nothing sent in clear");
            assert_eq!(mail.encrypted_conversations(), 0, "{case}");
        }
        database.close().await;
        platform.stop().await.unwrap();
        env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_notification_is_emailed_once_across_a_platform_restart() {
    let mail = MailServer::start().await;
    let env = env_with_mail(&mail).await;
    let agency = "agency-email-restart";
    let address = "restart@police.example";
    let platform = env.start(&[cpm::Target::NOTIFICATIONS]).await;
    let channel = connect(&platform).await;
    let mut client =
        NotificationsServiceClient::new(referrer(&env, &channel, "ref-restart", agency));
    choose_email(&mut client, &[NotificationKind::Discharged], address).await;
    let first = uuid::Uuid::now_v7().to_string();
    publish_discharge(&env, agency, "ref-restart", &first, "Call us").await;
    eventually(
        Duration::from_secs(30),
        "the first e-mail arrives",
        || async { mail.received_by(address).len() == 1 },
    )
    .await;
    drop((client, channel));
    platform.stop().await.unwrap();

    // The same database: the delivered e-mail is not sent again, the next is.
    let platform = env.start(&[cpm::Target::NOTIFICATIONS]).await;
    let second = uuid::Uuid::now_v7().to_string();
    publish_discharge(&env, agency, "ref-restart", &second, "Call us").await;
    eventually(
        Duration::from_secs(30),
        "the second e-mail arrives",
        || async { mail.received_by(address).len() >= 2 },
    )
    .await;
    // The worker polls every 200 ms: a repeat would have come by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = mail.received_by(address);
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(received[0].data.contains(&first) && !received[0].data.contains(&second));
    assert!(received[1].data.contains(&second));
    platform.stop().await.unwrap();
    env.cleanup().await;
}
