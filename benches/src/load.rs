//! A closed-loop HTTP load generator: `concurrency` clients each posting one multipart digit
//! at a time for a fixed window, recording every latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cpu::CpuPerRequest;

/// A request body shared between requests without copying.
#[derive(Clone)]
struct Shared(bytes::Bytes);

/// What one load level measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadResult {
    /// Concurrent clients.
    pub concurrency: usize,
    /// Successful requests per second.
    pub requests_per_second: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 90th percentile latency, ms.
    pub p90_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Requests that failed or answered non-200.
    pub errors: usize,
    /// Requests sent.
    pub requests: usize,
    /// Share of requests the server itself handled within 20 ms (kiln-serve's histogram).
    pub server_share_under_20ms: Option<f64>,
    /// Where the CPU went, per request (kiln-serve only; absent in older results).
    #[serde(default)]
    pub cpu_per_request: Option<CpuPerRequest>,
}

/// The multipart boundary of the pre-built request bodies.
pub const BOUNDARY: &str = "kiln-bench-boundary-7d1f3a";

/// One multipart/form-data body carrying `file` as field `field`, built once so that the
/// load generator spends its CPU on sending, not on encoding.
pub fn multipart_body(field: &str, file: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"digit.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Drives `url` with `concurrency` clients for `window`, each posting one of `files` as
/// multipart field `field`.
pub async fn drive(url: &str, field: &str, files: &[Vec<u8>], concurrency: usize, window: Duration) -> LoadResult {
    let prepared: Arc<Vec<Shared>> = Arc::new(files.iter().map(|f| Shared(multipart_body(field, f).into())).collect());
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (client, url, bodies) = (client.clone(), url.to_string(), prepared.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                let mut i = worker;
                while started.elapsed() < window {
                    let body = bodies[i % bodies.len()].clone();
                    i += concurrency;
                    let t = Instant::now();
                    let request = client
                        .post(&url)
                        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
                        .body(body.0);
                    match request.send().await {
                        Ok(r) if r.status() == 200 => {
                            let _ = r.bytes().await;
                            latencies.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("load task");
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if latencies.is_empty() {
            f64::NAN
        } else {
            latencies[((latencies.len() - 1) as f64 * p).round() as usize]
        }
    };
    LoadResult {
        concurrency,
        requests_per_second: latencies.len() as f64 / elapsed,
        p50_ms: pct(0.5),
        p90_ms: pct(0.9),
        p99_ms: pct(0.99),
        errors,
        requests: latencies.len() + errors,
        server_share_under_20ms: None,
        cpu_per_request: None,
    }
}
