//! Request bodies and query strings read into typed values, with problems
//! that name the offending field but never quote what was sent (serde's own
//! messages quote values: `invalid type: string "Иванов"`).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// A person id from the path; a problem when it is not one.
pub fn person_id(raw: &str) -> Result<i64, Problem> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        Problem::bad_request("invalid-person-id", "a person id is a positive integer")
    })
}

/// A JSON body (`application/json` or `application/fhir+json`); unknown
/// fields are refused by the types themselves (`deny_unknown_fields`).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("application/json")
                    || v.eq_ignore_ascii_case("application/fhir+json")
            });
        if !json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send the body as application/json (or application/fhir+json)",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body-too-large",
                        "Body too large",
                        "the request body exceeds the configured limit (api.max_body_bytes)",
                    )
                } else {
                    Problem::bad_request("unreadable-body", "the request body could not be read")
                }
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses `bytes` as `T`; the problem names the path and the kind of
/// error only.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!(
                    "the body is not valid JSON (line {}, column {})",
                    inner.line(),
                    inner.column()
                )
            }
            _ => describe_data_error(&path, &inner.to_string()),
        };
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "Invalid request body",
            detail,
        )
    })
}

/// serde's message reduced to what may be shown: the names of unknown or
/// missing fields (they come from the schema, not from the values).
fn describe_data_error(path: &str, message: &str) -> String {
    let at = if path.is_empty() || path == "." {
        String::new()
    } else {
        format!(" at `{path}`")
    };
    let field_of = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').nth(1))
            .filter(|name| name.len() <= 64 && name.chars().all(|c| c.is_ascii_graphic()))
            .map(str::to_string)
    };
    if let Some(name) = field_of("unknown field ") {
        format!("unknown field `{name}`{at}")
    } else if let Some(name) = field_of("missing field ") {
        format!("missing field `{name}`{at}")
    } else if message.starts_with("unknown variant") {
        format!("a value not allowed{at}")
    } else if message.starts_with("invalid type") {
        format!("a value of the wrong type{at}")
    } else {
        format!("an invalid value{at}")
    }
}

/// A query string; unknown parameters are refused by the type. Every
/// parameter arrives as text (`Option<String>` fields), a parameter given
/// twice keeps its last value.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let query = parts.uri.query().unwrap_or_default();
        let object: serde_json::Map<String, serde_json::Value> = form_pairs(query)
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        serde_path_to_error::deserialize(serde_json::Value::Object(object))
            .map(QueryParams)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                Problem::bad_request(
                    "invalid-query",
                    describe_data_error(&path, &message).replace("field", "parameter"),
                )
            })
    }
}

/// `a=1&b=x%20y` → pairs, percent- and `+`-decoded (invalid UTF-8 lossily).
fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_decoded() {
        assert_eq!(
            form_pairs("identifier=urn%3Aoid%3A1.2|112+233&x="),
            vec![
                ("identifier".to_string(), "urn:oid:1.2|112 233".to_string()),
                ("x".to_string(), String::new())
            ]
        );
        assert_eq!(decode("%D0%98"), "И");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }

    #[test]
    fn data_errors_never_quote_values() {
        let d = describe_data_error("last_name", "invalid type: string \"Иванов\", expected u32");
        assert_eq!(d, "a value of the wrong type at `last_name`");
        let d = describe_data_error(".", "unknown field `nmae`, expected one of `name`");
        assert_eq!(d, "unknown field `nmae`");
    }
}
