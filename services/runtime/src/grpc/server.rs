//! The gRPC server: the enabled services plus health (grpc.health.v1) and
//! reflection (v1 and v1alpha, so grpcurl, Postman and `buf curl` work),
//! with a trace span per call continued from the caller's `traceparent`,
//! and a graceful shutdown bounded by a timeout.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::RoutesBuilder;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::Shutdown;
use crate::auth::{Authenticator, Role};
use crate::config::GrpcConfig;
use crate::config::ReflectionAccess;
use crate::grpc::access::{AccessTable, Guarded};

/// The health service, as served by every listener of one process.
pub type HealthService =
    tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>;

/// Anyone with a valid token may reflect, when reflection is authenticated.
static REFLECTION_ACCESS: AccessTable = AccessTable::new(&[("ServerReflectionInfo", &Role::ALL)]);

/// Routes with health and reflection (as `reflection` allows) added; the
/// reporter starts NOT_SERVING for the whole server until
/// [`crate::service`] finds the dependencies ready.
pub async fn base_routes(
    reflection: ReflectionAccess,
    authenticator: &Authenticator,
) -> anyhow::Result<(RoutesBuilder, HealthReporter, HealthService)> {
    let reporter = HealthReporter::new();
    let health_service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
    );
    let plain_health = health_service.clone();
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cpm_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cpm_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let mut routes = RoutesBuilder::default();
    routes.add_service(health_service);
    match reflection {
        ReflectionAccess::Open => {
            routes
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha);
        }
        ReflectionAccess::Authenticated => {
            let auth = authenticator.clone();
            routes
                .add_service(Guarded::new(
                    reflection_v1,
                    auth.clone(),
                    &REFLECTION_ACCESS,
                ))
                .add_service(Guarded::new(reflection_v1alpha, auth, &REFLECTION_ACCESS));
        }
        ReflectionAccess::Off => {}
    }
    Ok((routes, reporter, plain_health))
}

fn tls(config: &GrpcConfig) -> anyhow::Result<Option<ServerTlsConfig>> {
    if !config.tls_enabled() {
        return Ok(None);
    }
    let cert = std::fs::read(&config.tls_cert_file)?;
    let key = std::fs::read(&config.tls_key_file)?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if !config.tls_client_ca_file.is_empty() {
        let ca = std::fs::read(&config.tls_client_ca_file)?;
        tls = tls.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(Some(tls))
}

/// Serves `routes` on `listener` until `shutdown`; in-flight calls then get
/// `shutdown_timeout` to finish before the server is dropped.
pub async fn serve(
    listener: TcpListener,
    routes: RoutesBuilder,
    config: &GrpcConfig,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut builder = Server::builder()
        .layer(crate::metrics::RpcMetricsLayer)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .trace_fn(|request| {
            let span = tracing::info_span!(
                "grpc",
                path = %request.uri().path(),
                trace_id = tracing::field::Empty,
            );
            crate::telemetry::set_parent_from_http(&span, request.headers());
            crate::telemetry::record_trace_id(&span);
            span
        });
    if let Some(tls) = tls(config)? {
        builder = builder.tls_config(tls)?;
    }
    let signal = shutdown.clone();
    let server = builder
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(incoming(listener), async move {
            signal.cancelled().await;
        });
    tokio::pin!(server);
    let timeout = config.shutdown_timeout();
    tokio::select! {
        result = &mut server => Ok(result?),
        () = async { shutdown.cancelled().await; tokio::time::sleep(timeout).await } => {
            tracing::warn!(timeout_secs = timeout.as_secs(), "in-flight calls did not finish in time, closing");
            Ok(())
        }
    }
}

/// Accepted connections with Nagle's algorithm off, as `Server::serve`
/// would set them: a small response must not wait for the peer's delayed ACK.
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves only grpc.health.v1, in plaintext, until `shutdown`: the probe
/// port of a process whose main port requires client certificates.
pub async fn serve_health_only(
    listener: TcpListener,
    health: HealthService,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    Server::builder()
        .add_service(health)
        .serve_with_incoming_shutdown(incoming(listener), async move {
            shutdown.cancelled().await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    /// The option lives on the server's side of the socket, so only the
    /// accepted stream can show it.
    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut accepted = incoming(listener);
        let _client = tokio::net::TcpStream::connect(address).await.unwrap();
        let stream = accepted.next().await.unwrap().unwrap();
        assert!(stream.nodelay().unwrap());
    }
}
