//! The one error type of the HTTP layer: each variant knows its status and stable
//! `code`; one `IntoResponse` writes `{"error":{"code","message"}}` and its headers.
//! 5xx bodies carry no internal detail.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::ingest::IngestError;
use crate::partners::Invalid;

/// Seconds a client is asked to wait after a 503.
pub const UNAVAILABLE_RETRY_AFTER: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    InvalidPayload(String),
    #[error("missing or unknown API key")]
    Unauthorized,
    #[error("{0}")]
    AdminUnauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("unknown partner; expected one of kochava, tune, appsflyer, adjust, singular, branch")]
    UnknownPartner,
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed; use {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("the request body did not arrive within the request timeout")]
    RequestTimeout,
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{message}")]
    RateLimited { retry_after: u64, message: String },
    #[error("too many failed admin logins from this address; retry after {retry_after} s")]
    LoginThrottled { retry_after: u64 },
    #[error("{0}")]
    BadRequest(String),
    #[error("the request line and headers are larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("the request target is too long")]
    UriTooLong,
    #[error("service temporarily unavailable; retry later")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::InvalidPayload(_) | AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized | AppError::AdminUnauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::UnknownPartner | AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AppError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            AppError::UriTooLong => StatusCode::URI_TOO_LONG,
            AppError::RateLimited { .. } | AppError::LoginThrottled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            AppError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::InvalidPayload(_) => "invalid_payload",
            AppError::BadRequest(_) => "bad_request",
            AppError::Unauthorized | AppError::AdminUnauthorized(_) => "unauthorized",
            AppError::Forbidden(_) => "forbidden",
            AppError::UnknownPartner => "unknown_partner",
            AppError::NotFound(_) => "not_found",
            AppError::MethodNotAllowed { .. } => "method_not_allowed",
            AppError::RequestTimeout => "request_timeout",
            AppError::PayloadTooLarge { .. } => "payload_too_large",
            AppError::HeadTooLarge { .. } => "header_too_large",
            AppError::UriTooLong => "uri_too_long",
            AppError::RateLimited { .. } | AppError::LoginThrottled { .. } => "rate_limited",
            AppError::Unavailable => "unavailable",
            AppError::Internal => "internal",
        }
    }
}

impl AppError {
    /// `{"error":{"code","message"}}`, the body of every error answer.
    pub fn json_body(&self) -> Vec<u8> {
        let body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl From<Invalid> for AppError {
    fn from(e: Invalid) -> Self {
        AppError::InvalidPayload(e.to_string())
    }
}

impl From<IngestError> for AppError {
    fn from(e: IngestError) -> Self {
        let message = e.to_string();
        match e {
            IngestError::MethodNotAllowed { partner } => AppError::MethodNotAllowed {
                allow: partner.allowed_methods(),
            },
            IngestError::Unauthorized => AppError::Unauthorized,
            IngestError::InstallQuota(info) | IngestError::RequestLimit(info) => {
                AppError::RateLimited {
                    retry_after: info.retry_after(chrono::Utc::now()),
                    message,
                }
            }
            IngestError::Invalid(invalid) => invalid.into(),
            IngestError::Overloaded | IngestError::Unavailable => AppError::Unavailable,
            IngestError::Internal => AppError::Internal,
        }
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::Unavailable(_) => AppError::Unavailable,
            StoreError::NotFound => AppError::NotFound("not found".into()),
            other => {
                tracing::error!(error = ?other, "store error");
                AppError::Internal
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.json_body(),
        );
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        match &self {
            AppError::RateLimited { retry_after, .. }
            | AppError::LoginThrottled { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            AppError::Unavailable => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(UNAVAILABLE_RETRY_AFTER),
                );
            }
            AppError::RequestTimeout => {
                // The rest of the body is never read: the connection cannot be reused.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            AppError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            AppError::AdminUnauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"postback-gateway\""),
                );
            }
            _ => {}
        }
        response
    }
}
