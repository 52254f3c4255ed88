//! `check-url`: an offline check of a postback URL as copied from a partner's
//! dashboard. The partner comes from the path; for partners that take a GET template
//! (Tune, Adjust, Singular, AppsFlyer's GET) every macro is filled with a sample value
//! and the partner's real parser reads the result, so "which dimension and identifier
//! has a macro" is answered by the same mapping that reads live postbacks.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::domain::Postback;
use crate::partners::normalize::{self, FieldTrace};
use crate::partners::{Fields, Method, PartnerId, API_KEY_FIELD};

/// What a macro is replaced by before the parser reads the template.
const SAMPLE: &str = "sample";

/// How the URL was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckedAs {
    /// Fields in the query string: partner, key, dimensions, identifiers, macros.
    GetTemplate,
    /// The partner POSTs its fields in a body: partner and key only.
    PostEndpoint,
}

/// Whether the URL carries `api_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPresence {
    /// An app key (`pbgk_` and 64 hex digits).
    Present,
    /// Some other value, such as `YOUR_API_KEY`: counts as present, to be replaced.
    Placeholder,
    Missing,
}

/// One key that fills a field, with the value as pasted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub key: String,
    pub value: String,
    /// The whole value is a macro the partner fills in (else a fixed value).
    #[serde(rename = "macro")]
    pub is_macro: bool,
}

/// A macro the partner's template (as this server prints it) does not use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownMacro {
    pub key: String,
    #[serde(rename = "macro")]
    pub name: String,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UrlCheck {
    /// True when there is no error (warnings allowed).
    pub ok: bool,
    pub partner: Option<PartnerId>,
    pub checked_as: Option<CheckedAs>,
    pub api_key: KeyPresence,
    /// source, campaign, adgroup, ad → the keys that fill it, in the order the
    /// mapping prefers them (empty: nothing fills it).
    pub dimensions: BTreeMap<&'static str, Vec<Source>>,
    /// The six identifiers → the keys that fill them.
    pub identifiers: BTreeMap<&'static str, Vec<Source>>,
    pub unknown_macros: Vec<UnknownMacro>,
    pub duplicated_keys: Vec<String>,
    /// Keys the partner's mapping never reads (kept in the raw payload only).
    pub unused_keys: Vec<String>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

const DIMENSIONS: [&str; 4] = ["source", "campaign", "adgroup", "ad"];
const IDENTIFIERS: [&str; 6] = [
    "user_id",
    "idfa",
    "idfv",
    "google_aid",
    "android_id",
    "partner_device_id",
];

/// Check `url`. `post`: the partner POSTs its fields in a body, so only the partner
/// and the key are checked (for partners that take both).
pub fn check_url(url: &str, post: bool) -> UrlCheck {
    let mut check = UrlCheck {
        ok: false,
        partner: None,
        checked_as: None,
        api_key: KeyPresence::Missing,
        dimensions: BTreeMap::new(),
        identifiers: BTreeMap::new(),
        unknown_macros: Vec::new(),
        duplicated_keys: Vec::new(),
        unused_keys: Vec::new(),
        warnings: Vec::new(),
        errors: Vec::new(),
    };
    let url = url.trim();
    let url = url.split_once('#').map_or(url, |(u, _)| u);
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .filter(|(k, _)| !k.is_empty())
        .collect();

    // Duplicated keys: the server takes the first value.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, _) in &pairs {
        *seen.entry(k.as_str()).or_default() += 1;
    }
    for (key, n) in seen.iter().filter(|(_, n)| **n > 1) {
        check.duplicated_keys.push((*key).to_owned());
        check.warnings.push(format!(
            "{key} appears {n} times; the server reads the first value only"
        ));
    }

    check.api_key = match pairs.iter().find(|(k, _)| k == API_KEY_FIELD) {
        Some((_, v)) if v.trim().is_empty() => KeyPresence::Missing,
        Some((_, v)) if is_app_key(v.trim()) => KeyPresence::Present,
        Some(_) => KeyPresence::Placeholder,
        None => KeyPresence::Missing,
    };
    if check.api_key == KeyPresence::Missing {
        check.errors.push(
            "no api_key in the URL: partners cannot send headers, so the key must be in the \
             query (api_key=YOUR_API_KEY, then replace it with the app's key)"
                .to_owned(),
        );
    }

    let Some(partner) = partner_in(path, &mut check.errors) else {
        check.ok = check.errors.is_empty();
        return check;
    };
    check.partner = Some(partner);
    let fields: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| k != API_KEY_FIELD).collect();
    let takes_get = partner.input(Method::Get).is_some();
    let takes_post = partner.input(Method::Post).is_some();
    if post && !takes_post {
        check.errors.push(format!(
            "--post: {} takes GET only; its fields travel in the URL",
            partner.display_name()
        ));
    }
    // AppsFlyer's Push API posts JSON to a bare endpoint; its GET template is optional.
    let template =
        takes_get && !post && !(partner == PartnerId::Appsflyer && fields.is_empty() && takes_post);
    if !template {
        check.checked_as = Some(CheckedAs::PostEndpoint);
        if !fields.is_empty() && takes_post {
            let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
            check.warnings.push(format!(
                "{} POSTs its fields in the body; query fields other than api_key are only \
                 read when no body field has the same name, or not at all for JSON bodies: {}",
                partner.display_name(),
                keys.join(", ")
            ));
        }
        check.ok = check.errors.is_empty();
        return check;
    }
    check.checked_as = Some(CheckedAs::GetTemplate);
    check_template(partner, &fields, &mut check);
    check.ok = check.errors.is_empty();
    check
}

