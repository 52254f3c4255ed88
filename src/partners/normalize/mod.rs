//! Value normalisation shared by every partner (partners.md §1): value to trimmed text,
//! what counts as absent, the 256-character cap, install-or-event, event times, and the
//! [`Picker`] through which each parser reads its key table and reaches its verdict.

use std::borrow::Cow;

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use percent_encoding::percent_decode_str;
use serde_json::Value;

use super::{Fields, Invalid, Organic, PartnerId, Verdict};
use crate::domain::{EventKind, Postback};

/// Longest mapped (canonical) value accepted, in characters.
pub const MAX_VALUE_CHARS: usize = 256;

/// A plain value as trimmed text, or `None` when it counts as absent: JSON strings as sent,
/// numbers as serde_json writes them, booleans as `true`/`false`; null, objects and arrays
/// are absent, and so are empty strings and unfilled template tokens.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => clean(s).map(str::to_owned),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Trim `raw`; `None` if nothing is left or the whole value is an unfilled template token,
/// also after one extra percent-decode (a JSON `"%7Bx%7D"`, a double-encoded URL). That
/// decode is only a check: the value kept is the trimmed original.
pub fn clean(raw: &str) -> Option<&str> {
    let value = raw.trim();
    if value.is_empty() || is_template_token(value) {
        return None;
    }
    if value.contains('%')
        && is_template_token(percent_decode_str(value).decode_utf8_lossy().trim())
    {
        return None;
    }
    Some(value)
}

/// Whether the whole of `value` is `{name}`, `{{ ... }}` (any depth of braces) or `${...}`.
/// `name` is letters, digits, `_ . ? = : -` and spaces (`{pcrn?Vungle}`, `{NETWORK=X Y}`).
pub fn is_template_token(value: &str) -> bool {
    if let Some(inner) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        return !inner.contains(['{', '}']);
    }
    let opens = value.bytes().take_while(|&b| b == b'{').count();
    let closes = value.bytes().rev().take_while(|&b| b == b'}').count();
    if opens == 0 || opens != closes {
        return false;
    }
    // The runs of `{` and `}` cannot overlap, so this slice is in bounds.
    let inner = &value[opens..value.len() - closes];
    if opens == 1 {
        inner
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '?' | '=' | ':' | '-' | ' '))
    } else {
        !inner.contains(['{', '}'])
    }
}

/// An advertising id made only of zeros and dashes: what iOS and Android report when ad
/// tracking is limited, so it identifies nobody.
pub fn is_zero_ad_id(value: &str) -> bool {
    value.contains('0') && value.chars().all(|c| c == '0' || c == '-')
}

/// A nested object sent either as a JSON object or as a string holding one (AppsFlyer's
/// `custom_data`, Singular's event arguments); `None` for anything else, including a
/// string that does not parse.
pub fn embedded_object(value: &Value) -> Option<Cow<'_, Fields>> {
    match value {
        Value::Object(map) => Some(Cow::Borrowed(map)),
        Value::String(s) => {
            // Its escapes decode only here, after `sanitize` saw the delivery: a `\u0000`
            // in the string is a NUL now, so clean the document the same way.
            let mut map = serde_json::from_str::<Fields>(s).ok()?;
            super::sanitize(&mut map);
            Some(Cow::Owned(map))
        }
        _ => None,
    }
}

/// Case-insensitive comparison of a whole (already trimmed) value with organic markers.
pub fn is_marker(value: &str, markers: &[&str]) -> bool {
    markers.iter().any(|m| value.eq_ignore_ascii_case(m))
}

/// `Install` when the partner's event field is absent or names an install or reinstall
/// (`install`, `INSTALL`, `_install`, `reinstall`, Adjust's `activity_kind`); else `Event`.
/// Underscores around the name are ignored, so Kochava's `_install` and a `__INSTALL__`
/// style name both count.
pub fn event_kind(event_name: Option<&str>) -> EventKind {
    match event_name.map(|n| n.trim_matches('_')) {
        None => EventKind::Install,
        Some(n) if n.eq_ignore_ascii_case("install") || n.eq_ignore_ascii_case("reinstall") => {
            EventKind::Install
        }
        Some(_) => EventKind::Event,
    }
}

