//! The throughput ceiling for `scripts/bench`: the same postback route and the same
//! decoding, parsing and hashing as the gateway, but no authentication lookup, no
//! quota and no database. Answers like the gateway would.
//!
//!     cargo run --release --example echo -- 127.0.0.1:8090

use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::http::{Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use postback_gateway::partners::{self, Decision, Method, PartnerId};
use serde_json::json;

async fn receive(
    Path(partner): Path<String>,
    method: HttpMethod,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let Ok(partner) = partner.parse::<PartnerId>() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let method = if method == HttpMethod::GET {
        Method::Get
    } else {
        Method::Post
    };
    let query = query.unwrap_or_default();
    let Some(delivery) = partners::read(partner, method, &query, &body) else {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    };
    match delivery.decision {
        Decision::Accepted(_) => {
            Json(json!({"status": "accepted", "event_id": uuid::Uuid::now_v7()})).into_response()
        }
        Decision::Organic(_) => {
            Json(json!({"status": "ignored", "reason": "organic"})).into_response()
        }
        Decision::Invalid(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("echo listening on {addr}");
    let app = Router::new().route("/v1/postbacks/{partner}", any(receive));
    axum::serve(listener, app).await.expect("serve");
}
