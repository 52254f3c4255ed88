//! The "Technology Partners → Attribution" page: over HTTP for its headers and login,
//! and in a real headless Chromium for what a person sees.

use std::process::Command;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, ADMIN_TOKEN};
use postback_gateway::domain::Tier;

both_backends!(
    page_needs_basic_login_and_sends_strict_headers,
    browser_shows_green_for_connected_grey_for_the_rest_and_the_chart,
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
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dom.contains("Technology Partners"),
        "logged in and rendered:\n{dom}"
    );

    let section = |partner: &str| -> String {
        let start = dom
            .find(&format!("data-partner=\"{partner}\""))
            .unwrap_or_else(|| panic!("{partner} section in:\n{dom}"));
        let rest = &dom[start..];
        rest[..rest.find("</section>").unwrap()].to_owned()
    };
    let kochava = section("kochava");
    assert!(
        kochava.contains("dot green") && kochava.contains("data-status=\"connected\""),
        "kochava green:\n{kochava}"
    );
    assert!(kochava.contains("last attributed install:"), "{kochava}");
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