/// Integers above this are unix milliseconds (as seconds it would be the year 5138).
const MILLIS_ABOVE: u64 = 100_000_000_000;

/// An event time in any of the shapes partners send: unix seconds or milliseconds (with or
/// without a fraction), RFC 3339, or `YYYY-MM-DD HH:MM:SS[.fff]` read as UTC (a trailing
/// ` UTC` allowed).
/// Anything else is `None`: a bad time never rejects a postback.
pub fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    parse_time_shape(value).map(|(t, _)| t)
}

/// [`parse_time`], also saying which of the accepted shapes the value had.
pub fn parse_time_shape(value: &str) -> Option<(DateTime<Utc>, TimeShape)> {
    parse_any_time(value).filter(|(t, _)| (1970..=9999).contains(&t.year()))
}

/// The shapes of event time [`parse_time`] reads, for telling an operator how a time
/// was understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeShape {
    UnixSeconds,
    UnixMillis,
    Rfc3339,
    /// `YYYY-MM-DD HH:MM:SS[.fff]` (or with a `T`) without a zone, read as UTC.
    NaiveUtc,
}

impl std::fmt::Display for TimeShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeShape::UnixSeconds => "unix seconds",
            TimeShape::UnixMillis => "unix milliseconds",
            TimeShape::Rfc3339 => "RFC 3339",
            TimeShape::NaiveUtc => "a date and time without a zone, read as UTC",
        })
    }
}

/// Both stores must hold the time: SQLite's fixed-width text needs a four-digit year
/// and PostgreSQL rejects far-off years, so times outside 1970–9999 count as absent.
fn parse_any_time(value: &str) -> Option<(DateTime<Utc>, TimeShape)> {
    let value = value.trim();
    let value = value.strip_suffix(" UTC").unwrap_or(value);
    // (RFC 3339 allows years up to 9999 only; `parse_unix` can go far beyond.)
    if let Some(t) = parse_unix(value) {
        return Some(t);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some((t.with_timezone(&Utc), TimeShape::Rfc3339));
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
        .map(|t| (t.and_utc(), TimeShape::NaiveUtc))
}

fn parse_unix(value: &str) -> Option<(DateTime<Utc>, TimeShape)> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 15 || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    // Nanoseconds of one unit from the first nine fraction digits.
    let mut frac_nanos: u64 = 0;
    for (i, b) in fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .enumerate()
    {
        frac_nanos += u64::from(b - b'0') * 10u64.pow(8 - i as u32);
    }
    let (secs, nanos, shape) = if whole > MILLIS_ABOVE {
        (
            whole / 1000,
            (whole % 1000) * 1_000_000 + frac_nanos / 1000,
            TimeShape::UnixMillis,
        )
    } else {
        (whole, frac_nanos, TimeShape::UnixSeconds)
    };
    DateTime::from_timestamp(i64::try_from(secs).ok()?, u32::try_from(nanos).ok()?)
        .map(|t| (t, shape))
}

/// Reads one delivery through a partner's key table. Every key it is asked about counts
/// towards "the request carries some of the partner's keys" (present even when its value is
/// absent); the first organic marker found and over-long canonical values are remembered,
/// and [`Picker::verdict`] applies the outcome order of partners.md §1.
#[derive(Debug)]
pub struct Picker<'a> {
    fields: &'a Fields,
    /// Keys are `object.key` paths (Branch) rather than literal top-level names.
    paths: bool,
    seen: bool,
    organic: Option<Organic>,
    too_long: Option<Invalid>,
    /// What this delivery's reading looked at, kept only inside [`traced`].
    trace: Option<Box<Trace>>,
}

