//! TUNE (MobileAppTracking), partners.md §2: a GET query (or the same pairs as a form POST)
//! whose keys carry TUNE macros. The attribution keys are the `advertiser_sub_*` macros;
//! integrated publishers leave those empty, so `publisher_name` stands in for source and
//! `campaign_name` for campaign. Organic (inferred): `publisher_name` is `organic` or
//! `publisher_id` is `0`. No unique id: deduped by payload hash without `retry_attempts`.

use super::normalize::{event_kind, Picker};
use super::{Fields, Parser, PartnerId, Verdict};
use crate::domain::{Identifiers, Postback, Segments};

/// Changes on every resend of one delivery, so it stays out of the dedupe hash.
pub const VOLATILE_FIELDS: &[&str] = &["retry_attempts"];

/// Query string to paste into TUNE's postback URL: each key carries the macro of its name.
pub const QUERY_TEMPLATE: &str = concat!(
    "advertiser_sub_publisher={advertiser_sub_publisher}",
    "&advertiser_sub_campaign={advertiser_sub_campaign}",
    "&advertiser_sub_adgroup={advertiser_sub_adgroup}",
    "&advertiser_sub_ad={advertiser_sub_ad}",
    "&publisher_name={publisher_name}",
    "&publisher_id={publisher_id}",
    "&campaign_name={campaign_name}",
    "&user_id={user_id}",
    "&ios_ifa={ios_ifa}",
    "&ios_ifv={ios_ifv}",
    "&google_aid={google_aid}",
    "&android_id={android_id}",
    "&mat_id={mat_id}",
    "&event_name={event_name}",
    "&conversion_timestamp={conversion_timestamp}",
    "&conversion_datetime={conversion_datetime}",
    "&device_ip={device_ip}",
    "&user_agent={user_agent}",
    "&conversion_user_agent={conversion_user_agent}",
    "&retry_attempts={retry_attempts}",
);

/// The parser side of Tune (its methods are in `domain/partner_id.rs`).
pub const PARSER: Parser = Parser {
    volatile_fields: VOLATILE_FIELDS,
    query_template: Some(QUERY_TEMPLATE),
    parse,
};

