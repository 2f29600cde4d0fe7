//! metrics.k8s.io/v1beta1, served by the apiserver itself (in Kubernetes, metrics-server behind the aggregation
//! layer): it reads every node agent's usage summary (`GET /stats/summary`, with the client and address it
//! reaches agents with for logs) each [`RESOLUTION`] and keeps the last two per node. NodeMetrics and PodMetrics
//! are answered from them: CPU as the rate between the two summaries, memory as the newest working set, over the
//! window between them.
//!
//! Nodes are read only while someone asks (`kubectl top`, the autoscaler): the first request starts the
//! reading, which stops [`IDLE`] after the last one, so a cluster nobody watches pays nothing.

use super::error::ApiError;
use super::node_agent::agent_base;
use super::objects::{Filter, Query};
use super::{ApiServer, Target};
use crate::api::resource_metrics::{
    ContainerMetrics, NodeMetrics, PodMetrics, cpu_quantity, memory_quantity,
};
use crate::api::resources;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use wasmkube_core::stats::{
    ContainerStats, CpuStats, HttpStats, MemoryStats, PodReference, Summary,
};

/// How often every node is read (metrics-server's `--metric-resolution`, 15 s by default there).
pub const RESOLUTION: Duration = Duration::from_secs(5);
/// The second reading after the first comes sooner, so that rates exist a second after the first request.
const FIRST_WINDOW: Duration = Duration::from_secs(1);
/// Reading stops this long after the last request for metrics.
const IDLE: Duration = Duration::from_secs(600);
/// How long one node may take to answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(4);
/// Nodes read at once.
const SCRAPES_AT_ONCE: usize = 32;

/// The two newest summaries of every node, and whether they are being kept current.
#[derive(Default)]
pub struct Summaries {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_node: HashMap<String, Pair>,
    /// When metrics were last asked for; `None` while nothing reads the nodes.
    asked: Option<tokio::time::Instant>,
}

/// A node's two newest summaries.
#[derive(Debug, Clone)]
struct Pair {
    previous: Option<Summary>,
    latest: Summary,
}

/// One measured use: CPU in nanocores over a window, and memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// CPU in billionths of a core.
    pub nanocores: u64,
    /// Working set bytes.
    pub memory: u64,
    /// When the window ended.
    pub timestamp: jiff::Timestamp,
    /// How long the window was.
    pub window: Duration,
}

/// The rate between two cumulative CPU readings and the newer memory reading; `None` when the readings are not
/// of one counter going forward (a restart in between resets it).
fn measure(
    before: Option<&CpuStats>,
    after: Option<&CpuStats>,
    memory: Option<&MemoryStats>,
) -> Option<Measured> {
    let (before, after) = (before?, after?);
    let (t0, t1) = (
        before.time.parse::<jiff::Timestamp>().ok()?,
        after.time.parse::<jiff::Timestamp>().ok()?,
    );
    let window = Duration::try_from(t1.duration_since(t0)).ok()?;
    let used = after
        .usage_core_nano_seconds?
        .checked_sub(before.usage_core_nano_seconds?)?;
    if window.is_zero() {
        return None;
    }
    let nanocores = (used as f64 / window.as_secs_f64()).round() as u64;
    Some(Measured {
        nanocores,
        memory: memory.and_then(|m| m.working_set_bytes).unwrap_or(0),
        timestamp: t1,
        window,
    })
}

/// A node's use between its two newest summaries.
fn node_use(pair: &Pair) -> Option<Measured> {
    let previous = pair.previous.as_ref()?;
    measure(
        previous.node.cpu.as_ref(),
        pair.latest.node.cpu.as_ref(),
        pair.latest.node.memory.as_ref(),
    )
}

