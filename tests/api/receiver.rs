//! A webhook receiver on 127.0.0.1 for the forwarding tests: it records every
//! request (headers and body) and answers each as its script says.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// This status with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// Never answers (the dispatcher's attempt timeout ends it).
    Hang,
    /// Waits this many milliseconds, then 204.
    Slow(u64),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn webhook_id(&self) -> String {
        self.headers["webhook-id"].to_str().unwrap().to_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    script: VecDeque<Reply>,
    /// What is answered once the script is used up.
    otherwise: Option<Reply>,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    server: Arc<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// A receiver answering `script` in order, then `otherwise` (204 by default).
    pub async fn start(script: &[Reply], otherwise: Option<Reply>) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            script: script.iter().copied().collect(),
            otherwise,
            ..Inner::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            inner,
            server: Arc::new(server),
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().received.len()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if Arc::strong_count(&self.server) == 1 {
            self.server.abort();
        }
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut inner = inner.lock().unwrap();
        inner.received.push(Received { headers, body });
        inner
            .script
            .pop_front()
            .or(inner.otherwise)
            .unwrap_or(Reply::Status(204))
    };
    let status = |s: u16| StatusCode::from_u16(s).unwrap();
    match reply {
        Reply::Status(s) => status(s).into_response(),
        Reply::RetryAfter(s, secs) => {
            (status(s), [("retry-after", secs.to_string())]).into_response()
        }
        Reply::Hang => std::future::pending().await,
        Reply::Slow(ms) => {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            StatusCode::NO_CONTENT.into_response()
        }
    }
}
