//! VolumeBinding: a pod's claims decide where it may go. A bound claim's volume pins the pod to the nodes its
//! node affinity allows; an unbound claim of a WaitForFirstConsumer class is bound when the pod is scheduled —
//! to an available volume that node can reach, or by its provisioner on that node (which must have room for
//! it, as CSI storage capacity says) — and a claim still unbound otherwise keeps the pod waiting. Pure: the
//! scheduler writes the choices ([`VolumeBinding`]) before it binds the pod.

use super::node_affinity::selector_matches;
use super::{Reason, Rejection, unresolvable};
use crate::api::storage::{
    LOCAL_PATH_PROVISIONER, LOCAL_PATH_ROOT, SELECTED_NODE, claim_class, claim_request,
    local_path_refusal, local_room, pod_claims, satisfies,
};
use k8s_openapi::api::core::v1::{
    Node, NodeSelector, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use std::sync::Arc;

/// The provisioner name of classes whose volumes are all made by hand.
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// What the scheduler reads claims, volumes and classes from.
pub trait Volumes {
    /// A claim by namespace and name.
    fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>>;
    /// A volume by name.
    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>>;
    /// Every volume.
    fn volumes(&self) -> Vec<Arc<PersistentVolume>>;
    /// A StorageClass by name.
    fn class(&self, name: &str) -> Option<Arc<StorageClass>>;
}

/// A claim bound when its first pod is scheduled.
#[derive(Debug, Clone)]
struct Delayed {
    claim: Arc<PersistentVolumeClaim>,
    /// Available volumes of its class that serve it (their node affinity decides per node).
    candidates: Vec<Arc<PersistentVolume>>,
    /// Its class's provisioner, when it has one that makes volumes.
    provisioner: Option<String>,
}

/// What the plugin knows of one pod's claims (its PreFilter state).
#[derive(Debug, Clone, Default)]
pub struct VolumeFilter {
    /// Why no node can take the pod, if so.
    refused: Option<Reason>,
    /// The node affinity of each volume its bound claims use.
    pinned: Vec<NodeSelector>,
    delayed: Vec<Delayed>,
    /// Its claims with the ReadWriteOncePod access mode: no other pod may use them.
    once_pod: Vec<String>,
}

/// A write the scheduler makes before binding the pod to its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeBinding {
    /// Reserve this volume for the claim (its claimRef), for the binder to complete.
    Reserve {
        /// The volume.
        volume: String,
        /// The claim's namespace.
        namespace: String,
        /// The claim's name.
        claim: String,
        /// The claim's uid.
        uid: String,
        /// The volume's resourceVersion when it was chosen: the reservation fails if it changed since.
        resource_version: Option<String>,
    },
    /// Tell the claim's provisioner which node to make its volume on.
    SelectNode {
        /// The claim's namespace.
        namespace: String,
        /// The claim's name.
        claim: String,
    },
}

impl VolumeFilter {
    /// Reads the pod's claims (kube-scheduler's PreFilter): a missing or deleted claim, or an unbound claim
    /// that waits for no pod, refuses every node.
    pub fn new(pod: &Pod, cluster: &impl Volumes) -> Self {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let mut filter = Self::default();
        for name in pod_claims(pod) {
            let Some(claim) = cluster.claim(namespace, name) else {
                filter.refused = Some(format!("persistentvolumeclaim {name:?} not found"));
                return filter;
            };
            if claim.metadata.deletion_timestamp.is_some() {
                filter.refused = Some(format!("persistentvolumeclaim {name:?} is being deleted"));
                return filter;
            }
            if crate::api::storage::claim_modes(&claim)
                .iter()
                .any(|m| m == "ReadWriteOncePod")
            {
                filter.once_pod.push(name.to_owned());
            }
            if let Some(volume_name) = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .filter(|v| !v.is_empty())
            {
                match cluster.volume(volume_name) {
                    Some(volume) => filter.pinned.extend(
                        volume
                            .spec
                            .as_ref()
                            .and_then(|s| s.node_affinity.as_ref())
                            .and_then(|a| a.required.clone()),
                    ),
                    None => {
                        filter.refused = Some(
                            "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
                                .into(),
                        );
                        return filter;
                    }
                }
                continue;
            }
            let class = cluster.class(claim_class(&claim));
            let delays = class
                .as_ref()
                .is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
            if !delays {
                filter.refused = Some("pod has unbound immediate PersistentVolumeClaims".into());
                return filter;
            }
            let candidates = cluster
                .volumes()
                .into_iter()
                .filter(|v| {
                    v.spec.as_ref().is_some_and(|s| s.claim_ref.is_none())
                        && v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available")
                        && satisfies(v, &claim)
                })
                .collect();
            if let Some(reason) = class
                .as_deref()
                .filter(|c| c.provisioner == LOCAL_PATH_PROVISIONER)
                .and_then(|c| local_path_refusal(&claim, c))
            {
                filter.refused = Some(format!(
                    "persistentvolumeclaim {name:?} cannot be provisioned: {reason}"
                ));
                return filter;
            }
            let provisioner = class
                .map(|c| c.provisioner.clone())
                .filter(|p| p != NO_PROVISIONER);
            filter.delayed.push(Delayed {
                claim,
                candidates,
                provisioner,
            });
        }
        filter
    }

