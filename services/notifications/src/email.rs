//! E-mail over SMTP (`[notifications.smtp]`). The notification writer
//! renders each e-mail from the templates when it writes the notification
//! and queues one `email_delivery` per recipient in the same transaction
//! ([`queue`]); the e-mail worker sends them outside any transaction that
//! writes notifications. A worker claims due e-mails by pushing their next
//! attempt past a lease, sends, then records the SMTP server's reply; one
//! that stopped mid-send is sent again once its lease ends (delivery is at
//! least once). A temporary failure is retried with back-off, a permanent
//! one (5xx) or the last attempt marks the e-mail failed. The first e-mail
//! of a discharge the server accepts is announced as `feedback.delivered`
//! (channel EMAIL), as the first confirmed webhook delivery is.

use std::time::Duration;

use anyhow::Context as _;
use cpm_proto::v1::{FeedbackDelivered, NotificationKind};
use cpm_runtime::bus::{ServiceHandle, outbox};
use cpm_runtime::config::Secret;
use cpm_runtime::grpc::values::timestamp;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tokio::sync::watch;
use uuid::Uuid;

use crate::templates::Rendered;

/// How the connection to the SMTP server is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP (a relay on the same host or network; refused in production).
    None,
    /// Upgrade with STARTTLS, required.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// `[notifications.smtp]`. E-mail is off while `host` is empty: no e-mail
/// is queued and the worker does not run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// A PEM file of certificates to trust besides the built-in web roots,
    /// e.g. the CA of an internal relay. Empty: the built-in roots only.
    pub ca_file: String,
    /// Empty: no authentication.
    pub username: String,
    pub password: Secret,
    /// The sender, e.g. `CPM programme <cpm-notifications@programme.example>`.
    pub from: String,
    /// How long one SMTP conversation may take.
    pub timeout_secs: u64,
    /// Attempts before an e-mail is marked failed.
    pub max_attempts: i32,
    /// How often the worker looks for due e-mails without a wake-up.
    pub poll_interval_ms: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 587,
            tls: SmtpTls::Starttls,
            ca_file: String::new(),
            username: String::new(),
            password: Secret::default(),
            from: "CPM notifications <cpm-notifications@localhost.localdomain>".to_owned(),
            timeout_secs: 30,
            max_attempts: 8,
            poll_interval_ms: 1000,
        }
    }
}

impl SmtpConfig {
    pub fn enabled(&self) -> bool {
        !self.host.trim().is_empty()
    }

    /// Rules beyond the types: the key at fault and the problem.
    pub fn check(&self, production: bool) -> Result<(), (String, String)> {
        let key = |field: &str| format!("notifications.smtp.{field}");
        if !self.enabled() {
            return Ok(());
        }
        if self.port == 0 {
            return Err((key("port"), "must be a port number".to_owned()));
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err((
                key("from"),
                "must be an address like `CPM <cpm@programme.example>`".to_owned(),
            ));
        }
        if production && self.tls == SmtpTls::None {
            return Err((
                key("tls"),
                "must be starttls or tls in production: e-mail crosses networks".to_owned(),
            ));
        }
        if !self.ca_file.trim().is_empty() && self.tls == SmtpTls::None {
            return Err((
                key("ca_file"),
                "needs tls = starttls or tls: plain SMTP checks no certificate".to_owned(),
            ));
        }
        if !self.username.is_empty() && self.password.expose().is_empty() {
            return Err((key("password"), "is required with a username".to_owned()));
        }
        if self.max_attempts < 1 || self.timeout_secs == 0 || self.poll_interval_ms == 0 {
            return Err((
                key("max_attempts"),
                "max_attempts, timeout_secs and poll_interval_ms must be positive".to_owned(),
            ));
        }
        Ok(())
    }

    fn transport(&self) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
        let host = self.host.trim();
        // No fallback to plain text: STARTTLS is required, not opportunistic.
        let tls = match self.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(self.tls_parameters(host)?),
            SmtpTls::Tls => Tls::Wrapper(self.tls_parameters(host)?),
        };
        let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).tls(tls);
        let mut builder = builder
            .port(self.port)
            .timeout(Some(Duration::from_secs(self.timeout_secs)));
        if !self.username.is_empty() {
            builder = builder.credentials(Credentials::new(
                self.username.clone(),
                self.password.expose().to_owned(),
            ));
        }
        Ok(builder.build())
    }
}

