//! Client side: a channel to a CPM endpoint and a bearer-token interceptor
//! that also carries the caller's trace context.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// Adds `authorization: Bearer <token>` and `traceparent` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub fn new(token: &str) -> anyhow::Result<Self> {
        Ok(Self(format!("Bearer {token}").parse()?))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        cpm_runtime::telemetry::inject_into_metadata(request.metadata_mut());
        Ok(request)
    }
}

/// A channel wrapped with a caller's token; pass it to any generated client.
pub type Authed = InterceptedService<Channel, Bearer>;

pub fn authed(channel: &Channel, token: &str) -> anyhow::Result<Authed> {
    Ok(InterceptedService::new(
        channel.clone(),
        Bearer::new(token)?,
    ))
}

/// Connects to `endpoint` (e.g. `http://127.0.0.1:50051`).
pub async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(endpoint.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await?)
}

/// The serving status of `service` ("" for the whole server).
pub async fn health(endpoint: &str, service: &str) -> anyhow::Result<i32> {
    health_over(endpoint, service, None).await
}

/// How to verify an `https://` endpoint: production serves gRPC with TLS
/// only, usually under a private CA.
pub struct TlsTrust {
    /// The CA certificate (PEM) that signed the server's certificate.
    pub ca_file: std::path::PathBuf,
    /// The name the certificate must carry, when not the endpoint's host
    /// (a pod probed by IP holds its Service's certificate).
    pub domain: Option<String>,
}

/// [`health`] over TLS when `trust` is given (the endpoint is then `https://`).
pub async fn health_over(
    endpoint: &str,
    service: &str,
    trust: Option<&TlsTrust>,
) -> anyhow::Result<i32> {
    let channel = match trust {
        None => {
            anyhow::ensure!(
                !endpoint.starts_with("https://"),
                "{endpoint} needs TLS: give the CA that signed its certificate with --tls-ca"
            );
            connect(endpoint).await?
        }
        Some(trust) => {
            let ca = std::fs::read(&trust.ca_file).map_err(|error| {
                anyhow::anyhow!("cannot read {}: {error}", trust.ca_file.display())
            })?;
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca));
            if let Some(domain) = &trust.domain {
                tls = tls.domain_name(domain);
            }
            Endpoint::from_shared(endpoint.to_owned())?
                .tls_config(tls)?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .connect()
                .await?
        }
    };
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let response = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status)
}
