//! SPEC §5: "SIGTERM: stop accepting, finish in-flight requests, flush, exit 0."
//!
//! The real binary under concurrent postbacks gets SIGTERM. The writer is told to
//! wait 200 ms for more postbacks before each commit, so at the signal many requests
//! are parked waiting for their commit: the drain must let them finish. Every answer
//! must be a valid 200; a request without an answer must have failed after the
//! signal and must not have been stored (the server finishes what it started); every
//! acknowledged postback must be in the database after the exit; the exit is 0 and
//! comes within the drain timeout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::both_backends;
use crate::helpers::{create_app_cli, wait_until, Backend, ServerProcess, TestDb};

both_backends!(sigterm_under_load_finishes_in_flight_postbacks_and_exits_0);

const WORKERS: usize = 16;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

struct Attempt {
    idfa: String,
    sent: Instant,
    done: Instant,
    /// The event id of a 200, `None` for a connection error.
    event_id: Option<String>,
}

async fn sigterm_under_load_finishes_in_flight_postbacks_and_exits_0(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let (_, key) = create_app_cli(db.url(), "shutdown", "enterprise");
    let db_url = db.url().to_owned();
    let drain_ms = DRAIN_TIMEOUT.as_millis().to_string();
    let server = tokio::task::spawn_blocking(move || {
        ServerProcess::start(
            &db_url,
            &[
                ("PBG_WRITER__MAX_WAIT_MS", "200"),
                ("PBG_HTTP__SHUTDOWN_TIMEOUT_MS", &drain_ms),
            ],
        )
    })
    .await
    .unwrap();
    let base = server.address.clone();
    let addr = base.trim_start_matches("http://").to_owned();

    let attempts = Arc::new(Mutex::new(Vec::<Attempt>::new()));
    let answered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (attempts, answered, stop) = (attempts.clone(), answered.clone(), stop.clone());
            let (base, key) = (base.clone(), key.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                for n in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let idfa = format!("D0000000-0000-4000-8000-{w:04}{n:08}");
                    let body = serde_json::json!({"network_name": "Liftoff", "idfa": idfa});
                    let sent = Instant::now();
                    let result = client
                        .post(format!("{base}/v1/postbacks/kochava"))
                        .header("x-api-key", &key)
                        .json(&body)
                        .send()
                        .await;
                    let event_id = match result {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let text = resp.text().await.expect("a started answer completes");
                            assert_eq!(status, 200, "answer during shutdown: {text}");
                            let v: Value = serde_json::from_str(&text).unwrap();
                            assert_eq!(v["status"], "accepted", "{v}");
                            answered.fetch_add(1, Ordering::SeqCst);
                            Some(v["event_id"].as_str().unwrap().to_owned())
                        }
                        Err(e) => {
                            assert!(!e.is_timeout(), "a postback hung: {e}");
                            None
                        }
                    };
                    let failed = event_id.is_none();
                    attempts.lock().unwrap().push(Attempt {
                        idfa,
                        sent,
                        done: Instant::now(),
                        event_id,
                    });
                    if failed {
                        return; // the server is gone
                    }
                }
            })
        })
        .collect();

    wait_until(Duration::from_secs(20), "postbacks flow", || {
        let answered = answered.clone();
        async move { answered.load(Ordering::SeqCst) >= 100 }
    })
    .await;

    let sigterm_at = Instant::now();
    server.signal("TERM");
    // When does the listener stop accepting? Probe with plain connects.
    let probe = tokio::spawn(async move {
        loop {
            match tokio::net::TcpStream::connect(&addr).await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(_) => return Instant::now(),
            }
        }
    });
    let (status, logs) = tokio::task::spawn_blocking(move || server.wait_exit(DRAIN_TIMEOUT))
        .await
        .unwrap();
    let exit_after = sigterm_at.elapsed();
    stop.store(true, Ordering::SeqCst);
    let listener_closed_at = tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .expect("the listener closes")
        .unwrap();
    for w in workers {
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("workers end once the server is gone")
            .expect("worker");
    }

    assert!(
        status.success(),
        "exit 0 after SIGTERM, got {status}:\n{logs}"
    );
    assert!(
        exit_after < DRAIN_TIMEOUT,
        "exit within the drain timeout, took {exit_after:?}"
    );
    assert!(logs.contains("shutdown complete"), "{logs}");
    assert!(!logs.contains("drain timeout reached"), "{logs}");

    let attempts = std::mem::take(&mut *attempts.lock().unwrap());
    let acknowledged: Vec<&Attempt> = attempts.iter().filter(|a| a.event_id.is_some()).collect();
    let failed: Vec<&Attempt> = attempts.iter().filter(|a| a.event_id.is_none()).collect();
    let in_flight_finished = acknowledged
        .iter()
        .filter(|a| a.sent < sigterm_at && a.done > sigterm_at)
        .count();
    assert!(
        in_flight_finished > 0,
        "postbacks waiting for their commit at SIGTERM were answered"
    );
    for a in &failed {
        assert!(
            a.done >= sigterm_at,
            "{} failed before SIGTERM was sent",
            a.idfa
        );
    }

    // After the exit: every acknowledged postback is stored under its event id, and
    // nothing else (a request that got no answer was never processed).
    let rows = db
        .text_rows("select idfa, cast(id as text) from postback_events")
        .await;
    let stored: std::collections::HashMap<String, String> = rows
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    for a in &acknowledged {
        assert_eq!(
            stored.get(&a.idfa),
            a.event_id.as_ref(),
            "acknowledged {} is stored under its event id",
            a.idfa
        );
    }
    for a in &failed {
        assert!(
            !stored.contains_key(&a.idfa),
            "{} got no answer but was stored",
            a.idfa
        );
    }
    assert_eq!(stored.len(), acknowledged.len(), "only acknowledged rows");

    let failed_sent_before_sigterm = failed.iter().filter(|a| a.sent < sigterm_at).count();
    let failed_sent_before_close = failed
        .iter()
        .filter(|a| a.sent < listener_closed_at)
        .count();
    println!(
        "shutdown[{backend:?}]: acknowledged={} in_flight_at_sigterm_finished={in_flight_finished} \
         connection_errors={} (sent before SIGTERM: {failed_sent_before_sigterm}, before the \
         listener closed: {failed_sent_before_close}) \
         listener_closed_after={:?} exit_after={exit_after:?}",
        acknowledged.len(),
        failed.len(),
        listener_closed_at - sigterm_at,
    );
}