impl SmtpConfig {
    /// The server's name checked against `host`, trusting `ca_file` too.
    fn tls_parameters(&self, host: &str) -> anyhow::Result<TlsParameters> {
        let mut builder = TlsParameters::builder(host.to_owned());
        let ca_file = self.ca_file.trim();
        if !ca_file.is_empty() {
            let pem = std::fs::read(ca_file)
                .with_context(|| format!("reading notifications.smtp.ca_file {ca_file}"))?;
            // An empty or mistaken file would parse as no certificates at all.
            let holds_one = String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----");
            let roots = Certificate::from_pem(&pem)
                .ok()
                .filter(|_| holds_one)
                .with_context(|| {
                    format!("notifications.smtp.ca_file {ca_file} holds no PEM certificate")
                })?;
            builder = builder.add_root_certificate(roots);
        }
        Ok(builder.build_rustls()?)
    }
}

/// The template version an e-mail was rendered with, as a header, so a
/// reader (or their mail filter) can tell which texts they received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateVersionHeader(pub String);

impl Header for TemplateVersionHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-CPM-Template-Version")
    }

    fn parse(value: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(value.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// What an e-mail is about: a notification to an agency, or a staff alert
/// to an area's coordinators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum About {
    Notification(Uuid),
    StaffAlert(Uuid),
}

/// Queues `rendered` to each of `recipients`, once per recipient however
/// often the event behind it comes.
pub async fn queue(
    connection: &mut PgConnection,
    about: About,
    rendered: &Rendered,
    recipients: &[String],
) -> Result<u64, sqlx::Error> {
    let (notification_id, staff_alert_id) = match about {
        About::Notification(id) => (Some(id), None),
        About::StaffAlert(id) => (None, Some(id)),
    };
    let mut queued = 0;
    for recipient in recipients {
        queued += sqlx::query!(
            "INSERT INTO notifications.email_delivery (email_delivery_id, notification_id, \
               staff_alert_id, recipient, subject, body, template_version, template, state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1) \
             ON CONFLICT DO NOTHING",
            Uuid::now_v7(),
            notification_id,
            staff_alert_id,
            recipient,
            &rendered.subject,
            &rendered.body,
            &rendered.version,
            rendered.purpose.key(),
        )
        .execute(&mut *connection)
        .await?
        .rows_affected();
    }
    Ok(queued)
}

/// Records the configured templates under their version, or refuses when
/// that version was used before with other texts.
pub async fn register_templates(
    connection: &mut PgConnection,
    config: &crate::templates::TemplatesConfig,
    version: &str,
) -> anyhow::Result<()> {
    let texts = config.texts_json();
    sqlx::query!(
        "INSERT INTO notifications.template_version (version, texts) VALUES ($1, $2) \
         ON CONFLICT (version) DO NOTHING",
        version,
        texts
    )
    .execute(&mut *connection)
    .await?;
    let recorded = sqlx::query_scalar!(
        "SELECT texts FROM notifications.template_version WHERE version = $1",
        version
    )
    .fetch_one(connection)
    .await?;
    let recorded: crate::templates::TemplatesConfig = serde_json::from_str(&recorded)?;
    if &recorded != config {
        anyhow::bail!(
            "notifications.templates: version {version:?} was used before with other texts; \
             give the changed texts a new version"
        );
    }
    Ok(())
}

/// An e-mail claimed for sending.
#[derive(Clone, Debug)]
struct ClaimedEmail {
    email_delivery_id: Uuid,
    /// `None` for a staff alert's e-mail.
    notification_id: Option<Uuid>,
    recipient: String,
    subject: String,
    body: String,
    template_version: String,
    attempts: i32,
    kind: Option<i32>,
    referral_id: Option<Uuid>,
    agency_id: Option<String>,
}

/// The lease a claimed e-mail holds: no other worker sends it meanwhile.
const LEASE_SECS: f64 = 300.0;

async fn claim_due(
    connection: &mut PgConnection,
    limit: i64,
) -> Result<Vec<ClaimedEmail>, sqlx::Error> {
    sqlx::query_as!(
        ClaimedEmail,
        "WITH due AS ( \
           SELECT email_delivery_id FROM notifications.email_delivery \
           WHERE state = 1 AND next_attempt_at <= now() \
           ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         UPDATE notifications.email_delivery e \
           SET next_attempt_at = now() + make_interval(secs => $2) \
         FROM due \
         WHERE e.email_delivery_id = due.email_delivery_id \
         RETURNING e.email_delivery_id, e.notification_id, e.recipient, e.subject, e.body, \
           e.template_version, e.attempts, \
           (SELECT kind FROM notifications.notification n \
            WHERE n.notification_id = e.notification_id) AS kind, \
           (SELECT referral_id FROM notifications.notification n \
            WHERE n.notification_id = e.notification_id) AS referral_id, \
           (SELECT agency_id FROM notifications.notification n \
            WHERE n.notification_id = e.notification_id) AS agency_id",
        limit,
        LEASE_SECS
    )
    .fetch_all(connection)
    .await
}

/// Sends due e-mails.
pub struct EmailWorker {
    handle: ServiceHandle,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: lettre::message::Mailbox,
    max_attempts: i32,
    poll_interval: Duration,
}

impl EmailWorker {
    pub fn new(handle: ServiceHandle, config: &SmtpConfig) -> anyhow::Result<Self> {
        Ok(Self {
            handle,
            transport: config.transport()?,
            from: config.from.parse()?,
            max_attempts: config.max_attempts,
            poll_interval: Duration::from_millis(config.poll_interval_ms),
        })
    }

    /// Sends as e-mails are queued (woken by `wake`, polling in case a
    /// wake-up was missed) until shutdown; a failed batch is retried.
    pub async fn run(
        self: std::sync::Arc<Self>,
        wake: watch::Receiver<u64>,
        shutdown: cpm_runtime::Shutdown,
    ) {
        cpm_runtime::periodic::drain_on_wake("e-mail", wake, self.poll_interval, shutdown, || {
            self.send_due_batch()
        })
        .await;
    }

    fn message(&self, email: &ClaimedEmail) -> anyhow::Result<Message> {
        Ok(Message::builder()
            .from(self.from.clone())
            .to(email.recipient.parse()?)
            .subject(email.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .header(TemplateVersionHeader(email.template_version.clone()))
            .body(email.body.clone())?)
    }

    /// Sends one batch of due e-mails; returns how many were attempted.
    pub async fn send_due_batch(&self) -> anyhow::Result<usize> {
        let claimed = {
            let mut connection = self.handle.pool().acquire().await?;
            claim_due(&mut connection, 16).await?
        };
        for email in &claimed {
            let started = std::time::Instant::now();
            let outcome = match self.message(email) {
                Ok(message) => match self.transport.send(message).await {
                    Ok(response) => Ok(format!(
                        "{} {}",
                        response.code(),
                        response.message().collect::<Vec<_>>().join(" ")
                    )),
                    Err(error) => Err((error.is_permanent(), error.to_string())),
                },
                Err(error) => Err((true, format!("message could not be built: {error}"))),
            };
            metrics::counter!(
                "cpm_email_deliveries_total",
                "outcome" => if outcome.is_ok() { "sent" } else { "failed" },
            )
            .increment(1);
            metrics::histogram!("cpm_email_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            match outcome {
                Ok(reply) => self.record_sent(email, &reply).await?,
                Err((permanent, error)) => {
                    tracing::warn!(email_delivery_id = %email.email_delivery_id, %error, "e-mail attempt failed");
                    self.record_failed(email, &error, permanent).await?;
                }
            }
        }
        Ok(claimed.len())
    }

    async fn record_sent(&self, email: &ClaimedEmail, reply: &str) -> anyhow::Result<()> {
        let mut transaction = self.handle.begin().await?;
        sqlx::query!(
            "UPDATE notifications.email_delivery SET state = 2, attempts = attempts + 1, \
               last_attempt_at = now(), last_reply = $2 WHERE email_delivery_id = $1",
            email.email_delivery_id,
            reply
        )
        .execute(&mut *transaction)
        .await?;
        let first = match email.notification_id {
            Some(notification_id) => {
                crate::db::mark_first_delivered(&mut transaction, notification_id).await?
            }
            None => false,
        };
        if first
            && email.kind == Some(NotificationKind::Discharged as i32)
            && let (Some(referral_id), Some(agency_id)) = (email.referral_id, &email.agency_id)
        {
            outbox::enqueue(
                &mut transaction,
                crate::NAME,
                &FeedbackDelivered {
                    referral_id: referral_id.to_string(),
                    agency_id: agency_id.clone(),
                    delivered_at: Some(timestamp(chrono::Utc::now())),
                    channel: "EMAIL".into(),
                },
            )
            .await?;
        }
        transaction.commit().await?;
        tracing::info!(email_delivery_id = %email.email_delivery_id, attempts = email.attempts + 1, "e-mail sent");
        Ok(())
    }

    async fn record_failed(
        &self,
        email: &ClaimedEmail,
        error: &str,
        permanent: bool,
    ) -> anyhow::Result<()> {
        let mut connection = self.handle.pool().acquire().await?;
        sqlx::query!(
            "UPDATE notifications.email_delivery \
             SET attempts = attempts + 1, last_attempt_at = now(), last_reply = $2, \
               state = CASE WHEN $4 OR attempts + 1 >= $3 THEN 3 ELSE 1 END, \
               next_attempt_at = now() + least(power(2, attempts), 300) * interval '1 second' \
             WHERE email_delivery_id = $1",
            email.email_delivery_id,
            error,
            self.max_attempts,
            permanent
        )
        .execute(&mut *connection)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_settings_are_checked() {
        assert!(SmtpConfig::default().check(true).is_ok(), "off is fine");
        let on = SmtpConfig {
            host: "smtp.programme.example".into(),
            ..Default::default()
        };
        assert!(on.check(true).is_ok());
        let plain = SmtpConfig {
            tls: SmtpTls::None,
            ..on.clone()
        };
        assert!(plain.check(false).is_ok());
        assert_eq!(plain.check(true).unwrap_err().0, "notifications.smtp.tls");
        let bad_from = SmtpConfig {
            from: "not an address".into(),
            ..on.clone()
        };
        assert_eq!(
            bad_from.check(false).unwrap_err().0,
            "notifications.smtp.from"
        );
        let ca_in_clear = SmtpConfig {
            ca_file: "/etc/cpm/relay-ca.pem".into(),
            ..plain.clone()
        };
        assert_eq!(
            ca_in_clear.check(false).unwrap_err().0,
            "notifications.smtp.ca_file"
        );
        let no_password = SmtpConfig {
            username: "cpm".into(),
            ..on
        };
        assert_eq!(
            no_password.check(false).unwrap_err().0,
            "notifications.smtp.password"
        );
    }

    #[test]
    fn smtp_settings_parse_with_tls_modes_by_name() {
        let config: SmtpConfig =
            toml::from_str("host = \"mail\"\nport = 465\ntls = \"tls\"\npassword = \"pw\"\n")
                .unwrap();
        assert_eq!(config.tls, SmtpTls::Tls);
        assert_eq!(config.port, 465);
        assert!(toml::from_str::<SmtpConfig>("tls = \"ssl\"").is_err());
    }

    #[test]
    fn a_ca_file_that_cannot_be_read_or_holds_no_certificate_stops_the_worker_clearly() {
        let missing = SmtpConfig {
            host: "smtp.programme.example".into(),
            ca_file: "/nonexistent/relay-ca.pem".into(),
            ..Default::default()
        };
        let error = format!("{:#}", missing.transport().unwrap_err());
        assert!(
            error.contains("reading notifications.smtp.ca_file"),
            "{error}"
        );
        let file = std::env::temp_dir().join(format!("cpm-ca-{}.pem", Uuid::new_v4()));
        std::fs::write(&file, "not a certificate").unwrap();
        let garbage = SmtpConfig {
            ca_file: file.display().to_string(),
            ..missing
        };
        let error = garbage.transport().map(drop).unwrap_err();
        let _ = std::fs::remove_file(&file);
        assert!(
            format!("{error:#}").contains("holds no PEM certificate"),
            "{error:#}"
        );
    }
}
