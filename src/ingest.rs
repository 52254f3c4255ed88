//! One postback, start to finish: authenticate → quota → decode → parse → record.
//! No HTTP types here; the handler turns [`IngestReply`] into a response.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::{ApiKey, AppId, NewEvent};
use crate::keys::{Caller, KeyCache};
use crate::partners::{self, Fields, InputFormat, Invalid, Method, PartnerId, Verdict};
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
    #[error("hourly postback quota exceeded")]
    RateLimited(RateInfo),
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
            IngestError::RateLimited(_) => "rate_limited",
            IngestError::Invalid(_) => "invalid",
            IngestError::Overloaded | IngestError::Unavailable => "unavailable",
            IngestError::Internal => "internal",
        }
    }
}

/// Longest partner id kept verbatim in a dedupe key. The key is in a unique index, and
/// PostgreSQL cannot index an entry over ~2.7 kB (a longer incompressible Branch `id`
/// failed the insert with a 500); longer ids are hashed, which keeps them unique and
/// leaves the keys of ordinary ids unchanged.
const MAX_VERBATIM_ID_BYTES: usize = 256;

/// The dedupe key of a delivery: the partner's own id where it sends one, else a hash
/// of the payload.
fn dedupe_key(partner: PartnerId, partner_event_id: Option<&str>, fields: &Fields) -> String {
    match partner_event_id {
        Some(id) if id.len() <= MAX_VERBATIM_ID_BYTES => format!("id:{id}"),
        Some(id) => format!("id-sha256:{}", hex::encode(Sha256::digest(id.as_bytes()))),
        None => partners::payload_hash(partner, fields),
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

    #[tracing::instrument(name = "ingest", skip_all, fields(partner = %req.partner, app_id, verdict))]
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
        let format = partner
            .input(req.method)
            .ok_or(IngestError::MethodNotAllowed { partner })?;
        let query = partners::decode_form(req.query.as_bytes());
        let decoded = match format {
            InputFormat::Query => Ok(query.clone()),
            InputFormat::FormBody => {
                // Body fields win over query fields of the same name.
                let mut fields = partners::decode_form(req.body);
                for (k, v) in &query {
                    fields.entry(k.clone()).or_insert_with(|| v.clone());
                }
                Ok(fields)
            }
            InputFormat::JsonBody => partners::decode_json(req.body),
        };

        let caller = self
            .authenticate(
                req.header_key,
                &query,
                decoded.as_ref().ok(),
                req.received_at,
            )
            .await?;
        *app_id = Some(caller.app_id);
        tracing::Span::current().record("app_id", tracing::field::display(caller.app_id));

        match self
            .quota
            .check(caller.app_id, caller.tier, req.received_at)
        {
            QuotaDecision::Unlimited => {}
            QuotaDecision::Allowed(info) => *rate = Some(info),
            QuotaDecision::Exceeded(info) => {
                *rate = Some(info);
                crate::telemetry::quota_rejected(partner.as_str());
                return Err(IngestError::RateLimited(info));
            }
        }

        let verdict = match decoded {
            Ok(mut fields) => {
                fields.remove(partners::API_KEY_FIELD);
                partners::sanitize(&mut fields);
                (partner.parse(&fields), fields)
            }
            Err(invalid) => (Verdict::Invalid(invalid), Fields::new()),
        };
        match verdict {
            (Verdict::Accepted(postback), fields) => {
                let dedupe_key = dedupe_key(partner, postback.partner_event_id.as_deref(), &fields);
                let event = NewEvent {
                    app_id: caller.app_id,
                    partner,
                    postback: *postback,
                    dedupe_key,
                    raw: Value::Object(fields),
                    received_at: req.received_at,
                };
                self.record(event).await
            }
            (Verdict::Organic, _) => {
                self.count(caller, partner, 1, 0).await;
                Ok(Outcome::Organic)
            }
            (Verdict::Invalid(invalid), _) => {
                self.count(caller, partner, 0, 1).await;
                Err(IngestError::Invalid(invalid))
            }
        }
    }

    /// Key from, in order: the `X-Api-Key` header, the `api_key` query parameter, the
    /// `api_key` payload field.
    async fn authenticate(
        &self,
        header_key: Option<&str>,
        query: &Fields,
        payload: Option<&Fields>,
        now: DateTime<Utc>,
    ) -> Result<Caller, IngestError> {
        let field_key = |fields: Option<&Fields>| {
            fields
                .and_then(|f| f.get(partners::API_KEY_FIELD))
                .and_then(Value::as_str)
                .and_then(ApiKey::presented)
        };
        let key = header_key
            .and_then(ApiKey::presented)
            .or_else(|| field_key(Some(query)))
            .or_else(|| field_key(payload))
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
            Ok(Err(WriteError::Overloaded)) => Err(IngestError::Overloaded),
            Ok(Err(WriteError::Unavailable | WriteError::Stopped)) | Err(_) => {
                Err(IngestError::Unavailable)
            }
            Ok(Err(WriteError::Failed)) => Err(IngestError::Internal),
        }
    }

    async fn count(&self, caller: Caller, partner: PartnerId, organic: i64, rejected: i64) {
        self.writer
            .count(CounterDelta {
                app_id: caller.app_id,
                partner,
                organic_ignored: organic,
                rejected,
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_keys_stay_short_enough_to_index_whatever_the_partner_id() {
        let fields = Fields::new();
        let short = "1250087741902387201";
        assert_eq!(
            dedupe_key(PartnerId::Branch, Some(short), &fields),
            format!("id:{short}"),
            "ordinary ids are kept verbatim (existing keys do not change)"
        );
        let long_a = "a".repeat(10_000);
        let long_b = format!("{}b", "a".repeat(9_999));
        let key_a = dedupe_key(PartnerId::Branch, Some(&long_a), &fields);
        let key_b = dedupe_key(PartnerId::Branch, Some(&long_b), &fields);
        assert!(key_a.len() < 100, "{key_a}");
        assert_ne!(key_a, key_b, "different ids, different keys");
        assert_eq!(key_a, dedupe_key(PartnerId::Branch, Some(&long_a), &fields));
        let limit = "x".repeat(MAX_VERBATIM_ID_BYTES);
        assert_eq!(
            dedupe_key(PartnerId::Branch, Some(&limit), &fields),
            format!("id:{limit}")
        );
        assert!(dedupe_key(PartnerId::Kochava, None, &fields).starts_with("sha256:"));
    }
}
