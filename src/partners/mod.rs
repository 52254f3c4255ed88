//! Reading one postback request ([`read`]: decode, API key, parse, dedupe key) and the
//! dispatch to one pure parser per partner (`partners/<partner>.rs`). Parsers see decoded
//! [`Fields`] and return a [`Verdict`]; no I/O, no clock, no HTTP. The partner ids and
//! their method table are domain types, re-exported here.

use std::fmt;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::domain::{ApiKey, Postback};
pub use crate::domain::{InputFormat, Method, PartnerId, UnknownPartner};

pub mod inspect;
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
    Organic(Organic),
    Invalid(Invalid),
}

/// Why a delivery is organic: which rule decided, for logs and operators. The caller
/// is only ever told `organic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Organic {
    /// A partner's organic marker matched: `key` held `value` (as sent, trimmed).
    Marker { key: &'static str, value: String },
    /// Source, campaign, adgroup and ad are all absent: nothing to credit.
    NothingToCredit,
}

impl fmt::Display for Organic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Organic::Marker { key, value } => write!(f, "organic: {key} is {value:?}"),
            Organic::NothingToCredit => {
                f.write_str("organic: no source, campaign, adgroup or ad to credit")
            }
        }
    }
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

/// What [`read`] made of one postback request.
#[derive(Debug)]
pub struct Delivery {
    /// The key in the `api_key` query parameter, else in the payload's `api_key` field.
    /// It is never part of the stored fields; the `X-Api-Key` header is the caller's.
    pub api_key: Option<ApiKey>,
    pub decision: Decision,
    /// The fields read (without any `api_key`) when the decision holds none of its
    /// own: for the delivery log. Empty for an accepted delivery or an unreadable body.
    pub fields: Fields,
}

/// The verdict on one request, with what storing an accepted one needs.
#[derive(Debug)]
pub enum Decision {
    Accepted(Box<Accepted>),
    Organic(Organic),
    Invalid(Invalid),
}

/// An accepted delivery, ready to store.
#[derive(Debug)]
pub struct Accepted {
    pub postback: Postback,
    pub dedupe_key: String,
    /// The request's fields as received (NULs replaced), without the API key.
    pub raw: Fields,
}

/// Read one postback request: decode the fields `partner` sends with `method`, take out
/// the API key, sanitise, parse, and key an accepted delivery for dedupe. `None` when
/// the partner sends nothing with `method` (405).
pub fn read(partner: PartnerId, method: Method, query: &str, body: &[u8]) -> Option<Delivery> {
    let (api_key, decoded) = decode(partner, method, query, body)?;
    let (decision, fields) = match decoded {
        Err(invalid) => (Decision::Invalid(invalid), Fields::new()),
        Ok(fields) => decide(partner, fields),
    };
    Some(Delivery {
        api_key,
        decision,
        fields,
    })
}

/// What [`inspect`] made of one postback request: the same [`Delivery`] as [`read`],
/// the fields the parser saw, and what it looked at.
#[derive(Debug)]
pub struct Inspection {
    pub delivery: Delivery,
    /// The decoded fields without the API key (NULs replaced); `None` when the body
    /// could not be decoded.
    pub fields: Option<Fields>,
    /// What the parser read; `None` when no parser ran.
    pub trace: Option<normalize::Trace>,
}

/// [`read`], reporting what the parser looked at, for the dry run: the decision is
/// the one [`read`] reaches. Slower than [`read`] (it copies the fields); never used
/// on the ingest path.
pub fn inspect(partner: PartnerId, method: Method, query: &str, body: &[u8]) -> Option<Inspection> {
    let (api_key, decoded) = decode(partner, method, query, body)?;
    let (decision, kept, fields, trace) = match decoded {
        Err(invalid) => (Decision::Invalid(invalid), Fields::new(), None, None),
        Ok(fields) => {
            let mut copy = fields.clone();
            let ((decision, kept), trace) = normalize::traced(|| decide(partner, fields));
            remove_api_keys(&mut copy);
            sanitize(&mut copy);
            (decision, kept, Some(copy), trace)
        }
    };
    Some(Inspection {
        delivery: Delivery {
            api_key,
            decision,
            fields: kept,
        },
        fields,
        trace,
    })
}

/// Decode the fields `partner` sends with `method` and find the API key the request
/// carries (the `api_key` query parameter, else the payload's `api_key` field). `None`
/// when the partner sends nothing with `method` (405).
#[allow(clippy::type_complexity)]
fn decode(
    partner: PartnerId,
    method: Method,
    query: &str,
    body: &[u8],
) -> Option<(Option<ApiKey>, Result<Fields, Invalid>)> {
    let format = partner.input(method)?;
    let query = decode_form(query.as_bytes());
    let query_key = api_key_in(&query);
    let decoded = match format {
        InputFormat::Query => Ok(query),
        InputFormat::FormBody => {
            // Body fields win over query fields of the same name.
            let mut fields = decode_form(body);
            for (k, v) in query {
                fields.entry(k).or_insert(v);
            }
            Ok(fields)
        }
        InputFormat::JsonBody => decode_json(body),
    };
    let api_key = query_key.or_else(|| decoded.as_ref().ok().and_then(api_key_in));
    Some((api_key, decoded))
}

