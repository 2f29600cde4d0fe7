//! Who is asking and whether they may, before any handler runs: a bearer token names the user (from the token
//! file, or a bootstrap or user token Secret; no token is the anonymous user when that is allowed, else 401), then the authorizers decide in the configured order
//! (AlwaysAllow, Node, RBAC); a request none allows gets 403 with Kubernetes' wording.

use super::ApiServer;
use super::dashboard;
use super::error::ApiError;
use super::metrics::RequestKind;
use super::objects::{decode_body, decode_stored, read_body};
use crate::api::impersonation;
use crate::api::node_authorizer::{self, Decision, PodGraph};
use crate::api::rbac::{AUTHENTICATED, MASTERS, Policy, Request, User};
use crate::api::request_info::{self, QueryFacts};
use crate::api::service_account_tokens;
use crate::api::{resources, tokens};
use axum::body::Body;
use axum::extract::State;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header;
use k8s_openapi::api::core::v1::{Pod, Secret};
use std::collections::HashMap;

tokio::task_local! {
    /// The user of the request being served (absent for the server's own writes).
    pub(super) static REQUESTER: User;
}

/// An authorizer, as `--authorization-mode` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationMode {
    /// Every request is allowed.
    AlwaysAllow,
    /// Node agents get what their pods need (see `api::node_authorizer`).
    Node,
    /// Roles and bindings decide.
    Rbac,
}

impl std::str::FromStr for AuthorizationMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "AlwaysAllow" => Ok(Self::AlwaysAllow),
            "Node" => Ok(Self::Node),
            "RBAC" => Ok(Self::Rbac),
            other => Err(format!(
                "unknown authorization mode {other:?} (known: AlwaysAllow, Node, RBAC)"
            )),
        }
    }
}

/// How requests are authenticated and authorized.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The users of the accepted bearer tokens.
    pub tokens: HashMap<String, User>,
    /// Whether a request without credentials is served, as `system:anonymous`.
    pub anonymous: bool,
    /// The authorizers, asked in order.
    pub modes: Vec<AuthorizationMode>,
}

impl Default for AuthConfig {
    /// Everything allowed, to anyone: a development server on a loopback address.
    fn default() -> Self {
        Self {
            tokens: HashMap::new(),
            anonymous: true,
            modes: vec![AuthorizationMode::AlwaysAllow],
        }
    }
}

fn anonymous() -> User {
    User {
        name: "system:anonymous".into(),
        groups: vec!["system:unauthenticated".into()],
    }
}

impl ApiServer {
    /// The user of a request's credentials; `None` when they are wrong, or missing where required.
    fn authenticate(&self, headers: &http::HeaderMap) -> Option<User> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return self.auth.anonymous.then(anonymous);
        };
        let token = value.to_str().ok()?.strip_prefix("Bearer ")?.trim();
        self.user_of_token(token)
    }

    /// The user a bearer token authenticates, in `system:authenticated`: a token of the token file, a
    /// bootstrap or user token kept as a Secret, or a service account's token.
    pub(super) fn user_of_token(&self, token: &str) -> Option<User> {
        let mut user = match self.auth.tokens.get(token) {
            Some(user) => user.clone(),
            None if service_account_tokens::looks_like_jwt(token) => {
                self.user_of_service_account_token(token)?
            }
            None => self.user_of_token_secret(token)?,
        };
        if !user.groups.iter().any(|g| g == AUTHENTICATED) {
            user.groups.push(AUTHENTICATED.into());
        }
        Some(user)
    }

    /// The user of a bootstrap or user token kept as a Secret.
    fn user_of_token_secret(&self, token: &str) -> Option<User> {
        let (id, secret) = tokens::split_token(token)?;
        let secrets = resources::by_path("", "v1", "secrets")?;
        [
            tokens::bootstrap_secret_name(id),
            tokens::user_secret_name(id),
        ]
        .iter()
        .find_map(|name| self.read(secrets, Some(tokens::TOKEN_NAMESPACE), name).ok())
        .and_then(|kv| decode_stored::<Secret>(&kv.value).ok())
        .and_then(|stored| tokens::user_of_secret(&stored, secret, jiff::Timestamp::now()))
    }
}

