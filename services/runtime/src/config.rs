//! Layered configuration: built-in defaults, then a TOML file (`CPM_CONFIG`
//! or `./cpm.toml`), then environment variables `CPM__SECTION__KEY`.
//!
//! Each component owns its section; the `cpm` binary embeds them in one root.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Where the platform runs. Development is for a laptop: generated keys,
/// loopback only. Production refuses what is only safe there: development
/// keys, shared-secret tokens, the development issuer, default or missing
/// broker credentials, and plaintext gRPC, AMQP and PostgreSQL (the last
/// three each unless [`AllowConfig`] says so by name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    #[default]
    Development,
    Production,
}

/// A secret string: held in a `secrecy::SecretString` (zeroed when
/// dropped, never in `Debug` output or logs) and read only through
/// [`Secret::expose`]. It serialises as its value, for the configuration
/// files that tests and tools write.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(secrecy::SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(secrecy::SecretString::from(value.into()))
    }
    pub fn expose(&self) -> &str {
        use secrecy::ExposeSecret as _;
        self.0.expose_secret()
    }
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_empty() {
            "\"\""
        } else {
            "\"[redacted]\""
        })
    }
}

/// The settings every service shares.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PlatformConfig {
    pub profile: Profile,
    pub grpc: GrpcConfig,
    pub database: DatabaseConfig,
    pub amqp: AmqpConfig,
    pub outbox: OutboxConfig,
    pub auth: AuthConfig,
    pub crypto: CryptoConfig,
    pub telemetry: TelemetryConfig,
    pub supervision: crate::supervisor::SupervisionConfig,
    pub dev: DevConfig,
    pub allow: AllowConfig,
    pub inbox: InboxConfig,
    pub programme: ProgrammeConfig,
}

/// What the programme is made of, as data: the areas it works in.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ProgrammeConfig {
    /// The programme's areas. Every area a request names (a referral's, a
    /// mentor's, a queue's) must be one of these, so a look-alike spelling
    /// cannot open a queue nobody sees; coordinators' tokens name some of them.
    pub areas: Vec<String>,
}

impl Default for ProgrammeConfig {
    fn default() -> Self {
        Self {
            areas: ["Darlington", "South Durham", "East Durham", "North Durham"]
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

/// Longest area name.
const MAX_AREA_CHARS: usize = 100;

impl ProgrammeConfig {
    /// The registered spelling of `area` (surrounding spaces and letter
    /// case aside), or `None` when the programme has no such area.
    pub fn area(&self, area: &str) -> Option<&str> {
        let area = area.trim();
        self.areas
            .iter()
            .find(|known| known.eq_ignore_ascii_case(area))
            .map(String::as_str)
    }

    /// Checks a required area field of a request; returns its registered spelling.
    pub fn check_area(
        &self,
        field: &str,
        area: &str,
        violations: &mut crate::grpc::FieldViolations,
    ) -> Option<String> {
        if area.trim().is_empty() {
            violations.add(field, "is required");
            return None;
        }
        let known = self.area(area);
        if known.is_none() {
            violations.add(
                field,
                format!(
                    "is not one of the programme's areas: {}",
                    self.areas.join(", ")
                ),
            );
        }
        known.map(str::to_owned)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.areas.is_empty() {
            return Err(ConfigError::invalid(
                "programme.areas",
                "name at least one area",
            ));
        }
        for (n, area) in self.areas.iter().enumerate() {
            if area.trim().is_empty()
                || area.trim() != area
                || area.chars().count() > MAX_AREA_CHARS
                || area.chars().any(crate::grpc::values::is_hidden)
            {
                return Err(ConfigError::invalid(
                    "programme.areas",
                    format!(
                        "`{}` is not an area name: 1 to {MAX_AREA_CHARS} visible characters without surrounding spaces",
                        area.escape_debug()
                    ),
                ));
            }
            if self.areas[..n]
                .iter()
                .any(|earlier| earlier.eq_ignore_ascii_case(area))
            {
                return Err(ConfigError::invalid(
                    "programme.areas",
                    format!("`{area}` is named twice"),
                ));
            }
        }
        Ok(())
    }
}

/// How long consumers remember the events they applied.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct InboxConfig {
    /// Inbox rows older than this are deleted: far beyond any redelivery.
    pub retention_days: u32,
    pub prune_interval_secs: u64,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            retention_days: 30,
            prune_interval_secs: 3600,
        }
    }
}

