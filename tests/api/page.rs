//! The "Technology Partners → Attribution" page: over HTTP for its headers and login,
//! and in a real headless Chromium for what a person sees.

use std::process::Command;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, ADMIN_TOKEN};
use postback_gateway::domain::Tier;

both_backends!(
    page_needs_basic_login_and_sends_strict_headers,
    browser_shows_green_for_connected_grey_for_the_rest_and_the_chart,
    browser_shows_amber_for_a_stale_partner_and_what_the_others_receive,
    the_test_form_runs_the_dry_run_and_refuses_cross_site_posts,
    apps_index_links_every_app_to_its_page_and_unknown_apps_get_an_html_404,
);

async fn page_needs_basic_login_and_sends_strict_headers(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let url = app.url(&format!("/apps/{}/attribution", app.app_id));
    let resp = app.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["x-frame-options"],
        "DENY",
        "the login prompt cannot be framed either"
    );
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"),
        "browsers get a login prompt"
    );
    let resp = app
        .client
        .get(&url)
        .basic_auth("anyone", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = app
        .client
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the page wants Basic, not Bearer");

    let resp = app
        .client
        .get(&url)
        .basic_auth("anyone", Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = |n: &str| resp.headers()[n].to_str().unwrap().to_owned();
    assert!(h("content-type").starts_with("text/html"));
    assert_eq!(h("cache-control"), "no-store");
    assert_eq!(h("x-content-type-options"), "nosniff");
    assert_eq!(h("x-frame-options"), "DENY");
    let csp = h("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert!(
        csp.contains("form-action 'self'"),
        "forms go to this server only: {csp}"
    );
    let html = resp.text().await.unwrap();
    assert!(html.contains("Technology Partners") && html.contains("Attribution"));
    assert!(
        !html.contains(&app.api_key[5..]),
        "the page never shows the key"
    );
    assert!(
        html.contains(&app.api_key[..13]),
        "the masked key (prefix) is shown"
    );
    assert!(!html.contains("<script"), "no scripts");
    assert!(
        !html.contains(" src=") && !html.contains("<link"),
        "no external assets"
    );

    let resp = app
        .client
        .get(app.url(&format!("/apps/{}/attribution", uuid::Uuid::now_v7())))
        .basic_auth("a", Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    app.stop().await;
}

/// Debian's Chromium; `.ci/run` installs it. Outside CI a missing browser skips loudly.
fn chromium() -> Option<&'static str> {
    for path in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(path).exists() {
            return Some(path);
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("chromium is not installed (apt-get install chromium)");
    }
    eprintln!("\n!!! SKIPPING browser test: chromium not installed\n");
    None
}

async fn browser_shows_green_for_connected_grey_for_the_rest_and_the_chart(backend: Backend) {
    let Some(browser) = chromium() else { return };
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.install(serde_json::json!({"network_name":"Liftoff","campaign_name":"c","idfa":"00000000-0000-4000-8000-000000000001"})).await;

    let dom = dump_dom(browser, &app).await;
    let section = |partner: &str| section(&dom, partner);
    let kochava = section("kochava");
    assert!(
        kochava.contains("dot green") && kochava.contains("data-status=\"connected\""),
        "kochava green:\n{kochava}"
    );
    assert!(
        kochava.contains("last attributed install <time")
            && (kochava.contains(">just now</time>") || kochava.contains(">1 min ago</time>")),
        "a relative time: {kochava}"
    );
    assert!(
        kochava.contains("<time datetime=") && kochava.contains(" UTC\">"),
        "the exact time on hover: {kochava}"
    );
    assert!(
        kochava.contains("<strong>1</strong> install<"),
        "one install: {kochava}"
    );
    assert!(kochava.contains("<strong>0</strong> events<"), "{kochava}");
    assert!(
        kochava.contains("data-deliveries")
            && kochava.contains("data-verdict=\"accepted\"")
            && kochava.contains("install stored")
            && kochava.contains("Liftoff / c"),
        "the recent deliveries table: {kochava}"
    );
    assert!(
        dom.contains("1 of 6 partners connected"),
        "the summary line"
    );
    for partner in ["tune", "appsflyer", "adjust", "singular", "branch"] {
        let s = section(partner);
        assert!(
            s.contains("dot grey") && s.contains("data-status=\"not_connected\""),
            "{partner} grey:\n{s}"
        );
        assert!(
            s.contains("waiting for the first attributed install"),
            "{partner}"
        );
    }
    let chart_start = dom
        .find("data-chart=\"installs-by-source\"")
        .expect("the chart");
    let chart = &dom[chart_start..dom[chart_start..].find("</svg>").unwrap() + chart_start];
    assert!(
        chart.contains("<rect"),
        "a bar for today's install:\n{chart}"
    );
    assert!(dom.contains("Liftoff"), "legend names the source");
    let axis_start = chart.find("data-axis=\"y\"").expect("a y-axis");
    let axis = &chart[axis_start..];
    for tick in [">0</text>", ">1</text>"] {
        assert!(axis.contains(tick), "y-axis label {tick}:\n{chart}");
    }
    app.stop().await;
}

/// The page as headless Chromium renders it, logged in.
async fn dump_dom(browser: &'static str, app: &TestApp) -> String {
    let address = app.address.trim_start_matches("http://");
    let url = format!(
        "http://admin:{ADMIN_TOKEN}@{address}/apps/{}/attribution",
        app.app_id
    );
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(url)
            .output()
            .expect("run chromium")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("Technology Partners"),
        "logged in and rendered:\n{dom}"
    );
    dom
}

