//! Kochava certified postback, partners.md §7: a POST JSON body (key names inferred from
//! Kochava's macro vocabulary). Source falls back to `network`, then `publisher`;
//! `site_id` `none-provided` counts as absent. Organic:
//! `network_name` or `network` is `organic` or `unattributed` (Delivery Method "All" sends
//! those too). No unique id: deduped by payload hash.

use super::normalize::{event_kind, is_marker, Picker};
use super::{Fields, Parser, PartnerId, Verdict};
use crate::domain::{Identifiers, Postback, Segments};

/// Kochava's placeholder for a site id the network did not pass.
const NO_SITE_ID: &str = "none-provided";

/// The parser side of Kochava (its methods are in `domain/partner_id.rs`).
pub const PARSER: Parser = Parser {
    volatile_fields: &[],
    query_template: None,
    parse,
};

pub fn parse(fields: &Fields) -> Verdict {
    let mut p = Picker::new(fields);
    p.organic_marker(&["network_name", "network"], &["organic", "unattributed"]);
    let event_name = p.canonical("event_name", &["event_name", "attribution_action"]);
    let postback = Postback {
        kind: event_kind(event_name.as_deref()),
        event_name,
        segments: Segments {
            source: p.canonical("source", &["network_name", "network", "publisher"]),
            campaign: p.canonical("campaign", &["campaign_name", "campaign"]),
            adgroup: p
                .canonical("adgroup", &["site_id"])
                .filter(|v| !is_marker(v, &[NO_SITE_ID])),
            ad: p.canonical("ad", &["creative_id"]),
        },
        ids: Identifiers {
            user_id: p.canonical("user_id", &["identity_link"]),
            idfa: p.ad_id("idfa", &["idfa"]),
            idfv: p.canonical("idfv", &["idfv"]),
            google_aid: p.ad_id("google_aid", &["adid"]),
            android_id: p.canonical("android_id", &["android_id"]),
            partner_device_id: p.canonical("partner_device_id", &["kochava_device_id"]),
        },
        event_time: p.time(&["event_time"]),
        ip: p.value(&["ip_address"]),
        user_agent: p.value(&["device_ua"]),
        partner_event_id: None,
    };
    p.verdict(PartnerId::Kochava, postback)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::domain::EventKind;
    use crate::partners::normalize::testing::*;
    use crate::partners::Invalid;

    const DOCS_EXAMPLE: &str = include_str!("../../tests/fixtures/kochava/docs_example.json");
    const INSTALL_ANDROID: &str = include_str!("../../tests/fixtures/kochava/install_android.json");
    const NETWORK_FALLBACK: &str =
        include_str!("../../tests/fixtures/kochava/install_network_fallback.json");
    const UNATTRIBUTED: &str = include_str!("../../tests/fixtures/kochava/unattributed.json");
    const ORGANIC: &str = include_str!("../../tests/fixtures/kochava/organic.json");
    const PURCHASE_EVENT: &str = include_str!("../../tests/fixtures/kochava/purchase_event.json");
    const RAW_MACROS: &str = include_str!("../../tests/fixtures/kochava/raw_macros.json");
    const NO_IDENTIFIER: &str = include_str!("../../tests/fixtures/kochava/no_identifier.json");
    const PUBLISHER_ONLY: &str =
        include_str!("../../tests/fixtures/kochava/install_publisher_only.json");
    const UNRELATED: &str = include_str!("../../tests/fixtures/unrelated/webhook.json");

    /// Every key the Kochava table names, for the property tests.
    const KEYS: &[&str] = &[
        "network_name",
        "network",
        "publisher",
        "campaign_name",
        "campaign",
        "site_id",
        "creative_id",
        "identity_link",
        "idfa",
        "idfv",
        "adid",
        "android_id",
        "kochava_device_id",
        "event_name",
        "attribution_action",
        "event_time",
        "ip_address",
        "device_ua",
    ];

    #[test]
    fn docs_example_is_accepted_on_the_idfa_and_kochava_device_id_without_its_ad() {
        let p = accepted(parse(&json(DOCS_EXAMPLE)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("Liftoff".into()),
                campaign: Some("KO_iOS_US_Launch".into()),
                adgroup: Some("pub_88412".into()),
                ad: None,
            }
        );
        assert_eq!(
            p.ids,
            Identifiers {
                idfa: Some("4E5F6A7B-8C9D-4E0F-A1B2-C3D4E5F6A7B8".into()),
                partner_device_id: Some("KA4B8E2F1C07D24E3A9B6C1D0E8F7A6B5C4".into()),
                ..Identifiers::default()
            }
        );
        assert_eq!(
            (p.kind, p.event_name.as_deref()),
            (EventKind::Install, Some("_install"))
        );
    }

    #[test]
    fn attributed_android_install_maps_every_field() {
        let p = accepted(parse(&json(INSTALL_ANDROID)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("Vungle".into()),
                campaign: Some("KO_Android_BR_Rewarded".into()),
                adgroup: Some("com.example.publisher_game".into()),
                ad: Some("endcard_v5_pt".into()),
            }
        );
        assert_eq!(
            p.ids,
            Identifiers {
                user_id: Some("7f3c2b1a-0e9d-4c8b-a7f6-e5d4c3b2a190".into()),
                idfa: None,
                idfv: None,
                google_aid: Some("38400000-8cf0-11bd-b23e-10b96e40000d".into()),
                android_id: Some("9774d56d682e549c".into()),
                partner_device_id: Some("KA6B8E2F1C07D24E3A9B6C1D0E8F7A6B5C9".into()),
            }
        );
        assert_eq!(
            (p.kind, p.event_name.as_deref()),
            (EventKind::Install, Some("_install"))
        );
        assert_eq!(p.event_time, Utc.timestamp_opt(1_714_665_600, 0).single());
        assert_eq!(p.ip.as_deref(), Some("177.12.40.9"));
        assert!(p
            .user_agent
            .as_deref()
            .is_some_and(|ua| ua.contains("SM-A536E")));
        assert_eq!(p.partner_event_id, None);
    }

    #[test]
    fn network_and_campaign_stand_in_and_none_provided_site_is_absent() {
        let p = accepted(parse(&json(NETWORK_FALLBACK)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("Apple Search Ads".into()),
                campaign: Some("Brand_Exact_UK".into()),
                adgroup: None,
                ad: None,
            }
        );
        assert_eq!(p.ids.idfa, None, "all-zero IDFA");
        assert_eq!(
            p.ids.idfv.as_deref(),
            Some("E2C1B0A9-8F7E-4D6C-B5A4-93827160F5E4")
        );
        assert_eq!(
            p.event_time,
            Utc.with_ymd_and_hms(2024, 5, 2, 16, 0, 0).single()
        );
        assert_eq!(
            p.user_agent.as_deref(),
            Some("PuzzleQuest/3.12.0 CFNetwork/1494.0.7 Darwin/23.4.0")
        );
        let fields = with(json(DOCS_EXAMPLE), "site_id", "None-Provided");
        assert_eq!(accepted(parse(&fields)).segments.adgroup, None);
    }

    #[test]
    fn unattributed_and_organic_networks_are_organic_in_any_letter_case() {
        assert_organic!(parse(&json(UNATTRIBUTED)));
        assert_organic!(parse(&json(ORGANIC)));
        for key in ["network_name", "network"] {
            for value in ["organic", "Organic", "UNATTRIBUTED", "Unattributed"] {
                let fields = with(json(INSTALL_ANDROID), key, value);
                assert_organic!(parse(&fields), "{key}={value}");
            }
        }
    }

    #[test]
    fn names_that_only_contain_organic_are_attributed() {
        for (key, value) in [
            ("network_name", "Facebook Organic"),
            ("campaign_name", "organic"),
            ("site_id", "organic_interests"),
            ("network_name", "unattributed_traffic"),
        ] {
            accepted(parse(&with(json(INSTALL_ANDROID), key, value)));
        }
    }

    #[test]
    fn install_without_segments_is_organic() {
        let fields = json(
            r#"{"event_name":"_install","network_name":"","campaign_name":null,"site_id":"none-provided","creative_id":"{creative_id}","kochava_device_id":"KA1"}"#,
        );
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
    fn unfilled_macros_count_as_absent() {
        let p = accepted(parse(&json(RAW_MACROS)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("Moloco".into()),
                ..Segments::default()
            },
            "{{{{x}}}}, ${{x}} and the JSON string %7Bcreative_id%7D"
        );
        assert_eq!(
            p.ids,
            Identifiers {
                idfa: Some("4E5F6A7B-8C9D-4E0F-A1B2-C3D4E5F6A7B8".into()),
                ..Identifiers::default()
            }
        );
        assert_eq!((p.kind, p.event_name), (EventKind::Install, None));
        assert_eq!((p.event_time, p.ip, p.user_agent), (None, None, None));
    }

    #[test]
    fn numbers_and_booleans_become_text() {
        let fields = with(json(DOCS_EXAMPLE), "site_id", json!(536206));
        let fields = with(fields, "creative_id", json!(true));
        let p = accepted(parse(&fields));
        assert_eq!(p.segments.adgroup.as_deref(), Some("536206"));
        assert_eq!(p.segments.ad.as_deref(), Some("true"));
    }

    #[test]
    fn all_zero_advertising_id_counts_as_absent() {
        let fields = with(
            json(INSTALL_ANDROID),
            "adid",
            "00000000-0000-0000-0000-000000000000",
        );
        let p = accepted(parse(&fields));
        assert_eq!(p.ids.google_aid, None);
        assert_eq!(p.ids.android_id.as_deref(), Some("9774d56d682e549c"));
    }

    #[test]
    fn over_long_mapped_value_is_invalid() {
        let fields = with(json(DOCS_EXAMPLE), "network_name", long_text(257));
        assert_eq!(
            parse(&fields),
            Verdict::Invalid(Invalid::TooLong {
                field: "source",
                key: "network_name".into()
            })
        );
    }

    #[test]
    fn over_long_unmapped_value_is_accepted() {
        let url = format!(
            "https://control.kochava.com/v1/cpi/click?{}",
            long_text(2000)
        );
        accepted(parse(&with(json(INSTALL_ANDROID), "click_url", url)));
    }

    #[test]
    fn organic_wins_over_an_over_long_value() {
        assert_organic!(parse(&with(
            json(UNATTRIBUTED),
            "campaign_name",
            long_text(300)
        )));
    }

    #[test]
    fn in_app_event_is_stored_as_event() {
        let p = accepted(parse(&json(PURCHASE_EVENT)));
        assert_eq!(
            (p.kind, p.event_name.as_deref()),
            (EventKind::Event, Some("Purchase"))
        );
        let mut fields = json(PURCHASE_EVENT);
        fields.remove("event_name");
        let p = accepted(parse(&fields));
        assert_eq!(p.kind, EventKind::Install, "attribution_action stands in");
    }

    #[test]
    fn payload_without_kochava_keys_is_invalid() {
        let expected = Verdict::Invalid(Invalid::NoPartnerFields(PartnerId::Kochava));
        assert_eq!(parse(&json(UNRELATED)), expected);
        assert_eq!(parse(&Fields::new()), expected);
    }

    #[test]
    fn ids_get_their_canonical_letter_case() {
        let fields = with(
            json(DOCS_EXAMPLE),
            "idfa",
            "4e5f6a7b-8c9d-4e0f-a1b2-c3d4e5f6a7b8",
        );
        let p = accepted(parse(&with(
            fields,
            "idfv",
            "e2c1b0a9-8f7e-4d6c-b5a4-93827160f5e4",
        )));
        assert_eq!(
            (p.ids.idfa.as_deref(), p.ids.idfv.as_deref()),
            (
                Some("4E5F6A7B-8C9D-4E0F-A1B2-C3D4E5F6A7B8"),
                Some("E2C1B0A9-8F7E-4D6C-B5A4-93827160F5E4")
            )
        );
        let fields = with(
            json(INSTALL_ANDROID),
            "adid",
            "38400000-8CF0-11BD-B23E-10B96E40000D",
        );
        let p = accepted(parse(&fields));
        assert_eq!(
            p.ids.google_aid.as_deref(),
            Some("38400000-8cf0-11bd-b23e-10b96e40000d")
        );
        assert_eq!(
            p.ids.partner_device_id.as_deref(),
            Some("KA6B8E2F1C07D24E3A9B6C1D0E8F7A6B5C9"),
            "partner device ids keep their case"
        );
    }

    #[test]
    fn publisher_is_the_last_fallback_for_source() {
        let p = accepted(parse(&json(PUBLISHER_ONLY)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("Moloco".into()),
                campaign: Some("KO_Android_US_RTB".into()),
                adgroup: None,
                ad: None,
            }
        );
        let p = accepted(parse(&with(json(PUBLISHER_ONLY), "network", "AppLovin")));
        assert_eq!(p.segments.source.as_deref(), Some("AppLovin"));
        let p = accepted(parse(&with(
            json(PUBLISHER_ONLY),
            "network_name",
            "Liftoff",
        )));
        assert_eq!(p.segments.source.as_deref(), Some("Liftoff"));
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
