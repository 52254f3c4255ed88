//! Admin credentials: `Authorization: Bearer $ADMIN_TOKEN` for the JSON API, HTTP
//! Basic with the token as password for the page. Compared in constant time; with no
//! token configured the routes are disabled (403), never open.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::AppError;
use super::AppState;

const DISABLED: &str = "admin routes are disabled: set ADMIN_TOKEN to enable them";

/// Compare two secrets in constant time, whatever their lengths.
fn same_secret(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

/// Proof that the request carried the admin bearer token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let expected = state.admin_token.expose();
        if expected.is_empty() {
            return Err(AppError::Forbidden(DISABLED));
        }
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        match given {
            Some(token) if same_secret(token, expected) => Ok(Admin),
            Some(_) => Err(AppError::AdminUnauthorized("invalid admin token")),
            None => Err(AppError::AdminUnauthorized(
                "missing admin token: send Authorization: Bearer <ADMIN_TOKEN>",
            )),
        }
    }
}

/// Proof that a browser logged in with HTTP Basic (any user, ADMIN_TOKEN as password).
pub struct PageLogin;

/// A 401 that makes browsers show their login prompt.
pub struct LoginRequired(AppError);

impl IntoResponse for LoginRequired {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        if response.status() == axum::http::StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"postback-gateway\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

impl FromRequestParts<AppState> for PageLogin {
    type Rejection = LoginRequired;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, LoginRequired> {
        let expected = state.admin_token.expose();
        if expected.is_empty() {
            return Err(LoginRequired(AppError::Forbidden(DISABLED)));
        }
        let password = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Basic ")
                    .or_else(|| v.strip_prefix("basic "))
            })
            .and_then(|b64| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .ok()
            })
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|pair| pair.split_once(':').map(|(_, p)| p.to_owned()));
        match password {
            Some(p) if same_secret(&p, expected) => Ok(PageLogin),
            _ => Err(LoginRequired(AppError::AdminUnauthorized(
                "log in with any user name and ADMIN_TOKEN as the password",
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(same_secret("token", "token"));
        assert!(!same_secret("token", "token2"));
        assert!(!same_secret("", "token"));
    }
}