/// Each pod's containers compared between a node's two newest summaries by `between` (earlier run, later
/// run). A container that (re)started between them compares with nothing; a pod is left out until all its
/// containers compare (as metrics-server does with their use).
fn per_container<T>(
    pair: &Pair,
    between: impl Fn(&ContainerStats, &ContainerStats) -> Option<T>,
) -> Vec<(PodReference, Vec<(String, T)>)> {
    let Some(previous) = &pair.previous else {
        return Vec::new();
    };
    pair.latest
        .pods
        .iter()
        .filter_map(|pod| {
            let before = previous.pods.iter().find(|p| p.pod_ref == pod.pod_ref)?;
            let containers = pod
                .containers
                .iter()
                .map(|c| {
                    let earlier = before
                        .containers
                        .iter()
                        .find(|b| b.name == c.name && b.start_time == c.start_time)?;
                    Some((c.name.clone(), between(earlier, c)?))
                })
                .collect::<Option<Vec<_>>>()?;
            (!containers.is_empty()).then(|| (pod.pod_ref.clone(), containers))
        })
        .collect()
}

/// Each pod's containers' use between a node's two newest summaries.
fn pod_uses(pair: &Pair) -> Vec<(PodReference, Vec<(String, Measured)>)> {
    per_container(pair, |earlier, later| {
        measure(
            earlier.cpu.as_ref(),
            later.cpu.as_ref(),
            later.memory.as_ref(),
        )
    })
}

/// A pod's rate of HTTP requests answered over a window.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RequestRate {
    /// Requests per second, all its containers together.
    pub per_second: f64,
    /// When the window ended.
    pub timestamp: jiff::Timestamp,
    /// How long the window was.
    pub window: Duration,
}

/// The rate of two counts of one container's run, taken at two moments; `None` unless they are of one counter
/// going forward.
fn request_rate(before: &HttpStats, after: &HttpStats) -> Option<RequestRate> {
    let (t0, t1) = (
        before.time.parse::<jiff::Timestamp>().ok()?,
        after.time.parse::<jiff::Timestamp>().ok()?,
    );
    let window = Duration::try_from(t1.duration_since(t0)).ok()?;
    let answered = after.requests_total.checked_sub(before.requests_total)?;
    (!window.is_zero()).then(|| RequestRate {
        per_second: answered as f64 / window.as_secs_f64(),
        timestamp: t1,
        window,
    })
}

/// Each pod's HTTP request rate between a node's two newest summaries: the sum of its containers' rates.
fn pod_request_rates(pair: &Pair) -> Vec<(PodReference, RequestRate)> {
    per_container(pair, |earlier, later| {
        request_rate(earlier.http.as_ref()?, later.http.as_ref()?)
    })
    .into_iter()
    .filter_map(|(pod, containers)| {
        let per_second = containers.iter().map(|(_, rate)| rate.per_second).sum();
        let (_, first) = containers.into_iter().next()?;
        Some((
            pod,
            RequestRate {
                per_second,
                ..first
            },
        ))
    })
    .collect()
}

/// A window as Kubernetes writes a duration (Go's `time.Duration`): `5s`, `1.5s`, `1m5s`, to the millisecond.
fn window_text(window: Duration) -> String {
    let millis = window.as_millis();
    let (seconds, fraction) = (millis / 1000, millis % 1000);
    let rest = if fraction == 0 {
        format!("{}s", seconds % 60)
    } else {
        let digits = format!("{fraction:03}");
        format!("{}.{}s", seconds % 60, digits.trim_end_matches('0'))
    };
    if seconds >= 60 {
        format!("{}m{rest}", seconds / 60)
    } else {
        rest
    }
}

fn usage(
    nanocores: u64,
    memory: u64,
) -> BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity> {
    BTreeMap::from([
        ("cpu".to_owned(), cpu_quantity(nanocores)),
        ("memory".to_owned(), memory_quantity(memory)),
    ])
}

