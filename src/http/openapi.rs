//! The OpenAPI document, as strict as the code: generated from the routes, then given
//! what route attributes cannot say: one postback path per partner with the methods
//! and fields that partner uses, the error answers each kind of route gives (with
//! their bodies and headers), and the request-head limit every route shares.

use serde_json::{json, Map, Value};

use super::serve::MAX_HEAD_BYTES;
use crate::partners::normalize::MAX_VALUE_CHARS;
use crate::partners::{InputFormat, Method, PartnerId};

/// The finished document.
pub fn finish(generated: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(generated).unwrap_or_else(|_| json!({}));
    add_components(&mut doc);
    if let Some(paths) = doc["paths"].as_object_mut() {
        // Routed as one path, documented as one per partner: each takes other methods
        // and other fields.
        paths.remove("/v1/postbacks/{partner}");
        let dry_run = paths.remove("/v1/postbacks/{partner}/test");
        let dry_run_answer = dry_run
            .as_ref()
            .and_then(|item| item.get("get"))
            .map(|op| op["responses"]["200"].clone())
            .unwrap_or(Value::Null);
        for (path, params) in super::admin::documented_queries() {
            let operation = &mut paths.entry(path).or_insert(json!({}))["get"];
            let list = operation["parameters"].as_array_mut();
            match (list, params) {
                (Some(list), Value::Array(params)) => list.extend(params),
                (None, params) => operation["parameters"] = params,
                _ => {}
            }
        }
        for partner in PartnerId::ALL {
            paths.insert(
                format!("/v1/postbacks/{}", partner.as_str()),
                postback_path(partner),
            );
            paths.insert(
                format!("/v1/postbacks/{}/test", partner.as_str()),
                dry_run_path(partner, &dry_run_answer),
            );
        }
        for (path, item) in paths.iter_mut() {
            for (method, operation) in item.as_object_mut().into_iter().flatten() {
                if METHODS.contains(&method.as_str()) {
                    add_error_answers(path, operation);
                }
            }
        }
    }
    doc
}

const METHODS: [&str; 5] = ["get", "post", "head", "put", "delete"];

fn add_components(doc: &mut Value) {
    let components = &mut doc["components"];
    components["schemas"]["Error"] = json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable, snake_case", "example": "bad_request"},
                "message": {"type": "string", "description": "for people; may change"},
            },
        }},
    });
    components["securitySchemes"]["api_key"] = json!({
        "type": "apiKey", "in": "header", "name": "X-Api-Key",
        "description": "The app's API key (`pbgk_…`)."
    });
    components["securitySchemes"]["api_key_query"] = json!({
        "type": "apiKey", "in": "query", "name": "api_key",
        "description": "The app's API key, for partners that cannot set headers."
    });
}

/// An error answer with the `{"error":{"code","message"}}` body.
fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

/// An error answer that always carries `header`.
fn error_with_header(description: &str, header: &str, schema: Value, about: &str) -> Value {
    let mut answer = error(description);
    answer["headers"][header] = json!({"required": true, "description": about, "schema": schema});
    answer
}

fn retry_after(description: &str) -> Value {
    error_with_header(
        description,
        "Retry-After",
        json!({"type": "integer", "minimum": 0}),
        "seconds to wait",
    )
}

/// The error answers an operation can give, by the kind of route (its tag).
fn add_error_answers(path: &str, operation: &mut Value) {
    let tag = operation["tags"][0].as_str().unwrap_or_default().to_owned();
    let names_an_app = path.contains("{app_id}");
    let mut answers: Vec<(u16, Value)> = vec![(
        431,
        error(&format!(
            "header_too_large: the request line and headers are over {MAX_HEAD_BYTES} bytes"
        )),
    )];
    match tag.as_str() {
        "admin" | "page" => {
            let challenge = if tag == "admin" { "Bearer" } else { "Basic" };
            answers.push((
                401,
                error_with_header(
                    "unauthorized: the admin token is missing or wrong",
                    "WWW-Authenticate",
                    json!({"type": "string", "pattern": format!("^{challenge} ")}),
                    "the login scheme",
                ),
            ));
            answers.push((
                403,
                error("forbidden: no ADMIN_TOKEN is configured, so the admin routes are off"),
            ));
            answers.push((
                429,
                retry_after("rate_limited: too many failed admin logins from this address"),
            ));
            answers.push((
                503,
                retry_after("unavailable: the database does not answer"),
            ));
            if tag == "admin" && operation["requestBody"].is_object() {
                answers.push((
                    400,
                    error(
                        "bad_request: the body is not what the schema says, or a value in it \
                         is refused (for a destination: a URL that is not http(s), or that \
                         points at a private address); the message names it",
                    ),
                ));
                answers.push((
                    408,
                    error("request_timeout: the body did not arrive in time"),
                ));
                answers.push((
                    413,
                    error("payload_too_large: the body is over the body limit"),
                ));
            } else if tag == "admin" {
                answers.push((
                    400,
                    error(
                        "bad_request: a query parameter is unknown, repeated, holds a NUL, or \
                         has a value out of its range; the message names it",
                    ),
                ));
            }
            if names_an_app && tag == "admin" {
                answers.push((
                    404,
                    error("not_found: no such app (or user, for a lookup; or destination)"),
                ));
            }
            if tag == "page" && path.ends_with("/attribution/test") {
                answers.push((
                    403,
                    error(
                        "forbidden: no ADMIN_TOKEN is configured, or the form token is missing \
                         or wrong (or another site sent the form)",
                    ),
                ));
                answers.push((400, error("bad_request: the partner is missing or unknown")));
                answers.push((
                    408,
                    error("request_timeout: the form did not arrive in time"),
                ));
                answers.push((
                    413,
                    error("payload_too_large: the form is over the body limit"),
                ));
            }
            if names_an_app && tag == "page" {
                answers.push((
                    404,
                    json!({"description": "no such app", "content": {"text/html": {"schema": {"type": "string"}}}}),
                ));
            }
        }
        "probes" if path == "/readyz" => {
            answers.push((
                503,
                retry_after("unavailable: the database does not answer"),
            ));
        }
        _ => {}
    }
    let responses = &mut operation["responses"];
    for (status, answer) in answers {
        responses[status.to_string()] = answer;
    }
}