/// What a parser looked at while reading one delivery: recorded only inside
/// [`traced`] (the dry run and `check-url`), never on the ingest path. The verdict
/// is the same with or without it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    /// Keys are `object.key` paths into nested objects (Branch).
    pub paths: bool,
    /// Every key (or path) the parser asked for, present or not, in the order asked.
    pub read: Vec<String>,
    /// Per mapped field: the keys tried, in priority order, and the one that gave it.
    pub fields: Vec<FieldTrace>,
    /// Advertising ids skipped because they are all zeros: (field, key).
    pub zero_ad_ids: Vec<(&'static str, String)>,
    /// The event-time keys tried, in order, until one held a time.
    pub times: Vec<TimeTrace>,
    /// The postback as mapped, whatever the verdict (set by [`Picker::verdict`]).
    pub mapped: Option<Postback>,
}

/// How one mapped field (`source`, `idfa`, …) was looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTrace {
    pub field: &'static str,
    /// Keys tried, in priority order.
    pub tried: Vec<String>,
    /// The key whose value was taken.
    pub used: Option<String>,
}

/// One event-time key tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeTrace {
    pub key: String,
    /// Its value as text; `None` when absent (missing, empty or an unfilled macro).
    pub value: Option<String>,
    /// The time read from it and its shape; `None` when it is not a time we read.
    pub read: Option<(DateTime<Utc>, TimeShape)>,
}

thread_local! {
    /// Set while [`traced`] runs: pickers created meanwhile record a [`Trace`].
    static TRACING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The trace of the last picker that reached its verdict while tracing.
    static LAST_TRACE: std::cell::RefCell<Option<Trace>> = const { std::cell::RefCell::new(None) };
}

/// Run `read` (which parses a delivery) and return what the parser looked at. Parsers
/// are synchronous and create one [`Picker`] per delivery, so a thread-local flag is
/// enough to reach it without changing any parser. `None` when no parser ran.
pub fn traced<T>(read: impl FnOnce() -> T) -> (T, Option<Trace>) {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            TRACING.with(|t| t.set(self.0));
        }
    }
    let _reset = Reset(TRACING.with(|t| t.replace(true)));
    LAST_TRACE.with(|t| t.borrow_mut().take());
    let out = read();
    (out, LAST_TRACE.with(|t| t.borrow_mut().take()))
}

impl<'a> Picker<'a> {
    /// Keys are top-level names, compared exactly.
    pub fn new(fields: &'a Fields) -> Self {
        Self {
            fields,
            paths: false,
            seen: false,
            organic: None,
            too_long: None,
            trace: TRACING.with(|t| t.get()).then(Box::default),
        }
    }

    /// Keys are dot-separated paths into nested objects (`user_data.aaid`).
    pub fn with_paths(fields: &'a Fields) -> Self {
        let mut picker = Self::new(fields);
        picker.paths = true;
        if let Some(trace) = &mut picker.trace {
            trace.paths = true;
        }
        picker
    }

