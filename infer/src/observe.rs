//! The one service around the whole router: every response gets the nginx front's security
//! headers (guide section 5.5), and every request is counted, timed and logged.
//!
//! It wraps the router once, instead of a layer per header and one for the metrics on every
//! route: axum boxes and clones a route's service per request for each layer on it, which
//! cost about a tenth of the HTTP side's CPU per request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Bytes, HttpBody};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use axum::{BoxError, Router};
use prometheus::IntGauge;
use tower_service::Service;

use crate::metrics::Metrics;

/// The nginx front's security headers (guide section 5.5), on every response.
pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "SAMEORIGIN"),
    ("strict-transport-security", "max-age=31536000; includeSubDomains"),
    ("content-security-policy", "default-src 'self'"),
    ("cache-control", "no-store"),
];

/// The path label of requests to a path no route owns.
pub const UNMATCHED: &str = "unmatched";

/// The router, with security headers, metrics and a log line for every request.
#[derive(Clone)]
pub struct Observed {
    router: Router,
    metrics: Arc<Metrics>,
    /// Every path a route owns: the metrics' path label is one of these or [`UNMATCHED`], so
    /// a client cannot grow the label set. A `{…}` segment matches any one segment.
    routes: Arc<[String]>,
}

impl Observed {
    /// Wraps `router`, whose routes own exactly `routes`.
    pub fn new(router: Router, metrics: Arc<Metrics>, routes: Vec<String>) -> Self {
        Self {
            router,
            metrics,
            routes: routes.into(),
        }
    }
}

/// Whether `path` is one of `route`'s paths: the same segments, where a `{…}` segment of the
/// route matches any one non-empty segment.
fn route_matches(route: &str, path: &str) -> bool {
    if !route.contains('{') {
        return route == path;
    }
    let (mut r, mut p) = (route.split('/'), path.split('/'));
    loop {
        match (r.next(), p.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.starts_with('{') && a.ends_with('}') && !b.is_empty() => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Counts a request as in flight until dropped, also when its client goes away first.
struct InFlight(IntGauge);

impl InFlight {
    fn start(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Sets every security header, replacing any value a handler set.
fn add_security_headers(headers: &mut HeaderMap) {
    for (name, value) in SECURITY_HEADERS {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
}

impl<B> Service<axum::http::Request<B>> for Observed
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        // The router takes any such body as it is (it boxes it itself).
        let started = Instant::now();
        let route = self.routes.iter().position(|r| route_matches(r, req.uri().path()));
        let method_label = crate::metrics::method_label(req.method());
        let in_flight = InFlight::start(&self.metrics.in_flight);
        let response = self.router.call(req);
        let (metrics, routes) = (self.metrics.clone(), self.routes.clone());
        Box::pin(async move {
            let mut response = match response.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            drop(in_flight);
            add_security_headers(response.headers_mut());
            let path = route.map_or(UNMATCHED, |i| routes[i].as_str());
            let status = response.status();
            let seconds = started.elapsed().as_secs_f64();
            metrics
                .requests
                .with_label_values(&[path, method_label, status.as_str()])
                .inc();
            metrics.latency.with_label_values(&[path]).observe(seconds);
            tracing::info!(
                method = method_label,
                path,
                status = status.as_u16(),
                ms = format!("{:.2}", seconds * 1e3),
                "request"
            );
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::{Method, StatusCode};
    use axum::routing::get;

    fn observed() -> (Observed, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let router = Router::new().route("/health", get(|| async { "OK" })).route(
            "/cached",
            get(|| async { ([("cache-control", "max-age=60"), ("x-own", "kept")], "body") }),
        );
        let routes = vec!["/health".to_string(), "/cached".to_string()];
        (Observed::new(router, metrics.clone(), routes), metrics)
    }

    async fn get_path(service: &mut Observed, path: &str) -> Response {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        match service.call(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    #[tokio::test]
    async fn every_response_carries_the_security_headers_replacing_a_handlers_own() {
        let (mut service, _) = observed();
        for path in ["/health", "/cached", "/nowhere"] {
            let response = get_path(&mut service, path).await;
            for (name, value) in SECURITY_HEADERS {
                let got: Vec<_> = response.headers().get_all(name).iter().collect();
                assert_eq!(got, [value], "{path}: {name}");
            }
        }
        let response = get_path(&mut service, "/cached").await;
        assert_eq!(response.headers()["x-own"], "kept");
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_with_unknown_paths_under_one_label() {
        let (mut service, metrics) = observed();
        assert_eq!(get_path(&mut service, "/health").await.status(), StatusCode::OK);
        for path in ["/a", "/b?x=1", "/health/"] {
            assert_eq!(get_path(&mut service, path).await.status(), StatusCode::NOT_FOUND);
        }
        let count = |labels: &[&str]| metrics.requests.with_label_values(labels).get();
        assert_eq!(count(&["/health", "GET", "200"]), 1);
        assert_eq!(count(&[UNMATCHED, "GET", "404"]), 3);
        assert_eq!(metrics.latency.with_label_values(&[UNMATCHED]).get_sample_count(), 3);
        assert_eq!(metrics.in_flight.get(), 0);
    }

    #[test]
    fn templated_routes_match_one_segment_per_placeholder() {
        let route = "/v2/models/{name}/infer";
        assert!(route_matches(route, "/v2/models/digits/infer"));
        assert!(!route_matches(route, "/v2/models//infer"));
        assert!(!route_matches(route, "/v2/models/a/b/infer"));
        assert!(!route_matches(route, "/v2/models/digits/infer/x"));
        assert!(route_matches("/health", "/health") && !route_matches("/health", "/healthz"));
    }

    #[tokio::test]
    async fn made_up_methods_do_not_grow_the_metrics() {
        let (mut service, metrics) = observed();
        for i in 0..50 {
            let method = Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
            let req = Request::builder()
                .method(method)
                .uri("/health")
                .body(Body::empty())
                .unwrap();
            let _ = service.call(req).await;
        }
        let text = metrics.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("kiln_http_requests_total{"))
            .count();
        assert_eq!(series, 1, "{text}");
        assert!(text.contains("method=\"other\""), "{text}");
    }

    #[tokio::test]
    async fn a_request_whose_client_went_away_is_no_longer_in_flight() {
        let metrics = Arc::new(Metrics::new());
        let router = Router::new().route("/slow", get(std::future::pending::<&'static str>));
        let mut service = Observed::new(router, metrics.clone(), vec!["/slow".into()]);
        let req = Request::builder().uri("/slow").body(Body::empty()).unwrap();
        let pending = service.call(req);
        assert_eq!(metrics.in_flight.get(), 1);
        drop(pending);
        assert_eq!(metrics.in_flight.get(), 0);
    }
}
