//! Adjust, partners.md §3: a GET callback whose keys carry Adjust placeholders; Adjust sends
//! an empty value where it has nothing. `tracker_name` (`network::campaign::adgroup::creative`)
//! fills only the segments its `*_name` keys left absent. Organic: `network_name` or
//! `tracker_name` is `Organic`. No unique id: deduped by payload hash.

use super::normalize::{clean, event_kind, Picker};
use super::{Fields, Parser, PartnerId, Verdict};
use crate::domain::{Identifiers, Postback, Segments};

/// Query string to paste into Adjust's callback URL: each key carries the placeholder of
/// its name. `braze_device_id` is a session partner parameter set by the app, not a built-in
/// placeholder; if Adjust leaves `{braze_device_id}` unfilled it simply counts as absent.
pub const QUERY_TEMPLATE: &str = concat!(
    "activity_kind={activity_kind}",
    "&network_name={network_name}",
    "&campaign_name={campaign_name}",
    "&adgroup_name={adgroup_name}",
    "&creative_name={creative_name}",
    "&tracker_name={tracker_name}",
    "&braze_device_id={braze_device_id}",
    "&external_id={external_id}",
    "&idfa={idfa}",
    "&idfv={idfv}",
    "&gps_adid={gps_adid}",
    "&android_id={android_id}",
    "&adid={adid}",
    "&event_name={event_name}",
    "&installed_at={installed_at}",
    "&created_at={created_at}",
    "&ip_address={ip_address}",
    "&user_agent={user_agent}",
);

/// The parser side of Adjust (its methods are in `domain/partner_id.rs`).
pub const PARSER: Parser = Parser {
    volatile_fields: &[],
    query_template: Some(QUERY_TEMPLATE),
    parse,
};

pub fn parse(fields: &Fields) -> Verdict {
    let mut p = Picker::new(fields);
    p.organic_marker(&["network_name", "tracker_name"], &["organic"]);
    let tracker = p.value(&["tracker_name"]).unwrap_or_default();
    // At most four levels; anything after a fourth `::` stays in the creative.
    let mut levels: [Option<String>; 4] = Default::default();
    for (slot, level) in levels.iter_mut().zip(tracker.splitn(4, "::")) {
        *slot = clean(level).map(str::to_owned);
    }
    let [source, campaign, adgroup, ad] = levels;
    let segments = Segments {
        source: segment(&mut p, "source", "network_name", source),
        campaign: segment(&mut p, "campaign", "campaign_name", campaign),
        adgroup: segment(&mut p, "adgroup", "adgroup_name", adgroup),
        ad: segment(&mut p, "ad", "creative_name", ad),
    };
    // `activity_kind` first: it is what tells installs from events (`event_name` only
    // names in-app events), so it is also the stored event name when present.
    let event_name = p.canonical("event_name", &["activity_kind", "event_name"]);
    let postback = Postback {
        kind: event_kind(event_name.as_deref()),
        event_name,
        segments,
        ids: Identifiers {
            user_id: p.canonical("user_id", &["braze_device_id", "external_id"]),
            idfa: p.ad_id("idfa", &["idfa"]),
            idfv: p.canonical("idfv", &["idfv"]),
            google_aid: p.ad_id("google_aid", &["gps_adid"]),
            android_id: p.canonical("android_id", &["android_id"]),
            partner_device_id: p.canonical("partner_device_id", &["adid"]),
        },
        event_time: p.time(&["installed_at", "created_at"]),
        ip: p.value(&["ip_address"]),
        user_agent: p.value(&["user_agent"]),
        partner_event_id: None,
    };
    p.verdict(PartnerId::Adjust, postback)
}