/// Take out every API key, sanitise, parse, and key an accepted delivery for dedupe.
/// The fields come back too when the decision holds none (for the delivery log).
fn decide(partner: PartnerId, mut fields: Fields) -> (Decision, Fields) {
    remove_api_keys(&mut fields);
    sanitize(&mut fields);
    match partner.parse(&fields) {
        Verdict::Accepted(postback) => {
            let dedupe_key = dedupe_key(partner, postback.partner_event_id.as_deref(), &fields);
            let accepted = Accepted {
                postback: *postback,
                dedupe_key,
                raw: fields,
            };
            (Decision::Accepted(Box::new(accepted)), Fields::new())
        }
        Verdict::Organic(reason) => (Decision::Organic(reason), fields),
        Verdict::Invalid(invalid) => (Decision::Invalid(invalid), fields),
    }
}

/// Take every `api_key` out of the fields, at any depth (a partner may nest the
/// payload it forwards): it must never be stored.
fn remove_api_keys(fields: &mut Fields) {
    fn clean(value: &mut Value) {
        match value {
            Value::Object(map) => remove_api_keys(map),
            Value::Array(items) => items.iter_mut().for_each(clean),
            _ => {}
        }
    }
    fields.remove(API_KEY_FIELD);
    fields.values_mut().for_each(clean);
}

fn api_key_in(fields: &Fields) -> Option<ApiKey> {
    fields
        .get(API_KEY_FIELD)
        .and_then(Value::as_str)
        .and_then(ApiKey::presented)
}

/// Longest partner id kept verbatim in a dedupe key. The key is in a unique index, and
/// PostgreSQL cannot index an entry over ~2.7 kB (a longer incompressible Branch `id`
/// failed the insert with a 500); longer ids are hashed, which keeps them unique and
/// leaves the keys of ordinary ids unchanged.
const MAX_VERBATIM_ID_BYTES: usize = 256;

