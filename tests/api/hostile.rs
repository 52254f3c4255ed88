//! SPEC §5: "No panic and no 5xx on any client input; the server keeps serving after
//! any malformed request."
//!
//! The real binary gets thousands of generated malformed requests over raw TCP (so
//! nothing is cleaned up by a client library): random bodies, broken percent-escapes
//! and invalid UTF-8, 10,000 query pairs, JSON nested 100,000 deep, huge and too many
//! headers, NUL bytes, wrong content types, over-long values, real partner payloads
//! with hostile values, every partner route, GET/POST and other methods, with and
//! without a valid key. Only statuses SPEC allows may come back, never a 5xx; the
//! server answers `/healthz` and accepts a postback afterwards, and its memory stays
//! bounded. Slow clients are cut off by the header-read and request timeouts while
//! other clients are served.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::both_backends;
use crate::helpers::{create_app_cli, Backend, ServerProcess, TestDb, ADMIN_TOKEN};

both_backends!(generated_malformed_requests_get_only_allowed_statuses_and_memory_stays_bounded);

/// Requests of the warm-up round (memory is measured after it) and of the main round.
const WARM_UP: usize = 2_000;
const MAIN: usize = 10_000;
const CONCURRENCY: usize = 8;
/// Statuses SPEC allows on client input (431 for oversized request heads).
const ALLOWED: &[u16] = &[200, 400, 401, 404, 405, 413, 429, 431];
const PARTNERS: [&str; 6] = [
    "kochava",
    "tune",
    "appsflyer",
    "adjust",
    "singular",
    "branch",
];
/// Largest request head the server buffers (`src/http/serve.rs`).
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024;

/// Real payloads to mutate: (partner, is_json, text).
const FIXTURES: &[(&str, bool, &str)] = &[
    (
        "kochava",
        true,
        include_str!("../fixtures/kochava/docs_example.json"),
    ),
    (
        "kochava",
        true,
        include_str!("../fixtures/kochava/install_android.json"),
    ),
    (
        "kochava",
        true,
        include_str!("../fixtures/kochava/purchase_event.json"),
    ),
    (
        "tune",
        false,
        include_str!("../fixtures/tune/docs_example.query"),
    ),
    (
        "tune",
        false,
        include_str!("../fixtures/tune/install_android.query"),
    ),
    (
        "appsflyer",
        true,
        include_str!("../fixtures/appsflyer/install_android.json"),
    ),
    (
        "appsflyer",
        true,
        include_str!("../fixtures/appsflyer/custom_data_object.json"),
    ),
    (
        "appsflyer",
        false,
        include_str!("../fixtures/appsflyer/install_ios.query"),
    ),
    (
        "adjust",
        false,
        include_str!("../fixtures/adjust/docs_example.query"),
    ),
    (
        "adjust",
        false,
        include_str!("../fixtures/adjust/install_android.query"),
    ),
    (
        "singular",
        false,
        include_str!("../fixtures/singular/install_android.query"),
    ),
    (
        "singular",
        true,
        include_str!("../fixtures/singular/install_ios.json"),
    ),
    (
        "branch",
        true,
        include_str!("../fixtures/branch/install_ios.json"),
    ),
    (
        "branch",
        true,
        include_str!("../fixtures/branch/docs_example.json"),
    ),
    (
        "branch",
        true,
        include_str!("../fixtures/branch/purchase_event.json"),
    ),
];

/// A small deterministic xorshift64*.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed: neighbouring seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
    /// `min` plus up to `extra` random bytes.
    pub fn bytes_in(&mut self, min: usize, extra: usize) -> Vec<u8> {
        let len = min + self.below(extra);
        self.bytes(len)
    }
    /// `min` plus up to `extra` random alphanumerics.
    pub fn alnum_in(&mut self, min: usize, extra: usize) -> String {
        let len = min + self.below(extra);
        self.alnum(len)
    }
    /// Incompressible printable text (so no database compresses it away).
    pub fn alnum(&mut self, len: usize) -> String {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..len).map(|_| *self.pick(CHARS) as char).collect()
    }
}

/// The keys the server knows: valid enterprise, valid standard (hits its hourly
/// quota: 429), and a well-formed unknown one.
struct Keys {
    enterprise: String,
    standard: String,
}

/// One generated request and what may come back besides an allowed status.
struct Generated {
    what: &'static str,
    bytes: Vec<u8>,
    /// The server may close the connection without a response (oversized input it
    /// does not read to the end).
    may_close: bool,
}

