//! `check-url`: the offline check of a pasted postback URL, through the real binary.

use serde_json::Value;

use crate::helpers::{Backend, TestDb, BIN};

/// Run `check-url` with a database URL nothing listens on: it must not need one.
fn check_url(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .arg("check-url")
        .args(args)
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env_remove("RUST_LOG")
        .output()
        .expect("run the binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn every_url_the_server_prints_passes_check_url() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    let out = crate::helpers::run_cli(db.url(), &["apps", "create", "--name", "check", "--json"]);
    assert!(out.status.success());
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = created["api_key"].as_str().unwrap();
    let endpoints = created["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 6);
    for e in endpoints {
        let url = match e["postback_url_template"].as_str() {
            Some(t) => t.to_owned(),
            None => format!("{}?api_key={key}", e["endpoint_url"].as_str().unwrap()),
        };
        let (ok, stdout, stderr) = check_url(&[&url]);
        assert!(ok, "{url}:\n{stdout}{stderr}");
        assert!(stdout.contains("result:      OK"), "{stdout}");
        assert!(!stdout.contains("warnings:"), "{url}:\n{stdout}");
        let (ok, stdout, _) = check_url(&["--json", &url]);
        assert!(ok);
        let check: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(check["ok"], true);
        assert_eq!(check["partner"], e["partner"]);
        assert_eq!(check["api_key"], "present");
    }
    // The page and the partners API show YOUR_API_KEY instead of the key.
    let tune = format!(
        "https://pb.example.com/v1/postbacks/tune?api_key=YOUR_API_KEY&{}",
        tune_template()
    );
    let (ok, stdout, _) = check_url(&["--json", &tune]);
    assert!(ok, "{stdout}");
    let check: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(check["api_key"], "placeholder");
}

fn tune_template() -> &'static str {
    "advertiser_sub_publisher={advertiser_sub_publisher}&advertiser_sub_campaign={advertiser_sub_campaign}\
     &advertiser_sub_adgroup={advertiser_sub_adgroup}&advertiser_sub_ad={advertiser_sub_ad}\
     &ios_ifa={ios_ifa}&google_aid={google_aid}"
}

#[test]
fn check_url_passes_good_and_fails_broken_tune_adjust_and_singular_templates() {
    let cases: &[(&str, bool, &str)] = &[
        // Good, as pasted from each dashboard.
        (
            "https://pb.example.com/v1/postbacks/tune?api_key=YOUR_API_KEY&advertiser_sub_publisher={advertiser_sub_publisher}&advertiser_sub_campaign={advertiser_sub_campaign}&ios_ifa={ios_ifa}",
            true,
            "source             advertiser_sub_publisher={advertiser_sub_publisher}",
        ),
        (
            "https://pb.example.com/v1/postbacks/adjust?api_key=YOUR_API_KEY&network_name={network_name}&campaign_name={campaign_name}&gps_adid={gps_adid}&adid={adid}",
            true,
            "google_aid         gps_adid={gps_adid}",
        ),
        (
            "https://pb.example.com/v1/postbacks/singular?api_key=YOUR_API_KEY&network={NETWORK}&cid={CID}&idfa={IDFA}&aifa={AIFA}",
            true,
            "campaign           cid={CID}",
        ),
        // Broken: no key.
        (
            "https://pb.example.com/v1/postbacks/tune?advertiser_sub_publisher={advertiser_sub_publisher}&ios_ifa={ios_ifa}",
            false,
            "no api_key in the URL",
        ),
        // Broken: no dimension has a macro (the keys of another partner).
        (
            "https://pb.example.com/v1/postbacks/adjust?api_key=YOUR_API_KEY&media_source={media_source}&campaign={campaign}&idfa={idfa}",
            false,
            "no dimension has a macro",
        ),
        // Broken: no identifier.
        (
            "https://pb.example.com/v1/postbacks/singular?api_key=YOUR_API_KEY&network={NETWORK}&cid={CID}",
            false,
            "no identifier has a macro",
        ),
        // Broken: no partner.
        (
            "https://pb.example.com/v1/postbacks/tunes?api_key=YOUR_API_KEY&advertiser_sub_publisher={advertiser_sub_publisher}",
            false,
            "no known partner",
        ),
        // Warnings only: an unknown macro and a key twice.
        (
            "https://pb.example.com/v1/postbacks/tune?api_key=YOUR_API_KEY&advertiser_sub_publisher={advertiser_sub_publisher}&advertiser_sub_ad={creative_name}&ios_ifa={ios_ifa}&ios_ifa={ios_ifa}",
            true,
            "unknown macro {creative_name} in advertiser_sub_ad",
        ),
    ];
    for (url, ok, expected) in cases {
        let (passed, stdout, stderr) = check_url(&[url]);
        assert_eq!(passed, *ok, "{url}:\n{stdout}{stderr}");
        assert!(
            stdout.contains(expected),
            "{url}: {expected:?} in\n{stdout}"
        );
        if !ok {
            assert!(stdout.contains("result:      FAILED"), "{stdout}");
            assert!(stderr.contains("the URL has problems"), "{stderr}");
        }
        let (passed, stdout, _) = check_url(&["--json", url]);
        assert_eq!(passed, *ok);
        let check: Value = serde_json::from_str(&stdout).expect("one JSON object");
        assert_eq!(check["ok"], *ok, "{check}");
    }
}
