//! The dispatcher: a background task of `serve` that leases due outbox messages
//! (several nodes share the work, see `OutboxStore::claim_due`), POSTs each signed
//! with the Standard Webhooks headers, and records what came of it: delivered,
//! due again after a backoff, or dead. At most `forwarding.max_in_flight` attempts
//! per destination run at once in this process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::header::{HeaderMap, HeaderValue};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::client::{Client, Sent};
use super::retry::{self, Verdict};
use super::sign;
use crate::config::ForwardingConfig;
use crate::store::forwarding::{AttemptOutcome, AttemptResult, Claim, ClaimedMessage};
use crate::store::Store;
use crate::telemetry;

/// How often an idle dispatcher looks for due messages: a new message or a new or
/// re-enabled destination is picked up within this (well inside the 2 s promised).
const POLL: Duration = Duration::from_millis(250);

/// Messages leased per claim at most.
const CLAIM_LIMIT: u32 = 100;

/// The lease outlives the attempt by this much: a result recorded a little late is
/// still recorded before anyone else may claim the message.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The longest shutdown waits for attempts in flight: a hanging receiver must not
/// hold up a restart, and an attempt cut off is only re-sent when its lease ends.
const DRAIN_MAX: Duration = Duration::from_secs(2);

/// What one attempt needs besides its message.
struct Attempts {
    client: Client,
    retry_initial: Duration,
    retry_max: Duration,
    horizon: chrono::Duration,
}

/// Dispatch until `stop`; then let attempts in flight finish for up to `drain`
/// (at most [`DRAIN_MAX`]; those cut off stay leased and are sent again when the
/// lease runs out).
pub async fn run(
    store: Arc<dyn Store>,
    config: ForwardingConfig,
    stop: CancellationToken,
    drain: Duration,
) {
    // Bounded to a day so that every time computed from it stays representable.
    let attempt_timeout = Duration::from_millis(config.attempt_timeout_ms.clamp(1, 86_400_000));
    let client = match Client::new(attempt_timeout, config.allow_private_targets) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %crate::error_chain(&e), "forwarding disabled: no HTTP client");
            return;
        }
    };
    let attempts = Arc::new(Attempts {
        client,
        retry_initial: Duration::from_millis(config.retry_initial_ms.max(1)),
        retry_max: Duration::from_millis(config.retry_max_ms.clamp(1, 86_400_000 * 30)),
        horizon: chrono::Duration::hours(i64::from(config.horizon_hours)),
    });
    let lease = chrono::Duration::from_std(attempt_timeout + LEASE_MARGIN)
        .expect("a day and a few seconds fit");
    let mut slots = Slots::default();
    let mut tasks: JoinSet<Finished> = JoinSet::new();
    let mut pause = POLL;
    loop {
        let busy: Vec<(Uuid, u32)> = slots.in_flight.iter().map(|(&d, &n)| (d, n)).collect();
        let now = Utc::now();
        let claimed = store
            .claim_due(Claim {
                now,
                lease_until: now + lease,
                in_flight: &busy,
                max_in_flight: config.max_in_flight.max(1),
                limit: CLAIM_LIMIT,
            })
            .await;
        match claimed {
            Ok(messages) => {
                pause = POLL;
                for message in messages {
                    let destination = message.destination_id;
                    let task = tasks.spawn(attempts.clone().send(message));
                    slots.take(task.id(), destination);
                }
            }
            Err(e) => {
                // The database is away: try again less often until it is back.
                tracing::warn!(error = %crate::error_chain(&e), "claiming outbox messages failed");
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let mut finished = Vec::new();
                finished.extend(slots.release(done));
                while let Some(done) = tasks.try_join_next_with_id() {
                    finished.extend(slots.release(done));
                }
                record(store.as_ref(), finished).await;
            }
            () = tokio::time::sleep(pause) => {}
        }
    }
    let finishing = async {
        let mut finished = Vec::new();
        while let Some(done) = tasks.join_next_with_id().await {
            finished.extend(slots.release(done));
        }
        record(store.as_ref(), finished).await;
    };
    if tokio::time::timeout(drain.min(DRAIN_MAX), finishing)
        .await
        .is_err()
    {
        tracing::warn!("delivery attempts still in flight at shutdown; they are sent again later");
        tasks.abort_all();
    }
}

/// An attempt that ended, to be recorded.
struct Finished {
    result: AttemptResult,
    created_at: chrono::DateTime<Utc>,
}

/// Attempts in flight per destination, and the destination of each attempt task.
#[derive(Default)]
struct Slots {
    in_flight: HashMap<Uuid, u32>,
    tasks: HashMap<tokio::task::Id, Uuid>,
}

impl Slots {
    fn take(&mut self, task: tokio::task::Id, destination: Uuid) {
        *self.in_flight.entry(destination).or_default() += 1;
        self.tasks.insert(task, destination);
    }