/// Exceptions to production's refusals, each named, for a deployment that
/// knowingly accepts the risk (say, a broker on the same host). All off.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AllowConfig {
    /// Verify HS256 tokens signed with `auth.hs256_secret`: anyone holding
    /// the secret can mint any token, an admin's included.
    pub shared_secret_tokens: bool,
    /// A plain `amqp://` broker URL: events cross the network unencrypted.
    pub plaintext_amqp: bool,
    /// A PostgreSQL URL without `sslmode=require` (or `verify-ca`,
    /// `verify-full`): queries and ciphertext cross the network unencrypted.
    pub plaintext_database: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct GrpcConfig {
    /// The one listener of `--target all` (and of a single target without its own address).
    pub listen: String,
    /// How long in-flight calls may take to finish at shutdown.
    pub shutdown_timeout_secs: u64,
    /// PEM files; both set turns TLS on.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// A CA certificate (PEM): when set with TLS, every client must present a
    /// certificate it signed (mutual TLS).
    pub tls_client_ca_file: String,
    /// A plaintext listener serving only grpc.health.v1, for Kubernetes
    /// probes when the main port requires client certificates. Empty: none.
    pub health_listen: String,
    /// Who may use server reflection (grpcurl, Postman): `open` to anyone,
    /// `authenticated` to any valid token, `off`. Unset: open in
    /// development, authenticated in production, where the API's shape is
    /// no business of an anonymous caller.
    pub reflection: Option<ReflectionAccess>,
    /// The largest request message any service decodes, in bytes: a
    /// referral with every field full is well under it, and nothing larger
    /// is read into memory.
    pub max_request_bytes: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            // Loopback unless told otherwise: a development server's keys
            // and auto-registered agencies are not for a network.
            listen: "127.0.0.1:50051".into(),
            shutdown_timeout_secs: 10,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_client_ca_file: String::new(),
            health_listen: String::new(),
            max_request_bytes: 256 * 1024,
            reflection: None,
        }
    }
}

/// Who may use server reflection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReflectionAccess {
    Open,
    Authenticated,
    Off,
}

