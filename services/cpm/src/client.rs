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
    let channel = connect(endpoint).await?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let response = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status)
}
