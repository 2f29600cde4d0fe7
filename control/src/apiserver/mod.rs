//! The Kubernetes-compatible HTTP API over the store: REST paths of every served resource, discovery and
//! OpenAPI, Status errors. It is the only component that touches the store.

mod admission;
pub mod auth;
mod component_statuses;
mod custom_metrics;
mod dashboard;
mod discovery;
pub mod error;
mod logs;
mod metrics;
mod negotiation;
mod node_agent;
pub mod objects;
mod openapi_schemas;
mod pod_admission;
mod pod_security;
mod pod_streams;
mod proxy;
mod rbac_escalation;
mod resource_metrics;
mod reviews;
pub mod service_account_admission;
pub mod service_network;
mod shared_events;
mod stored_json;
mod watch;

use crate::api::conversion::{self, Conversion};
use crate::api::request_info::{ApiPath, RequestInfo, ResourcePath};
use crate::api::resources::{ResourceType, Subresource};
use crate::api::table;
use crate::store::Store;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use error::ApiError;
use negotiation::{Encoding, Negotiated};
use objects::{Deletion, Query, Written, decode_body, list_object, read_body};
use serde_json::Value;
use service_network::ServiceNetwork;
use std::collections::VecDeque;
use std::sync::Arc;

/// The apiserver's shared state: a cheap handle to the store.
#[derive(Clone)]
pub struct ApiServer {
    store: Arc<dyn Store>,
    /// Reaches node agents (logs).
    http: reqwest::Client,
    /// Reaches pods for the proxy subresources: without the apiserver's client certificate.
    pod_http: reqwest::Client,
    /// The ranges Services get cluster IPs and node ports from.
    service_network: Arc<ServiceNetwork>,
    /// Held from reading which addresses are taken to writing the Service that takes one.
    service_writes: Arc<tokio::sync::Mutex<()>>,
    /// Held while a pod is checked against quotas and stored.
    pod_admission: Arc<tokio::sync::Mutex<()>>,
    /// Set when the server shuts down: open watches end.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
    /// Who may do what.
    auth: Arc<auth::AuthConfig>,
    /// The cluster CA's certificate (PEM), when the server serves TLS: served at `/cacerts`.
    ca_pem: Option<Arc<str>>,
    /// `https` when node agents are reached with the apiserver's client certificate, else `http`.
    agent_scheme: &'static str,
    /// Pod Security admission's defaults and exemptions.
    pod_security: Arc<crate::api::pod_security::Config>,
    /// Signs and verifies service account tokens, when the server has a key.
    token_signer: Option<Arc<crate::api::service_account_tokens::Signer>>,
    /// Which control plane components run in this server's process.
    in_process: InProcess,
    /// Recent changes, decoded once for every watch.
    shared_events: Arc<shared_events::SharedEvents>,
    /// Requests served, by kind and code, and their durations (`/metrics`).
    metrics: Arc<metrics::ApiMetrics>,
    /// The nodes' usage summaries behind metrics.k8s.io.
    summaries: Arc<resource_metrics::Summaries>,
}

/// Which control plane components run in the server's process (componentstatuses reports them healthy).
#[derive(Clone, Copy, Debug, Default)]
pub struct InProcess {
    /// The scheduler.
    pub scheduler: bool,
    /// The controller manager.
    pub controller_manager: bool,
}

/// Which objects a request is about: a resource type and, for namespaced types, maybe one namespace.
#[derive(Clone)]
pub struct Target {
    /// The resource type.
    pub resource: &'static ResourceType,
    /// The namespace of the request path, if any.
    pub namespace: Option<String>,
    /// The version the request addresses, when it is served from the stored version's objects.
    pub conversion: Option<&'static Conversion>,
}

impl Target {
    /// A written object as it is stored: converted from the version the request addresses.
    pub fn to_stored(&self, object: Value) -> Result<Value, ApiError> {
        match self.conversion {
            None => Ok(object),
            Some(conversion) => conversion.to_stored(object).map_err(ApiError::BadRequest),
        }
    }

    /// A stored object as the version the request addresses shows it.
    pub fn to_served(&self, object: Value) -> Value {
        match self.conversion {
            None => object,
            Some(conversion) => conversion.served(object),
        }
    }
}

