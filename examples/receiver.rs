//! A webhook receiver for `scripts/bench DESTINATION=fast|hang`: answers every POST
//! with 204 at once (`fast`), or never answers (`hang`, so each delivery attempt
//! runs into the gateway's `forwarding.attempt_timeout_ms`). Prints how many
//! requests it received when it gets SIGTERM.
//!
//!     cargo run --release --example receiver -- 127.0.0.1:18090 fast

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18090".into());
    let hang = match args.next().as_deref() {
        None | Some("fast") => false,
        Some("hang") => true,
        Some(other) => {
            eprintln!("receiver: mode must be fast or hang, not {other:?}");
            std::process::exit(2);
        }
    };
    let received = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .fallback(post(move |State(n): State<Arc<AtomicU64>>| async move {
            n.fetch_add(1, Ordering::Relaxed);
            if hang {
                std::future::pending::<()>().await;
            }
            StatusCode::NO_CONTENT
        }))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        r = axum::serve(listener, app) => r.expect("serve"),
        _ = term.recv() => {}
    }
    println!(
        "receiver ({}): {} requests",
        if hang { "hang" } else { "fast" },
        received.load(Ordering::Relaxed)
    );
}
