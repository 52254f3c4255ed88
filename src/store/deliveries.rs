//! The delivery log's types: what the writer hands over with a batch, what the
//! read side returns, and how a delivery that stored an event gets its verdict
//! from the batch's outcome.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::RecordOutcome;
use crate::domain::{AppId, NewEvent, PartnerId};

/// A delivery's verdict, as the log and the dry run name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accepted,
    Duplicate,
    Organic,
    Invalid,
    RateLimited,
    Unavailable,
}

impl Verdict {
    pub const ALL: [Verdict; 6] = [
        Verdict::Accepted,
        Verdict::Duplicate,
        Verdict::Organic,
        Verdict::Invalid,
        Verdict::RateLimited,
        Verdict::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Duplicate => "duplicate",
            Verdict::Organic => "organic",
            Verdict::Invalid => "invalid",
            Verdict::RateLimited => "rate_limited",
            Verdict::Unavailable => "unavailable",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What was answered: status, verdict and the rule that decided, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub verdict: Verdict,
    pub reason: String,
    pub event_id: Option<Uuid>,
}

/// How a delivery's answer is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// Before the batch (organic, invalid, over the request limit).
    Already(Answer),
    /// By the batch: the outcome of `events[index]`.
    ByEvent {
        index: usize,
        install_quota: Option<u32>,
    },
}

/// One request for the delivery log, as the writer hands it to the store.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: Uuid,
    pub app_id: AppId,
    pub partner: PartnerId,
    pub method: &'static str,
    pub received_at: DateTime<Utc>,
    pub request_id: String,
    pub decided: Decided,
    /// JSON texts: the mapped segments and identifiers (when the payload was read
    /// that far) and the payload without the key, cut to size.
    pub segments: Option<String>,
    pub identifiers: Option<String>,
    pub payload: String,
}

/// A request whose key was missing or unknown (the global log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnauthenticatedDelivery {
    pub id: Uuid,
    pub received_at: DateTime<Utc>,
    pub partner: PartnerId,
    pub method: &'static str,
    pub status: u16,
    pub reason: String,
    /// The display prefix of a presented key in our format, never more.
    pub key_prefix: Option<String>,
    pub request_id: String,
}

/// A delivery as stored, with its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: Uuid,
    pub received_at: DateTime<Utc>,
    pub partner: PartnerId,
    pub method: String,
    pub answer: Answer,
    pub request_id: String,
    pub segments: Option<serde_json::Value>,
    pub identifiers: Option<serde_json::Value>,
    pub payload: serde_json::Value,
}

/// Filters of the delivery log; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub partner: Option<PartnerId>,
    pub verdict: Option<Verdict>,
    pub status: Option<u16>,
    pub since: Option<DateTime<Utc>>,
}

/// Keyset position in the log, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryCursor {
    pub received_at: DateTime<Utc>,
    pub id: Uuid,
}

/// The answer of a delivery that went to the batch, from its event's outcome.
pub(crate) fn answer_of(
    event: &NewEvent,
    outcome: RecordOutcome,
    install_quota: Option<u32>,
) -> Answer {
    match outcome {
        RecordOutcome::Recorded { event_id } => Answer {
            status: 200,
            verdict: Verdict::Accepted,
            reason: match &event.postback.event_name {
                Some(name) => format!("{} stored ({name})", event.postback.kind.as_str()),
                None => format!("{} stored", event.postback.kind.as_str()),
            },
            event_id: Some(event_id),
        },
        RecordOutcome::Duplicate { first_event_id } => Answer {
            status: 200,
            verdict: Verdict::Duplicate,
            reason: format!("redelivery of event {first_event_id} (same dedupe key)"),
            event_id: Some(first_event_id),
        },
        RecordOutcome::OverQuota => Answer {
            status: 429,
            verdict: Verdict::RateLimited,
            reason: format!(
                "over the hourly quota of {} attributed installs",
                install_quota.unwrap_or_default()
            ),
            event_id: None,
        },
    }
}

/// Every delivery's answer, resolving those that waited for the batch.
pub(crate) fn resolve<'a>(
    deliveries: &'a [NewDelivery],
    events: &[NewEvent],
    outcomes: &[RecordOutcome],
) -> Vec<(&'a NewDelivery, Answer)> {
    deliveries
        .iter()
        .filter_map(|d| {
            let answer = match &d.decided {
                Decided::Already(answer) => answer.clone(),
                Decided::ByEvent {
                    index,
                    install_quota,
                } => answer_of(events.get(*index)?, *outcomes.get(*index)?, *install_quota),
            };
            Some((d, answer))
        })
        .collect()
}

/// A stored method name back as the static one the types hold.
pub(crate) fn method_name(stored: &str) -> &'static str {
    if stored.eq_ignore_ascii_case("GET") {
        "GET"
    } else {
        "POST"
    }
}
