//! The agent's status endpoint (`output.status_listen`), for Kubernetes probes and
//! Prometheus: `/healthz` answers 200 while every pipeline stage runs, `/readyz` 200 once the
//! probes are attached and tracing has begun (503 before, and while stopping), `/metrics` the
//! agent's own metrics in the OpenMetrics text format (the same readings as its OTLP
//! self-telemetry, named as Prometheus's OTLP translation names those).

use std::{
    convert::Infallible,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};
use tokio::net::TcpListener;

use crate::telemetry::selfmon::{StatsSource, readings};

/// What the endpoint reports; the agent flips the switches.
pub struct Status {
    /// Every stage is running.
    pub alive: AtomicBool,
    /// Tracing (probes attached, not stopping).
    pub ready: AtomicBool,
    registry: Registry,
}

impl Status {
    pub fn new(stats: StatsSource) -> Arc<Status> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(AgentMetrics(stats)));
        Arc::new(Status {
            alive: AtomicBool::new(true),
            ready: AtomicBool::new(false),
            registry,
        })
    }

    fn metrics(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Reads the agent's counters on each scrape.
struct AgentMetrics(StatsSource);

impl fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentMetrics")
    }
}

impl Collector for AgentMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for metric in readings(&(self.0)()) {
            let name = metric.name.replace('.', "_");
            let unit = match metric.unit {
                "s" => Some(Unit::Seconds),
                "By" => Some(Unit::Bytes),
                _ => None,
            };
            let kind = if metric.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut family =
                encoder.encode_descriptor(&name, metric.description, unit.as_ref(), kind)?;
            for (value, attributes) in metric.points {
                let labels: Vec<(String, String)> = attributes
                    .iter()
                    .map(|kv| (kv.key.as_str().replace('.', "_"), kv.value.to_string()))
                    .collect();
                let point = family.encode_family(&labels)?;
                if metric.counter {
                    ConstCounter::new(value).encode(point)?;
                } else {
                    ConstGauge::new(value as i64).encode(point)?;
                }
            }
        }
        Ok(())
    }
}

fn answer(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert("content-type", value);
    }
    response
}

fn respond(status: &Status, path: &str) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let flag = |on: bool, yes: &str, no: &str| {
        if on {
            answer(StatusCode::OK, TEXT, format!("{yes}\n"))
        } else {
            answer(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{no}\n"))
        }
    };
    match path {
        "/healthz" => flag(
            status.alive.load(Relaxed),
            "ok",
            "a pipeline stage stopped (see the agent's log)",
        ),
        "/readyz" => flag(
            status.ready.load(Relaxed) && status.alive.load(Relaxed),
            "ready",
            "not tracing (starting, stopping, or a stage stopped)",
        ),
        "/metrics" => match status.metrics() {
            Ok(text) => answer(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            ),
            Err(_) => answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                "encoding failed\n".into(),
            ),
        },
        _ => answer(
            StatusCode::NOT_FOUND,
            TEXT,
            "try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}

/// Serves `listener` until the task is aborted; one task per connection.
pub async fn serve(listener: TcpListener, status: Arc<Status>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let status = status.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&status, request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::StatsReport;

    #[test]
    fn the_paths() {
        let status = Status::new(Arc::new(StatsReport::default));
        assert_eq!(respond(&status, "/healthz").status(), StatusCode::OK);
        assert_eq!(
            respond(&status, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        status.ready.store(true, Relaxed);
        assert_eq!(respond(&status, "/readyz").status(), StatusCode::OK);
        status.alive.store(false, Relaxed);
        assert_eq!(
            respond(&status, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            respond(&status, "/healthz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(respond(&status, "/").status(), StatusCode::NOT_FOUND);
        let text = status.metrics().unwrap();
        assert!(
            text.contains("# TYPE netsonde_agent_kernel_events counter"),
            "{text}"
        );
        assert!(
            text.contains("netsonde_agent_kernel_events_total 0"),
            "{text}"
        );
        assert!(
            text.contains("netsonde_agent_kernel_bytes_not_captured_bytes_total 0"),
            "{text}"
        );
        assert!(
            text.contains("netsonde_agent_export_dropped_total{netsonde_signal=\"traces\"} 0"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
