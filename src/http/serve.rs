//! The accept loop: a cap on open connections (more are shed at accept), a deadline
//! on the first request head (slow clients are cut off), an idle timer that closes
//! HTTP/1 and HTTP/2 connections alike, a cap on header size, JSON in place of hyper's
//! own bare 400/414/431, and graceful shutdown that lets in-flight requests finish.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::{BoxError, Router};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::error::AppError;
use crate::config::Config;
use crate::telemetry;

/// Largest request head (request line and headers) hyper buffers; larger gets 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct ServeOptions {
    /// A client must send its complete request head within this time (the first one
    /// counted from the accept).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/1 and
    /// HTTP/2 alike); HTTP/2 peers must also answer pings within it.
    pub idle_timeout: Duration,
    /// Most connections open at once; further ones are closed at accept.
    pub max_connections: usize,
    /// After `stop`, connections get this long to finish their requests.
    pub drain_timeout: Duration,
    /// Speak TLS (and only TLS) on this listener; answers then carry HSTS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl ServeOptions {
    pub fn from_config(config: &Config) -> Self {
        let ms = Duration::from_millis;
        Self {
            header_read_timeout: ms(config.http.header_read_timeout_ms),
            idle_timeout: ms(config.http.idle_timeout_ms),
            max_connections: config.http.max_connections,
            drain_timeout: ms(config.http.shutdown_timeout_ms),
            tls: None,
        }
    }
}

/// Serve `router` on `listener` until `stop` resolves, then drain.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    stop: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    // ALPN's "h2" over TLS needs nothing more: the builder reads the HTTP/2 preface.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        // A peer that vanished without a FIN is noticed even while a request runs.
        .keep_alive_interval(options.idle_timeout)
        .keep_alive_timeout(options.idle_timeout);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let draining = CancellationToken::new();
    let abort = CancellationToken::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shed(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let open = OpenConnection::new(slot);
        // The first request head (after the TLS handshake, if any) is due by then.
        let first_deadline = tokio::time::Instant::now() + options.header_read_timeout;
        let (builder, router) = (builder.clone(), router.clone());
        let (options, draining, abort) = (options.clone(), draining.clone(), abort.clone());
        tokio::spawn(async move {
            let _open = open;
            let hsts = options.tls.is_some();
            let connection = Connection {
                builder,
                router,
                peer,
                hsts,
                first_deadline,
                draining,
                abort,
                idle_timeout: options.idle_timeout,
            };
            match &options.tls {
                None => connection.run(stream).await,
                Some(acceptor) => {
                    let wait = options.header_read_timeout;
                    let tls = tokio::select! {
                        tls = super::tls::handshake(acceptor, stream, wait) => tls,
                        () = connection.draining.cancelled() => return,
                    };
                    if let Some(tls) = tls {
                        connection.run(tls).await;
                    }
                }
            }
        });
    }
    drop(listener);
    draining.cancel();
    // Every open connection holds a slot: all slots back means all connections closed.
    let all_closed = slots.acquire_many(options.max_connections as u32);
    if tokio::time::timeout(options.drain_timeout, all_closed)
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached; remaining connections are closed");
        abort.cancel();
    }
}

/// One accepted connection's life, over TCP or TLS.
struct Connection {
    builder: Arc<Builder<TokioExecutor>>,
    router: Router,
    peer: SocketAddr,
    hsts: bool,
    first_deadline: tokio::time::Instant,
    draining: CancellationToken,
    abort: CancellationToken,
    idle_timeout: Duration,
}

impl Connection {
    async fn run<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::default());
        let service = ConnectionService {
            router: self.router,
            peer: self.peer,
            activity: activity.clone(),
            hsts: self.hsts,
        };
        let io = TokioIo::new(HyperErrorsAsJson {
            inner: stream,
            activity: activity.clone(),
            rewrite: None,
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        tokio::pin!(conn);
        // hyper's header-read timeout starts only once the protocol is known: a
        // client that sends nothing, or drips an HTTP/2 preface, would hold the
        // connection forever. So the first request head must also arrive by the
        // deadline counted from the accept; later ones are hyper's (HTTP/1).
        tokio::select! {
            ended = conn.as_mut() => return log_end(ended),
            () = activity.first_request.notified() => {}
            () = tokio::time::sleep_until(self.first_deadline) => {
                tracing::debug!("no request head within the header-read timeout; closing");
                return;
            }
            // Stopping: a connection with no request yet has nothing to finish.
            () = self.draining.cancelled() => return,
        }
        // Then it lives until it ends, is idle too long, or the server stops; the
        // last two close it gracefully (HTTP/2: GOAWAY) and let requests finish.
        let mut closing = false;
        loop {
            tokio::select! {
                ended = conn.as_mut() => return log_end(ended),
                () = activity.idle_for(self.idle_timeout), if !closing => {
                    tracing::debug!("connection idle; closing");
                }
                () = self.draining.cancelled(), if !closing => {}
                () = self.abort.cancelled() => return,
            }
            conn.as_mut().graceful_shutdown();
            closing = true;
        }
    }
}

