//! The dry run (`/v1/postbacks/{partner}/test` and the status page's test form): the
//! same reading, authentication and duplicate question as a real postback, answered
//! with the verdict, its reason, what would be stored and warnings. It stores
//! nothing, counts nothing (no counters, no quota, no request limit, no metric of
//! postbacks) and leaves no delivery record; the duplicate check is one read.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{ApiKey, EventKind, Identifiers};
use crate::keys::{Caller, KeyCache};
use crate::partners::inspect::{self as explain, Warning, WarningCode};
use crate::partners::{self, Decision, Method, PartnerId};
use crate::quota::Quota;
use crate::store::Store;

/// Longest wait for the duplicate check; past it the answer says it was not made.
const DUPLICATE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The verdict words, the same as the delivery log's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DryVerdict {
    Accepted,
    Duplicate,
    Organic,
    Invalid,
}

impl DryVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            DryVerdict::Accepted => "accepted",
            DryVerdict::Duplicate => "duplicate",
            DryVerdict::Organic => "organic",
            DryVerdict::Invalid => "invalid",
        }
    }
}

/// What an accepted delivery would be stored as.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct WouldStore {
    /// `install` or `event`.
    #[schema(example = "install")]
    pub kind: &'static str,
    pub event_name: Option<String>,
    pub source: Option<String>,
    pub campaign: Option<String>,
    pub adgroup: Option<String>,
    pub ad: Option<String>,
    #[schema(value_type = IdentifiersOut)]
    pub identifiers: Identifiers,
    /// The partner's event time, null when it sent none this server reads.
    pub event_time: Option<DateTime<Utc>>,
}

/// The identifiers as stored (IDFA and IDFV upper case, Google advertising ids lower case).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the JSON of `Identifiers`
pub struct IdentifiersOut {
    user_id: Option<String>,
    idfa: Option<String>,
    idfv: Option<String>,
    google_aid: Option<String>,
    android_id: Option<String>,
    partner_device_id: Option<String>,
}

/// The dry run's answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct DryRunAnswer {
    pub verdict: DryVerdict,
    /// The HTTP status the real endpoint would answer now: 200, 400, or 429 when an
    /// install would be over the app's hourly quota.
    #[schema(minimum = 200, maximum = 429)]
    pub status: u16,
    /// Which rule decided, in words.
    pub reason: String,
    /// For `duplicate`: the event the first delivery was stored as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<Uuid>,
    /// For `accepted` and `duplicate`: the row this delivery maps to (a duplicate is
    /// not stored again); null otherwise.
    pub would_store: Option<WouldStore>,
    #[schema(value_type = Vec<WarningOut>)]
    pub warnings: Vec<Warning>,
}

/// One warning.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the JSON of `Warning`
pub struct WarningOut {
    /// What it is about.
    #[schema(inline)]
    code: WarningCodeOut,
    /// The payload key (or `object.key` path) it is about.
    key: Option<String>,
    message: String,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
enum WarningCodeOut {
    UnfilledMacro,
    MissingDimension,
    IgnoredField,
    ZeroAdId,
    EventTime,
    QuotaUsedUp,
    DuplicateNotChecked,
}

/// Why a dry run has no answer (the same refusals as the real endpoint).
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    #[error("{partner} postbacks do not accept this method")]
    MethodNotAllowed { partner: PartnerId },
    #[error("missing or unknown API key")]
    Unauthorized,
    #[error("database unavailable")]
    Unavailable,
}

/// A dry-run request as received.
pub struct DryRunRequest<'a> {
    pub partner: PartnerId,
    pub method: Method,
    pub header_key: Option<&'a str>,
    pub query: &'a str,
    pub body: &'a [u8],
    pub received_at: DateTime<Utc>,
}

pub struct DryRunner {
    keys: Arc<KeyCache>,
    quota: Arc<Quota>,
    store: Arc<dyn Store>,
}

impl DryRunner {
    pub fn new(keys: Arc<KeyCache>, quota: Arc<Quota>, store: Arc<dyn Store>) -> Self {
        Self { keys, quota, store }
    }

