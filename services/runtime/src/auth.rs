//! Every caller is known: a JWT bearer token names the subject, the role and
//! the agency or mentor the caller acts for. [`crate::grpc::access::Guarded`]
//! rejects calls without a valid token, or from a role the service's access
//! table does not name, and hands the [`Caller`] to the handler.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status};

use crate::config::AuthConfig;

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A person in a referring agency.
    Referrer,
    /// Paid staff who assess, allocate, supervise and discharge.
    Coordinator,
    /// A trained volunteer.
    Mentor,
    /// Runs the programme's set-up: agencies, users.
    Admin,
    /// Another system acting on the platform's behalf.
    Service,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Referrer,
        Role::Coordinator,
        Role::Mentor,
        Role::Admin,
        Role::Service,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Referrer => "referrer",
            Role::Coordinator => "coordinator",
            Role::Mentor => "mentor",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == value)
            .ok_or_else(|| {
                format!("unknown role `{value}`: expected referrer, coordinator, mentor, admin or service")
            })
    }
}

/// The claims of a CPM token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agency_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mentor_id: Option<String>,
    /// The programme areas a coordinator works in; admins see every area.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub areas: Vec<String>,
    pub iss: String,
    pub aud: Audience,
    pub exp: i64,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

/// `aud` as RFC 7519 allows it: one audience or several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub subject: String,
    pub role: Role,
    pub agency_id: Option<String>,
    pub mentor_id: Option<String>,
    /// The areas a coordinator's token names (see [`Caller::area_scope`]).
    pub areas: Vec<String>,
}

/// The areas whose referrals, assessments, cases and mentors a caller sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AreaScope {
    /// Admins and the platform's own services.
    Every,
    /// A coordinator's areas, as their token names them: none when it names none.
    Only(Vec<String>),
}

impl AreaScope {
    pub fn admits(&self, area: &str) -> bool {
        match self {
            AreaScope::Every => true,
            AreaScope::Only(areas) => areas.iter().any(|own| own.eq_ignore_ascii_case(area)),
        }
    }

    /// For a query's `($1::text[] IS NULL OR area = ANY($1))`: `None` for every area.
    pub fn as_filter(&self) -> Option<&[String]> {
        match self {
            AreaScope::Every => None,
            AreaScope::Only(areas) => Some(areas),
        }
    }
}

impl Caller {
    /// Which areas' records this caller may see as staff. Referrers and
    /// mentors are scoped by their agency and their own cases instead, and
    /// see no area as such.
    pub fn area_scope(&self) -> AreaScope {
        match self.role {
            Role::Admin | Role::Service => AreaScope::Every,
            Role::Coordinator => AreaScope::Only(self.areas.clone()),
            Role::Referrer | Role::Mentor => AreaScope::Only(Vec::new()),
        }
    }

    /// Whether this caller's [`Caller::area_scope`] admits `area`.
    pub fn sees_area(&self, area: &str) -> bool {
        self.area_scope().admits(area)
    }

    /// The caller the guard attached to a request.
    pub fn of<T>(request: &Request<T>) -> Result<&Caller, Status> {
        request
            .extensions()
            .get::<Caller>()
            .ok_or_else(|| Status::unauthenticated("a bearer token is required"))
    }

    /// The agency a referrer acts for.
    pub fn agency(&self) -> Result<&str, Status> {
        self.agency_id
            .as_deref()
            .ok_or_else(|| Status::permission_denied("the token names no agency"))
    }

    /// The mentor a mentor token belongs to.
    pub fn mentor(&self) -> Result<&str, Status> {
        self.mentor_id
            .as_deref()
            .ok_or_else(|| Status::permission_denied("the token names no mentor"))
    }
}

/// Verifies tokens, and in development mints them.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<AuthenticatorInner>,
}

struct AuthenticatorInner {
    keys: VerifyingKeys,
    encoding: Option<EncodingKey>,
    issuer: String,
    audience: String,
    max_lifetime_secs: i64,
}

/// The keys tokens are checked against, each with the validation of its
/// algorithm.
enum VerifyingKeys {
    /// One key: a token's `kid`, if any, is not consulted.
    Single(Box<(DecodingKey, Validation)>),
    /// A key set: a token must name one of its keys in `kid`.
    ByKid(HashMap<String, (DecodingKey, Validation)>),
}

/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
const LEEWAY_SECS: u64 = 30;