impl ApiServer {
    /// An apiserver over a store, giving Services addresses from `service_network`.
    pub fn new(store: Arc<dyn Store>, service_network: ServiceNetwork) -> Self {
        Self {
            store,
            http: reqwest::Client::new(),
            pod_http: reqwest::Client::new(),
            service_network: Arc::new(service_network),
            service_writes: Arc::new(tokio::sync::Mutex::new(())),
            pod_admission: Arc::new(tokio::sync::Mutex::new(())),
            closing: Arc::new(tokio::sync::watch::Sender::new(false)),
            auth: Arc::new(auth::AuthConfig::default()),
            ca_pem: None,
            agent_scheme: "http",
            pod_security: Arc::new(crate::api::pod_security::Config::uniform(
                crate::api::pod_security::Level::Baseline,
            )),
            token_signer: None,
            in_process: InProcess::default(),
            shared_events: Arc::default(),
            metrics: Arc::default(),
            summaries: Arc::default(),
        }
    }

    /// The same apiserver, issuing (TokenRequest) and accepting service account tokens signed by `signer`.
    pub fn with_token_signer(mut self, signer: crate::api::service_account_tokens::Signer) -> Self {
        self.token_signer = Some(Arc::new(signer));
        self
    }

    /// The same apiserver, with these Pod Security defaults and exemptions (baseline everywhere otherwise).
    pub fn with_pod_security(mut self, config: crate::api::pod_security::Config) -> Self {
        self.pod_security = Arc::new(config);
        self
    }

    /// The same apiserver, reaching node agents over TLS with a client certificate (`system:apiserver`) of the
    /// cluster CA. Agents' serving certificates are their own and not checked, as Kubernetes' apiserver does
    /// not check kubelets' by default.
    pub fn with_agent_client(mut self, identity: &crate::pki::Issued) -> Result<Self, String> {
        let pem = format!("{}{}", identity.key_pem, identity.cert_pem);
        let identity = reqwest::Identity::from_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
        self.http = reqwest::Client::builder()
            .identity(identity)
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| e.to_string())?;
        self.agent_scheme = "https";
        Ok(self)
    }

    /// The same apiserver, knowing which components run in its process.
    pub fn with_in_process(mut self, components: InProcess) -> Self {
        self.in_process = components;
        self
    }

    /// The same apiserver, serving the cluster CA's certificate at `/cacerts`.
    pub fn with_ca_certificate(mut self, pem: &str) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// The same apiserver, authenticating and authorizing requests as `auth` says.
    pub fn with_auth(mut self, auth: auth::AuthConfig) -> Self {
        self.auth = Arc::new(auth);
        self
    }

    /// Ends every open watch (clients resume them elsewhere or after a restart), so a graceful shutdown need
    /// not wait for them.
    pub fn close_watches(&self) {
        self.closing.send_replace(true);
    }

    /// The HTTP routes.
    pub fn router(self) -> Router {
        Router::new()
            .route(
                "/version",
                get(|| async { json(StatusCode::OK, discovery::version()) }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .route("/metrics", get(metrics_text))
            .route("/cacerts", get(ca_certificate))
            .route("/livez", get(|| async { "ok" }))
            .route("/readyz", get(|| async { "ok" }))
            .route(
                "/api",
                get(|| async { json(StatusCode::OK, discovery::api_versions()) }),
            )
            .route(
                "/apis",
                get(|| async { json(StatusCode::OK, discovery::api_groups()) }),
            )
            .route(
                "/openapi/v2",
                get(|| async {
                    let mut response = discovery::openapi_v2_protobuf().into_response();
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                    response
                }),
            )
            .route(
                "/openapi/v3",
                get(|| async { json(StatusCode::OK, discovery::openapi_index()) }),
            )
            .route("/openapi/v3/{*path}", get(openapi_document))
            .route("/api", any(api_request))
            .route("/api/{*rest}", any(api_request))
            .route("/apis", any(api_request))
            .route("/apis/{*rest}", any(api_request))
            .merge(dashboard::routes())
            .layer(axum::extract::DefaultBodyLimit::disable())
            .fallback(|| async { ApiError::PathNotFound })
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                auth::guard,
            ))
            .with_state(self)
    }
}

