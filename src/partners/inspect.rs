//! Explaining one delivery to an operator, from what [`super::inspect`] recorded: the
//! reason for its verdict in words, and warnings about what the mapping saw (unfilled
//! macros, missing dimensions, fields it ignores that look like dimensions, all-zero
//! advertising ids, how the event time was read). Used by the dry run; nothing here
//! changes a verdict.

use std::collections::BTreeSet;

use serde_json::Value;

use super::normalize::{clean, text, value_at, Trace};
use super::{Decision, Inspection, Invalid};
use crate::domain::{EventKind, Segments};

/// What a warning is about; its `code` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningCode {
    /// A key the mapping reads holds a macro the partner did not fill in.
    UnfilledMacro,
    /// One of source, campaign, adgroup, ad has no value.
    MissingDimension,
    /// A field the mapping does not read, whose name looks like a dimension.
    IgnoredField,
    /// An advertising id made only of zeros (limited ad tracking).
    ZeroAdId,
    /// How the event time was read, or why there is none.
    EventTime,
    /// The real endpoint would answer 429 now: the app's hourly quota is used up.
    QuotaUsedUp,
    /// The dry run could not ask the database whether this is a duplicate.
    DuplicateNotChecked,
}

/// One thing an operator should know about a delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub code: WarningCode,
    /// The payload key (or `object.key` path) it is about, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub message: String,
}

impl Warning {
    pub fn new(code: WarningCode, key: Option<&str>, message: String) -> Self {
        Self {
            code,
            key: key.map(str::to_owned),
            message,
        }
    }
}

/// The rule that decided, in an operator's words. A duplicate is decided later, by
/// the store; this is the parser's side.
pub fn reason(decision: &Decision) -> String {
    match decision {
        Decision::Accepted(a) => match (a.postback.kind, a.postback.event_name.as_deref()) {
            (EventKind::Install, _) => "attributed install".to_owned(),
            (EventKind::Event, Some(name)) => format!("attributed in-app event {name:?}"),
            (EventKind::Event, None) => "attributed in-app event".to_owned(),
        },
        Decision::Organic(organic) => organic.to_string(),
        Decision::Invalid(invalid) => invalid.to_string(),
    }
}

/// Every warning about one inspected delivery, in a fixed order: unfilled macros,
/// missing dimensions, ignored fields, all-zero ids, then the event time.
pub fn warnings(inspection: &Inspection) -> Vec<Warning> {
    let (Some(fields), Some(trace)) = (&inspection.fields, &inspection.trace) else {
        return Vec::new();
    };
    if matches!(
        inspection.delivery.decision,
        Decision::Invalid(Invalid::NoPartnerFields(_))
    ) {
        // Nothing of the partner's was there: every key would be "missing".
        return Vec::new();
    }
    let mut out = Vec::new();
    unfilled_macros(fields, trace, &mut out);
    let segments = trace
        .mapped
        .as_ref()
        .map(|p| p.segments.clone())
        .unwrap_or_default();
    missing_dimensions(&segments, trace, &mut out);
    ignored_fields(fields, trace, &segments, &mut out);
    for (field, key) in &trace.zero_ad_ids {
        out.push(Warning::new(
            WarningCode::ZeroAdId,
            Some(key),
            format!("{field} in {key} is all zeros (ad tracking limited on the device): treated as absent"),
        ));
    }
    if let Some(w) = event_time(trace) {
        out.push(w);
    }
    out
}

fn unfilled_macros(fields: &super::Fields, trace: &Trace, out: &mut Vec<Warning>) {
    for key in &trace.read {
        let Some(Value::String(raw)) = value_at(fields, key, trace.paths) else {
            continue;
        };
        let token = raw.trim();
        if !token.is_empty() && clean(raw).is_none() {
            out.push(Warning::new(
                WarningCode::UnfilledMacro,
                Some(key),
                format!(
                    "unfilled macro {token} in {key}: the partner did not fill it in, so it is \
                     treated as absent"
                ),
            ));
        }
    }
}

const DIMENSIONS: [&str; 4] = ["source", "campaign", "adgroup", "ad"];