fn head(method: &str, target: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Percent-encode everything but unreserved characters.
fn pct(s: &[u8]) -> String {
    s.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A hostile query value: broken escapes, invalid UTF-8, NUL, macros, long text.
fn hostile_value(rng: &mut Rng) -> String {
    match rng.below(12) {
        0 => "%".into(),
        1 => "%G1%4".into(),
        2 => "%FF%FE%C0%80".into(),
        3 => "%00".into(),
        4 => format!("a%00b{}", rng.alnum(5)),
        5 => "{advertiser_sub_publisher}".into(),
        6 => "%7Bmacro%7D".into(),
        7 => pct(&rng.bytes_in(0, 64)),
        8 => pct(rng.alnum_in(257, 3000).as_bytes()),
        9 => "+++".into(),
        10 => "%2525252525".into(),
        _ => pct("日本語🎉\u{202E}\u{FEFF}".as_bytes()),
    }
}

/// A hostile JSON value.
fn hostile_json(rng: &mut Rng) -> Value {
    match rng.below(14) {
        0 => Value::String(rng.alnum_in(257, 8000)),
        1 => Value::String(format!("x\u{0}y{}", rng.alnum(4))),
        2 => Value::String(String::from_utf8_lossy(&rng.bytes(64)).into_owned()),
        3 => json!(null),
        4 => json!(true),
        5 => json!(-1),
        6 => json!(1.0e308),
        7 => json!(u64::MAX),
        8 => json!([1, "two", {"three": [null]}]),
        9 => json!({"nested": {"\u{0}": "\u{0}"}}),
        10 => json!("{macro}"),
        11 => json!("   "),
        12 => json!("00000000-0000-0000-0000-000000000000"),
        _ => Value::String(format!("{}-{}", rng.alnum(8), rng.next())),
    }
}

fn mutate_json(rng: &mut Rng, value: &mut Value, depth: usize) {
    let Value::Object(map) = value else { return };
    let keys: Vec<String> = map.keys().cloned().collect();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 | 1 if !keys.is_empty() => {
                let k = rng.pick(&keys).clone();
                if depth < 2 && map.get(&k).is_some_and(Value::is_object) && rng.chance(50) {
                    mutate_json(rng, map.get_mut(&k).unwrap(), depth + 1);
                } else {
                    map.insert(k, hostile_json(rng));
                }
            }
            2 if !keys.is_empty() => {
                map.remove(rng.pick(&keys));
            }
            3 => {
                let key = match rng.below(4) {
                    0 => "\u{0}".to_owned(),
                    1 => rng.alnum(10_000),
                    2 => "api_key".to_owned(),
                    _ => String::new(),
                };
                map.insert(key, hostile_json(rng));
            }
            _ => {
                // A fresh device, so the mutated payload is stored, not a duplicate.
                for id in ["idfa", "google_aid", "ios_ifa", "advertising_id", "id"] {
                    if map.contains_key(id) {
                        map.insert(id.into(), json!(format!("{}", rng.next())));
                    }
                }
            }
        }
    }
}

fn key_headers(rng: &mut Rng, keys: &Keys) -> (Vec<(String, String)>, Option<String>) {
    let key = match rng.below(6) {
        0 => None,
        1 | 2 => Some(keys.enterprise.clone()),
        3 => Some(keys.standard.clone()),
        4 => Some(format!("pbgk_{}", "0".repeat(64))),
        _ => Some(rng.alnum_in(0, 300)),
    };
    match (key, rng.below(2)) {
        (Some(k), 0) => (vec![("X-Api-Key".into(), k)], None),
        (k, _) => (vec![], k),
    }
}

fn content_type(rng: &mut Rng) -> Option<String> {
    let types = [
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=xyz",
        "application/json; charset=utf-16",
        "application/xml",
        "",
        "application/json;;;;;",
        "*/*",
    ];
    rng.chance(85).then(|| rng.pick(&types).to_string())
}

