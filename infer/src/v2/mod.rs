//! The Open Inference Protocol (KServe v2, Triton's HTTP/REST API) beside the contract
//! route, so a Triton client can switch to kiln-serve unchanged:
//!
//! - `GET /v2`: the server's name, version and extensions;
//! - `GET /v2/health/live` (200 while the process serves) and `/v2/health/ready` (200 once the
//!   models found at start are loaded and warmed up, 503 before and from the moment shutdown
//!   begins);
//! - `GET /v2/models/{name}[/versions/{v}]`: the model's metadata, `…/ready` its readiness;
//! - `POST /v2/models/{name}[/versions/{v}]/infer`: inference ([`codec`]): one input, either
//!   `BYTES` encoded images (decoded and preprocessed as on the contract route) or an `FP32`
//!   tensor `[N, C, H, W]` already preprocessed; outputs `probabilities` (`FP32 [N, classes]`)
//!   and `label` (`BYTES [N]`) for a classifier; `detection_boxes` (`FP32 [K, 4]`, `[ymin,
//!   xmin, ymax, xmax]` in image pixels), `detection_scores`, `detection_classes` and
//!   `detection_image` (the index of each box's image) for a detector;
//! - `POST /v2/repository/index` and `POST /v2/repository/models/{name}/load|unload`: Triton's
//!   model repository extension ([`repository`]).
//!
//! Every served model answers under its own name; a model path names a model of the
//! repository ([`crate::repository`]), or the one package's folder name with version 1.
//! Errors are the protocol's `{"error": "…"}` with the contract route's status codes.

pub mod codec;
pub mod repository;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::time::Instant;

use self::codec::{encode_response, parse_request, InferRequest, InputData, Output, OutputData};
use crate::errors::ApiError;
use crate::preprocess::Prepared;
use crate::registry::Prediction;
use crate::repository::Served;
use crate::response::{detection_rows, label_text, top_class, Answer};
use crate::routes::{answer, client_timeout, prepare_off_executor, AppState, FieldFiles};

/// The binary tensor data extension's header.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Adds the v2 routes to `router`.
pub fn routes(router: Router<Arc<AppState>>) -> Router<Arc<AppState>> {
    router
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata_version))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready_version))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_version))
        .route("/v2/repository/index", post(repository::index))
        .route("/v2/repository/models/{name}/load", post(repository::load))
        .route("/v2/repository/models/{name}/unload", post(repository::unload))
}

/// The v2 paths the request metrics name: templates, whose `{…}` segments match any one
/// segment, so that neither model names nor made-up paths grow the label set.
pub fn metric_routes() -> Vec<String> {
    let mut routes = vec![
        "/v2".to_string(),
        "/v2/health/live".into(),
        "/v2/health/ready".into(),
        "/v2/repository/index".into(),
        "/v2/repository/models/{name}/load".into(),
        "/v2/repository/models/{name}/unload".into(),
    ];
    for b in ["/v2/models/{name}", "/v2/models/{name}/versions/{version}"] {
        routes.extend([b.to_string(), format!("{b}/ready"), format!("{b}/infer")]);
    }
    routes
}

/// A failed v2 request: its status and `{"error": msg}`.
pub(crate) struct V2Error(pub(crate) ApiError);

impl From<ApiError> for V2Error {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let mut response = (self.0.status, Json(json!({ "error": self.0.msg }))).into_response();
        if let Some(seconds) = self.0.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// What a model path names.
enum Lookup {
    /// The version serving now.
    Serving(Arc<Served>),
    /// A known model with no version serving, and why.
    NotServing(String),
}

/// The model (and version) a path names; 404 for a name the server does not know, or a
/// version other than the one serving.
fn lookup(state: &AppState, name: &str, version: Option<&str>) -> Result<Lookup, V2Error> {
    let table = &state.repository.table;
    let entries = table.read();
    let what = || match version {
        Some(v) => format!("{name:?} version {v:?}"),
        None => format!("{name:?}"),
    };
    let Some(entry) = entries.get(name) else {
        let known: Vec<&str> = entries.keys().map(String::as_str).collect();
        return Err(V2Error(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no model {}: this server serves {}", what(), known.join(", ")),
        )));
    };
    match &entry.serving {
        Some(served) if version.is_none_or(|v| v == served.info.version) => Ok(Lookup::Serving(served.clone())),
        Some(served) => Err(V2Error(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no model {}: {name:?} serves version {:?}", what(), served.info.version),
        ))),
        None => Ok(Lookup::NotServing(match entry.state() {
            crate::repository::ModelState::Unavailable(why) => format!("model {name:?} is unavailable: {why}"),
            _ => format!("model {name:?} is still loading"),
        })),
    }
}

