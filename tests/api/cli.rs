//! The CLI of SPEC §1 against a fresh database, and the first start of `serve`.

use serde_json::Value;

use crate::both_backends;
use crate::helpers::{run_cli, Backend, ServerProcess, TestDb, BIN};

both_backends!(
    apps_commands_create_list_rotate_and_set_tier,
    apps_commands_fail_with_a_message_and_nonzero_exit,
    first_start_prints_the_default_app_key_and_every_endpoint_once,
    a_short_admin_token_stops_the_server_at_start,
);

fn json_out(out: &std::process::Output, case: &str) -> Value {
    assert!(
        out.status.success(),
        "{case}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{case}: stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

async fn apps_commands_create_list_rotate_and_set_tier(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let url = db.url();
    let migrate = run_cli(url, &["migrate"]);
    assert!(migrate.status.success(), "migrate on a fresh database");

    let created = json_out(
        &run_cli(url, &["apps", "create", "--name", "demo", "--json"]),
        "create",
    );
    assert_eq!(created["name"], "demo");
    assert_eq!(created["tier"], "standard");
    let app_id = created["app_id"].as_str().unwrap().to_owned();
    let key = created["api_key"].as_str().unwrap().to_owned();
    assert!(
        key.starts_with("pbgk_") && key.len() == 69,
        "key format: {key}"
    );

    let ent = json_out(
        &run_cli(
            url,
            &[
                "apps",
                "create",
                "--name",
                "big",
                "--tier",
                "enterprise",
                "--json",
            ],
        ),
        "create enterprise",
    );
    assert_eq!(ent["tier"], "enterprise");

    let list_out = run_cli(url, &["apps", "list", "--json"]);
    let list = json_out(&list_out, "list");
    let stdout = String::from_utf8_lossy(&list_out.stdout);
    assert!(!stdout.contains(&key[5..]), "list never shows a key");
    let apps = list["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 2);
    assert_eq!(apps[0]["app_id"], app_id.as_str());
    assert_eq!(apps[0]["key_prefixes"][0], &key[..13]);

    let rotated = json_out(
        &run_cli(
            url,
            &[
                "apps",
                "rotate-key",
                &app_id,
                "--grace-hours",
                "2",
                "--json",
            ],
        ),
        "rotate",
    );
    let new_key = rotated["api_key"].as_str().unwrap();
    assert_ne!(new_key, key);
    let list = json_out(
        &run_cli(url, &["apps", "list", "--json"]),
        "list after rotate",
    );
    assert_eq!(
        list["apps"][0]["key_prefixes"].as_array().unwrap().len(),
        2,
        "old key still active in its grace period"
    );

    let set = run_cli(url, &["apps", "set-tier", &app_id, "enterprise"]);
    assert!(set.status.success());
    let list = json_out(
        &run_cli(url, &["apps", "list", "--json"]),
        "list after set-tier",
    );
    assert_eq!(list["apps"][0]["tier"], "enterprise");

    let text = run_cli(url, &["apps", "list"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("demo"));
}

async fn apps_commands_fail_with_a_message_and_nonzero_exit(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let url = db.url();
    let unknown = uuid::Uuid::now_v7().to_string();
    for (case, args) in [
        (
            "set-tier unknown app",
            vec!["apps", "set-tier", unknown.as_str(), "enterprise"],
        ),
        (
            "rotate unknown app",
            vec!["apps", "rotate-key", unknown.as_str()],
        ),
        (
            "bad tier",
            vec!["apps", "create", "--name", "x", "--tier", "gold"],
        ),
        (
            "bad app id",
            vec!["apps", "set-tier", "not-a-uuid", "standard"],
        ),
        ("empty name", vec!["apps", "create", "--name", " "]),
    ] {
        let out = run_cli(url, &args);
        assert!(!out.status.success(), "{case}: must fail");
        assert!(out.stdout.is_empty(), "{case}: nothing on stdout");
        assert!(!out.stderr.is_empty(), "{case}: a message on stderr");
    }
}

async fn first_start_prints_the_default_app_key_and_every_endpoint_once(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let server = ServerProcess::start(db.url(), &[]);
    let address = server.address.clone();
    let (status, output) = server.terminate();
    assert!(status.success(), "exit 0 after SIGTERM: {status}\n{output}");
    assert!(
        output.contains("app created: default (tier standard)"),
        "{output}"
    );
    let key_line = output
        .lines()
        .find(|l| l.contains("API key:"))
        .expect("key printed");
    let key = key_line.split_whitespace().last().unwrap().to_owned();
    assert!(key.starts_with("pbgk_"));
    for partner in [
        "kochava",
        "tune",
        "appsflyer",
        "adjust",
        "singular",
        "branch",
    ] {
        assert!(
            output.contains(&format!("{address}/v1/postbacks/{partner}?api_key={key}")),
            "{partner} endpoint in:\n{output}"
        );
    }
    assert!(
        output.contains("advertiser_sub_publisher={advertiser_sub_publisher}"),
        "Tune template:\n{output}"
    );

    let again = ServerProcess::start(db.url(), &[]);
    let (status, output) = again.terminate();
    assert!(status.success());
    assert!(
        !output.contains("API key:"),
        "printed only on the first start:\n{output}"
    );
    assert!(!output.contains(&key[5..]));
}

async fn a_short_admin_token_stops_the_server_at_start(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", db.url())
        .env("ADMIN_TOKEN", "only-15-chars-x")
        .env_remove("RUST_LOG")
        // A server that does start must not hang the test: it would never exit.
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|child| wait_for_exit(child, std::time::Duration::from_secs(30)))
        .expect("run the binary");
    assert!(!out.status.success(), "a 15-character token must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin_token") && stderr.contains("16 characters"),
        "the message names the key: {stderr}"
    );
    assert!(
        !stderr.contains("only-15-chars-x"),
        "never the token itself"
    );
}

/// The child's output once it exits; killed (and the test failed) past `deadline`.
fn wait_for_exit(
    child: std::process::Child,
    deadline: std::time::Duration,
) -> std::io::Result<std::process::Output> {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => out,
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("the server started and kept running with a short ADMIN_TOKEN");
        }
    }
}
