//! Triton's model repository extension: `POST /v2/repository/index` lists the models and
//! their states; `POST /v2/repository/models/{name}/load` loads the model's latest version
//! beside the serving one and swaps it in (answering once it serves, or 400 with why the
//! load failed while the old version keeps serving); `…/unload` stops serving it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::V2Error;
use crate::errors::ApiError;
use crate::repository::layout::is_model_name;
use crate::repository::{Loaded, ModelState};
use crate::routes::AppState;

/// `POST /v2/repository/index`: every model with its serving version and state; a body
/// `{"ready": true}` lists only the ready ones.
pub async fn index(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let ready_only = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) if v.is_object() => v["ready"].as_bool().unwrap_or(false),
            _ => {
                return V2Error(ApiError::bad_request(
                    "the index request body must be a JSON object such as {\"ready\": true}",
                ))
                .into_response()
            }
        }
    };
    let models: Vec<Value> = state
        .repository
        .table
        .index()
        .into_iter()
        .filter(|(_, _, s)| !ready_only || *s == ModelState::Ready)
        .map(|(name, version, s)| {
            let mut m = json!({ "name": name });
            if let Some(v) = version {
                m["version"] = json!(v);
            }
            let (text, reason) = match s {
                ModelState::Ready => ("READY", None),
                ModelState::Loading => ("LOADING", None),
                ModelState::Unavailable(why) => ("UNAVAILABLE", Some(why)),
            };
            m["state"] = json!(text);
            if let Some(r) = reason {
                m["reason"] = json!(r);
            }
            m
        })
        .collect();
    Json(Value::Array(models)).into_response()
}

/// The error for a control request on a server of one package, or a bad model name.
fn refuse_control(state: &AppState, name: &str) -> Option<V2Error> {
    if !state.repository.source.is_repository() {
        return Some(V2Error(ApiError::bad_request(
            "this server serves one package (--model-dir); loading and unloading models needs --model-repository",
        )));
    }
    (!is_model_name(name)).then(|| {
        V2Error(ApiError::bad_request(format!(
            "{name:?} is not a model name (letters, digits, '_', '-' and '.')"
        )))
    })
}

/// `POST /v2/repository/models/{name}/load`.
pub async fn load(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    if let Some(e) = refuse_control(&state, &name) {
        return e.into_response();
    }
    match state.repository.sync(&name, true).await {
        Ok(Loaded::Removed) => V2Error(ApiError::bad_request(format!(
            "no model folder {name:?} in the repository"
        )))
        .into_response(),
        Ok(_) => StatusCode::OK.into_response(),
        Err(why) => V2Error(ApiError::bad_request(format!("failed to load {name:?}: {why}"))).into_response(),
    }
}

/// `POST /v2/repository/models/{name}/unload`.
pub async fn unload(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    if let Some(e) = refuse_control(&state, &name) {
        return e.into_response();
    }
    if state.repository.unload(&name).await {
        StatusCode::OK.into_response()
    } else {
        V2Error(ApiError::bad_request(format!("no model {name:?} to unload"))).into_response()
    }
}