fn dimension_value<'a>(segments: &'a Segments, dimension: &str) -> Option<&'a str> {
    match dimension {
        "source" => segments.source.as_deref(),
        "campaign" => segments.campaign.as_deref(),
        "adgroup" => segments.adgroup.as_deref(),
        _ => segments.ad.as_deref(),
    }
}

fn missing_dimensions(segments: &Segments, trace: &Trace, out: &mut Vec<Warning>) {
    for dimension in DIMENSIONS {
        if dimension_value(segments, dimension).is_some() {
            continue;
        }
        let tried = trace
            .fields
            .iter()
            .rev()
            .find(|f| f.field == dimension)
            .map(|f| f.tried.join(", "))
            .unwrap_or_default();
        out.push(Warning::new(
            WarningCode::MissingDimension,
            None,
            format!("{dimension} is missing: none of {tried} has a value"),
        ));
    }
}

/// Which dimension a payload key's name suggests, if any: its words (split at
/// punctuation and lower-to-upper case changes) against each dimension's usual names.
pub fn looks_like_dimension(key: &str) -> Option<&'static str> {
    let words = words(key);
    let has = |w: &str| words.iter().any(|x| x == w);
    let after_ad = |w: &str| words.windows(2).any(|p| p[0] == "ad" && p[1] == w);
    if has("campaign") {
        Some("campaign")
    } else if has("adgroup")
        || has("adset")
        || after_ad("group")
        || after_ad("set")
        || has("site")
        || has("placement")
    {
        Some("adgroup")
    } else if has("creative") || has("adname") || has("ad") {
        Some("ad")
    } else if ["network", "publisher", "channel", "media", "partner"]
        .iter()
        .any(|w| has(w))
        // `source` alone is too common (`event_source`): only as the whole name or
        // after `traffic`, `install` or `sub`.
        || words.last().is_some_and(|w| w == "source")
            && (words.len() == 1
                || ["traffic", "install", "sub"].contains(&words[words.len() - 2].as_str()))
    {
        Some("source")
    } else {
        None
    }
}