/// One partner's section of a page.
fn section(dom: &str, partner: &str) -> String {
    let start = dom
        .find(&format!("data-partner=\"{partner}\""))
        .unwrap_or_else(|| panic!("{partner} section in:\n{dom}"));
    let rest = &dom[start..];
    rest[..rest.find("</section>").unwrap()].to_owned()
}

async fn browser_shows_amber_for_a_stale_partner_and_what_the_others_receive(backend: Backend) {
    let Some(browser) = chromium() else { return };
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // Kochava connected, then quiet for two hours (past the 60-minute floor).
    app.install(
        serde_json::json!({"network_name":"Liftoff","idfa":"00000000-0000-4000-8000-000000000001"}),
    )
    .await;
    app.backdate("kochava", chrono::Duration::hours(2)).await;
    // Tune only organic, Adjust only rejected, Singular one of each.
    let organic = "publisher_name=organic&ios_ifa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF";
    assert_eq!(app.get_tune(organic).await.status(), 200);
    let key = app.api_key.clone();
    let rejected = app
        .get_postback("adjust", Some(&key), "network_name=Moloco")
        .await;
    assert_eq!(rejected.status(), 400);
    for (query, status) in [("network=Organic&idfa=x", 200), ("network=AppLovin", 400)] {
        let resp = app.get_postback("singular", Some(&key), query).await;
        assert_eq!(resp.status(), status);
    }
    // Organic and rejected counts are committed with the writer's next batch.
    crate::helpers::wait_until(
        std::time::Duration::from_secs(10),
        "the counters are committed",
        || async {
            app.count(
                "select count(*) from partner_connections                  where organic_ignored + rejected > 0",
            )
            .await
                == 3
        },
    )
    .await;

    let dom = dump_dom(browser, &app).await;
    let kochava = section(&dom, "kochava");
    assert!(
        kochava.contains("dot amber") && kochava.contains("data-status=\"stale\""),
        "kochava amber:\n{kochava}"
    );
    assert!(
        kochava.contains("stale: nothing accepted for 2 h"),
        "{kochava}"
    );
    assert!(
        kochava.contains("last attributed install <time") && kochava.contains(">2 h ago</time>"),
        "{kochava}"
    );
    let tune = section(&dom, "tune");
    assert!(tune.contains("dot grey"), "{tune}");
    assert!(
        tune.contains("receiving only organic postbacks (1 so far)"),
        "{tune}"
    );
    let adjust = section(&dom, "adjust");
    assert!(
        adjust.contains("receiving only rejected postbacks (1 so far)"),
        "{adjust}"
    );
    assert!(
        adjust.contains("class=\"warn\" data-warn=\"\"><strong>1</strong> rejected"),
        "the rejected count in the warning colour:\n{adjust}"
    );
    assert!(adjust.contains("1 postback was refused (400)"), "{adjust}");
    let singular = section(&dom, "singular");
    assert!(
        singular.contains("receiving only organic and rejected postbacks"),
        "{singular}"
    );
    assert!(
        dom.contains("0 of 6 partners connected, 1 stale"),
        "the summary line"
    );
    assert!(
        section(&dom, "branch").contains("waiting for the first attributed install"),
        "nothing heard"
    );
    app.stop().await;
}