impl GrpcConfig {
    /// Reflection's access under `profile`, when not set explicitly.
    pub fn reflection_under(&self, profile: Profile) -> ReflectionAccess {
        self.reflection.unwrap_or(match profile {
            Profile::Development => ReflectionAccess::Open,
            Profile::Production => ReflectionAccess::Authenticated,
        })
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
    pub fn tls_enabled(&self) -> bool {
        !self.tls_cert_file.is_empty() && !self.tls_key_file.is_empty()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    pub url: Secret,
    /// Per service pool.
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
    /// The longest one statement may run (PostgreSQL `statement_timeout`),
    /// so no request can hold a connection and its locks for long. 0: none.
    pub statement_timeout_ms: u64,
    /// Each service works as a role of its own (`cpm_<schema>`) that can
    /// reach only its own schema: migrations create it and grant it its
    /// tables; the service's connections `SET ROLE` to it. The user in
    /// `database.url` must be a superuser or a member of those roles.
    pub service_roles: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            // `postgres` is the one role every stock PostgreSQL install has.
            url: Secret::new("postgres://postgres@localhost/cpm"),
            max_connections: 8,
            acquire_timeout_secs: 5,
            statement_timeout_ms: 30_000,
            service_roles: true,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct AmqpConfig {
    pub url: Secret,
    /// Prefix of every exchange and queue name, so that several platforms
    /// (or tests) can share one broker.
    pub namespace: String,
    /// Unacknowledged deliveries a consumer holds at once.
    pub prefetch: u16,
    /// Deliveries of one message before it goes to the dead-letter queue.
    pub delivery_limit: u32,
    /// How long one connection attempt may take: a black-holed broker
    /// otherwise holds an attempt for minutes.
    pub connect_timeout_secs: u64,
    /// The AMQP heartbeat asked of the broker (unless the URL sets
    /// `heartbeat`): a silent broker is noticed after about twice this.
    pub heartbeat_secs: u16,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("amqp://guest:guest@localhost:5672/%2f"),
            namespace: "cpm".into(),
            prefetch: 32,
            delivery_limit: 5,
            connect_timeout_secs: 5,
            heartbeat_secs: 10,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboxConfig {
    /// The relay polls this often even without a NOTIFY wake-up.
    pub poll_interval_ms: u64,
    pub batch_size: u32,
    /// How long a publish waits for the broker's confirms.
    pub confirm_timeout_secs: u64,
    /// After a wake-up, how long the relay waits for more commits so that
    /// one batch (one confirm round, one delete) carries them all.
    pub linger_ms: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 1000,
            batch_size: 256,
            confirm_timeout_secs: 15,
            linger_ms: 5,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    /// Shared HS256 key (base64). Empty in development: generated in `dev.keys_file`.
    pub hs256_secret: Secret,
    /// An external issuer's RS256 public key (PEM file); when set, tokens are
    /// verified with it instead of the shared key.
    pub rs256_public_key_file: String,
    /// An external issuer's JSON Web Key Set (file): each token's `kid`
    /// header picks its key, so the issuer can roll keys with an overlap.
    /// Takes precedence over the other keys.
    pub jwks_file: String,
    /// The longest a token may live (`exp - iat`), so a leaked token is
    /// useful for a bounded time whatever its issuer wrote.
    pub max_token_lifetime_secs: u64,
    /// Development only: let referrers, agencies and mentors nobody
    /// registered call (a suspended or departed one is refused all the
    /// same). Production always refuses them. See [`crate::standing`].
    pub admit_unregistered: bool,
    /// How long a service trusts a standing it read (seconds): a suspension
    /// reaches every call within this time of its event being applied.
    pub standing_cache_secs: u64,
}

impl AuthConfig {
    /// Whether unregistered principals may call under `profile`.
    pub fn admits_unregistered(&self, profile: Profile) -> bool {
        self.admit_unregistered && profile == Profile::Development
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "cpm-dev".into(),
            audience: "cpm".into(),
            hs256_secret: Secret::default(),
            rs256_public_key_file: String::new(),
            jwks_file: String::new(),
            max_token_lifetime_secs: 24 * 60 * 60,
            admit_unregistered: true,
            standing_cache_secs: 5,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CryptoConfig {
    /// 32 bytes, base64: wraps every client's data key. Empty in development:
    /// generated in `dev.keys_file`.
    pub master_key: Secret,
    /// Master keys being rotated out: still unwrap data keys until
    /// `cpm rewrap-keys` has re-wrapped them all with `master_key`.
    /// In the environment, a comma-separated list.
    pub previous_master_keys: Vec<Secret>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    #[default]
    Auto,
    Pretty,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// `RUST_LOG`-style filter used when `RUST_LOG` is unset.
    pub log_filter: String,
    /// OTLP gRPC endpoint, e.g. `http://otel-collector:4317`; empty turns export off.
    pub otlp_endpoint: String,
    /// Where to serve Prometheus metrics (`GET /metrics`), e.g.
    /// `0.0.0.0:9464`; empty serves none.
    pub metrics_listen: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Auto,
            log_filter: "info,sqlx=warn,lapin=warn,h2=warn,tower=warn".into(),
            otlp_endpoint: String::new(),
            metrics_listen: String::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct DevConfig {
    /// Where development mode keeps its generated keys.
    pub keys_file: PathBuf,
    /// Whether requests may name the time they act at in the
    /// `cpm-simulated-time` header, so `cpm simulate` can replay years in a
    /// minute ([`crate::clock`]). Development only: production refuses it.
    pub simulated_clock: bool,
}

impl Default for DevConfig {
    fn default() -> Self {
        Self {
            keys_file: PathBuf::from(".cpm/dev-keys.toml"),
            simulated_clock: false,
        }
    }
}

/// A configuration problem, naming the key and the variable that sets it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration key `{key}` (env {env}): {problem}")]
    Invalid {
        key: String,
        env: String,
        problem: String,
    },
    #[error("configuration: {0}")]
    Load(String),
}

impl ConfigError {
    pub fn invalid(key: &str, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            env: env_var_for(key),
            problem: problem.into(),
        }
    }
}

/// The environment variable that sets a dotted key: `database.url` → `CPM__DATABASE__URL`.
pub fn env_var_for(key: &str) -> String {
    format!("CPM__{}", key.replace('.', "__").to_uppercase())
}

/// The configuration file to read: `CPM_CONFIG`, else `./cpm.toml` when present.
pub fn default_file() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("CPM_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let local = PathBuf::from("cpm.toml");
    local.exists().then_some(local)
}

/// Loads `T` from its defaults, then `file`, then the `CPM__…` environment.
pub fn load<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let merged = merged::<T>(file)?;
    deserialize(merged)
}

/// Loads `T` as [`load`] does, together with the named sections that `T`
/// does not hold (each service's own), as TOML tables; a section nobody
/// wrote is an empty table, so its service's defaults apply.
pub fn load_with_sections<T>(
    file: Option<&Path>,
    sections: &[String],
) -> Result<(T, std::collections::BTreeMap<String, toml::Table>), ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let merged = merged::<T>(file)?;
    let mut tables = std::collections::BTreeMap::new();
    for name in sections {
        let table = match merged.get::<toml::Table>(name) {
            Ok(table) => table,
            Err(config::ConfigError::NotFound(_)) => toml::Table::new(),
            Err(error) => return Err(ConfigError::invalid(name, error.to_string())),
        };
        tables.insert(name.clone(), table);
    }
    Ok((deserialize(merged)?, tables))
}

fn merged<T>(file: Option<&Path>) -> Result<config::Config, ConfigError>
where
    T: Serialize + Default,
{
    let defaults = config::Config::try_from(&T::default())
        .map_err(|error| ConfigError::Load(error.to_string()))?;
    let mut builder = config::Config::builder().add_source(defaults);
    if let Some(file) = file {
        if !file.exists() {
            return Err(ConfigError::Load(format!(
                "file {} does not exist",
                file.display()
            )));
        }
        builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::with_prefix("CPM")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("crypto.previous_master_keys")
            .with_list_parse_key("programme.areas"),
    );
    builder
        .build()
        .map_err(|error| ConfigError::Load(error.to_string()))
}

fn deserialize<T: DeserializeOwned>(merged: config::Config) -> Result<T, ConfigError> {
    merged.try_deserialize().map_err(|error| {
        let message = error.to_string();
        match message.split_once("for key `") {
            Some((problem, rest)) => {
                let key = rest.split('`').next().unwrap_or_default();
                ConfigError::invalid(key, problem.trim())
            }
            None => ConfigError::Load(message),
        }
    })
}

impl PlatformConfig {
    /// Checks what can be checked without connecting anywhere. Production
    /// refuses what is only safe on a laptop.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.supervision.validate()?;
        if self.grpc.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "grpc.listen",
                format!(
                    "`{}` is not an address like 0.0.0.0:50051",
                    self.grpc.listen
                ),
            ));
        }
        if !self.grpc.health_listen.is_empty()
            && self
                .grpc
                .health_listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(ConfigError::invalid(
                "grpc.health_listen",
                format!(
                    "`{}` is not an address like 0.0.0.0:50052",
                    self.grpc.health_listen
                ),
            ));
        }
        if !self.grpc.tls_client_ca_file.is_empty() && !self.grpc.tls_enabled() {
            return Err(ConfigError::invalid(
                "grpc.tls_client_ca_file",
                "mutual TLS needs grpc.tls_cert_file and grpc.tls_key_file too",
            ));
        }
        if self.grpc.tls_cert_file.is_empty() != self.grpc.tls_key_file.is_empty() {
            return Err(ConfigError::invalid(
                "grpc.tls_cert_file",
                "set both grpc.tls_cert_file and grpc.tls_key_file, or neither",
            ));
        }
        let database = self.database.url.expose();
        if !(database.starts_with("postgres://") || database.starts_with("postgresql://")) {
            return Err(ConfigError::invalid(
                "database.url",
                "must be a postgres:// URL",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        let amqp = self.amqp.url.expose();
        if !(amqp.starts_with("amqp://") || amqp.starts_with("amqps://")) {
            return Err(ConfigError::invalid("amqp.url", "must be an amqp:// URL"));
        }
        if self.amqp.namespace.is_empty()
            || !self
                .amqp
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(ConfigError::invalid(
                "amqp.namespace",
                "must be letters, digits, '-', '_' or '.'",
            ));
        }
        if self.amqp.connect_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "amqp.connect_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.amqp.prefetch == 0 {
            return Err(ConfigError::invalid("amqp.prefetch", "must be at least 1"));
        }
        if self.amqp.delivery_limit == 0 {
            return Err(ConfigError::invalid(
                "amqp.delivery_limit",
                "must be at least 1",
            ));
        }
        if self.auth.max_token_lifetime_secs == 0 {
            return Err(ConfigError::invalid(
                "auth.max_token_lifetime_secs",
                "must be at least 1",
            ));
        }
        if self.inbox.retention_days == 0 || self.inbox.prune_interval_secs == 0 {
            return Err(ConfigError::invalid(
                "inbox.retention_days",
                "inbox.retention_days and inbox.prune_interval_secs must be at least 1",
            ));
        }
        if self.outbox.batch_size == 0 {
            return Err(ConfigError::invalid(
                "outbox.batch_size",
                "must be at least 1",
            ));
        }
        self.programme.validate()?;
        if self.profile == Profile::Production {
            self.refuse_weak_production_settings()?;
        }
        Ok(())
    }
}

