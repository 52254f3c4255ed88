//! One postback, start to finish: read (`partners::read`) → authenticate → quota →
//! record. No HTTP types here; the handler turns [`IngestReply`] into a response.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::{ApiKey, AppId, NewEvent};
use crate::keys::{Caller, KeyCache};
use crate::partners::{self, Accepted, Decision, Invalid, Method, PartnerId};
use crate::quota::{Quota, QuotaDecision, RateInfo};
use crate::store::deliveries::{Answer, Decided, NewDelivery, UnauthenticatedDelivery, Verdict};
use crate::store::{CounterDelta, RecordOutcome};
use crate::writer::{WriteError, Writer};

/// A postback request as received, before anything is decided.
pub struct PostbackRequest<'a> {
    pub partner: PartnerId,
    pub method: Method,
    /// Value of the `X-Api-Key` header, if any.
    pub header_key: Option<&'a str>,
    /// The raw query string (without `?`).
    pub query: &'a str,
    pub body: &'a [u8],
    pub received_at: DateTime<Utc>,
    /// The `X-Request-Id` answered, for the delivery log.
    pub request_id: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted { event_id: Uuid },
    Duplicate { first_event_id: Uuid },
    Organic,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{partner} postbacks do not accept this method")]
    MethodNotAllowed { partner: PartnerId },
    #[error("missing or unknown API key")]
    Unauthorized,
    #[error(
        "this app's hourly quota of {} attributed installs is used up (enterprise apps have none); retry after the hour",
        .0.limit
    )]
    InstallQuota(RateInfo),
    #[error("more than {} postback requests this hour (the request limit that protects the server); retry after the hour", .0.limit)]
    RequestLimit(RateInfo),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("too many postbacks waiting to be written")]
    Overloaded,
    #[error("database unavailable")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl IngestError {
    /// The verdict label used in metrics and logs.
    pub fn verdict(&self) -> &'static str {
        match self {
            IngestError::MethodNotAllowed { .. } => "method_not_allowed",
            IngestError::Unauthorized => "unauthorized",
            IngestError::InstallQuota(_) | IngestError::RequestLimit(_) => "rate_limited",
            IngestError::Invalid(_) => "invalid",
            IngestError::Overloaded | IngestError::Unavailable => "unavailable",
            IngestError::Internal => "internal",
        }
    }
}

impl Outcome {
    pub fn verdict(&self) -> &'static str {
        match self {
            Outcome::Accepted { .. } => "accepted",
            Outcome::Duplicate { .. } => "duplicate",
            Outcome::Organic => "organic",
        }
    }
}

/// The result plus the quota state to report in headers (absent when the caller was
/// never authenticated, or for unlimited apps).
pub struct IngestReply {
    pub result: Result<Outcome, IngestError>,
    pub rate: Option<RateInfo>,
    pub app_id: Option<AppId>,
}

pub struct Ingestor {
    keys: Arc<KeyCache>,
    quota: Arc<Quota>,
    writer: Writer,
    /// Longest wait for a commit before answering 503 (the partner then retries and
    /// gets `duplicate` if the commit did land).
    commit_timeout: Duration,
    /// Largest payload kept in a delivery log row (`deliveries.payload_max_bytes`).
    payload_max_bytes: usize,
    /// (second, rows) of the unauthenticated log written in that second.
    unauth_budget: std::sync::Mutex<(i64, u32)>,
}

impl Ingestor {
    pub fn new(
        keys: Arc<KeyCache>,
        quota: Arc<Quota>,
        writer: Writer,
        commit_timeout: Duration,
        payload_max_bytes: usize,
    ) -> Self {
        Self {
            keys,
            quota,
            writer,
            commit_timeout,
            payload_max_bytes,
            unauth_budget: std::sync::Mutex::new((0, 0)),
        }
    }

