//! HTTP and WebSocket routes: predict (`POST /` and every `apis` path), `GET /health`,
//! `GET /metrics`, `GET /ws`; JSON errors for everything else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::body::Body;
use axum::extract::multipart::MultipartError;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::batcher::{Expired, Preparing};
use crate::decode_budget::DecodeBudget;
use crate::errors::ApiError;
use crate::metrics::Metrics;
use crate::observe::Observed;
use crate::preprocess::{Prepared, PreprocessError, Preprocessor};
use crate::repository::{Repository, Served};
use crate::response::{render, Answer};

/// Everything a handler needs.
pub struct AppState {
    /// Set once the models found at start are loaded, warmed up and parity-checked.
    pub ready: AtomicBool,
    /// The served models.
    pub repository: Arc<Repository>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Largest accepted request body in bytes.
    pub max_body: usize,
    /// Longest a predict request may take, body and decode included: a body still arriving
    /// then answers 408, anything later 504.
    pub timeout: Duration,
    /// The memory and decode slots that concurrent decodes share.
    pub budget: DecodeBudget,
    /// Set when shutdown begins: readiness turns false before in-flight requests drain.
    pub draining: AtomicBool,
    /// The prediction page's description of the contract route's model as configured at
    /// start, shown until a version of it serves (`GET /info`).
    pub page_info: Value,
}

impl AppState {
    /// Whether the models found at start are loaded and the server is not shutting down.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}

/// Paths the server owns; an `apis` entry may not take them (nor any path under `/v2`).
const RESERVED: [&str; 3] = ["/health", "/metrics", "/ws"];

/// Predict paths: `/` plus every `post` entry of the package's `apis` that is a plain path
/// not already taken. Returns the paths and a warning for each entry left out.
pub fn predict_paths(apis: &[kiln_models::package::ApiSpec]) -> (Vec<String>, Vec<String>) {
    let mut paths = vec!["/".to_string()];
    let mut skipped = Vec::new();
    for api in apis {
        let url = api.url.trim();
        let plain = url.starts_with('/') && !url.contains(['{', '}', '*', ':', '?', '#']) && !url.contains("//");
        if !api.method.eq_ignore_ascii_case("post") {
            skipped.push(format!("{} {url}: only post endpoints predict", api.method));
        } else if !plain
            || RESERVED.contains(&url)
            || crate::page::PAGE_ROUTES.contains(&url)
            || url == "/v2"
            || url.starts_with("/v2/")
        {
            skipped.push(format!("post {url}: not a plain path the server can own"));
        } else if !paths.iter().any(|p| p == url) {
            paths.push(url.to_string());
        }
    }
    (paths, skipped)
}

/// The whole application: every route, JSON errors for the rest, and around it all the
/// security headers, metrics and request log of [`Observed`].
pub fn app(state: Arc<AppState>, paths: &[String]) -> Observed {
    let mut router = crate::v2::routes(Router::new())
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/ws", get(websocket))
        .route("/info", get(crate::page::info))
        .route("/page.js", get(crate::page::script))
        .route("/page.css", get(crate::page::style));
    for path in paths {
        router = if path == "/" {
            router.route(path, post(predict).get(crate::page::index))
        } else {
            router.route(path, post(predict))
        };
    }
    let metrics = state.metrics.clone();
    let v2_routes = crate::v2::metric_routes();
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body))
        .with_state(state);
    let routes = RESERVED
        .iter()
        .map(|r| r.to_string())
        .chain(v2_routes)
        .chain(crate::page::PAGE_ROUTES.iter().map(|r| r.to_string()))
        .chain(paths.iter().cloned())
        .collect();
    Observed::new(router, metrics, routes)
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.repository.table.default_serving().is_some() {
        (StatusCode::OK, Json(json!({ "status": "OK" }))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "LOADING" }))).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Whether the query string asks for detail (`?detail=true` or `?detail=1`).
fn wants_detail(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv.split_once('='), Some(("detail", "true" | "1"))) || kv == "detail")
    })
}

/// One multipart field (or v2 input) and its files, in upload order.
pub(crate) struct FieldFiles {
    pub(crate) name: String,
    pub(crate) files: Vec<(String, Vec<u8>)>,
}

/// The header a client sets to give its request a deadline, in milliseconds from arrival.
pub const TIMEOUT_HEADER: &str = "x-request-timeout-ms";

/// The request's own deadline (`X-Request-Timeout-Ms`), when it sets one shorter than the
/// server's `--timeout-s`; a value that is not a whole number of milliseconds is a 400.
pub(crate) fn client_timeout(headers: &axum::http::HeaderMap, server: Duration) -> Result<Duration, ApiError> {
    let Some(v) = headers.get(TIMEOUT_HEADER) else {
        return Ok(server);
    };
    let ms = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!("{TIMEOUT_HEADER} {v:?} is not a whole number of milliseconds"))
        })?;
    Ok(Duration::from_millis(ms).min(server))
}

