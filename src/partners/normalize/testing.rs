//! Helpers shared by the partner parsers' unit tests.

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
pub fn with_nested(mut fields: Fields, object: &str, key: &str, value: impl Into<Value>) -> Fields {
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
