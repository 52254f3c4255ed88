//! The HTTP client of the dispatcher: one attempt is one signed POST with a
//! deadline, no redirects followed (a redirect is a failure: the destination's URL
//! is what the operator approved) and no proxy. Unless
//! `forwarding.allow_private_targets`, the SSRF guard applies after DNS: names
//! resolve through [`GuardedResolver`], which keeps only public addresses, and a
//! URL with an IP literal is checked before connecting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Url;

use super::ssrf::is_forbidden_ip;

/// A destination refused by the SSRF guard at delivery time.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to loopback, link-local or private addresses")]
pub struct ForbiddenAddress {
    host: String,
}

/// Resolves names with the system resolver and drops every address the SSRF
/// guard forbids; a name left with none fails with [`ForbiddenAddress`].
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| !is_forbidden_ip(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(ForbiddenAddress { host }) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// How an attempt ended at the HTTP level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The receiver answered, with its `Retry-After` if any.
    Answered {
        status: u16,
        retry_after: Option<String>,
    },
    /// No answer within the attempt timeout.
    TimedOut,
    /// Could not connect, or the connection broke.
    Failed(String),
    /// Not sent: the URL is not http(s) or the SSRF guard refused its address.
    Refused(String),
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    allow_private: bool,
}

impl Client {
    pub fn new(attempt_timeout: Duration, allow_private: bool) -> reqwest::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(attempt_timeout)
            .connect_timeout(attempt_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the name itself, past the guard.
            .no_proxy()
            .user_agent(concat!("postback-gateway/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        Ok(Self {
            http: builder.build()?,
            allow_private,
        })
    }

    /// POST `body` to `url` with the Standard Webhooks headers.
    pub async fn post(&self, url: &str, headers: HeaderMap, body: String) -> Sent {
        let url = match Url::parse(url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => url,
            _ => return Sent::Refused("the URL is not an http(s) URL".into()),
        };
        if !self.allow_private {
            let literal = url
                .host_str()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                .and_then(|h| h.parse::<std::net::IpAddr>().ok());
            if literal.is_some_and(is_forbidden_ip) {
                return Sent::Refused(
                    "the URL's address is loopback, link-local or private".into(),
                );
            }
        }
        let sent = self
            .http
            .post(url)
            .headers(headers)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => Sent::Answered {
                status: response.status().as_u16(),
                retry_after: response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            },
            Err(e) if e.is_timeout() => Sent::TimedOut,
            Err(e) => match forbidden(&e) {
                Some(refused) => Sent::Refused(refused.to_string()),
                // Without the URL: it may hold credentials.
                None => Sent::Failed(crate::error_chain(&e.without_url())),
            },
        }
    }
}

fn forbidden<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a ForbiddenAddress> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(f) = e.downcast_ref::<ForbiddenAddress>() {
            return Some(f);
        }
        cause = e.source();
    }
    None
}
