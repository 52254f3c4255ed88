//! Stale detection, driven by backdated rows (never by sleeping): a connected
//! partner that goes quiet for longer than its usual gap (or the floor) is `stale`
//! in the partners API and `/metrics`, and `connected` again on the next accepted
//! postback.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{json_body, pg_connect, Backend, TestApp, TestDb};

both_backends!(
    a_quiet_partner_goes_stale_after_the_floor_and_the_next_install_reconnects_it,
    the_usual_gap_is_learned_from_the_partners_own_history,
);

impl TestDb {
    /// Run one statement (same SQL on both engines) against this database.
    pub async fn execute(&self, sql: &str) {
        match self {
            TestDb::Postgres { url, .. } => {
                let mut conn = pg_connect(url).await.expect("connect");
                sqlx::query(sql).execute(&mut conn).await.expect(sql);
            }
            TestDb::Sqlite { url, .. } => {
                use sqlx::Connection;
                let mut conn = sqlx::SqliteConnection::connect(url).await.expect("connect");
                sqlx::query(sql).execute(&mut conn).await.expect(sql);
            }
        }
    }
}

/// A time as a literal both engines store it as (SQLite keeps fixed-width UTC text).
pub fn time_literal(t: DateTime<Utc>) -> String {
    format!("'{}'", t.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
}

impl TestApp {
    /// Move every stored postback of `partner` (and its last install time) `by` into
    /// the past, as if the partner had gone quiet that long ago.
    pub async fn backdate(&self, partner: &str, by: Duration) {
        let rows = self
            .db
            .text_rows(&format!(
                "select cast(id as text), cast(received_at as text) from postback_events \
                 where partner = '{partner}'"
            ))
            .await;
        for row in rows {
            let (id, at) = (row[0].clone().unwrap(), row[1].clone().unwrap());
            let at: DateTime<Utc> = at
                .replace(' ', "T")
                .parse::<DateTime<chrono::FixedOffset>>()
                .or_else(|_| format!("{}:00", at.replace(' ', "T")).parse())
                .expect("a stored time")
                .into();
            self.db
                .execute(&format!(
                    "update postback_events set received_at = {} where cast(id as text) = '{id}'",
                    time_literal(at - by)
                ))
                .await;
        }
        let last: Option<String> = self
            .text(&format!(
                "select cast(max(received_at) as text) from postback_events \
                 where partner = '{partner}' and kind = 'install'"
            ))
            .await;
        let last: DateTime<Utc> = last
            .map(|t| t.replace(' ', "T"))
            .map(|t| {
                t.parse::<DateTime<chrono::FixedOffset>>()
                    .or_else(|_| format!("{t}:00").parse())
                    .expect("a stored time")
                    .into()
            })
            .expect("an install");
        // PostgreSQL keeps the counters in shards behind the partner_connections view.
        let counters = match self.db {
            TestDb::Postgres { .. } => "partner_connection_shards",
            TestDb::Sqlite { .. } => "partner_connections",
        };
        self.db
            .execute(&format!(
                "update {counters} set last_success_at = {} where partner = '{partner}'",
                time_literal(last)
            ))
            .await;
    }

    /// Store accepted postbacks of `partner` received at `times`, as the writer
    /// would (only what stale detection reads needs to be real).
    pub async fn insert_history(&self, partner: &str, times: &[DateTime<Utc>]) {
        for (i, t) in times.iter().enumerate() {
            let id = uuid::Uuid::now_v7();
            self.db
                .execute(&format!(
                    "insert into postback_events (id, app_id, partner, kind, received_at, \
                     dedupe_key, raw_payload) values ('{id}', '{app}', '{partner}', 'install', \
                     {at}, 'history-{i}-{id}', '{{}}')",
                    app = self.app_id,
                    at = time_literal(*t)
                ))
                .await;
        }
    }

    /// The partner's entry of `GET /v1/apps/{app_id}/partners`.
    pub async fn partner_status(&self, partner: &str) -> Value {
        let resp = self
            .client
            .get(self.url(&format!("/v1/apps/{}/partners", self.app_id)))
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let body = json_body(resp, 200, "partners").await;
        body["partners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["partner"] == partner)
            .cloned()
            .unwrap()
    }

    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("a time, got {v}"))
        .parse()
        .unwrap()
}

/// The value of one sample line of `/metrics` for this app and partner.
fn gauge(metrics: &str, name: &str, app: &str, partner: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| l.contains(&format!("app_id=\"{app}\"")))
        .find(|l| l.contains(&format!("partner=\"{partner}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn a_quiet_partner_goes_stale_after_the_floor_and_the_next_install_reconnects_it(
    backend: Backend,
) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let install = |n: u32| json!({"network_name": "Liftoff", "idfa": format!("00000000-0000-4000-8000-{n:012}")});
    app.install(install(1)).await;
    let fresh = app.partner_status("kochava").await;
    assert_eq!(fresh["status"], "connected", "{fresh}");
    assert_eq!(fresh["stale_since"], Value::Null);
    assert_eq!(
        fresh["expected_gap_seconds"],
        Value::Null,
        "one postback: no gap yet"
    );
    assert_eq!(fresh["stale_after_seconds"], 3600, "the floor alone");

    // Quiet for two hours: past the 60-minute floor.
    app.backdate("kochava", Duration::hours(2)).await;
    let quiet = app.partner_status("kochava").await;
    assert_eq!(quiet["status"], "stale", "{quiet}");
    let last = time(&quiet["last_accepted_at"]);
    assert!(Utc::now() - last >= Duration::hours(2));
    assert_eq!(time(&quiet["stale_since"]), last + Duration::hours(1));
    assert_eq!(quiet["last_success_at"], quiet["last_accepted_at"]);
    // Other partners are untouched: never heard from is not stale.
    assert_eq!(app.partner_status("tune").await["status"], "not_connected");

    let metrics = app.metrics_text().await;
    let id = app.app_id.to_string();
    assert_eq!(
        gauge(&metrics, "postback_gateway_partner_stale", &id, "kochava"),
        Some(1.0),
        "{metrics}"
    );
    let seconds = gauge(
        &metrics,
        "postback_gateway_partner_last_success_timestamp_seconds",
        &id,
        "kochava",
    )
    .expect("last success gauge");
    assert!((seconds - last.timestamp_micros() as f64 / 1e6).abs() < 0.01);
    assert_eq!(
        gauge(
            &metrics,
            "postback_gateway_partner_stale_after_seconds",
            &id,
            "kochava"
        ),
        Some(3600.0)
    );

    // The next accepted postback: connected again, at once and without a restart.
    app.install(install(2)).await;
    let back = app.partner_status("kochava").await;
    assert_eq!(back["status"], "connected", "{back}");
    assert_eq!(back["stale_since"], Value::Null);
    let metrics = app.metrics_text().await;
    assert_eq!(
        gauge(&metrics, "postback_gateway_partner_stale", &id, "kochava"),
        Some(0.0)
    );
    app.stop().await;
}

async fn the_usual_gap_is_learned_from_the_partners_own_history(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // Connected through a real postback, then a history of one postback every two
    // hours for the last three days, the newest five hours ago.
    let resp = app
        .get_tune("advertiser_sub_publisher=Vungle&ios_ifa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF")
        .await;
    assert_eq!(resp.status(), 200);
    let now = Utc::now();
    app.backdate("tune", Duration::hours(3 * 24)).await;
    let history: Vec<DateTime<Utc>> = (0..36)
        .map(|i| now - Duration::hours(5) - Duration::hours(2 * i))
        .collect();
    app.insert_history("tune", &history).await;

    let tune = app.partner_status("tune").await;
    assert_eq!(tune["expected_gap_seconds"], 7200, "{tune}");
    assert_eq!(tune["stale_after_seconds"], 3 * 7200, "three usual gaps");
    assert_eq!(
        tune["status"], "connected",
        "five quiet hours are usual for this partner, though past the floor: {tune}"
    );
    assert_eq!(time(&tune["last_accepted_at"]), history[0].trunc_micros());

    // Two more quiet hours: seven, past its six.
    app.backdate("tune", Duration::hours(2)).await;
    let tune = app.partner_status("tune").await;
    assert_eq!(tune["status"], "stale", "{tune}");
    assert_eq!(
        time(&tune["stale_since"]),
        (history[0] - Duration::hours(2)).trunc_micros() + Duration::hours(6)
    );
    app.stop().await;
}

trait TruncMicros {
    fn trunc_micros(self) -> Self;
}

impl TruncMicros for DateTime<Utc> {
    fn trunc_micros(self) -> Self {
        use chrono::SubsecRound;
        self.trunc_subsecs(6)
    }
}
