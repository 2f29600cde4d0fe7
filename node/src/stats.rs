//! What the node and its containers use, served as the kubelet serves it: `GET /stats/summary` (its Summary
//! API, which the apiserver reads for metrics.k8s.io) and `GET /metrics/resource` (Prometheus text with the
//! kubelet's resource metric names). The node is the agent's process, which runs every guest: its CPU time and
//! resident memory. A container is its current run: the CPU time its guests ran and the linear memory they hold.

use crate::streams::running::RunningContainers;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use wasmkube_core::stats::{
    ContainerStats, CpuStats, HttpStats, MemoryStats, NodeStats, PodReference, PodStats, Summary,
};

/// What the endpoints read.
#[derive(Clone)]
pub struct Sources {
    /// The Node's name.
    pub node_name: String,
    /// The running containers.
    pub containers: RunningContainers,
}

/// The routes `/stats/summary` and `/metrics/resource`.
pub fn router(sources: Sources) -> Router {
    Router::new()
        .route("/stats/summary", get(summary))
        .route("/metrics/resource", get(resource_metrics))
        .with_state(sources)
}

/// The agent process's CPU time (nanoseconds) and resident bytes.
fn own_usage() -> (Option<u64>, Option<u64>) {
    let Ok(me) = procfs::process::Process::myself() else {
        return (None, None);
    };
    let cpu = me.stat().ok().map(|stat| {
        let ticks = stat.utime.saturating_add(stat.stime);
        ticks.saturating_mul(1_000_000_000) / procfs::ticks_per_second().max(1)
    });
    let resident = me
        .statm()
        .ok()
        .map(|statm| statm.resident.saturating_mul(procfs::page_size()));
    (cpu, resident)
}

/// The summary now.
pub fn take(sources: &Sources) -> Summary {
    let now = jiff::Timestamp::now().to_string();
    let cpu = |nanos: Option<u64>| {
        Some(CpuStats {
            time: now.clone(),
            usage_core_nano_seconds: nanos,
        })
    };
    let memory = |bytes: Option<u64>| {
        Some(MemoryStats {
            time: now.clone(),
            working_set_bytes: bytes,
        })
    };
    let (node_cpu, node_memory) = own_usage();
    let mut pods: BTreeMap<PodReference, Vec<ContainerStats>> = BTreeMap::new();
    let mut totals: BTreeMap<PodReference, (u64, u64)> = BTreeMap::new();
    for (pod, container, run) in sources.containers.all() {
        let usage = &run.spec.usage;
        let (used, held) = (
            u64::try_from(usage.cpu().as_nanos()).unwrap_or(u64::MAX),
            u64::try_from(usage.memory()).unwrap_or(u64::MAX),
        );
        let total = totals.entry(pod.clone()).or_default();
        *total = (total.0.saturating_add(used), total.1.saturating_add(held));
        pods.entry(pod).or_default().push(ContainerStats {
            name: container,
            start_time: usage.started().to_string(),
            cpu: cpu(Some(used)),
            memory: memory(Some(held)),
            http: Some(HttpStats {
                time: now.clone(),
                requests_total: run.spec.requests.total(),
            }),
        });
    }
    Summary {
        node: NodeStats {
            node_name: sources.node_name.clone(),
            cpu: cpu(node_cpu),
            memory: memory(node_memory),
        },
        pods: pods
            .into_iter()
            .map(|(pod_ref, containers)| {
                let (used, held) = totals.get(&pod_ref).copied().unwrap_or_default();
                PodStats {
                    pod_ref,
                    containers,
                    cpu: cpu(Some(used)),
                    memory: memory(Some(held)),
                }
            })
            .collect(),
    }
}

async fn summary(State(sources): State<Sources>) -> Response {
    axum::Json(take(&sources)).into_response()
}