fn generate(index: usize, keys: &Keys, app_id: &str) -> Generated {
    let mut rng = Rng::new(index as u64);
    let partner = *rng.pick(&PARTNERS);
    let method = if rng.chance(50) { "GET" } else { "POST" };
    let (mut headers, query_key) = key_headers(&mut rng, keys);
    if let Some(ct) = content_type(&mut rng) {
        headers.push(("Content-Type".into(), ct));
    }
    let key_param = query_key
        .as_ref()
        .map(|k| format!("api_key={}", pct(k.as_bytes())))
        .unwrap_or_default();
    let route = format!("/v1/postbacks/{partner}");
    let plain = |what, bytes| Generated {
        what,
        bytes,
        may_close: false,
    };
    // Twenty kinds; the four heavy ones (10,000 pairs, deep JSON, huge headers,
    // bodies over the limit) half as often as the rest.
    let kind = match rng.below(36) {
        k @ 0..=19 => k,
        _ => *rng.pick(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 16, 17, 18, 19]),
    };
    match kind {
        // Random bytes as the body.
        0..=2 => {
            let body = rng.bytes_in(0, 4096);
            plain(
                "random body",
                head(method, &format!("{route}?{key_param}"), &headers, &body),
            )
        }
        // Hostile query strings: broken escapes, invalid UTF-8, NUL, long values.
        3..=5 => {
            let mut q = vec![key_param];
            for _ in 0..1 + rng.below(12) {
                let k = match rng.below(4) {
                    0 => hostile_value(&mut rng),
                    _ => rng
                        .pick(&[
                            "advertiser_sub_publisher",
                            "ios_ifa",
                            "network",
                            "idfa",
                            "campaign_name",
                            "media_source",
                            "api_key",
                            "gps_adid",
                            "tracker_name",
                        ])
                        .to_string(),
                };
                q.push(format!("{k}={}", hostile_value(&mut rng)));
            }
            plain(
                "hostile query",
                head(method, &format!("{route}?{}", q.join("&")), &headers, b""),
            )
        }
        // Raw bytes in the request target (hyper answers 400 itself).
        6 => {
            let mut bytes = format!("{method} {route}?a=").into_bytes();
            bytes.extend(rng.bytes_in(1, 40).iter().map(|b| b | 0x80));
            bytes.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            plain("raw bytes in the target", bytes)
        }
        // Real partner payloads with hostile values.
        7..=10 => {
            let (fixture_partner, is_json, text) = *rng.pick(FIXTURES);
            let target = format!("/v1/postbacks/{fixture_partner}");
            if is_json {
                let mut v: Value = serde_json::from_str(text).unwrap();
                mutate_json(&mut rng, &mut v, 0);
                if let (Some(k), true) = (&query_key, rng.chance(50)) {
                    v["api_key"] = json!(k);
                }
                let mut body = v.to_string().into_bytes();
                if rng.chance(10) {
                    body.truncate(rng.below(body.len() + 1));
                }
                plain(
                    "mutated JSON payload",
                    head("POST", &format!("{target}?{key_param}"), &headers, &body),
                )
            } else {
                let mut pairs: Vec<String> = text.trim().split('&').map(str::to_owned).collect();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(pairs.len());
                    let k = pairs[i].split('=').next().unwrap().to_owned();
                    pairs[i] = format!("{k}={}", hostile_value(&mut rng));
                }
                // A fresh device so the payload is stored.
                pairs.push(format!("ios_ifa={}", rng.next()));
                pairs.push(format!("gps_adid={}", rng.next()));
                pairs.push(key_param);
                let q = pairs.join("&");
                if fixture_partner == "tune" && rng.chance(50) {
                    plain(
                        "mutated form POST",
                        head("POST", &target, &headers, q.as_bytes()),
                    )
                } else {
                    plain(
                        "mutated GET payload",
                        head("GET", &format!("{target}?{q}"), &headers, b""),
                    )
                }
            }
        }
        // 10,000 query pairs (in the target, a form body, or a JSON object).
        11 => {
            let pairs: Vec<String> = (0..10_000).map(|i| format!("k{i}=")).collect();
            let q = format!("{}&{key_param}", pairs.join("&"));
            match rng.below(3) {
                0 => Generated {
                    what: "10,000 query pairs",
                    may_close: q.len() > MAX_HEAD - 200,
                    bytes: head("GET", &format!("/v1/postbacks/tune?{q}"), &headers, b""),
                },
                1 => Generated {
                    what: "10,000 form pairs",
                    may_close: q.len() > MAX_BODY,
                    bytes: head("POST", "/v1/postbacks/tune", &headers, q.as_bytes()),
                },
                _ => {
                    let obj: serde_json::Map<String, Value> =
                        (0..10_000).map(|i| (format!("{i}"), json!(i))).collect();
                    let body = Value::Object(obj).to_string();
                    Generated {
                        what: "10,000 JSON keys",
                        may_close: body.len() > MAX_BODY,
                        bytes: head(
                            "POST",
                            &format!("/v1/postbacks/kochava?{key_param}"),
                            &headers,
                            body.as_bytes(),
                        ),
                    }
                }
            }
        }
        // Deeply nested JSON: 100,000 deep (over the body limit) and as deep as fits.
        12 => {
            let depth = *rng.pick(&[100_000, 32_000, 12_000, 129, 500]);
            let body = if rng.chance(50) {
                format!("{}{}", "[".repeat(depth), "]".repeat(depth))
            } else {
                format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
            };
            let target = format!(
                "/v1/postbacks/{}?{key_param}",
                rng.pick(&["kochava", "branch", "appsflyer", "singular"])
            );
            if rng.chance(30) {
                // Chunked, so the size is only known while reading.
                let mut bytes = format!(
                    "POST {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                .into_bytes();
                for chunk in body.as_bytes().chunks(8192) {
                    bytes.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
                    bytes.extend_from_slice(chunk);
                    bytes.extend_from_slice(b"\r\n");
                }
                bytes.extend_from_slice(b"0\r\n\r\n");
                Generated {
                    what: "deep JSON, chunked",
                    may_close: body.len() > MAX_BODY,
                    bytes,
                }
            } else {
                Generated {
                    what: "deep JSON",
                    may_close: body.len() > MAX_BODY,
                    bytes: head("POST", &target, &headers, body.as_bytes()),
                }
            }
        }
        // Huge or too many headers.
        13 => {
            let mut hs = headers.clone();
            let what = match rng.below(4) {
                0 => {
                    hs.push(("X-Big".into(), rng.alnum(MAX_HEAD + 1000)));
                    "one huge header"
                }
                1 => {
                    for i in 0..200 {
                        hs.push((format!("X-H{i}"), "v".into()));
                    }
                    "200 headers"
                }
                2 => {
                    hs.push(("X-Api-Key".into(), rng.alnum(20_000)));
                    "20 KB API key"
                }
                _ => {
                    hs.push(("Cookie".into(), rng.alnum(60_000)));
                    "60 KB cookie"
                }
            };
            Generated {
                what,
                may_close: true,
                bytes: head(method, &format!("{route}?{key_param}"), &hs, b""),
            }
        }
        // NUL bytes: in the target, a header value, the body.
        14 => {
            let mut bytes = match rng.below(3) {
                0 => format!("{method} {route}?a=\0&{key_param} HTTP/1.1\r\nHost: x\r\n"),
                1 => format!(
                    "{method} {route}?{key_param} HTTP/1.1\r\nHost: x\r\nX-Api-Key: ab\0cd\r\n"
                ),
                _ => format!("{method} {route}?{key_param} HTTP/1.1\r\nHost: x\r\n"),
            }
            .into_bytes();
            let body = format!(
                "{{\"network_name\":\"Li\0ftoff\",\"idfa\":\"{}\0\",\"\0\":\"\0\"}}",
                rng.next()
            );
            bytes.extend(
                format!(
                    "Connection: close\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes(),
            );
            bytes.extend(body.into_bytes());
            plain("NUL bytes", bytes)
        }
        // Body over the limit, declared or not.
        15 => {
            let body = rng.bytes_in(MAX_BODY + 1, 100_000);
            Generated {
                what: "body over 64 KiB",
                may_close: true,
                bytes: head("POST", &format!("{route}?{key_param}"), &headers, &body),
            }
        }
        // Broken framing: bad chunk sizes, conflicting lengths, bad versions, garbage.
        16 => {
            let bytes: Vec<u8> = match rng.below(9) {
                0 => format!("POST {route} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n").into_bytes(),
                1 => format!("POST {route} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef").into_bytes(),
                2 => format!("POST {route} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: -1\r\n\r\n").into_bytes(),
                3 => format!("POST {route} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 99999999999999999999\r\n\r\n").into_bytes(),
                4 => format!("GET {route} HTTP/9.9\r\nHost: x\r\n\r\n").into_bytes(),
                5 => format!("GET {route}\r\n\r\n").into_bytes(),
                6 => format!("GET {route}?{key_param} HTTP/1.0\n\n").into_bytes(),
                7 => format!("POST {route} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n").into_bytes(),
                _ => {
                    let mut b = rng.bytes_in(1, 200);
                    b.extend_from_slice(b"\r\n\r\n");
                    b
                }
            };
            Generated {
                what: "broken framing",
                may_close: true,
                bytes,
            }
        }
        // Methods and paths: other methods, unknown partners, odd paths, read routes.
        17..=18 => {
            let method = *rng.pick(&[
                "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO",
            ]);
            let garbage = pct(&rng.bytes_in(0, 20));
            let path = match rng.below(16) {
                0 => format!("/v1/postbacks/{partner}"),
                1 => "/v1/postbacks/KOCHAVA".to_owned(),
                2 => "/v1/postbacks/%FF%FE".to_owned(),
                3 => format!("/v1/postbacks/{garbage}"),
                4 => "/v1/postbacks/kochava/extra".to_owned(),
                5 => "//v1/postbacks/../healthz".to_owned(),
                6 => rng
                    .pick(&["/healthz", "/readyz", "/metrics", "/openapi.json"])
                    .to_string(),
                7 => "/v1/apps".to_owned(),
                8 => format!(
                    "/v1/apps/{}/partners",
                    rng.pick(&[
                        app_id,
                        "not-a-uuid",
                        "%FF",
                        "00000000-0000-0000-0000-000000000000"
                    ])
                ),
                9 => format!(
                    "/v1/apps/{app_id}/users?limit={}&cursor={}&source={}",
                    rng.pick(&["0", "-1", "1001", "abc", "100", "18446744073709551617"]),
                    pct(&rng.bytes_in(0, 40)),
                    hostile_value(&mut rng)
                ),
                10 => format!(
                    "/v1/apps/{app_id}/users/lookup?{}={}&{}",
                    rng.pick(&["idfa", "user_id", "nope", "partner_device_id"]),
                    hostile_value(&mut rng),
                    rng.pick(&["", "idfv=x", "idfa=y"])
                ),
                11 => format!(
                    "/v1/apps/{app_id}/summary?by={}&since={}&until={}",
                    rng.pick(&["source", "campaign", "ad", "x", ""]),
                    rng.pick(&[
                        "2024-01-01",
                        "yesterday",
                        "9999-99-99",
                        "-262144-01-01T00:00:00Z",
                        "%FF"
                    ]),
                    rng.pick(&["2025-01-01T00:00:00Z", "", "1", "+275760-09-13T00:00:00Z"])
                ),
                12 => format!("/apps/{}/attribution", rng.pick(&[app_id, "x", "%00"])),
                13 => format!("/{}", rng.alnum_in(0, 2000)),
                14 => format!("/v1/postbacks/{partner}?{}", "x".repeat(MAX_HEAD)),
                _ => "*".to_owned(),
            };
            let mut hs = headers.clone();
            match rng.below(5) {
                0 => hs.push(("Authorization".into(), format!("Bearer {ADMIN_TOKEN}"))),
                1 => hs.push(("Authorization".into(), "Bearer wrong".into())),
                2 => hs.push((
                    "Authorization".into(),
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{}:{ADMIN_TOKEN}", rng.alnum(5)))
                    ),
                )),
                3 => hs.push(("Authorization".into(), format!("Basic {}", rng.alnum(30)))),
                _ => {}
            }
            let body = if method == "GET" || method == "HEAD" {
                vec![]
            } else {
                rng.bytes_in(0, 100)
            };
            Generated {
                what: "methods and paths",
                may_close: path.len() > MAX_HEAD - 500,
                bytes: head(method, &path, &hs, &body),
            }
        }
        // Over-long values everywhere, as a JSON body or a query.
        _ => {
            let long = rng.alnum_in(257, 20_000);
            let key = *rng.pick(&[
                "network_name",
                "campaign_name",
                "idfa",
                "id",
                "ip_address",
                "device_ua",
                "media_source",
                "advertiser_sub_publisher",
                "network",
                "event_name",
                "user_id",
                "unmapped_field",
            ]);
            if rng.chance(50) {
                let mut body = json!({"network_name": "Liftoff", "idfa": format!("{}", rng.next()),
                    "id": format!("{}", rng.next()), "last_attributed_touch_data": {"~channel": "Liftoff"},
                    "user_data": {"idfa": format!("{}", rng.next())}, "media_source": "X",
                    "network": "X"});
                body[key] = json!(long);
                plain(
                    "over-long JSON value",
                    head(
                        "POST",
                        &format!("{route}?{key_param}"),
                        &headers,
                        body.to_string().as_bytes(),
                    ),
                )
            } else {
                let q = format!("{key}={long}&ios_ifa={}&gps_adid={}&network=X&media_source=X&advertiser_sub_publisher=X&{key_param}", rng.next(), rng.next());
                Generated {
                    what: "over-long query value",
                    may_close: q.len() > MAX_HEAD - 500,
                    bytes: head("GET", &format!("{route}?{q}"), &headers, b""),
                }
            }
        }
    }
}

