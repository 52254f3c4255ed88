//! What a new user and an operator hit in the first hour: the key shown once, error
//! messages with their causes, CLI printouts, identifiers in any letter case, and
//! bounded summaries.

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{json_body, run_cli, Backend, ServerProcess, TestApp, TestDb, BIN};

both_backends!(
    a_start_that_cannot_listen_creates_no_app,
    a_start_that_finds_a_key_never_shown_says_how_to_get_a_new_one,
    apps_list_lines_up_and_shows_a_key_in_its_grace_period,
    rotate_key_prints_the_endpoints_with_the_new_key,
    printed_urls_say_when_they_only_work_on_this_machine,
    advertising_ids_in_another_letter_case_are_the_same_user,
    summary_lists_the_top_values_and_sums_the_rest,
);

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn app_count(database_url: &str) -> usize {
    let out = run_cli(database_url, &["apps", "list", "--json"]);
    assert!(out.status.success(), "apps list: {}", stderr(&out));
    let list: Value = serde_json::from_slice(&out.stdout).expect("apps list JSON");
    list["apps"].as_array().expect("apps").len()
}

async fn a_start_that_cannot_listen_creates_no_app(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().unwrap().port();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", db.url())
        .env_remove("RUST_LOG")
        .output()
        .expect("run serve");
    assert!(!out.status.success(), "a taken port stops the start");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")) && err.contains("in use"),
        "names the address and the OS error: {err}"
    );
    assert!(!stdout(&out).contains("API key"), "no key printed");
    assert_eq!(app_count(db.url()), 0, "no app whose key nobody saw");

    drop(taken);
    let server = ServerProcess::start(db.url(), &[]);
    let (_, output) = server.terminate();
    assert!(output.contains("API key: pbgk_"), "{output}");
    assert!(!output.contains("never shown"), "{output}");
}

