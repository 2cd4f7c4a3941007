//! The server's error responses: one place turns every failure into the platform's JSON body
//! `{"error_code": "...", "error_msg": "..."}` with the right status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// A failed request: status, a stable code and a message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, `KILN.<status>`.
    pub code: String,
    /// What went wrong, naming the field or limit.
    pub msg: String,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with status `status` and message `msg`.
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        Self {
            status,
            code: format!("KILN.{}", status.as_u16()),
            msg: msg.into(),
            retry_after: None,
        }
    }

    /// The same error with a `Retry-After` of `seconds`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400: the request is malformed.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }
}

/// The platform's error body for `status` and `msg`.
pub fn error_body(status: u16, msg: &str) -> serde_json::Value {
    serde_json::json!({ "error_code": format!("KILN.{status}"), "error_msg": msg })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error_code": self.code, "error_msg": self.msg });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_platform_shape() {
        let r = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too big").into_response();
        assert_eq!(r.status(), 413);
        assert_eq!(r.headers()["content-type"], "application/json");
    }
}
