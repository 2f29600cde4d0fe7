//! The apiserver's Prometheus metrics at `/metrics`, with kube-apiserver's names and labels:
//! `apiserver_request_total`, `apiserver_request_duration_seconds`, `apiserver_longrunning_requests` and
//! `apiserver_watch_events_total`.
//! A long-running request (a watch, exec, attach, port-forward, proxy) counts while its response streams and
//! is recorded when it ends, as kube-apiserver records a watch when it closes. Label values come only from
//! what the apiserver serves: a path naming a resource or subresource that does not exist is labelled with
//! empty ones, so no client can grow the number of series.

use crate::api::conversion;
use crate::api::rbac::Request;
use crate::api::request_info::{ApiPath, RequestInfo};
use crate::api::resources::ResourceType;
use axum::body::Body;
use axum::response::Response;
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Instant;

/// kube-apiserver's buckets for request durations, in seconds.
const DURATION_BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// The subresources whose requests are connections (kube-apiserver's CONNECT verb).
const CONNECT_SUBRESOURCES: [&str; 4] = ["attach", "exec", "portforward", "proxy"];

/// What a request was, as kube-apiserver labels it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestKind {
    verb: String,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: String,
    component: &'static str,
    dry_run: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answered {
    #[prometheus(flatten)]
    kind: RequestKind,
    code: String,
}

impl RequestKind {
    /// Labels a request from what its path resolved to, its method and query, and its content type.
    pub fn of(info: &RequestInfo, method: &http::Method, query: &str, content_type: &str) -> Self {
        let dry_run = if query.split('&').any(|p| p == "dryRun=All") {
            "All"
        } else {
            ""
        };
        let version = match &info.path {
            ApiPath::Resource(path) => path.version.clone(),
            ApiPath::Resources { version, .. } => version.clone(),
            _ => String::new(),
        };
        match &info.request {
            Request::Resource(request) => {
                let served = conversion::served(&request.group, &version, &request.resource)
                    .map(|(resource, _)| resource);
                let subresource = request
                    .subresource
                    .as_deref()
                    .filter(|sub| {
                        served.is_some_and(|r| r.subresources.iter().any(|s| s.name() == *sub))
                    })
                    .unwrap_or_default()
                    .to_owned();
                let verb = if CONNECT_SUBRESOURCES.contains(&subresource.as_str()) {
                    "CONNECT"
                } else {
                    match request.verb.as_str() {
                        "create" => "POST",
                        "update" => "PUT",
                        "patch" if content_type.starts_with("application/apply-patch") => "APPLY",
                        "patch" => "PATCH",
                        "get" => "GET",
                        "list" => "LIST",
                        "watch" => "WATCH",
                        "delete" => "DELETE",
                        "deletecollection" => "DELETECOLLECTION",
                        _ => method_label(method),
                    }
                };
                // kube-apiserver's CleanScope.
                let scope = if request.name.is_some() || request.verb == "create" {
                    "resource"
                } else if request.namespace.is_some() {
                    "namespace"
                } else {
                    "cluster"
                };
                let (group, version, resource) = match served {
                    Some(r) => (r.group.to_owned(), version, r.plural.to_owned()),
                    None => (String::new(), String::new(), String::new()),
                };
                Self {
                    verb: verb.to_owned(),
                    group,
                    version,
                    resource,
                    subresource,
                    scope: scope.to_owned(),
                    component: "apiserver",
                    dry_run,
                }
            }
            Request::NonResource { .. } => Self {
                verb: method_label(method).to_owned(),
                group: String::new(),
                version: String::new(),
                resource: String::new(),
                subresource: String::new(),
                scope: String::new(),
                component: "apiserver",
                dry_run,
            },
        }
    }

    fn is_long_running(&self) -> bool {
        self.verb == "WATCH" || self.verb == "CONNECT"
    }
}

/// An HTTP method as a label: HTTP allows any token as a method, so others are `other` (kube-apiserver's
/// validRequestMethods).
fn method_label(method: &http::Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("other")
}

/// The resource of a watch, as kube-apiserver labels its events.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Watched {
    group: String,
    version: String,
    resource: String,
}

/// The apiserver's metrics.
pub struct ApiMetrics {
    registry: Registry,
    answers: Answers,
    long_running: Family<RequestKind, Gauge>,
    watch_events: Family<Watched, Counter>,
}

/// The count and durations of the requests answered.
#[derive(Clone)]
struct Answers {
    requests: Family<Answered, Counter>,
    durations: Family<RequestKind, Histogram, fn() -> Histogram>,
}

impl Answers {
    fn record(&self, kind: &RequestKind, code: u16, started: Instant) {
        let answered = Answered {
            kind: kind.clone(),
            code: code.to_string(),
        };
        self.requests.get_or_create(&answered).inc();
        self.durations
            .get_or_create(kind)
            .observe(started.elapsed().as_secs_f64());
    }
}

impl Default for ApiMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Answered, Counter>::default();
        let durations: Family<RequestKind, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        let long_running = Family::<RequestKind, Gauge>::default();
        let watch_events = Family::<Watched, Counter>::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, \
             scope, component, and HTTP response code.",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, dry run value, group, version, resource, \
             subresource, scope and component.",
            durations.clone(),
        );
        registry.register(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests broken out by verb, group, version, resource, \
             scope and component.",
            long_running.clone(),
        );
        registry.register(
            "apiserver_watch_events",
            "Number of events sent in watch clients",
            watch_events.clone(),
        );
        Self {
            registry,
            answers: Answers {
                requests,
                durations,
            },
            long_running,
            watch_events,
        }
    }
}

