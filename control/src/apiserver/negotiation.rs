//! The encoding of a response, negotiated from the request's Accept header as Kubernetes does: the most
//! preferred media type the server writes, JSON when the client accepts anything. Objects of kinds with no
//! protobuf message (tables, custom resources) are written as JSON when the client accepts it.

use super::error::ApiError;
use crate::api::conversion::Conversion;
use crate::api::protobuf;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// What the response body is written in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Encoding {
    /// `application/json`.
    Json,
    /// `application/vnd.kubernetes.protobuf`.
    Protobuf,
}

/// The negotiated encoding of one request's responses.
#[derive(Clone, Copy, Debug)]
pub struct Negotiated {
    /// The client's preferred encoding.
    pub encoding: Encoding,
    /// Whether the client also accepts JSON, the fallback for kinds protobuf cannot write.
    json_acceptable: bool,
    /// The version objects of a kind are converted to before they are written, when the request addresses
    /// one served from another version's objects.
    conversion: Option<&'static Conversion>,
}

/// The media types the server writes.
const SERVED: &str = "application/json, application/yaml, application/vnd.kubernetes.protobuf";

impl Negotiated {
    /// JSON, for requests that do not negotiate.
    pub const JSON: Negotiated = Negotiated {
        encoding: Encoding::Json,
        json_acceptable: true,
        conversion: None,
    };

    /// The encoding the request's Accept header prefers; JSON without one.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let Some(accept) = headers
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .filter(|a| !a.trim().is_empty())
        else {
            return Ok(Self::JSON);
        };
        let mut choices: Vec<(f32, Option<Encoding>)> = accept
            .split(',')
            .filter_map(|clause| {
                let mut parts = clause.split(';').map(str::trim);
                let media = parts.next()?.to_ascii_lowercase();
                let mut quality = 1.0;
                for parameter in parts {
                    if let Some(q) = parameter.strip_prefix("q=") {
                        quality = q.parse().unwrap_or(0.0);
                    }
                }
                let encoding = match media.as_str() {
                    "application/json" | "application/yaml" | "application/*" | "*/*" => {
                        Some(Encoding::Json)
                    }
                    protobuf::MEDIA_TYPE => Some(Encoding::Protobuf),
                    _ => None,
                };
                (quality > 0.0).then_some((quality, encoding))
            })
            .collect();
        choices.sort_by(|a, b| b.0.total_cmp(&a.0));
        let json_acceptable = choices.iter().any(|(_, e)| *e == Some(Encoding::Json));
        match choices.iter().find_map(|(_, e)| *e) {
            Some(encoding) => Ok(Self {
                encoding,
                json_acceptable,
                conversion: None,
            }),
            None => Err(ApiError::NotAcceptable(SERVED)),
        }
    }

    /// These responses, with objects (and lists of them) converted to the version `conversion` serves.
    pub fn converting(self, conversion: Option<&'static Conversion>) -> Self {
        Self { conversion, ..self }
    }

    /// `object` with `code`, in the negotiated encoding.
    pub fn respond(self, code: StatusCode, object: &Value) -> Response {
        if let Some(conversion) = self.conversion {
            let converted = conversion.served(object.clone());
            return Self {
                conversion: None,
                ..self
            }
            .respond(code, &converted);
        }
        if self.encoding == Encoding::Protobuf {
            match protobuf::encode(object) {
                Ok(bytes) => return with_type(code, bytes, protobuf::MEDIA_TYPE),
                Err(error) if self.json_acceptable => {
                    if !matches!(error, protobuf::ProtobufError::UnknownKind { .. }) {
                        tracing::warn!(%error, "an object could not be written as protobuf; writing JSON");
                    }
                }
                Err(protobuf::ProtobufError::UnknownKind { .. }) => {
                    return ApiError::NotAcceptable("application/json, application/yaml")
                        .into_response();
                }
                Err(error) => {
                    return ApiError::Internal(error.to_string()).into_response();
                }
            }
        }
        match serde_json::to_vec(object) {
            Ok(json) => with_type(code, json, "application/json"),
            Err(error) => ApiError::Internal(error.to_string()).into_response(),
        }
    }

    /// `error` as a Status, in the negotiated encoding.
    pub fn error(self, error: ApiError) -> Response {
        let (code, _) = error.code_and_reason();
        if code.is_server_error() {
            tracing::error!(%error, "request failed");
        }
        self.respond(code, &error.status())
    }
}

fn with_type(code: StatusCode, body: impl IntoResponse, media: &'static str) -> Response {
    let mut response = (code, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate(accept: &str) -> Result<Encoding, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        Negotiated::from_headers(&headers).map(|n| n.encoding)
    }

    #[test]
    fn the_first_served_media_type_wins() {
        assert_eq!(
            negotiate("application/vnd.kubernetes.protobuf, application/json").unwrap(),
            Encoding::Protobuf
        );
        assert_eq!(
            negotiate("application/json, application/vnd.kubernetes.protobuf").unwrap(),
            Encoding::Json
        );
        assert_eq!(
            negotiate("application/vnd.kubernetes.protobuf;q=0.5, application/json").unwrap(),
            Encoding::Json
        );
        assert_eq!(negotiate("*/*").unwrap(), Encoding::Json);
        assert_eq!(
            negotiate("text/html, application/vnd.kubernetes.protobuf").unwrap(),
            Encoding::Protobuf
        );
        assert!(matches!(
            negotiate("text/html"),
            Err(ApiError::NotAcceptable(_))
        ));
    }
}
