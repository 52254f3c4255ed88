//! SPEC §5: "An acknowledged (200 accepted) postback survives `kill -9` of the server."
//!
//! The real binary under concurrent load (distinct deliveries, plus partner-style
//! retries that resend identical bodies), killed with SIGKILL at random moments and
//! restarted on the same database. Every delivery that was answered `accepted` or
//! `duplicate` must be stored exactly once with the event id it was answered with;
//! an unanswered one is stored once or not at all; resending everything then leaves
//! exactly one row per delivery and counters that match.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use crate::both_backends;
use crate::helpers::{create_app_cli, wait_until, Backend, ServerProcess, TestDb};

both_backends!(acknowledged_postbacks_survive_kill_9_and_retries_stay_exactly_once);

/// SIGKILLs before the final, surviving server.
const CYCLES: usize = 12;
const WORKERS: usize = 12;
/// Answers each server generation must give before it may be killed (so every kill
/// lands under load), and the random extra time it runs after that.
const ANSWERS_PER_CYCLE: u64 = 60;
const MAX_EXTRA_MS: u64 = 120;

/// A small deterministic xorshift64*; the seed is printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Default)]
struct Delivery {
    body: String,
    idfa: String,
    /// The event id of the first 200; every later 200 must name the same one.
    event_id: Option<String>,
    attempts: u32,
    failed_attempts: u32,
}

/// Which server is up: generation number and address (`None` while it is down).
type Current = (u64, Option<String>);

struct Shared {
    deliveries: Mutex<Vec<Delivery>>,
    /// Deliveries to send again: after a failed attempt (the partner retries) or
    /// after an answer (a partner retry of a delivered postback).
    retries: Mutex<VecDeque<usize>>,
    /// Stop creating new deliveries; drain `retries`, then stop.
    draining: AtomicBool,
    answers: AtomicU64,
    duplicates_seen: AtomicU64,
    /// Attempts that failed without an answer, by the generation they were sent to.
    failures_by_generation: Mutex<HashMap<u64, u64>>,
    server: watch::Sender<Current>,
    key: String,
}

impl Shared {
    fn new_delivery(&self) -> usize {
        let mut deliveries = self.deliveries.lock().unwrap();
        let n = deliveries.len();
        let idfa = format!("C0000000-0000-4000-8000-{n:012}");
        let body = serde_json::json!({
            "network_name": "Liftoff",
            "campaign_name": "crash-test",
            "site_id": format!("site_{}", n % 7),
            "idfa": idfa,
            "ip_address": "203.0.113.7",
        })
        .to_string();
        deliveries.push(Delivery {
            body,
            idfa,
            ..Delivery::default()
        });
        n
    }
}

/// What one attempt of one delivery got back.
enum Answer {
    Ok {
        duplicate: bool,
        event_id: String,
    },
    /// Connection refused, reset or closed before a response: the server died.
    NoAnswer,
}

async fn send(client: &reqwest::Client, base: &str, key: &str, body: &str) -> Answer {
    let sent = client
        .post(format!("{base}/v1/postbacks/kochava"))
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            assert!(!e.is_timeout(), "a postback hung: {e}");
            return Answer::NoAnswer;
        }
    };
    let status = resp.status().as_u16();
    let text = match resp.text().await {
        Ok(t) => t,
        Err(e) => {
            assert!(!e.is_timeout(), "a response body hung: {e}");
            return Answer::NoAnswer;
        }
    };
    assert_eq!(status, 200, "every answered postback is a 200: {text}");
    let v: Value = serde_json::from_str(&text).expect("JSON answer");
    let verdict = v["status"].as_str().expect("status");
    assert!(
        verdict == "accepted" || verdict == "duplicate",
        "verdict of an attributed install: {v}"
    );
    Answer::Ok {
        duplicate: verdict == "duplicate",
        event_id: v["event_id"].as_str().expect("event_id").to_owned(),
    }
}