pub fn parse(fields: &Fields) -> Verdict {
    let mut p = Picker::new(fields);
    p.organic_marker(&["publisher_name"], &["organic"]);
    p.organic_marker(&["publisher_id"], &["0"]);
    let event_name = p.canonical("event_name", &["event_name"]);
    let postback = Postback {
        kind: event_kind(event_name.as_deref()),
        event_name,
        segments: Segments {
            source: p.canonical("source", &["advertiser_sub_publisher", "publisher_name"]),
            campaign: p.canonical("campaign", &["advertiser_sub_campaign", "campaign_name"]),
            adgroup: p.canonical("adgroup", &["advertiser_sub_adgroup"]),
            ad: p.canonical("ad", &["advertiser_sub_ad"]),
        },
        ids: Identifiers {
            user_id: p.canonical("user_id", &["user_id"]),
            idfa: p.ad_id("idfa", &["ios_ifa"]),
            idfv: p.canonical("idfv", &["ios_ifv"]),
            google_aid: p.ad_id("google_aid", &["google_aid"]),
            android_id: p.canonical("android_id", &["android_id"]),
            partner_device_id: p.canonical("partner_device_id", &["mat_id"]),
        },
        event_time: p.time(&["conversion_timestamp", "conversion_datetime"]),
        ip: p.value(&["device_ip"]),
        user_agent: p.value(&["user_agent", "conversion_user_agent"]),
        partner_event_id: None,
    };
    p.verdict(PartnerId::Tune, postback)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;
    use crate::domain::EventKind;
    use crate::partners::normalize::testing::*;
    use crate::partners::{decode_form, Invalid};

    const DOCS_EXAMPLE: &str = include_str!("../../tests/fixtures/tune/docs_example.query");
    const INSTALL_IOS: &str = include_str!("../../tests/fixtures/tune/install_ios.query");
    const INSTALL_ANDROID: &str = include_str!("../../tests/fixtures/tune/install_android.query");
    const ORGANIC: &str = include_str!("../../tests/fixtures/tune/organic.query");
    const PURCHASE_EVENT: &str = include_str!("../../tests/fixtures/tune/purchase_event.query");
    const RAW_MACROS: &str = include_str!("../../tests/fixtures/tune/raw_macros.query");
    const NO_IDENTIFIER: &str = include_str!("../../tests/fixtures/tune/no_identifier.query");
    const LOWER_CASE_IDS: &str =
        include_str!("../../tests/fixtures/tune/install_ios_lower_case_ids.query");
    const PUBLISHER_ONLY: &str =
        include_str!("../../tests/fixtures/tune/install_publisher_only.query");
    const UNRELATED: &str = include_str!("../../tests/fixtures/unrelated/affiliate.query");

    #[test]
    fn docs_example_decodes_the_form_and_drops_the_unfilled_adgroup() {
        let p = accepted(parse(&query(DOCS_EXAMPLE)));
        assert_eq!(p.segments.source.as_deref(), Some("Vungle Inc."));
        assert_eq!(p.segments.campaign.as_deref(), Some("Summer Sale & Deals"));
        assert_eq!(p.segments.adgroup, None);
        assert_eq!(p.segments.ad, None);
        assert_eq!(
            p.ids.idfa.as_deref(),
            Some("A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF")
        );
        assert_eq!(p.kind, EventKind::Install);
    }

    #[test]
    fn attributed_ios_install_maps_every_field() {
        let p = accepted(parse(&query(INSTALL_IOS)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("ironSource".into()),
                campaign: Some("Spring Launch - US (iOS)".into()),
                adgroup: Some("Tier1_Rewarded".into()),
                ad: Some("video_30s_v2".into()),
            }
        );
        assert_eq!(
            p.ids,
            Identifiers {
                user_id: None,
                idfa: Some("6D92078A-8246-4BA4-AE5B-76104861E7DC".into()),
                idfv: Some("E2C1B0A9-8F7E-4D6C-B5A4-93827160F5E4".into()),
                google_aid: None,
                android_id: None,
                partner_device_id: Some("3c9a5e2f7b1d48e6a0c4f8b2d6e1a9c3".into()),
            }
        );
        assert_eq!(p.kind, EventKind::Install);
        assert_eq!(p.event_name.as_deref(), Some("Install"));
        assert_eq!(p.event_time, Utc.timestamp_opt(1_714_665_600, 0).single());
        assert_eq!(p.ip.as_deref(), Some("203.0.113.42"));
        assert_eq!(
            p.user_agent.as_deref(),
            Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148")
        );
        assert_eq!(p.partner_event_id, None);
    }

    #[test]
    fn attributed_android_install_maps_every_field() {
        let p = accepted(parse(&query(INSTALL_ANDROID)));
        assert_eq!(p.segments.source.as_deref(), Some("Moloco"));
        assert_eq!(p.segments.campaign.as_deref(), Some("RTB_Android_DE"));
        assert_eq!(p.segments.adgroup.as_deref(), Some("lookalike_payers"));
        assert_eq!(p.segments.ad.as_deref(), Some("banner_320x50"));
        assert_eq!(
            p.ids,
            Identifiers {
                user_id: Some("7f3c2b1a-0e9d-4c8b-a7f6-e5d4c3b2a190".into()),
                idfa: None,
                idfv: None,
                google_aid: Some("38400000-8cf0-11bd-b23e-10b96e40000d".into()),
                android_id: Some("9774d56d682e549c".into()),
                partner_device_id: Some("8e1f0a2b3c4d5e6f7a8b9c0d1e2f3a4b".into()),
            }
        );
        assert_eq!(p.kind, EventKind::Install);
        // conversion_timestamp is empty, so the datetime stands in.
        assert_eq!(
            p.event_time,
            Utc.with_ymd_and_hms(2024, 5, 2, 16, 0, 0).single()
        );
        assert_eq!(p.ip.as_deref(), Some("198.51.100.23"));
        assert_eq!(
            p.user_agent.as_deref(),
            Some("Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/UQ1A.240205.004)")
        );
    }

    #[test]
    fn publisher_name_organic_is_organic_in_any_letter_case() {
        assert_organic!(parse(&query(ORGANIC)));
        for name in ["organic", "Organic", "ORGANIC", " organic "] {
            let fields = with(query(INSTALL_IOS), "publisher_name", name);
            assert_organic!(parse(&fields), "publisher_name={name:?}");
        }
    }

    #[test]
    fn publisher_id_zero_is_organic() {
        let fields = with(query(INSTALL_IOS), "publisher_id", "0");
        assert_organic!(parse(&fields));
        let fields = with(query(INSTALL_IOS), "publisher_id", serde_json::json!(0));
        assert_organic!(parse(&fields));
    }

    #[test]
    fn names_that_only_contain_organic_are_attributed() {
        for name in ["Facebook Organic", "organic_interests", "non-organic"] {
            let fields = with(query(INSTALL_IOS), "publisher_name", name);
            accepted(parse(&fields));
        }
        accepted(parse(&with(
            query(INSTALL_IOS),
            "advertiser_sub_adgroup",
            "organic_interests",
        )));
        accepted(parse(&with(query(INSTALL_IOS), "publisher_id", "10")));
    }

    #[test]
    fn install_without_segments_is_organic() {
        let mut fields = query(INSTALL_IOS);
        for key in [
            "advertiser_sub_publisher",
            "advertiser_sub_campaign",
            "advertiser_sub_adgroup",
            "publisher_name",
        ] {
            fields.remove(key);
        }
        fields.insert("advertiser_sub_ad".into(), "   ".into());
        assert_organic!(parse(&fields));
    }

    #[test]
    fn install_without_identifier_is_invalid() {
        assert_eq!(
            parse(&query(NO_IDENTIFIER)),
            Verdict::Invalid(Invalid::NoIdentifier)
        );
    }

    #[test]
    fn unfilled_macros_count_as_absent() {
        let p = accepted(parse(&query(RAW_MACROS)));
        assert_eq!(p.segments.source.as_deref(), Some("AppLovin"));
        assert_eq!(p.segments.campaign, None, "plain {{x}}");
        assert_eq!(p.segments.adgroup, None, "{{{{x}}}} sent as %7B%7Bx%7D%7D");
        assert_eq!(p.segments.ad, None, "${{x}} sent as %24%7Bx%7D");
        assert_eq!(p.ids.user_id, None, "double-encoded %257Bx%257D");
        assert_eq!(p.ids.idfv, None);
        assert_eq!(p.ids.google_aid, None);
        assert_eq!(p.ids.partner_device_id, None);
        assert_eq!(p.event_name, None);
        assert_eq!(p.kind, EventKind::Install);
        assert_eq!((p.event_time, p.ip, p.user_agent), (None, None, None));
    }

    #[test]
    fn text_around_a_macro_is_kept() {
        let p = accepted(parse(&with(
            query(INSTALL_IOS),
            "advertiser_sub_ad",
            "spring_{x}",
        )));
        assert_eq!(p.segments.ad.as_deref(), Some("spring_{x}"));
    }

    #[test]
    fn all_zero_advertising_id_counts_as_absent() {
        let p = accepted(parse(&with(
            query(INSTALL_ANDROID),
            "google_aid",
            "00000000-0000-0000-0000-000000000000",
        )));
        assert_eq!(p.ids.google_aid, None);
        assert_eq!(p.ids.android_id.as_deref(), Some("9774d56d682e549c"));
    }

    #[test]
    fn over_long_mapped_value_is_invalid() {
        let fields = with(
            query(INSTALL_IOS),
            "advertiser_sub_campaign",
            long_text(257),
        );
        assert_eq!(
            parse(&fields),
            Verdict::Invalid(Invalid::TooLong {
                field: "campaign",
                key: "advertiser_sub_campaign".into()
            })
        );
        accepted(parse(&with(
            query(INSTALL_IOS),
            "advertiser_sub_campaign",
            long_text(256),
        )));
    }

    #[test]
    fn over_long_unmapped_value_is_accepted() {
        let fields = with(query(INSTALL_IOS), "click_url", long_text(2000));
        let fields = with(fields, "user_agent", long_text(600));
        accepted(parse(&fields));
    }

    #[test]
    fn organic_wins_over_an_over_long_value() {
        let fields = with(query(ORGANIC), "advertiser_sub_campaign", long_text(300));
        assert_organic!(parse(&fields));
    }

    #[test]
    fn in_app_event_is_stored_as_event() {
        let p = accepted(parse(&query(PURCHASE_EVENT)));
        assert_eq!(p.kind, EventKind::Event);
        assert_eq!(p.event_name.as_deref(), Some("purchase"));
        for name in ["install", "INSTALL", "reinstall"] {
            let p = accepted(parse(&with(query(PURCHASE_EVENT), "event_name", name)));
            assert_eq!(p.kind, EventKind::Install, "{name}");
        }
    }

    #[test]
    fn payload_without_tune_keys_is_invalid() {
        let expected = Verdict::Invalid(Invalid::NoPartnerFields(PartnerId::Tune));
        assert_eq!(parse(&query(UNRELATED)), expected);
        assert_eq!(parse(&Fields::new()), expected);
        assert_eq!(parse(&query("retry_attempts=1")), expected);
    }

    #[test]
    fn tune_keys_with_only_empty_values_are_organic_not_invalid() {
        assert_organic!(parse(&query("advertiser_sub_publisher=&ios_ifa=")));
    }

    #[test]
    fn query_template_carries_each_key_s_own_macro() {
        assert_template(QUERY_TEMPLATE, parse, VOLATILE_FIELDS);
        for (key, value) in query(QUERY_TEMPLATE) {
            assert_eq!(value, format!("{{{key}}}"));
        }
    }

    #[test]
    fn ios_ids_are_stored_upper_case_and_other_ids_keep_their_case() {
        let p = accepted(parse(&query(LOWER_CASE_IDS)));
        assert_eq!(
            p.ids,
            Identifiers {
                user_id: Some("Cust-00417".into()),
                idfa: Some("AAAA1111-BB22-4C33-8D44-EE55FF667788".into()),
                idfv: Some("E2C1B0A9-8F7E-4D6C-B5A4-93827160F5E4".into()),
                partner_device_id: Some("5f2e8c1a9b3d47e6a0c4f8b2d6e1a9c3".into()),
                ..Identifiers::default()
            }
        );
        let fields = with(
            query(INSTALL_ANDROID),
            "google_aid",
            "38400000-8CF0-11BD-B23E-10B96E40000D",
        );
        assert_eq!(
            accepted(parse(&fields)).ids.google_aid.as_deref(),
            Some("38400000-8cf0-11bd-b23e-10b96e40000d")
        );
    }

    #[test]
    fn publisher_only_install_is_credited_to_publisher_name_and_campaign_name() {
        let p = accepted(parse(&query(PUBLISHER_ONLY)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("Facebook".into()),
                campaign: Some("Spring Launch - iOS US".into()),
                adgroup: None,
                ad: None,
            }
        );
        assert_eq!(
            p.ids.idfa.as_deref(),
            Some("C3D4E5F6-A7B8-4C9D-8E0F-1A2B3C4D5E6F")
        );
        assert_eq!(p.kind, EventKind::Install);
        // The organic markers are unchanged.
        assert_organic!(parse(&with(
            query(PUBLISHER_ONLY),
            "publisher_name",
            "Organic"
        )));
        assert_organic!(parse(&with(query(PUBLISHER_ONLY), "publisher_id", "0")));
    }

    #[test]
    fn advertiser_sub_values_win_over_publisher_name_and_campaign_name() {
        let fields = with(query(PUBLISHER_ONLY), "advertiser_sub_publisher", "Vungle");
        let fields = with(
            fields,
            "advertiser_sub_campaign",
            "{advertiser_sub_campaign}",
        );
        let p = accepted(parse(&fields));
        assert_eq!(p.segments.source.as_deref(), Some("Vungle"));
        assert_eq!(
            p.segments.campaign.as_deref(),
            Some("Spring Launch - iOS US"),
            "an unfilled sub macro is absent, so campaign_name stands in"
        );
        let fields = with(
            query(PUBLISHER_ONLY),
            "advertiser_sub_campaign",
            "Sub Campaign",
        );
        let p = accepted(parse(&fields));
        assert_eq!(p.segments.campaign.as_deref(), Some("Sub Campaign"));
    }

    #[test]
    fn publisher_name_and_campaign_name_never_stand_in_for_each_other() {
        let ifa = "ios_ifa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF";
        let p = accepted(parse(&query(&format!("campaign_name=Summer&{ifa}"))));
        assert_eq!(
            p.segments,
            Segments {
                campaign: Some("Summer".into()),
                ..Segments::default()
            }
        );
        let p = accepted(parse(&query(&format!("publisher_name=Vungle&{ifa}"))));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("Vungle".into()),
                ..Segments::default()
            }
        );
    }

    proptest! {
        #[test]
        fn verdict_does_not_depend_on_key_order(fields in arb_query(template_keys(QUERY_TEMPLATE))) {
            prop_assert_eq!(parse(&fields), parse(&reversed(&fields)));
        }

        #[test]
        fn arbitrary_query_strings_never_panic(bytes in any::<Vec<u8>>()) {
            let _ = parse(&decode_form(&bytes));
        }
    }
}
