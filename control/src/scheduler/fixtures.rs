//! Nodes, pods and caches for the scheduler's unit tests.

use super::cache::Cache;
use super::plugins::volume_binding::Volumes;
use crate::cache::Change;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// A Ready node with 1 cpu, 1 GiB and 110 pods, its hostname label and `labels`.
pub fn node(name: &str, labels: Value) -> Node {
    let mut all = json!({"kubernetes.io/hostname": name});
    if let (Some(all), Some(more)) = (all.as_object_mut(), labels.as_object()) {
        all.extend(more.clone());
    }
    serde_json::from_value(json!({"metadata": {"name": name, "labels": all},
        "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}}))
    .expect("a node")
}

/// A pod in namespace `ns` with `labels`, one container asking for `cpu`, and `spec` merged into its spec.
pub fn pod(name: &str, labels: Value, cpu: &str, spec: Value) -> Pod {
    let mut object = json!({"metadata": {"name": name, "namespace": "ns", "uid": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}});
    if let (Some(target), Some(more)) = (object["spec"].as_object_mut(), spec.as_object()) {
        target.extend(more.clone());
    }
    serde_json::from_value(object).expect("a pod")
}

/// A cache holding `nodes` and `pods` bound as given.
pub fn cluster(nodes: Vec<Node>, pods: Vec<(Pod, &str)>) -> Cache {
    let mut cache = Cache::default();
    for node in nodes {
        cache.node_changed(&Change::Applied(Arc::new(node)));
    }
    for (mut pod, node) in pods {
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(node.to_owned());
        }
        cache.pod_changed(&Change::Applied(Arc::new(pod)));
    }
    cache
}

/// Claims (of any namespace, by name), volumes and classes, as the scheduler's listers give them.
#[derive(Default)]
pub struct Storage {
    pub claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    pub volumes: Vec<Arc<PersistentVolume>>,
    pub classes: Vec<Arc<StorageClass>>,
}

impl Volumes for Storage {
    fn claim(&self, _namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims.get(name).cloned()
    }

    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.volumes
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(name))
            .cloned()
    }

    fn volumes(&self) -> Vec<Arc<PersistentVolume>> {
        self.volumes.clone()
    }

    fn class(&self, name: &str) -> Option<Arc<StorageClass>> {
        self.classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .cloned()
    }
}