impl PlatformConfig {
    /// Production's refusals, each naming the key to change.
    fn refuse_weak_production_settings(&self) -> Result<(), ConfigError> {
        let refuse = |key: &str, why: &str| Err(ConfigError::invalid(key, why.to_owned()));
        if self.dev.simulated_clock {
            return refuse(
                "dev.simulated_clock",
                "production refuses the simulated clock: it lets a caller stamp records with any past time",
            );
        }
        let auth = &self.auth;
        if auth.rs256_public_key_file.is_empty() && auth.jwks_file.is_empty() {
            if auth.hs256_secret.is_empty() {
                return refuse(
                    "auth.rs256_public_key_file",
                    "production needs the token issuer's key; development keys are refused",
                );
            }
            if !self.allow.shared_secret_tokens {
                return refuse(
                    "auth.rs256_public_key_file",
                    "production refuses HS256 shared-secret tokens (whoever holds the secret can mint an admin's token): set the issuer's RS256 public key, or allow.shared_secret_tokens = true",
                );
            }
        }
        if auth.issuer == AuthConfig::default().issuer {
            return refuse(
                "auth.issuer",
                "production refuses the development issuer `cpm-dev`: name your token issuer",
            );
        }
        if self.crypto.master_key.is_empty() {
            return refuse(
                "crypto.master_key",
                "production needs a master key; development keys are refused",
            );
        }
        let amqp = self.amqp.url.expose();
        let credentials = amqp
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .map(|(userinfo, _)| userinfo);
        match credentials {
            None => {
                return refuse(
                    "amqp.url",
                    "production needs broker credentials in the URL (without them the client logs in as guest)",
                );
            }
            Some(userinfo) if userinfo == "guest" || userinfo.starts_with("guest:") => {
                return refuse(
                    "amqp.url",
                    "production refuses the default guest credentials",
                );
            }
            Some(_) => {}
        }
        if amqp.starts_with("amqp://") && !self.allow.plaintext_amqp {
            return refuse(
                "amqp.url",
                "production refuses plaintext AMQP: use amqps://, or allow.plaintext_amqp = true",
            );
        }
        if !database_requires_tls(self.database.url.expose()) && !self.allow.plaintext_database {
            return refuse(
                "database.url",
                "production refuses PostgreSQL without TLS: add sslmode=require (or verify-ca, verify-full), or allow.plaintext_database = true",
            );
        }
        if !self.grpc.tls_enabled() {
            return refuse(
                "grpc.tls_cert_file",
                "production refuses plaintext gRPC: set grpc.tls_cert_file and grpc.tls_key_file",
            );
        }
        Ok(())
    }
}

