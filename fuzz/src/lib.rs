//! What the fuzz targets share: feeding one input to a partner parser the way the
//! server does, and the properties that must hold whatever the input.

use chrono::{DateTime, Datelike, Utc};
use postback_gateway::domain::Postback;
use postback_gateway::partners::normalize::{
    self, clean, event_kind, is_template_token, is_zero_ad_id, parse_time, text, Picker,
    MAX_VALUE_CHARS,
};
use postback_gateway::partners::{
    decode_form, decode_json, payload_hash, sanitize, Fields, PartnerId, Verdict,
};
use serde_json::Value;

/// One input to one partner, both as the query string / form body and as a JSON body
/// (whether or not the partner accepts that format: the parser must cope with any
/// fields). Each decoding is sanitised, parsed and hashed as `ingest` does.
pub fn partner(partner: PartnerId, data: &[u8]) {
    check_fields(partner, decode_form(data));
    if let Ok(fields) = decode_json(data) {
        check_fields(partner, fields);
    }
}

fn check_fields(partner: PartnerId, mut fields: Fields) {
    sanitize(&mut fields);
    assert_no_nul(&fields);
    let once = fields.clone();
    sanitize(&mut fields);
    assert_eq!(fields, once, "sanitize is idempotent");

    let verdict = partner.parse(&fields);
    assert_eq!(partner.parse(&fields), verdict, "parse is deterministic");
    if let Verdict::Accepted(postback) = &verdict {
        check_postback(postback);
    }

    let hash = payload_hash(partner, &fields);
    assert!(
        hash.len() == "sha256:".len() + 64 && hash.starts_with("sha256:"),
        "{hash}"
    );
}

/// An accepted postback: attributed, identified, and every stored value normalised.
fn check_postback(p: &Postback) {
    assert!(!p.segments.is_empty(), "accepted without segments");
    assert!(!p.ids.is_empty(), "accepted without an identifier");
    let canonical = [
        &p.event_name,
        &p.segments.source,
        &p.segments.campaign,
        &p.segments.adgroup,
        &p.segments.ad,
        &p.ids.user_id,
        &p.ids.idfa,
        &p.ids.idfv,
        &p.ids.google_aid,
        &p.ids.android_id,
        &p.ids.partner_device_id,
    ];
    for v in canonical.into_iter().flatten() {
        assert!(v.chars().count() <= MAX_VALUE_CHARS, "over the cap: {v:?}");
        assert_eq!(clean(v), Some(v.as_str()), "not a clean value: {v:?}");
        assert!(!v.contains('\0'), "NUL in {v:?}");
    }
    for v in [&p.ip, &p.user_agent, &p.partner_event_id]
        .into_iter()
        .flatten()
    {
        assert_eq!(clean(v), Some(v.as_str()), "not a clean value: {v:?}");
    }
    for id in [&p.ids.idfa, &p.ids.google_aid].into_iter().flatten() {
        assert!(!is_zero_ad_id(id), "all-zero ad id {id:?}");
    }
    if let Some(t) = p.event_time {
        assert_time_in_range(t);
    }
}

fn assert_no_nul(fields: &Fields) {
    fn value(v: &Value) {
        match v {
            Value::String(s) => assert!(!s.contains('\0'), "NUL left in {s:?}"),
            Value::Array(a) => a.iter().for_each(value),
            Value::Object(m) => assert_no_nul(m),
            _ => {}
        }
    }
    for (k, v) in fields {
        assert!(!k.contains('\0'), "NUL left in key {k:?}");
        value(v);
    }
}

fn assert_time_in_range(t: DateTime<Utc>) {
    assert!((1970..=9999).contains(&t.year()), "{t} out of range");
}

/// Value normalisation on arbitrary text (lossily decoded from the input).
pub fn normalize(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let raw = raw.as_ref();

    // clean: absent, or the non-empty trimmed input; normalising twice equals once.
    match clean(raw) {
        Some(kept) => {
            assert_eq!(kept, raw.trim());
            assert!(!kept.is_empty());
            assert!(!is_template_token(kept), "kept a token: {kept:?}");
            assert_eq!(clean(kept), Some(kept), "clean is idempotent");
        }
        None => assert_eq!(clean(raw.trim()), None, "clean is idempotent"),
    }
    assert_eq!(
        text(&Value::String(raw.to_owned())).as_deref(),
        clean(raw),
        "a JSON string is its cleaned text"
    );
    if is_template_token(raw) {
        assert!(raw.starts_with('{') || raw.starts_with("${"), "{raw:?}");
        assert_eq!(clean(raw), None);
    }
    if is_zero_ad_id(raw) {
        assert!(raw.chars().all(|c| c == '0' || c == '-'));
    }
    let _ = event_kind(Some(raw));
    let _ = normalize::is_marker(raw, &["organic", "unattributed"]);

    // parse_time: in range, blind to surrounding space, and round-trips through the
    // RFC 3339 and unix-milliseconds shapes it accepts.
    let time = parse_time(raw);
    assert_eq!(parse_time(&format!(" {raw}\t")), time, "trimmed");
    if let Some(t) = time {
        assert_time_in_range(t);
        assert_eq!(parse_time(&t.to_rfc3339()), Some(t), "RFC 3339 round trip");
        // A leap second (`23:59:60`, which chrono accepts) is one more second in unix
        // time: on 9999-12-31 that is year 10000, which is rightly absent.
        let ms = t.timestamp_millis();
        if ms > 100_000_000_000 {
            let truncated =
                DateTime::from_timestamp_millis(ms).filter(|t| (1970..=9999).contains(&t.year()));
            assert_eq!(parse_time(&ms.to_string()), truncated, "unix ms round trip");
        }
    }

    // The picker over one field holding the input: the cap, and the same text.
    let mut fields = Fields::new();
    fields.insert("k".into(), Value::String(raw.to_owned()));
    let mut picker = Picker::new(&fields);
    let canonical = picker.canonical("source", &["k"]);
    match clean(raw) {
        Some(v) if v.chars().count() <= MAX_VALUE_CHARS => {
            assert_eq!(canonical.as_deref(), Some(v))
        }
        _ => assert_eq!(canonical, None),
    }
    assert_eq!(picker.time(&["k"]), time);

    // Any JSON value the input happens to be: text() never panics, strings clean.
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let t = text(&value);
        if let (Value::String(s), Some(t)) = (&value, &t) {
            assert_eq!(Some(t.as_str()), clean(s));
        }
        // Dotted paths into whatever object it is.
        if let Value::Object(map) = &value {
            const PATHS: &[&str] = &["", ".", "a", "a.", ".a", "a.b", "a..b", "a.b.c", "k"];
            let mut picker = Picker::with_paths(map);
            let _ = picker.value(PATHS);
            let _ = picker.time(PATHS);
            let _ = picker.is_marked(PATHS, &["organic"]);
            if let Some(v) = picker.canonical("source", PATHS) {
                assert!(v.chars().count() <= MAX_VALUE_CHARS);
            }
            if let Some(v) = picker.ad_id("idfa", PATHS) {
                assert!(!is_zero_ad_id(&v));
            }
        }
    }
}