async fn a_start_that_finds_a_key_never_shown_says_how_to_get_a_new_one(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    // What a start killed between creating the default app and printing its key
    // leaves behind.
    let mut config = postback_gateway::config::Config::defaults();
    config.database_url = db.url().to_owned();
    let store = postback_gateway::open_store(&config).await.expect("open");
    let created = postback_gateway::apps::create_default_app(store.as_ref())
        .await
        .expect("create")
        .expect("created on an empty database");
    store.close().await;
    let app_id = created.app.id.to_string();

    let server = ServerProcess::start(db.url(), &[]);
    let (_, output) = server.terminate();
    assert!(
        output.contains("never shown")
            && output.contains(&format!("apps rotate-key {app_id} --grace-hours 0")),
        "says how to get a new key: {output}"
    );
    assert!(!output.contains("API key:"), "no other app is created");
    assert!(!output.contains(created.api_key.expose()));

    let out = run_cli(
        db.url(),
        &["apps", "rotate-key", &app_id, "--grace-hours", "0"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let server = ServerProcess::start(db.url(), &[]);
    let (_, output) = server.terminate();
    assert!(
        !output.contains("never shown"),
        "a rotated key was shown: {output}"
    );
}

async fn apps_list_lines_up_and_shows_a_key_in_its_grace_period(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let url = db.url();
    for name in ["a", "a much longer app name"] {
        let out = run_cli(url, &["apps", "create", "--name", name]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let list = run_cli(url, &["apps", "list", "--json"]);
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    let first = list["apps"][0]["app_id"].as_str().unwrap().to_owned();
    let out = run_cli(url, &["apps", "rotate-key", &first, "--grace-hours", "5"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let text = stdout(&run_cli(url, &["apps", "list"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two apps:\n{text}");
    for column in ["NAME", "TIER", "KEYS"] {
        let at = lines[0].find(column).expect(column);
        for line in &lines[1..] {
            let before = line.chars().nth(at - 1);
            assert_eq!(before, Some(' '), "{column} lines up:\n{text}");
            assert_ne!(
                line.chars().nth(at),
                Some(' '),
                "{column} lines up:\n{text}"
            );
        }
    }
    let row = lines.iter().find(|l| l.starts_with(&first)).unwrap();
    assert_eq!(row.matches("pbgk_").count(), 2, "both working keys: {row}");
    assert!(row.contains("(expires 20"), "the old key's expiry: {row}");

    let json = run_cli(url, &["apps", "list", "--json"]);
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    let keys = json["apps"][0]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(
        keys[0]["expires_at"].is_null(),
        "the new key does not expire"
    );
    assert!(keys[1]["expires_at"].is_string(), "the old one does");
}

async fn rotate_key_prints_the_endpoints_with_the_new_key(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let url = db.url();
    let created = run_cli(url, &["apps", "create", "--name", "demo", "--json"]);
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let app_id = created["app_id"].as_str().unwrap();
    let out = run_cli(url, &["apps", "rotate-key", app_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let key = text
        .split_whitespace()
        .find(|w| w.starts_with("pbgk_"))
        .expect("the new key");
    assert!(
        text.contains(&format!(
            "/v1/postbacks/tune?api_key={key}&advertiser_sub_publisher="
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("/v1/postbacks/kochava?api_key={key}")),
        "{text}"
    );
    let json = run_cli(url, &["apps", "rotate-key", app_id, "--json"]);
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["endpoints"].as_array().map(Vec::len), Some(6));
}

async fn printed_urls_say_when_they_only_work_on_this_machine(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let create = |envs: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["apps", "create", "--name", "demo"])
            .env("DATABASE_URL", db.url())
            .env_remove("LISTEN_ADDR")
            .env_remove("PUBLIC_BASE_URL");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run");
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let local = create(&[]);
    assert!(
        local.contains("http://127.0.0.1:8080/v1/postbacks/") && local.contains("note:"),
        "a loopback address is flagged: {local}"
    );
    assert!(local.contains("PUBLIC_BASE_URL"), "{local}");
    assert!(
        local.contains("at most 100 attributed installs per clock hour"),
        "the quota: {local}"
    );

    let any = create(&[("LISTEN_ADDR", "0.0.0.0:8080")]);
    assert!(!any.contains("http://0.0.0.0"), "no unroutable URL: {any}");
    assert!(any.contains("http://YOUR_HOST:8080/v1/postbacks/"), "{any}");

    let public = create(&[("PUBLIC_BASE_URL", "https://pb.example.com")]);
    assert!(
        public.contains("https://pb.example.com/v1/postbacks/"),
        "{public}"
    );
    assert!(!public.contains("note:"), "{public}");
}

async fn advertising_ids_in_another_letter_case_are_the_same_user(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let upper = "AAAA1111-2222-4333-8444-555566667777";
    let lower = upper.to_ascii_lowercase();
    let first = app
        .install(json!({"network_name": "Liftoff", "campaign_name": "c1", "idfa": upper}))
        .await;
    let tune = app
        .get_tune(&format!(
            "advertiser_sub_publisher=Vungle&advertiser_sub_campaign=c2&ios_ifa={lower}"
        ))
        .await;
    let body = json_body(tune, 200, "tune install").await;
    assert_eq!(body["status"], "accepted");
    assert_eq!(
        app.count("select count(*) from attributions").await,
        1,
        "one user"
    );
    for value in [upper.to_owned(), lower] {
        let found = app
            .admin_get(&format!(
                "/v1/apps/{}/users/lookup?idfa={value}",
                app.app_id
            ))
            .await;
        let found = json_body(found, 200, &format!("lookup {value}")).await;
        assert_eq!(found["event_id"], first.as_str(), "lookup by {value}");
        assert_eq!(found["idfa"], upper, "stored upper case");
    }
}

async fn summary_lists_the_top_values_and_sums_the_rest(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for (i, source) in ["a", "a", "a", "b", "b", "c"].iter().enumerate() {
        app.install(
            json!({"network_name": source, "idfa": format!("00000000-0000-4000-8000-{i:012}")}),
        )
        .await;
    }
    let get = |query: String| {
        let app = &app;
        async move {
            app.admin_get(&format!("/v1/apps/{}/summary?{query}", app.app_id))
                .await
        }
    };
    let body = json_body(get("by=source&limit=1".into()).await, 200, "limit 1").await;
    assert_eq!(body["rows"], json!([{"value": "a", "installs": 3}]));
    assert_eq!(body["total"], 6);
    assert_eq!(body["other"], 3);
    let body = json_body(get("by=source".into()).await, 200, "default limit").await;
    assert_eq!(body["rows"].as_array().map(Vec::len), Some(3));
    assert_eq!(body["other"], 0);
    for bad in ["0", "1001", "x"] {
        let resp = get(format!("by=source&limit={bad}")).await;
        assert_eq!(resp.status(), 400, "limit={bad}");
    }
}

/// A PostgreSQL database that does not exist: the cause, the host, no password.
#[test]
fn a_missing_postgres_database_is_named_with_its_cause_and_no_password() {
    let admin = crate::helpers::admin_url();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let with_password = base.replacen("postgres@", "postgres:hunter2@", 1);
    let url = format!("{with_password}/pbg_no_such_database");
    let out = run_cli(&url, &["migrate"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("pbg_no_such_database") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "no password: {err}");
}

#[test]
fn a_postgres_port_nobody_listens_on_is_named_with_the_os_error() {
    let out = run_cli(
        "postgres://postgres:hunter2@127.0.0.1:1/postgres",
        &["apps", "list"],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("127.0.0.1:1") && err.contains("refused"),
        "host and cause: {err}"
    );
    assert!(!err.contains("hunter2"), "no password: {err}");
}

#[test]
fn a_sqlite_folder_that_is_a_file_is_named_with_the_os_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), b"not a folder").unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("data/postbacks.db").display()
    );
    let out = run_cli(&url, &["migrate"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}", dir.path().join("data").display())) && err.contains("os error"),
        "path and OS error: {err}"
    );
}
