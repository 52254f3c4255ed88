//! Forwarding destinations, managed through the admin API and the CLI: add (the
//! secret shown once), list (never the secret), disable, enable, rotate-secret,
//! remove; http(s) URLs only; the SSRF rule at add time and
//! `forwarding.allow_private_targets`.

use base64::Engine;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{
    assert_error, create_app_cli, json_body, run_cli, Backend, ServerProcess, TestApp, TestDb,
    ADMIN_TOKEN, BIN,
};

both_backends!(
    api_adds_lists_and_removes_destinations_without_showing_secrets,
    api_refuses_bad_urls_and_private_targets_naming_the_rule,
    api_allows_private_targets_when_configured_and_logs_no_secret,
    cli_manages_destinations_and_never_lists_the_secret,
    cli_refuses_private_targets_unless_allowed_and_unknown_ids,
);

const ALLOW_PRIVATE: (&str, &str) = ("PBG_FORWARDING__ALLOW_PRIVATE_TARGETS", "true");

/// A `whsec_` secret of 32 random bytes (Standard Webhooks).
fn assert_secret(secret: &str) {
    let key = secret
        .strip_prefix("whsec_")
        .unwrap_or_else(|| panic!("whsec_ prefix: {secret}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap_or_else(|e| panic!("base64 after whsec_ ({e}): {secret}"));
    assert_eq!(bytes.len(), 32, "key bytes of {secret}");
}

/// A name of this machine's hosts file (not `localhost`) that maps to a loopback or
/// private address: a name the add-time check must resolve to refuse.
fn hosts_file_name_of_a_private_address() -> String {
    let hosts = std::fs::read_to_string("/etc/hosts").expect("read /etc/hosts");
    hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let ip: std::net::IpAddr = fields.next()?.parse().ok()?;
            let private = match ip {
                std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
                std::net::IpAddr::V6(v6) => v6.is_loopback(),
            };
            private.then(|| fields.map(str::to_owned).collect::<Vec<_>>())
        })
        .flatten()
        .find(|name| !name.starts_with("localhost") && !name.ends_with(".localhost"))
        .unwrap_or_else(|| {
            panic!("/etc/hosts names no private address besides localhost:\n{hosts}")
        })
}

/// URLs the SSRF rule refuses, with what the error names.
fn private_urls() -> Vec<(String, String)> {
    let name = hosts_file_name_of_a_private_address();
    vec![
        ("http://127.0.0.1:9000/hook".into(), "127.0.0.1".into()),
        ("https://10.1.2.3/hook".into(), "10.1.2.3".into()),
        ("http://[::1]/hook".into(), "::1".into()),
        (
            "http://169.254.169.254/latest/meta-data".into(),
            "169.254.169.254".into(),
        ),
        ("http://localhost:8080/hook".into(), "localhost".into()),
        ("http://localhost./hook".into(), "localhost.".into()),
        (
            format!("http://{name}:8080/hook"),
            format!("{name} resolves to"),
        ),
    ]
}

