//! Every caller is known: a JWT bearer token names the subject, the role and
//! the agency or mentor the caller acts for. [`crate::grpc::access::Guarded`]
//! rejects calls without a valid token, or from a role the service's access
//! table does not name, and hands the [`Caller`] to the handler.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
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
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
}

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub subject: String,
    pub role: Role,
    pub agency_id: Option<String>,
    pub mentor_id: Option<String>,
}

impl Caller {
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
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl Authenticator {
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Self> {
        let (decoding, encoding, algorithm) = if !config.rs256_public_key_file.is_empty() {
            let pem = std::fs::read(&config.rs256_public_key_file)?;
            (DecodingKey::from_rsa_pem(&pem)?, None, Algorithm::RS256)
        } else {
            let secret = BASE64
                .decode(config.hs256_secret.expose())
                .map_err(|_| anyhow::anyhow!("auth.hs256_secret must be base64"))?;
            anyhow::ensure!(
                secret.len() >= 32,
                "auth.hs256_secret must hold at least 32 bytes"
            );
            (
                DecodingKey::from_secret(&secret),
                Some(EncodingKey::from_secret(&secret)),
                Algorithm::HS256,
            )
        };
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_audience(&[config.audience.as_str()]);
        validation.leeway = 30;
        Ok(Self {
            inner: Arc::new(AuthenticatorInner {
                decoding,
                encoding,
                validation,
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
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
        let encoding =
            self.inner.encoding.as_ref().ok_or_else(|| {
                anyhow::anyhow!("tokens can only be minted with a shared HS256 key")
            })?;
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: subject.to_owned(),
            role,
            agency_id: agency_id.map(str::to_owned),
            mentor_id: mentor_id.map(str::to_owned),
            iss: self.inner.issuer.clone(),
            aud: self.inner.audience.clone(),
            iat: now,
            exp: now + ttl.num_seconds(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            encoding,
        )?)
    }

    /// Checks a token's signature, issuer, audience and expiry.
    pub fn verify(&self, token: &str) -> Result<Caller, Status> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.inner.decoding, &self.inner.validation)
                .map_err(|error| {
                    tracing::debug!(%error, "token rejected");
                    Status::unauthenticated("invalid or expired bearer token")
                })?;
        let claims = data.claims;
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
    fn roles_parse_from_their_names_only() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("nobody".parse::<Role>().is_err());
    }
}