impl Authenticator {
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Self> {
        let validation = |algorithm: Algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.set_issuer(&[config.issuer.as_str()]);
            validation.set_audience(&[config.audience.as_str()]);
            validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
            validation.validate_nbf = true;
            validation.leeway = LEEWAY_SECS;
            validation
        };
        let (keys, encoding) = if !config.jwks_file.is_empty() {
            let text = std::fs::read_to_string(&config.jwks_file)?;
            let set: JwkSet = serde_json::from_str(&text)
                .map_err(|error| anyhow::anyhow!("auth.jwks_file is not a JWK set: {error}"))?;
            let mut keys = HashMap::new();
            for jwk in &set.keys {
                let kid =
                    jwk.common.key_id.clone().ok_or_else(|| {
                        anyhow::anyhow!("auth.jwks_file: every key needs a `kid`")
                    })?;
                let algorithm = jwk
                    .common
                    .key_algorithm
                    .and_then(|algorithm| Algorithm::try_from(algorithm).ok())
                    .ok_or_else(|| {
                        anyhow::anyhow!("auth.jwks_file: key {kid} names no usable `alg`")
                    })?;
                keys.insert(kid, (DecodingKey::from_jwk(jwk)?, validation(algorithm)));
            }
            anyhow::ensure!(!keys.is_empty(), "auth.jwks_file holds no keys");
            (VerifyingKeys::ByKid(keys), None)
        } else if !config.rs256_public_key_file.is_empty() {
            let pem = std::fs::read(&config.rs256_public_key_file)?;
            (
                VerifyingKeys::Single(Box::new((
                    DecodingKey::from_rsa_pem(&pem)?,
                    validation(Algorithm::RS256),
                ))),
                None,
            )
        } else {
            let secret = BASE64
                .decode(config.hs256_secret.expose())
                .map_err(|_| anyhow::anyhow!("auth.hs256_secret must be base64"))?;
            anyhow::ensure!(
                secret.len() >= 32,
                "auth.hs256_secret must hold at least 32 bytes"
            );
            (
                VerifyingKeys::Single(Box::new((
                    DecodingKey::from_secret(&secret),
                    validation(Algorithm::HS256),
                ))),
                Some(EncodingKey::from_secret(&secret)),
            )
        };
        Ok(Self {
            inner: Arc::new(AuthenticatorInner {
                keys,
                encoding,
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                max_lifetime_secs: i64::try_from(config.max_token_lifetime_secs)
                    .unwrap_or(i64::MAX),
            }),
        })
    }

    /// Signs a token with the shared key. Development and tests only:
    /// production verifies an external issuer's tokens.
    pub fn mint(
        &self,
        subject: &str,
        role: Role,
        agency_id: Option<&str>,
        mentor_id: Option<&str>,
        ttl: chrono::Duration,
    ) -> anyhow::Result<String> {
        self.mint_with_areas(subject, role, agency_id, mentor_id, &[], ttl)
    }

    /// [`Authenticator::mint`] for a coordinator who works in `areas`.
    pub fn mint_with_areas(
        &self,
        subject: &str,
        role: Role,
        agency_id: Option<&str>,
        mentor_id: Option<&str>,
        areas: &[String],
        ttl: chrono::Duration,
    ) -> anyhow::Result<String> {
        let encoding =
            self.inner.encoding.as_ref().ok_or_else(|| {
                anyhow::anyhow!("tokens can only be minted with a shared HS256 key")
            })?;
        anyhow::ensure!(
            ttl.num_seconds() <= self.inner.max_lifetime_secs,
            "a token may live at most {} s (auth.max_token_lifetime_secs)",
            self.inner.max_lifetime_secs
        );
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: subject.to_owned(),
            role,
            agency_id: agency_id.map(str::to_owned),
            mentor_id: mentor_id.map(str::to_owned),
            areas: areas.to_vec(),
            iss: self.inner.issuer.clone(),
            aud: Audience::One(self.inner.audience.clone()),
            iat: now,
            exp: now + ttl.num_seconds(),
            nbf: None,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            encoding,
        )?)
    }

    /// Checks a token's key (by `kid` in a key set), signature, issuer,
    /// audience, expiry, not-before, issue time and lifetime.
    pub fn verify(&self, token: &str) -> Result<Caller, Status> {
        let rejected = |error: &dyn fmt::Display| {
            tracing::debug!(%error, "token rejected");
            Status::unauthenticated("invalid or expired bearer token")
        };
        let (key, validation) = match &self.inner.keys {
            VerifyingKeys::Single(pair) => (&pair.0, &pair.1),
            VerifyingKeys::ByKid(keys) => {
                let header = jsonwebtoken::decode_header(token).map_err(|e| rejected(&e))?;
                let kid = header
                    .kid
                    .ok_or_else(|| rejected(&"the token names no kid"))?;
                let (key, validation) = keys
                    .get(&kid)
                    .ok_or_else(|| rejected(&format!("unknown kid {kid}")))?;
                (key, validation)
            }
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| rejected(&e))?
            .claims;
        let now = chrono::Utc::now().timestamp();
        let leeway = LEEWAY_SECS as i64;
        if claims.iat > now + leeway {
            return Err(rejected(&"issued in the future"));
        }
        if claims.exp.saturating_sub(claims.iat) > self.inner.max_lifetime_secs {
            return Err(rejected(&"lives longer than auth.max_token_lifetime_secs"));
        }
        if claims.role == Role::Referrer && claims.agency_id.is_none() {
            return Err(Status::unauthenticated(
                "a referrer token must name an agency",
            ));
        }
        if claims.role == Role::Mentor && claims.mentor_id.is_none() {
            return Err(Status::unauthenticated("a mentor token must name a mentor"));
        }
        Ok(Caller {
            subject: claims.sub,
            role: claims.role,
            agency_id: claims.agency_id,
            mentor_id: claims.mentor_id,
            areas: claims.areas,
        })
    }

    /// The caller an `Authorization: Bearer <token>` header names, or UNAUTHENTICATED.
    pub fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, Status> {
        let header = headers
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| Status::unauthenticated("a bearer token is required"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
        self.verify(token.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn authenticator() -> Authenticator {
        Authenticator::from_config(&AuthConfig {
            hs256_secret: Secret::new(BASE64.encode([7u8; 32])),
            ..AuthConfig::default()
        })
        .unwrap()
    }

    fn headers_with(header: Option<&str>) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = header {
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn a_minted_token_passes_and_names_the_caller() {
        let auth = authenticator();
        let token = auth
            .mint(
                "ref-1",
                Role::Referrer,
                Some("agency-a"),
                None,
                chrono::Duration::hours(1),
            )
            .unwrap();
        let caller = auth
            .authenticate(&headers_with(Some(&format!("Bearer {token}"))))
            .unwrap();
        assert_eq!(caller.role, Role::Referrer);
        assert_eq!(caller.agency().unwrap(), "agency-a");
    }

    #[test]
    fn missing_malformed_expired_and_foreign_tokens_are_unauthenticated() {
        let auth = authenticator();
        let code =
            |header: Option<&str>| auth.authenticate(&headers_with(header)).unwrap_err().code();
        assert_eq!(code(None), tonic::Code::Unauthenticated);
        assert_eq!(code(Some("Basic abc")), tonic::Code::Unauthenticated);
        assert_eq!(
            code(Some("Bearer not.a.token")),
            tonic::Code::Unauthenticated
        );
        let expired = auth
            .mint(
                "c",
                Role::Coordinator,
                None,
                None,
                chrono::Duration::hours(-2),
            )
            .unwrap();
        assert_eq!(
            code(Some(&format!("Bearer {expired}"))),
            tonic::Code::Unauthenticated
        );
        let other = Authenticator::from_config(&AuthConfig {
            hs256_secret: Secret::new(BASE64.encode([9u8; 32])),
            ..AuthConfig::default()
        })
        .unwrap();
        let foreign = other
            .mint(
                "c",
                Role::Coordinator,
                None,
                None,
                chrono::Duration::hours(1),
            )
            .unwrap();
        assert_eq!(
            code(Some(&format!("Bearer {foreign}"))),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn a_referrer_token_without_an_agency_is_refused() {
        let auth = authenticator();
        let token = auth
            .mint("r", Role::Referrer, None, None, chrono::Duration::hours(1))
            .unwrap();
        assert!(auth.verify(&token).is_err());
    }

    #[test]
    fn a_coordinator_sees_the_areas_the_token_names_and_an_admin_every_area() {
        let auth = authenticator();
        let areas = ["Darlington".to_owned()];
        let coordinator = auth
            .verify(
                &auth
                    .mint_with_areas(
                        "c",
                        Role::Coordinator,
                        None,
                        None,
                        &areas,
                        chrono::Duration::hours(1),
                    )
                    .unwrap(),
            )
            .unwrap();
        assert!(coordinator.sees_area("Darlington"));
        assert!(!coordinator.sees_area("East Durham"));
        assert_eq!(coordinator.area_scope().as_filter(), Some(&areas[..]));
        let none = auth
            .verify(
                &auth
                    .mint(
                        "c",
                        Role::Coordinator,
                        None,
                        None,
                        chrono::Duration::hours(1),
                    )
                    .unwrap(),
            )
            .unwrap();
        assert!(!none.sees_area("Darlington"), "no areas named, none seen");
        let admin = auth
            .verify(
                &auth
                    .mint("a", Role::Admin, None, None, chrono::Duration::hours(1))
                    .unwrap(),
            )
            .unwrap();
        assert!(admin.sees_area("East Durham"));
        assert_eq!(admin.area_scope().as_filter(), None);
    }

    #[test]
    fn roles_parse_from_their_names_only() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("nobody".parse::<Role>().is_err());
    }

    /// Signs arbitrary claims with the test key, so each rule can be broken alone.
    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&[7u8; 32]),
        )
        .unwrap()
    }

    fn claims(now: i64) -> serde_json::Value {
        serde_json::json!({
            "sub": "c", "role": "coordinator", "iss": "cpm-dev", "aud": "cpm",
            "iat": now, "exp": now + 3600,
        })
    }

    #[test]
    fn not_before_issue_time_and_lifetime_are_enforced() {
        let auth = authenticator();
        let now = chrono::Utc::now().timestamp();
        assert!(auth.verify(&signed(claims(now))).is_ok());
        let mut early = claims(now);
        early["nbf"] = (now + 600).into();
        assert!(auth.verify(&signed(early)).is_err(), "nbf in the future");
        let mut future = claims(now + 600);
        future["exp"] = (now + 1200).into();
        assert!(auth.verify(&signed(future)).is_err(), "iat in the future");
        let mut long = claims(now);
        long["exp"] = (now + 25 * 3600).into();
        assert!(auth.verify(&signed(long)).is_err(), "longer than a day");
        let mut no_iat = claims(now);
        no_iat.as_object_mut().unwrap().remove("iat");
        assert!(auth.verify(&signed(no_iat)).is_err(), "iat is required");
    }

    #[test]
    fn an_audience_array_passes_when_it_names_us() {
        let auth = authenticator();
        let now = chrono::Utc::now().timestamp();
        let mut many = claims(now);
        many["aud"] = serde_json::json!(["other", "cpm"]);
        assert!(auth.verify(&signed(many)).is_ok());
        let mut others = claims(now);
        others["aud"] = serde_json::json!(["other", "another"]);
        assert!(auth.verify(&signed(others)).is_err());
    }

    #[test]
    fn a_key_set_picks_the_key_by_kid() {
        use jsonwebtoken::jwk::{Jwk, JwkSet};
        let key = |kid: &str| {
            let pair = rcgen::KeyPair::generate().unwrap();
            let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
            let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap();
            jwk.common.key_id = Some(kid.to_owned());
            (encoding, jwk)
        };
        let (first, first_jwk) = key("2026-01");
        let (second, second_jwk) = key("2026-07");
        let dir = std::env::temp_dir().join(format!("cpm-jwks-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("jwks.json");
        let set = JwkSet {
            keys: vec![first_jwk, second_jwk],
        };
        std::fs::write(&file, serde_json::to_string(&set).unwrap()).unwrap();
        let auth = Authenticator::from_config(&AuthConfig {
            jwks_file: file.display().to_string(),
            ..AuthConfig::default()
        })
        .unwrap();
        let now = chrono::Utc::now().timestamp();
        let token = |kid: Option<&str>, key: &EncodingKey| {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = kid.map(str::to_owned);
            jsonwebtoken::encode(&header, &claims(now), key).unwrap()
        };
        assert!(auth.verify(&token(Some("2026-01"), &first)).is_ok());
        assert!(auth.verify(&token(Some("2026-07"), &second)).is_ok());
        assert!(
            auth.verify(&token(Some("2026-01"), &second)).is_err(),
            "wrong key for its kid"
        );
        assert!(
            auth.verify(&token(Some("2025-07"), &second)).is_err(),
            "unknown kid"
        );
        assert!(auth.verify(&token(None, &second)).is_err(), "no kid");
        assert!(
            auth.mint("c", Role::Admin, None, None, chrono::Duration::hours(1))
                .is_err()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