/// The version a path names, or why it cannot answer (404, or 503 while it does not serve).
fn serving(state: &AppState, name: &str, version: Option<&str>) -> Result<Arc<Served>, V2Error> {
    match lookup(state, name, version)? {
        Lookup::Serving(served) => Ok(served),
        Lookup::NotServing(why) => Err(V2Error(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why))),
    }
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "kiln-serve",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

async fn live() -> StatusCode {
    StatusCode::OK
}

async fn ready(State(state): State<Arc<AppState>>) -> StatusCode {
    readiness(&state)
}

fn readiness(state: &AppState) -> StatusCode {
    if state.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn model_ready(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    model_readiness(&state, &name, None)
}

async fn model_ready_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    model_readiness(&state, &name, Some(&version))
}

fn model_readiness(state: &AppState, name: &str, version: Option<&str>) -> Response {
    match lookup(state, name, version) {
        Err(e) => e.into_response(),
        Ok(Lookup::Serving(_)) if !state.draining.load(std::sync::atomic::Ordering::Acquire) => {
            StatusCode::OK.into_response()
        }
        Ok(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn model_metadata(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    metadata(&state, &name, None)
}

async fn model_metadata_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    metadata(&state, &name, Some(&version))
}

fn metadata(state: &AppState, name: &str, version: Option<&str>) -> Response {
    let served = match serving(state, name, version) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let m = &served.info;
    let [c, h, w] = m.input;
    let tensor = |name: &str, datatype: &str, shape: Value| json!({"name": name, "datatype": datatype, "shape": shape});
    let outputs = if m.detector {
        vec![
            tensor("detection_boxes", "FP32", json!([-1, 4])),
            tensor("detection_scores", "FP32", json!([-1])),
            tensor("detection_classes", "BYTES", json!([-1])),
            tensor("detection_image", "INT32", json!([-1])),
        ]
    } else {
        vec![
            tensor("probabilities", "FP32", json!([-1, served.labels.len()])),
            tensor("label", "BYTES", json!([-1])),
        ]
    };
    Json(json!({
        "name": m.name,
        "versions": [m.version],
        "platform": "kiln",
        "inputs": [
            tensor("image", "BYTES", json!([-1])),
            tensor("input", "FP32", json!([-1, c, h, w])),
        ],
        "outputs": outputs,
    }))
    .into_response()
}

async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    infer_checked(state, name, None, headers, body).await
}

async fn infer_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    infer_checked(state, name, Some(version), headers, body).await
}

async fn infer_checked(
    state: Arc<AppState>,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let served = match serving(&state, &name, version.as_deref()) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    // Triton's `timeout` request parameter (microseconds) is read with the body; the
    // contract route's header works here too.
    let timeout = match client_timeout(&headers, state.timeout) {
        Ok(t) => t,
        Err(e) => return V2Error(e).into_response(),
    };
    let deadline = Instant::now() + timeout;
    match tokio::time::timeout_at(
        deadline,
        infer_inner(&state, &served, &headers, &body, deadline.into_std()),
    )
    .await
    {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => e.into_response(),
        Err(_) => V2Error(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the request took longer than {} s", timeout.as_secs_f64()),
        ))
        .into_response(),
    }
}

async fn infer_inner(
    state: &AppState,
    served: &Served,
    headers: &HeaderMap,
    body: &[u8],
    deadline: std::time::Instant,
) -> Result<Response, V2Error> {
    let header_len = headers
        .get(HEADER_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| ApiError::bad_request(format!("{HEADER_LENGTH} {v:?} is not a byte count")))
        })
        .transpose()?;
    let request = parse_request(body, header_len).map_err(|e| ApiError::bad_request(e.0))?;
    let deadline = match request.timeout {
        Some(t) => deadline.min(std::time::Instant::now() + t),
        None => deadline,
    };
    let answers = run(state, served, &request, deadline).await?;
    let outputs = outputs(served, &answers);
    let (bytes, header) = encode_response(&served.info.name, &served.info.version, &request, outputs)
        .map_err(|e| ApiError::bad_request(e.0))?;
    let mut response = bytes.into_response();
    let content_type = if header.is_some() {
        "application/octet-stream"
    } else {
        "application/json"
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(n) = header {
        response.headers_mut().insert(HEADER_LENGTH, HeaderValue::from(n));
    }
    Ok(response)
}

