//! The accept loop: hyper with a header-read deadline (slow clients are cut off), a
//! cap on header size, and graceful shutdown that lets in-flight requests finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceBuilder;

/// Largest request head (request line and headers) hyper buffers; larger gets 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;

pub struct ServeOptions {
    /// A client must send its complete request head within this time (the first one
    /// counted from the accept).
    pub header_read_timeout: Duration,
    /// After `stop`, connections get this long to finish their requests.
    pub drain_timeout: Duration,
}

/// Serve `router` on `listener` until `stop` resolves, then drain.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    stop: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the rest.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        // Set when the first request head has been read (the service is called).
        let first_request = Arc::new(Notify::new());
        let service = TowerToHyperService::new(
            ServiceBuilder::new()
                .map_request({
                    let first_request = first_request.clone();
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        first_request.notify_one();
                        request
                    }
                })
                .service(router.clone()),
        );
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let header_read_timeout = options.header_read_timeout;
        tokio::spawn(async move {
            tokio::pin!(conn);
            // hyper's header-read timeout starts only once the protocol is known: a
            // client that sends nothing, or drips an HTTP/2 preface, would hold the
            // connection forever. So the first request head must also arrive within
            // the timeout counted from the accept; later ones are hyper's (HTTP/1).
            let ended = tokio::select! {
                ended = conn.as_mut() => Some(ended),
                () = first_request.notified() => None,
                () = tokio::time::sleep(header_read_timeout) => {
                    tracing::debug!("no request head within the header-read timeout; closing");
                    return;
                }
            };
            let ended = match ended {
                Some(ended) => ended,
                None => conn.await,
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached; remaining connections are closed");
    }
}
