//! What the logs say: every rejected postback explained at `info` (never its key), and
//! sqlx kept quiet unless asked for.

use crate::both_backends;
use crate::helpers::{create_app_cli, Backend, ServerProcess, TestDb};

both_backends!(
    each_rejected_postback_is_logged_at_info_with_its_reason,
    sqlx_statements_and_migration_notices_stay_out_of_the_logs,
);

async fn each_rejected_postback_is_logged_at_info_with_its_reason(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let (app_id, key) = create_app_cli(db.url(), "logged", "standard");
    let server = ServerProcess::start(db.url(), &[]);
    let client = reqwest::Client::new();
    let base = &server.address;
    let install = r#"{"network_name":"Liftoff","idfa":"A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF"}"#;
    // (request id, request, expected status)
    let cases = [
        (
            "rq-accepted",
            client
                .post(format!("{base}/v1/postbacks/kochava"))
                .header("x-api-key", &key)
                .body(install),
            200,
        ),
        (
            "rq-no-identifier",
            client
                .post(format!("{base}/v1/postbacks/kochava"))
                .header("x-api-key", &key)
                .body(r#"{"network_name":"Liftoff"}"#),
            400,
        ),
        (
            "rq-bad-key",
            client.get(format!(
                "{base}/v1/postbacks/tune?advertiser_sub_publisher=x&api_key=pbgk_{}",
                "0".repeat(64)
            )),
            401,
        ),
        (
            "rq-wrong-method",
            client
                .post(format!("{base}/v1/postbacks/adjust"))
                .header("x-api-key", &key),
            405,
        ),
        (
            "rq-unknown-partner",
            client.get(format!("{base}/v1/postbacks/nope?api_key={key}")),
            404,
        ),
    ];
    for (id, request, status) in cases {
        let resp = request.header("x-request-id", id).send().await.unwrap();
        assert_eq!(resp.status(), status, "{id}");
    }
    let (exit, logs) = server.terminate();
    assert!(exit.success(), "{logs}");
    let line = |id: &str| {
        logs.lines()
            .find(|l| l.contains(&format!("request_id={id}")) && l.contains("postback"))
            .map(str::to_owned)
    };
    assert_eq!(
        line("rq-accepted"),
        None,
        "a 200 is not logged at info:\n{logs}"
    );
    let expected: [(&str, &[&str]); 4] = [
        (
            "rq-no-identifier",
            &[
                "INFO",
                "partner=\"kochava\"",
                &format!("app_id={app_id}"),
                "status=400",
                "verdict=\"invalid\"",
                "reason=\"no device or user identifier present\"",
            ],
        ),
        (
            "rq-bad-key",
            &[
                "INFO",
                "partner=\"tune\"",
                "status=401",
                "verdict=\"unauthorized\"",
                "reason=\"missing or unknown API key\"",
            ],
        ),
        (
            "rq-wrong-method",
            &[
                "INFO",
                "partner=\"adjust\"",
                "status=405",
                "verdict=\"method_not_allowed\"",
            ],
        ),
        (
            "rq-unknown-partner",
            &["INFO", "status=404", "verdict=\"unknown_partner\""],
        ),
    ];
    for (id, parts) in expected {
        let line = line(id).unwrap_or_else(|| panic!("no log line for {id}:\n{logs}"));
        for part in parts {
            assert!(line.contains(part), "{id}: {part:?} missing in {line}");
        }
    }
    assert!(
        !logs.contains(&key["pbgk_".len()..]),
        "the key leaked:\n{logs}"
    );
}

async fn sqlx_statements_and_migration_notices_stay_out_of_the_logs(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    // Migrations already applied: the start below re-runs them, as every start does.
    let (_, key) = create_app_cli(db.url(), "quiet", "standard");
    let server = ServerProcess::start(db.url(), &[("RUST_LOG", "debug")]);
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/postbacks/kochava", server.address))
        .header("x-api-key", &key)
        .body(r#"{"network_name":"Liftoff","idfa":"A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (exit, logs) = server.terminate();
    assert!(exit.success(), "{logs}");
    for noise in ["sqlx::query", "_sqlx_migrations", "insert into"] {
        assert!(!logs.contains(noise), "{noise:?} logged at debug:\n{logs}");
    }
    assert!(
        logs.contains("postback answered"),
        "debug logging is on:\n{logs}"
    );
}
