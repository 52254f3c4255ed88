//! Branch, partners.md §6: a webhook POST with one JSON event; attribution tags sit in
//! `last_attributed_touch_data` (LATD), devices in `user_data`, so keys are `object.key`
//! paths. Organic: `attributed` is `false` (boolean or string), even with a stale LATD.
//! Dedupe id: the top-level `id` (string or number), kept as `partner_event_id`.

use super::normalize::{event_kind, Picker};
use super::{Fields, Parser, PartnerId, Verdict};
use crate::domain::{Identifiers, Postback, Segments};

/// The parser side of Branch (its methods are in `domain/partner_id.rs`).
pub const PARSER: Parser = Parser {
    volatile_fields: &[],
    query_template: None,
    parse,
};

pub fn parse(fields: &Fields) -> Verdict {
    let mut p = Picker::with_paths(fields);
    p.organic_marker(&["attributed"], &["false"]);
    let event_name = p.canonical("event_name", &["name"]);
    let postback = Postback {
        kind: event_kind(event_name.as_deref()),
        event_name,
        segments: Segments {
            source: p.canonical(
                "source",
                &[
                    "last_attributed_touch_data.~channel",
                    "last_attributed_touch_data.~advertising_partner_name",
                ],
            ),
            campaign: p.canonical("campaign", &["last_attributed_touch_data.~campaign"]),
            adgroup: p.canonical("adgroup", &["last_attributed_touch_data.~ad_set_name"]),
            ad: p.canonical(
                "ad",
                &[
                    "last_attributed_touch_data.~ad_name",
                    "last_attributed_touch_data.~creative_name",
                ],
            ),
        },
        ids: Identifiers {
            user_id: p.canonical(
                "user_id",
                &[
                    "custom_data.$braze_install_id",
                    "user_data.$braze_install_id",
                    "user_data.developer_identity",
                ],
            ),
            idfa: p.ad_id("idfa", &["user_data.idfa"]),
            idfv: p.canonical("idfv", &["user_data.idfv"]),
            google_aid: p.ad_id("google_aid", &["user_data.aaid"]),
            android_id: p.canonical("android_id", &["user_data.android_id"]),
            partner_device_id: p.canonical("partner_device_id", &["user_data.cross_platform_id"]),
        },
        event_time: p.time(&["timestamp"]),
        ip: p.value(&["user_data.ip"]),
        user_agent: p.value(&["user_data.user_agent"]),
        partner_event_id: p.value(&["id"]),
    };
    p.verdict(PartnerId::Branch, postback)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;
    use crate::domain::EventKind;
    use crate::partners::normalize::testing::*;
    use crate::partners::Invalid;

    const DOCS_EXAMPLE: &str = include_str!("../../tests/fixtures/branch/docs_example.json");
    const INSTALL_IOS: &str = include_str!("../../tests/fixtures/branch/install_ios.json");
    const ORGANIC_STALE_LATD: &str =
        include_str!("../../tests/fixtures/branch/organic_stale_latd.json");
    const INSTALL_WITHOUT_LATD: &str =
        include_str!("../../tests/fixtures/branch/install_without_latd.json");
    const PURCHASE_EVENT: &str = include_str!("../../tests/fixtures/branch/purchase_event.json");
    const RAW_MACROS: &str = include_str!("../../tests/fixtures/branch/raw_macros.json");
    const NO_IDENTIFIER: &str = include_str!("../../tests/fixtures/branch/no_identifier.json");
    const UNRELATED: &str = include_str!("../../tests/fixtures/unrelated/webhook.json");

    const LATD: &str = "last_attributed_touch_data";

    /// Every key path the Branch table names, for the property tests.
    const KEYS: &[&str] = &[
        "id",
        "name",
        "timestamp",
        "attributed",
        "last_attributed_touch_data.~channel",
        "last_attributed_touch_data.~advertising_partner_name",
        "last_attributed_touch_data.~campaign",
        "last_attributed_touch_data.~ad_set_name",
        "last_attributed_touch_data.~ad_name",
        "last_attributed_touch_data.~creative_name",
        "custom_data.$braze_install_id",
        "user_data.$braze_install_id",
        "user_data.developer_identity",
        "user_data.idfa",
        "user_data.idfv",
        "user_data.aaid",
        "user_data.android_id",
        "user_data.cross_platform_id",
        "user_data.ip",
        "user_data.user_agent",
    ];

    #[test]
    fn docs_example_maps_every_field_it_carries() {
        let p = accepted(parse(&json(DOCS_EXAMPLE)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("AppLovin".into()),
                campaign: Some("summer_launch".into()),
                adgroup: Some("US_Android_Broad".into()),
                ad: Some("playable_03".into()),
            }
        );
        assert_eq!(
            p.ids,
            Identifiers {
                user_id: Some("7f3c2b1a-0e9d-4c8b-a7f6-e5d4c3b2a190".into()),
                google_aid: Some("38400000-8cf0-11bd-b23e-10b96e40000d".into()),
                ..Identifiers::default()
            }
        );
        assert_eq!(
            (p.kind, p.event_name.as_deref()),
            (EventKind::Install, Some("INSTALL"))
        );
        assert_eq!(
            p.event_time,
            Utc.timestamp_millis_opt(1_714_665_600_123).single()
        );
        assert_eq!(p.partner_event_id.as_deref(), Some("1249913712937051125"));
    }

    #[test]
    fn attributed_ios_install_maps_every_field_through_the_fallback_keys() {
        let p = accepted(parse(&json(INSTALL_IOS)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("Google AdWords".into()),
                campaign: Some("iOS | US | tCPA".into()),
                adgroup: Some("Puzzle Fans 25-44".into()),
                ad: Some("video_vertical_15s".into()),
            },
            "~advertising_partner_name and ~creative_name stand in"
        );
        assert_eq!(
            p.ids,
            Identifiers {
                user_id: Some("cust-51120".into()),
                idfa: Some("6D92078A-8246-4BA4-AE5B-76104861E7DC".into()),
                idfv: Some("E2C1B0A9-8F7E-4D6C-B5A4-93827160F5E4".into()),
                google_aid: None,
                android_id: None,
                partner_device_id: Some("98aa7f1d5ad0c4c8e7a2b6d1f0e3c9b84a7d6e5f".into()),
            }
        );
        assert_eq!(
            (p.kind, p.event_name.as_deref()),
            (EventKind::Install, Some("install"))
        );
        assert_eq!(
            p.event_time,
            Utc.timestamp_millis_opt(1_714_671_845_007).single()
        );
        assert_eq!(p.ip.as_deref(), Some("203.0.113.54"));
        assert!(p
            .user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with("Mozilla/5.0 (iPhone;")));
        assert_eq!(
            p.partner_event_id.as_deref(),
            Some("1250087741902387201"),
            "a numeric id keeps its digits"
        );
    }

    #[test]
    fn braze_install_id_wins_over_the_developer_identity() {
        let fields = with_nested(
            json(INSTALL_IOS),
            "user_data",
            "$braze_install_id",
            "braze-from-user-data",
        );
        assert_eq!(
            accepted(parse(&fields)).ids.user_id.as_deref(),
            Some("braze-from-user-data")
        );
        let fields = with_nested(
            fields,
            "custom_data",
            "$braze_install_id",
            "braze-from-custom-data",
        );
        assert_eq!(
            accepted(parse(&fields)).ids.user_id.as_deref(),
            Some("braze-from-custom-data")
        );
    }

    #[test]
    fn attributed_false_is_organic_even_with_a_stale_latd() {
        assert_organic!(parse(&json(ORGANIC_STALE_LATD)));
        for attributed in [
            json!(false),
            json!("false"),
            json!("False"),
            json!(" FALSE "),
        ] {
            let fields = with(json(DOCS_EXAMPLE), "attributed", attributed.clone());
            assert_organic!(parse(&fields), "attributed={attributed}");
        }
        for attributed in [
            json!(true),
            json!("true"),
            json!(null),
            json!(0),
            json!("no"),
        ] {
            let fields = with(json(DOCS_EXAMPLE), "attributed", attributed.clone());
            accepted(parse(&fields));
        }
    }

    #[test]
    fn install_without_latd_is_organic() {
        assert_organic!(parse(&json(INSTALL_WITHOUT_LATD)));
        let fields = with(
            json(DOCS_EXAMPLE),
            LATD,
            json!({"~feature": "marketing", "~tags": []}),
        );
        assert_organic!(parse(&fields));
    }

    #[test]
    fn channels_that_only_contain_organic_are_attributed() {
        let fields = with_nested(json(DOCS_EXAMPLE), LATD, "~channel", "Facebook Organic");
        let p = accepted(parse(&fields));
        assert_eq!(p.segments.source.as_deref(), Some("Facebook Organic"));
        let fields = with_nested(
            json(DOCS_EXAMPLE),
            LATD,
            "~ad_set_name",
            "organic_interests",
        );
        accepted(parse(&fields));
        let fields = with_nested(json(DOCS_EXAMPLE), LATD, "~channel", "organic");
        accepted(parse(&fields));
    }

    #[test]
    fn install_without_identifier_is_invalid() {
        assert_eq!(
            parse(&json(NO_IDENTIFIER)),
            Verdict::Invalid(Invalid::NoIdentifier)
        );
    }

    #[test]
    fn unfilled_macros_count_as_absent() {
        let p = accepted(parse(&json(RAW_MACROS)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("Liftoff".into()),
                ..Segments::default()
            },
            "{{{{x}}}}, ${{(x)!}}, the JSON string %7Bcreative_id%7D, {{x}}"
        );
        assert_eq!(
            p.ids,
            Identifiers {
                idfa: Some("6D92078A-8246-4BA4-AE5B-76104861E7DC".into()),
                ..Identifiers::default()
            }
        );
        assert_eq!((p.event_time, p.ip, p.partner_event_id), (None, None, None));
    }

    #[test]
    fn paths_do_not_match_flat_keys_or_the_wrong_object() {
        let fields = json(
            r#"{"name":"INSTALL","~channel":"AppLovin","user_data.aaid":"38400000-8cf0-11bd-b23e-10b96e40000d",
                "user_data":"not an object","custom_data":{"~channel":"AppLovin"}}"#,
        );
        assert_organic!(parse(&fields));
    }

    #[test]
    fn all_zero_advertising_id_counts_as_absent() {
        let fields = with_nested(
            json(DOCS_EXAMPLE),
            "user_data",
            "aaid",
            "00000000-0000-0000-0000-000000000000",
        );
        let p = accepted(parse(&fields));
        assert_eq!(p.ids.google_aid, None);
        assert!(p.ids.user_id.is_some());
    }

    #[test]
    fn over_long_mapped_value_is_invalid() {
        let fields = with_nested(json(DOCS_EXAMPLE), LATD, "~campaign", long_text(257));
        assert_eq!(
            parse(&fields),
            Verdict::Invalid(Invalid::TooLong {
                field: "campaign",
                key: "last_attributed_touch_data.~campaign".into()
            })
        );
    }

    #[test]
    fn over_long_unmapped_url_and_referrer_are_accepted() {
        let url = format!("https://example.app.link/e/{}", "a".repeat(2000));
        let fields = with_nested(json(INSTALL_IOS), LATD, "+url", url.clone());
        let fields = with_nested(fields, LATD, "+referrer", url.clone());
        let fields = with(fields, "referrer", url);
        accepted(parse(&fields));
    }

    #[test]
    fn organic_wins_over_an_over_long_value() {
        let fields = with_nested(json(ORGANIC_STALE_LATD), LATD, "~campaign", long_text(300));
        assert_organic!(parse(&fields));
    }

    #[test]
    fn in_app_event_is_stored_as_event() {
        let p = accepted(parse(&json(PURCHASE_EVENT)));
        assert_eq!(
            (p.kind, p.event_name.as_deref()),
            (EventKind::Event, Some("PURCHASE"))
        );
        assert_eq!(p.partner_event_id.as_deref(), Some("1250303030303030303"));
        for name in ["OPEN", "REINSTALL"] {
            let p = accepted(parse(&with(json(PURCHASE_EVENT), "name", name)));
            let expected = if name == "OPEN" {
                EventKind::Event
            } else {
                EventKind::Install
            };
            assert_eq!(p.kind, expected, "{name}");
        }
    }

    #[test]
    fn payload_without_branch_keys_is_invalid() {
        let expected = Verdict::Invalid(Invalid::NoPartnerFields(PartnerId::Branch));
        assert_eq!(parse(&json(UNRELATED)), expected);
        assert_eq!(parse(&Fields::new()), expected);
        // Branch's objects without any of the keys the table names.
        assert_eq!(
            parse(&json(r#"{"user_data":{"os":"IOS"},"custom_data":{}}"#)),
            expected
        );
    }

    #[test]
    fn a_null_id_is_still_a_branch_key() {
        let fields = json(r#"{"id":null}"#);
        assert_organic!(parse(&fields));
        assert_organic!(parse(&with(Fields::new(), "attributed", Value::Null)));
    }

    #[test]
    fn ids_get_their_canonical_letter_case() {
        let fields = with_nested(
            json(INSTALL_IOS),
            "user_data",
            "idfa",
            "6d92078a-8246-4ba4-ae5b-76104861e7dc",
        );
        let fields = with_nested(
            fields,
            "user_data",
            "idfv",
            "e2c1b0a9-8f7e-4d6c-b5a4-93827160f5e4",
        );
        let p = accepted(parse(&fields));
        assert_eq!(
            (p.ids.idfa.as_deref(), p.ids.idfv.as_deref()),
            (
                Some("6D92078A-8246-4BA4-AE5B-76104861E7DC"),
                Some("E2C1B0A9-8F7E-4D6C-B5A4-93827160F5E4")
            )
        );
        assert_eq!(
            p.ids.partner_device_id.as_deref(),
            Some("98aa7f1d5ad0c4c8e7a2b6d1f0e3c9b84a7d6e5f")
        );
        let fields = with_nested(
            json(DOCS_EXAMPLE),
            "user_data",
            "aaid",
            "38400000-8CF0-11BD-B23E-10B96E40000D",
        );
        assert_eq!(
            accepted(parse(&fields)).ids.google_aid.as_deref(),
            Some("38400000-8cf0-11bd-b23e-10b96e40000d")
        );
    }

    proptest! {
        #[test]
        fn arbitrary_json_objects_never_panic_and_ignore_key_order(
            fields in arb_object(KEYS.iter().map(|k| k.to_string()).collect())
        ) {
            prop_assert_eq!(parse(&fields), parse(&reversed(&fields)));
        }
    }
}