/// What came back on one connection.
#[derive(Debug)]
pub struct Reply {
    /// `None`: closed (or reset) without a status line.
    pub status: Option<u16>,
    pub head: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Send raw bytes on a fresh connection and read one response (or the close).
/// Fails the test if neither comes within `deadline`.
pub async fn exchange(addr: &str, request: Vec<u8>, deadline: Duration) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    // Write concurrently: the server may answer (413, 431) before reading it all.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut buf = Vec::new();
    let read = tokio::time::timeout(deadline, async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if length.is_some_and(|n| buf.len() >= end + 4 + n) {
                    break;
                }
            }
        }
    })
    .await;
    writer.abort();
    assert!(read.is_ok(), "no response and no close within {deadline:?}");
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok());
    let body = buf.get(end + 4..).unwrap_or_default().to_vec();
    Reply { status, head, body }
}

/// Whether the request line names a postback route.
fn targets_postbacks(request: &[u8]) -> bool {
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    line.split(|&b| b == b' ')
        .nth(1)
        .is_some_and(|target| target.starts_with(b"/v1/postbacks/"))
}

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<String, u64>,
    violations: Vec<String>,
}

async fn run_round(
    addr: &str,
    keys: &Arc<Keys>,
    app_id: &str,
    range: std::ops::Range<usize>,
    tally: &Arc<Mutex<Tally>>,
) {
    let next = Arc::new(AtomicUsize::new(range.start));
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, keys, tally) = (next.clone(), keys.clone(), tally.clone());
            let (addr, app_id, end) = (addr.to_owned(), app_id.to_owned(), range.end);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= end {
                        return;
                    }
                    let g = generate(i, &keys, &app_id);
                    let postback_route = targets_postbacks(&g.bytes);
                    let head_request = g.bytes.starts_with(b"HEAD ");
                    let reply = exchange(&addr, g.bytes, Duration::from_secs(10)).await;
                    let mut tally = tally.lock().unwrap();
                    let label = reply.status.map_or("closed".to_owned(), |s| s.to_string());
                    *tally.statuses.entry(label.clone()).or_default() += 1;
                    let violation = match reply.status {
                        None if !g.may_close => Some("closed without a response".to_owned()),
                        None => None,
                        Some(s) if !ALLOWED.contains(&s) => Some(format!("status {s}")),
                        Some(431) if !g.may_close => Some("431 for a small head".to_owned()),
                        Some(_) => None,
                    };
                    // Our own answers (not hyper's bare 400/431 for input it cannot
                    // parse) carry a request id, and on postback routes a JSON body.
                    let json_violation = (reply.header("x-request-id").is_some()
                        && postback_route
                        && !(reply
                            .header("content-type")
                            .is_some_and(|ct| ct.starts_with("application/json"))
                            && (head_request
                                || serde_json::from_slice::<Value>(&reply.body).is_ok())))
                    .then(|| "postback answer is not JSON".to_owned());
                    if let Some(v) = violation.or(json_violation) {
                        tally.violations.push(format!(
                            "request #{i} ({}): {v}; response head: {}",
                            g.what,
                            reply.head.lines().take(3).collect::<Vec<_>>().join(" | ")
                        ));
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("fuzz task");
    }
}