impl ApiServer {
    /// NodeMetrics or PodMetrics: one by name, or the list the query's selectors pick.
    pub(super) fn resource_metrics(
        &self,
        target: &Target,
        name: Option<&str>,
        query: &Query,
    ) -> Result<Vec<Value>, ApiError> {
        self.wants_resource_metrics();
        let filter = Filter::new(target.resource, query)?;
        let items = match target.resource.kind {
            "NodeMetrics" => self.node_metrics(name)?,
            _ => self.pod_metrics(target.namespace.as_deref(), name)?,
        };
        let items: Vec<Value> = items.into_iter().filter(|i| filter.matches(i)).collect();
        if let Some(name) = name
            && items.is_empty()
        {
            // As metrics-server: `pods "ns/name" not found` for no pod, `podmetrics.metrics.k8s.io
            // "ns/name" not found` for a pod without metrics (yet); nodes alike, by name alone.
            let measured = match target.resource.kind {
                "NodeMetrics" => "nodes",
                _ => "pods",
            };
            let objects = resources::by_path("", "v1", measured)
                .ok_or_else(|| ApiError::Internal(format!("{measured} are not served")))?;
            let namespace = target.namespace.as_deref();
            let shown = match namespace {
                Some(namespace) => format!("{namespace}/{name}"),
                None => name.to_owned(),
            };
            let resource = match self.read(objects, namespace, name) {
                Ok(_) => format!("{}.metrics.k8s.io", target.resource.kind.to_lowercase()),
                Err(_) => measured.to_owned(),
            };
            return Err(ApiError::NotFound {
                resource,
                name: shown,
            });
        }
        Ok(items)
    }

    fn node_metrics(&self, name: Option<&str>) -> Result<Vec<Value>, ApiError> {
        let nodes = resources::by_path("", "v1", "nodes")
            .ok_or_else(|| ApiError::Internal("nodes are not served".into()))?;
        let labels: HashMap<String, Option<BTreeMap<String, String>>> = self
            .list_of::<k8s_openapi::api::core::v1::Node>(nodes, None)?
            .into_iter()
            .map(|n| (n.metadata.name.unwrap_or_default(), n.metadata.labels))
            .collect();
        let state = self.summaries.state.lock().map_err(poisoned)?;
        let mut items = Vec::new();
        for (node, pair) in &state.by_node {
            if name.is_some_and(|n| n != node) {
                continue;
            }
            let (Some(labels), Some(measured)) = (labels.get(node), node_use(pair)) else {
                continue;
            };
            let metrics = NodeMetrics {
                metadata: ObjectMeta {
                    name: Some(node.clone()),
                    labels: labels.clone(),
                    creation_timestamp: Some(Time(jiff::Timestamp::now())),
                    ..Default::default()
                },
                timestamp: Time(measured.timestamp),
                window: window_text(measured.window),
                usage: usage(measured.nanocores, measured.memory),
            };
            items.push(to_value(&metrics)?);
        }
        items.sort_by(|a, b| {
            a["metadata"]["name"]
                .as_str()
                .cmp(&b["metadata"]["name"].as_str())
        });
        Ok(items)
    }

    fn pod_metrics(
        &self,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        let pods = resources::by_path("", "v1", "pods")
            .ok_or_else(|| ApiError::Internal("pods are not served".into()))?;
        let labels: HashMap<String, Option<BTreeMap<String, String>>> = self
            .list_of::<k8s_openapi::api::core::v1::Pod>(pods, namespace)?
            .into_iter()
            .filter(|p| name.is_none() || p.metadata.name.as_deref() == name)
            .map(|p| (p.metadata.uid.unwrap_or_default(), p.metadata.labels))
            .collect();
        let state = self.summaries.state.lock().map_err(poisoned)?;
        let mut items = Vec::new();
        for pair in state.by_node.values() {
            for (pod, containers) in pod_uses(pair) {
                let Some(labels) = labels.get(&pod.uid) else {
                    continue;
                };
                let (timestamp, window) = containers
                    .first()
                    .map(|(_, m)| (m.timestamp, m.window))
                    .unwrap_or((jiff::Timestamp::now(), Duration::ZERO));
                let metrics = PodMetrics {
                    metadata: ObjectMeta {
                        name: Some(pod.name.clone()),
                        namespace: Some(pod.namespace.clone()),
                        labels: labels.clone(),
                        creation_timestamp: Some(Time(jiff::Timestamp::now())),
                        ..Default::default()
                    },
                    timestamp: Time(timestamp),
                    window: window_text(window),
                    containers: containers
                        .into_iter()
                        .map(|(name, m)| ContainerMetrics {
                            name,
                            usage: usage(m.nanocores, m.memory),
                        })
                        .collect(),
                };
                items.push(to_value(&metrics)?);
            }
        }
        items.sort_by(|a, b| {
            let key = |v: &Value| {
                (
                    v["metadata"]["namespace"].as_str().map(str::to_owned),
                    v["metadata"]["name"].as_str().map(str::to_owned),
                )
            };
            key(a).cmp(&key(b))
        });
        Ok(items)
    }