/// What a partner's postback documents: the four attribution keys, the identifier
/// keys, and the identifier a documented example must carry (not an advertising id,
/// which counts as absent when it is all zeros). partners.md has the full tables.
struct PostbackFields {
    attribution: &'static [&'static str],
    identifiers: &'static [&'static str],
    required: &'static str,
}

fn postback_fields(partner: PartnerId) -> PostbackFields {
    match partner {
        PartnerId::Kochava => PostbackFields {
            attribution: &["network_name", "campaign_name", "site_id", "creative_id"],
            identifiers: &["identity_link", "idfa", "idfv", "adid", "android_id"],
            required: "kochava_device_id",
        },
        PartnerId::Tune => PostbackFields {
            attribution: &[
                "advertiser_sub_publisher",
                "advertiser_sub_campaign",
                "advertiser_sub_adgroup",
                "advertiser_sub_ad",
            ],
            identifiers: &["user_id", "ios_ifa", "ios_ifv", "google_aid", "android_id"],
            required: "mat_id",
        },
        PartnerId::Appsflyer => PostbackFields {
            attribution: &["media_source", "campaign", "af_adset", "af_ad"],
            identifiers: &[
                "customer_user_id",
                "idfa",
                "idfv",
                "advertising_id",
                "android_id",
            ],
            required: "appsflyer_id",
        },
        PartnerId::Adjust => PostbackFields {
            attribution: &[
                "network_name",
                "campaign_name",
                "adgroup_name",
                "creative_name",
            ],
            identifiers: &["external_id", "idfa", "idfv", "gps_adid", "android_id"],
            required: "adid",
        },
        PartnerId::Singular => PostbackFields {
            attribution: &["network", "cid", "gid", "creative"],
            identifiers: &["idfa", "idfv", "aifa", "andi"],
            required: "custom_user_id",
        },
        PartnerId::Branch => PostbackFields {
            attribution: &["~channel", "~campaign", "~ad_set_name", "~ad_name"],
            identifiers: &["idfa", "idfv", "aaid", "android_id", "cross_platform_id"],
            required: "developer_identity",
        },
    }
}

/// A present identifier: no surrounding space, no unfilled `{macro}`.
const IDENTIFIER_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$";

fn field_schemas(fields: &PostbackFields) -> (Map<String, Value>, Map<String, Value>) {
    let value = |about: &str| {
        json!({
            "type": "string",
            "maxLength": MAX_VALUE_CHARS,
            "description": about,
        })
    };
    let attribution = fields
        .attribution
        .iter()
        .zip(["source", "campaign", "adgroup", "ad"])
        .map(|(key, field)| (key.to_string(), value(field)))
        .collect();
    let mut ids: Map<String, Value> = fields
        .identifiers
        .iter()
        .map(|key| (key.to_string(), value("identifier")))
        .collect();
    ids.insert(
        fields.required.to_owned(),
        json!({"type": "string", "pattern": IDENTIFIER_PATTERN, "description": "identifier"}),
    );
    (attribution, ids)
}

/// The body or query fields of one partner's postback, as one object schema.
fn fields_schema(partner: PartnerId, fields: &PostbackFields) -> Value {
    let (attribution, ids) = field_schemas(fields);
    if partner == PartnerId::Branch {
        // Branch nests its tags in `last_attributed_touch_data`, devices in `user_data`.
        return json!({
            "type": "object",
            "required": ["user_data"],
            "properties": {
                "last_attributed_touch_data": {"type": "object", "properties": attribution},
                "user_data": {"type": "object", "required": [fields.required], "properties": ids},
                "attributed": {"type": "boolean", "description": "false: organic"},
            },
        });
    }
    let mut properties = attribution;
    properties.extend(ids);
    json!({"type": "object", "required": [fields.required], "properties": properties})
}

