//! HTTPS built in: the real binary with a self-signed certificate made at run time
//! (rcgen), called over TLS; HTTP/2 over ALPN; plain HTTP refused; a certificate
//! swap seen by new connections after SIGHUP while open ones stay; bad files stop
//! the start naming the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    https_round_trip_with_http2_hsts_and_https_urls,
    plain_http_to_the_tls_port_is_refused_and_not_processed,
    a_certificate_swap_and_sighup_reach_new_connections_without_a_restart,
);

/// A fresh self-signed certificate for 127.0.0.1 and localhost: (cert PEM, key PEM).
fn self_signed() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("rcgen");
    (made.cert.pem(), made.key_pair.serialize_pem())
}

/// Writes `cert.pem` and `key.pem` into `dir`.
fn write_pair(dir: &Path, (cert, key): &(String, String)) -> (PathBuf, PathBuf) {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    (cert_path, key_path)
}

/// A client that trusts exactly `cert_pem`, HTTP/2 allowed (ALPN decides).
fn client_trusting(cert_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `serve` over TLS on a fresh database: (server, https base URL, app id, key, db).
async fn start_tls(
    backend: Backend,
    cert: &Path,
    key: &Path,
) -> Option<(ServerProcess, String, String, String, TestDb)> {
    let db = TestDb::create(backend).await?;
    let (app_id, api_key) = create_app_cli(db.url(), "tls", "standard");
    let server = ServerProcess::start(
        db.url(),
        &[
            ("TLS_CERT_PATH", cert.to_str().unwrap()),
            ("TLS_KEY_PATH", key.to_str().unwrap()),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            // Long enough that a pooled connection outlives the swap test.
            ("PBG_HTTP__IDLE_TIMEOUT_MS", "60000"),
        ],
    );
    let base = server.address.replacen("http://", "https://", 1);
    Some((server, base, app_id, api_key, db))
}

async fn https_round_trip_with_http2_hsts_and_https_urls(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let pair = self_signed();
    let (cert, key) = write_pair(dir.path(), &pair);
    let Some((server, base, app_id, api_key, db)) = start_tls(backend, &cert, &key).await else {
        return;
    };
    let client = client_trusting(&pair.0);

    let resp = client
        .post(format!("{base}/v1/postbacks/kochava"))
        .header("x-api-key", &api_key)
        .json(&json!({"network_name": "Liftoff", "idfa": "AAAAAAAA-0000-4000-8000-00000000000A"}))
        .send()
        .await
        .expect("postback over TLS");
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_2,
        "h2 chosen over ALPN"
    );
    let body = json_body(resp, 200, "postback").await;
    assert_eq!(body["status"], "accepted", "{body}");
    assert_eq!(db.count("select count(*) from postback_events").await, 1);

    let resp = client
        .get(format!("{base}/v1/apps/{app_id}/partners"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin call over TLS");
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let body = json_body(resp, 200, "admin").await;
    let endpoint = body.to_string();
    assert!(endpoint.contains("https://"), "endpoint URLs: {body}");
    assert!(!endpoint.contains("http://"), "endpoint URLs: {body}");

    // HTTP/1.1 still works for clients that only offer it.
    let http1 = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pair.0.as_bytes()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let resp = http1.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);

    // The CLI prints https:// endpoint URLs when TLS is configured.
    let out = std::process::Command::new(BIN)
        .args(["apps", "create", "--name", "second", "--json"])
        .env("DATABASE_URL", db.url())
        .env("TLS_CERT_PATH", &cert)
        .env("TLS_KEY_PATH", &key)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        created.to_string().contains("https://"),
        "apps create: {created}"
    );
    let (status, _) = server.terminate();
    assert!(status.success());
}

