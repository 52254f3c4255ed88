//! AppsFlyer, partners.md §5: Push API JSON body (or a GET query with the same keys).
//! The user id comes from `custom_data`, a JSON document sent as a string (or an object),
//! ignored when it does not parse. AppsFlyer sends organic installs too: organic when
//! `media_source`, `campaign_type` or `af_status` is `organic`. No unique id: payload hash.

use serde_json::Value;

use super::normalize::{embedded_object, event_kind, text, Picker};
use super::{Fields, Parser, PartnerId, Verdict};
use crate::domain::{Identifiers, Postback, Segments};

/// Query string for a GET postback, in `{key}` macro style. AppsFlyer documents no macro
/// list for Push API: its GET messages append every selected field themselves, so this
/// template is only needed where a URL must be written by hand; the style is our guess.
pub const QUERY_TEMPLATE: &str = concat!(
    "media_source={media_source}",
    "&campaign={campaign}",
    "&af_adset={af_adset}",
    "&af_ad={af_ad}",
    "&campaign_type={campaign_type}",
    "&af_status={af_status}",
    "&custom_data={custom_data}",
    "&customer_user_id={customer_user_id}",
    "&idfa={idfa}",
    "&idfv={idfv}",
    "&advertising_id={advertising_id}",
    "&android_id={android_id}",
    "&appsflyer_id={appsflyer_id}",
    "&event_name={event_name}",
    "&event_time={event_time}",
    "&install_time={install_time}",
    "&ip={ip}",
    "&user_agent={user_agent}",
);

/// Keys inside `custom_data` that carry the Braze user, in priority order.
const CUSTOM_DATA_USER_KEYS: &[&str] = &["brazeCustomerId", "brazeDeviceId", "customData"];

/// The parser side of AppsFlyer (its methods are in `domain/partner_id.rs`).
pub const PARSER: Parser = Parser {
    volatile_fields: &[],
    query_template: Some(QUERY_TEMPLATE),
    parse,
};

pub fn parse(fields: &Fields) -> Verdict {
    let mut p = Picker::new(fields);
    p.organic_marker(
        &["media_source", "campaign_type", "af_status"],
        &["organic"],
    );
    let custom_data = p.raw("custom_data");
    let user_id = match custom_data_user(custom_data) {
        Some((key, value)) => p.check("user_id", &format!("custom_data.{key}"), value),
        None => p.canonical("user_id", &["customer_user_id"]),
    };
    let event_name = p.canonical("event_name", &["event_name"]);
    let postback = Postback {
        kind: event_kind(event_name.as_deref()),
        event_name,
        segments: Segments {
            source: p.canonical("source", &["media_source"]),
            campaign: p.canonical("campaign", &["campaign"]),
            adgroup: p.canonical("adgroup", &["af_adset"]),
            ad: p.canonical("ad", &["af_ad"]),
        },
        ids: Identifiers {
            user_id,
            idfa: p.ad_id("idfa", &["idfa"]),
            idfv: p.canonical("idfv", &["idfv"]),
            google_aid: p.ad_id("google_aid", &["advertising_id"]),
            android_id: p.canonical("android_id", &["android_id"]),
            partner_device_id: p.canonical("partner_device_id", &["appsflyer_id"]),
        },
        event_time: p.time(&["event_time", "install_time"]),
        ip: p.value(&["ip"]),
        user_agent: p.value(&["user_agent"]),
        partner_event_id: None,
    };
    p.verdict(PartnerId::Appsflyer, postback)
}

