//! The status page's "Destinations" section: where the app's attributions and
//! events are forwarded, and how that is going (backlog, last success, failing
//! since, dead messages). A URL is shown without credentials or query string,
//! which may hold a receiver's token.

use chrono::{DateTime, Utc};
use maud::{html, Markup};

use crate::store::forwarding::DestinationRecord;

pub(super) fn destinations_section(
    destinations: &[DestinationRecord],
    now: DateTime<Utc>,
    time_ago: impl Fn(Option<DateTime<Utc>>, DateTime<Utc>) -> Markup,
) -> Markup {
    html! {
        section.destinations aria-label="Destinations" {
            h2 { "Destinations" }
            @if destinations.is_empty() {
                p.muted { "None: attributions are not forwarded. Add one with "
                    code { "postback-gateway destinations add APP_ID --url https://…" } "." }
            } @else {
                table {
                    thead { tr {
                        th { "URL" } th { "Sends" } th { "State" } th { "Backlog" }
                        th { "Last success" } th { "Failing since" } th { "Dead" }
                    } }
                    tbody {
                        @for d in destinations {
                            tr data-destination=(d.id) {
                                td { code { (shown_url(&d.url)) } }
                                td { (d.what.as_str()) }
                                td {
                                    @if d.enabled { "enabled" }
                                    @else { "disabled" @if let Some(why) = &d.disabled_reason { " (" (why) ")" } }
                                }
                                td { (d.backlog) }
                                td { (time_ago(d.last_success_at, now)) }
                                td { @if d.failing_since.is_some() { (time_ago(d.failing_since, now)) } @else { "—" } }
                                td { (d.dead) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Scheme, host, port and path: no user, password or query.
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn urls_are_shown_without_credentials_or_query() {
        assert_eq!(
            shown_url("https://user:pw@hooks.example.com:8443/in?token=abc#x"),
            "https://hooks.example.com:8443/in"
        );
        assert_eq!(shown_url("not a url"), "(not a URL)");
    }
}