async fn predict(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let detail = wants_detail(req.uri().query());
    let timeout = match client_timeout(req.headers(), state.timeout) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let deadline = Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, predict_inner(state, detail, req, deadline)).await {
        Ok(Ok(body)) => Json(body).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the request took longer than {} s", timeout.as_secs_f64()),
        )
        .into_response(),
    }
}

async fn predict_inner(state: Arc<AppState>, detail: bool, req: Request, deadline: Instant) -> Result<Value, ApiError> {
    let served = default_model(&state)?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !content_type.to_ascii_lowercase().starts_with("multipart/form-data") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("expected multipart/form-data, got {:?}", content_type),
        ));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.max_body) {
        return Err(too_large(state.max_body));
    }
    let guard = served.batcher.preparing();
    // A body that has not arrived by the deadline is the client's fault: 408, not 504. (The
    // outer timeout polls this future first, so at the deadline this answer wins.)
    let fields = tokio::time::timeout_at(deadline, read_fields(&state, &served, req))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    state.timeout.as_secs_f64()
                ),
            )
        })??;
    let prepared = prepare_off_executor(&state, &served, fields).await?;
    let answers = answer(&served, prepared, guard, Some(deadline.into_std())).await?;
    Ok(render(&served.labels, &answers, detail))
}

/// Queues every prepared file for the model, ends the request's `preparing` mark once they
/// are all queued, then awaits the predictions, grouped by field. Files still queued at
/// `deadline` are dropped unrun and the request answered 504; a full queue is 429 with
/// `Retry-After`.
pub(crate) async fn answer(
    served: &Served,
    prepared: PreparedFields,
    preparing: Preparing,
    deadline: Option<std::time::Instant>,
) -> Result<Vec<(String, Vec<Answer>)>, ApiError> {
    let mut inputs = Vec::new();
    let mut pending = Vec::new();
    for (name, files) in prepared {
        for (file_name, file) in files {
            inputs.push(file.input);
            pending.push((name.clone(), file_name, file.size, file.ratio));
        }
    }
    let receivers = served.batcher.submit_all(inputs, deadline).map_err(|o| {
        let seconds = o.retry_after.as_secs().max(1);
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("the inference queue is full; retry in {seconds} s"),
        )
        .with_retry_after(seconds)
    })?;
    drop(preparing);
    let mut answers: Vec<(String, Vec<Answer>)> = Vec::new();
    for ((name, file_name, size, ratio), rx) in pending.into_iter().zip(receivers) {
        let prediction = match rx.await {
            Ok(Ok(prediction)) => prediction,
            Ok(Err(Expired)) => {
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the request's deadline passed while it waited for the model",
                ))
            }
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the model failed on this request's batch (the server log says why)",
                ))
            }
        };
        let answer = Answer {
            file_name,
            size,
            ratio,
            prediction,
        };
        match answers.last_mut() {
            Some((n, files)) if *n == name => files.push(answer),
            _ => answers.push((name, vec![answer])),
        }
    }
    Ok(answers)
}

/// The contract route's model, or 503 while no version of it serves.
fn default_model(state: &AppState) -> Result<Arc<Served>, ApiError> {
    let table = &state.repository.table;
    table.default_serving().ok_or_else(|| {
        let msg = if state.ready.load(Ordering::Acquire) {
            format!("model {:?} is not loaded", table.default_name())
        } else {
            "the model is still loading".to_string()
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, msg)
    })
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is over the limit of {limit} bytes"),
    )
}

fn multipart_error(state: &AppState, e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(state.max_body)
    } else {
        ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
    }
}

/// Reads every file field; plain text fields (no file name, text content type) are ignored.
async fn read_fields(state: &AppState, served: &Served, req: Request<Body>) -> Result<Vec<FieldFiles>, ApiError> {
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("malformed multipart request: {}", e.body_text())))?;
    let mut fields: Vec<FieldFiles> = Vec::new();
    let max_files = served.batcher.capacity();
    let mut count = 0;
    while let Some(field) = multipart.next_field().await.map_err(|e| multipart_error(state, e))? {
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let is_text = field.content_type().is_some_and(|ct| ct.starts_with("text/"));
        if file_name.is_none() && (is_text || field.content_type().is_none()) {
            continue;
        }
        if name.is_empty() {
            return Err(ApiError::bad_request("a file part has no field name"));
        }
        count += 1;
        if count > max_files {
            // A retry could never succeed: the queue never holds more than this.
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request has more than {max_files} images, the most one request may send (--queue)"),
            ));
        }
        let bytes = field.bytes().await.map_err(|e| multipart_error(state, e))?;
        let file = (file_name.unwrap_or_default(), bytes.to_vec());
        match fields.iter_mut().find(|f| f.name == name) {
            Some(f) => f.files.push(file),
            None => fields.push(FieldFiles {
                name,
                files: vec![file],
            }),
        }
    }
    if fields.is_empty() {
        return Err(ApiError::bad_request(
            "no file in the request: send each image as a file part, e.g. -F image=@digit.png",
        ));
    }
    Ok(fields)
}

/// Each field's files, prepared, with their file names.
pub(crate) type PreparedFields = Vec<(String, Vec<(String, Prepared)>)>;

