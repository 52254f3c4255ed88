//! Conformance checks of the outbox writes: the batch that commits an event or an
//! attribution writes one message per enabled destination of its app that wants it,
//! with the same document on both backends.

use super::*;
use crate::store::forwarding::{DestinationWhat, NewDestination};

conformance!(
    a_batch_writes_one_message_per_matching_enabled_destination,
    installs_over_the_quota_leave_no_message,
);

/// One outbox row as the checks look at it.
#[derive(Debug, Clone, PartialEq)]
struct OutboxRow {
    ty: String,
    destination: Uuid,
    event_id: Uuid,
    attribution_id: Option<Uuid>,
    status: String,
    payload: serde_json::Value,
}

impl Probe {
    async fn outbox(&self, app: AppId) -> Vec<OutboxRow> {
        const SQL: &str = "select type, cast(destination_id as text), cast(event_id as text), \
                 cast(attribution_id as text), status, cast(payload as text) \
             from outbox where app_id = $1";
        type Columns = (String, String, String, Option<String>, String, String);
        let rows: Vec<Columns> = match self {
            Probe::Postgres(pool) => {
                sqlx::query_as(SQL)
                    .bind(app.as_uuid())
                    .fetch_all(pool)
                    .await
            }
            Probe::Sqlite(pool) => {
                sqlx::query_as(SQL)
                    .bind(app.to_string())
                    .fetch_all(pool)
                    .await
            }
        }
        .expect("read outbox");
        let uuid = |s: &str| Uuid::parse_str(s).expect("stored uuid");
        rows.into_iter()
            .map(
                |(ty, dest, event, attribution, status, payload)| OutboxRow {
                    ty,
                    destination: uuid(&dest),
                    event_id: uuid(&event),
                    attribution_id: attribution.as_deref().map(uuid),
                    status,
                    payload: serde_json::from_str(&payload).expect("payload is JSON"),
                },
            )
            .collect()
    }
}

async fn add_destination(store: &dyn Store, app: AppId, what: DestinationWhat) -> Uuid {
    let id = Uuid::now_v7();
    store
        .create_destination(&NewDestination {
            id,
            app_id: app,
            url: "https://hooks.example.com/in".into(),
            what,
            secret: "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0".into(),
            created_at: t0(),
        })
        .await
        .expect("create destination");
    id
}

/// (type, destination, event) of each row, sorted: what went where.
fn routes(rows: &[OutboxRow]) -> Vec<(String, Uuid, Uuid)> {
    let mut routes: Vec<_> = rows
        .iter()
        .map(|r| (r.ty.clone(), r.destination, r.event_id))
        .collect();
    routes.sort();
    routes
}