async fn plain_http_to_the_tls_port_is_refused_and_not_processed(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let pair = self_signed();
    let (cert, key) = write_pair(dir.path(), &pair);
    let Some((server, base, _, api_key, db)) = start_tls(backend, &cert, &key).await else {
        return;
    };
    let addr = base.trim_start_matches("https://").to_owned();
    let body = r#"{"network_name":"Liftoff","idfa":"AAAAAAAA-0000-4000-8000-00000000000B"}"#;
    let request = format!(
        "POST /v1/postbacks/kochava HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {api_key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    let answer = String::from_utf8_lossy(&answer);
    // Our plaintext 400 when the socket delivers it; a reset is a refusal too.
    if read.is_ok() && !answer.is_empty() {
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(answer.contains("this port speaks HTTPS"), "{answer}");
    }
    // And a regular client gets no answer it could mistake for success.
    let plain = reqwest::Client::new();
    let resp = plain
        .post(format!("http://{addr}/v1/postbacks/kochava"))
        .header("x-api-key", &api_key)
        .body(body)
        .send()
        .await;
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 400);
    }
    // Then a real HTTPS request, which is processed, shows the others were not.
    let client = client_trusting(&pair.0);
    let resp = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("https still works");
    assert_eq!(resp.status(), 200);
    assert_eq!(db.count("select count(*) from postback_events").await, 0);
    assert_eq!(db.count("select count(*) from deliveries").await, 0);
    let (status, _) = server.terminate();
    assert!(status.success());
}

async fn a_certificate_swap_and_sighup_reach_new_connections_without_a_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (self_signed(), self_signed());
    let (cert, key) = write_pair(dir.path(), &old);
    let Some((server, base, _, _, _db)) = start_tls(backend, &cert, &key).await else {
        return;
    };
    let pid = server.pid();
    let healthz = format!("{base}/healthz");
    let old_client = client_trusting(&old.0);
    let new_client = client_trusting(&new.0);
    assert_eq!(old_client.get(&healthz).send().await.unwrap().status(), 200);
    assert!(
        new_client.get(&healthz).send().await.is_err(),
        "the new certificate is not served yet"
    );

    // A broken pair on SIGHUP: the old certificate stays, and the log says why.
    std::fs::write(&cert, "not a certificate").unwrap();
    server.signal("HUP");
    wait_until(
        Duration::from_secs(20),
        "the failed reload is logged",
        || {
            let out = server.output();
            async move { out.contains("reload failed") }
        },
    )
    .await;
    assert!(server.output().contains("cert.pem"), "{}", server.output());
    assert_eq!(old_client.get(&healthz).send().await.unwrap().status(), 200);

    write_pair(dir.path(), &new);
    server.signal("HUP");
    wait_until(
        Duration::from_secs(20),
        "new connections get the new certificate",
        || {
            let (client, url) = (new_client.clone(), healthz.clone());
            async move {
                client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        },
    )
    .await;
    // The connection opened before the swap is still open (a new one would now get
    // the new certificate, which this client does not trust).
    assert_eq!(old_client.get(&healthz).send().await.unwrap().status(), 200);
    let fresh_old = client_trusting(&old.0);
    assert!(
        fresh_old.get(&healthz).send().await.is_err(),
        "a new connection does not get the old certificate"
    );
    assert_eq!(server.pid(), pid, "no restart");
    let (status, _) = server.terminate();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_unreadable_certificate_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), &self_signed());
    let other_key = dir.path().join("other-key.pem");
    std::fs::write(&other_key, self_signed().1).unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let missing = dir.path().join("missing.pem");
    let db = format!("sqlite://{}", dir.path().join("pbg.db").display());
    for (cert, key, named) in [
        (&missing, &key, &missing),
        (&garbage, &key, &garbage),
        (&cert, &garbage, &garbage),
        (&cert, &other_key, &other_key),
    ] {
        let out = std::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", &db)
            .env("TLS_CERT_PATH", cert)
            .env("TLS_KEY_PATH", key)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cert:?} {key:?}: {stderr}");
        assert!(
            stderr.contains(named.to_str().unwrap()),
            "names {named:?}: {stderr}"
        );
    }
}
