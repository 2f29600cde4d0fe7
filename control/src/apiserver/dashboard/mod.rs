//! The web dashboard under `/ui/`: its page and scripts (served to anyone: they hold no data), and its login.
//! The page calls the Kubernetes API itself with the logged-in user's bearer token, so what it shows and may
//! do is what RBAC grants that user.
//!
//! Login: `POST /ui/login-codes` (any authenticated user, for themselves; `wasmkube dashboard` calls it) makes
//! a one-time code that works for five minutes; the page exchanges it once at `POST /ui/login` for a session
//! token of the same user (a user token Secret, twelve hours), and `DELETE /ui/session` revokes that session.

use super::auth::REQUESTER;
use super::error::ApiError;
use super::objects::{Deletion, decode_stored};
use super::{ApiServer, Target};
use crate::api::rbac::User;
use crate::api::{resources, tokens};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post};
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

/// How long a login code works.
const LOGIN_CODE_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);
/// How long a dashboard session works.
const SESSION_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_hours(12);
/// The label of the user token Secrets that are dashboard sessions (the ones logging out revokes).
const SESSION_LABEL: &str = "wasmkube.io/dashboard-session";
/// The field manager of what the dashboard's login writes.
const MANAGER: &str = "wasmkube-dashboard";
/// The largest login request read (a code is 23 bytes).
const LOGIN_BODY_LIMIT: usize = 1024;

/// The login code path: authenticated, authorized as the non-resource URL it is.
pub(super) const LOGIN_CODES_PATH: &str = "/ui/login-codes";
/// The session path: authenticated, authorized as the non-resource URL it is.
pub(super) const SESSION_PATH: &str = "/ui/session";

/// The page, its script and its style sheet, built into the binary.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "/ui/",
        "text/html; charset=utf-8",
        include_str!("index.html"),
    ),
    (
        "/ui/app.js",
        "text/javascript; charset=utf-8",
        include_str!("app.js"),
    ),
    (
        "/ui/app.css",
        "text/css; charset=utf-8",
        include_str!("app.css"),
    ),
];

/// Whether a request needs no credentials: the page and its assets, and exchanging a login code (the code is
/// the credential).
pub(super) fn is_public(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD => {
            path == "/ui" || (path.starts_with("/ui/") && !is_authenticated_path(path))
        }
        Method::POST => path == "/ui/login",
        _ => false,
    }
}

fn is_authenticated_path(path: &str) -> bool {
    path == LOGIN_CODES_PATH || path == SESSION_PATH
}

/// The dashboard's routes.
pub(super) fn routes() -> Router<ApiServer> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(asset))
        .route("/ui/{file}", get(asset))
        .route("/ui/login", post(exchange_login_code))
        .route(LOGIN_CODES_PATH, post(create_login_code))
        .route(SESSION_PATH, delete(end_session))
}

