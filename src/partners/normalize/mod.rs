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

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
