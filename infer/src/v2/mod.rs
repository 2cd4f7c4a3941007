//! The Open Inference Protocol (KServe v2, Triton's HTTP/REST API) beside the contract
//! route, so a Triton client can switch to kiln-serve unchanged:
//!
//! - `GET /v2`: the server's name, version and extensions;
//! - `GET /v2/health/live` (200 while the process serves) and `/v2/health/ready` (200 once the
//!   model is loaded and warmed up, 503 before and from the moment shutdown begins);
//! - `GET /v2/models/{name}[/versions/{v}]`: the model's metadata, `…/ready` its readiness;
//! - `POST /v2/models/{name}[/versions/{v}]/infer`: inference ([`codec`]): one input, either
//!   `BYTES` encoded images (decoded and preprocessed as on the contract route) or an `FP32`
//!   tensor `[N, C, H, W]` already preprocessed; outputs `probabilities` (`FP32 [N, classes]`)
//!   and `label` (`BYTES [N]`) for a classifier; `detection_boxes` (`FP32 [K, 4]`, `[ymin,
//!   xmin, ymax, xmax]` in image pixels), `detection_scores`, `detection_classes` and
//!   `detection_image` (the index of each box's image) for a detector.
//!
//! Errors are the protocol's `{"error": "…"}` with the contract route's status codes.

pub mod codec;

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
use crate::response::{detection_rows, label_text, top_class, Answer};
use crate::routes::{answer, client_timeout, ensure_ready, prepare_off_executor, AppState, FieldFiles, ModelInfo};

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
}

/// The v2 paths the request metrics name (the served model's; other names count as
/// unmatched).
pub fn metric_routes(model: &ModelInfo) -> Vec<String> {
    let base = format!("/v2/models/{}", model.name);
    let versioned = format!("{base}/versions/{}", model.version);
    let mut routes = vec!["/v2".into(), "/v2/health/live".into(), "/v2/health/ready".into()];
    for b in [base, versioned] {
        routes.extend([b.clone(), format!("{b}/ready"), format!("{b}/infer")]);
    }
    routes
}

/// A failed v2 request: its status and `{"error": msg}`.
struct V2Error(ApiError);

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

fn unknown_model(state: &AppState, name: &str, version: Option<&str>) -> Option<V2Error> {
    let model = &state.model;
    let known = name == model.name && version.is_none_or(|v| v == model.version);
    (!known).then(|| {
        let what = match version {
            Some(v) => format!("{name:?} version {v:?}"),
            None => format!("{name:?}"),
        };
        V2Error(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no model {what}: this server serves {:?} version {:?}",
                model.name, model.version
            ),
        ))
    })
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
    match unknown_model(&state, &name, None) {
        Some(e) => e.into_response(),
        None => readiness(&state).into_response(),
    }
}

async fn model_ready_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    match unknown_model(&state, &name, Some(&version)) {
        Some(e) => e.into_response(),
        None => readiness(&state).into_response(),
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
    if let Some(e) = unknown_model(state, name, version) {
        return e.into_response();
    }
    let m = &state.model;
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
            tensor("probabilities", "FP32", json!([-1, state.labels.len()])),
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
    if let Some(e) = unknown_model(&state, &name, version.as_deref()) {
        return e.into_response();
    }
    // Triton's `timeout` request parameter (microseconds) is read with the body; the
    // contract route's header works here too.
    let timeout = match client_timeout(&headers, state.timeout) {
        Ok(t) => t,
        Err(e) => return V2Error(e).into_response(),
    };
    let deadline = Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, infer_inner(&state, &headers, &body, deadline.into_std())).await {
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
    headers: &HeaderMap,
    body: &[u8],
    deadline: std::time::Instant,
) -> Result<Response, V2Error> {
    ensure_ready(state)?;
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
    let answers = run(state, &request, deadline).await?;
    let outputs = outputs(state, &answers);
    let (bytes, header) = encode_response(&state.model.name, &state.model.version, &request, outputs)
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
async fn run(state: &AppState, request: &InferRequest, deadline: std::time::Instant) -> Result<Vec<Answer>, V2Error> {
    let [input] = request.inputs.as_slice() else {
        return Err(ApiError::bad_request(format!(
            "the request has {} inputs; kiln's models take one (\"image\" as BYTES, or \"input\" as FP32)",
            request.inputs.len()
        ))
        .into());
    };
    let guard = state.batcher.preparing();
    let prepared = match &input.data {
        InputData::Bytes(images) => {
            let fields = vec![FieldFiles {
                name: input.name.clone(),
                files: images.iter().map(|b| (String::new(), b.clone())).collect(),
            }];
            prepare_off_executor(state, fields).await?
        }
        InputData::F32(values) => vec![(input.name.clone(), tensors(state, &input.name, &input.shape, values)?)],
    };
    let mut fields = answer(state, prepared, guard, Some(deadline)).await?;
    Ok(fields.pop().map(|(_, answers)| answers).unwrap_or_default())
}

/// An `FP32` input `[N, C, H, W]` of the model's input shape as `N` prepared inputs.
fn tensors(state: &AppState, name: &str, shape: &[usize], values: &[f32]) -> Result<Vec<(String, Prepared)>, ApiError> {
    let [c, h, w] = state.model.input;
    if shape.len() != 4 || shape[1..] != [c, h, w] || shape[0] == 0 {
        return Err(ApiError::bad_request(format!(
            "input {name:?}: FP32 shape {shape:?} is not [N, {c}, {h}, {w}] (the model's preprocessed input)"
        )));
    }
    if shape[0] > state.batcher.capacity() {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request has more than {} images, the most one request may send (--queue)",
                state.batcher.capacity()
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
fn outputs(state: &AppState, answers: &[Answer]) -> Vec<Output> {
    let n = answers.len();
    if !state.model.detector {
        let classes = state.labels.len();
        let mut probabilities = Vec::with_capacity(n * classes);
        let mut labels = Vec::with_capacity(n);
        for a in answers {
            if let Prediction::Classes(p) = &a.prediction {
                probabilities.extend_from_slice(p);
                labels.push(label_text(&state.labels, top_class(p)));
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
            let rows = detection_rows(&state.labels, a, objects);
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