/// The model's answers for the request's one input.
async fn run(
    state: &AppState,
    served: &Served,
    request: &InferRequest,
    deadline: std::time::Instant,
) -> Result<Vec<Answer>, V2Error> {
    let [input] = request.inputs.as_slice() else {
        return Err(ApiError::bad_request(format!(
            "the request has {} inputs; kiln's models take one (\"image\" as BYTES, or \"input\" as FP32)",
            request.inputs.len()
        ))
        .into());
    };
    let guard = served.batcher.preparing();
    let prepared = match &input.data {
        InputData::Bytes(images) => {
            let fields = vec![FieldFiles {
                name: input.name.clone(),
                files: images.iter().map(|b| (String::new(), b.clone())).collect(),
            }];
            prepare_off_executor(state, served, fields).await?
        }
        InputData::F32(values) => vec![(input.name.clone(), tensors(served, &input.name, &input.shape, values)?)],
    };
    let mut fields = answer(served, prepared, guard, Some(deadline)).await?;
    Ok(fields.pop().map(|(_, answers)| answers).unwrap_or_default())
}

/// An `FP32` input `[N, C, H, W]` of the model's input shape as `N` prepared inputs.
fn tensors(served: &Served, name: &str, shape: &[usize], values: &[f32]) -> Result<Vec<(String, Prepared)>, ApiError> {
    let [c, h, w] = served.info.input;
    if shape.len() != 4 || shape[1..] != [c, h, w] || shape[0] == 0 {
        return Err(ApiError::bad_request(format!(
            "input {name:?}: FP32 shape {shape:?} is not [N, {c}, {h}, {w}] (the model's preprocessed input)"
        )));
    }
    if shape[0] > served.batcher.capacity() {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request has more than {} images, the most one request may send (--queue)",
                served.batcher.capacity()
            ),
        ));
    }
    Ok(values
        .chunks_exact(c * h * w)
        .map(|chunk| {
            let prepared = Prepared {
                input: chunk.to_vec(),
                size: [w as u32, h as u32],
                ratio: 1.0,
            };
            (String::new(), prepared)
        })
        .collect())
}

/// The protocol's output tensors for `answers`.
fn outputs(served: &Served, answers: &[Answer]) -> Vec<Output> {
    let n = answers.len();
    if !served.info.detector {
        let classes = served.labels.len();
        let mut probabilities = Vec::with_capacity(n * classes);
        let mut labels = Vec::with_capacity(n);
        for a in answers {
            if let Prediction::Classes(p) = &a.prediction {
                probabilities.extend_from_slice(p);
                labels.push(label_text(&served.labels, top_class(p)));
            }
        }
        return vec![
            Output {
                name: "probabilities".into(),
                shape: vec![n, classes],
                data: OutputData::F32(probabilities),
            },
            Output {
                name: "label".into(),
                shape: vec![n],
                data: OutputData::Text(labels),
            },
        ];
    }
    let (mut boxes, mut scores, mut classes, mut images) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, a) in answers.iter().enumerate() {
        if let Prediction::Objects(objects) = &a.prediction {
            let rows = detection_rows(&served.labels, a, objects);
            images.extend(std::iter::repeat_n(i as i32, rows.scores.len()));
            boxes.extend(rows.boxes.into_iter().flatten());
            scores.extend(rows.scores);
            classes.extend(rows.classes);
        }
    }
    let k = scores.len();
    vec![
        Output {
            name: "detection_boxes".into(),
            shape: vec![k, 4],
            data: OutputData::F32(boxes),
        },
        Output {
            name: "detection_scores".into(),
            shape: vec![k],
            data: OutputData::F32(scores),
        },
        Output {
            name: "detection_classes".into(),
            shape: vec![k],
            data: OutputData::Text(classes),
        },
        Output {
            name: "detection_image".into(),
            shape: vec![k],
            data: OutputData::I32(images),
        },
    ]
}