    /// Whether the pod's claims ask nothing of nodes.
    pub fn is_empty(&self) -> bool {
        self.refused.is_none() && self.pinned.is_empty() && self.delayed.is_empty()
    }

    /// Its ReadWriteOncePod claims (kube-scheduler's VolumeRestrictions counts the other pods using them).
    pub fn once_pod_claims(&self) -> &[String] {
        &self.once_pod
    }

    /// Why every node is refused (the PreFilter's message), if so.
    pub fn refused(&self) -> Option<&Reason> {
        self.refused.as_ref()
    }

    /// The filter for one node.
    pub fn check(&self, node: &Node) -> Result<(), Rejection> {
        if let Some(reason) = &self.refused {
            return unresolvable(Err(reason.clone()));
        }
        if !self.pinned.iter().all(|s| selector_matches(s, node)) {
            return unresolvable(Err("node(s) had volume node affinity conflict".into()));
        }
        for delayed in &self.delayed {
            if delayed.candidate_on(node).is_some() {
                continue;
            }
            match delayed.provisioner.as_deref() {
                None => {
                    return unresolvable(Err(
                        "node(s) didn't find available persistent volumes to bind".into(),
                    ));
                }
                Some(LOCAL_PATH_PROVISIONER) if !has_room(node, &delayed.claim) => {
                    return unresolvable(Err("node(s) did not have enough free storage".into()));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// What to write for the claims before the pod is bound to `node`: a volume reserved, or the node
    /// selected for the provisioner (claims already told are left alone).
    pub fn bindings(&self, node: &Node) -> Vec<VolumeBinding> {
        self.delayed
            .iter()
            .filter_map(|delayed| {
                let claim = &delayed.claim;
                let namespace = claim.metadata.namespace.clone().unwrap_or_default();
                let name = claim.metadata.name.clone().unwrap_or_default();
                if let Some(volume) = delayed.candidate_on(node) {
                    return Some(VolumeBinding::Reserve {
                        volume: volume.metadata.name.clone().unwrap_or_default(),
                        namespace,
                        claim: name,
                        uid: claim.metadata.uid.clone().unwrap_or_default(),
                        resource_version: volume.metadata.resource_version.clone(),
                    });
                }
                let selected = claim
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(SELECTED_NODE));
                (selected != node.metadata.name.as_ref()).then_some(VolumeBinding::SelectNode {
                    namespace,
                    claim: name,
                })
            })
            .collect()
    }
}

impl Delayed {
    /// The smallest candidate volume the node can reach.
    fn candidate_on(&self, node: &Node) -> Option<&Arc<PersistentVolume>> {
        self.candidates
            .iter()
            .filter(|v| {
                v.spec
                    .as_ref()
                    .and_then(|s| s.node_affinity.as_ref())
                    .and_then(|a| a.required.as_ref())
                    .is_none_or(|s| selector_matches(s, node))
            })
            .min_by_key(|v| {
                crate::api::storage::volume_capacity(v).map_or(i128::MAX, |q| q.milli())
            })
    }
}

/// Whether a node offers local volumes with room for the claim (what it reports as its ephemeral storage).
fn has_room(node: &Node, claim: &PersistentVolumeClaim) -> bool {
    let offers = node
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(LOCAL_PATH_ROOT));
    let room = local_room(node);
    let wants = claim_request(claim);
    offers
        && match (room, wants) {
            (Some(room), Some(wants)) => wants.milli() <= room.milli(),
            _ => true,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::fixtures::Storage as Cluster;
    use serde_json::json;
    use std::collections::HashMap;

    fn pod(claim: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [], "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}}))
        .unwrap()
    }

    fn node(name: &str, storage: &str) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name},
            "annotations": {LOCAL_PATH_ROOT: "/data"}},
            "status": {"allocatable": {"ephemeral-storage": storage}}}),
        )
        .unwrap()
    }

    fn claim(extra: serde_json::Value) -> Arc<PersistentVolumeClaim> {
        let mut object = json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}},
                     "storageClassName": "local-path"}});
        json_patch::merge(&mut object, &extra);
        Arc::new(serde_json::from_value(object).unwrap())
    }

    fn cluster(claim: Arc<PersistentVolumeClaim>) -> Cluster {
        Cluster {
            claims: HashMap::from([("data".to_owned(), claim)]),
            classes: vec![Arc::new(crate::api::storage::local_path_class())],
            ..Default::default()
        }
    }

    #[test]
    fn a_bound_claim_pins_its_pod_to_the_volumes_node() {
        let mut cluster = cluster(claim(json!({"spec": {"volumeName": "pv-1"}})));
        cluster.volumes.push(Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": "pv-1"}, "spec": {"nodeAffinity": {"required":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname",
                    "operator": "In", "values": ["n1"]}]}]}}}}),
            )
            .unwrap(),
        ));
        let filter = VolumeFilter::new(&pod("data"), &cluster);
        assert!(filter.check(&node("n1", "10Gi")).is_ok());
        let refused = filter.check(&node("n2", "10Gi")).unwrap_err();
        assert_eq!(refused.reason, "node(s) had volume node affinity conflict");
        assert!(!refused.resolvable);
        assert!(filter.bindings(&node("n1", "10Gi")).is_empty());
    }

    #[test]
    fn a_waiting_claim_goes_where_there_is_room_and_selects_that_node() {
        let cluster = cluster(claim(json!({})));
        let filter = VolumeFilter::new(&pod("data"), &cluster);
        assert_eq!(
            filter.check(&node("small", "1Gi")).unwrap_err().reason,
            "node(s) did not have enough free storage"
        );
        assert!(filter.check(&node("big", "10Gi")).is_ok());
        assert_eq!(
            filter.bindings(&node("big", "10Gi")),
            [VolumeBinding::SelectNode {
                namespace: "ns".into(),
                claim: "data".into()
            }]
        );
        let told = cluster_with_selected("big");
        assert!(
            VolumeFilter::new(&pod("data"), &told)
                .bindings(&node("big", "10Gi"))
                .is_empty()
        );
    }

    fn cluster_with_selected(node: &str) -> Cluster {
        cluster(claim(
            json!({"metadata": {"annotations": {SELECTED_NODE: node}}}),
        ))
    }

    #[test]
    fn missing_unprovisionable_or_immediate_unbound_claims_refuse_every_node() {
        let plain = cluster(claim(json!({})));
        let missing = VolumeFilter::new(&pod("other"), &plain);
        assert_eq!(
            missing.refused().map(String::as_str),
            Some("persistentvolumeclaim \"other\" not found")
        );
        let shared = cluster(claim(json!({"spec": {"accessModes": ["ReadWriteMany"]}})));
        assert_eq!(
            VolumeFilter::new(&pod("data"), &shared)
                .refused()
                .map(String::as_str),
            Some(
                "persistentvolumeclaim \"data\" cannot be provisioned: wasmkube.io/local-path supports only the \
                 ReadWriteOnce and ReadWriteOncePod access modes, not ReadWriteMany"
            )
        );
        let immediate = cluster_immediate();
        assert_eq!(
            VolumeFilter::new(&pod("data"), &immediate)
                .refused()
                .map(String::as_str),
            Some("pod has unbound immediate PersistentVolumeClaims")
        );
    }

    fn cluster_immediate() -> Cluster {
        let mut cluster = cluster(claim(json!({"spec": {"storageClassName": "fast"}})));
        cluster.classes.push(Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": "fast"}, "provisioner": "x.io/y",
                "volumeBindingMode": "Immediate"}),
            )
            .unwrap(),
        ));
        cluster
    }
}