/// One of [`ASSETS`], with headers that keep the page to its own scripts and out of frames.
async fn asset(request: Request) -> Response {
    let Some((_, content_type, body)) = ASSETS
        .iter()
        .find(|(path, _, _)| *path == request.uri().path())
    else {
        return ApiError::PathNotFound.into_response();
    };
    let mut response = (StatusCode::OK, *body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, *content_type),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A handler's answer, or its error as a Status.
fn answer(result: Result<impl IntoResponse, ApiError>) -> Response {
    match result {
        Ok(done) => done.into_response(),
        Err(error) => error.into_response(),
    }
}

fn token_secrets() -> Result<Target, ApiError> {
    Ok(Target {
        resource: resources::by_path("", "v1", "secrets")
            .ok_or_else(|| ApiError::Internal("secrets are not served".into()))?,
        namespace: Some(tokens::TOKEN_NAMESPACE.to_owned()),
        conversion: None,
    })
}

fn new_token(user: &User, lifetime: jiff::SignedDuration) -> tokens::NewToken {
    tokens::NewToken {
        id: tokens::random_part(6),
        secret: tokens::random_part(16),
        user: Some(user.name.clone()),
        groups: user.groups.clone(),
        expiration: Some(jiff::Timestamp::now() + lifetime),
        description: Some("dashboard".into()),
    }
}

/// `POST /ui/login-codes`: a one-time login code for the requester.
async fn create_login_code(State(server): State<ApiServer>) -> Response {
    let result = async {
        let user = REQUESTER
            .try_with(User::clone)
            .map_err(|_| ApiError::Internal("the request has no user".into()))?;
        let code = new_token(&user, LOGIN_CODE_LIFETIME);
        let secret = serde_json::to_value(tokens::login_code_secret(&code))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        server.create_by(&token_secrets()?, secret, MANAGER).await?;
        tracing::info!(user = %user.name, "dashboard login code issued");
        Ok::<_, ApiError>(json!({
            "code": format!("{}.{}", code.id, code.secret),
            "user": user.name,
            "expiration": code.expiration.map(|at| at.to_string()),
        }))
    };
    answer(
        result
            .await
            .map(|body| (StatusCode::CREATED, axum::Json(body))),
    )
}

#[derive(serde::Deserialize)]
struct LoginRequest {
    code: String,
}

/// `POST /ui/login` with `{"code": "..."}`: the code's session token, once; 401 for a wrong, used or expired
/// code.
async fn exchange_login_code(State(server): State<ApiServer>, request: Request) -> Response {
    let result = async {
        let body = axum::body::to_bytes(request.into_body(), LOGIN_BODY_LIMIT)
            .await
            .map_err(|_| ApiError::BadRequest("the login request is too large".into()))?;
        let login: LoginRequest = serde_json::from_slice(&body).map_err(|_| {
            ApiError::BadRequest(r#"the login request must be {"code": "..."}"#.into())
        })?;
        let (id, code_secret) =
            tokens::split_token(login.code.trim()).ok_or(ApiError::Unauthorized)?;
        let target = token_secrets()?;
        let stored = server
            .read(
                target.resource,
                target.namespace.as_deref(),
                &tokens::login_code_secret_name(id),
            )
            .map_err(|_| ApiError::Unauthorized)?;
        let secret: Secret = decode_stored(&stored.value)?;
        let user = tokens::user_of_login_code(&secret, code_secret, jiff::Timestamp::now())
            .ok_or(ApiError::Unauthorized)?;
        // Deleting exactly this version of the code is what makes it one-time: a second exchange finds it
        // gone (or changed) and fails.
        let once = Deletion {
            uid: secret.metadata.uid.clone(),
            resource_version: Some(stored.mod_revision.to_string()),
            propagation_policy: "Background".into(),
            ..Deletion::default()
        };
        server
            .delete(&target, &tokens::login_code_secret_name(id), &once)
            .await
            .map_err(|_| ApiError::Unauthorized)?;
        let session = new_token(&user, SESSION_LIFETIME);
        let mut secret = serde_json::to_value(tokens::token_secret(&session))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        secret["metadata"]["labels"] = json!({ SESSION_LABEL: "true" });
        server.create_by(&target, secret, MANAGER).await?;
        tracing::info!(user = %user.name, "dashboard session started");
        Ok::<_, ApiError>(json!({
            "token": format!("{}.{}", session.id, session.secret),
            "user": user.name,
            "expiration": session.expiration.map(|at| at.to_string()),
        }))
    };
    answer(result.await.map(axum::Json))
}

/// `DELETE /ui/session`: revokes the bearer token of the request when it is a dashboard session (any other
/// token a user logged in with is theirs to keep).
async fn end_session(State(server): State<ApiServer>, request: Request) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| tokens::split_token(token.trim()))
        .map(|(id, _)| tokens::user_secret_name(id));
    let result = async {
        let target = token_secrets()?;
        let Some(name) = bearer else {
            return Ok(());
        };
        let Ok(stored) = server.read(target.resource, target.namespace.as_deref(), &name) else {
            return Ok(());
        };
        let secret: Secret = decode_stored(&stored.value)?;
        let is_session = secret
            .metadata
            .labels
            .as_ref()
            .is_some_and(|labels| labels.get(SESSION_LABEL).is_some_and(|v| v == "true"));
        if is_session {
            let deletion = Deletion {
                uid: secret.metadata.uid.clone(),
                propagation_policy: "Background".into(),
                ..Deletion::default()
            };
            server.delete(&target, &name, &deletion).await?;
        }
        Ok::<_, ApiError>(())
    };
    answer(result.await.map(|()| StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_page_and_the_code_exchange_are_public() {
        for (method, path) in [
            (Method::GET, "/ui"),
            (Method::GET, "/ui/"),
            (Method::GET, "/ui/app.js"),
            (Method::HEAD, "/ui/app.css"),
            (Method::POST, "/ui/login"),
        ] {
            assert!(is_public(&method, path), "{method} {path}");
        }
        for (method, path) in [
            (Method::POST, "/ui/login-codes"),
            (Method::GET, "/ui/login-codes"),
            (Method::DELETE, "/ui/session"),
            (Method::GET, "/ui/session"),
            (Method::POST, "/ui/app.js"),
            (Method::GET, "/uix"),
            (Method::GET, "/api/v1/pods"),
        ] {
            assert!(!is_public(&method, path), "{method} {path}");
        }
    }
}
