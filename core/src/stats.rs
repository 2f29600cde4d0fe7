//! The node agent's resource usage summary, in the shape of the kubelet's Summary API
//! (`GET /stats/summary`, stats/v1alpha1) that metrics-server read: cumulative CPU time and current memory of
//! the node and of every running pod and container, each with the time it was measured. Rates are left to the
//! reader, which takes them between two summaries.

use serde::{Deserialize, Serialize};

/// A node's usage and its pods'.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The node (for a wasmkube node: its agent's process, which runs every guest).
    pub node: NodeStats,
    /// Every pod with a running container.
    #[serde(default)]
    pub pods: Vec<PodStats>,
}

/// A node's usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// The Node's name.
    pub node_name: String,
    /// CPU time used.
    pub cpu: Option<CpuStats>,
    /// Memory held.
    pub memory: Option<MemoryStats>,
}

/// A pod's usage: the sum of its containers'.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// Which pod.
    pub pod_ref: PodReference,
    /// Its running containers.
    #[serde(default)]
    pub containers: Vec<ContainerStats>,
    /// CPU time its containers used.
    pub cpu: Option<CpuStats>,
    /// Memory its containers hold.
    pub memory: Option<MemoryStats>,
}

/// A pod's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodReference {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its uid.
    pub uid: String,
}

/// A container's current run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// The container's name.
    pub name: String,
    /// When this run started (its CPU time counts from here).
    pub start_time: String,
    /// CPU time used.
    pub cpu: Option<CpuStats>,
    /// Memory held.
    pub memory: Option<MemoryStats>,
    /// HTTP requests answered (wasmkube's addition to the kubelet's Summary API, behind custom.metrics.k8s.io's
    /// `http_requests_per_second`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpStats>,
}

/// HTTP requests a container's run has answered, at a moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpStats {
    /// When they were counted (RFC 3339).
    pub time: String,
    /// Requests answered since the run started, whatever their status.
    pub requests_total: u64,
}

/// Cumulative CPU time at a moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When it was measured (RFC 3339).
    pub time: String,
    /// CPU time used since the start, in nanoseconds of one core.
    pub usage_core_nano_seconds: Option<u64>,
}

/// Memory held at a moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// When it was measured (RFC 3339).
    pub time: String,
    /// Bytes in use that cannot be given back (what `kubectl top` shows).
    pub working_set_bytes: Option<u64>,
}
