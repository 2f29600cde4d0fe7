//! How spreading constraints and affinity terms pick pods: by namespace and labels.

use crate::api::selector::LabelSelector;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use std::collections::{BTreeMap, HashMap};

/// Every namespace's labels, for terms that pick namespaces by selector.
pub type NamespaceLabels = HashMap<String, BTreeMap<String, String>>;

/// A pod's namespace and labels: all that selectors look at. Pods of one ReplicaSet share one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PodLabels {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's labels.
    pub labels: BTreeMap<String, String>,
}

impl PodLabels {
    /// The namespace and labels of a pod.
    pub fn of(pod: &Pod) -> Self {
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
        }
    }
}

/// A selector as Kubernetes reads one from an object: absent (`None`) selects nothing, empty everything.
/// One that cannot be read (an unknown operator, refused by validation anyway) selects nothing.
pub fn selector(selector: Option<&meta::LabelSelector>) -> Option<LabelSelector> {
    let value = serde_json::to_value(selector?).ok()?;
    LabelSelector::from_object(&value).ok()
}

/// Whether a selector that may select nothing selects these labels.
pub fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    selector.is_some_and(|s| s.matches(labels))
}
