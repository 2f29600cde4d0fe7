//! API errors, each of which is a Kubernetes `Status` response.

use crate::api::resources::ResourceType;
use crate::api::validation::Cause;
use crate::store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Everything the apiserver can refuse, with the Kubernetes reason and code each maps to.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404 NotFound.
    #[error("{resource} {name:?} not found")]
    NotFound {
        /// The group-qualified resource, e.g. `deployments.apps`.
        resource: String,
        /// The object's name.
        name: String,
    },
    /// 404 NotFound for a path the server does not serve.
    #[error("the server could not find the requested resource")]
    PathNotFound,
    /// 401 Unauthorized: no valid credentials.
    #[error("Unauthorized")]
    Unauthorized,
    /// 409 AlreadyExists.
    #[error("{resource} {name:?} already exists")]
    AlreadyExists {
        /// The group-qualified resource.
        resource: String,
        /// The object's name.
        name: String,
    },
    /// 409 Conflict.
    #[error("Operation cannot be fulfilled on {resource} {name:?}: {detail}")]
    Conflict {
        /// The group-qualified resource.
        resource: String,
        /// The object's name.
        name: String,
        /// Why.
        detail: String,
    },
    /// 409 Conflict of a server-side apply with other managers' fields.
    #[error("{}", .0.message)]
    ApplyConflict(crate::api::managed_fields::Conflicts),
    /// 422 Invalid, with one cause per bad field.
    #[error("{kind} {name:?} is invalid: {}", render_causes(.causes))]
    Invalid {
        /// The group-qualified kind, e.g. `Deployment.apps`.
        kind: String,
        /// The object's name.
        name: String,
        /// The bad fields.
        causes: Vec<Cause>,
    },
    /// 400 BadRequest.
    #[error("{0}")]
    BadRequest(String),
    /// 403 Forbidden.
    #[error("{0}")]
    Forbidden(String),
    /// 405 MethodNotAllowed.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// 415 UnsupportedMediaType.
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(&'static str),
    /// 406 NotAcceptable: the client accepts no media type the response can be written in.
    #[error("only the following media types are accepted: {0}")]
    NotAcceptable(&'static str),
    /// 429 TooManyRequests: an eviction its disruption budget forbids now.
    #[error("{message}")]
    TooManyRequests {
        /// What was refused.
        message: String,
        /// Why (the budget's numbers), a `DisruptionBudget` cause.
        cause: String,
    },
    /// 413 RequestEntityTooLarge.
    #[error("the request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// 410 Expired.
    #[error("{0}")]
    Expired(String),
    /// 504 Timeout: a resourceVersion from the future, or a store that did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// 503 ServiceUnavailable: a node agent or the store could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// 500 InternalError: the store failed.
    #[error("{0}")]
    Internal(String),
}

fn render_causes(causes: &[Cause]) -> String {
    match causes {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter()
                .map(Cause::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `deployments.apps`, or `pods` for core.
pub fn qualified_resource(resource: &ResourceType) -> String {
    if resource.group.is_empty() {
        resource.plural.to_owned()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    }
}

/// `Deployment.apps`, or `Pod` for core.
pub fn qualified_kind(resource: &ResourceType) -> String {
    if resource.group.is_empty() {
        resource.kind.to_owned()
    } else {
        format!("{}.{}", resource.kind, resource.group)
    }
}

impl ApiError {
    /// A NotFound for one object of a type.
    pub fn not_found(resource: &ResourceType, name: &str) -> Self {
        ApiError::NotFound {
            resource: qualified_resource(resource),
            name: name.to_owned(),
        }
    }

    /// A Conflict for a write based on an outdated resourceVersion.
    pub fn stale(resource: &ResourceType, name: &str) -> Self {
        ApiError::Conflict {
            resource: qualified_resource(resource),
            name: name.to_owned(),
            detail: "the object has been modified; please apply your changes to the latest version and try again".into(),
        }
    }

    /// The HTTP code and Kubernetes reason.
    pub fn code_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound { .. } | ApiError::PathNotFound => {
                (StatusCode::NOT_FOUND, "NotFound")
            }
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            ApiError::AlreadyExists { .. } => (StatusCode::CONFLICT, "AlreadyExists"),
            ApiError::Conflict { .. } | ApiError::ApplyConflict(_) => {
                (StatusCode::CONFLICT, "Conflict")
            }
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType")
            }
            ApiError::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "NotAcceptable"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
            ApiError::Expired(_) => (StatusCode::GONE, "Expired"),
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }

    /// The `Status` object of this error.
    pub fn status(&self) -> Value {
        let (code, reason) = self.code_and_reason();
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.to_string(), "reason": reason, "code": code.as_u16(),
        });
        let details = match self {
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name, .. } => {
                let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
                Some(json!({"name": name, "group": group, "kind": kind}))
            }
            ApiError::Invalid { kind, name, causes } => {
                let (kind, group) = kind.split_once('.').unwrap_or((kind, ""));
                Some(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
            }
            ApiError::PathNotFound => Some(json!({})),
            ApiError::TooManyRequests { cause, .. } => Some(json!({
                "causes": [{"reason": "DisruptionBudget", "message": cause}],
                "retryAfterSeconds": 10,
            })),
            ApiError::ApplyConflict(conflicts) => {
                let causes: Vec<Value> = conflicts
                    .causes
                    .iter()
                    .map(|(field, message)| {
                        json!({"reason": "FieldManagerConflict", "message": message, "field": field})
                    })
                    .collect();
                Some(json!({"causes": causes}))
            }
            _ => None,
        };
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }

    /// Maps a store error on one object of `resource` to its API error.
    pub fn from_store(error: StoreError, resource: &ResourceType, name: &str) -> Self {
        match error {
            StoreError::AlreadyExists(_) => ApiError::AlreadyExists {
                resource: qualified_resource(resource),
                name: name.to_owned(),
            },
            StoreError::NotFound(_) => ApiError::not_found(resource, name),
            StoreError::Conflict { .. } => ApiError::stale(resource, name),
            other => other.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Expired {
                requested,
                compacted,
            } => ApiError::Expired(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            StoreError::FutureRevision { requested, .. } => {
                ApiError::Timeout(format!("Too large resource version: {requested}"))
            }
            StoreError::Unavailable(detail) => ApiError::Unavailable(detail),
            StoreError::Timeout(detail) => ApiError::Timeout(detail),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, _) = self.code_and_reason();
        if code.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        (code, Json(self.status())).into_response()
    }
}
