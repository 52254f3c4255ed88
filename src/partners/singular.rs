//! Singular (formerly Apsalar), partners.md §4: a GET query whose keys are lower-cased
//! Singular macro names, or Singular's JSON postback body; one key table serves both.
//! `__START__` is an install unless `is_reengagement` is set; the Braze id may sit in the
//! event arguments. Organic: `is_organic` is `1`/`true` (string, number or boolean;
//! whatever `network` says), or `network` is `Organic`. No unique id: payload hash.

use super::normalize::{embedded_object, event_kind, text, Picker};
use super::{Fields, Parser, PartnerId, Verdict};
use crate::domain::{EventKind, Identifiers, Postback, Segments};

/// Query string to paste into Singular's postback URL. Each key is the lower-cased macro
/// name, except `ip`, which carries `{ATTRIBUTION_IP}`, the documented macro for the IP at
/// install. A macro Singular does not know arrives unfilled and counts as absent.
pub const QUERY_TEMPLATE: &str = concat!(
    "network={NETWORK}",
    "&cid={CID}",
    "&campaign={CAMPAIGN}",
    "&gid={GID}",
    "&creative={CREATIVE}",
    "&appboyUserID={APPBOYUSERID}",
    "&custom_user_id={CUSTOM_USER_ID}",
    "&user_id={USER_ID}",
    "&idfa={IDFA}",
    "&idfv={IDFV}",
    "&aifa={AIFA}",
    "&andi={ANDI}",
    "&evtname={EVTNAME}",
    "&event_name={EVENT_NAME}",
    "&utc={UTC}",
    "&event_utc_timestamp={EVENT_UTC_TIMESTAMP}",
    "&install_utc_timestamp={INSTALL_UTC_TIMESTAMP}",
    "&ip={ATTRIBUTION_IP}",
    "&event_ip={EVENT_IP}",
    "&is_organic={IS_ORGANIC}",
);

/// The parser side of Singular (its methods are in `domain/partner_id.rs`).
pub const PARSER: Parser = Parser {
    volatile_fields: &[],
    query_template: Some(QUERY_TEMPLATE),
    parse,
};

/// Singular's JSON (BI) postbacks name the install this (any letter case); with
/// `is_reengagement` set, the same name is a re-engagement.
const START: &str = "__START__";

/// The Braze id key, top-level or inside the event arguments.
const BRAZE_ID: &str = "appboyUserID";

/// Where Android apps' event arguments travel in JSON bodies: an object, or a string
/// holding one.
const ARGUMENTS: &[&str] = &["arguments", "event_arguments"];

pub fn parse(fields: &Fields) -> Verdict {
    let mut p = Picker::new(fields);
    p.organic_marker(&["is_organic"], &["1", "true"]);
    p.organic_marker(&["network"], &["organic"]);
    let event_name = p.canonical("event_name", &["evtname", "event_name"]);
    let reengagement = p.is_marked(&["is_reengagement"], &["1", "true"]);
    let kind = match event_name.as_deref() {
        Some(name) if name.eq_ignore_ascii_case(START) && reengagement => EventKind::Event,
        Some(name) if name.eq_ignore_ascii_case(START) => EventKind::Install,
        name => event_kind(name),
    };
    let user_id = match p.value(&[BRAZE_ID]).map(|v| (BRAZE_ID.to_owned(), v)) {
        Some((key, value)) => p.check("user_id", &key, value),
        None => match braze_argument(&mut p) {
            Some((key, value)) => p.check("user_id", &key, value),
            None => p.canonical("user_id", &["custom_user_id", "user_id"]),
        },
    };
    let postback = Postback {
        kind,
        event_name,
        segments: Segments {
            source: p.canonical("source", &["network"]),
            campaign: p.canonical("campaign", &["cid", "campaign"]),
            adgroup: p.canonical("adgroup", &["gid"]),
            ad: p.canonical("ad", &["creative"]),
        },
        ids: Identifiers {
            user_id,
            idfa: p.ad_id("idfa", &["idfa"]),
            idfv: p.canonical("idfv", &["idfv"]),
            google_aid: p.ad_id("google_aid", &["aifa"]),
            android_id: p.canonical("android_id", &["andi"]),
            partner_device_id: None,
        },
        event_time: p.time(&["utc", "event_utc_timestamp", "install_utc_timestamp"]),
        ip: p.value(&["ip", "event_ip"]),
        user_agent: None,
        partner_event_id: None,
    };
    p.verdict(PartnerId::Singular, postback)
}