fn words(key: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Keys of the payload (for path partners, also `object.key` one level down) that the
/// mapping never read, hold a value, and are named like a dimension. An id-like key
/// (`campaign_id`) is only named when its dimension has no value.
fn ignored_fields(
    fields: &super::Fields,
    trace: &Trace,
    segments: &Segments,
    out: &mut Vec<Warning>,
) {
    let read: BTreeSet<&str> = trace.read.iter().map(String::as_str).collect();
    let mut candidates: Vec<(String, &Value)> = Vec::new();
    for (key, value) in fields {
        match value {
            Value::Object(inner) if trace.paths => {
                for (k, v) in inner {
                    candidates.push((format!("{key}.{k}"), v));
                }
            }
            _ => candidates.push((key.clone(), value)),
        }
    }
    for (key, value) in candidates {
        if read.contains(key.as_str()) || text(value).is_none() {
            continue;
        }
        let name = key.rsplit('.').next().unwrap_or(&key);
        let Some(dimension) = looks_like_dimension(name) else {
            continue;
        };
        let last = words(name).pop().unwrap_or_default();
        // Attributes of a dimension rather than its value (`af_ad_type`, `~campaign_url`).
        if ["type", "url", "link", "time", "timestamp", "date", "count"].contains(&last.as_str()) {
            continue;
        }
        if last == "id" && dimension_value(segments, dimension).is_some() {
            continue;
        }
        out.push(Warning::new(
            WarningCode::IgnoredField,
            Some(&key),
            format!(
                "{key} looks like a {dimension} but this partner's mapping does not read it \
                 (its value is kept in the raw payload only)"
            ),
        ));
    }
}

fn event_time(trace: &Trace) -> Option<Warning> {
    if trace.times.is_empty() {
        return None;
    }
    let unread: Vec<String> = trace
        .times
        .iter()
        .filter(|t| t.read.is_none())
        .filter_map(|t| t.value.as_ref().map(|v| format!("{} {v:?}", t.key)))
        .collect();
    let not_times = if unread.is_empty() {
        String::new()
    } else {
        format!(
            " ({} is not a time this server reads: unix seconds or milliseconds, RFC 3339, \
             or YYYY-MM-DD HH:MM:SS in UTC)",
            unread.join(", ")
        )
    };
    let message = match trace.times.iter().find(|t| t.read.is_some()) {
        Some(t) => {
            let (time, shape) = t.read.expect("found by read");
            format!(
                "event time read from {} {:?} as {shape}: {}{not_times}",
                t.key,
                t.value.as_deref().unwrap_or_default(),
                time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            )
        }
        None if unread.is_empty() => format!(
            "no event time: none of {} has a value; stored as null",
            trace
                .times
                .iter()
                .map(|t| t.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!("no event time{not_times}; stored as null"),
    };
    let key = trace
        .times
        .iter()
        .find(|t| t.read.is_some())
        .map(|t| t.key.as_str());
    Some(Warning::new(WarningCode::EventTime, key, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partners::{inspect, Method, PartnerId};

    fn warnings_of(partner: PartnerId, method: Method, query: &str, body: &str) -> Vec<Warning> {
        let inspection = inspect(partner, method, query, body.as_bytes()).expect("method");
        warnings(&inspection)
    }

    fn codes(ws: &[Warning]) -> Vec<(WarningCode, Option<&str>)> {
        ws.iter().map(|w| (w.code, w.key.as_deref())).collect()
    }

    #[test]
    fn inspecting_reaches_the_verdict_reading_does() {
        let fixtures: &[(PartnerId, Method, &str, &str)] = &[
            (
                PartnerId::Tune,
                Method::Get,
                include_str!("../../tests/fixtures/tune/install_ios.query"),
                "",
            ),
            (
                PartnerId::Tune,
                Method::Get,
                include_str!("../../tests/fixtures/tune/raw_macros.query"),
                "",
            ),
            (
                PartnerId::Adjust,
                Method::Get,
                include_str!("../../tests/fixtures/adjust/tracker_only.query"),
                "",
            ),
            (
                PartnerId::Kochava,
                Method::Post,
                "",
                include_str!("../../tests/fixtures/kochava/organic.json"),
            ),
            (
                PartnerId::Branch,
                Method::Post,
                "",
                include_str!("../../tests/fixtures/branch/install_ios.json"),
            ),
            (PartnerId::Kochava, Method::Post, "", "[1]"),
        ];
        for &(partner, method, query, body) in fixtures {
            let query = query.trim_end();
            let read = crate::partners::read(partner, method, query, body.as_bytes()).unwrap();
            let inspected = inspect(partner, method, query, body.as_bytes()).unwrap();
            assert_eq!(
                format!("{:?}", read.decision),
                format!("{:?}", inspected.delivery.decision),
                "{partner}"
            );
        }
    }

    proptest::proptest! {
        /// Tracing never changes a verdict, for any partner and payload.
        #[test]
        fn tracing_never_changes_a_verdict(
            query in crate::partners::normalize::testing::arb_query(
                ["advertiser_sub_publisher", "network_name", "network", "cid", "media_source",
                 "ios_ifa", "idfa", "adid", "tracker_name", "publisher_id", "is_organic",
                 "event_time", "utc", "custom_data", "gps_adid", "aifa"]
                    .map(String::from).to_vec()),
            body in crate::partners::normalize::testing::arb_object(
                ["network_name", "idfa", "adid", "last_attributed_touch_data.~channel",
                 "user_data.idfa", "attributed", "custom_data", "media_source", "campaign",
                 "event_time", "timestamp"].map(String::from).to_vec()),
        ) {
            let query: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default())))
                .finish();
            let body = serde_json::to_vec(&body).unwrap();
            for partner in PartnerId::ALL {
                for method in [Method::Get, Method::Post] {
                    let read = crate::partners::read(partner, method, &query, &body);
                    let inspected = inspect(partner, method, &query, &body);
                    proptest::prop_assert_eq!(
                        read.map(|d| format!("{:?}", d.decision)),
                        inspected.as_ref().map(|i| format!("{:?}", i.delivery.decision))
                    );
                    if let Some(i) = inspected {
                        let _ = warnings(&i);
                    }
                }
            }
        }
    }

    #[test]
    fn unfilled_macros_are_named_with_their_key() {
        let ws = warnings_of(
            PartnerId::Tune,
            Method::Get,
            "advertiser_sub_publisher=Vungle&advertiser_sub_campaign=Spring\
             &advertiser_sub_adgroup=g&advertiser_sub_ad=%7Badvertiser_sub_ad%7D\
             &ios_ifa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF&not_read={other}",
            "",
        );
        let unfilled: Vec<&Warning> = ws
            .iter()
            .filter(|w| w.code == WarningCode::UnfilledMacro)
            .collect();
        assert_eq!(unfilled.len(), 1, "{ws:?}");
        assert_eq!(unfilled[0].key.as_deref(), Some("advertiser_sub_ad"));
        assert!(
            unfilled[0].message.contains("{advertiser_sub_ad}"),
            "{}",
            unfilled[0].message
        );
        let missing: Vec<&str> = ws
            .iter()
            .filter(|w| w.code == WarningCode::MissingDimension)
            .map(|w| w.message.as_str())
            .collect();
        assert_eq!(
            missing,
            ["ad is missing: none of advertiser_sub_ad has a value"]
        );
    }

    #[test]
    fn fields_named_like_dimensions_that_the_mapping_ignores_are_named() {
        let ws = warnings_of(
            PartnerId::Tune,
            Method::Get,
            "advertiser_sub_publisher=Vungle&sub_campaign=Spring&sub_campaign_id=7\
             &advertiser_sub_campaign=&ios_ifa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF\
             &device_model=iPhone",
            "",
        );
        let ignored: Vec<Option<&str>> = codes(&ws)
            .into_iter()
            .filter(|(c, _)| *c == WarningCode::IgnoredField)
            .map(|(_, k)| k)
            .collect();
        assert_eq!(
            ignored,
            [Some("sub_campaign"), Some("sub_campaign_id")],
            "{ws:?}"
        );
        // An id-like key is only named when its dimension is missing.
        let ws = warnings_of(
            PartnerId::Tune,
            Method::Get,
            "advertiser_sub_publisher=Vungle&advertiser_sub_campaign=Spring&sub_campaign_id=7\
             &ios_ifa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF",
            "",
        );
        assert!(
            !ws.iter().any(|w| w.code == WarningCode::IgnoredField),
            "{ws:?}"
        );
        // Branch: paths one level into its objects.
        let ws = warnings_of(
            PartnerId::Branch,
            Method::Post,
            "",
            r#"{"name":"INSTALL","last_attributed_touch_data":{"~channel":"Facebook","~ad_set_id":"9","~campaign_id":"3","~campaign":"c"},"user_data":{"idfa":"A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF"}}"#,
        );
        let ignored: Vec<Option<&str>> = codes(&ws)
            .into_iter()
            .filter(|(c, _)| *c == WarningCode::IgnoredField)
            .map(|(_, k)| k)
            .collect();
        assert_eq!(
            ignored,
            [Some("last_attributed_touch_data.~ad_set_id")],
            "{ws:?}"
        );
    }

    #[test]
    fn key_names_are_read_as_words() {
        assert_eq!(looks_like_dimension("sub_campaign"), Some("campaign"));
        assert_eq!(looks_like_dimension("adSetName"), Some("adgroup"));
        assert_eq!(looks_like_dimension("~ad_set_id"), Some("adgroup"));
        assert_eq!(looks_like_dimension("creative_id"), Some("ad"));
        assert_eq!(looks_like_dimension("ad_name"), Some("ad"));
        assert_eq!(looks_like_dimension("media_source"), Some("source"));
        assert_eq!(looks_like_dimension("sub_publisher"), Some("source"));
        assert_eq!(looks_like_dimension("adid"), None, "Kochava's Google ad id");
        assert_eq!(looks_like_dimension("device_model"), None);
        assert_eq!(looks_like_dimension("event_source"), None);
        assert_eq!(looks_like_dimension("traffic_source"), Some("source"));
        assert_eq!(looks_like_dimension("retry_attempts"), None);
    }

    #[test]
    fn a_real_appsflyer_push_names_only_the_fields_worth_a_look() {
        let ws = warnings_of(
            PartnerId::Appsflyer,
            Method::Post,
            "",
            include_str!("../../tests/fixtures/appsflyer/install_android.json"),
        );
        let ignored: Vec<&str> = ws
            .iter()
            .filter(|w| w.code == WarningCode::IgnoredField)
            .filter_map(|w| w.key.as_deref())
            .collect();
        // The ids and the ad type of mapped dimensions are left out; the channel is
        // a second source the mapping does not read.
        assert_eq!(ignored, ["channel"], "{ws:#?}");
    }

    #[test]
    fn all_zero_advertising_ids_and_the_event_time_are_explained() {
        let ws = warnings_of(
            PartnerId::Kochava,
            Method::Post,
            "",
            r#"{"network_name":"Liftoff","campaign_name":"c","site_id":"s","creative_id":"a",
                "idfa":"00000000-0000-0000-0000-000000000000","kochava_device_id":"KD1",
                "event_time":"1714665600123"}"#,
        );
        assert_eq!(
            codes(&ws),
            [
                (WarningCode::ZeroAdId, Some("idfa")),
                (WarningCode::EventTime, Some("event_time"))
            ],
            "{ws:?}"
        );
        assert_eq!(
            ws[1].message,
            "event time read from event_time \"1714665600123\" as unix milliseconds: \
             2024-05-02T16:00:00.123Z"
        );
        let ws = warnings_of(
            PartnerId::Tune,
            Method::Get,
            "advertiser_sub_publisher=V&advertiser_sub_campaign=c&advertiser_sub_adgroup=g\
             &advertiser_sub_ad=a&ios_ifa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF\
             &conversion_timestamp=yesterday&conversion_datetime=2024-05-02%2016:00:00",
            "",
        );
        assert_eq!(ws.len(), 1, "{ws:?}");
        assert!(
            ws[0].message.starts_with(
                "event time read from conversion_datetime \"2024-05-02 16:00:00\" as a date \
                 and time without a zone, read as UTC: 2024-05-02T16:00:00Z (conversion_timestamp \
                 \"yesterday\" is not a time"
            ),
            "{}",
            ws[0].message
        );
        let ws = warnings_of(
            PartnerId::Tune,
            Method::Get,
            "advertiser_sub_publisher=V&advertiser_sub_campaign=c&advertiser_sub_adgroup=g\
             &advertiser_sub_ad=a&ios_ifa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF",
            "",
        );
        assert_eq!(
            ws[0].message,
            "no event time: none of conversion_timestamp, conversion_datetime has a value; \
             stored as null"
        );
    }

    #[test]
    fn a_payload_with_nothing_of_the_partner_gets_no_warnings() {
        assert!(warnings_of(PartnerId::Tune, Method::Get, "foo=bar", "").is_empty());
        assert!(warnings_of(PartnerId::Kochava, Method::Post, "", "not json").is_empty());
    }

    #[test]
    fn reasons_name_the_rule() {
        let reason_of = |partner, method, query: &str, body: &str| {
            reason(
                &inspect(partner, method, query, body.as_bytes())
                    .unwrap()
                    .delivery
                    .decision,
            )
        };
        assert_eq!(
            reason_of(
                PartnerId::Adjust,
                Method::Get,
                "network_name=Organic&idfa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF",
                ""
            ),
            "organic: network_name is \"Organic\""
        );
        assert_eq!(
            reason_of(
                PartnerId::Adjust,
                Method::Get,
                "network_name=Moloco&adid=x",
                ""
            ),
            "attributed install"
        );
        assert_eq!(
            reason_of(PartnerId::Adjust, Method::Get, "network_name=Moloco", ""),
            "no device or user identifier present"
        );
        assert_eq!(
            reason_of(
                PartnerId::Adjust,
                Method::Get,
                "network_name=Moloco&adid=x&activity_kind=event&event_name=buy",
                ""
            ),
            "attributed in-app event \"event\""
        );
    }
}
