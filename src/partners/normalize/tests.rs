//! Unit tests of the value rules.

#[test]
fn event_times_outside_what_both_stores_hold_are_absent() {
    assert!(parse_time("99999999999999").is_some(), "ms in range");
    assert!(parse_time("999999999999999").is_none(), "year beyond 9999");
    assert!(parse_time("1969-12-31 23:59:59").is_none());
    assert!(parse_time("2024-05-02 10:15:31.000").is_some());
}

use chrono::TimeZone;
use proptest::prelude::*;
use serde_json::json;

use super::*;

#[test]
fn values_become_trimmed_text() {
    assert_eq!(
        text(&json!("  Vungle Inc. ")).as_deref(),
        Some("Vungle Inc.")
    );
    assert_eq!(text(&json!(536206)).as_deref(), Some("536206"));
    assert_eq!(text(&json!(-1.5)).as_deref(), Some("-1.5"));
    assert_eq!(text(&json!(true)).as_deref(), Some("true"));
    assert_eq!(text(&json!(false)).as_deref(), Some("false"));
    assert_eq!(text(&json!(null)), None);
    assert_eq!(text(&json!({"a": 1})), None);
    assert_eq!(text(&json!(["a"])), None);
    assert_eq!(text(&json!(" \t\n")), None);
}

#[test]
fn json_strings_are_never_url_decoded() {
    assert_eq!(clean("50% off + free ship"), Some("50% off + free ship"));
    assert_eq!(clean("a%26b"), Some("a%26b"));
}

#[test]
fn whole_template_tokens_are_absent() {
    for token in [
        "{advertiser_sub_ad}",
        "{CID}",
        "{pcrn?Vungle}",
        "{NETWORK=Network Name}",
        "{ad-set.name:1}",
        "{}",
        "{{campaign_name}}",
        "{{ campaign.name | default: 'x' }}",
        "{{{triple}}}",
        "${(name)!}",
        "${x}",
        "  {padded}  ",
    ] {
        assert_eq!(clean(token), None, "{token:?} should be absent");
    }
}

#[test]
fn percent_encoded_tokens_are_absent_after_one_extra_decode() {
    for token in [
        "%7Bcreative_id%7D",
        "%7bcreative_id%7d",
        "%7B%7Bx%7D%7D",
        "$%7Bx%7D",
        "%24%7Bx%7D",
        "%7Bad%20name%7D",
    ] {
        assert_eq!(clean(token), None, "{token:?} should be absent");
    }
    // Only one extra decode: a triple-encoded token is just text.
    assert_eq!(clean("%257Bx%257D"), Some("%257Bx%257D"));
}

#[test]
fn text_that_merely_contains_a_token_is_kept() {
    for kept in [
        "spring_{x}",
        "{x}_spring",
        "{a}{b}",
        "{{a}} and {{b}}",
        "{a/b}",
        "{x",
        "x}",
        "$x",
        "%7Bx",
        "{{x}",
    ] {
        assert_eq!(clean(kept), Some(kept), "{kept:?} should be kept");
    }
}

#[test]
fn all_zero_advertising_ids_are_recognised() {
    assert!(is_zero_ad_id("00000000-0000-0000-0000-000000000000"));
    assert!(is_zero_ad_id("0000"));
    assert!(!is_zero_ad_id("----"));
    assert!(!is_zero_ad_id("00000000-0000-0000-0000-000000000001"));
    assert!(!is_zero_ad_id(""));
}

#[test]
fn installs_and_reinstalls_are_installs_and_the_rest_events() {
    for name in [
        None,
        Some("install"),
        Some("Install"),
        Some("INSTALL"),
        Some("_install"),
        Some("reinstall"),
        Some("REINSTALL"),
    ] {
        assert_eq!(event_kind(name), EventKind::Install, "{name:?}");
    }
    for name in [
        Some("reattribution"),
        Some("event"),
        Some("af_purchase"),
        Some("OPEN"),
        Some("installed"),
        Some("session"),
    ] {
        assert_eq!(event_kind(name), EventKind::Event, "{name:?}");
    }
}