/// The Braze id inside the first of [`ARGUMENTS`] that holds one, with its path.
fn braze_argument(p: &mut Picker) -> Option<(String, String)> {
    ARGUMENTS.iter().find_map(|&container| {
        let arguments = embedded_object(p.raw(container)?)?;
        let value = arguments.get(BRAZE_ID).and_then(text)?;
        Some((format!("{container}.{BRAZE_ID}"), value))
    })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::partners::normalize::testing::*;
    use crate::partners::{decode_form, Invalid};

    const DOCS_EXAMPLE: &str = include_str!("../../tests/fixtures/singular/docs_example.query");
    const INSTALL_ANDROID: &str =
        include_str!("../../tests/fixtures/singular/install_android.query");
    const INSTALL_IOS: &str = include_str!("../../tests/fixtures/singular/install_ios.json");
    const ORGANIC: &str = include_str!("../../tests/fixtures/singular/organic.json");
    const ORGANIC_FLAG: &str = include_str!("../../tests/fixtures/singular/organic_flag.query");
    const PURCHASE_EVENT: &str = include_str!("../../tests/fixtures/singular/purchase_event.query");
    const RAW_MACROS: &str = include_str!("../../tests/fixtures/singular/raw_macros.query");
    const RAW_MACROS_JSON: &str = include_str!("../../tests/fixtures/singular/raw_macros.json");
    const NO_IDENTIFIER: &str = include_str!("../../tests/fixtures/singular/no_identifier.query");
    const INSTALL_START: &str = include_str!("../../tests/fixtures/singular/install_start.json");
    const REENGAGEMENT_START: &str =
        include_str!("../../tests/fixtures/singular/reengagement_start.json");
    const BRAZE_IN_ARGUMENTS: &str =
        include_str!("../../tests/fixtures/singular/install_braze_in_arguments.json");
    const BRAZE_IN_EVENT_ARGUMENTS: &str =
        include_str!("../../tests/fixtures/singular/event_braze_in_event_arguments.json");
    const UNRELATED: &str = include_str!("../../tests/fixtures/unrelated/webhook.json");

    #[test]
    fn docs_example_decodes_plus_ampersand_and_equals_and_drops_the_unfilled_creative() {
        let p = accepted(parse(&query(DOCS_EXAMPLE)));
        assert_eq!(p.segments.source.as_deref(), Some("Digital Turbine"));
        assert_eq!(p.segments.campaign.as_deref(), Some("Q3 Promo + Bonus"));
        assert_eq!(p.segments.adgroup.as_deref(), Some("a&b=test"));
        assert_eq!(p.segments.ad, None);
        assert_eq!(
            p.ids.idfa.as_deref(),
            Some("0C1D2E3F-4A5B-4C6D-8E7F-9A0B1C2D3E4F")
        );
        assert_eq!(p.kind, EventKind::Install);
    }

    #[test]
    fn attributed_android_install_by_get_maps_every_field() {
        let p = accepted(parse(&query(INSTALL_ANDROID)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("AppLovin".into()),
                campaign: Some("Android_DE_Q2_tROAS".into()),
                adgroup: Some("Broad Targeting".into()),
                ad: Some("rewarded_30s_v4".into()),
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
                partner_device_id: None,
            }
        );
        assert_eq!((p.kind, p.event_name), (EventKind::Install, None));
        assert_eq!(p.event_time, Utc.timestamp_opt(1_714_665_600, 0).single());
        assert_eq!(p.ip.as_deref(), Some("198.51.100.61"));
        assert_eq!((p.user_agent, p.partner_event_id), (None, None));
    }

    #[test]
    fn attributed_ios_install_by_json_maps_every_field() {
        let p = accepted(parse(&json(INSTALL_IOS)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("Liftoff".into()),
                campaign: Some("iOS_US_Puzzle_Q2".into()),
                adgroup: Some("Lookalike 1% + Payers".into()),
                ad: Some("playable_v7".into()),
            }
        );
        assert_eq!(
            p.ids,
            Identifiers {
                user_id: Some("cust-88213".into()),
                idfa: Some("6D92078A-8246-4BA4-AE5B-76104861E7DC".into()),
                idfv: Some("E2C1B0A9-8F7E-4D6C-B5A4-93827160F5E4".into()),
                ..Identifiers::default()
            }
        );
        assert_eq!(p.kind, EventKind::Install, "__INSTALL__");
        assert_eq!(p.event_name.as_deref(), Some("__INSTALL__"));
        assert_eq!(
            p.event_time,
            Utc.timestamp_millis_opt(1_714_665_600_250).single()
        );
        assert_eq!(
            p.ip.as_deref(),
            Some("203.0.113.77"),
            "ip is null, event_ip stands in"
        );
    }

    #[test]
    fn is_organic_flag_is_organic_whatever_network_says() {
        assert_organic!(parse(&query(ORGANIC_FLAG)));
        for flag in [
            json!("1"),
            json!(1),
            json!(true),
            json!("true"),
            json!("TRUE"),
            json!(" True "),
        ] {
            let fields = with(json(INSTALL_IOS), "is_organic", flag.clone());
            assert_organic!(parse(&fields), "is_organic={flag}");
        }
        for flag in [
            json!("0"),
            json!(0),
            json!(false),
            json!("false"),
            json!("yes"),
            json!(null),
        ] {
            let fields = with(json(INSTALL_IOS), "is_organic", flag.clone());
            accepted(parse(&fields));
        }
    }

    #[test]
    fn organic_network_is_organic_in_any_letter_case() {
        assert_organic!(parse(&json(ORGANIC)));
        for network in ["Organic", "organic", "ORGANIC"] {
            let fields = with(query(INSTALL_ANDROID), "network", network);
            assert_organic!(parse(&fields), "{network}");
        }
    }

    #[test]
    fn names_that_only_contain_organic_are_attributed() {
        let p = accepted(parse(&with(
            query(INSTALL_ANDROID),
            "network",
            "Facebook Organic",
        )));
        assert_eq!(p.segments.source.as_deref(), Some("Facebook Organic"));
        accepted(parse(&with(
            query(INSTALL_ANDROID),
            "gid",
            "organic_interests",
        )));
    }

    #[test]
    fn install_without_segments_is_organic() {
        let fields = json(
            r#"{"network":"","campaign":null,"is_organic":false,"idfv":"E2C1B0A9-8F7E-4D6C-B5A4-93827160F5E4"}"#,
        );
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
    fn unfilled_macros_in_a_query_count_as_absent() {
        let p = accepted(parse(&query(RAW_MACROS)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("Mintegral".into()),
                ..Segments::default()
            },
            "{{CID}}, %7B%7Bx%7D%7D, %24%7BGID%7D, {{pcrn?Mintegral}}"
        );
        assert_eq!(
            p.ids,
            Identifiers {
                idfa: Some("0C1D2E3F-4A5B-4C6D-8E7F-9A0B1C2D3E4F".into()),
                ..Identifiers::default()
            },
            "double-encoded and lower-case %7b..%7d user ids are absent too"
        );
        assert_eq!((p.event_name, p.event_time, p.ip), (None, None, None));
    }

    #[test]
    fn unfilled_macros_in_json_count_as_absent_but_text_around_one_is_kept() {
        let p = accepted(parse(&json(RAW_MACROS_JSON)));
        assert_eq!(p.segments.campaign.as_deref(), Some("Spring_{x}"));
        assert_eq!(p.segments.adgroup, None, "{{{{gid}}}}");
        assert_eq!(p.segments.ad, None, "the JSON string %7Bcreative_id%7D");
        assert_eq!(p.ids.user_id, None, "${{custom_user_id}}");
        assert_eq!(p.ids.idfv, None);
    }

    #[test]
    fn all_zero_advertising_id_counts_as_absent() {
        let fields = with(
            json(INSTALL_IOS),
            "idfa",
            "00000000-0000-0000-0000-000000000000",
        );
        let p = accepted(parse(&fields));
        assert_eq!(p.ids.idfa, None);
        assert!(p.ids.idfv.is_some());
    }

    #[test]
    fn over_long_mapped_value_is_invalid() {
        let fields = with(json(INSTALL_IOS), "custom_user_id", long_text(257));
        assert_eq!(
            parse(&fields),
            Verdict::Invalid(Invalid::TooLong {
                field: "user_id",
                key: "custom_user_id".into()
            })
        );
    }

    #[test]
    fn over_long_unmapped_value_is_accepted() {
        let fields = with(
            json(INSTALL_IOS),
            "click_url",
            format!("https://example.sng.link/?{}", long_text(2000)),
        );
        accepted(parse(&with(fields, "site", long_text(300))));
    }

    #[test]
    fn organic_wins_over_an_over_long_value() {
        assert_organic!(parse(&with(json(ORGANIC), "gid", long_text(300))));
    }

    #[test]
    fn in_app_event_is_stored_as_event() {
        let p = accepted(parse(&query(PURCHASE_EVENT)));
        assert_eq!(
            (p.kind, p.event_name.as_deref()),
            (EventKind::Event, Some("purchase"))
        );
        assert_eq!(p.event_time, Utc.timestamp_opt(1_714_752_000, 0).single());
    }

    #[test]
    fn cid_wins_over_campaign_and_appboy_id_over_custom_user_id() {
        let fields = with(json(INSTALL_IOS), "cid", "From CID");
        let fields = with(fields, "appboyUserID", "braze-1");
        let p = accepted(parse(&fields));
        assert_eq!(p.segments.campaign.as_deref(), Some("From CID"));
        assert_eq!(p.ids.user_id.as_deref(), Some("braze-1"));
    }

    #[test]
    fn payload_without_singular_keys_is_invalid() {
        let expected = Verdict::Invalid(Invalid::NoPartnerFields(PartnerId::Singular));
        assert_eq!(parse(&json(UNRELATED)), expected);
        assert_eq!(parse(&Fields::new()), expected);
    }

    #[test]
    fn query_template_uses_the_upper_case_macro_of_each_key() {
        assert_template(QUERY_TEMPLATE, parse, &[]);
        for (key, value) in query(QUERY_TEMPLATE) {
            let name = if key == "ip" {
                "ATTRIBUTION_IP".to_owned()
            } else {
                key.to_uppercase()
            };
            assert_eq!(value, format!("{{{name}}}"));
        }
    }

    #[test]
    fn ids_get_their_canonical_letter_case() {
        let fields = with(
            json(INSTALL_IOS),
            "idfa",
            "6d92078a-8246-4ba4-ae5b-76104861e7dc",
        );
        let fields = with(fields, "idfv", "e2c1b0a9-8f7e-4d6c-b5a4-93827160f5e4");
        let p = accepted(parse(&fields));
        assert_eq!(
            (p.ids.idfa.as_deref(), p.ids.idfv.as_deref()),
            (
                Some("6D92078A-8246-4BA4-AE5B-76104861E7DC"),
                Some("E2C1B0A9-8F7E-4D6C-B5A4-93827160F5E4")
            )
        );
        assert_eq!(p.ids.user_id.as_deref(), Some("cust-88213"));
        let fields = with(
            query(INSTALL_ANDROID),
            "aifa",
            "38400000-8CF0-11BD-B23E-10B96E40000D",
        );
        let p = accepted(parse(&with(fields, "andi", "9774D56D682E549C")));
        assert_eq!(
            (p.ids.google_aid.as_deref(), p.ids.android_id.as_deref()),
            (
                Some("38400000-8cf0-11bd-b23e-10b96e40000d"),
                Some("9774D56D682E549C")
            )
        );
    }

    #[test]
    fn start_is_an_install_in_any_letter_case_unless_is_reengagement_is_set() {
        let p = accepted(parse(&json(INSTALL_START)));
        assert_eq!(
            (p.kind, p.event_name.as_deref()),
            (EventKind::Install, Some("__START__"))
        );
        assert_eq!(
            p.segments,
            Segments {
                source: Some("AppLovin".into()),
                campaign: Some("iOS_US_Puzzle_Q3".into()),
                adgroup: Some("Rewarded US".into()),
                ad: Some("playable_v9".into()),
            },
            "an empty cid leaves campaign to `campaign`"
        );
        assert_eq!(p.event_time, Utc.timestamp_opt(1_717_236_000, 0).single());
        for name in ["__start__", "__Start__"] {
            let p = accepted(parse(&with(json(INSTALL_START), "event_name", name)));
            assert_eq!(p.kind, EventKind::Install, "{name}");
        }
        for flag in [
            json!(0),
            json!("0"),
            json!(false),
            json!("false"),
            json!(null),
        ] {
            let fields = with(json(INSTALL_START), "is_reengagement", flag.clone());
            assert_eq!(
                accepted(parse(&fields)).kind,
                EventKind::Install,
                "is_reengagement={flag}"
            );
        }
        let p = accepted(parse(&json(REENGAGEMENT_START)));
        assert_eq!(
            (p.kind, p.event_name.as_deref()),
            (EventKind::Event, Some("__START__"))
        );
        for flag in [json!(1), json!(true), json!("true"), json!(" TRUE ")] {
            let fields = with(json(INSTALL_START), "is_reengagement", flag.clone());
            assert_eq!(
                accepted(parse(&fields)).kind,
                EventKind::Event,
                "is_reengagement={flag}"
            );
        }
    }

    #[test]
    fn braze_id_is_read_from_a_json_string_of_arguments_before_custom_user_id() {
        let p = accepted(parse(&json(BRAZE_IN_ARGUMENTS)));
        assert_eq!(
            p.ids.user_id.as_deref(),
            Some("1c9e7a52-3f0b-4d86-9a21-6b4e8d0c2f17")
        );
        assert_eq!(p.kind, EventKind::Install);
    }

    #[test]
    fn braze_id_is_read_from_an_event_arguments_object() {
        let p = accepted(parse(&json(BRAZE_IN_EVENT_ARGUMENTS)));
        assert_eq!(
            p.ids.user_id.as_deref(),
            Some("1c9e7a52-3f0b-4d86-9a21-6b4e8d0c2f17")
        );
        assert_eq!(
            (p.kind, p.event_name.as_deref()),
            (EventKind::Event, Some("level_complete"))
        );
    }

    #[test]
    fn top_level_braze_id_wins_and_unusable_arguments_are_ignored() {
        let fields = with(json(BRAZE_IN_ARGUMENTS), "appboyUserID", "braze-top");
        assert_eq!(
            accepted(parse(&fields)).ids.user_id.as_deref(),
            Some("braze-top")
        );
        for arguments in [
            json!("{not json"),
            json!("[1,2]"),
            json!(["x"]),
            json!({"appboyUserID": "{APPBOYUSERID}"}),
            json!({"appboyUserID": null}),
            json!({"braze": "x"}),
        ] {
            let fields = with(json(BRAZE_IN_ARGUMENTS), "arguments", arguments.clone());
            assert_eq!(
                accepted(parse(&fields)).ids.user_id.as_deref(),
                Some("cust-70021"),
                "arguments={arguments}"
            );
        }
        let fields = with(
            json(BRAZE_IN_ARGUMENTS),
            "arguments",
            json!({ "appboyUserID": long_text(300) }),
        );
        assert_eq!(
            parse(&fields),
            Verdict::Invalid(Invalid::TooLong {
                field: "user_id",
                key: "arguments.appboyUserID".into()
            })
        );
    }

    proptest! {
        #[test]
        fn verdict_does_not_depend_on_key_order(fields in arb_query(template_keys(QUERY_TEMPLATE))) {
            prop_assert_eq!(parse(&fields), parse(&reversed(&fields)));
        }

        #[test]
        fn arbitrary_json_objects_never_panic_and_ignore_key_order(fields in arb_object(template_keys(QUERY_TEMPLATE))) {
            prop_assert_eq!(parse(&fields), parse(&reversed(&fields)));
        }

        #[test]
        fn arbitrary_query_strings_never_panic(bytes in any::<Vec<u8>>()) {
            let _ = parse(&decode_form(&bytes));
        }
    }
}