    #[tracing::instrument(name = "ingest", skip_all, fields(partner = %req.partner, app_id, verdict, reason))]
    pub async fn handle(&self, req: PostbackRequest<'_>) -> IngestReply {
        let mut reply = IngestReply {
            result: Err(IngestError::Internal),
            rate: None,
            app_id: None,
        };
        reply.result = self.run(&req, &mut reply.rate, &mut reply.app_id).await;
        let verdict = match &reply.result {
            Ok(o) => o.verdict(),
            Err(e) => e.verdict(),
        };
        tracing::Span::current().record("verdict", verdict);
        reply
    }

    async fn run(
        &self,
        req: &PostbackRequest<'_>,
        rate: &mut Option<RateInfo>,
        app_id: &mut Option<AppId>,
    ) -> Result<Outcome, IngestError> {
        let partner = req.partner;
        let delivery = partners::read(partner, req.method, req.query, req.body)
            .ok_or(IngestError::MethodNotAllowed { partner })?;

        let caller = match self
            .authenticate(req.header_key, delivery.api_key.as_ref(), req.received_at)
            .await
        {
            Ok(caller) => caller,
            Err(e) => {
                self.log_unauthenticated(req, delivery.api_key.as_ref(), &e);
                return Err(e);
            }
        };
        let log = LogDraft {
            caller,
            req,
            payload_max: self.payload_max_bytes,
        };
        *app_id = Some(caller.app_id);
        tracing::Span::current().record("app_id", tracing::field::display(caller.app_id));

        // The headers report the install quota (the limit partners care about).
        *rate = self
            .quota
            .install_info(caller.app_id, caller.tier, req.received_at);
        if let QuotaDecision::Exceeded(info) =
            self.quota
                .check_request(caller.app_id, caller.tier, req.received_at)
        {
            self.rate_limited(caller, partner, req.received_at);
            let error = IngestError::RequestLimit(info);
            let row = log.row(
                answer(429, Verdict::RateLimited, error.to_string()),
                None,
                &delivery,
            );
            self.count(
                CounterDelta {
                    rate_limited: 1,
                    ..self.delta(caller, partner)
                },
                Some(row),
            )
            .await;
            return Err(error);
        }

        match delivery.decision {
            Decision::Accepted(accepted) => {
                let Accepted {
                    postback,
                    dedupe_key,
                    raw,
                } = *accepted;
                let install_quota = self.quota.install_limit(caller.tier);
                let row = log.event_row(&postback, &raw, install_quota);
                let event = NewEvent {
                    app_id: caller.app_id,
                    partner,
                    postback,
                    dedupe_key,
                    raw: Value::Object(raw),
                    received_at: req.received_at,
                    install_quota,
                };
                let outcome = self.record(event, row).await;
                // After the commit: the count the batch reported.
                *rate = self
                    .quota
                    .install_info(caller.app_id, caller.tier, req.received_at);
                if let Err(IngestError::InstallQuota(_)) = outcome {
                    self.rate_limited(caller, partner, req.received_at);
                    if let Some(info) = rate {
                        info.remaining = 0;
                        return Err(IngestError::InstallQuota(*info));
                    }
                }
                outcome
            }
            Decision::Organic(ref reason) => {
                tracing::Span::current().record("reason", tracing::field::display(reason));
                let row = log.row(
                    answer(200, Verdict::Organic, reason.to_string()),
                    None,
                    &delivery,
                );
                self.count(
                    CounterDelta {
                        organic_ignored: 1,
                        ..self.delta(caller, partner)
                    },
                    Some(row),
                )
                .await;
                Ok(Outcome::Organic)
            }
            Decision::Invalid(ref invalid) => {
                let row = log.row(
                    answer(400, Verdict::Invalid, invalid.to_string()),
                    Some(req.body),
                    &delivery,
                );
                self.count(
                    CounterDelta {
                        rejected: 1,
                        ..self.delta(caller, partner)
                    },
                    Some(row),
                )
                .await;
                Err(IngestError::Invalid(invalid.clone()))
            }
        }
    }