async fn api_adds_lists_and_removes_destinations_without_showing_secrets(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let path = format!("/v1/apps/{}/destinations", app.app_id);
    let post = |body: Value| {
        app.client
            .post(app.url(&path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };

    let resp = post(json!({"url": "https://8.8.8.8/hooks/pbg", "what": "events"}))
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["cache-control"],
        "no-store",
        "the secret is never cached"
    );
    let first = json_body(resp, 201, "add events").await;
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "destination_id, url, what, secret: {first}");
    assert_eq!(first["url"], "https://8.8.8.8/hooks/pbg");
    assert_eq!(first["what"], "events");
    let first_secret = first["secret"].as_str().unwrap().to_owned();
    assert_secret(&first_secret);
    let first_id = first["destination_id"].as_str().unwrap().to_owned();

    let second = json_body(
        post(json!({"url": "HTTP://1.1.1.1/x"})).await.unwrap(),
        201,
        "add with the default what",
    )
    .await;
    assert_eq!(second["what"], "attributions", "the default");
    assert_eq!(second["url"], "http://1.1.1.1/x", "stored normalised");
    let second_secret = second["secret"].as_str().unwrap().to_owned();
    assert_ne!(first_secret, second_secret, "each has its own secret");

    let resp = app
        .client
        .get(app.url(&path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    for secret in [&first_secret, &second_secret] {
        assert!(!text.contains(&secret[6..]), "GET shows no secret: {text}");
    }
    let listed: Value = serde_json::from_str(&text).unwrap();
    let list = listed["destinations"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["destination_id"], first_id.as_str(), "oldest first");
    let mut fields: Vec<&str> = list[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "backlog",
            "created_at",
            "dead",
            "destination_id",
            "disabled_reason",
            "enabled",
            "failing_since",
            "last_success_at",
            "url",
            "what"
        ]
    );
    assert_eq!(list[0]["enabled"], true);
    assert_eq!(list[0]["disabled_reason"], Value::Null);
    assert_eq!(
        (list[0]["backlog"].as_i64(), list[0]["dead"].as_i64()),
        (Some(0), Some(0))
    );

    // Another app cannot see or remove this app's destination.
    let (other, _) = app
        .create_app("other", postback_gateway::domain::Tier::Standard)
        .await;
    let foreign = app
        .client
        .delete(app.url(&format!("/v1/apps/{other}/destinations/{first_id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_error(foreign, 404, "not_found", "another app's destination").await;

    let delete = |id: String| {
        app.client
            .delete(app.url(&format!("{path}/{id}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    let removed = json_body(delete(first_id.clone()).await.unwrap(), 200, "remove").await;
    assert_eq!(removed["destination_id"], first_id.as_str());
    assert_eq!(removed["messages_removed"], 0);
    assert_eq!(
        app.count(&format!(
            "select count(*) from destinations where cast(id as text) = '{first_id}'"
        ))
        .await,
        0,
        "gone from the database"
    );
    assert_error(
        delete(first_id).await.unwrap(),
        404,
        "not_found",
        "removed twice",
    )
    .await;
    assert_error(
        delete("not-a-uuid".into()).await.unwrap(),
        404,
        "not_found",
        "bad id",
    )
    .await;
    let listed = json_body(
        app.client
            .get(app.url(&path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap(),
        200,
        "list after remove",
    )
    .await;
    assert_eq!(listed["destinations"].as_array().unwrap().len(), 1);

    // An app that does not exist, and no token.
    let nowhere = format!("/v1/apps/{}/destinations", uuid::Uuid::now_v7());
    for req in [
        app.client.get(app.url(&nowhere)),
        app.client
            .post(app.url(&nowhere))
            .json(&json!({"url": "https://8.8.8.8/"})),
    ] {
        let resp = req.bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        let body = assert_error(resp, 404, "not_found", "unknown app").await;
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no app"));
    }
    let anonymous = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let put = app
        .client
        .put(app.url(&path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.headers()["allow"],
        "GET, POST",
        "405 lists the route's methods"
    );
    assert_error(put, 405, "method_not_allowed", "PUT destinations").await;
    app.stop().await;
}

async fn api_refuses_bad_urls_and_private_targets_naming_the_rule(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let path = format!("/v1/apps/{}/destinations", app.app_id);
    let post = |body: String| {
        app.client
            .post(app.url(&path))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (url, says) in private_urls() {
        let resp = post(json!({ "url": url }).to_string()).await.unwrap();
        let body = assert_error(resp, 400, "bad_request", &url).await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&says), "{url}: names the host: {message}");
        assert!(
            message.contains("private") && message.contains("forwarding.allow_private_targets"),
            "{url}: names the rule and the setting: {message}"
        );
    }
    for (body, says) in [
        (
            json!({"url": "ftp://files.example.com/x"}).to_string(),
            "http or https",
        ),
        (
            json!({"url": "hooks.example.com/x"}).to_string(),
            "not an absolute",
        ),
        (
            json!({"url": "https://me:pw@8.8.8.8/x"}).to_string(),
            "password",
        ),
        (
            json!({"url": " https://8.8.8.8/x"}).to_string(),
            "white space",
        ),
        (
            json!({"url": format!("https://8.8.8.8/{}", "a".repeat(2048))}).to_string(),
            "longer than 2048",
        ),
        (
            json!({"url": "https://8.8.8.8/x", "what": "clicks"}).to_string(),
            "what must be",
        ),
        (json!({"what": "all"}).to_string(), "url is required"),
        (
            json!({"url": "https://8.8.8.8/x", "secret": "mine"}).to_string(),
            "unknown field",
        ),
        ("not json".to_owned(), "JSON object"),
    ] {
        let resp = post(body.clone()).await.unwrap();
        let answer = assert_error(resp, 400, "bad_request", &body).await;
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    assert_eq!(
        app.count("select count(*) from destinations").await,
        0,
        "nothing refused was stored"
    );
    app.stop().await;
}

async fn api_allows_private_targets_when_configured_and_logs_no_secret(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let (app_id, _) = create_app_cli(db.url(), "forwarder", "standard");
    let server = ServerProcess::start(
        db.url(),
        &[
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("RUST_LOG", "trace"),
            ALLOW_PRIVATE,
        ],
    );
    let client = reqwest::Client::new();
    let path = format!("{}/v1/apps/{app_id}/destinations", server.address);
    let mut secrets = Vec::new();
    for (url, _) in private_urls() {
        let resp = client
            .post(&path)
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "url": url, "what": "all" }))
            .send()
            .await
            .unwrap();
        let created = json_body(resp, 201, &url).await;
        secrets.push(created["secret"].as_str().unwrap().to_owned());
    }
    let listed = client
        .get(&path)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains("127.0.0.1:9000"), "{listed}");
    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    assert!(
        logs.contains("destination added"),
        "adds are logged:\n{logs}"
    );
    for secret in &secrets {
        assert!(!listed.contains(&secret[6..]), "GET shows no secret");
        assert!(
            !logs.contains(&secret[6..]),
            "a secret leaked into the logs:\n{logs}"
        );
    }
}

/// Run the CLI with extra environment variables.
fn run_cli_env(database_url: &str, envs: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", database_url)
        .env_remove("RUST_LOG")
        .envs(envs.iter().copied())
        .output()
        .expect("run the binary")
}

fn stdout_json(out: &std::process::Output, case: &str) -> Value {
    assert!(
        out.status.success(),
        "{case}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{case}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn stdout_text(out: &std::process::Output, case: &str) -> String {
    assert!(
        out.status.success(),
        "{case}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn cli_manages_destinations_and_never_lists_the_secret(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let url = db.url();
    let (app_id, _) = create_app_cli(url, "forwarder", "standard");

    let add = run_cli(
        url,
        &[
            "destinations",
            "add",
            &app_id,
            "--url",
            "https://8.8.8.8/hook",
            "--json",
        ],
    );
    assert!(
        !String::from_utf8_lossy(&add.stderr).contains("whsec_"),
        "the secret is not logged"
    );
    let created = stdout_json(&add, "add --json");
    let mut keys: Vec<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["destination_id", "secret", "url", "what"]);
    assert_eq!(created["what"], "attributions");
    let first_secret = created["secret"].as_str().unwrap().to_owned();
    assert_secret(&first_secret);
    let id = created["destination_id"].as_str().unwrap().to_owned();

    let text = stdout_text(
        &run_cli(
            url,
            &[
                "destinations",
                "add",
                &app_id,
                "--url",
                "http://1.1.1.1/x",
                "--what",
                "all",
            ],
        ),
        "add (text)",
    );
    assert!(
        text.contains("whsec_") && text.contains("shown once"),
        "{text}"
    );
    let bad_what = run_cli(
        url,
        &[
            "destinations",
            "add",
            &app_id,
            "--url",
            "http://1.1.1.1/x",
            "--what",
            "clicks",
        ],
    );
    assert!(!bad_what.status.success());
    assert!(String::from_utf8_lossy(&bad_what.stderr).contains("attributions, events or all"));

    let list_out = run_cli(url, &["destinations", "list", &app_id, "--json"]);
    let list = stdout_json(&list_out, "list --json");
    assert!(
        !String::from_utf8_lossy(&list_out.stdout).contains("whsec_"),
        "list shows no secret"
    );
    let destinations = list["destinations"].as_array().unwrap();
    assert_eq!(destinations.len(), 2);
    assert_eq!(destinations[0]["destination_id"], id.as_str());
    assert_eq!(destinations[0]["enabled"], true);
    assert_eq!(destinations[1]["what"], "all");
    for field in [
        "backlog",
        "dead",
        "last_success_at",
        "failing_since",
        "created_at",
    ] {
        assert!(destinations[0].get(field).is_some(), "{field} in {list}");
    }

    stdout_text(&run_cli(url, &["destinations", "disable", &id]), "disable");
    let list = stdout_json(
        &run_cli(url, &["destinations", "list", &app_id, "--json"]),
        "list after disable",
    );
    assert_eq!(list["destinations"][0]["enabled"], false);
    assert_eq!(list["destinations"][0]["disabled_reason"], "operator");
    let table = stdout_text(&run_cli(url, &["destinations", "list", &app_id]), "list");
    assert!(
        table.contains("DESTINATION ID") && table.contains("BACKLOG"),
        "a table: {table}"
    );
    let row = table
        .lines()
        .find(|l| l.contains(&id))
        .expect("a row per destination");
    assert!(
        row.contains("disabled (operator)") && row.contains("https://8.8.8.8/hook"),
        "{row}"
    );
    assert!(!table.contains("whsec_"), "the table shows no secret");

    stdout_text(&run_cli(url, &["destinations", "enable", &id]), "enable");
    let list = stdout_json(
        &run_cli(url, &["destinations", "list", &app_id, "--json"]),
        "list after enable",
    );
    assert_eq!(list["destinations"][0]["enabled"], true);
    assert_eq!(list["destinations"][0]["disabled_reason"], Value::Null);

    let rotated = stdout_json(
        &run_cli(url, &["destinations", "rotate-secret", &id, "--json"]),
        "rotate-secret",
    );
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_secret(&new_secret);
    assert_ne!(new_secret, first_secret);
    let stored = db
        .text(&format!(
            "select secret from destinations where cast(id as text) = '{id}'"
        ))
        .await;
    assert_eq!(
        stored.as_deref(),
        Some(new_secret.as_str()),
        "the new secret signs"
    );

    let removed = stdout_text(&run_cli(url, &["destinations", "remove", &id]), "remove");
    assert!(removed.contains("removed"), "{removed}");
    let list = stdout_json(
        &run_cli(url, &["destinations", "list", &app_id, "--json"]),
        "list after remove",
    );
    assert_eq!(list["destinations"].as_array().unwrap().len(), 1);
    for cmd in ["disable", "enable", "remove", "rotate-secret"] {
        let again = run_cli(url, &["destinations", cmd, &id]);
        assert!(
            !again.status.success(),
            "{cmd} of a removed destination fails"
        );
        let stderr = String::from_utf8_lossy(&again.stderr);
        assert!(
            stderr.contains(&format!("no destination with id {id}")),
            "{cmd}: {stderr}"
        );
    }
}

async fn cli_refuses_private_targets_unless_allowed_and_unknown_ids(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let url = db.url();
    let (app_id, _) = create_app_cli(url, "forwarder", "standard");
    for (target, says) in private_urls() {
        let refused = run_cli(url, &["destinations", "add", &app_id, "--url", &target]);
        assert!(!refused.status.success(), "{target} is refused");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains(&says) && stderr.contains("forwarding.allow_private_targets"),
            "{target}: names the host, the rule and the setting: {stderr}"
        );
        let allowed = run_cli_env(
            url,
            &[ALLOW_PRIVATE],
            &["destinations", "add", &app_id, "--url", &target, "--json"],
        );
        stdout_json(&allowed, &format!("{target} with allow_private_targets"));
    }
    assert_eq!(
        db.count("select count(*) from destinations").await,
        private_urls().len() as i64,
        "only the allowed adds were stored"
    );

    let unknown = uuid::Uuid::now_v7().to_string();
    for args in [
        vec![
            "destinations",
            "add",
            &unknown,
            "--url",
            "https://8.8.8.8/x",
        ],
        vec!["destinations", "list", &unknown],
    ] {
        let out = run_cli(url, &args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("no app with id {unknown}")),
            "{args:?}: {stderr}"
        );
    }
    let garbage = run_cli(url, &["destinations", "list", "not-an-id"]);
    assert!(!garbage.status.success(), "a malformed app id is refused");
    let ftp = run_cli(
        url,
        &["destinations", "add", &app_id, "--url", "ftp://x.example/"],
    );
    assert!(!ftp.status.success());
    assert!(String::from_utf8_lossy(&ftp.stderr).contains("http or https"));
}