    /// The raw value at `key`, if the key is there at all (even as `null`).
    pub fn raw(&mut self, key: &str) -> Option<&'a Value> {
        let value = value_at(self.fields, key, self.paths);
        self.seen |= value.is_some();
        if let Some(trace) = &mut self.trace {
            if !trace.read.iter().any(|k| k == key) {
                trace.read.push(key.to_owned());
            }
        }
        value
    }

    /// Note in the trace that `field` was looked for in `keys`.
    fn trace_field(&mut self, field: &'static str, keys: &[&'static str]) {
        if let Some(trace) = &mut self.trace {
            trace.fields.push(FieldTrace {
                field,
                tried: keys.iter().map(|k| (*k).to_owned()).collect(),
                used: None,
            });
        }
    }

    /// The first of `keys` (priority order) that is present and not absent, with its key.
    fn first(
        &mut self,
        keys: &[&'static str],
        keep: fn(&str) -> bool,
    ) -> Option<(&'static str, String)> {
        keys.iter().find_map(|&key| {
            self.raw(key)
                .and_then(text)
                .filter(|v| keep(v))
                .map(|v| (key, v))
        })
    }

    /// A value that is not a canonical dimension (ip, user agent, dedupe id): no length cap.
    pub fn value(&mut self, keys: &[&'static str]) -> Option<String> {
        self.first(keys, |_| true).map(|(_, v)| v)
    }

    /// A canonical value; over [`MAX_VALUE_CHARS`] it is remembered as `Invalid::TooLong`.
    pub fn canonical(&mut self, field: &'static str, keys: &[&'static str]) -> Option<String> {
        self.trace_field(field, keys);
        let (key, value) = self.first(keys, |_| true)?;
        self.check(field, key, value)
    }

    /// An advertising id (IDFA, Google advertising id): all-zero ids count as absent.
    pub fn ad_id(&mut self, field: &'static str, keys: &[&'static str]) -> Option<String> {
        self.trace_field(field, keys);
        if self.trace.is_some() {
            for &key in keys {
                if self
                    .raw(key)
                    .and_then(text)
                    .is_some_and(|v| is_zero_ad_id(&v))
                {
                    if let Some(trace) = &mut self.trace {
                        trace.zero_ad_ids.push((field, key.to_owned()));
                    }
                }
            }
        }
        let (key, value) = self.first(keys, |v| !is_zero_ad_id(v))?;
        self.check(field, key, value)
    }

    /// Apply the length cap to a canonical value found some other way (a segment of
    /// Adjust's `tracker_name`, a key inside AppsFlyer's `custom_data`).
    pub fn check(&mut self, field: &'static str, key: &str, value: String) -> Option<String> {
        if let Some(trace) = &mut self.trace {
            match trace.fields.iter_mut().rev().find(|f| f.field == field) {
                Some(f) => {
                    if !f.tried.iter().any(|k| k == key) {
                        f.tried.push(key.to_owned());
                    }
                    f.used = Some(key.to_owned());
                }
                None => trace.fields.push(FieldTrace {
                    field,
                    tried: vec![key.to_owned()],
                    used: Some(key.to_owned()),
                }),
            }
        }
        if value.chars().count() <= MAX_VALUE_CHARS {
            return Some(value);
        }
        self.too_long.get_or_insert_with(|| Invalid::TooLong {
            field,
            key: key.to_owned(),
        });
        None
    }

    /// The first of `keys` that holds a time [`parse_time`] understands.
    pub fn time(&mut self, keys: &[&'static str]) -> Option<DateTime<Utc>> {
        keys.iter().find_map(|&key| {
            let value = self.raw(key).and_then(text);
            let read = value.as_deref().and_then(parse_time_shape);
            if let Some(trace) = &mut self.trace {
                trace.times.push(TimeTrace {
                    key: key.to_owned(),
                    value,
                    read,
                });
            }
            read.map(|(t, _)| t)
        })
    }

    /// Whether any of `keys` holds one of `markers` (whole value, any letter case).
    pub fn is_marked(&mut self, keys: &[&'static str], markers: &[&str]) -> bool {
        self.marked(keys, markers).is_some()
    }

    /// A partner's organic marker: when one of `keys` holds one of `markers`, the delivery
    /// is organic, and the first such key and value say why.
    pub fn organic_marker(&mut self, keys: &[&'static str], markers: &[&str]) {
        if let Some((key, value)) = self.marked(keys, markers) {
            self.organic.get_or_insert(Organic::Marker { key, value });
        }
    }

    /// The first of `keys` holding one of `markers`, with its value. Every key is read, so
    /// each counts as present.
    fn marked(
        &mut self,
        keys: &[&'static str],
        markers: &[&str],
    ) -> Option<(&'static str, String)> {
        let mut found = None;
        for &key in keys {
            if let Some(value) = self.raw(key).and_then(text) {
                if found.is_none() && is_marker(&value, markers) {
                    found = Some((key, value));
                }
            }
        }
        found
    }

    /// The outcome, in the order of partners.md §1. An over-long value is checked after the
    /// organic marker (an organic install is dropped whatever else it carries) and before
    /// "no segments". An accepted postback's ids get their canonical letter case here, so
    /// every partner stores them alike.
    pub fn verdict(mut self, partner: PartnerId, postback: Postback) -> Verdict {
        if let Some(mut trace) = self.trace.take() {
            trace.mapped = Some(postback.clone());
            LAST_TRACE.with(|t| *t.borrow_mut() = Some(*trace));
        }
        if !self.seen {
            Verdict::Invalid(Invalid::NoPartnerFields(partner))
        } else if let Some(organic) = self.organic {
            Verdict::Organic(organic)
        } else if let Some(too_long) = self.too_long {
            Verdict::Invalid(too_long)
        } else if postback.segments.is_empty() {
            Verdict::Organic(Organic::NothingToCredit)
        } else if postback.ids.is_empty() {
            Verdict::Invalid(Invalid::NoIdentifier)
        } else {
            let mut postback = postback;
            postback.ids.canonicalize_case();
            Verdict::Accepted(Box::new(postback))
        }
    }
}

/// The value at `key` in `fields`: a top-level name, or with `paths` a dot-separated
/// path into nested objects. `None` when the key is not there at all.
pub fn value_at<'a>(fields: &'a Fields, key: &str, paths: bool) -> Option<&'a Value> {
    if paths {
        let mut parts = key.split('.');
        let first = fields.get(parts.next()?);
        parts.try_fold(first?, |v, part| v.as_object()?.get(part))
    } else {
        fields.get(key)
    }
}

/// Helpers shared by the partner parsers' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use crate::domain::Postback;
    use crate::partners::{decode_form, decode_json, Fields, Invalid, Organic, Verdict};

    /// A query-string fixture as sent on the wire (a trailing newline is not part of it).
    pub fn query(fixture: &str) -> Fields {
        decode_form(fixture.trim_end_matches(['\r', '\n']).as_bytes())
    }

    /// A JSON-body fixture.
    pub fn json(fixture: &str) -> Fields {
        decode_json(fixture.as_bytes()).expect("fixture is one JSON object")
    }

    /// `fields` with `key` set to `value` (added or replaced).
    pub fn with(mut fields: Fields, key: &str, value: impl Into<Value>) -> Fields {
        fields.insert(key.to_owned(), value.into());
        fields
    }

    /// `fields` with `object.key` set to `value` inside an existing nested object.
    pub fn with_nested(
        mut fields: Fields,
        object: &str,
        key: &str,
        value: impl Into<Value>,
    ) -> Fields {
        fields
            .entry(object.to_owned())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("nested object")
            .insert(key.to_owned(), value.into());
        fields
    }

    pub fn accepted(verdict: Verdict) -> Postback {
        match verdict {
            Verdict::Accepted(postback) => *postback,
            other => panic!("expected an accepted postback, got {other:?}"),
        }
    }

    /// Why a verdict is organic; panics on any other verdict.
    pub fn organic(verdict: Verdict) -> Organic {
        match verdict {
            Verdict::Organic(reason) => reason,
            other => panic!("expected organic, got {other:?}"),
        }
    }

    /// Assert that a verdict is organic, whatever the reason.
    macro_rules! assert_organic {
        ($verdict:expr) => {
            $crate::partners::normalize::testing::organic($verdict)
        };
        ($verdict:expr, $($msg:tt)+) => {
            match $verdict {
                $crate::partners::Verdict::Organic(_) => {}
                other => panic!("expected organic, got {other:?}: {}", format_args!($($msg)+)),
            }
        };
    }
    pub(crate) use assert_organic;

    pub fn long_text(chars: usize) -> String {
        "é".repeat(chars)
    }

    /// The same fields, inserted in the reverse order at every level.
    pub fn reversed(fields: &Fields) -> Fields {
        fields
            .iter()
            .rev()
            .map(|(k, v)| {
                let v = match v {
                    Value::Object(m) => Value::Object(reversed(m)),
                    other => other.clone(),
                };
                (k.clone(), v)
            })
            .collect()
    }

    /// The keys of a query template, in order.
    pub fn template_keys(template: &str) -> Vec<String> {
        query(template).keys().cloned().collect()
    }

    /// A template is a query string of `key=<macro>` pairs, each key once, each macro an
    /// unfilled token; every key is one the parser reads (except `not_read`), and a
    /// delivery where the partner filled nothing in is organic, not invalid.
    pub fn assert_template(template: &str, parse: fn(&Fields) -> Verdict, not_read: &[&str]) {
        assert!(!template.starts_with('?') && !template.contains("api_key"));
        let pairs: Vec<(String, String)> = form_urlencoded::parse(template.as_bytes())
            .into_owned()
            .collect();
        let fields = query(template);
        assert_eq!(
            pairs.len(),
            fields.len(),
            "a key appears twice in {template}"
        );
        for (key, value) in &pairs {
            assert_eq!(
                super::clean(value),
                None,
                "{key}={value} is not an unfilled macro"
            );
            if !not_read.contains(&key.as_str()) {
                let alone = with(Fields::new(), key, "x");
                assert!(
                    !matches!(parse(&alone), Verdict::Invalid(Invalid::NoPartnerFields(_))),
                    "{key} is in the template but the parser does not read it"
                );
            }
        }
        assert_eq!(parse(&fields), Verdict::Organic(Organic::NothingToCredit));
    }

    /// Strings that exercise the normalisation rules, plus arbitrary text.
    pub fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("  ".to_owned()),
            Just("{x}".to_owned()),
            Just("{{x}}".to_owned()),
            Just("${x}".to_owned()),
            Just("%7Bx%7D".to_owned()),
            Just("organic".to_owned()),
            Just("Organic".to_owned()),
            Just("0".to_owned()),
            Just("1".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            Just("install".to_owned()),
            Just("00000000-0000-0000-0000-000000000000".to_owned()),
            Just("a::b::c::d".to_owned()),
            Just("{\"brazeCustomerId\":\"u1\"}".to_owned()),
            Just("1714665600123".to_owned()),
            Just("2024-05-02 10:15:31.000".to_owned()),
            "[a-z0-9 _:.-]{1,12}",
            any::<String>(),
            "x{250,300}",
        ]
    }

    /// Any JSON value, nesting a little.
    pub fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            arb_text().prop_map(Value::String),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
        ];
        leaf.prop_recursive(2, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-zA-Z_$~.]{1,10}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Query pairs: mostly the partner's own keys, some arbitrary ones, text values.
    pub fn arb_query(keys: Vec<String>) -> impl Strategy<Value = Fields> {
        let key = prop_oneof![4 => prop::sample::select(keys), 1 => any::<String>()];
        prop::collection::vec((key, arb_text()), 0..24).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect()
        })
    }

    /// JSON objects: mostly the partner's keys (a dotted key becomes a nested object).
    pub fn arb_object(keys: Vec<String>) -> impl Strategy<Value = Fields> {
        let key = prop_oneof![4 => prop::sample::select(keys), 1 => "[a-zA-Z_$~+]{1,12}"];
        prop::collection::vec((key, arb_value()), 0..24).prop_map(|pairs| {
            let mut fields = Fields::new();
            for (key, value) in pairs {
                match key.split_once('.') {
                    Some((object, inner)) => {
                        let slot = fields.entry(object.to_owned()).or_insert_with(|| json!({}));
                        if let Value::Object(m) = slot {
                            m.insert(inner.to_owned(), value);
                        }
                    }
                    None => {
                        fields.insert(key, value);
                    }
                }
            }
            fields
        })
    }
}

#[cfg(test)]
mod tests {
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
}