    /// Key from, in order: the `X-Api-Key` header, then the key the request itself
    /// carried (the `api_key` query parameter, then the `api_key` payload field).
    async fn authenticate(
        &self,
        header_key: Option<&str>,
        request_key: Option<&ApiKey>,
        now: DateTime<Utc>,
    ) -> Result<Caller, IngestError> {
        let key = header_key
            .and_then(ApiKey::presented)
            .or_else(|| request_key.cloned())
            .ok_or(IngestError::Unauthorized)?;
        match self.keys.authenticate(&key, now).await {
            Ok(Some(caller)) => Ok(caller),
            Ok(None) => Err(IngestError::Unauthorized),
            Err(_) => Err(IngestError::Unavailable),
        }
    }

    async fn record(&self, event: NewEvent, row: NewDelivery) -> Result<Outcome, IngestError> {
        let committed =
            tokio::time::timeout(self.commit_timeout, self.writer.record(event, Some(row))).await;
        match committed {
            Ok(Ok(RecordOutcome::Recorded { event_id })) => Ok(Outcome::Accepted { event_id }),
            Ok(Ok(RecordOutcome::Duplicate { first_event_id })) => {
                Ok(Outcome::Duplicate { first_event_id })
            }
            // The headers' state is filled in by the caller.
            Ok(Ok(RecordOutcome::OverQuota)) => Err(IngestError::InstallQuota(RateInfo {
                limit: 0,
                remaining: 0,
                reset: 0,
            })),
            Ok(Err(WriteError::Overloaded)) => Err(IngestError::Overloaded),
            Ok(Err(WriteError::Unavailable | WriteError::Stopped)) | Err(_) => {
                Err(IngestError::Unavailable)
            }
            Ok(Err(WriteError::Failed)) => Err(IngestError::Internal),
        }
    }

    fn delta(&self, caller: Caller, partner: PartnerId) -> CounterDelta {
        CounterDelta {
            app_id: caller.app_id,
            partner,
            organic_ignored: 0,
            rejected: 0,
            rate_limited: 0,
        }
    }

    async fn count(&self, delta: CounterDelta, row: Option<NewDelivery>) {
        self.writer.count(delta, row).await;
    }

    /// A request no app's key authenticated: the global log, at most
    /// [`UNAUTHENTICATED_PER_SECOND`] rows a second (a flood of made-up keys must
    /// not turn into database writes), showing only the display prefix of a key
    /// that has our format.
    fn log_unauthenticated(
        &self,
        req: &PostbackRequest<'_>,
        request_key: Option<&ApiKey>,
        error: &IngestError,
    ) {
        let IngestError::Unauthorized = error else {
            return;
        };
        let second = req.received_at.timestamp();
        {
            let mut budget = self.unauth_budget.lock().unwrap_or_else(|e| e.into_inner());
            if budget.0 != second {
                *budget = (second, 0);
            }
            if budget.1 >= UNAUTHENTICATED_PER_SECOND {
                return;
            }
            budget.1 += 1;
        }
        let key = req
            .header_key
            .and_then(ApiKey::presented)
            .or_else(|| request_key.cloned());
        let (reason, key_prefix) = match &key {
            None => ("no API key".to_owned(), None),
            Some(k) if k.has_our_format() => (
                "unknown or expired API key".to_owned(),
                Some(k.display_prefix()),
            ),
            Some(_) => ("not an API key of this server".to_owned(), None),
        };
        self.writer.log_unauthenticated(UnauthenticatedDelivery {
            id: Uuid::now_v7(),
            received_at: req.received_at,
            partner: req.partner,
            method: method_str(req.method),
            status: 401,
            reason,
            key_prefix,
            request_id: req.request_id.to_owned(),
        });
    }

    /// A 429: the metric, and one warning per app and hour, so that installs lost to
    /// the limit (partners that retry only on 5xx never resend them) leave a trace.
    fn rate_limited(&self, caller: Caller, partner: PartnerId, now: DateTime<Utc>) {
        crate::telemetry::quota_rejected(partner.as_str());
        if self.quota.first_rejection_this_hour(caller.app_id, now) {
            tracing::warn!(
                app_id = %caller.app_id,
                partner = %partner,
                "app is over its hourly limit: postbacks are answered 429 until the hour ends \
                 (tier standard; `apps set-tier APP_ID enterprise` lifts the limit)"
            );
        }
    }
}

