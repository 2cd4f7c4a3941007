//! The prediction page: `GET /` from a browser (a request that accepts HTML) serves a page
//! that uploads images to the contract route and shows each with its top classes or its
//! boxes, the latency and the raw answer; `GET /info` describes what is served. The page's
//! files are compiled into the binary and need nothing from elsewhere, within the server's
//! `Content-Security-Policy: default-src 'self'` (no inline script or style).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use kiln_models::package::{ChannelOrder, Interpolation, PixelScale, ResizeMode};
use kiln_models::PackageConfig;

use crate::errors::ApiError;
use crate::routes::AppState;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// The page's own paths besides `/`.
pub const PAGE_ROUTES: [&str; 3] = ["/info", "/page.js", "/page.css"];

/// `GET /`: the page for a browser; the method error for any other client (the contract's
/// `/` takes `POST`).
pub async fn index(headers: HeaderMap) -> Response {
    let html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if !html {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET is not allowed on /: POST images as multipart/form-data (a browser gets the prediction page)",
        )
        .into_response();
    }
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

/// `GET /page.js`.
pub async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

/// `GET /page.css`.
pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// `GET /info`: what is served, and whether it is ready.
pub async fn info(State(state): State<Arc<AppState>>) -> Json<Value> {
    let mut info = match state.repository.table.default_serving() {
        Some(served) => served.page_info.clone(),
        None => state.page_info.clone(),
    };
    info["ready"] = json!(state.is_ready());
    Json(info)
}

/// The static part of `/info` for `package` served on `device` as v2 model `name` version
/// `version`.
pub fn describe(package: &PackageConfig, device: &str, name: &str, version: &str) -> Value {
    let k = &package.kiln;
    let i = &k.input;
    let resize = match i.resize {
        ResizeMode::CenterCrop => format!(
            "shorter side to {} ({}), centre crop {}×{}",
            i.resize_shorter,
            filter(i.interpolation),
            i.width,
            i.height
        ),
        ResizeMode::Letterbox => format!("letterbox to {}×{}", i.width, i.height),
        ResizeMode::Stretch => format!("resize to {}×{} ({})", i.width, i.height, filter(i.interpolation)),
    };
    let scale = match i.scale {
        PixelScale::Unit => "pixels / 255",
        PixelScale::Raw => "raw pixels",
    };
    let order = match (i.channels, i.channel_order) {
        (1, _) => "grayscale",
        (_, ChannelOrder::Rgb) => "RGB",
        (_, ChannelOrder::Bgr) => "BGR",
    };
    let field = package
        .apis
        .first()
        .and_then(|api| api.request.data.as_ref())
        .and_then(|d| d["properties"].as_object())
        .and_then(|p| p.keys().next().cloned())
        .unwrap_or_else(|| "image".into());
    json!({
        "architecture": k.architecture,
        "detector": package.model_algorithm == kiln_models::package::OBJECT_DETECTION,
        "input": {"channels": i.channels, "height": i.height, "width": i.width},
        "preprocessing": format!("{resize}; {order}, {scale}, mean {:?}, std {:?}", i.mean, i.std),
        "labels": k.labels,
        "runtime": package.runtime,
        "device": device,
        "model": name,
        "version": version,
        "field": field,
    })
}

fn filter(i: Interpolation) -> &'static str {
    match i {
        Interpolation::Bilinear => "bilinear",
        Interpolation::Bicubic => "bicubic",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_names_the_preprocessing_and_the_upload_field() {
        let net = kiln_models::net_package_config(&kiln_models::NetConfig::new());
        let d = describe(&net, "cpu", "model", "1");
        assert_eq!(d["field"], "image");
        assert_eq!(d["detector"], false);
        assert_eq!(
            d["preprocessing"],
            "shorter side to 28 (bilinear), centre crop 28×28; grayscale, pixels / 255, mean [0.1307], std [0.3081]"
        );
        let yolox = kiln_models::yolox_package_config(kiln_models::YoloxVariant::Nano, (64, 64), &["a"]);
        let d = describe(&yolox, "cuda:0", "det", "1");
        assert_eq!(
            (d["field"].as_str(), d["detector"].as_bool()),
            (Some("images"), Some(true))
        );
        assert!(d["preprocessing"]
            .as_str()
            .unwrap()
            .starts_with("letterbox to 64×64; BGR, raw pixels"));
    }

    #[test]
    fn the_page_loads_its_assets_by_path_only() {
        // No inline script or style: the Content-Security-Policy allows only 'self'.
        assert!(INDEX.contains(r#"<script src="/page.js" defer></script>"#));
        assert!(!INDEX.contains("<style") && !INDEX.contains("style=") && !INDEX.contains("onclick"));
        assert!(!SCRIPT.contains("http://") && !SCRIPT.contains("https://") && !STYLE.contains("url("));
    }
}