/// One simulated partner connection: send, record, sometimes retry.
async fn worker(shared: Arc<Shared>, seed: u64) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let mut rng = Rng(seed);
    let mut rx = shared.server.subscribe();
    loop {
        // Wait for a server that is up.
        let (generation, base) = {
            let current = rx
                .wait_for(|(_, addr)| addr.is_some())
                .await
                .expect("server channel open");
            (current.0, current.1.clone().unwrap())
        };
        let retry = {
            let mut retries = shared.retries.lock().unwrap();
            if shared.draining.load(Ordering::SeqCst) || rng.chance(50) {
                retries.pop_front()
            } else {
                None
            }
        };
        let index = match retry {
            Some(i) => i,
            None if shared.draining.load(Ordering::SeqCst) => return,
            None => shared.new_delivery(),
        };
        let (body, had_answer) = {
            let mut deliveries = shared.deliveries.lock().unwrap();
            let d = &mut deliveries[index];
            d.attempts += 1;
            (d.body.clone(), d.event_id.clone())
        };
        let first_attempt = retry.is_none();
        match send(&client, &base, &shared.key, &body).await {
            Answer::Ok {
                duplicate,
                event_id,
            } => {
                shared.answers.fetch_add(1, Ordering::SeqCst);
                if duplicate {
                    shared.duplicates_seen.fetch_add(1, Ordering::SeqCst);
                }
                if first_attempt {
                    assert!(
                        !duplicate,
                        "the first attempt of a new delivery is accepted"
                    );
                }
                match &had_answer {
                    Some(first) => {
                        assert!(duplicate, "a resent acknowledged delivery is a duplicate");
                        assert_eq!(&event_id, first, "a duplicate names the first event id");
                    }
                    None => {
                        shared.deliveries.lock().unwrap()[index].event_id = Some(event_id);
                    }
                }
                if rng.chance(20) {
                    shared.retries.lock().unwrap().push_back(index);
                }
            }
            Answer::NoAnswer => {
                shared.deliveries.lock().unwrap()[index].failed_attempts += 1;
                *shared
                    .failures_by_generation
                    .lock()
                    .unwrap()
                    .entry(generation)
                    .or_default() += 1;
                if rng.chance(50) {
                    shared.retries.lock().unwrap().push_back(index);
                }
                // This server is gone; wait for the next one.
                let _ = rx.wait_for(|(g, _)| *g > generation).await;
            }
        }
    }
}

async fn start_server(db_url: String) -> ServerProcess {
    tokio::task::spawn_blocking(move || ServerProcess::start(&db_url, &[]))
        .await
        .expect("start server")
}

/// (idfa → event ids stored for it) for every row of `postback_events`.
async fn stored_rows(db: &TestDb) -> HashMap<String, Vec<String>> {
    let mut stored: HashMap<String, Vec<String>> = HashMap::new();
    for row in db
        .text_rows("select idfa, cast(id as text) from postback_events")
        .await
    {
        let idfa = row[0].clone().expect("idfa");
        stored
            .entry(idfa)
            .or_default()
            .push(row[1].clone().expect("id"));
    }
    stored
}

