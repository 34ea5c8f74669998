//! Prometheus metrics: one recorder per process, served as text on
//! `telemetry.metrics_listen` (`GET /metrics`). Code records through the
//! `metrics` macros wherever it is; with no endpoint configured the
//! recorder still runs, so nothing changes but that no one scrapes.
//!
//! The names, for dashboards and alert rules (deploy/prometheus/):
//! - `cpm_rpc_requests_total{service,method,code}`, `cpm_rpc_duration_seconds{service,method}`
//! - `cpm_outbox_backlog{schema}`, `cpm_outbox_oldest_age_seconds{schema}`,
//!   `cpm_outbox_publish_delay_seconds{schema}` (commit to broker confirm)
//! - `cpm_consumer_deliveries_total{queue,outcome}`, `cpm_consumer_redeliveries_total{queue}`,
//!   `cpm_dead_letters{queue}`, `cpm_queue_messages{queue}`, `cpm_queue_consumers{queue}`
//! - `cpm_db_pool_connections{schema,state}`, `cpm_db_acquire_seconds{schema}`
//! - `cpm_matching_duration_seconds{kind}`
//! - `cpm_webhook_deliveries_total{outcome}`, `cpm_webhook_duration_seconds`,
//!   `cpm_email_deliveries_total{outcome}`, `cpm_email_duration_seconds`, `cpm_feed_published_total`

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::Shutdown;

/// Latency buckets in seconds: from a fast RPC to a slow batch.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Deliveries a consumer applied in one transaction (2 to 32).
const BATCH_SIZES: &[f64] = &[2.0, 4.0, 8.0, 16.0, 32.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(SECONDS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full("cpm_consumer_batch_deliveries".into()),
                    BATCH_SIZES,
                )
            })
            .expect("the buckets are not empty");
        match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder came first (a test harness): keep ours
            // unrendered rather than fail.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

/// The text a scrape receives.
pub fn render() -> String {
    let handle = handle();
    handle.run_upkeep();
    handle.render()
}

/// Serves `GET /metrics` on `listener` until `shutdown`, folding histogram
/// samples into their buckets every few seconds between scrapes so memory
/// stays flat however rarely Prometheus comes. Call [`handle`] before the
/// services start, so nothing they record is lost.
pub async fn serve(listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let upkeep = tokio::spawn(crate::periodic::run_every(
        std::time::Duration::from_secs(5),
        shutdown.clone(),
        || async { handle().run_upkeep() },
    ));
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                render(),
            )
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    upkeep.abort();
    Ok(())
}

/// Every `interval`, until `shutdown`: the depth of each of `specs`'
/// dead-letter queues as `cpm_dead_letters{queue}`, and of their queues,
/// with their consumers, as `cpm_queue_messages{queue}` and
/// `cpm_queue_consumers{queue}` (a queue that fills while nobody consumes
/// is an alert). A broker away only skips a round.
pub async fn watch_queues(
    bus: crate::bus::Bus,
    specs: Vec<crate::bus::ConsumerSpec>,
    interval: std::time::Duration,
    shutdown: Shutdown,
) {
    crate::periodic::run_every(interval, shutdown, || async {
        match crate::bus::dead_letters::count(&bus, &specs).await {
            Ok(counts) => {
                for count in counts {
                    metrics::gauge!("cpm_dead_letters", "queue" => count.consumer)
                        .set(f64::from(count.messages));
                }
            }
            Err(error) => tracing::debug!(%error, "dead letters not counted this round"),
        }
        if let Err(error) = count_queues(&bus, &specs).await {
            tracing::debug!(%error, "queues not counted this round");
        }
    })
    .await;
}

/// Sets `cpm_queue_messages` and `cpm_queue_consumers` for `specs`' queues.
async fn count_queues(
    bus: &crate::bus::Bus,
    specs: &[crate::bus::ConsumerSpec],
) -> lapin::Result<()> {
    let channel = bus.channel().await?;
    for spec in specs {
        let queue = bus.topology().queue(spec.service, spec.name);
        let declared = channel
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await?;
        let name = spec.inbox_name();
        metrics::gauge!("cpm_queue_messages", "queue" => name.clone())
            .set(f64::from(declared.message_count()));
        metrics::gauge!("cpm_queue_consumers", "queue" => name)
            .set(f64::from(declared.consumer_count()));
    }
    let _ = channel.close(200, "counted".into()).await;
    Ok(())
}

/// The service and method of a gRPC path `/cpm.v1.Service/Method`.
fn service_and_method(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    (
        service.rsplit('.').next().unwrap_or(service).to_owned(),
        method.to_owned(),
    )
}

/// A gRPC status code's name, from the `grpc-status` header of a
/// trailers-only answer (every refusal); an answer with a body carries its
/// status in trailers and counts as `OK` here.
fn code_name<B>(response: &http::Response<B>) -> &'static str {
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32);
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Counts every RPC by service, method and code, and times it.
#[derive(Clone, Copy, Debug, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RpcMetrics<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = service_and_method(request.uri().path());
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let code = match &result {
                Ok(response) => code_name(response),
                Err(_) => "UNKNOWN",
            };
            metrics::counter!(
                "cpm_rpc_requests_total",
                "service" => service.clone(),
                "method" => method.clone(),
                "code" => code,
            )
            .increment(1);
            metrics::histogram!(
                "cpm_rpc_duration_seconds",
                "service" => service,
                "method" => method,
            )
            .record(started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_path_names_its_service_and_method() {
        assert_eq!(
            service_and_method("/cpm.v1.ReferralIntakeService/SubmitReferral"),
            ("ReferralIntakeService".into(), "SubmitReferral".into())
        );
        assert_eq!(
            service_and_method("/grpc.health.v1.Health/Check"),
            ("Health".into(), "Check".into())
        );
    }

    #[test]
    fn the_code_comes_from_a_trailers_only_answer() {
        let refused = http::Response::builder()
            .header("grpc-status", "5")
            .body(())
            .unwrap();
        assert_eq!(code_name(&refused), "NOT_FOUND");
        let answered = http::Response::builder().body(()).unwrap();
        assert_eq!(code_name(&answered), "OK");
    }

    #[test]
    fn recorded_metrics_are_rendered() {
        handle();
        metrics::counter!("cpm_test_total", "kind" => "unit").increment(2);
        assert!(render().contains("cpm_test_total{kind=\"unit\"} 2"));
    }
}