async fn generated_malformed_requests_get_only_allowed_statuses_and_memory_stays_bounded(
    backend: Backend,
) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let started = Instant::now();
    let (app_id, enterprise) = create_app_cli(db.url(), "hostile", "enterprise");
    let (_, standard) = create_app_cli(db.url(), "hostile-standard", "standard");
    let keys = Arc::new(Keys {
        enterprise: enterprise.clone(),
        standard,
    });
    let db_url = db.url().to_owned();
    let server = tokio::task::spawn_blocking(move || {
        ServerProcess::start(
            &db_url,
            &[
                ("ADMIN_TOKEN", ADMIN_TOKEN),
                ("PBG_HTTP__HEADER_READ_TIMEOUT_MS", "1000"),
                ("PBG_HTTP__REQUEST_TIMEOUT_MS", "2000"),
            ],
        )
    })
    .await
    .unwrap();
    let addr = server.address.trim_start_matches("http://").to_owned();
    let rss_start = server.rss_kib();

    let tally = Arc::new(Mutex::new(Tally::default()));
    run_round(&addr, &keys, &app_id, 0..WARM_UP, &tally).await;
    let rss_warm = server.rss_kib();
    let main_started = Instant::now();
    run_round(&addr, &keys, &app_id, WARM_UP..WARM_UP + MAIN, &tally).await;
    let main_elapsed = main_started.elapsed();
    let rss_after = server.rss_kib();

    // Still serving: health, and a valid postback is accepted.
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/healthz", server.address))
        .send()
        .await
        .expect("healthz after the fuzz");
    assert_eq!(health.status(), 200);
    let resp = client
        .post(format!("{}/v1/postbacks/kochava", server.address))
        .header("x-api-key", &enterprise)
        .json(&json!({"network_name": "Liftoff", "idfa": "F0000000-0000-4000-8000-000000000001"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "a valid postback after the fuzz");

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    println!(
        "hostile[{backend:?}]: requests={} (warm-up {WARM_UP} + {MAIN} in {main_elapsed:.1?}) statuses={:?} \
         rss_kib: start={rss_start} after_warm_up={rss_warm} after={rss_after} elapsed={:.1?}",
        WARM_UP + MAIN,
        tally.statuses,
        started.elapsed()
    );
    assert!(
        tally.violations.is_empty(),
        "{} violations, first ones:\n{}",
        tally.violations.len(),
        tally
            .violations
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let out = server.output();
    assert!(!out.contains("panicked"), "the server panicked:\n{out}");
    assert!(
        !out.contains(" ERROR "),
        "the server logged an error:\n{out}"
    );
    assert!(rss_after < 150 * 1024, "RSS {rss_after} KiB after the fuzz");
    assert!(
        rss_after <= rss_warm + 48 * 1024,
        "RSS grew from {rss_warm} KiB (after the warm-up) to {rss_after} KiB"
    );
    let (status, logs) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit 0:\n{logs}");
}

/// Write `bytes` one at a time, `interval` apart, reading all the while; stop at the
/// close. Returns (time from connect to close, bytes written, bytes received). Fails
/// the test if the server has not closed the connection within `deadline`.
async fn drip(
    addr: &str,
    head: &[u8],
    bytes: &[u8],
    interval: Duration,
    deadline: Duration,
) -> (Duration, usize, Vec<u8>) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head).await.expect("write head");
    let mut received = Vec::new();
    let mut written = 0;
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            started.elapsed() < deadline,
            "still connected after {deadline:?} ({written} bytes dripped, received {:?})",
            String::from_utf8_lossy(&received)
        );
        let due = started + interval * written as u32;
        if written < bytes.len() && Instant::now() >= due {
            if stream.write_all(&bytes[written..=written]).await.is_err() {
                // Closed (reset); keep whatever the server sent before that.
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await
                {
                    received.extend_from_slice(&buf[..n]);
                }
                return (started.elapsed(), written, received);
            }
            written += 1;
        }
        let wake = if written < bytes.len() {
            started + interval * written as u32
        } else {
            started + deadline
        };
        match tokio::time::timeout_at(wake.into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), written, received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
}