/// `pbgk_` and 64 hex digits, the shape of this server's keys.
fn is_app_key(value: &str) -> bool {
    value
        .strip_prefix("pbgk_")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The partner named by the path's `/v1/postbacks/<partner>` (a dry run's `/test`
/// suffix allowed).
fn partner_in(path: &str, errors: &mut Vec<String>) -> Option<PartnerId> {
    let known = PartnerId::ALL.map(PartnerId::as_str).join(", ");
    let Some((_, rest)) = path.split_once("/v1/postbacks/") else {
        errors.push(format!(
            "no known partner: the path must end in /v1/postbacks/<partner> ({known})"
        ));
        return None;
    };
    let segment = rest.trim_end_matches('/');
    let segment = segment.strip_suffix("/test").unwrap_or(segment);
    match segment.parse() {
        Ok(p) => Some(p),
        Err(_) => {
            errors.push(format!(
                "no known partner: {segment:?} is not one of {known}"
            ));
            None
        }
    }
}

/// The `{macro}` names in a value (also percent-encoded ones), as written.
fn macros_in(value: &str) -> Vec<String> {
    let decoded = percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .into_owned();
    let mut out = Vec::new();
    for text in [value, decoded.as_str()] {
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            let after = &rest[start..];
            let Some(end) = after.find('}') else { break };
            let token = &after[..=end];
            // `{{x}}` and `${x}` templates: the innermost braces name the macro.
            let inner = token.trim_start_matches('{');
            let name = format!("{{{inner}");
            if name.len() > 2 && !out.contains(&name) {
                out.push(name);
            }
            rest = &after[end + 1..];
        }
    }
    out
}

