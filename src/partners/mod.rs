//! The dispatch to one pure parser per partner (`partners/<partner>.rs`), and decoding.
//! Parsers see decoded [`Fields`] and return a [`Verdict`]; no I/O, no clock, no HTTP.
//! The partner ids and their method table are domain types, re-exported here.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::domain::Postback;
pub use crate::domain::{InputFormat, Method, PartnerId, UnknownPartner};

pub mod normalize;

mod adjust;
mod appsflyer;
mod branch;
mod kochava;
mod singular;
mod tune;

/// A request's fields: a JSON object (POST JSON) or query/form pairs as JSON strings.
pub type Fields = Map<String, Value>;

/// The field that may carry the API key inside a payload; never stored.
pub const API_KEY_FIELD: &str = "api_key";

/// What a parser decided about one delivery (partners.md §1, "Outcome").
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Accepted(Box<Postback>),
    Organic,
    Invalid(Invalid),
}

/// Why a delivery was rejected with 400; the message is shown to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("body must be a single JSON object")]
    NotAnObject,
    #[error("none of the {0} postback fields are present")]
    NoPartnerFields(PartnerId),
    #[error("no device or user identifier present")]
    NoIdentifier,
    #[error("{field} (from `{key}`) is longer than {max} characters", max = normalize::MAX_VALUE_CHARS)]
    TooLong { field: &'static str, key: String },
}

/// What the registry needs to know about one partner's parser. Each partner file
/// declares its own `pub const PARSER`; the partner's id, name and methods are in the
/// method table of [`PartnerId`] (`domain/partner_id.rs`).
pub struct Parser {
    /// Fields that change between retries of one delivery and so stay out of its hash.
    pub volatile_fields: &'static [&'static str],
    /// For GET partners: the query string to paste into the partner's dashboard, each
    /// key carrying the partner's macro (without the API key).
    pub query_template: Option<&'static str>,
    /// Map one delivery's fields (API key already removed) to a verdict.
    pub parse: fn(&Fields) -> Verdict,
}

/// The parser side of a partner; its id, name and methods are in `domain`.
impl PartnerId {
    fn parser(self) -> &'static Parser {
        match self {
            PartnerId::Kochava => &kochava::PARSER,
            PartnerId::Tune => &tune::PARSER,
            PartnerId::Appsflyer => &appsflyer::PARSER,
            PartnerId::Adjust => &adjust::PARSER,
            PartnerId::Singular => &singular::PARSER,
            PartnerId::Branch => &branch::PARSER,
        }
    }

    pub fn volatile_fields(self) -> &'static [&'static str] {
        self.parser().volatile_fields
    }

    pub fn query_template(self) -> Option<&'static str> {
        self.parser().query_template
    }

    pub fn parse(self, fields: &Fields) -> Verdict {
        (self.parser().parse)(fields)
    }
}

/// Decode a query string or form body into fields. Percent-decoded once, `+` is a
/// space; on a repeated key the first value wins.
pub fn decode_form(input: &[u8]) -> Fields {
    let mut fields = Fields::new();
    for (k, v) in form_urlencoded::parse(input) {
        fields
            .entry(k.into_owned())
            .or_insert_with(|| Value::String(v.into_owned()));
    }
    fields
}

/// Decode a POST body that must hold one JSON object.
pub fn decode_json(body: &[u8]) -> Result<Fields, Invalid> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Invalid::NotAnObject),
        Err(e) => Err(Invalid::MalformedJson(e.to_string())),
    }
}

/// The dedupe key of a delivery without a partner id: SHA-256 of its fields with keys
/// sorted at every level, volatile fields left out. The API key is never in `fields`.
pub fn payload_hash(partner: PartnerId, fields: &Fields) -> String {
    let mut hasher = Sha256::new();
    let volatile = partner.volatile_fields();
    let mut keys: Vec<&String> = fields
        .keys()
        .filter(|k| !volatile.contains(&k.as_str()))
        .collect();
    keys.sort();
    let mut canonical = Map::new();
    for k in keys {
        canonical.insert(k.clone(), sorted(&fields[k]));
    }
    // serde_json writes a Map in insertion order when `preserve_order` is on and
    // sorted otherwise; `sorted` makes both the same.
    hasher.update(Value::Object(canonical).to_string().as_bytes());
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Replace NUL characters in every key and string value: PostgreSQL cannot store them
/// in text or jsonb, and no partner sends them on purpose.
pub fn sanitize(fields: &mut Fields) {
    fn clean_str(s: &str) -> Option<String> {
        s.contains('\0').then(|| s.replace('\0', "\u{FFFD}"))
    }
    fn clean_value(v: &mut Value) {
        match v {
            Value::String(s) => {
                if let Some(c) = clean_str(s) {
                    *s = c;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(clean_value),
            Value::Object(m) => clean_map(m),
            _ => {}
        }
    }
    fn clean_map(m: &mut Fields) {
        if m.keys().any(|k| k.contains('\0')) {
            let old = std::mem::take(m);
            for (k, v) in old {
                let k = clean_str(&k).unwrap_or(k);
                m.entry(k).or_insert(v);
            }
        }
        m.values_mut().for_each(clean_value);
    }
    clean_map(fields);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_partners_and_only_they_have_a_url_template() {
        for p in PartnerId::ALL {
            assert_eq!(
                p.input(Method::Get).is_some(),
                p.query_template().is_some(),
                "{p}: GET partners have a URL template"
            );
        }
    }

    #[test]
    fn payload_hash_ignores_key_order_and_volatile_fields() {
        let a = decode_json(br#"{"a":"1","b":{"x":1,"y":2}}"#).unwrap();
        let b = decode_json(br#"{"b":{"y":2,"x":1},"a":"1"}"#).unwrap();
        assert_eq!(
            payload_hash(PartnerId::Kochava, &a),
            payload_hash(PartnerId::Kochava, &b)
        );
        let t1 = decode_form(b"advertiser_sub_publisher=x&retry_attempts=0");
        let t2 = decode_form(b"retry_attempts=3&advertiser_sub_publisher=x");
        assert_eq!(
            payload_hash(PartnerId::Tune, &t1),
            payload_hash(PartnerId::Tune, &t2)
        );
        let t3 = decode_form(b"advertiser_sub_publisher=y");
        assert_ne!(
            payload_hash(PartnerId::Tune, &t1),
            payload_hash(PartnerId::Tune, &t3)
        );
    }

    #[test]
    fn decode_form_keeps_the_first_of_repeated_keys_and_decodes_once() {
        let f = decode_form(b"a=1&a=2&b=%257Bx%257D&c=x+y%2Bz");
        assert_eq!(f["a"], "1");
        assert_eq!(f["b"], "%7Bx%7D");
        assert_eq!(f["c"], "x y+z");
    }

    #[test]
    fn sanitize_replaces_nul_in_keys_and_nested_values() {
        let mut f =
            decode_json(b"{\"a\\u0000\":\"x\\u0000y\",\"n\":{\"m\":[\"\\u0000\"]}}").unwrap();
        sanitize(&mut f);
        let text = Value::Object(f).to_string();
        assert!(!text.contains("\\u0000"), "{text}");
    }
}