/// Slow clients: a request head dripped one byte per second, a connection that sends
/// nothing, a dripped HTTP/2 preface and an idle keep-alive connection are closed by
/// the header-read timeout (1 s here); a body trickled after a complete head gets 408
/// within the request timeout (2 s here). Meanwhile another client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_while_others_are_served() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let (_, key) = create_app_cli(db.url(), "slow", "enterprise");
    let db_url = db.url().to_owned();
    let server = tokio::task::spawn_blocking(move || {
        ServerProcess::start(
            &db_url,
            &[
                ("PBG_HTTP__HEADER_READ_TIMEOUT_MS", "1000"),
                ("PBG_HTTP__REQUEST_TIMEOUT_MS", "2000"),
            ],
        )
    })
    .await
    .unwrap();
    let addr = server.address.trim_start_matches("http://").to_owned();
    let second = Duration::from_secs(1);
    // Header-read timeout 1 s, plus slack for a loaded machine.
    let closed_by = Duration::from_millis(3500);

    // Another client, served all the while.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = tokio::spawn({
        let (stop, base, key) = (stop.clone(), server.address.clone(), key.clone());
        async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            let (mut served, mut slowest) = (0u32, Duration::ZERO);
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let resp = client
                    .post(format!("{base}/v1/postbacks/kochava"))
                    .header("x-api-key", &key)
                    .json(&json!({"network_name": "Liftoff", "idfa": format!("AB000000-0000-4000-8000-{served:012}")}))
                    .send()
                    .await
                    .expect("the other client is served");
                assert_eq!(resp.status(), 200, "the other client's postback");
                slowest = slowest.max(sent.elapsed());
                served += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (served, slowest)
        }
    });

    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let body_head = format!(
        "POST /v1/postbacks/kochava HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    let body = [b' '; 1000];
    let (head_drip, silent, h2_drip, idle, trickle) = tokio::join!(
        drip(&addr, b"", head, second, Duration::from_secs(6)),
        drip(&addr, b"", b"", second, Duration::from_secs(6)),
        drip(&addr, b"", preface, second, Duration::from_secs(6)),
        drip(&addr, head, b"", second, Duration::from_secs(6)),
        drip(
            &addr,
            body_head.as_bytes(),
            &body,
            Duration::from_millis(200),
            Duration::from_secs(6)
        ),
    );
    stop.store(true, Ordering::SeqCst);
    let (served, slowest) = steady.await.unwrap();

    assert!(
        head_drip.0 <= closed_by,
        "dripped head closed after {:?}",
        head_drip.0
    );
    assert!(
        head_drip.1 < head.len(),
        "cut off before the head was complete"
    );
    assert!(
        head_drip.2.is_empty() || head_drip.2.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&head_drip.2)
    );
    assert!(
        silent.0 <= closed_by,
        "silent connection closed after {:?}",
        silent.0
    );
    assert!(
        h2_drip.0 <= closed_by,
        "dripped HTTP/2 preface closed after {:?}",
        h2_drip.0
    );
    assert!(
        h2_drip.1 < preface.len(),
        "cut off before the preface was complete"
    );
    assert!(
        idle.2.starts_with(b"HTTP/1.1 200"),
        "the keep-alive request was answered"
    );
    assert!(
        idle.0 <= closed_by,
        "idle keep-alive connection closed after {:?}",
        idle.0
    );

    let (trickle_after, trickled, answer) = trickle;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a trickled body gets 408, not a 5xx: {answer}"
    );
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(
        trickle_after <= Duration::from_millis(3000),
        "answered and closed within the request timeout, took {trickle_after:?}"
    );
    assert!(
        trickled < body.len(),
        "cut off before the body was complete"
    );
    assert!(
        served >= 20,
        "the other client was served meanwhile ({served} postbacks)"
    );
    assert!(slowest < second, "the other client waited {slowest:?}");
    println!(
        "slow clients: head drip closed after {:?}, silent {:?}, HTTP/2 preface drip {:?}, \
         idle keep-alive {:?}, trickled body answered 408 and closed after {trickle_after:?}; \
         meanwhile {served} postbacks served, slowest {slowest:?}",
        head_drip.0, silent.0, h2_drip.0, idle.0
    );
    let (status, logs) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{logs}");
}