/// Kubernetes' 403 message: `pods "web" is forbidden: User "alice" cannot get resource "pods" ...`.
fn forbidden(user: &User, request: &Request, reason: Option<String>) -> ApiError {
    let refusal = crate::api::rbac::refusal(user, request);
    let refusal = match reason {
        Some(reason) => format!("{refusal}: {reason}"),
        None => refusal,
    };
    ApiError::Forbidden(match request {
        Request::Resource(asked) => {
            let qualified = if asked.group.is_empty() {
                asked.resource.clone()
            } else {
                format!("{}.{}", asked.resource, asked.group)
            };
            match &asked.name {
                Some(name) => format!("{qualified} {name:?} is forbidden: {refusal}"),
                None => format!("{qualified} is forbidden: {refusal}"),
            }
        }
        Request::NonResource { .. } => format!("forbidden: {refusal}"),
    })
}

#[derive(serde::Deserialize, Default)]
struct AuthQuery {
    watch: Option<String>,
    #[serde(rename = "fieldSelector")]
    field_selector: Option<String>,
}

/// The user a client certificate (verified against the cluster CA by the TLS layer) names: its common name,
/// and its organizations as groups. Put on each request of the connection by the server.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Option<User>);

impl ClientCertificate {
    /// The identity in a DER certificate.
    pub fn from_der(der: &[u8]) -> Self {
        Self(crate::pki::subject_of(der).map(|(name, groups)| User { name, groups }))
    }
}

/// The paths served to anyone: the CA certificate, which joining nodes check against their token's hash.
const PUBLIC_PATHS: [&str; 1] = ["/cacerts"];

/// The paths a request without credentials may read, as Kubernetes' `system:public-info-viewer` opens them to
/// anonymous users; wrong credentials still get 401 there.
const PUBLIC_INFO_PATHS: [&str; 4] = ["/healthz", "/livez", "/readyz", "/version"];

/// The middleware every request passes: authentication, then authorization.
pub(super) async fn guard(
    State(server): State<ApiServer>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let anonymous_info = PUBLIC_INFO_PATHS.contains(&path)
        && request.method() == http::Method::GET
        && !request.headers().contains_key(header::AUTHORIZATION)
        && request
            .extensions()
            .get::<ClientCertificate>()
            .is_none_or(|c| c.0.is_none());
    if PUBLIC_PATHS.contains(&path)
        || anonymous_info
        || dashboard::is_public(request.method(), path)
    {
        return next.run(request).await;
    }
    let certified = request
        .extensions()
        .get::<ClientCertificate>()
        .and_then(|c| c.0.clone());
    let Some(user) = certified.or_else(|| server.authenticate(request.headers())) else {
        return ApiError::Unauthorized.into_response();
    };
    let user = match server.impersonated(user, request.headers()) {
        Ok(user) => user,
        Err(error) => return error.into_response(),
    };
    let query: AuthQuery = request
        .uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let facts = QueryFacts {
        watch: matches!(query.watch.as_deref(), Some("1" | "true" | "True")),
        field_selector: query.field_selector.as_deref(),
    };
    let info = request_info::resolve(request.method(), request.uri().path(), facts);
    let started = std::time::Instant::now();
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let kind = RequestKind::of(
        &info,
        request.method(),
        request.uri().query().unwrap_or_default(),
        content_type,
    );
    let asked = &info.request;
    let creates = matches!(asked, Request::Resource(r) if r.name.is_none() && r.verb == "create");
    // A node may create only its own Node and Lease: the name is in the body.
    let (request, created_name) = if creates && node_authorizer::node_of(&user).is_some() {
        let (parts, body) = request.into_parts();
        let bytes = match read_body(body).await {
            Ok(bytes) => bytes,
            Err(error) => return error.into_response(),
        };
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let name = decode_body(content_type, &bytes)
            .ok()
            .and_then(|o| o["metadata"]["name"].as_str().map(str::to_owned));
        (
            axum::extract::Request::from_parts(parts, Body::from(bytes)),
            name,
        )
    } else {
        (request, None)
    };
    match server.authorize(&user, asked, created_name.as_deref()) {
        Ok(()) => {
            let mut request = request;
            request.extensions_mut().insert(info);
            let response = REQUESTER.scope(user, next.run(request)).await;
            server.metrics.record(kind, started, response)
        }
        Err(error) => {
            tracing::debug!(user = %user.name, error = %error, "request refused");
            server.metrics.record(kind, started, error.into_response())
        }
    }
}