    /// Authenticate like a postback (header, then the request's own key), then run.
    pub async fn run(&self, req: DryRunRequest<'_>) -> Result<DryRunAnswer, DryRunError> {
        let inspection = partners::inspect(req.partner, req.method, req.query, req.body).ok_or(
            DryRunError::MethodNotAllowed {
                partner: req.partner,
            },
        )?;
        let key = req
            .header_key
            .and_then(ApiKey::presented)
            .or_else(|| inspection.delivery.api_key.clone())
            .ok_or(DryRunError::Unauthorized)?;
        let caller = match self.keys.authenticate(&key, req.received_at).await {
            Ok(Some(caller)) => caller,
            Ok(None) => return Err(DryRunError::Unauthorized),
            Err(_) => return Err(DryRunError::Unavailable),
        };
        Ok(self
            .answer(caller, req.partner, inspection, req.received_at)
            .await)
    }

    /// For an app the caller is already allowed to see (the status page's form): no
    /// key is asked for (`req.header_key` is ignored).
    pub async fn run_for_app(
        &self,
        caller: Caller,
        req: DryRunRequest<'_>,
    ) -> Result<DryRunAnswer, DryRunError> {
        let inspection = partners::inspect(req.partner, req.method, req.query, req.body).ok_or(
            DryRunError::MethodNotAllowed {
                partner: req.partner,
            },
        )?;
        Ok(self
            .answer(caller, req.partner, inspection, req.received_at)
            .await)
    }

    async fn answer(
        &self,
        caller: Caller,
        partner: PartnerId,
        inspection: partners::Inspection,
        now: DateTime<Utc>,
    ) -> DryRunAnswer {
        let mut warnings = explain::warnings(&inspection);
        let reason = explain::reason(&inspection.delivery.decision);
        let (verdict, status) = match &inspection.delivery.decision {
            Decision::Accepted(_) => (DryVerdict::Accepted, 200),
            Decision::Organic(_) => (DryVerdict::Organic, 200),
            Decision::Invalid(_) => (DryVerdict::Invalid, 400),
        };
        let mut answer = DryRunAnswer {
            verdict,
            status,
            reason,
            duplicate_of: None,
            would_store: None,
            warnings: Vec::new(),
        };
        let Decision::Accepted(accepted) = inspection.delivery.decision else {
            answer.warnings = warnings;
            return answer;
        };
        let p = &accepted.postback;
        answer.would_store = Some(WouldStore {
            kind: match p.kind {
                EventKind::Install => "install",
                EventKind::Event => "event",
            },
            event_name: p.event_name.clone(),
            source: p.segments.source.clone(),
            campaign: p.segments.campaign.clone(),
            adgroup: p.segments.adgroup.clone(),
            ad: p.segments.ad.clone(),
            identifiers: p.ids.clone(),
            event_time: p.event_time,
        });
        let found = tokio::time::timeout(
            DUPLICATE_CHECK_TIMEOUT,
            self.store
                .find_duplicate(caller.app_id, partner, &accepted.dedupe_key),
        )
        .await;
        match found {
            Ok(Ok(Some(first))) => {
                answer.verdict = DryVerdict::Duplicate;
                answer.duplicate_of = Some(first);
                let by = if accepted.dedupe_key.starts_with("sha256:") {
                    "the same payload".to_owned()
                } else {
                    format!("the same {} id", partner.display_name())
                };
                answer.reason = format!(
                    "duplicate: {by} was stored before as event {first}; the real endpoint \
                     answers duplicate and stores nothing"
                );
            }
            Ok(Ok(None)) => {}
            Ok(Err(_)) | Err(_) => warnings.push(Warning::new(
                WarningCode::DuplicateNotChecked,
                None,
                "the database did not answer, so whether this is a duplicate was not checked"
                    .to_owned(),
            )),
        }
        if answer.verdict == DryVerdict::Accepted && p.kind == EventKind::Install {
            if let Some(info) = self.quota.install_info(caller.app_id, caller.tier, now) {
                if info.remaining == 0 {
                    answer.status = 429;
                    warnings.push(Warning::new(
                        WarningCode::QuotaUsedUp,
                        None,
                        format!(
                            "the app's quota of {} attributed installs this hour is used up: the \
                             real endpoint would answer 429 until {}",
                            info.limit,
                            DateTime::from_timestamp(info.reset, 0)
                                .map(|t| t.to_rfc3339())
                                .unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        answer.warnings = warnings;
        answer
    }
}
