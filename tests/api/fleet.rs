//! Several gateway processes on one PostgreSQL database, as a fleet behind a load
//! balancer runs them: the install quota, first touch and key changes hold across
//! nodes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{create_app_cli, run_cli, Backend, ServerProcess, TestDb};

/// Three `serve` processes on the database; each prints where it listens.
fn start_fleet(db: &TestDb) -> Vec<ServerProcess> {
    (0..3)
        .map(|_| {
            ServerProcess::start(
                db.url(),
                // A slow periodic reload, so that only a notification can explain
                // a key change seen within a second.
                &[("PBG_KEYS__REFRESH_MS", "60000")],
            )
        })
        .collect()
}

fn stop_fleet(fleet: Vec<ServerProcess>) {
    for node in fleet {
        let (status, output) = node.terminate();
        assert!(status.success(), "node exits 0:\n{output}");
        assert!(!output.contains("panicked"), "{output}");
    }
}

fn install(n: u32) -> Value {
    json!({"network_name": "Liftoff", "idfa": format!("00000000-0000-4000-8000-{n:012}")})
}

async fn post(client: &reqwest::Client, node: &ServerProcess, key: &str, body: &Value) -> u16 {
    post_to(client, &node.address, key, body).await
}

async fn post_to(client: &reqwest::Client, address: &str, key: &str, body: &Value) -> u16 {
    client
        .post(format!("{address}/v1/postbacks/kochava"))
        .header("x-api-key", key)
        .json(body)
        .send()
        .await
        .expect("request sent")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standard_app_gets_exactly_its_quota_across_three_nodes() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let (_, key) = create_app_cli(db.url(), "fleet", "standard");
    let fleet = start_fleet(&db);
    let client = reqwest::Client::new();
    // 300 distinct installs, round-robin, 30 at a time: batches of the three nodes
    // race for the same hour row.
    let hour = || chrono::Utc::now().timestamp() / 3600;
    let started_hour = hour();
    let mut statuses = vec![0u16; 300];
    for chunk in (0..300u32).collect::<Vec<_>>().chunks(30) {
        let mut sends = tokio::task::JoinSet::new();
        for &n in chunk {
            let (client, address, key) = (
                client.clone(),
                fleet[n as usize % 3].address.clone(),
                key.clone(),
            );
            sends.spawn(async move { (n, post_to(&client, &address, &key, &install(n)).await) });
        }
        while let Some(sent) = sends.join_next().await {
            let (n, status) = sent.expect("request task");
            statuses[n as usize] = status;
        }
    }
    let accepted = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    if hour() != started_hour {
        eprintln!("the clock hour turned during the test; not comparing");
        return stop_fleet(fleet);
    }
    assert_eq!((accepted, limited), (100, 200), "statuses: {statuses:?}");
    // Nothing that stores no new install is refused once the quota is used up.
    for (i, node) in fleet.iter().enumerate() {
        let organic = post(&client, node, &key, &json!({"network_name":"organic"})).await;
        assert_eq!(organic, 200, "organic on node {i}");
    }
    let stored: Vec<u32> = (0..300u32)
        .filter(|n| statuses[*n as usize] == 200)
        .collect();
    for (i, node) in fleet.iter().enumerate() {
        let again = post(&client, node, &key, &install(stored[i])).await;
        assert_eq!(again, 200, "redelivery on node {i}");
    }
    stop_fleet(fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn installs_of_one_user_on_every_node_at_once_give_one_attribution() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let (_, key) = create_app_cli(db.url(), "fleet", "enterprise");
    let fleet = start_fleet(&db);
    let client = reqwest::Client::new();
    for round in 0..20u32 {
        let user = format!("AAAA{round:04}-0000-4000-8000-000000000000");
        let mut sends = tokio::task::JoinSet::new();
        for (i, node) in fleet.iter().enumerate() {
            let body = json!({"network_name": format!("net-{i}"), "idfa": user,
                              "kochava_device_id": format!("KD-{round}-{i}")});
            let (client, address, key) = (client.clone(), node.address.clone(), key.clone());
            sends.spawn(async move { post_to(&client, &address, &key, &body).await });
        }
        let statuses = sends.join_all().await;
        assert_eq!(statuses, vec![200, 200, 200], "round {round}");
    }
    let attributions = run_psql_count(db.url(), "select count(*) from attributions");
    assert_eq!(attributions, 20, "one attribution per user");
    let events = run_psql_count(db.url(), "select count(*) from postback_events");
    assert_eq!(events, 60, "every install is kept as an event");
    stop_fleet(fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_out_key_is_refused_on_every_node_within_a_second() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let (app_id, old_key) = create_app_cli(db.url(), "fleet", "enterprise");
    let fleet = start_fleet(&db);
    let client = reqwest::Client::new();
    for node in &fleet {
        let status = post(&client, node, &old_key, &json!({"network_name":"organic"})).await;
        assert_eq!(status, 200);
    }
    let out = run_cli(
        db.url(),
        &[
            "apps",
            "rotate-key",
            &app_id,
            "--grace-hours",
            "0",
            "--json",
        ],
    );
    assert!(out.status.success());
    let rotated_at = Instant::now();
    let new_key = serde_json::from_slice::<Value>(&out.stdout).unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    for (i, node) in fleet.iter().enumerate() {
        loop {
            let old = post(&client, node, &old_key, &json!({"network_name":"organic"})).await;
            if old == 401 {
                break;
            }
            assert!(
                rotated_at.elapsed() < Duration::from_secs(1),
                "node {i} still accepts the old key after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let new = post(&client, node, &new_key, &json!({"network_name":"organic"})).await;
        assert_eq!(new, 200, "node {i} takes the new key");
    }
    stop_fleet(fleet);
}

fn run_psql_count(url: &str, sql: &str) -> i64 {
    let out = std::process::Command::new("psql")
        .args([url, "-XAtc", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}