#[test]
fn event_times_parse_in_every_documented_shape() {
    let at = |ms: i64| Utc.timestamp_millis_opt(ms).single();
    assert_eq!(parse_time("1714665600"), at(1_714_665_600_000));
    assert_eq!(parse_time("1714665600123"), at(1_714_665_600_123));
    assert_eq!(parse_time("1714665600.5"), at(1_714_665_600_500));
    assert_eq!(parse_time("2024-05-02T16:00:00Z"), at(1_714_665_600_000));
    assert_eq!(
        parse_time("2024-05-02T18:00:00.250+02:00"),
        at(1_714_665_600_250)
    );
    assert_eq!(parse_time("2024-05-02 16:00:00"), at(1_714_665_600_000));
    assert_eq!(parse_time("2024-05-02 16:00:00.123"), at(1_714_665_600_123));
    assert_eq!(parse_time("2024-05-02 16:00:00 UTC"), at(1_714_665_600_000));
    assert_eq!(
        parse_time("2024-05-02 16:00:00+00:00"),
        at(1_714_665_600_000)
    );
    assert_eq!(parse_time("2024-05-02T16:00:00"), at(1_714_665_600_000));
    for bad in [
        "",
        "yesterday",
        "-5",
        "1e9",
        "99999999999999999999",
        "2024-13-40 99:00:00",
        "1714665600.x",
    ] {
        assert_eq!(parse_time(bad), None, "{bad:?}");
    }
}

#[test]
fn length_is_counted_in_characters_not_bytes() {
    let fields = Fields::new();
    let mut picker = Picker::new(&fields);
    let exactly = "é".repeat(MAX_VALUE_CHARS);
    assert_eq!(picker.check("source", "k", exactly.clone()), Some(exactly));
    assert_eq!(
        picker.check("source", "k", "é".repeat(MAX_VALUE_CHARS + 1)),
        None
    );
    assert_eq!(
        picker.too_long,
        Some(Invalid::TooLong {
            field: "source",
            key: "k".into()
        })
    );
}

#[test]
fn a_present_key_counts_even_when_its_value_is_absent() {
    let fields: Fields = serde_json::from_value(json!({"a": null, "b": "{b}"})).unwrap();
    let mut picker = Picker::new(&fields);
    assert_eq!(picker.value(&["a", "b"]), None);
    assert!(picker.seen);
    let mut picker = Picker::new(&fields);
    assert_eq!(picker.value(&["c"]), None);
    assert!(!picker.seen);
}

#[test]
fn paths_reach_into_nested_objects_only() {
    let fields: Fields = serde_json::from_value(json!({"u": {"aaid": "x"}, "s": "y"})).unwrap();
    let mut picker = Picker::with_paths(&fields);
    assert_eq!(picker.value(&["u.aaid"]).as_deref(), Some("x"));
    assert_eq!(picker.value(&["s.aaid", "u.idfa", "u"]), None);
}

/// From `fuzz/` (normalize, `fuzz/seeds/normalize/leap_second_9999`): chrono reads
/// `23:59:60` as a leap second and any run of whitespace between date and time. On
/// the last second of 9999 the time is kept (it is still 9999-12-31); as unix
/// milliseconds the same instant is in year 10000, so it is absent. No panic either way.
#[test]
fn fuzz_leap_second_at_the_end_of_9999() {
    let t = parse_time("9999-12-31\t\t23:59:60").expect("a leap second in 9999");
    assert_eq!(
        (t.year(), t.timestamp_subsec_nanos()),
        (9999, 1_000_000_000)
    );
    assert_eq!(parse_time(&t.timestamp_millis().to_string()), None);
}

proptest! {
    #[test]
    fn cleaning_is_idempotent(raw in testing::arb_text()) {
        if let Some(once) = clean(&raw) {
            prop_assert_eq!(clean(once), Some(once));
        }
    }

    #[test]
    fn cleaning_keeps_a_trimmed_substring_or_nothing(raw in any::<String>()) {
        if let Some(kept) = clean(&raw) {
            prop_assert_eq!(kept, raw.trim());
            prop_assert!(!kept.is_empty());
        }
    }

    #[test]
    fn time_parsing_never_panics(raw in any::<String>(), n in any::<u64>()) {
        let _ = parse_time(&raw);
        let _ = parse_time(&n.to_string());
        let _ = parse_time(&format!("{n}.{n}"));
    }
}