fn check_template(partner: PartnerId, pairs: &[&(String, String)], check: &mut UrlCheck) {
    let ours = partner.query_template().unwrap_or_default();
    let our_pairs: Vec<(String, String)> = form_urlencoded::parse(ours.as_bytes())
        .into_owned()
        .collect();
    let known_macros: Vec<String> = our_pairs.iter().flat_map(|(_, v)| macros_in(v)).collect();

    // First value wins, as on the server; every macro becomes a sample value.
    let mut fields = Fields::new();
    for (key, value) in pairs {
        let filled = if !value.trim().is_empty() && normalize::clean(value).is_none() {
            SAMPLE.to_owned()
        } else {
            value.clone()
        };
        fields
            .entry(key.clone())
            .or_insert_with(|| Value::String(filled));
        for name in macros_in(value) {
            if !known_macros.contains(&name) {
                check.unknown_macros.push(UnknownMacro {
                    key: key.clone(),
                    name: name.clone(),
                });
                check.warnings.push(format!(
                    "unknown macro {name} in {key}: {}'s template does not use it, so {} may \
                     send it unfilled (treated as absent)",
                    partner.display_name(),
                    partner.display_name()
                ));
            }
        }
    }
    let (_, trace) = normalize::traced(|| partner.parse(&fields));
    let trace = trace.unwrap_or_default();
    let mapped = trace.mapped.clone().unwrap_or_else(empty_postback);
    let pasted = |key: &str| -> Option<Source> {
        let (_, value) = pairs.iter().find(|(k, _)| k == key)?;
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return None;
        }
        Some(Source {
            key: key.to_owned(),
            value: value.clone(),
            is_macro: normalize::clean(value).is_none(),
        })
    };
    let sources = |field: &str, filled: bool| -> Vec<Source> {
        if !filled {
            return Vec::new();
        }
        let traced: Vec<&FieldTrace> = trace.fields.iter().filter(|f| f.field == field).collect();
        let mut keys: Vec<&str> = Vec::new();
        for f in traced {
            for k in &f.tried {
                if !keys.contains(&k.as_str()) {
                    keys.push(k);
                }
            }
        }
        keys.into_iter().filter_map(pasted).collect()
    };
    let segments = &mapped.segments;
    for (dimension, value) in DIMENSIONS.into_iter().zip([
        &segments.source,
        &segments.campaign,
        &segments.adgroup,
        &segments.ad,
    ]) {
        check
            .dimensions
            .insert(dimension, sources(dimension, value.is_some()));
    }
    let ids: Vec<bool> = mapped.ids.pairs().map(|(_, v)| v.is_some()).collect();
    for (identifier, filled) in IDENTIFIERS.into_iter().zip(ids) {
        check
            .identifiers
            .insert(identifier, sources(identifier, filled));
    }
    let name = partner.display_name();
    if check.dimensions.values().all(Vec::is_empty) {
        check.errors.push(format!(
            "no dimension has a macro: none of source, campaign, adgroup, ad would be filled; \
             paste {name}'s template (postback-gateway prints it, and so does the status page)"
        ));
    }
    if check.identifiers.values().all(Vec::is_empty) {
        check.errors.push(format!(
            "no identifier has a macro: {name} would send no device or user id, and every \
             attributed install would be refused (400)"
        ));
    }
    let our_keys: Vec<&str> = our_pairs.iter().map(|(k, _)| k.as_str()).collect();
    let mut unused: Vec<String> = Vec::new();
    for (key, _) in pairs {
        let read = trace
            .read
            .iter()
            .any(|r| r == key || r.starts_with(&format!("{key}.")));
        if !read && !our_keys.contains(&key.as_str()) && !unused.contains(key) {
            unused.push(key.clone());
        }
    }
    for key in &unused {
        let like = match crate::partners::inspect::looks_like_dimension(key) {
            Some(dimension) => format!(" and looks like a {dimension}"),
            None => String::new(),
        };
        check.warnings.push(format!(
            "{key} is not read by the {name} mapping{like}: its value is kept in the raw \
             payload only"
        ));
    }
    check.unused_keys = unused;
}

fn empty_postback() -> Postback {
    Postback {
        kind: crate::domain::EventKind::Install,
        event_name: None,
        segments: Default::default(),
        ids: Default::default(),
        event_time: None,
        ip: None,
        user_agent: None,
        partner_event_id: None,
    }
}