fn postback_path(partner: PartnerId) -> Value {
    let fields = postback_fields(partner);
    let schema = fields_schema(partner, &fields);
    let mut item = Map::new();
    for method in [Method::Get, Method::Post] {
        let Some(format) = partner.input(method) else {
            continue;
        };
        let mut operation = postback_operation(partner, method);
        match format {
            InputFormat::Query => {
                let required = fields.required;
                operation["parameters"] = schema["properties"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, schema)| {
                        json!({"name": name, "in": "query", "required": name == required, "schema": schema})
                    })
                    .collect();
            }
            InputFormat::FormBody | InputFormat::JsonBody => {
                let media = if format == InputFormat::FormBody {
                    "application/x-www-form-urlencoded"
                } else {
                    "application/json"
                };
                operation["requestBody"] =
                    json!({"required": true, "content": {media: {"schema": schema}}});
            }
        }
        let name = if method == Method::Get { "get" } else { "post" };
        item.insert(name.to_owned(), operation);
    }
    item.insert(
        "head".to_owned(),
        json!({
            "tags": ["postbacks"],
            "summary": format!("Not a way to deliver a postback: {} takes {}.", partner.display_name(), partner.allowed_methods()),
            "operationId": format!("head_{}", partner.as_str()),
            "responses": {"405": error_with_header(
                "method_not_allowed",
                "Allow",
                json!({"type": "string", "const": partner.allowed_methods()}),
                "the methods this partner uses",
            )},
        }),
    );
    Value::Object(item)
}

/// The dry run of a partner's postback: the same methods, fields and credentials,
/// answered 200 with what the real endpoint would do (also for a payload it would
/// refuse), never 429.
fn dry_run_path(partner: PartnerId, answer: &Value) -> Value {
    let mut item = postback_path(partner);
    for (method, operation) in item.as_object_mut().into_iter().flatten() {
        let id = format!("{method}_{}_test", partner.as_str());
        operation["operationId"] = json!(id);
        if method == "head" {
            continue;
        }
        operation["summary"] = json!(format!(
            "Dry run of one {} postback: what the real endpoint would do.",
            partner.display_name()
        ));
        operation["description"] = json!(
            "Takes the same credentials and payload as the postback itself and answers what \
             would become of it: the verdict (`accepted`, `duplicate`, `organic` or `invalid`), \
             the HTTP status the real endpoint would answer, the reason, the row it would \
             store, and warnings (unfilled macros, missing dimensions, fields the mapping \
             ignores that look like dimensions, all-zero advertising ids, how the event time \
             was read). It stores nothing, counts nothing, uses no quota and works when the \
             quota is used up. A payload the real endpoint refuses with 400 is answered 200 \
             here, with the verdict `invalid`."
        );
        let responses = &mut operation["responses"];
        responses["200"] = answer.clone();
        if let Some(r) = responses.as_object_mut() {
            r.remove("429");
        }
        responses["400"] = error("invalid_payload: the request body could not be read");
        responses["503"] = retry_after(
            "unavailable: the API key is not known yet and the database does not answer",
        );
    }
    item
}

fn postback_operation(partner: PartnerId, method: Method) -> Value {
    let how = match partner.input(method) {
        Some(InputFormat::Query) => "fields in the query string",
        Some(InputFormat::FormBody) => "fields in a form-encoded body (and the query string)",
        _ => "fields in one JSON object",
    };
    json!({
        "tags": ["postbacks"],
        "summary": format!("Receive one {} postback: {how}.", partner.display_name()),
        "description": "The four attribution fields and the identifiers are documented; partners \
            send more, which are kept in the raw payload. A value that is empty, only space or an \
            unfilled `{macro}` counts as absent. No attribution field (or the partner's organic \
            marker) is answered `ignored`; attribution without any identifier is a 400. The API \
            key travels in `X-Api-Key`, the `api_key` query parameter or an `api_key` body field. \
            See partners.md for every field.",
        "operationId": format!("{}_{}", if method == Method::Get { "get" } else { "post" }, partner.as_str()),
        "security": [{"api_key": []}, {"api_key_query": []}],
        "responses": {
            "200": {
                "description": "accepted, duplicate, or ignored (organic)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PostbackAnswer"}}},
                "headers": {
                    "X-RateLimit-Limit": {"description": "installs per hour (standard apps)", "schema": {"type": "integer"}},
                    "X-RateLimit-Remaining": {"description": "installs left this hour", "schema": {"type": "integer"}},
                    "X-RateLimit-Reset": {"description": "unix seconds when the hour ends", "schema": {"type": "integer"}},
                },
            },
            "400": error("invalid_payload: malformed body, an attributed install without any identifier, or a value over 256 characters"),
            "401": error("unauthorized: the API key is missing or unknown"),
            "408": error("request_timeout: the body did not arrive in time"),
            "413": error("payload_too_large: the body is over the limit (64 KiB), also when only declared"),
            "429": retry_after("rate_limited: the app's hourly quota or request limit is used up"),
            "503": retry_after("unavailable: the database does not answer, or too many postbacks wait"),
        },
    })
}
