//! The agent's own Prometheus metrics at `GET /metrics`, the kubelet's endpoint (and, through the apiserver,
//! `/api/v1/nodes/NAME/proxy/metrics`): the pods and containers it runs, the HTTP requests each HTTP component
//! answered, each container's restarts (kube-state-metrics' `kube_pod_container_status_restarts_total`), and
//! what the Service proxy did for each Service port. Counters live with what they count (a
//! container's run, a proxy frontend) and are read at each scrape: a pod's series go when the pod goes.

use crate::streams::running::RunningContainers;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmkube_core::stats::PodReference;

/// Upper bounds of the latency histograms' buckets, in seconds (the Prometheus clients' default buckets).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// HTTP requests answered, by status class, and how long each took until its response head. Lock-free: it is
/// written by every request.
#[derive(Debug, Default)]
pub struct RequestStats {
    /// Answers by class: 1xx to 5xx.
    classes: [AtomicU64; 5],
    /// Observations per bucket (not cumulative), the last one past every bound (+Inf).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    /// The sum of every observation, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl RequestStats {
    /// Counts a request answered with `status` after `took`.
    pub fn observe(&self, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Requests answered so far, whatever their status.
    pub fn total(&self) -> u64 {
        self.classes
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .fold(0, u64::saturating_add)
    }

    /// The classes answered so far (`2xx`, ...) with their counts; classes never seen are left out.
    fn classes(&self) -> Vec<(&'static str, u64)> {
        ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .into_iter()
            .zip(&self.classes)
            .map(|(class, count)| (class, count.load(Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    /// The latency histogram: sum (seconds), count and each bucket's own count, +Inf last.
    fn histogram(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

/// What the proxy did for one Service port (all its listen addresses: the cluster IP and node ports).
#[derive(Debug, Default)]
pub struct FrontendStats {
    /// HTTP mode: the requests it answered (its own 502 and 503 included).
    pub requests: RequestStats,
    /// TCP mode: connections joined to an endpoint.
    connections: AtomicU64,
    /// TCP mode: connections closed because no endpoint could be reached.
    unjoined: AtomicU64,
    /// Requests or connections sent again to another endpoint after one failed.
    retries: AtomicU64,
}

impl FrontendStats {
    /// A TCP connection was joined to an endpoint (true) or closed with none reachable (false).
    pub fn connection(&self, joined: bool) {
        let counter = if joined {
            &self.connections
        } else {
            &self.unjoined
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A request or connection is tried on another endpoint.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
}

/// The proxy's statistics by Service port (`namespace/name:port`), shared by the proxy and the metrics endpoint.
#[derive(Debug, Clone, Default)]
pub struct ProxyStats(Arc<Mutex<BTreeMap<String, Arc<FrontendStats>>>>);

impl ProxyStats {
    /// The statistics of a Service port, made at its first use.
    pub fn frontend(&self, service: &str) -> Arc<FrontendStats> {
        let Ok(mut frontends) = self.0.lock() else {
            return Arc::default();
        };
        frontends.entry(service.to_owned()).or_default().clone()
    }

    /// Forgets the Service ports the proxy no longer serves.
    pub fn retain(&self, services: &BTreeSet<&str>) {
        if let Ok(mut frontends) = self.0.lock() {
            frontends.retain(|service, _| services.contains(service.as_str()));
        }
    }

    fn all(&self) -> Vec<(String, Arc<FrontendStats>)> {
        self.0
            .lock()
            .map(|frontends| {
                frontends
                    .iter()
                    .map(|(service, stats)| (service.clone(), stats.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What `/metrics` reads.
#[derive(Clone)]
pub struct Sources {
    /// The container runs of the node (none for `wasmkube proxy`, which runs no pods).
    pub containers: Option<RunningContainers>,
    /// The Service proxy's statistics.
    pub proxy: ProxyStats,
}

/// The route `/metrics`.
pub fn router(sources: Sources) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(sources)
}

async fn metrics(State(sources): State<Sources>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        Scrape::of(&sources).text(),
    )
        .into_response()
}

type Labels = Vec<(&'static str, String)>;

/// What one scrape reads: the node's runs and the proxy's frontends at that moment.
#[derive(Debug, Default)]
struct Scrape {
    /// An agent's running pods and containers (a proxy alone has none).
    node: Option<(usize, usize)>,
    /// The HTTP components' runs, labelled with their pod and container.
    http: Vec<(Labels, Arc<RequestStats>)>,
    /// Each container's restarts, labelled with its pod and container.
    restarts: Vec<(Labels, u64)>,
    frontends: Vec<(String, Arc<FrontendStats>)>,
}

impl Scrape {
    fn of(sources: &Sources) -> Self {
        let Some(containers) = &sources.containers else {
            return Self {
                frontends: sources.proxy.all(),
                ..Self::default()
            };
        };
        let labels = |pod: &PodReference, container: &str| -> Labels {
            vec![
                ("namespace", pod.namespace.clone()),
                ("pod", pod.name.clone()),
                ("container", container.to_owned()),
            ]
        };
        let runs = containers.all();
        let pods: BTreeSet<&PodReference> = runs.iter().map(|(pod, _, _)| pod).collect();
        let http = runs
            .iter()
            .filter(|(_, _, run)| run.loaded.serves_http())
            .map(|(pod, container, run)| (labels(pod, container), run.spec.requests.clone()))
            .collect();
        let mut restarts: Vec<(Labels, u64)> = containers
            .restarts()
            .into_iter()
            .map(|(pod, container, count)| {
                (labels(&pod, &container), u64::try_from(count).unwrap_or(0))
            })
            .collect();
        restarts.sort();
        Self {
            node: Some((pods.len(), runs.len())),
            http,
            restarts,
            frontends: sources.proxy.all(),
        }
    }

    fn text(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::warn!(%error, "cannot encode the agent's metrics");
        }
        text
    }

    fn http_runs(&self) -> impl Iterator<Item = (Labels, &RequestStats)> {
        self.http
            .iter()
            .map(|(labels, stats)| (labels.clone(), stats.as_ref()))
    }
}

/// Writes one family: its descriptor, then a sample per label set.
fn family<M>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (Labels, M)>,
    mut write: impl FnMut(&mut MetricEncoder, M) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, sample) in samples {
        write(&mut metric.encode_family(&labels)?, sample)?;
    }
    Ok(())
}

fn counter(encoder: &mut MetricEncoder, value: u64) -> std::fmt::Result {
    encoder.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(encoder: &mut MetricEncoder, value: i64) -> std::fmt::Result {
    encoder.encode_gauge(&value)
}

fn histogram(encoder: &mut MetricEncoder, stats: &RequestStats) -> std::fmt::Result {
    let (sum, count, buckets) = stats.histogram();
    encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

/// Each label set extended with the classes answered, and their counts.
fn by_class<'a>(samples: impl Iterator<Item = (Labels, &'a RequestStats)>) -> Vec<(Labels, u64)> {
    samples
        .flat_map(|(labels, stats)| {
            stats.classes().into_iter().map(move |(class, count)| {
                let mut labels = labels.clone();
                labels.push(("code_class", class.to_owned()));
                (labels, count)
            })
        })
        .collect()
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        if let Some((pods, containers)) = self.node {
            self.encode_node(&mut encoder, pods, containers)?;
        }
        self.encode_proxy(&mut encoder)
    }
}

impl Scrape {
    /// An agent's own families: its pods, containers and their HTTP requests.
    fn encode_node(
        &self,
        encoder: &mut DescriptorEncoder,
        pods: usize,
        containers: usize,
    ) -> std::fmt::Result {
        family(
            encoder,
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            MetricType::Gauge,
            [(Labels::new(), pods as i64)],
            gauge,
        )?;
        family(
            encoder,
            "kubelet_running_containers",
            "Number of containers currently running",
            MetricType::Gauge,
            [(
                vec![("container_state", "running".to_owned())],
                containers as i64,
            )],
            gauge,
        )?;
        family(
            encoder,
            "kube_pod_container_status_restarts",
            "The number of container restarts per container.",
            MetricType::Counter,
            self.restarts.iter().cloned(),
            counter,
        )?;
        family(
            encoder,
            "wasmkube_pod_http_requests",
            "HTTP requests an HTTP component answered, by status class",
            MetricType::Counter,
            by_class(self.http_runs()),
            counter,
        )?;
        family(
            encoder,
            "wasmkube_pod_http_request_duration_seconds",
            "Time from an HTTP request's arrival at its pod to its response head",
            MetricType::Histogram,
            self.http_runs(),
            histogram,
        )
    }

    /// The Service proxy's families.
    fn encode_proxy(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let frontends = || {
            self.frontends
                .iter()
                .map(|(service, stats)| (vec![("service", service.clone())], stats.as_ref()))
        };
        family(
            encoder,
            "wasmkube_proxy_requests",
            "HTTP requests the Service proxy answered, by status class (its own 502 and 503 included)",
            MetricType::Counter,
            by_class(frontends().map(|(labels, stats)| (labels, &stats.requests))),
            counter,
        )?;
        family(
            encoder,
            "wasmkube_proxy_request_duration_seconds",
            "Time from an HTTP request's arrival at the Service proxy to its response head",
            MetricType::Histogram,
            frontends()
                .filter(|(_, stats)| stats.requests.histogram().1 > 0)
                .map(|(labels, stats)| (labels, &stats.requests)),
            histogram,
        )?;
        family(
            encoder,
            "wasmkube_proxy_connections",
            "TCP connections the Service proxy took, by whether an endpoint was reached",
            MetricType::Counter,
            frontends().flat_map(|(labels, stats)| {
                [
                    ("joined", &stats.connections),
                    ("no_endpoint", &stats.unjoined),
                ]
                .into_iter()
                .map(move |(outcome, count)| {
                    let mut labels = labels.clone();
                    labels.push(("outcome", outcome.to_owned()));
                    (labels, count.load(Ordering::Relaxed))
                })
                .filter(|(_, count)| *count > 0)
            }),
            counter,
        )?;
        family(
            encoder,
            "wasmkube_proxy_retries",
            "Requests and connections the Service proxy sent to another endpoint after one failed",
            MetricType::Counter,
            frontends().map(|(labels, stats)| (labels, stats.retries.load(Ordering::Relaxed))),
            counter,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_class_and_timed_into_buckets() {
        let stats = RequestStats::default();
        stats.observe(200, Duration::from_millis(3));
        stats.observe(204, Duration::from_millis(30));
        stats.observe(503, Duration::from_secs(60));
        stats.observe(99, Duration::ZERO);
        assert_eq!(stats.classes(), vec![("1xx", 1), ("2xx", 2), ("5xx", 1)]);
        let (sum, count, buckets) = stats.histogram();
        assert_eq!(count, 4);
        assert!((sum - 60.033).abs() < 1e-9, "{sum}");
        let counts: Vec<u64> = buckets.iter().map(|(_, n)| *n).collect();
        // 0 and 3 ms in the first bucket (≤ 5 ms), 30 ms in ≤ 50 ms, a minute past every bound.
        assert_eq!(counts, vec![2, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(buckets.last().map(|(bound, _)| *bound), Some(f64::INFINITY));
    }

    #[test]
    fn a_scrape_shows_each_frontend_under_its_service_and_drops_the_ones_gone() {
        let proxy = ProxyStats::default();
        let web = proxy.frontend("default/web:80");
        web.requests.observe(200, Duration::from_millis(2));
        web.retry();
        proxy.frontend("default/db:5432").connection(true);
        proxy.frontend("default/db:5432").connection(false);
        let text = Scrape {
            frontends: proxy.all(),
            ..Scrape::default()
        }
        .text();
        for line in [
            "wasmkube_proxy_requests_total{service=\"default/web:80\",code_class=\"2xx\"} 1",
            "wasmkube_proxy_request_duration_seconds_count{service=\"default/web:80\"} 1",
            "wasmkube_proxy_request_duration_seconds_bucket{le=\"0.005\",service=\"default/web:80\"} 1",
            "wasmkube_proxy_retries_total{service=\"default/web:80\"} 1",
            "wasmkube_proxy_retries_total{service=\"default/db:5432\"} 0",
            "wasmkube_proxy_connections_total{service=\"default/db:5432\",outcome=\"joined\"} 1",
            "wasmkube_proxy_connections_total{service=\"default/db:5432\",outcome=\"no_endpoint\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(
            !text.contains("duration_seconds_count{service=\"default/db:5432\"}"),
            "{text}"
        );
        assert!(
            !text.contains("kubelet_running_pods"),
            "a proxy alone runs no pods: {text}"
        );
        proxy.retain(&BTreeSet::from(["default/db:5432"]));
        assert_eq!(proxy.all().len(), 1);
    }
}