/// The check as text for people, one fact per line.
pub fn describe(check: &UrlCheck) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    match (check.partner, check.checked_as) {
        (Some(p), Some(CheckedAs::GetTemplate)) => {
            let _ = writeln!(out, "partner:     {} (GET template)", p.display_name());
        }
        (Some(p), _) => {
            let _ = writeln!(
                out,
                "partner:     {} (POST endpoint: fields travel in the body; partner and key checked)",
                p.display_name()
            );
        }
        (None, _) => {
            let _ = writeln!(out, "partner:     none");
        }
    }
    let key = match check.api_key {
        KeyPresence::Present => "present",
        KeyPresence::Placeholder => "present (a placeholder: replace it with the app's key)",
        KeyPresence::Missing => "MISSING",
    };
    let _ = writeln!(out, "api_key:     {key}");
    let section = |out: &mut String,
                   title: &str,
                   map: &BTreeMap<&'static str, Vec<Source>>,
                   order: &[&str]| {
        if map.is_empty() {
            return;
        }
        let _ = writeln!(out, "{title}:");
        for name in order {
            let sources = map.get(name).map(Vec::as_slice).unwrap_or_default();
            let text = if sources.is_empty() {
                "(none)".to_owned()
            } else {
                sources
                    .iter()
                    .map(|s| {
                        let kind = if s.is_macro { "" } else { " (fixed value)" };
                        format!("{}={}{kind}", s.key, s.value)
                    })
                    .collect::<Vec<_>>()
                    .join(", then ")
            };
            let _ = writeln!(out, "  {name:<18} {text}");
        }
    };
    section(&mut out, "dimensions", &check.dimensions, &DIMENSIONS);
    section(&mut out, "identifiers", &check.identifiers, &IDENTIFIERS);
    if !check.warnings.is_empty() {
        let _ = writeln!(out, "warnings:");
        for w in &check.warnings {
            let _ = writeln!(out, "  - {w}");
        }
    }
    if !check.errors.is_empty() {
        let _ = writeln!(out, "errors:");
        for e in &check.errors {
            let _ = writeln!(out, "  - {e}");
        }
    }
    let _ = writeln!(
        out,
        "result:      {}",
        if check.ok { "OK" } else { "FAILED" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ApiKey;

    #[test]
    fn every_url_the_server_prints_passes_without_warnings() {
        let key = ApiKey::generate();
        for key in [None, Some(&key)] {
            for e in crate::apps::endpoints("https://postbacks.example.com", key) {
                let url = e.postback_url_template.clone().unwrap_or_else(|| {
                    format!(
                        "{}?api_key={}",
                        e.endpoint_url,
                        key.map_or("YOUR_API_KEY", ApiKey::expose)
                    )
                });
                let check = check_url(&url, false);
                assert!(check.ok, "{url}: {check:#?}");
                assert_eq!(check.warnings, Vec::<String>::new(), "{url}");
                assert_eq!(check.partner, Some(e.partner));
                let expected = if key.is_some() {
                    KeyPresence::Present
                } else {
                    KeyPresence::Placeholder
                };
                assert_eq!(check.api_key, expected, "{url}");
                if e.postback_url_template.is_some() {
                    assert_eq!(check.checked_as, Some(CheckedAs::GetTemplate));
                    assert!(
                        check.dimensions.values().all(|s| !s.is_empty()),
                        "{url}: every dimension has a macro: {:?}",
                        check.dimensions
                    );
                }
            }
        }
    }

    const TUNE: &str = "https://pb.example.com/v1/postbacks/tune?api_key=YOUR_API_KEY\
        &advertiser_sub_publisher={advertiser_sub_publisher}\
        &advertiser_sub_campaign={advertiser_sub_campaign}&ios_ifa={ios_ifa}";

    #[test]
    fn a_good_template_names_what_fills_each_field() {
        let check = check_url(TUNE, false);
        assert!(check.ok, "{check:#?}");
        assert_eq!(
            check.dimensions["source"],
            [Source {
                key: "advertiser_sub_publisher".into(),
                value: "{advertiser_sub_publisher}".into(),
                is_macro: true
            }]
        );
        assert!(check.dimensions["adgroup"].is_empty());
        assert_eq!(check.identifiers["idfa"][0].key, "ios_ifa");
        assert!(check.identifiers["google_aid"].is_empty());
        // Adjust: tracker_name fills every dimension its *_name keys leave absent.
        let adjust = check_url(
            "https://h/v1/postbacks/adjust?api_key=k&tracker_name={tracker_name}&adid={adid}",
            false,
        );
        assert!(adjust.ok, "{adjust:#?}");
        assert_eq!(adjust.dimensions["source"][0].key, "tracker_name");
        // A fixed value counts, and says so.
        let singular = check_url(
            "https://h/v1/postbacks/singular?api_key=k&network=Facebook&aifa={AIFA}",
            false,
        );
        assert!(singular.ok, "{singular:#?}");
        assert!(!singular.dimensions["source"][0].is_macro);
        assert!(describe(&singular).contains("network=Facebook (fixed value)"));
    }

    #[test]
    fn broken_templates_fail_with_the_reason() {
        let no_key = check_url(&TUNE.replace("api_key=YOUR_API_KEY", "x=1"), false);
        assert!(!no_key.ok);
        assert_eq!(no_key.api_key, KeyPresence::Missing);
        let empty_key = check_url(&TUNE.replace("YOUR_API_KEY", ""), false);
        assert_eq!(empty_key.api_key, KeyPresence::Missing);
        let no_dimension = check_url(
            "https://h/v1/postbacks/tune?api_key=k&ios_ifa={ios_ifa}&sub_campaign={sub_campaign}",
            false,
        );
        assert!(!no_dimension.ok);
        assert!(
            no_dimension.errors[0].starts_with("no dimension has a macro"),
            "{no_dimension:#?}"
        );
        assert_eq!(no_dimension.unused_keys, ["sub_campaign"]);
        let no_identifier = check_url(
            "https://h/v1/postbacks/adjust?api_key=k&network_name={network_name}&idfa=",
            false,
        );
        assert!(!no_identifier.ok);
        assert!(no_identifier.errors[0].starts_with("no identifier has a macro"));
        for url in [
            "https://h/v1/postbacks/facebook?api_key=k",
            "https://h/postback?api_key=k",
            "not a url",
        ] {
            let check = check_url(url, false);
            assert!(!check.ok, "{url}");
            assert!(
                check
                    .errors
                    .iter()
                    .any(|e| e.starts_with("no known partner")),
                "{url}: {check:#?}"
            );
        }
    }

    #[test]
    fn unknown_macros_and_duplicated_keys_are_warnings() {
        let url =
            format!("{TUNE}&advertiser_sub_ad={{advertiser_sub_creative}}&ios_ifa={{ios_ifa}}");
        let check = check_url(&url, false);
        assert!(check.ok, "warnings only: {check:#?}");
        assert_eq!(
            check.unknown_macros,
            [UnknownMacro {
                key: "advertiser_sub_ad".into(),
                name: "{advertiser_sub_creative}".into()
            }]
        );
        assert_eq!(check.duplicated_keys, ["ios_ifa"]);
        assert_eq!(check.warnings.len(), 2, "{:?}", check.warnings);
        // Singular's macros are upper case; a lower-case one is unknown.
        let check = check_url(
            "https://h/v1/postbacks/singular?api_key=k&network={network}&idfa={IDFA}",
            false,
        );
        assert_eq!(check.unknown_macros[0].name, "{network}");
    }

    #[test]
    fn post_partners_are_checked_for_the_partner_and_the_key_only() {
        let check = check_url("https://h/v1/postbacks/kochava?api_key=YOUR_API_KEY", false);
        assert!(check.ok, "{check:#?}");
        assert_eq!(check.checked_as, Some(CheckedAs::PostEndpoint));
        assert!(check.dimensions.is_empty());
        assert!(!check_url("https://h/v1/postbacks/branch", false).ok);
        // AppsFlyer's Push API: a bare endpoint. Its GET template is checked as one.
        assert!(check_url("https://h/v1/postbacks/appsflyer?api_key=k", false).ok);
        assert!(
            !check_url(
                "https://h/v1/postbacks/appsflyer?api_key=k&foo={bar}",
                false
            )
            .ok
        );
        // Singular's JSON POST needs --post; Adjust has none.
        assert!(!check_url("https://h/v1/postbacks/singular?api_key=k", false).ok);
        assert!(check_url("https://h/v1/postbacks/singular?api_key=k", true).ok);
        assert!(!check_url("https://h/v1/postbacks/adjust?api_key=k", true).ok);
    }
}