/// The dedupe key of a delivery: the partner's own id where it sends one, else a hash
/// of the payload.
fn dedupe_key(partner: PartnerId, partner_event_id: Option<&str>, fields: &Fields) -> String {
    match partner_event_id {
        Some(id) if id.len() <= MAX_VERBATIM_ID_BYTES => format!("id:{id}"),
        Some(id) => format!("id-sha256:{}", hex::encode(Sha256::digest(id.as_bytes()))),
        None => payload_hash(partner, fields),
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

/// UTF-8 byte-order mark, which some senders put before a JSON body.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Decode a POST body that must hold one JSON object (after one leading byte-order mark).
pub fn decode_json(body: &[u8]) -> Result<Fields, Invalid> {
    let body = body.strip_prefix(UTF8_BOM).unwrap_or(body);
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

    const TUNE_INSTALL: &str =
        "advertiser_sub_publisher=Vungle&ios_ifa=A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF";
    const KOCHAVA_INSTALL: &str =
        r#"{"network_name":"Liftoff","idfa":"4E5F6A7B-8C9D-4E0F-A1B2-C3D4E5F6A7B8"}"#;

    fn accepted(delivery: &Delivery) -> &Accepted {
        match &delivery.decision {
            Decision::Accepted(a) => a,
            other => panic!("expected accepted, got {other:?}"),
        }
    }

    #[test]
    fn read_answers_none_for_a_method_the_partner_does_not_use() {
        assert!(read(PartnerId::Adjust, Method::Post, "", b"").is_none());
        assert!(read(PartnerId::Kochava, Method::Get, KOCHAVA_INSTALL, b"").is_none());
    }

    #[test]
    fn an_api_key_nested_anywhere_in_a_json_body_is_not_stored() {
        let body = KOCHAVA_INSTALL.replacen(
            '{',
            r#"{"meta":{"api_key":"pbgk_n","list":[{"api_key":"pbgk_m","x":1}]},"#,
            1,
        );
        let d = read(PartnerId::Kochava, Method::Post, "", body.as_bytes()).unwrap();
        let stored = Value::Object(accepted(&d).raw.clone()).to_string();
        assert!(!stored.contains("pbgk_"), "{stored}");
        assert!(stored.contains(r#""x":1"#), "other fields stay: {stored}");
    }

    #[test]
    fn read_takes_the_api_key_from_the_query_then_the_payload_and_never_stores_it() {
        let d = read(
            PartnerId::Tune,
            Method::Get,
            &format!("{TUNE_INSTALL}&api_key=pbgk_q"),
            b"",
        )
        .unwrap();
        assert_eq!(d.api_key.as_ref().map(ApiKey::expose), Some("pbgk_q"));
        assert!(!accepted(&d).raw.contains_key(API_KEY_FIELD));

        let body = KOCHAVA_INSTALL.replacen('{', r#"{"api_key":"pbgk_b","#, 1);
        let d = read(PartnerId::Kochava, Method::Post, "", body.as_bytes()).unwrap();
        assert_eq!(d.api_key.as_ref().map(ApiKey::expose), Some("pbgk_b"));
        assert!(!accepted(&d).raw.contains_key(API_KEY_FIELD));
        let d = read(
            PartnerId::Kochava,
            Method::Post,
            "api_key=pbgk_q",
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(d.api_key.as_ref().map(ApiKey::expose), Some("pbgk_q"));

        // Form POST: an empty query key falls through to the body's.
        let d = read(
            PartnerId::Tune,
            Method::Post,
            "api_key=+",
            format!("{TUNE_INSTALL}&api_key=pbgk_f").as_bytes(),
        )
        .unwrap();
        assert_eq!(d.api_key.as_ref().map(ApiKey::expose), Some("pbgk_f"));
        assert!(!accepted(&d).raw.contains_key(API_KEY_FIELD));

        let d = read(PartnerId::Kochava, Method::Post, "api_key=pbgk_q", b"[").unwrap();
        assert_eq!(d.api_key.as_ref().map(ApiKey::expose), Some("pbgk_q"));
        assert!(matches!(
            d.decision,
            Decision::Invalid(Invalid::MalformedJson(_))
        ));
    }

    #[test]
    fn read_keys_an_accepted_delivery_for_dedupe_and_sanitises_what_is_stored() {
        let d = read(
            PartnerId::Tune,
            Method::Get,
            &format!("{TUNE_INSTALL}&note=a%00b&retry_attempts=2"),
            b"",
        )
        .unwrap();
        let a = accepted(&d);
        assert_eq!(a.raw["note"], "a\u{FFFD}b");
        let again = read(
            PartnerId::Tune,
            Method::Get,
            &format!("retry_attempts=3&note=a%00b&{TUNE_INSTALL}"),
            b"",
        )
        .unwrap();
        assert_eq!(a.dedupe_key, accepted(&again).dedupe_key);
        assert!(a.dedupe_key.starts_with("sha256:"));
    }

    #[test]
    fn organic_says_which_rule_decided() {
        let body = KOCHAVA_INSTALL.replace("Liftoff", " Unattributed ");
        let d = read(PartnerId::Kochava, Method::Post, "", body.as_bytes()).unwrap();
        let Decision::Organic(reason) = d.decision else {
            panic!("{:?}", d.decision)
        };
        assert_eq!(
            reason,
            Organic::Marker {
                key: "network_name",
                value: "Unattributed".into()
            }
        );
        assert_eq!(
            reason.to_string(),
            r#"organic: network_name is "Unattributed""#
        );

        let body = KOCHAVA_INSTALL.replace("Liftoff", "");
        let d = read(PartnerId::Kochava, Method::Post, "", body.as_bytes()).unwrap();
        let Decision::Organic(reason) = d.decision else {
            panic!("{:?}", d.decision)
        };
        assert_eq!(reason, Organic::NothingToCredit);
        assert_eq!(
            reason.to_string(),
            "organic: no source, campaign, adgroup or ad to credit"
        );
    }

    #[test]
    fn dedupe_keys_stay_short_enough_to_index_whatever_the_partner_id() {
        let fields = Fields::new();
        let short = "1250087741902387201";
        assert_eq!(
            dedupe_key(PartnerId::Branch, Some(short), &fields),
            format!("id:{short}"),
            "ordinary ids are kept verbatim (existing keys do not change)"
        );
        let long_a = "a".repeat(10_000);
        let long_b = format!("{}b", "a".repeat(9_999));
        let key_a = dedupe_key(PartnerId::Branch, Some(&long_a), &fields);
        let key_b = dedupe_key(PartnerId::Branch, Some(&long_b), &fields);
        assert!(key_a.len() < 100, "{key_a}");
        assert_ne!(key_a, key_b, "different ids, different keys");
        assert_eq!(key_a, dedupe_key(PartnerId::Branch, Some(&long_a), &fields));
        let limit = "x".repeat(MAX_VERBATIM_ID_BYTES);
        assert_eq!(
            dedupe_key(PartnerId::Branch, Some(&limit), &fields),
            format!("id:{limit}")
        );
        assert!(dedupe_key(PartnerId::Kochava, None, &fields).starts_with("sha256:"));
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
    fn a_json_body_starting_with_a_byte_order_mark_is_read_without_it() {
        const WITH_BOM: &[u8] =
            include_bytes!("../../tests/fixtures/kochava/docs_example_bom.json");
        assert!(WITH_BOM.starts_with(b"\xEF\xBB\xBF"));
        let fields = decode_json(WITH_BOM).expect("read without the BOM");
        assert_eq!(fields["event_name"], "_install");
        let d = read(PartnerId::Kochava, Method::Post, "", WITH_BOM).unwrap();
        accepted(&d);
        assert_eq!(
            decode_json(b"\xEF\xBB\xBF[1]"),
            Err(Invalid::NotAnObject),
            "an array is still rejected"
        );
        assert!(
            matches!(
                decode_json(b"\xEF\xBB\xBF\xEF\xBB\xBF{}"),
                Err(Invalid::MalformedJson(_))
            ),
            "only one leading BOM is dropped"
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