impl ApiMetrics {
    /// Records a request answered with `response`, which began at `started`. A long-running response is
    /// recorded when its body ends (or its client goes away), and counted as running until then.
    pub fn record(&self, kind: RequestKind, started: Instant, response: Response) -> Response {
        if !kind.is_long_running() || !response.status().is_success() {
            self.answers
                .record(&kind, response.status().as_u16(), started);
            return response;
        }
        let running = Running::start(self, kind, response.status().as_u16(), started);
        let (parts, body) = response.into_parts();
        let body = body.into_data_stream().map(move |chunk| {
            let _ = &running;
            chunk
        });
        Response::from_parts(parts, Body::from_stream(body))
    }

    /// The count of events sent to the watchers of `resource` served at `version`.
    pub fn watch_events(&self, resource: &ResourceType, version: &str) -> Counter {
        self.watch_events
            .get_or_create(&Watched {
                group: resource.group.to_owned(),
                version: version.to_owned(),
                resource: resource.plural.to_owned(),
            })
            .clone()
    }

    /// The text exposition of every metric: the apiserver's and those of the components in its process.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &self.registry);
        crate::component_metrics::encode(&mut text);
        let _ = prometheus_client::encoding::text::encode_eof(&mut text);
        text
    }
}

/// A long-running request while its response streams: counted in the gauge, recorded when dropped.
struct Running {
    answers: Answers,
    long_running: Family<RequestKind, Gauge>,
    kind: RequestKind,
    code: u16,
    started: Instant,
}

impl Running {
    fn start(metrics: &ApiMetrics, kind: RequestKind, code: u16, started: Instant) -> Self {
        metrics.long_running.get_or_create(&kind).inc();
        Self {
            answers: metrics.answers.clone(),
            long_running: metrics.long_running.clone(),
            kind,
            code,
            started,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.long_running.get_or_create(&self.kind).dec();
        self.answers.record(&self.kind, self.code, self.started);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::request_info::{QueryFacts, resolve};

    fn kind(method: http::Method, path: &str, watch: bool, content_type: &str) -> RequestKind {
        let facts = QueryFacts {
            watch,
            field_selector: None,
        };
        RequestKind::of(&resolve(&method, path, facts), &method, "", content_type)
    }

    #[test]
    fn requests_are_labelled_as_kube_apiserver_labels_them() {
        // "METHOD PATH [watch]", content type => "verb scope group version resource subresource" ("-": empty).
        let cases = [
            (
                "GET /api/v1/namespaces/default/pods",
                "",
                "LIST namespace - v1 pods -",
            ),
            ("GET /api/v1/pods watch", "", "WATCH cluster - v1 pods -"),
            (
                "POST /apis/apps/v1/namespaces/a/deployments",
                "",
                "POST resource apps v1 deployments -",
            ),
            (
                "PATCH /api/v1/namespaces/a/configmaps/c",
                "application/apply-patch+yaml",
                "APPLY resource - v1 configmaps -",
            ),
            (
                "GET /api/v1/namespaces/a/pods/p/exec",
                "",
                "CONNECT resource - v1 pods exec",
            ),
            ("GET /healthz", "", "GET - - - - -"),
            // Made-up resources, versions and subresources are not label values.
            (
                "GET /api/v1/namespaces/a/made-up-1234",
                "",
                "LIST namespace - - - -",
            ),
            (
                "GET /apis/apps/v9/namespaces/a/deployments/d",
                "",
                "GET resource - - - -",
            ),
            (
                "GET /api/v1/namespaces/a/pods/p/made-up",
                "",
                "GET resource - v1 pods -",
            ),
            ("BREW /healthz", "", "other - - - - -"),
        ];
        for (request, content_type, expected) in cases {
            let parts: Vec<&str> = request.split(' ').collect();
            let method = http::Method::from_bytes(parts[0].as_bytes()).unwrap();
            let got = kind(method, parts[1], parts.len() > 2, content_type);
            let got = [
                &got.verb,
                &got.scope,
                &got.group,
                &got.version,
                &got.resource,
                &got.subresource,
            ]
            .map(|label| {
                if label.is_empty() {
                    "-"
                } else {
                    label.as_str()
                }
            })
            .join(" ");
            assert_eq!(got, expected, "{request}");
        }
    }

    #[test]
    fn a_watch_counts_as_running_until_its_body_is_dropped() {
        let metrics = ApiMetrics::default();
        let watch = kind(http::Method::GET, "/api/v1/pods", true, "");
        let response = metrics.record(watch, Instant::now(), Response::new(Body::from("x")));
        let text = metrics.render();
        assert!(
            text.contains(r#"apiserver_longrunning_requests{verb="WATCH",group="",version="v1",resource="pods",subresource="",scope="cluster",component="apiserver",dry_run=""} 1"#),
            "{text}"
        );
        assert!(!text.contains("apiserver_request_total{"), "{text}");
        drop(response);
        let text = metrics.render();
        assert!(
            text.contains(r#"scope="cluster",component="apiserver",dry_run=""} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"apiserver_request_total{verb="WATCH",group="",version="v1",resource="pods",subresource="",scope="cluster",component="apiserver",dry_run="",code="200"} 1"#),
            "{text}"
        );
    }
}