/// Whether a PostgreSQL URL insists on TLS.
fn database_requires_tls(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|pair| {
            matches!(
                pair,
                "sslmode=require" | "sslmode=verify-ca" | "sslmode=verify-full"
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_var_names_follow_the_dotted_key() {
        assert_eq!(env_var_for("database.url"), "CPM__DATABASE__URL");
        assert_eq!(
            env_var_for("referral_intake.listen"),
            "CPM__REFERRAL_INTAKE__LISTEN"
        );
    }

    #[test]
    fn defaults_are_a_valid_development_config() {
        PlatformConfig::default().validate().unwrap();
    }

    #[test]
    fn development_may_enable_the_simulated_clock() {
        let mut config = PlatformConfig::default();
        config.dev.simulated_clock = true;
        config.validate().unwrap();
    }

    #[test]
    fn a_bad_listen_address_names_its_key_and_variable() {
        let mut config = PlatformConfig::default();
        config.grpc.listen = "nowhere".into();
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("grpc.listen"), "{message}");
        assert!(message.contains("CPM__GRPC__LISTEN"), "{message}");
    }

    /// A production configuration every refusal lets through.
    fn strong_production() -> PlatformConfig {
        let mut config = PlatformConfig {
            profile: Profile::Production,
            ..PlatformConfig::default()
        };
        config.auth.rs256_public_key_file = "issuer.pem".into();
        config.auth.issuer = "https://login.example.org".into();
        config.crypto.master_key = Secret::new("a2V5");
        config.amqp.url = Secret::new("amqps://cpm:pw@broker:5671/cpm");
        config.database.url =
            Secret::new("postgres://cpm:pw@db/cpm?sslmode=verify-full&application_name=cpm");
        config.grpc.tls_cert_file = "cert.pem".into();
        config.grpc.tls_key_file = "key.pem".into();
        config
    }

    #[test]
    fn a_strong_production_configuration_passes() {
        strong_production().validate().unwrap();
    }

    #[test]
    fn production_refuses_each_weak_setting_naming_its_key() {
        type Weaken = fn(&mut PlatformConfig);
        let cases: [(&str, Weaken); 11] = [
            ("dev.simulated_clock", |c| c.dev.simulated_clock = true),
            ("auth.rs256_public_key_file", |c| {
                c.auth.rs256_public_key_file.clear();
            }),
            ("allow.shared_secret_tokens", |c| {
                c.auth.rs256_public_key_file.clear();
                c.auth.hs256_secret = Secret::new("c2VjcmV0");
            }),
            ("auth.issuer", |c| c.auth.issuer = "cpm-dev".into()),
            ("crypto.master_key", |c| {
                c.crypto.master_key = Secret::default()
            }),
            ("amqp.url", |c| {
                c.amqp.url = Secret::new("amqps://broker:5671/cpm");
            }),
            ("guest", |c| {
                c.amqp.url = Secret::new("amqps://guest:guest@broker:5671/cpm");
            }),
            ("allow.plaintext_amqp", |c| {
                c.amqp.url = Secret::new("amqp://cpm:pw@broker:5672/cpm");
            }),
            ("allow.plaintext_database", |c| {
                c.database.url = Secret::new("postgres://cpm:pw@db/cpm");
            }),
            ("allow.plaintext_database", |c| {
                c.database.url = Secret::new("postgres://cpm:pw@db/cpm?sslmode=prefer");
            }),
            ("grpc.tls_cert_file", |c| c.grpc.tls_key_file.clear()),
        ];
        for (named, weaken) in cases {
            let mut config = strong_production();
            weaken(&mut config);
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains(named), "expected {named}: {message}");
        }
    }

    #[test]
    fn production_lets_a_named_exception_through() {
        let mut config = strong_production();
        config.auth.rs256_public_key_file.clear();
        config.auth.hs256_secret = Secret::new("c2VjcmV0");
        config.amqp.url = Secret::new("amqp://cpm:pw@localhost:5672/cpm");
        config.database.url = Secret::new("postgres://cpm:pw@localhost/cpm");
        config.allow = AllowConfig {
            shared_secret_tokens: true,
            plaintext_amqp: true,
            plaintext_database: true,
        };
        config.validate().unwrap();
    }

    #[test]
    fn reflection_is_open_in_development_and_behind_a_token_in_production() {
        let grpc = GrpcConfig::default();
        assert_eq!(
            grpc.reflection_under(Profile::Development),
            ReflectionAccess::Open
        );
        assert_eq!(
            grpc.reflection_under(Profile::Production),
            ReflectionAccess::Authenticated
        );
        let off = GrpcConfig {
            reflection: Some(ReflectionAccess::Off),
            ..GrpcConfig::default()
        };
        assert_eq!(
            off.reflection_under(Profile::Development),
            ReflectionAccess::Off
        );
    }

    #[test]
    fn development_listens_on_loopback_by_default() {
        let listen: std::net::SocketAddr = PlatformConfig::default().grpc.listen.parse().unwrap();
        assert!(listen.ip().is_loopback(), "{listen}");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let secret = Secret::new("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn a_secret_reads_and_writes_as_its_value() {
        #[derive(Serialize, Deserialize)]
        struct Holder {
            key: Secret,
        }
        let holder: Holder = toml::from_str("key = \"hunter2\"").unwrap();
        assert_eq!(holder.key.expose(), "hunter2");
        assert_eq!(
            toml::to_string(&holder).unwrap().trim(),
            "key = \"hunter2\""
        );
        assert_eq!(holder.key, Secret::new("hunter2"));
    }

    #[test]
    fn a_file_overrides_defaults_and_a_wrong_type_names_the_key() {
        let dir = std::env::temp_dir().join(format!("cpm-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cpm.toml");
        std::fs::write(&file, "[amqp]\nnamespace = \"other\"\n").unwrap();
        let config: PlatformConfig = load(Some(&file)).unwrap();
        assert_eq!(config.amqp.namespace, "other");
        assert_eq!(config.amqp.prefetch, 32);
        std::fs::write(&file, "[amqp]\nprefetch = \"many\"\n").unwrap();
        let message = load::<PlatformConfig>(Some(&file)).unwrap_err().to_string();
        assert!(message.contains("amqp.prefetch"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn areas_are_taken_from_the_registered_list_only() {
        let programme = ProgrammeConfig::default();
        assert_eq!(programme.area(" south durham "), Some("South Durham"));
        assert_eq!(
            programme.area("Darlington\u{200b}"),
            None,
            "a zero-width variant"
        );
        assert_eq!(programme.area("Northshire"), None);
        let mut violations = crate::grpc::FieldViolations::new();
        assert_eq!(
            programme
                .check_area("area", "darlington", &mut violations)
                .as_deref(),
            Some("Darlington")
        );
        assert!(
            programme
                .check_area("area", "Nowhere", &mut violations)
                .is_none()
        );
        assert!(
            programme
                .check_area("queue_area", " ", &mut violations)
                .is_none()
        );
        assert_eq!(
            violations.fields().collect::<Vec<_>>(),
            ["area", "queue_area"]
        );
    }

    #[test]
    fn the_area_list_must_be_clean() {
        for areas in [
            vec![],
            vec!["Darlington".to_owned(), "darlington".to_owned()],
            vec!["Dar\u{202e}lington".to_owned()],
            vec![" Darlington".to_owned()],
            vec![String::new()],
        ] {
            let mut config = PlatformConfig::default();
            config.programme.areas = areas.clone();
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains("programme.areas"), "{areas:?}: {message}");
        }
    }
}
