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
}

impl Ingestor {
    pub fn new(
        keys: Arc<KeyCache>,
        quota: Arc<Quota>,
        writer: Writer,
        commit_timeout: Duration,
    ) -> Self {
        Self {
            keys,
            quota,
            writer,
            commit_timeout,
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

        let caller = self
            .authenticate(req.header_key, delivery.api_key.as_ref(), req.received_at)
            .await?;
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
            self.count(CounterDelta {
                rate_limited: 1,
                ..self.delta(caller, partner)
            })
            .await;
            return Err(IngestError::RequestLimit(info));
        }

        match delivery.decision {
            Decision::Accepted(accepted) => {
                let Accepted {
                    postback,
                    dedupe_key,
                    raw,
                } = *accepted;
                let event = NewEvent {
                    app_id: caller.app_id,
                    partner,
                    postback,
                    dedupe_key,
                    raw: Value::Object(raw),
                    received_at: req.received_at,
                    install_quota: self.quota.install_limit(caller.tier),
                };
                let outcome = self.record(event).await;
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
            Decision::Organic(reason) => {
                tracing::Span::current().record("reason", tracing::field::display(reason));
                self.count(CounterDelta {
                    organic_ignored: 1,
                    ..self.delta(caller, partner)
                })
                .await;
                Ok(Outcome::Organic)
            }
            Decision::Invalid(invalid) => {
                self.count(CounterDelta {
                    rejected: 1,
                    ..self.delta(caller, partner)
                })
                .await;
                Err(IngestError::Invalid(invalid))
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

    async fn record(&self, event: NewEvent) -> Result<Outcome, IngestError> {
        let committed = tokio::time::timeout(self.commit_timeout, self.writer.record(event)).await;
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

    async fn count(&self, delta: CounterDelta) {
        self.writer.count(delta).await;
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