    /// Every measured pod's HTTP request rate (custom.metrics.k8s.io), starting the nodes' reading if nothing
    /// reads them yet.
    pub(super) fn request_rates(&self) -> Result<Vec<(PodReference, RequestRate)>, ApiError> {
        self.wants_resource_metrics();
        let state = self.summaries.state.lock().map_err(poisoned)?;
        Ok(state.by_node.values().flat_map(pod_request_rates).collect())
    }

    /// Notes a request for metrics, and starts reading the nodes if nothing does.
    fn wants_resource_metrics(&self) {
        let Ok(mut state) = self.summaries.state.lock() else {
            return;
        };
        let idle = state.asked.is_none();
        state.asked = Some(tokio::time::Instant::now());
        if idle {
            tokio::spawn(self.clone().read_nodes_while_asked());
        }
    }

    /// Reads every node's summary, then again after [`FIRST_WINDOW`] and every [`RESOLUTION`], until nobody
    /// has asked for [`IDLE`].
    async fn read_nodes_while_asked(self) {
        let mut delay = FIRST_WINDOW;
        loop {
            self.read_nodes().await;
            tokio::time::sleep(delay).await;
            delay = RESOLUTION;
            let Ok(mut state) = self.summaries.state.lock() else {
                return;
            };
            if state.asked.is_none_or(|at| at.elapsed() > IDLE) {
                state.asked = None;
                state.by_node.clear();
                return;
            }
        }
    }

    /// One reading of every node with an agent address; a node that does not answer has no metrics until it
    /// does again.
    async fn read_nodes(&self) {
        let Some(nodes) = resources::by_path("", "v1", "nodes") else {
            return;
        };
        let nodes: Vec<Value> = match self.list_of(nodes, None) {
            Ok(nodes) => nodes,
            Err(error) => {
                tracing::warn!(%error, "cannot list nodes for their metrics");
                return;
            }
        };
        let agents: Vec<(String, String)> = nodes
            .iter()
            .filter_map(|node| {
                let name = node["metadata"]["name"].as_str()?.to_owned();
                Some((name, agent_base(node, self.agent_scheme)?))
            })
            .collect();
        let http = self.http.clone();
        let read: Vec<(String, Option<Summary>)> = futures::stream::iter(agents)
            .map(|(name, base)| {
                let http = http.clone();
                async move {
                    let summary = read_summary(&http, &base).await;
                    if let Err(error) = &summary {
                        tracing::debug!(node = %name, %error, "cannot read the node's usage summary");
                    }
                    (name, summary.ok())
                }
            })
            .buffer_unordered(SCRAPES_AT_ONCE)
            .collect()
            .await;
        let Ok(mut state) = self.summaries.state.lock() else {
            return;
        };
        let mut by_node = HashMap::with_capacity(read.len());
        for (name, summary) in read {
            let Some(latest) = summary else { continue };
            let previous = state.by_node.remove(&name).map(|pair| pair.latest);
            by_node.insert(name, Pair { previous, latest });
        }
        state.by_node = by_node;
    }
}