async fn acknowledged_postbacks_survive_kill_9_and_retries_stay_exactly_once(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let started = Instant::now();
    // Enterprise: the hourly quota of a standard app would turn the load into 429s.
    let (_, key) = create_app_cli(db.url(), "crash", "enterprise");
    let seed = 0x5EED_0000_C4A5_u64 ^ (backend as u64);
    let (server_tx, _) = watch::channel::<Current>((0, None));
    let shared = Arc::new(Shared {
        deliveries: Mutex::new(Vec::new()),
        retries: Mutex::new(VecDeque::new()),
        draining: AtomicBool::new(false),
        answers: AtomicU64::new(0),
        duplicates_seen: AtomicU64::new(0),
        failures_by_generation: Mutex::new(HashMap::new()),
        server: server_tx,
        key: key.clone(),
    });
    let workers: Vec<_> = (0..WORKERS as u64)
        .map(|w| tokio::spawn(worker(shared.clone(), seed.wrapping_add(w * 7919) | 1)))
        .collect();

    let mut rng = Rng(seed | 1);
    let mut generation = 0;
    for _cycle in 0..CYCLES {
        let server = start_server(db.url().to_owned()).await;
        generation += 1;
        let answers_before = shared.answers.load(Ordering::SeqCst);
        shared
            .server
            .send_replace((generation, Some(server.address.clone())));
        // Kill only under load: after some answers, then at a random moment.
        let answers = &shared.answers;
        wait_until(
            Duration::from_secs(20),
            "the server answers postbacks",
            || async move { answers.load(Ordering::SeqCst) >= answers_before + ANSWERS_PER_CYCLE },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.below(MAX_EXTRA_MS))).await;
        let out = tokio::task::spawn_blocking(move || server.kill9())
            .await
            .unwrap();
        assert!(
            !out.contains("panicked"),
            "the server panicked before the kill:\n{out}"
        );
        generation += 1;
        shared.server.send_replace((generation, None));
    }

    // The survivor: the partners' pending retries are delivered, then no new ones.
    let server = start_server(db.url().to_owned()).await;
    generation += 1;
    let final_generation = generation;
    shared.draining.store(true, Ordering::SeqCst);
    shared
        .server
        .send_replace((generation, Some(server.address.clone())));
    for w in workers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("the workers finish their retries against the surviving server")
            .expect("worker");
    }
    let failures = shared.failures_by_generation.lock().unwrap().clone();
    assert_eq!(
        failures.get(&final_generation).copied().unwrap_or(0),
        0,
        "a server that was not killed answered every postback"
    );

    // Every acknowledged delivery is stored exactly once, under the id it was
    // answered with; an unanswered one at most once.
    let deliveries = std::mem::take(&mut *shared.deliveries.lock().unwrap());
    let stored = stored_rows(&db).await;
    let mut acknowledged = 0;
    let mut unanswered_but_stored = 0;
    let mut unanswered = 0;
    for d in &deliveries {
        let rows = stored.get(&d.idfa).map_or(&[][..], Vec::as_slice);
        match &d.event_id {
            Some(id) => {
                acknowledged += 1;
                assert_eq!(
                    rows,
                    std::slice::from_ref(id),
                    "acknowledged delivery {} stored exactly once under its event id",
                    d.idfa
                );
            }
            None => {
                unanswered += 1;
                assert!(rows.len() <= 1, "{} stored {} times", d.idfa, rows.len());
                unanswered_but_stored += rows.len();
            }
        }
    }
    assert_eq!(
        stored.values().map(Vec::len).sum::<usize>(),
        acknowledged + unanswered_but_stored,
        "nothing but the deliveries is stored"
    );

    // Every partner eventually retries: resend everything. A stored delivery answers
    // duplicate with its stored id, a missing one is accepted now.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let deliveries = Arc::new(deliveries);
    let stored = Arc::new(stored);
    let resend: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (client, deliveries, stored) = (client.clone(), deliveries.clone(), stored.clone());
            let (base, key) = (server.address.clone(), key.clone());
            tokio::spawn(async move {
                let mut duplicates = 0u64;
                for d in deliveries.iter().skip(w).step_by(WORKERS) {
                    let Answer::Ok {
                        duplicate,
                        event_id,
                    } = send(&client, &base, &key, &d.body).await
                    else {
                        panic!(
                            "the surviving server did not answer the resend of {}",
                            d.idfa
                        );
                    };
                    match stored.get(&d.idfa).and_then(|ids| ids.first()) {
                        Some(id) => {
                            assert!(duplicate, "{}: stored, so a duplicate", d.idfa);
                            assert_eq!(&event_id, id, "{}: the stored event id", d.idfa);
                            duplicates += 1;
                        }
                        None => assert!(!duplicate, "{}: not stored, so accepted", d.idfa),
                    }
                }
                duplicates
            })
        })
        .collect();
    let mut resend_duplicates = 0;
    for r in resend {
        resend_duplicates += r.await.expect("resend");
    }

    let n = deliveries.len() as i64;
    let stored = stored_rows(&db).await;
    assert_eq!(stored.len() as i64, n, "one idfa per delivery is stored");
    assert!(
        stored.values().all(|ids| ids.len() == 1),
        "exactly one row per delivery"
    );
    assert_eq!(
        db.count("select count(*) from postback_events").await,
        n,
        "rows"
    );
    assert_eq!(
        db.count("select count(*) from attributions").await,
        n,
        "one first-touch attribution per delivery (each is a new device)"
    );
    let counter =
        |col: &str| format!("select {col} from partner_connections where partner = 'kochava'");
    assert_eq!(db.count(&counter("installs")).await, n, "installs counter");
    assert_eq!(db.count(&counter("events")).await, 0, "events counter");
    assert_eq!(
        db.text(&counter("status")).await.as_deref(),
        Some("connected")
    );
    let total_attempts: u64 = deliveries.iter().map(|d| u64::from(d.attempts)).sum();
    let duplicates = db.count(&counter("duplicates")).await;
    let duplicates_seen = shared.duplicates_seen.load(Ordering::SeqCst) + resend_duplicates;
    // Some duplicates were committed by a server killed before it could answer, so
    // the counter may exceed what was seen, but never what was sent.
    assert!(
        duplicates >= duplicates_seen as i64,
        "duplicates counter {duplicates} < {duplicates_seen} duplicate answers"
    );
    assert!(
        duplicates + n <= (total_attempts + deliveries.len() as u64) as i64,
        "duplicates counter {duplicates} counts more than was sent"
    );

    let (status, out) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "survivor exits 0 on SIGTERM:\n{out}");

    let failed_attempts: u64 = failures.values().sum();
    println!(
        "crash[{backend:?}]: deliveries={} acknowledged={acknowledged} cycles={CYCLES} \
         attempts={} failed_attempts={failed_attempts} unanswered={unanswered} \
         unanswered_but_committed={unanswered_but_stored} duplicate_answers={duplicates_seen} \
         elapsed={:.1}s",
        deliveries.len(),
        total_attempts + deliveries.len() as u64,
        started.elapsed().as_secs_f64()
    );
}
