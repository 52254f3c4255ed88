//! Our own `Path` extractor and the strict query-string extractor of the read API:
//! axum's reject with plain text, ours with the JSON error body every other answer
//! uses, and name the offending parameter.

use axum::extract::rejection::PathRejection;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::AppError;

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct Path<T>(pub T);

impl From<PathRejection> for AppError {
    fn from(_: PathRejection) -> Self {
        AppError::NotFound("no such route".into())
    }
}

/// A query string of named, string-valued parameters.
pub trait QueryParams: DeserializeOwned {
    /// Every parameter the route accepts; any other is a 400.
    const NAMES: &'static [&'static str];

    /// The OpenAPI parameter objects, exactly as strict as the handler.
    fn documented() -> Value {
        Value::Array(Vec::new())
    }
}

/// No parameters at all.
#[derive(serde::Deserialize)]
pub struct NoParams {}

impl QueryParams for NoParams {
    const NAMES: &'static [&'static str] = &[];
}

/// The query string of a read-API route, refused with a 400 naming the parameter
/// when a parameter is unknown (a misspelled filter must not silently match
/// everything), given twice, or holds a NUL (which PostgreSQL text cannot hold).
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: QueryParams> FromRequestParts<S> for Params<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let query = parts.uri.query().unwrap_or_default();
        let mut given = Map::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let Some(&name) = T::NAMES.iter().find(|known| **known == name) else {
                let expected = if T::NAMES.is_empty() {
                    "this route takes none".to_owned()
                } else {
                    format!("expected one of {}", T::NAMES.join(", "))
                };
                return Err(AppError::BadRequest(format!(
                    "unknown query parameter {}; {expected}",
                    shown(&name)
                )));
            };
            if value.contains('\0') {
                return Err(AppError::BadRequest(format!(
                    "query parameter {name} contains a NUL character"
                )));
            }
            if given
                .insert(name.to_owned(), Value::String(value.into_owned()))
                .is_some()
            {
                return Err(AppError::BadRequest(format!(
                    "query parameter {name} is given more than once"
                )));
            }
        }
        serde_json::from_value(Value::Object(given))
            .map(Params)
            .map_err(|e| AppError::BadRequest(format!("invalid query string: {e}")))
    }
}

/// A client-chosen name, quoted and cut short for an error message.
fn shown(name: &str) -> String {
    const MAX: usize = 64;
    match name.char_indices().nth(MAX) {
        Some((end, _)) => format!("{:?}…", &name[..end]),
        None => format!("{name:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Two {
        a: Option<String>,
        b: Option<String>,
    }

    impl QueryParams for Two {
        const NAMES: &'static [&'static str] = &["a", "b"];
    }

    async fn parse(query: &str) -> Result<Two, String> {
        let request = axum::http::Request::get(format!("/x?{query}"))
            .body(())
            .unwrap();
        let (mut parts, ()) = request.into_parts();
        Params::<Two>::from_request_parts(&mut parts, &())
            .await
            .map(|Params(t)| t)
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn unknown_repeated_and_nul_parameters_are_named() {
        assert_eq!(
            parse("a=1&b=%20").await.unwrap(),
            Two {
                a: Some("1".into()),
                b: Some(" ".into())
            }
        );
        assert_eq!(parse("").await.unwrap(), Two { a: None, b: None });
        let err = parse("a=1&campaing=x").await.unwrap_err();
        assert!(
            err.contains("\"campaing\"") && err.contains("a, b"),
            "{err}"
        );
        let err = parse("a=1&a=2").await.unwrap_err();
        assert!(err.contains("a is given more than once"), "{err}");
        let err = parse("b=x%00y").await.unwrap_err();
        assert!(err.contains("b contains a NUL"), "{err}");
        let err = parse(&format!("{}=1", "n".repeat(500))).await.unwrap_err();
        assert!(err.len() < 200, "long names are cut: {err}");
    }
}