both_backends!(inputs_that_once_got_a_500_or_a_plain_text_400_get_their_spec_answer);

/// Regressions found by the generated requests above.
async fn inputs_that_once_got_a_500_or_a_plain_text_400_get_their_spec_answer(backend: Backend) {
    let Some(app) = crate::helpers::TestApp::spawn(backend).await else {
        return;
    };
    // A Branch `id` of 8,000 incompressible characters was a 500 on PostgreSQL (its
    // dedupe key exceeded the btree entry limit of the unique index).
    let id = Rng::new(7).alnum(8000);
    let branch = json!({
        "id": id,
        "name": "install",
        "last_attributed_touch_data": {"~channel": "Liftoff"},
        "user_data": {"idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC"},
    });
    let resp = app.post_json("branch", Some(&app.api_key), &branch).await;
    let first = crate::helpers::json_body(resp, 200, "long Branch id").await;
    assert_eq!(first["status"], "accepted");
    let resp = app.post_json("branch", Some(&app.api_key), &branch).await;
    let again = crate::helpers::json_body(resp, 200, "long Branch id again").await;
    assert_eq!(again["status"], "duplicate", "still deduplicated by its id");
    assert_eq!(again["event_id"], first["event_id"]);
    let stored = app
        .text(&format!(
            "select partner_event_id from postback_events where cast(id as text) = '{}'",
            first["event_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        stored.as_deref(),
        Some(id.as_str()),
        "the id is stored whole"
    );

    // A partner segment that does not decode was axum's plain-text 400.
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let resp = app
            .client
            .request(method.clone(), app.url("/v1/postbacks/%FF%FE"))
            .send()
            .await
            .unwrap();
        crate::helpers::assert_error(resp, 404, "unknown_partner", &format!("{method} %FF")).await;
    }
    app.stop().await;
}