/// The `*_name` value, else the matching `tracker_name` level (capped like any segment).
fn segment(
    p: &mut Picker,
    field: &'static str,
    key: &'static str,
    level: Option<String>,
) -> Option<String> {
    p.canonical(field, &[key])
        .or_else(|| level.and_then(|v| p.check(field, "tracker_name", v)))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;
    use crate::domain::EventKind;
    use crate::partners::normalize::testing::*;
    use crate::partners::{decode_form, Invalid};

    const DOCS_EXAMPLE: &str = include_str!("../../tests/fixtures/adjust/docs_example.query");
    const INSTALL_ANDROID: &str = include_str!("../../tests/fixtures/adjust/install_android.query");
    const REINSTALL_IOS: &str = include_str!("../../tests/fixtures/adjust/reinstall_ios.query");
    const TRACKER_ONLY: &str = include_str!("../../tests/fixtures/adjust/tracker_only.query");
    const TRACKER_PARTIAL: &str = include_str!("../../tests/fixtures/adjust/tracker_partial.query");
    const ORGANIC: &str = include_str!("../../tests/fixtures/adjust/organic.query");
    const PURCHASE_EVENT: &str = include_str!("../../tests/fixtures/adjust/purchase_event.query");
    const RAW_MACROS: &str = include_str!("../../tests/fixtures/adjust/raw_macros.query");
    const NO_IDENTIFIER: &str = include_str!("../../tests/fixtures/adjust/no_identifier.query");
    const UPPER_CASE_GPS_ADID: &str =
        include_str!("../../tests/fixtures/adjust/install_android_upper_case_gps_adid.query");
    const UNRELATED: &str = include_str!("../../tests/fixtures/unrelated/affiliate.query");

    #[test]
    fn docs_example_keeps_utf8_plus_and_ampersand_and_drops_the_unfilled_adgroup() {
        let p = accepted(parse(&query(DOCS_EXAMPLE)));
        assert_eq!(p.segments.source.as_deref(), Some("Moloco"));
        assert_eq!(p.segments.campaign.as_deref(), Some("Frühling 2024 – DE"));
        assert_eq!(p.segments.adgroup, None);
        assert_eq!(p.segments.ad.as_deref(), Some("Video+&+Static"));
        assert_eq!(
            p.ids.google_aid.as_deref(),
            Some("7e6d5c4b-3a29-4817-9f6e-5d4c3b2a1908")
        );
        assert_eq!(
            p.ids.partner_device_id.as_deref(),
            Some("5d6e7f8091a2b3c4d5e6f708192a3b4c")
        );
        assert_eq!(p.kind, EventKind::Install);
    }

    #[test]
    fn attributed_android_install_maps_every_field() {
        let p = accepted(parse(&query(INSTALL_ANDROID)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("Unity Ads".into()),
                campaign: Some("Summer Promo (US)".into()),
                adgroup: Some("rewarded_video".into()),
                ad: Some("endcard_v3".into()),
            }
        );
        assert_eq!(
            p.ids,
            Identifiers {
                user_id: Some("3f1e2d4c-5b6a-4978-8a1b-2c3d4e5f6a7b".into()),
                idfa: None,
                idfv: None,
                google_aid: Some("38400000-8cf0-11bd-b23e-10b96e40000d".into()),
                android_id: Some("9774d56d682e549c".into()),
                partner_device_id: Some("9b3a1c5d7e2f4a6b8c0d1e3f5a7b9c1d".into()),
            }
        );
        assert_eq!(p.kind, EventKind::Install);
        assert_eq!(p.event_name.as_deref(), Some("install"));
        assert_eq!(p.event_time, Utc.timestamp_opt(1_714_665_600, 0).single());
        assert_eq!(p.ip.as_deref(), Some("198.51.100.7"));
        assert_eq!(
            p.user_agent.as_deref(),
            Some("Dalvik/2.1.0 (Linux; U; Android 13; SM-S911B Build/TP1A.220624.014)")
        );
        assert_eq!(p.partner_event_id, None);
    }

    #[test]
    fn attributed_ios_reinstall_maps_every_field() {
        let p = accepted(parse(&query(REINSTALL_IOS)));
        assert_eq!(p.kind, EventKind::Install);
        assert_eq!(p.event_name.as_deref(), Some("reinstall"));
        assert_eq!(p.segments.source.as_deref(), Some("Apple Search Ads"));
        assert_eq!(
            p.segments.ad, None,
            "empty creative_name and empty 4th tracker level"
        );
        assert_eq!(
            p.ids,
            Identifiers {
                user_id: Some("cust-000417".into()),
                idfa: Some("6D92078A-8246-4BA4-AE5B-76104861E7DC".into()),
                idfv: Some("E2C1B0A9-8F7E-4D6C-B5A4-93827160F5E4".into()),
                google_aid: None,
                android_id: None,
                partner_device_id: Some("0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f".into()),
            }
        );
        assert_eq!(p.ip.as_deref(), Some("2001:db8::1"));
        assert_eq!(p.user_agent, None);
    }

    #[test]
    fn tracker_name_fills_every_segment_the_name_keys_left_empty() {
        let p = accepted(parse(&query(TRACKER_ONLY)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("Network1".into()),
                campaign: Some("Christmas".into()),
                adgroup: Some("Reindeers".into()),
                ad: Some("320x70_en".into()),
            }
        );
    }

    #[test]
    fn tracker_name_fills_only_the_absent_segments() {
        let p = accepted(parse(&query(TRACKER_PARTIAL)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("Moloco".into()),
                campaign: Some("Spring".into()),
                adgroup: Some("Broad EN".into()),
                ad: None,
            }
        );
    }

    #[test]
    fn short_or_unfilled_tracker_levels_stay_absent() {
        let base = query("activity_kind=install&adid=5d6e7f8091a2b3c4d5e6f708192a3b4c");
        let p = accepted(parse(&with(
            base.clone(),
            "tracker_name",
            "Network1::{campaign}",
        )));
        assert_eq!(p.segments.source.as_deref(), Some("Network1"));
        assert_eq!(
            (p.segments.campaign, p.segments.adgroup, p.segments.ad),
            (None, None, None)
        );
        let p = accepted(parse(&with(base.clone(), "tracker_name", "a::b::c::d::e")));
        assert_eq!(p.segments.ad.as_deref(), Some("d::e"));
        assert_organic!(parse(&with(base, "tracker_name", ":: :: ::")));
    }

    #[test]
    fn organic_network_or_tracker_is_organic_in_any_letter_case() {
        assert_organic!(parse(&query(ORGANIC)));
        for key in ["network_name", "tracker_name"] {
            for value in ["Organic", "organic", "ORGANIC"] {
                let fields = with(query(INSTALL_ANDROID), key, value);
                assert_organic!(parse(&fields), "{key}={value}");
            }
        }
    }

    #[test]
    fn names_that_only_contain_organic_are_attributed() {
        let p = accepted(parse(&with(
            query(INSTALL_ANDROID),
            "network_name",
            "Facebook Organic",
        )));
        assert_eq!(p.segments.source.as_deref(), Some("Facebook Organic"));
        accepted(parse(&with(
            query(INSTALL_ANDROID),
            "adgroup_name",
            "organic_interests",
        )));
        accepted(parse(&with(
            query(INSTALL_ANDROID),
            "tracker_name",
            "Organic::x::y::z",
        )));
    }

    #[test]
    fn install_without_segments_is_organic() {
        let fields = query("activity_kind=install&network_name=&campaign_name=&tracker_name=&gps_adid=38400000-8cf0-11bd-b23e-10b96e40000d");
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
    fn unfilled_placeholders_count_as_absent() {
        let p = accepted(parse(&query(RAW_MACROS)));
        assert_eq!(
            p.segments,
            Segments {
                source: Some("Liftoff".into()),
                ..Segments::default()
            },
            "{{x}}, %7B%7Bx%7D%7D, %24%7Bx%7D and an unfilled tracker_name"
        );
        assert_eq!(
            p.ids.user_id, None,
            "double-encoded %257Bx%257D, then plain {{x}}"
        );
        assert_eq!(p.ids.idfv, None);
        assert_eq!(p.ids.google_aid, None);
        assert_eq!(p.ids.partner_device_id, None, "lower-case %7b%7d");
        assert_eq!((p.event_time, p.ip), (None, None));
    }

    #[test]
    fn all_zero_advertising_id_counts_as_absent() {
        let fields = with(
            query(INSTALL_ANDROID),
            "gps_adid",
            "00000000-0000-0000-0000-000000000000",
        );
        assert_eq!(accepted(parse(&fields)).ids.google_aid, None);
        let fields = with(
            query(REINSTALL_IOS),
            "idfa",
            "00000000-0000-0000-0000-000000000000",
        );
        assert_eq!(accepted(parse(&fields)).ids.idfa, None);
    }

    #[test]
    fn over_long_mapped_value_is_invalid() {
        let fields = with(query(INSTALL_ANDROID), "creative_name", long_text(257));
        assert_eq!(
            parse(&fields),
            Verdict::Invalid(Invalid::TooLong {
                field: "ad",
                key: "creative_name".into()
            })
        );
    }

    #[test]
    fn over_long_tracker_level_is_invalid_only_when_used() {
        let tracker = format!("Network1::{}::c::d", long_text(300));
        assert_eq!(
            parse(&with(query(TRACKER_ONLY), "tracker_name", tracker.clone())),
            Verdict::Invalid(Invalid::TooLong {
                field: "campaign",
                key: "tracker_name".into()
            })
        );
        // Every `*_name` key is filled, so the long tracker level is never mapped.
        accepted(parse(&with(
            query(INSTALL_ANDROID),
            "tracker_name",
            tracker,
        )));
    }

    #[test]
    fn over_long_unmapped_value_is_accepted() {
        let fields = with(query(INSTALL_ANDROID), "deeplink", long_text(2000));
        accepted(parse(&with(fields, "user_agent", long_text(400))));
    }

    #[test]
    fn organic_wins_over_an_over_long_value() {
        assert_organic!(parse(&with(
            query(ORGANIC),
            "campaign_name",
            long_text(300)
        )));
    }

    #[test]
    fn in_app_event_and_reattribution_are_stored_as_events() {
        let p = accepted(parse(&query(PURCHASE_EVENT)));
        assert_eq!(p.kind, EventKind::Event);
        assert_eq!(
            p.event_name.as_deref(),
            Some("event"),
            "activity_kind wins over event_name"
        );
        let p = accepted(parse(&with(
            query(INSTALL_ANDROID),
            "activity_kind",
            "reattribution",
        )));
        assert_eq!(p.kind, EventKind::Event);
        let mut fields = query(PURCHASE_EVENT);
        fields.remove("activity_kind");
        let p = accepted(parse(&fields));
        assert_eq!(
            (p.kind, p.event_name.as_deref()),
            (EventKind::Event, Some("purchase"))
        );
    }

    #[test]
    fn payload_without_adjust_keys_is_invalid() {
        let expected = Verdict::Invalid(Invalid::NoPartnerFields(PartnerId::Adjust));
        assert_eq!(parse(&query(UNRELATED)), expected);
        assert_eq!(parse(&Fields::new()), expected);
    }

    #[test]
    fn query_template_carries_each_key_s_own_placeholder() {
        assert_template(QUERY_TEMPLATE, parse, &[]);
        for (key, value) in query(QUERY_TEMPLATE) {
            assert_eq!(value, format!("{{{key}}}"));
        }
    }

    #[test]
    fn google_advertising_id_is_stored_lower_case_and_other_ids_keep_their_case() {
        let p = accepted(parse(&query(UPPER_CASE_GPS_ADID)));
        assert_eq!(
            p.ids,
            Identifiers {
                user_id: Some("B7c2E1d4-5a6b-4978-8a1b-2c3d4e5f6a7b".into()),
                google_aid: Some("7e6d5c4b-3a29-4817-9f6e-5d4c3b2a1908".into()),
                android_id: Some("9774D56D682E549C".into()),
                partner_device_id: Some("5D6E7F8091A2B3C4D5E6F708192A3B4C".into()),
                ..Identifiers::default()
            }
        );
        let fields = with(
            query(REINSTALL_IOS),
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