fn log_end(ended: Result<(), BoxError>) {
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Over the connection cap: answer 503 if the socket takes it at once (never wait
/// for a client we have no room for), then close.
fn shed(stream: TcpStream) {
    telemetry::connection_shed();
    let body = AppError::Unavailable.json_body();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: {}\r\nconnection: close\r\n\r\n",
        body.len(),
        super::error::UNAVAILABLE_RETRY_AFTER,
    );
    let _ = stream.try_write(&[head.as_bytes(), &body].concat());
}

/// An accepted connection: holds its slot under the cap and keeps the gauge.
struct OpenConnection {
    _slot: OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(slot: OwnedSemaphorePermit) -> Self {
        telemetry::connection_opened();
        Self { _slot: slot }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        telemetry::connection_closed();
    }
}

/// What one connection is doing: requests in flight (a request counts until its
/// response body is dropped, i.e. sent or abandoned).
struct Activity {
    in_flight: watch::Sender<usize>,
    first_request: Notify,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: watch::Sender::new(0),
            first_request: Notify::new(),
        }
    }
}

impl Activity {
    fn is_idle(&self) -> bool {
        *self.in_flight.borrow() == 0
    }

    /// Resolves once no request has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        let mut changes = self.in_flight.subscribe();
        loop {
            let idle = *changes.borrow_and_update() == 0;
            if idle {
                tokio::select! {
                    () = tokio::time::sleep(timeout) => return,
                    _ = changes.changed() => {}
                }
            } else {
                let _ = changes.changed().await;
            }
        }
    }
}

/// One request in flight on its connection.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.send_modify(|n| *n += 1);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n -= 1);
    }
}

/// The router as one connection's hyper service: adds the peer address
/// ([`ConnectInfo`]) and counts the request in flight until its body is gone.
#[derive(Clone)]
struct ConnectionService {
    router: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
    /// Over TLS: every answer tells browsers to use HTTPS only (a year).
    hsts: bool,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        self.activity.first_request.notify_one();
        let in_flight = InFlight::start(self.activity.clone());
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let router = self.router.clone();
        let hsts = self.hsts;
        Box::pin(async move {
            let mut response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if hsts {
                response.headers_mut().insert(
                    axum::http::header::STRICT_TRANSPORT_SECURITY,
                    axum::http::HeaderValue::from_static("max-age=31536000"),
                );
            }
            Ok(response.map(|inner| {
                Body::new(InFlightBody {
                    inner,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response body that keeps its request counted as in flight until dropped.
struct InFlightBody {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for InFlightBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket as hyper sees it. hyper answers a request head it cannot parse itself,
/// with an empty body and none of our headers; this swaps that answer for ours (JSON
/// body, `X-Request-Id`). It is recognised as a 400, 414 or 431 head with
/// `content-length: 0` written while no request of ours is in flight: our own
/// answers are written while their request is, and never have an empty body.
struct HyperErrorsAsJson<S> {
    inner: S,
    activity: Arc<Activity>,
    /// Our answer being written, and how much of it is out.
    rewrite: Option<(Vec<u8>, usize)>,
}

impl HyperErrorsAsJson<()> {
    /// Our answer in place of `written`, if `written` is one of hyper's own.
    fn replacement(written: &[u8]) -> Option<Vec<u8>> {
        let head = written.strip_suffix(b"\r\n\r\n")?;
        let head = std::str::from_utf8(head).ok()?;
        let mut lines = head.split("\r\n");
        let status = lines.next()?.strip_prefix("HTTP/1.1 ")?.get(..3)?;
        let error = match status {
            "400" => AppError::BadRequest("the request is not valid HTTP/1.1".into()),
            "414" => AppError::UriTooLong,
            "431" => AppError::HeadTooLarge {
                limit: MAX_HEAD_BYTES,
            },
            _ => return None,
        };
        let mut date = None;
        let mut empty = false;
        for line in lines {
            let (name, value) = line.split_once(':')?;
            match name.to_ascii_lowercase().as_str() {
                "content-length" => empty = value.trim() == "0",
                "date" => date = Some(value.trim()),
                _ => {}
            }
        }
        if !empty {
            return None;
        }
        tracing::debug!(status, "request head not parsed; answered with our body");
        let body = error.json_body();
        let mut out = format!(
            "HTTP/1.1 {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             x-request-id: {}\r\nconnection: close\r\n",
            error.status(),
            body.len(),
            uuid::Uuid::new_v4()
        );
        if let Some(date) = date {
            out.push_str(&format!("date: {date}\r\n"));
        }
        out.push_str("\r\n");
        Some([out.into_bytes(), body].concat())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HyperErrorsAsJson<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HyperErrorsAsJson<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.rewrite.is_none() && this.activity.is_idle() {
            this.rewrite = HyperErrorsAsJson::<()>::replacement(buf).map(|bytes| (bytes, 0));
        }
        let Some((bytes, sent)) = &mut this.rewrite else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        while *sent < bytes.len() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &bytes[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        // hyper's answer counts as written; it closes the connection next.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    /// Not vectored: hyper then writes each head in one contiguous buffer, where its
    /// own error answers can be recognised.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_error_heads_become_json_and_ours_are_left_alone() {
        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Tue, 01 Oct 2024 10:00:00 GMT\r\n\r\n";
        let out = HyperErrorsAsJson::<()>::replacement(hyper_431).expect("rewritten");
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("x-request-id: "), "{head}");
        assert!(
            head.contains("date: Tue, 01 Oct 2024 10:00:00 GMT"),
            "{head}"
        );
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "header_too_large");

        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert!(HyperErrorsAsJson::<()>::replacement(hyper_400).is_some());
        for ours in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 58\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
            b"\x00\x00\x04\x08\x00\x00\x00\x00\x00",
        ] {
            assert!(HyperErrorsAsJson::<()>::replacement(ours).is_none());
        }
    }
}