impl ApiServer {
    /// The identity a request is served as: its own, or the one its impersonation headers name when every
    /// part of it is allowed (`impersonate` on users, groups, uids, userextras).
    fn impersonated(&self, user: User, headers: &http::HeaderMap) -> Result<User, ApiError> {
        let asked = impersonation::from_headers(headers)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let Some(asked) = asked else {
            return Ok(user);
        };
        for check in asked.checks() {
            self.authorize(&user, &check, None)?;
        }
        tracing::debug!(user = %user.name, as_user = %asked.user, "impersonating");
        Ok(asked.user())
    }

    /// Asks the authorizers in order; the first to allow wins.
    pub(super) fn authorize(
        &self,
        user: &User,
        asked: &Request,
        created_name: Option<&str>,
    ) -> Result<(), ApiError> {
        let mut reason = None;
        for mode in &self.auth.modes {
            match mode {
                AuthorizationMode::AlwaysAllow => return Ok(()),
                AuthorizationMode::Node => {
                    let Some(node) = node_authorizer::node_of(user) else {
                        continue;
                    };
                    match node_authorizer::authorize(node, asked, created_name, self) {
                        Decision::Allow => return Ok(()),
                        Decision::NoOpinion(why) => reason = why.or(reason),
                    }
                }
                AuthorizationMode::Rbac => {
                    if user.groups.iter().any(|g| g == MASTERS)
                        || self.rbac_policy(asked)?.authorize(user, asked).is_ok()
                    {
                        return Ok(());
                    }
                }
            }
        }
        Err(forbidden(user, asked, reason))
    }

    /// The roles and bindings that can apply to a request: cluster-wide ones and its namespace's.
    pub(super) fn rbac_policy(&self, asked: &Request) -> Result<Policy, ApiError> {
        self.rbac_policy_in(match asked {
            Request::Resource(r) => r.namespace.as_deref(),
            Request::NonResource { .. } => None,
        })
    }

    /// The cluster-wide roles and bindings, and those of `namespace`.
    pub(super) fn rbac_policy_in(&self, namespace: Option<&str>) -> Result<Policy, ApiError> {
        let rbac = |plural| {
            resources::by_path("rbac.authorization.k8s.io", "v1", plural)
                .ok_or_else(|| ApiError::Internal(format!("{plural} are not served")))
        };
        let cluster_role_bindings = self.list_of(rbac("clusterrolebindings")?, None)?;
        let cluster_roles = self.list_of(rbac("clusterroles")?, None)?;
        let (roles, role_bindings) = match namespace {
            Some(ns) => (
                self.list_of(rbac("roles")?, Some(ns))?,
                self.list_of(rbac("rolebindings")?, Some(ns))?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        Ok(Policy {
            roles,
            cluster_roles,
            role_bindings,
            cluster_role_bindings,
        })
    }
}

impl PodGraph for ApiServer {
    fn node_of_pod(&self, namespace: &str, name: &str) -> Option<String> {
        let pods = resources::by_path("", "v1", "pods")?;
        let kv = self.read(pods, Some(namespace), name).ok()?;
        let pod: Pod = decode_stored(&kv.value).ok()?;
        pod.spec?.node_name
    }

    fn pods_on(&self, node: &str, namespace: &str) -> Vec<Pod> {
        let pods: Vec<Pod> = self.list_in("pods", namespace).unwrap_or_default();
        pods.into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .collect()
    }
}
