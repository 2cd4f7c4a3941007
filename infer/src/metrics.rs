//! Prometheus metrics, served at `GET /metrics` in the text exposition format.

use axum::http::Method;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    /// Requests by route, method and status.
    pub requests: IntCounterVec,
    /// Request latency by route.
    pub latency: HistogramVec,
    /// Requests being handled now.
    pub in_flight: IntGauge,
    /// Images waiting for the model.
    pub queue_depth: IntGauge,
    /// Images per forward pass.
    pub batch_size: Histogram,
    /// Seconds per forward pass.
    pub inference_seconds: Histogram,
    /// Seconds it took to load the package and run the warm-up forward pass.
    pub model_load_seconds: Gauge,
    /// Connections open now.
    pub connections: IntGauge,
    /// Connections refused because the cap was reached.
    pub refused_connections: IntCounter,
    /// Images dropped unrun because their request's deadline passed while they waited.
    pub expired: IntCounter,
    /// Model version loads by model and outcome (`loaded`, `failed`).
    pub model_loads: IntCounterVec,
    /// The version each model serves now.
    pub serving_version: IntGaugeVec,
}

/// The method label of a request: one of HTTP's standard methods, or `other`, so that a
/// client cannot grow the label set with made-up methods.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

impl Metrics {
    /// Registers all metrics in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("kiln_http_requests_total", "HTTP requests by route, method and status"),
            &["path", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("kiln_http_request_duration_seconds", "HTTP request latency by route").buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 40.0,
            ]),
            &["path"],
        )
        .expect("valid metric");
        let in_flight =
            IntGauge::new("kiln_http_in_flight_requests", "HTTP requests being handled").expect("valid metric");
        let queue_depth = IntGauge::new("kiln_queue_depth", "Images waiting for the model").expect("valid metric");
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("kiln_batch_size", "Images per forward pass")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .expect("valid metric");
        let inference_seconds = Histogram::with_opts(
            HistogramOpts::new("kiln_inference_seconds", "Seconds per forward pass")
                .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]),
        )
        .expect("valid metric");
        let model_load_seconds = Gauge::new(
            "kiln_model_load_seconds",
            "Seconds to load the model and run its warm-up pass",
        )
        .expect("valid metric");
        let connections = IntGauge::new("kiln_http_connections", "Open connections").expect("valid metric");
        let refused_connections = IntCounter::new(
            "kiln_http_refused_connections_total",
            "Connections answered 503 and closed because --max-connections were open",
        )
        .expect("valid metric");
        let expired = IntCounter::new(
            "kiln_expired_images_total",
            "Images dropped unrun because their request's deadline passed while they waited",
        )
        .expect("valid metric");
        let model_loads = IntCounterVec::new(
            Opts::new(
                "kiln_model_loads_total",
                "Model version loads by model and outcome (loaded: serving; failed: the previous version still serves)",
            ),
            &["model", "outcome"],
        )
        .expect("valid metric");
        let serving_version = IntGaugeVec::new(
            Opts::new("kiln_model_serving_version", "The version each model serves now"),
            &["model"],
        )
        .expect("valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(model_loads.clone()),
            Box::new(serving_version.clone()),
            Box::new(expired.clone()),
            Box::new(latency.clone()),
            Box::new(in_flight.clone()),
            Box::new(queue_depth.clone()),
            Box::new(batch_size.clone()),
            Box::new(inference_seconds.clone()),
            Box::new(model_load_seconds.clone()),
            Box::new(connections.clone()),
            Box::new(refused_connections.clone()),
        ] {
            registry.register(m).expect("unique metric names");
        }
        Self {
            registry,
            requests,
            latency,
            in_flight,
            queue_depth,
            batch_size,
            inference_seconds,
            model_load_seconds,
            connections,
            refused_connections,
            expired,
            model_loads,
            serving_version,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        let made_up = Method::from_bytes(b"FROBNICATE").unwrap();
        assert_eq!(method_label(&made_up), "other");
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