async fn read_summary(http: &reqwest::Client, base: &str) -> Result<Summary, String> {
    let body = http
        .get(format!("{base}/stats/summary"))
        .timeout(SCRAPE_TIMEOUT)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

/// The object as served, with its kind and apiVersion (which the types carry, not their fields).
fn to_value<T: serde::Serialize + k8s_openapi::Resource>(object: &T) -> Result<Value, ApiError> {
    let mut value = serde_json::to_value(object).map_err(|e| ApiError::Internal(e.to_string()))?;
    value["kind"] = T::KIND.into();
    value["apiVersion"] = T::API_VERSION.into();
    Ok(value)
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> ApiError {
    ApiError::Internal("the metrics cache is poisoned".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmkube_core::stats::{NodeStats, PodStats};

    fn cpu(time: &str, nanos: u64) -> Option<CpuStats> {
        Some(CpuStats {
            time: time.into(),
            usage_core_nano_seconds: Some(nanos),
        })
    }

    fn memory(time: &str, bytes: u64) -> Option<MemoryStats> {
        Some(MemoryStats {
            time: time.into(),
            working_set_bytes: Some(bytes),
        })
    }

    fn summary(time: &str, node_cpu: u64, started: &str, container_cpu: u64) -> Summary {
        answered(time, node_cpu, started, container_cpu, 0)
    }

    fn answered(
        time: &str,
        node_cpu: u64,
        started: &str,
        container_cpu: u64,
        requests: u64,
    ) -> Summary {
        Summary {
            node: NodeStats {
                node_name: "n1".into(),
                cpu: cpu(time, node_cpu),
                memory: memory(time, 50 << 20),
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "web".into(),
                    namespace: "default".into(),
                    uid: "u1".into(),
                },
                containers: vec![ContainerStats {
                    name: "app".into(),
                    start_time: started.into(),
                    cpu: cpu(time, container_cpu),
                    memory: memory(time, 3 << 20),
                    http: Some(HttpStats {
                        time: time.into(),
                        requests_total: requests,
                    }),
                }],
                cpu: cpu(time, container_cpu),
                memory: memory(time, 3 << 20),
            }],
        }
    }

    #[test]
    fn a_pods_request_rate_is_its_answers_between_two_summaries_over_their_window() {
        // 50 requests answered in 5 s: 10 per second; a container that restarted in between has no rate yet.
        let at = |time, requests| answered(time, 0, "2026-12-06T09:00:00Z", 0, requests);
        let pair = Pair {
            previous: Some(at("2026-12-06T10:00:00Z", 120)),
            latest: at("2026-12-06T10:00:05Z", 170),
        };
        let rates = pod_request_rates(&pair);
        assert_eq!(rates.len(), 1);
        assert_eq!(rates[0].0.name, "web");
        assert_eq!(
            rates[0].1,
            RequestRate {
                per_second: 10.0,
                timestamp: "2026-12-06T10:00:05Z".parse().unwrap(),
                window: Duration::from_secs(5),
            }
        );
        let restarted = Pair {
            previous: Some(at("2026-12-06T10:00:00Z", 120)),
            latest: answered("2026-12-06T10:00:05Z", 0, "2026-12-06T10:00:03Z", 0, 4),
        };
        assert!(pod_request_rates(&restarted).is_empty());
    }

    #[test]
    fn cpu_is_the_rate_between_two_summaries_and_memory_the_newest() {
        // Over 5 s the node used 2.5 s of CPU (half a core) and the container 0.25 s (50 millicores).
        let pair = Pair {
            previous: Some(summary(
                "2026-12-06T10:00:00Z",
                10_000_000_000,
                "2026-12-06T09:00:00Z",
                1_000_000_000,
            )),
            latest: summary(
                "2026-12-06T10:00:05Z",
                12_500_000_000,
                "2026-12-06T09:00:00Z",
                1_250_000_000,
            ),
        };
        let node = node_use(&pair).unwrap();
        assert_eq!(node.nanocores, 500_000_000);
        assert_eq!(node.memory, 50 << 20);
        assert_eq!(node.window, Duration::from_secs(5));
        assert_eq!(window_text(node.window), "5s");
        let pods = pod_uses(&pair);
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].1[0].0, "app");
        assert_eq!(pods[0].1[0].1.nanocores, 50_000_000);
        assert_eq!(pods[0].1[0].1.memory, 3 << 20);
    }

    #[test]
    fn a_container_restarted_between_summaries_has_no_rate_yet() {
        let pair = Pair {
            previous: Some(summary(
                "2026-12-06T10:00:00Z",
                10,
                "2026-12-06T09:00:00Z",
                1_000_000_000,
            )),
            latest: summary("2026-12-06T10:00:05Z", 20, "2026-12-06T10:00:03Z", 1_000),
        };
        assert!(pod_uses(&pair).is_empty());
        // A single summary gives no rate at all.
        let first = Pair {
            previous: None,
            latest: pair.latest.clone(),
        };
        assert!(node_use(&first).is_none());
        assert!(pod_uses(&first).is_empty());
        assert_eq!(window_text(Duration::from_millis(1500)), "1.5s");
        assert_eq!(window_text(Duration::from_millis(65_250)), "1m5.25s");
    }
}
