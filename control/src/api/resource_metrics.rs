//! The kinds of metrics.k8s.io/v1beta1, which k8s-openapi does not carry (Kubernetes defines them in
//! k8s.io/metrics, served by metrics-server): NodeMetrics and PodMetrics, a node's or pod's CPU and memory use
//! over a recent window, as `kubectl top` and the HorizontalPodAutoscaler read them.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The group and version.
const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// CPU and memory, as quantities (`cpu: 1234567n`, `memory: 2048Ki`).
pub type Usage = BTreeMap<String, Quantity>;

/// A node's use of CPU and memory over `window`, ending at `timestamp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct NodeMetrics {
    /// The node's name and labels.
    pub metadata: ObjectMeta,
    /// When the window ended.
    pub timestamp: Time,
    /// How long the window was (`10s`).
    pub window: String,
    /// The node's CPU (cores) and memory (working set) use.
    pub usage: Usage,
}

/// A pod's use of CPU and memory over `window`, ending at `timestamp`, by container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct PodMetrics {
    /// The pod's name, namespace and labels.
    pub metadata: ObjectMeta,
    /// When the window ended.
    pub timestamp: Time,
    /// How long the window was (`10s`).
    pub window: String,
    /// Each running container's use.
    pub containers: Vec<ContainerMetrics>,
}

/// One container's use of CPU and memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ContainerMetrics {
    /// The container's name.
    pub name: String,
    /// Its CPU (cores) and memory (working set) use.
    pub usage: Usage,
}

impl k8s_openapi::Resource for NodeMetrics {
    const API_VERSION: &'static str = API_VERSION;
    const GROUP: &'static str = "metrics.k8s.io";
    const KIND: &'static str = "NodeMetrics";
    const VERSION: &'static str = "v1beta1";
    const URL_PATH_SEGMENT: &'static str = "nodes";
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::Metadata for NodeMetrics {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl k8s_openapi::Resource for PodMetrics {
    const API_VERSION: &'static str = API_VERSION;
    const GROUP: &'static str = "metrics.k8s.io";
    const KIND: &'static str = "PodMetrics";
    const VERSION: &'static str = "v1beta1";
    const URL_PATH_SEGMENT: &'static str = "pods";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for PodMetrics {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// CPU cores as metrics-server writes them: whole nanocores (`250000000n` is a quarter of a core).
pub fn cpu_quantity(nanocores: u64) -> Quantity {
    Quantity(format!("{nanocores}n"))
}

/// Bytes as metrics-server writes them: in Ki when they divide evenly, else in bytes.
pub fn memory_quantity(bytes: u64) -> Quantity {
    if bytes.is_multiple_of(1024) && bytes > 0 {
        Quantity(format!("{}Ki", bytes / 1024))
    } else {
        Quantity(bytes.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_written_as_metrics_server_writes_them() {
        assert_eq!(cpu_quantity(250_000_000).0, "250000000n");
        assert_eq!(memory_quantity(2 << 20).0, "2048Ki");
        assert_eq!(memory_quantity(1000).0, "1000");
        assert_eq!(memory_quantity(0).0, "0");
    }
}