async fn a_batch_writes_one_message_per_matching_enabled_destination(
    store: &dyn Store,
    probe: &Probe,
) {
    let (app, quiet) = (
        create_sample_app(store).await,
        create_sample_app(store).await,
    );
    let all = add_destination(store, app, DestinationWhat::All).await;
    let attributions = add_destination(store, app, DestinationWhat::Attributions).await;
    let events = add_destination(store, app, DestinationWhat::Events).await;
    let off = add_destination(store, app, DestinationWhat::All).await;
    probe
        .run_script(&format!(
            "update destinations set enabled = (1 = 0) where id = '{off}'"
        ))
        .await;

    let install = sample_event(SampleEvent {
        app,
        dedupe_key: "install-1".into(),
        ids: idfa("IDFA-1"),
        ..Default::default()
    });
    let purchase = sample_event(SampleEvent {
        app,
        dedupe_key: "purchase-1".into(),
        kind: EventKind::Event,
        ids: idfa("IDFA-1"),
        ..Default::default()
    });
    let elsewhere = sample_event(SampleEvent {
        app: quiet,
        dedupe_key: "install-2".into(),
        ids: idfa("IDFA-2"),
        ..Default::default()
    });
    let outcomes = record(
        store,
        vec![install.clone(), purchase, install.clone(), elsewhere],
    )
    .await;
    let (installed, purchased) = (recorded_id(outcomes[0]), recorded_id(outcomes[1]));
    assert!(matches!(outcomes[2], RecordOutcome::Duplicate { .. }));

    let rows = probe.outbox(app).await;
    let created = "attribution.created".to_owned();
    let accepted = "event.accepted".to_owned();
    let mut expected = vec![
        (created.clone(), all, installed),
        (created.clone(), attributions, installed),
        (accepted.clone(), all, installed),
        (accepted.clone(), events, installed),
        (accepted.clone(), all, purchased),
        (accepted.clone(), events, purchased),
    ];
    expected.sort();
    assert_eq!(routes(&rows), expected, "a message per wanted route");
    assert!(rows.iter().all(|r| r.status == "pending"));
    assert!(
        probe.outbox(quiet).await.is_empty(),
        "an app without destinations gets no messages"
    );

    // The attribution's document.
    let attribution = rows
        .iter()
        .find(|r| r.ty == created && r.destination == attributions)
        .expect("attribution message");
    let attribution_id = attribution.attribution_id.expect("attribution id");
    let time = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    assert_eq!(
        attribution.payload,
        json!({
            "type": "attribution.created",
            "app_id": app.as_uuid(),
            "partner": "kochava",
            "event_id": installed,
            "attribution_id": attribution_id,
            "kind": "install",
            "event_name": null,
            "source": "network-a",
            "campaign": "spring",
            "adgroup": null,
            "ad": null,
            "identifiers": {"idfa": "IDFA-1"},
            "event_time": time(t0() - secs(30)),
            "attributed_at": time(t0()),
            "received_at": time(t0()),
        })
    );
    // An event's document: no attribution, its name.
    let event = rows
        .iter()
        .find(|r| r.event_id == purchased && r.destination == events)
        .expect("event message");
    assert_eq!(event.attribution_id, None);
    assert_eq!(event.payload["type"], "event.accepted");
    assert_eq!(event.payload["kind"], "event");
    assert_eq!(event.payload["event_name"], "purchase");
    assert_eq!(event.payload["attribution_id"], json!(null));
    assert_eq!(event.payload["attributed_at"], json!(null));

    // A known user's later install is an event, not an attribution.
    let again = sample_event(SampleEvent {
        app,
        dedupe_key: "install-3".into(),
        ids: idfa("IDFA-1"),
        received_at: t0() + secs(60),
        ..Default::default()
    });
    let reinstalled = recorded_id(record(store, vec![again]).await[0]);
    let later: Vec<_> = routes(&probe.outbox(app).await)
        .into_iter()
        .filter(|(_, _, e)| *e == reinstalled)
        .collect();
    let mut want = vec![
        (accepted.clone(), all, reinstalled),
        (accepted, events, reinstalled),
    ];
    want.sort();
    assert_eq!(later, want);
}

async fn installs_over_the_quota_leave_no_message(store: &dyn Store, probe: &Probe) {
    let app = create_sample_app(store).await;
    let all = add_destination(store, app, DestinationWhat::All).await;
    let installs: Vec<NewEvent> = (0..3)
        .map(|n| {
            sample_event(SampleEvent {
                app,
                dedupe_key: format!("quota-{n}"),
                ids: idfa(&format!("IDFA-Q{n}")),
                install_quota: Some(1),
                ..Default::default()
            })
        })
        .collect();
    let outcomes = record(store, installs).await;
    let kept: Vec<Uuid> = outcomes
        .iter()
        .filter_map(|o| {
            o.event_id()
                .filter(|_| matches!(o, RecordOutcome::Recorded { .. }))
        })
        .collect();
    assert_eq!(kept.len(), 1, "one install within the quota: {outcomes:?}");
    let mut expected = vec![
        ("attribution.created".to_owned(), all, kept[0]),
        ("event.accepted".to_owned(), all, kept[0]),
    ];
    expected.sort();
    assert_eq!(routes(&probe.outbox(app).await), expected);
}