async fn the_test_form_runs_the_dry_run_and_refuses_cross_site_posts(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let page_url = app.url(&format!("/apps/{}/attribution", app.app_id));
    let html = app
        .client
        .get(&page_url)
        .basic_auth("me", Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let tune = section(&html, "tune");
    assert!(tune.contains("action=\"attribution/test\""), "{tune}");
    let needle = "name=\"csrf\" value=\"";
    let token_at = tune.find(needle).expect("a form token") + needle.len();
    let token = tune[token_at..token_at + 64].to_owned();
    assert!(
        tune.contains("advertiser_sub_publisher=ironSource"),
        "a prefilled example"
    );

    let form_url = format!("{page_url}/test");
    let send = |token: String, payload: &'static str, cross_site: bool| {
        let mut req = app
            .client
            .post(&form_url)
            .basic_auth("me", Some(ADMIN_TOKEN))
            .form(&[
                ("csrf", token.as_str()),
                ("partner", "tune"),
                ("payload", payload),
            ]);
        if cross_site {
            req = req.header("sec-fetch-site", "cross-site");
        }
        req.send()
    };
    // A whole pasted URL with its advertiser_sub_ad macro left unfilled.
    let pasted = "https://pb.example.com/v1/postbacks/tune?api_key=YOUR_API_KEY&advertiser_sub_publisher=Vungle&advertiser_sub_ad=%7Badvertiser_sub_ad%7D&ios_ifa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF";
    let resp = send(token.clone(), pasted, false).await.unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!csp.contains("script-src") && csp.contains("form-action 'self'"));
    let html = resp.text().await.unwrap();
    let tune = section(&html, "tune");
    assert!(
        tune.contains("<details class=\"test\" open"),
        "opened: {tune}"
    );
    assert!(tune.contains("data-verdict=\"accepted\""), "{tune}");
    assert!(
        tune.contains("the real endpoint would answer <strong>200"),
        "{tune}"
    );
    assert!(
        tune.contains("unfilled macro {advertiser_sub_ad} in advertiser_sub_ad"),
        "{tune}"
    );
    assert!(
        tune.contains("A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF"),
        "the row: {tune}"
    );
    assert!(
        !section(&html, "kochava").contains("data-verdict"),
        "the answer is under its partner only"
    );
    assert_eq!(
        app.count("select count(*) from postback_events").await,
        0,
        "the test stored nothing"
    );
    assert_eq!(
        app.count("select count(*) from partner_connections").await,
        0,
        "and counted nothing"
    );

    // Without the page's token, or sent by another site: refused.
    let resp = send("0".repeat(64), pasted, false).await.unwrap();
    crate::helpers::assert_error(resp, 403, "forbidden", "wrong token").await;
    let resp = send(String::new(), pasted, false).await.unwrap();
    crate::helpers::assert_error(resp, 403, "forbidden", "no token").await;
    let resp = send(token.clone(), pasted, true).await.unwrap();
    crate::helpers::assert_error(resp, 403, "forbidden", "cross-site").await;
    // Another app's token does not fit this app's form.
    let (other, _) = app.create_app("other", Tier::Standard).await;
    let resp = app
        .client
        .post(app.url(&format!("/apps/{other}/attribution/test")))
        .basic_auth("me", Some(ADMIN_TOKEN))
        .form(&[
            ("csrf", token.as_str()),
            ("partner", "tune"),
            ("payload", "x=1"),
        ])
        .send()
        .await
        .unwrap();
    crate::helpers::assert_error(resp, 403, "forbidden", "another app's token").await;
    // The page login comes first.
    let resp = app
        .client
        .post(&form_url)
        .form(&[
            ("csrf", token.as_str()),
            ("partner", "tune"),
            ("payload", "x=1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // A JSON partner takes its body as it is.
    let resp = app
        .client
        .post(&form_url)
        .basic_auth("me", Some(ADMIN_TOKEN))
        .form(&[
            ("csrf", token.as_str()),
            ("partner", "kochava"),
            ("payload", r#"{"network_name":"Organic","idfa":"x"}"#),
        ])
        .send()
        .await
        .unwrap();
    let html = resp.text().await.unwrap();
    let kochava = section(&html, "kochava");
    assert!(kochava.contains("data-verdict=\"organic\""), "{kochava}");
    assert!(
        kochava.contains("organic: network_name is &quot;Organic&quot;"),
        "{kochava}"
    );
    app.stop().await;
}

/// `/` and `/apps` were JSON 404s: there was no way to find an app's page.
async fn apps_index_links_every_app_to_its_page_and_unknown_apps_get_an_html_404(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (other, _) = app.create_app("Second <app> & co", Tier::Enterprise).await;
    for path in ["/apps", "/"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path} needs the login");
        assert!(resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"));
        let resp = app
            .client
            .get(app.url(path))
            .basic_auth("me", Some(ADMIN_TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = |n: &str| resp.headers()[n].to_str().unwrap().to_owned();
        assert!(h("content-type").starts_with("text/html"), "{path}");
        assert_eq!(h("x-frame-options"), "DENY", "{path}");
        assert_eq!(h("cache-control"), "no-store", "{path}");
        let html = resp.text().await.unwrap();
        for (id, name) in [
            (app.app_id.to_string(), "default"),
            (other.to_string(), "Second &lt;app&gt; &amp; co"),
        ] {
            let link = format!("href=\"apps/{id}/attribution\"");
            assert!(html.contains(&link), "{path}: {link} in\n{html}");
            assert!(html.contains(name), "{path}: {name} in\n{html}");
        }
        // Each link leads to that app's page.
        let base = reqwest::Url::parse(&app.url(path)).unwrap();
        let target = base.join(&format!("apps/{other}/attribution")).unwrap();
        let resp = app
            .client
            .get(target)
            .basic_auth("me", Some(ADMIN_TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}: the link works");
    }
    for id in [uuid::Uuid::now_v7().to_string(), "not-an-id".to_owned()] {
        let resp = app
            .client
            .get(app.url(&format!("/apps/{id}/attribution")))
            .basic_auth("me", Some(ADMIN_TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{id}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let html = resp.text().await.unwrap();
        assert!(html.contains("No such app") && html.contains(&id), "{html}");
    }
    app.stop().await;
}