    /// An attempt task ended (or panicked: the lease re-sends its message).
    fn release(
        &mut self,
        done: Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
    ) -> Option<Finished> {
        let (task, finished) = match done {
            Ok((task, finished)) => (task, Some(finished)),
            Err(e) => (e.id(), None),
        };
        if let Some(destination) = self.tasks.remove(&task) {
            if let Some(n) = self.in_flight.get_mut(&destination) {
                *n -= 1;
                if *n == 0 {
                    self.in_flight.remove(&destination);
                }
            }
        }
        finished
    }
}

/// Store the results of the attempts that ended together, in one transaction.
async fn record(store: &dyn Store, finished: Vec<Finished>) {
    if finished.is_empty() {
        return;
    }
    let results: Vec<AttemptResult> = finished.iter().map(|f| f.result.clone()).collect();
    match store.finish_attempts(&results).await {
        Ok(disabled) => {
            for (f, disabled) in finished.iter().zip(disabled) {
                let label = match f.result.outcome {
                    AttemptOutcome::Delivered => {
                        telemetry::forward_delivered((f.result.at - f.created_at).to_std());
                        "delivered"
                    }
                    AttemptOutcome::Retry { .. } => "retry",
                    AttemptOutcome::Dead => "dead",
                };
                telemetry::forward_attempt(label);
                if disabled {
                    tracing::warn!(
                        app_id = %f.result.app_id,
                        destination_id = %f.result.destination_id,
                        "destination disabled: failing continuously for longer than forwarding.horizon_hours"
                    );
                }
            }
        }
        Err(e) => {
            for _ in &finished {
                telemetry::forward_attempt("unrecorded");
            }
            tracing::warn!(
                error = %crate::error_chain(&e),
                attempts = finished.len(),
                "attempts' results were not recorded; their messages are sent again when their leases end"
            );
        }
    }
}

impl Attempts {
    /// Send one message; what came of it is recorded by the dispatcher's loop.
    async fn send(self: Arc<Self>, message: ClaimedMessage) -> Finished {
        let webhook_id = sign::webhook_id(message.id);
        let timestamp = Utc::now().timestamp();
        let sent = match sign::signature(
            message.secret.expose(),
            &webhook_id,
            timestamp,
            message.payload.as_bytes(),
        ) {
            Ok(signature) => {
                let mut headers = HeaderMap::new();
                for (name, value) in [
                    ("webhook-id", webhook_id),
                    ("webhook-timestamp", timestamp.to_string()),
                    ("webhook-signature", signature),
                ] {
                    if let Ok(value) = HeaderValue::from_str(&value) {
                        headers.insert(name, value);
                    }
                }
                self.client
                    .post(&message.url, headers, message.payload.clone())
                    .await
            }
            Err(e) => Sent::Refused(e.to_string()),
        };
        Finished {
            result: self.judge(&message, sent),
            created_at: message.created_at,
        }
    }

    /// What the attempt means for the message.
    fn judge(&self, message: &ClaimedMessage, sent: Sent) -> AttemptResult {
        let at = Utc::now();
        let (status, error, verdict, retry_after) = match sent {
            Sent::Answered {
                status,
                retry_after,
            } => {
                let verdict = retry::verdict_for_status(status);
                let error = match verdict {
                    Verdict::Delivered => None,
                    _ if (300..400).contains(&status) => {
                        Some(format!("HTTP {status}: redirects are not followed"))
                    }
                    _ => Some(format!("HTTP {status}")),
                };
                let retry_after = retry_after
                    .filter(|_| matches!(status, 429 | 503))
                    .and_then(|v| retry::parse_retry_after(&v, at));
                (Some(status), error, verdict, retry_after)
            }
            Sent::TimedOut => (None, Some("timed out".into()), Verdict::Retry, None),
            Sent::Failed(why) => (None, Some(why), Verdict::Retry, None),
            Sent::Refused(why) => (None, Some(format!("refused: {why}")), Verdict::Dead, None),
        };
        let outcome = match verdict {
            Verdict::Delivered => AttemptOutcome::Delivered,
            Verdict::Dead => AttemptOutcome::Dead,
            Verdict::Retry => {
                let delay = retry::backoff(message.attempts, self.retry_initial, self.retry_max)
                    .max(retry_after.unwrap_or_default());
                let next = chrono::Duration::from_std(delay)
                    .ok()
                    .and_then(|d| at.checked_add_signed(d))
                    .filter(|&next| next <= message.created_at + self.horizon);
                let Some(next) = next else {
                    let error =
                        error.map(|e| format!("{e}; gave up: past forwarding.horizon_hours"));
                    return self.result(message, at, status, error, AttemptOutcome::Dead);
                };
                AttemptOutcome::Retry {
                    next_attempt_at: next,
                }
            }
        };
        self.result(message, at, status, error, outcome)
    }

    fn result(
        &self,
        message: &ClaimedMessage,
        at: chrono::DateTime<Utc>,
        status: Option<u16>,
        error: Option<String>,
        outcome: AttemptOutcome,
    ) -> AttemptResult {
        AttemptResult {
            id: message.id,
            app_id: message.app_id,
            destination_id: message.destination_id,
            attempt: message.attempts,
            at,
            status,
            error,
            outcome,
            horizon: self.horizon,
        }
    }
}