/// Decodes and transforms every file on a blocking thread, never on the threads that answer
/// requests. The headers are read first: an image over the pixel limits, or needing more
/// memory than the whole decode budget, is refused before anything is decoded; otherwise the
/// request waits for its share of the budget (the largest image's peak, since a request's
/// images are decoded one after another, plus every model input).
pub(crate) async fn prepare_off_executor(
    state: &AppState,
    served: &Served,
    fields: Vec<FieldFiles>,
) -> Result<PreparedFields, ApiError> {
    let input_bytes = served.preprocessor.input_len() as u64 * 4;
    let mut peak = 0;
    let mut inputs = 0;
    for f in &fields {
        for (file_name, bytes) in &f.files {
            let plan = served
                .preprocessor
                .plan(bytes)
                .map_err(|e| upload_error(&f.name, file_name, e))?;
            let over = |budget| PreprocessError::OverBudget {
                width: plan.width,
                height: plan.height,
                need: plan.bytes,
                budget,
            };
            state
                .budget
                .check(plan.bytes)
                .map_err(|o| upload_error(&f.name, file_name, over(o.budget)))?;
            peak = peak.max(plan.bytes);
            inputs += input_bytes;
        }
    }
    let reservation = state
        .budget
        .reserve((peak + inputs).min(state.budget.bytes()))
        .await
        .map_err(|o| {
            ApiError::bad_request(format!(
                "the request's images need more than the decode budget of {} bytes",
                o.budget
            ))
        })?;
    let preprocessor = served.preprocessor.clone();
    tokio::task::spawn_blocking(move || {
        let _reservation = reservation;
        prepare_all(&preprocessor, fields)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("preprocessing failed: {e}")))?
}

fn prepare_all(p: &Preprocessor, fields: Vec<FieldFiles>) -> Result<PreparedFields, ApiError> {
    fields
        .into_iter()
        .map(|f| {
            let files = f
                .files
                .into_iter()
                .map(|(file_name, bytes)| {
                    p.prepare(&bytes)
                        .map(|input| (file_name.clone(), input))
                        .map_err(|e| upload_error(&f.name, &file_name, e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((f.name, files))
        })
        .collect()
}

fn upload_error(field: &str, file_name: &str, e: PreprocessError) -> ApiError {
    let file = if file_name.is_empty() {
        String::new()
    } else {
        format!(" ({file_name})")
    };
    ApiError::bad_request(format!("field {field:?}{file}: {e}"))
}

async fn websocket(
    State(state): State<Arc<AppState>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::new(
                rejection.status(),
                format!("/ws takes WebSocket upgrades only: {}", rejection.body_text()),
            )
            .into_response()
        }
    };
    let max = state.max_body;
    ws.max_message_size(max)
        .on_upgrade(move |socket| ws_session(state, socket))
}

/// Each binary message is one image; each reply is the HTTP route's JSON for field `image`.
async fn ws_session(state: Arc<AppState>, mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Binary(bytes) => match ws_predict(&state, bytes.to_vec()).await {
                Ok(v) => v,
                Err(e) => json!({ "error_code": e.code, "error_msg": e.msg }),
            },
            Message::Text(_) => {
                let e = ApiError::bad_request("send each image as one binary message");
                json!({ "error_code": e.code, "error_msg": e.msg })
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
            break;
        }
    }
}

async fn ws_predict(state: &Arc<AppState>, bytes: Vec<u8>) -> Result<Value, ApiError> {
    let served = default_model(state)?;
    let fields = vec![FieldFiles {
        name: "image".into(),
        files: vec![(String::new(), bytes)],
    }];
    let guard = served.batcher.preparing();
    let prepared = prepare_off_executor(state, &served, fields).await?;
    let deadline = std::time::Instant::now() + state.timeout;
    let answers = answer(&served, prepared, guard, Some(deadline)).await?;
    Ok(render(&served.labels, &answers, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_models::package::{ApiSpec, BodySpec};

    fn api(url: &str, method: &str) -> ApiSpec {
        let body = BodySpec {
            content_type: "application/json".into(),
            data: None,
        };
        ApiSpec {
            url: url.into(),
            method: method.into(),
            request: body.clone(),
            response: body,
        }
    }

    #[test]
    fn predict_paths_take_plain_post_urls_only() {
        let (paths, skipped) = predict_paths(&[
            api("/", "post"),
            api("/greet", "POST"),
            api("/goodbye", "get"),
            api("/health", "post"),
            api("/{id}", "post"),
        ]);
        assert_eq!(paths, vec!["/", "/greet"]);
        assert_eq!(skipped.len(), 3, "{skipped:?}");
    }

    #[test]
    fn detail_flag_parsing() {
        assert!(wants_detail(Some("detail=true")));
        assert!(wants_detail(Some("a=b&detail=1")));
        assert!(wants_detail(Some("detail")));
        assert!(!wants_detail(Some("detail=false")));
        assert!(!wants_detail(Some("details=true")));
        assert!(!wants_detail(None));
    }
}