/// Rows of the unauthenticated log written per second at most.
const UNAUTHENTICATED_PER_SECOND: u32 = 20;

fn method_str(method: Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Post => "POST",
    }
}

fn answer(status: u16, verdict: Verdict, reason: String) -> Answer {
    Answer {
        status,
        verdict,
        // A reason may quote the payload (a JSON parse error): no NUL in stored text.
        reason: reason.replace('\0', "\u{FFFD}"),
        event_id: None,
    }
}

/// What every delivery log row of one authenticated request shares.
struct LogDraft<'a, 'r> {
    caller: Caller,
    req: &'a PostbackRequest<'r>,
    payload_max: usize,
}

impl LogDraft<'_, '_> {
    fn base(&self, decided: Decided, payload: String) -> NewDelivery {
        NewDelivery {
            id: Uuid::now_v7(),
            app_id: self.caller.app_id,
            partner: self.req.partner,
            method: method_str(self.req.method),
            received_at: self.req.received_at,
            request_id: self.req.request_id.to_owned(),
            decided,
            segments: None,
            identifiers: None,
            payload,
        }
    }

    /// A row answered before the batch. `body` is logged (as text, keys masked)
    /// when the fields could not be read.
    fn row(
        &self,
        answer: Answer,
        body: Option<&[u8]>,
        delivery: &partners::Delivery,
    ) -> NewDelivery {
        let payload = match body {
            Some(body) if delivery.fields.is_empty() => {
                // As stored text: no NUL (PostgreSQL refuses it), no key.
                let text = mask_keys(&String::from_utf8_lossy(body)).replace('\0', "\u{FFFD}");
                serde_json::json!({ "body": text }).to_string()
            }
            // Serialised from the borrowed map: no copy of the fields.
            _ => serde_json::to_string(&delivery.fields).unwrap_or_default(),
        };
        self.base(Decided::Already(answer), cut(payload, self.payload_max))
    }

    /// The row of an accepted delivery, answered from its event's outcome.
    fn event_row(
        &self,
        postback: &crate::domain::Postback,
        raw: &partners::Fields,
        install_quota: Option<u32>,
    ) -> NewDelivery {
        let payload = cut(
            serde_json::to_string(raw).unwrap_or_default(),
            self.payload_max,
        );
        let mut row = self.base(
            Decided::ByEvent {
                index: 0,
                install_quota,
            },
            payload,
        );
        row.segments = serde_json::to_string(&postback.segments).ok();
        row.identifiers = serde_json::to_string(&postback.ids).ok();
        row
    }
}

/// A payload's JSON text cut to `max` bytes: kept whole when it fits, else kept as
/// its first bytes in a JSON string marked as truncated.
fn cut(payload: String, max: usize) -> String {
    if payload.len() <= max {
        return payload;
    }
    let mut end = max;
    while !payload.is_char_boundary(end) {
        end -= 1;
    }
    serde_json::json!({"truncated": true, "bytes": payload.len(), "text": &payload[..end]})
        .to_string()
}

/// Text with every `pbgk_…` key shortened to its display prefix (a body we could
/// not read as fields may still carry one).
fn mask_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(crate::domain::API_KEY_PREFIX) {
        let (before, key) = rest.split_at(at);
        out.push_str(before);
        let end = key
            .char_indices()
            .skip(crate::domain::API_KEY_PREFIX.len())
            .find(|&(_, c)| !c.is_ascii_hexdigit())
            .map_or(key.len(), |(i, _)| i);
        let shown = (crate::domain::API_KEY_PREFIX.len() + 8).min(end);
        out.push_str(&key[..shown]);
        if end > shown {
            out.push('…');
        }
        rest = &key[end..];
    }
    out.push_str(rest);
    out
}