/// A JSON list response: `envelope` (a list without items) with `items`, a JSON array already written. The
/// items are sent as they are, not copied behind the envelope (a list of every pod is tens of megabytes).
fn with_items(mut envelope: Value, items: Vec<u8>) -> Response {
    if let Some(list) = envelope.as_object_mut() {
        list.remove("items");
    }
    let mut head = envelope.to_string().into_bytes();
    // `{...}` becomes `{...,"items":[...]}`.
    head.pop();
    if head.len() > 1 {
        head.push(b',');
    }
    head.extend_from_slice(b"\"items\":");
    let body = Chunks(VecDeque::from([
        Bytes::from(head),
        Bytes::from(items),
        Bytes::from_static(b"}"),
    ]));
    let mut response = (StatusCode::OK, Body::new(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A response body of a few chunks sent in turn, its whole length known (so it goes with a Content-Length).
struct Chunks(VecDeque<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.0
                .pop_front()
                .map(|chunk| Ok(hyper::body::Frame::data(chunk))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.0.iter().map(|chunk| chunk.len() as u64).sum())
    }
}

fn json(code: StatusCode, body: Value) -> Response {
    let mut response = (code, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `/metrics`: Prometheus' text exposition (OpenMetrics).
async fn metrics_text(State(server): State<ApiServer>) -> Response {
    let mut response = server.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

async fn ca_certificate(State(server): State<ApiServer>) -> Response {
    match &server.ca_pem {
        Some(pem) => {
            let mut response = pem.to_string().into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            );
            response
        }
        None => not_found_path(),
    }
}

async fn openapi_document(Path(path): Path<String>) -> Response {
    match discovery::openapi_document(&path) {
        Some(document) => json(StatusCode::OK, document),
        None => ApiError::PathNotFound.into_response(),
    }
}

/// One request against the API paths, before it is routed to a verb.
struct ApiRequest {
    method: Method,
    headers: HeaderMap,
    /// The connection's upgrade, for subresources that take it over (portforward, exec, attach).
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    query: Query,
    raw_query: String,
    body: Bytes,
}

/// Every request under `/api` and `/apis`: discovery documents, or a resource path routed to its verb. Where
/// the path points was resolved once, by the authentication and authorization layer, and travels with the
/// request.
async fn api_request(state: State<ApiServer>, request: axum::extract::Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let info = match parts.extensions.remove::<RequestInfo>() {
        Some(info) => info,
        None => {
            tracing::error!(path = %parts.uri.path(), "a request reached the API without its request info");
            return ApiError::Internal("the request was not resolved".into()).into_response();
        }
    };
    let connection = Connection {
        method: parts.method,
        headers: parts.headers,
        upgrade: parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
        raw_query: parts.uri.query().map(str::to_owned),
        body,
    };
    match info.path {
        ApiPath::CoreVersions => json(StatusCode::OK, discovery::api_versions()),
        ApiPath::Groups => json(StatusCode::OK, discovery::api_groups()),
        ApiPath::Group(group) => match discovery::api_group(&group) {
            Some(object) => json(StatusCode::OK, object),
            None => not_found_path(),
        },
        ApiPath::Resources { group, version }
            if group == custom_metrics::GROUP && version == custom_metrics::VERSION =>
        {
            json(StatusCode::OK, custom_metrics::resource_list())
        }
        ApiPath::Resources { group, version } => match discovery::resource_list(&group, &version) {
            Some(list) => json(StatusCode::OK, list),
            None => not_found_path(),
        },
        ApiPath::Resource(path) => route(&state, path, connection).await,
        ApiPath::Other => not_found_path(),
    }
}

fn not_found_path() -> Response {
    ApiError::PathNotFound.into_response()
}

/// A request as it arrived, before its path is resolved.
struct Connection {
    method: Method,
    headers: HeaderMap,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    raw_query: Option<String>,
    body: Body,
}

async fn route(server: &ApiServer, path: ResourcePath, connection: Connection) -> Response {
    let Connection {
        method,
        headers,
        upgrade,
        raw_query,
        body,
    } = connection;
    if path.group == custom_metrics::GROUP && path.version == custom_metrics::VERSION {
        return server.custom_metrics(&method, &path, raw_query.as_deref().unwrap_or_default());
    }
    let Some((resource, conversion)) =
        conversion::served(&path.group, &path.version, &path.resource)
    else {
        return not_found_path();
    };
    if path.namespace.is_some() && !resource.namespaced {
        return not_found_path();
    }
    let subresource = match path.subresource.as_deref() {
        None => None,
        Some(sub) => match resource.subresources.iter().find(|s| s.name() == sub) {
            Some(sub) => Some(*sub),
            None => return not_found_path(),
        },
    };
    let raw_query = raw_query.unwrap_or_default();
    if subresource == Some(Subresource::Proxy) {
        let body = match read_body(body).await {
            Ok(body) => body,
            Err(error) => return error.into_response(),
        };
        let target = Target {
            resource,
            namespace: path.namespace,
            conversion,
        };
        let proxied = proxy::Proxied {
            method,
            headers: &headers,
            path: path.proxy_path.as_deref().unwrap_or("/"),
            query: &raw_query,
            body,
        };
        let name = path.name.as_deref().unwrap_or_default();
        return match server.proxy(&target, name, proxied).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
    }
    let mut query = match serde_urlencoded::from_str::<Query>(&raw_query) {
        Ok(query) => query,
        Err(e) => {
            return ApiError::BadRequest(format!("invalid query parameters: {e}")).into_response();
        }
    };
    query.user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|agent| agent.to_str().ok())
        .map(str::to_owned);
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let target = Target {
        resource,
        namespace: path.namespace,
        conversion,
    };
    let negotiated = match Negotiated::from_headers(&headers) {
        Ok(negotiated) => negotiated.converting(conversion),
        Err(error) => return error.into_response(),
    };
    let request = ApiRequest {
        method,
        headers,
        upgrade,
        query,
        raw_query,
        body,
    };
    let response = serve(
        server,
        &target,
        path.name.as_deref(),
        subresource,
        request,
        negotiated,
    );
    match response.await {
        Ok(response) => response,
        Err(error) => negotiated.error(error),
    }
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn written(negotiated: Negotiated, code: StatusCode, written: Written) -> Response {
    let mut response = negotiated.respond(code, &written.object);
    for warning in written.warnings {
        let text = format!("299 - {:?}", warning);
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

fn deletion(request: &ApiRequest) -> Result<Deletion, ApiError> {
    let body = if request.body.is_empty() {
        Value::Null
    } else {
        decode_body(content_type(&request.headers), &request.body)?
    };
    Deletion::new(&body, &request.query)
}

async fn serve(
    server: &ApiServer,
    target: &Target,
    name: Option<&str>,
    subresource: Option<Subresource>,
    request: ApiRequest,
    negotiated: Negotiated,
) -> Result<Response, ApiError> {
    let query = &request.query;
    let resource = target.resource;
    if resource.review {
        return match (request.method, name, subresource) {
            (Method::POST, None, None) => {
                let object = decode_body(content_type(&request.headers), &request.body)?;
                Ok(negotiated.respond(StatusCode::CREATED, &server.review(target, object)?))
            }
            _ => Err(ApiError::MethodNotAllowed),
        };
    }
    let table = wants_table(&request.headers);
    let include = table::IncludeObject::parse(query.include_object.as_deref())
        .map_err(ApiError::BadRequest)?;
    if resource.computed {
        return match (request.method, name, subresource) {
            (Method::GET, _, None) if !query.is_watch() => {
                let items = match resource.kind {
                    "ComponentStatus" => match name {
                        Some(name) => vec![server.component_status_named(target, name)?],
                        None => server.component_statuses(),
                    },
                    _ => server.resource_metrics(target, name, query)?,
                };
                Ok(if table {
                    json(
                        StatusCode::OK,
                        table::build(resource.table, &items, "", None, include),
                    )
                } else if let (Some(_), Some(item)) = (name, items.first()) {
                    negotiated.respond(StatusCode::OK, item)
                } else {
                    negotiated.respond(StatusCode::OK, &list_object(resource, items, 0, None))
                })
            }
            _ => Err(ApiError::MethodNotAllowed),
        };
    }
    // Every request but a watch, or a read that takes any version (resourceVersion=0), sees every write
    // acknowledged before it, by this server or another one on the same etcd (Kubernetes' consistent reads).
    let any_version =
        request.method == Method::GET && query.resource_version.as_deref() == Some("0");
    if !query.is_watch() && !any_version {
        server.store.catch_up().await?;
    }
    match request.method {
        Method::POST => query.check_dry_run("CreateOptions")?,
        Method::PUT => query.check_dry_run("UpdateOptions")?,
        Method::PATCH => query.check_dry_run("PatchOptions")?,
        _ => {}
    }
    match (request.method.clone(), name, subresource) {
        (Method::GET, None, None) if query.is_watch() => server.watch(
            target,
            query,
            if table {
                watch::Render::Table(include)
            } else {
                watch::Render::Object(negotiated.encoding)
            },
        ),
        (Method::GET, None, None)
            if !table && negotiated.encoding == Encoding::Json && target.conversion.is_none() =>
        {
            // Each item is its stored JSON with its revision put in, as it is read: a list of 10,000 pods is
            // never held decoded.
            let mut items = vec![b'['];
            let (revision, token) = server.list_stored(target, query, |stored, revision| {
                if items.len() > 1 {
                    items.push(b',');
                }
                items.extend_from_slice(&objects::served_bytes(stored, revision)?);
                Ok(())
            })?;
            items.push(b']');
            let envelope = list_object(resource, Vec::new(), revision, token);
            Ok(with_items(envelope, items))
        }
        (Method::GET, None, None) => {
            let (items, revision, token) = server.list(target, query)?;
            Ok(if table {
                json(
                    StatusCode::OK,
                    table::build(
                        resource.table,
                        &items,
                        &revision.to_string(),
                        token.as_deref(),
                        include,
                    ),
                )
            } else {
                negotiated.respond(
                    StatusCode::OK,
                    &list_object(resource, items, revision, token),
                )
            })
        }
        (
            Method::GET,
            Some(name),
            None
            | Some(Subresource::Status | Subresource::Approval | Subresource::EphemeralContainers),
        ) => {
            let object = server.get(target, name)?;
            Ok(if table && subresource.is_none() {
                let rv = object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                json(
                    StatusCode::OK,
                    table::build(resource.table, &[object], &rv, None, include),
                )
            } else {
                negotiated.respond(StatusCode::OK, &object)
            })
        }
        (Method::GET, Some(name), Some(Subresource::Log)) => {
            server.logs(target, name, &request.raw_query).await
        }
        (
            Method::GET | Method::POST,
            Some(name),
            Some(stream @ (Subresource::PortForward | Subresource::Exec | Subresource::Attach)),
        ) => {
            server
                .pod_stream(
                    stream,
                    target,
                    name,
                    &request.headers,
                    &request.raw_query,
                    request.upgrade,
                )
                .await
        }
        (Method::GET, Some(name), Some(Subresource::Scale)) => {
            Ok(negotiated.respond(StatusCode::OK, &server.get_scale(target, name)?))
        }
        (Method::POST, None, None) => {
            let object =
                target.to_stored(decode_body(content_type(&request.headers), &request.body)?)?;
            let writer = query.writer(
                resource,
                crate::api::managed_fields::Operation::Update,
                None,
                "CreateOptions",
            )?;
            Ok(written(
                negotiated,
                StatusCode::CREATED,
                server.create(target, object, query, &writer).await?,
            ))
        }
        (Method::POST, Some(name), Some(Subresource::Token)) => {
            let token_request = decode_body(content_type(&request.headers), &request.body)?;
            Ok(negotiated.respond(
                StatusCode::CREATED,
                &server.request_token(target, name, token_request).await?,
            ))
        }
        (Method::POST, Some(name), Some(Subresource::Eviction)) => {
            let eviction = decode_body(content_type(&request.headers), &request.body)?;
            Ok(negotiated.respond(
                StatusCode::CREATED,
                &server.evict(target, name, eviction, query).await?,
            ))
        }
        (Method::POST, Some(name), Some(Subresource::Binding)) => {
            let binding = decode_body(content_type(&request.headers), &request.body)?;
            Ok(negotiated.respond(
                StatusCode::CREATED,
                &server.bind(target, name, binding).await?,
            ))
        }
        (
            Method::PUT,
            Some(name),
            None
            | Some(Subresource::Status | Subresource::Approval | Subresource::EphemeralContainers),
        ) => {
            let object =
                target.to_stored(decode_body(content_type(&request.headers), &request.body)?)?;
            Ok(written(
                negotiated,
                StatusCode::OK,
                server
                    .update(target, name, object, subresource, query)
                    .await?,
            ))
        }
        (Method::PUT, Some(name), Some(Subresource::Scale)) => {
            let scale = decode_body(content_type(&request.headers), &request.body)?;
            Ok(negotiated.respond(
                StatusCode::OK,
                &server.update_scale(target, name, scale, query).await?,
            ))
        }
        (
            Method::PATCH,
            Some(name),
            None
            | Some(
                Subresource::Status
                | Subresource::Approval
                | Subresource::Scale
                | Subresource::EphemeralContainers,
            ),
        ) => {
            let media = content_type(&request.headers)
                .unwrap_or_default()
                .to_owned();
            let patched = server
                .patch(target, name, &media, &request.body, subresource, query)
                .await?;
            let code = if patched.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(written(negotiated, code, patched))
        }
        (Method::DELETE, Some(name), None) => {
            let deletion = deletion(&request)?;
            Ok(negotiated.respond(
                StatusCode::OK,
                &server.delete(target, name, &deletion).await?,
            ))
        }
        (Method::DELETE, None, None) => {
            let deletion = deletion(&request)?;
            Ok(negotiated.respond(
                StatusCode::OK,
                &server.delete_collection(target, &deletion, query).await?,
            ))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}