type Labels = Vec<(&'static str, String)>;

/// Registers a gauge family (or a counter family: its name gains `_total`) with one sample per label set.
fn register(
    registry: &mut Registry,
    name: &str,
    help: &str,
    counter: bool,
    samples: Vec<(Labels, f64)>,
) {
    if counter {
        let family = Family::<Labels, Counter<f64, AtomicU64>>::default();
        for (labels, value) in samples {
            family.get_or_create(&labels).inc_by(value);
        }
        registry.register(name, help, family);
    } else {
        let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for (labels, value) in samples {
            family.get_or_create(&labels).set(value);
        }
        registry.register(name, help, family);
    }
}

/// The summary as the kubelet's `/metrics/resource`.
fn resource_text(summary: &Summary) -> String {
    let seconds = |cpu: Option<&CpuStats>| {
        cpu.and_then(|c| c.usage_core_nano_seconds).unwrap_or(0) as f64 / 1e9
    };
    let bytes =
        |memory: Option<&MemoryStats>| memory.and_then(|m| m.working_set_bytes).unwrap_or(0) as f64;
    let mut registry = Registry::default();
    let node = &summary.node;
    register(
        &mut registry,
        "node_cpu_usage_seconds",
        "Cumulative cpu time consumed by the node in core-seconds",
        true,
        vec![(Vec::new(), seconds(node.cpu.as_ref()))],
    );
    register(
        &mut registry,
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        false,
        vec![(Vec::new(), bytes(node.memory.as_ref()))],
    );
    let containers = |value: &dyn Fn(&ContainerStats) -> f64| -> Vec<(Labels, f64)> {
        summary
            .pods
            .iter()
            .flat_map(|pod| {
                pod.containers.iter().map(move |c| {
                    let labels = vec![
                        ("container", c.name.clone()),
                        ("namespace", pod.pod_ref.namespace.clone()),
                        ("pod", pod.pod_ref.name.clone()),
                    ];
                    (labels, value(c))
                })
            })
            .collect()
    };
    register(
        &mut registry,
        "container_cpu_usage_seconds",
        "Cumulative cpu time consumed by the container in core-seconds",
        true,
        containers(&|c| seconds(c.cpu.as_ref())),
    );
    register(
        &mut registry,
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        false,
        containers(&|c| bytes(c.memory.as_ref())),
    );
    register(
        &mut registry,
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        false,
        containers(&|c| {
            c.start_time
                .parse::<jiff::Timestamp>()
                .map_or(0.0, |t| t.as_millisecond() as f64 / 1000.0)
        }),
    );
    let pods = |value: &dyn Fn(&PodStats) -> f64| -> Vec<(Labels, f64)> {
        summary
            .pods
            .iter()
            .map(|pod| {
                let labels = vec![
                    ("namespace", pod.pod_ref.namespace.clone()),
                    ("pod", pod.pod_ref.name.clone()),
                ];
                (labels, value(pod))
            })
            .collect()
    };
    register(
        &mut registry,
        "pod_cpu_usage_seconds",
        "Cumulative cpu time consumed by the pod in core-seconds",
        true,
        pods(&|p| seconds(p.cpu.as_ref())),
    );
    register(
        &mut registry,
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        false,
        pods(&|p| bytes(p.memory.as_ref())),
    );
    register(
        &mut registry,
        "scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        false,
        vec![(Vec::new(), 0.0)],
    );
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::warn!(%error, "cannot encode the resource metrics");
    }
    text
}

async fn resource_metrics(State(sources): State<Sources>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        resource_text(&take(&sources)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_metrics_carry_the_kubelets_names_and_labels() {
        let at = "2026-12-06T10:00:00Z".to_owned();
        let summary = Summary {
            node: NodeStats {
                node_name: "n1".into(),
                cpu: Some(CpuStats {
                    time: at.clone(),
                    usage_core_nano_seconds: Some(2_500_000_000),
                }),
                memory: Some(MemoryStats {
                    time: at.clone(),
                    working_set_bytes: Some(1 << 20),
                }),
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "web".into(),
                    namespace: "default".into(),
                    uid: "u1".into(),
                },
                containers: vec![ContainerStats {
                    name: "app".into(),
                    start_time: at.clone(),
                    cpu: Some(CpuStats {
                        time: at.clone(),
                        usage_core_nano_seconds: Some(500_000_000),
                    }),
                    memory: Some(MemoryStats {
                        time: at.clone(),
                        working_set_bytes: Some(65536),
                    }),
                    http: None,
                }],
                cpu: None,
                memory: None,
            }],
        };
        let text = resource_text(&summary);
        assert!(
            text.contains("node_cpu_usage_seconds_total 2.5\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("node_memory_working_set_bytes 1048576.0\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"web\"} 0.5\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "container_start_time_seconds{container=\"app\",namespace=\"default\",pod=\"web\"} 1796551200.0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE container_memory_working_set_bytes gauge\n"),
            "{text}"
        );
    }
}