/// The first Braze user key inside `custom_data` (a JSON object, or a string holding one).
fn custom_data_user(custom_data: Option<&Value>) -> Option<(&'static str, String)> {
    let map = embedded_object(custom_data?)?;
    CUSTOM_DATA_USER_KEYS
        .iter()
        .find_map(|&key| map.get(key).and_then(text).map(|v| (key, v)))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::domain::EventKind;
    use crate::partners::normalize::testing::*;
    use crate::partners::{decode_form, Invalid};

    const DOCS_EXAMPLE: &str = include_str!("../../tests/fixtures/appsflyer/docs_example.json");
    const INSTALL_ANDROID: &str =
        include_str!("../../tests/fixtures/appsflyer/install_android.json");
    const INSTALL_IOS: &str = include_str!("../../tests/fixtures/appsflyer/install_ios.query");
    const ORGANIC: &str = include_str!("../../tests/fixtures/appsflyer/organic.json");
    const PURCHASE_EVENT: &str = include_str!("../../tests/fixtures/appsflyer/purchase_event.json");
    const CUSTOM_DATA_OBJECT: &str =
        include_str!("../../tests/fixtures/appsflyer/custom_data_object.json");
    const CUSTOM_DATA_BROKEN: &str =
        include_str!("../../tests/fixtures/appsflyer/custom_data_broken.json");
    const RAW_MACROS: &str = include_str!("../../tests/fixtures/appsflyer/raw_macros.json");
    const RAW_MACROS_QUERY: &str = include_str!("../../tests/fixtures/appsflyer/raw_macros.query");
    const NO_IDENTIFIER: &str = include_str!("../../tests/fixtures/appsflyer/no_identifier.json");
    const INSTALL_RESTRICTED: &str =
        include_str!("../../tests/fixtures/appsflyer/install_restricted.json");
    const UNRELATED: &str = include_str!("../../tests/fixtures/unrelated/webhook.json");

    #[test]
    fn docs_example_takes_the_user_from_custom_data_and_drops_the_unfilled_adset() {
        let p = accepted(parse(&json(DOCS_EXAMPLE)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("applovin_int".into()),
                campaign: Some("Brand - US".into()),
                adgroup: None,
                ad: Some("uac_half&half_1200x1500".into()),
            }
        );
        assert_eq!(
            p.ids.user_id.as_deref(),
            Some("2a7d9c4e-61b3-4f08-95ad-3e1c7b0f6d52")
        );
        assert_eq!(
            p.ids.google_aid.as_deref(),
            Some("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")
        );
        assert_eq!(
            p.ids.partner_device_id.as_deref(),
            Some("1714644931000-4412908")
        );
        assert_eq!(p.kind, EventKind::Install);
        assert_eq!(
            p.event_time,
            Utc.with_ymd_and_hms(2024, 5, 2, 10, 15, 31).single()
        );
    }

    #[test]
    fn attributed_android_install_maps_every_field() {
        let p = accepted(parse(&json(INSTALL_ANDROID)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("googleadwords_int".into()),
                campaign: Some("UAC_Install_DE_Android".into()),
                adgroup: Some("Adgroup 3".into()),
                ad: Some("video_15s_de".into()),
            }
        );
        assert_eq!(
            p.ids,
            Identifiers {
                user_id: Some("2a7d9c4e-61b3-4f08-95ad-3e1c7b0f6d52".into()),
                idfa: None,
                idfv: None,
                google_aid: Some("38400000-8cf0-11bd-b23e-10b96e40000d".into()),
                android_id: Some("9774d56d682e549c".into()),
                partner_device_id: Some("1714644931000-4412908".into()),
            }
        );
        assert_eq!(
            (p.kind, p.event_name.as_deref()),
            (EventKind::Install, Some("install"))
        );
        assert_eq!(
            p.event_time,
            Utc.timestamp_millis_opt(1_714_644_931_412).single()
        );
        assert_eq!(p.ip.as_deref(), Some("91.64.12.7"));
        assert_eq!(
            p.user_agent.as_deref(),
            Some("Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/UQ1A.240205.004)")
        );
        assert_eq!(p.partner_event_id, None);
    }

    #[test]
    fn attributed_ios_install_by_get_maps_every_field() {
        let p = accepted(parse(&query(INSTALL_IOS)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("ironsource_int".into()),
                campaign: Some("iOS Puzzle – US".into()),
                adgroup: Some("Rewarded & Interstitial".into()),
                ad: Some("endcard_v2+video".into()),
            }
        );
        assert_eq!(
            p.ids,
            Identifiers {
                user_id: Some("E2C1B0A9-8F7E-4D6C-B5A4-93827160F5E4".into()),
                idfa: Some("6D92078A-8246-4BA4-AE5B-76104861E7DC".into()),
                idfv: Some("E2C1B0A9-8F7E-4D6C-B5A4-93827160F5E4".into()),
                google_aid: None,
                android_id: None,
                partner_device_id: Some("1714650012000-7731550".into()),
            }
        );
        assert_eq!(
            p.event_time,
            Utc.with_ymd_and_hms(2024, 5, 2, 11, 40, 12).single()
        );
        assert_eq!(p.ip.as_deref(), Some("203.0.113.18"));
        assert_eq!(
            p.user_agent.as_deref(),
            Some("PuzzleQuest/3.12.0 CFNetwork/1494.0.7 Darwin/23.4.0")
        );
    }

    #[test]
    fn custom_data_may_be_an_object() {
        let p = accepted(parse(&json(CUSTOM_DATA_OBJECT)));
        assert_eq!(
            p.ids.user_id.as_deref(),
            Some("c0ffee00-1111-4222-8333-944455556666"),
            "empty brazeCustomerId is absent, customData stands in"
        );
    }

    #[test]
    fn custom_data_that_does_not_parse_is_ignored() {
        let p = accepted(parse(&json(CUSTOM_DATA_BROKEN)));
        assert_eq!(p.ids.user_id.as_deref(), Some("cust-99120"));
        for custom_data in [
            json!("[1,2]"),
            json!("\"x\""),
            json!(42),
            json!(["a"]),
            json!(null),
        ] {
            let fields = with(json(CUSTOM_DATA_BROKEN), "custom_data", custom_data.clone());
            let p = accepted(parse(&fields));
            assert_eq!(
                p.ids.user_id.as_deref(),
                Some("cust-99120"),
                "custom_data={custom_data}"
            );
        }
    }

    #[test]
    fn custom_data_user_keys_follow_their_priority() {
        let fields = with(
            json(CUSTOM_DATA_BROKEN),
            "custom_data",
            r#"{"customData":"c","brazeDeviceId":"d","brazeCustomerId":"{{braze}}"}"#,
        );
        assert_eq!(accepted(parse(&fields)).ids.user_id.as_deref(), Some("d"));
        let fields = with(
            json(CUSTOM_DATA_BROKEN),
            "custom_data",
            json!({"brazeCustomerId": 12345}),
        );
        assert_eq!(
            accepted(parse(&fields)).ids.user_id.as_deref(),
            Some("12345")
        );
    }

    #[test]
    fn organic_marker_in_any_of_its_keys_is_organic_in_any_letter_case() {
        assert_organic!(parse(&json(ORGANIC)));
        for key in ["media_source", "campaign_type", "af_status"] {
            for value in ["organic", "Organic", "ORGANIC"] {
                let fields = with(json(INSTALL_ANDROID), key, value);
                assert_organic!(parse(&fields), "{key}={value}");
            }
        }
    }

    #[test]
    fn names_that_only_contain_organic_are_attributed() {
        for (key, value) in [
            ("media_source", "Facebook Organic"),
            ("af_adset", "organic_interests"),
            ("af_status", "Non-organic"),
            ("campaign", "organic"),
        ] {
            accepted(parse(&with(json(INSTALL_ANDROID), key, value)));
        }
    }

    #[test]
    fn install_without_segments_is_organic() {
        let mut fields = json(INSTALL_ANDROID);
        for key in ["media_source", "campaign", "af_adset"] {
            fields.insert(key.into(), Value::Null);
        }
        fields.insert("af_ad".into(), "".into());
        assert_organic!(parse(&fields));
    }

    #[test]
    fn install_without_identifier_is_invalid() {
        assert_eq!(
            parse(&json(NO_IDENTIFIER)),
            Verdict::Invalid(Invalid::NoIdentifier)
        );
    }

    #[test]
    fn unfilled_macros_in_json_count_as_absent() {
        let p = accepted(parse(&json(RAW_MACROS)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("unityads_int".into()),
                ..Segments::default()
            },
            "{{x}}, {{{{x}}}} and the JSON string %7Bcreative_id%7D"
        );
        assert_eq!(
            p.ids,
            Identifiers {
                idfa: Some("6D92078A-8246-4BA4-AE5B-76104861E7DC".into()),
                ..Identifiers::default()
            }
        );
        assert_eq!(p.ip, None);
    }

    #[test]
    fn unfilled_macros_in_a_query_count_as_absent() {
        let p = accepted(parse(&query(RAW_MACROS_QUERY)));
        assert_eq!(
            (p.segments.campaign, p.segments.adgroup, p.segments.ad),
            (None, None, None)
        );
        assert_eq!(p.ids.partner_device_id, None, "double-encoded");
        assert_eq!(p.ids.user_id, None);
    }

    #[test]
    fn all_zero_advertising_id_counts_as_absent() {
        let fields = with(
            json(INSTALL_ANDROID),
            "advertising_id",
            "00000000-0000-0000-0000-000000000000",
        );
        assert_eq!(accepted(parse(&fields)).ids.google_aid, None);
        let fields = with(
            query(INSTALL_IOS),
            "idfa",
            "00000000-0000-0000-0000-000000000000",
        );
        assert_eq!(accepted(parse(&fields)).ids.idfa, None);
    }

    #[test]
    fn over_long_mapped_value_is_invalid() {
        let fields = with(json(INSTALL_ANDROID), "af_adset", long_text(257));
        assert_eq!(
            parse(&fields),
            Verdict::Invalid(Invalid::TooLong {
                field: "adgroup",
                key: "af_adset".into()
            })
        );
        let custom = json!({ "brazeCustomerId": long_text(300) });
        assert_eq!(
            parse(&with(json(INSTALL_ANDROID), "custom_data", custom)),
            Verdict::Invalid(Invalid::TooLong {
                field: "user_id",
                key: "custom_data.brazeCustomerId".into()
            })
        );
    }

    #[test]
    fn over_long_unmapped_value_is_accepted() {
        let url = format!("https://app.appsflyer.com/x?{}", long_text(2000));
        let fields = with(json(INSTALL_ANDROID), "original_url", url);
        let custom = json!({ "brazeCustomerId": "u1", "notes": long_text(1000) });
        accepted(parse(&with(fields, "custom_data", custom)));
    }

    #[test]
    fn organic_wins_over_an_over_long_value() {
        assert_organic!(parse(&with(json(ORGANIC), "campaign", long_text(300))));
    }

    #[test]
    fn in_app_event_is_stored_as_event() {
        let p = accepted(parse(&json(PURCHASE_EVENT)));
        assert_eq!(
            (p.kind, p.event_name.as_deref()),
            (EventKind::Event, Some("af_purchase"))
        );
        assert_eq!(
            p.event_time,
            Utc.timestamp_millis_opt(1_714_759_364_120).single()
        );
    }

    #[test]
    fn payload_without_appsflyer_keys_is_invalid() {
        let expected = Verdict::Invalid(Invalid::NoPartnerFields(PartnerId::Appsflyer));
        assert_eq!(parse(&json(UNRELATED)), expected);
        assert_eq!(parse(&Fields::new()), expected);
    }

    #[test]
    fn query_template_carries_each_key_s_own_macro() {
        assert_template(QUERY_TEMPLATE, parse, &[]);
        for (key, value) in query(QUERY_TEMPLATE) {
            assert_eq!(value, format!("{{{key}}}"));
        }
    }

    #[test]
    fn ids_get_their_canonical_letter_case() {
        let fields = with(
            json(INSTALL_ANDROID),
            "advertising_id",
            "38400000-8CF0-11BD-B23E-10B96E40000D",
        );
        let p = accepted(parse(&fields));
        assert_eq!(
            p.ids.google_aid.as_deref(),
            Some("38400000-8cf0-11bd-b23e-10b96e40000d")
        );
        assert_eq!(
            p.ids.partner_device_id.as_deref(),
            Some("1714644931000-4412908")
        );
        let fields = with(
            query(INSTALL_IOS),
            "idfa",
            "6d92078a-8246-4ba4-ae5b-76104861e7dc",
        );
        let fields = with(fields, "customer_user_id", "Cust-Mixed-Case");
        let fields = with(fields, "custom_data", json!({}));
        let p = accepted(parse(&fields));
        assert_eq!(
            p.ids.idfa.as_deref(),
            Some("6D92078A-8246-4BA4-AE5B-76104861E7DC")
        );
        assert_eq!(p.ids.user_id.as_deref(), Some("Cust-Mixed-Case"));
    }

    /// Passes on the code before issue 10 too: it pins that a `restricted` install
    /// (a network that forbids sharing its data) stays a paid install.
    #[test]
    fn restricted_install_without_campaign_fields_is_a_paid_install() {
        let p = accepted(parse(&json(INSTALL_RESTRICTED)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("restricted".into()),
                ..Segments::default()
            }
        );
        assert_eq!(
            p.ids.user_id.as_deref(),
            Some("e4d3c2b1-a098-4f7e-8d6c-5b4a39281706")
        );
        assert_eq!(p.kind, EventKind::Install);
    }

    proptest! {
        #[test]
        fn arbitrary_json_objects_never_panic_and_ignore_key_order(fields in arb_object(template_keys(QUERY_TEMPLATE))) {
            prop_assert_eq!(parse(&fields), parse(&reversed(&fields)));
        }

        #[test]
        fn verdict_does_not_depend_on_query_key_order(fields in arb_query(template_keys(QUERY_TEMPLATE))) {
            prop_assert_eq!(parse(&fields), parse(&reversed(&fields)));
        }

        #[test]
        fn arbitrary_query_strings_never_panic(bytes in any::<Vec<u8>>()) {
            let _ = parse(&decode_form(&bytes));
        }
    }

    /// Found by `fuzz/` (parse_appsflyer): `sanitize` runs on the delivery, but a
    /// `\u0000` escape inside the `custom_data` string only became a NUL when the parser
    /// decoded that string, so the stored user id carried a NUL (PostgreSQL rejects it).
    /// `custom_data_nul.tmin` is `cargo fuzz tmin`'s output, the others the same by hand.
    #[test]
    fn fuzz_nul_escaped_inside_custom_data_never_reaches_the_user_id() {
        const TMIN: &[u8] =
            include_bytes!("../../tests/fixtures/fuzz/parse_appsflyer/custom_data_nul.tmin");
        const QUERY: &str =
            include_str!("../../tests/fixtures/fuzz/parse_appsflyer/custom_data_nul.query");
        const JSON: &str =
            include_str!("../../tests/fixtures/fuzz/parse_appsflyer/custom_data_nul.json");
        for (name, mut fields) in [
            ("tmin", decode_form(TMIN)),
            ("query", query(QUERY)),
            ("json", json(JSON)),
        ] {
            crate::partners::sanitize(&mut fields);
            let user_id = accepted(parse(&fields))
                .ids
                .user_id
                .expect("the user id from custom_data");
            assert!(!user_id.contains('\0'), "{name}: {user_id:?}");
            assert!(user_id.contains('\u{FFFD}'), "{name}: {user_id:?}");
        }
    }
}
