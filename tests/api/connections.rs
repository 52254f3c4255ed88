//! Connections: idle HTTP/2 connections are closed like HTTP/1 ones, open connections
//! are capped (shed at accept, counted), and the answers hyper used to write itself
//! (bare 400 and 431) carry our JSON body and a request id.

use std::time::{Duration, Instant};

use axum::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::both_backends;
use crate::helpers::{wait_until, Backend, TestApp, TestConfig};
use crate::hostile::{exchange, Reply};

both_backends!(
    idle_http2_connections_are_closed_like_http1_ones,
    connections_over_the_cap_are_shed_at_accept_and_counted,
    heads_hyper_cannot_parse_get_json_answers_with_a_request_id,
    declared_bodies_over_the_limit_get_413_before_a_byte_is_read,
    stopping_closes_connections_that_have_no_request_in_flight,
);

impl TestApp {
    fn socket_address(&self) -> String {
        self.address.trim_start_matches("http://").to_owned()
    }
}

/// With prior knowledge, one `GET /healthz` and then silence: the server closes the
/// connection once it has been idle for `http.idle_timeout_ms` (it stayed open for
/// more than 60 s, holding a file descriptor).
async fn idle_http2_connections_are_closed_like_http1_ones(backend: Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        TestConfig {
            http_idle_timeout_ms: 300,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let stream = TcpStream::connect(app.socket_address()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 with prior knowledge");
    let conn = tokio::spawn(conn);
    let resp = sender
        .send_request(
            hyper::Request::get(app.url("/healthz"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .expect("answered over HTTP/2");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    drop(resp);
    // Silence; `sender` stays alive, so only the server can end the connection.
    let idle_since = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(30), conn)
        .await
        .expect("the idle HTTP/2 connection is closed by the server");
    assert!(
        matches!(ended, Ok(Ok(()))),
        "closed gracefully (GOAWAY): {ended:?}"
    );
    println!(
        "idle HTTP/2 connection closed {:?} after its last answer (idle timeout 300 ms)",
        idle_since.elapsed()
    );
    drop(sender);
    app.stop().await;
}

/// The open connection that answered `GET /healthz` (HTTP/1.1 keep-alive).
async fn held_connection(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    stream
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The accept loop had no cap: every connection held a file descriptor until the
/// client left. Over `http.max_connections` a connection is closed at accept (with a
/// 503 when the socket takes it at once), never left to fail later.
async fn connections_over_the_cap_are_shed_at_accept_and_counted(backend: Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        TestConfig {
            http_max_connections: 3,
            // The held connections must outlive the test's slowest step.
            http_idle_timeout_ms: 120_000,
            http_header_read_timeout_ms: 120_000,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let address = app.socket_address();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(held_connection(&address).await);
    }
    for attempt in 0..5 {
        let Reply { status, head, body } = exchange(
            &address,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            Duration::from_secs(10),
        )
        .await;
        match status {
            // Closed at once; the 503 may be lost to the reset of the close.
            None => {}
            Some(503) => {
                let body: Value = serde_json::from_slice(&body).expect("JSON body");
                assert_eq!(body["error"]["code"], "unavailable", "{head}");
            }
            other => panic!("connection {attempt} over the cap got {other:?}: {head}"),
        }
    }
    // The held connections are still served.
    let mut first = held.pop().unwrap();
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    first.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "a held connection");
    // With a slot free again, new connections are served.
    drop(first);
    // A fresh connection per attempt: a pooled one may be one the cap just shed.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = app.url("/metrics");
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    wait_until(
        Duration::from_secs(10),
        "a freed slot serves a new connection",
        || {
            let (request, text) = (client.get(url.clone()), text.clone());
            async move {
                match request.send().await {
                    Ok(r) if r.status() == 200 => {
                        *text.lock().unwrap() = r.text().await.unwrap_or_default();
                        true
                    }
                    _ => false,
                }
            }
        },
    )
    .await;
    let text = text.lock().unwrap().clone();
    let shed = metric(&text, "postback_gateway_http_connections_shed_total");
    assert!(shed.is_some_and(|n| n >= 5.0), "shed counted: {shed:?}");
    let open = metric(&text, "postback_gateway_http_connections");
    assert!(
        open.is_some_and(|n| (1.0..=3.0).contains(&n)),
        "open connections gauge: {open:?}"
    );
    drop(held);
    app.stop().await;
}

/// hyper answers a head it cannot parse itself, with an empty body and no
/// `X-Request-Id`; those answers are ours now.
async fn heads_hyper_cannot_parse_get_json_answers_with_a_request_id(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let address = app.socket_address();
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let cases: [(&str, Vec<u8>, u16, &str); 5] = [
        (
            "header line without a colon",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "spaces in the target",
            b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "control byte in the target",
            b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "not HTTP at all",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "head over 64 KiB",
            big.into_bytes(),
            431,
            "header_too_large",
        ),
    ];
    for (case, request, status, code) in cases {
        let reply = exchange(&address, request, Duration::from_secs(10)).await;
        assert_eq!(reply.status, Some(status), "{case}: {}", reply.head);
        assert!(
            reply
                .header("content-type")
                .is_some_and(|ct| ct.starts_with("application/json")),
            "{case}: {}",
            reply.head
        );
        assert!(
            reply
                .header("x-request-id")
                .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()),
            "{case}: {}",
            reply.head
        );
        let body: Value = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("{case}: body is not JSON ({e}): {:?}", reply.body));
        assert_eq!(body["error"]["code"], code, "{case}");
    }
    // The server keeps serving.
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    app.stop().await;
}

/// A declared `Content-Length` over the limit got 408 after the body timeout (the
/// server waited for a body it would refuse); with `Expect: 100-continue` the client
/// was even told to send it. Both get 413 at once now; a body within the limit is
/// still asked for and read.
async fn declared_bodies_over_the_limit_get_413_before_a_byte_is_read(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let address = app.socket_address();
    let head = |partner: &str, extra: &str| {
        format!(
            "POST /v1/postbacks/{partner} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000000\r\n{extra}\r\n",
            app.api_key
        )
        .into_bytes()
    };
    let cases = [
        ("declared length, part of the body sent", {
            let mut r = head("kochava", "");
            r.extend_from_slice(&[b' '; 1000]);
            r
        }),
        (
            "Expect: 100-continue",
            head("kochava", "Expect: 100-continue\r\n"),
        ),
    ];
    for (case, request) in cases {
        let reply = exchange(&address, request, Duration::from_secs(30)).await;
        assert_eq!(reply.status, Some(413), "{case}: {}", reply.head);
        assert!(
            !reply.head.contains("100 Continue"),
            "{case}: {}",
            reply.head
        );
        let body: Value = serde_json::from_slice(&reply.body).expect("JSON body");
        assert_eq!(body["error"]["code"], "payload_too_large", "{case}");
        assert!(reply.header("x-request-id").is_some(), "{case}");
    }
    // The partner and the method are still checked first.
    let reply = exchange(&address, head("nope", ""), Duration::from_secs(30)).await;
    assert_eq!(reply.status, Some(404), "{}", reply.head);
    let reply = exchange(&address, head("adjust", ""), Duration::from_secs(30)).await;
    assert_eq!(reply.status, Some(405), "{}", reply.head);

    // Within the limit, `Expect: 100-continue` is answered and the body read.
    let body = br#"{"network_name":"Liftoff","idfa":"A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF"}"#;
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /v1/postbacks/kochava HTTP/1.1\r\nHost: x\r\nX-Api-Key: {}\r\n\
                 Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
                app.api_key,
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("100 Continue")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"accepted\""), "{answer}");
    app.stop().await;
}

/// On SIGTERM a connection with nothing in flight has nothing to finish: a silent one
/// and an idle keep-alive one are closed at once, not after the drain timeout (20 s)
/// or their own timeouts (two minutes here).
async fn stopping_closes_connections_that_have_no_request_in_flight(backend: Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        TestConfig {
            http_idle_timeout_ms: 120_000,
            http_header_read_timeout_ms: 120_000,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let address = app.socket_address();
    let mut silent = TcpStream::connect(&address).await.unwrap();
    let mut idle = held_connection(&address).await;
    // The server has accepted the silent one (a request on a later connection is served).
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    tokio::time::timeout(Duration::from_secs(15), app.stop())
        .await
        .expect("the server stops without waiting out idle connections");
    let mut buf = [0u8; 16];
    for (what, stream) in [("silent", &mut silent), ("idle", &mut idle)] {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "the {what} connection is closed: {read:?}"
        );
    }
}
