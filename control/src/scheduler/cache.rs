//! The scheduler's view of the cluster, kept current from its watches (not recomputed per pod), as
//! kube-scheduler's cache: every node with what its pods request, the host ports they hold and how many of
//! them carry each set of labels; the pods with affinity terms; the namespaces' labels; and the pods this
//! scheduler placed whose binding the watch has not shown yet ("assumed").

use super::plugins::inter_pod_affinity::PodAffinityTerms;
use super::plugins::node_ports::host_ports;
use super::plugins::node_resources::nonzero_requests;
use super::plugins::selection::{NamespaceLabels, PodLabels};
use super::plugins::{self, Resources};
use crate::cache::Change;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::ResourceExt;
use kube::runtime::watcher::Event;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// What the scheduler needs to know of one placed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Its name.
    pub name: String,
    /// Its node.
    pub node: String,
    /// What it requests.
    pub requests: Resources,
    /// What it counts for when nodes are scored (unset requests as kube-scheduler's defaults).
    pub nonzero: Resources,
    /// The host ports it takes.
    pub host_ports: Vec<i32>,
    /// Its namespace and labels.
    pub labels: Arc<PodLabels>,
    /// Being deleted: still holds its resources, no longer counts for spreading or affinity.
    pub terminating: bool,
    /// Its priority (`spec.priority`).
    pub priority: i32,
    /// Its inter-pod affinity terms, if it has any.
    pub affinity: Option<Arc<PodAffinityTerms>>,
    /// The claims its volumes name (in its namespace).
    pub claims: Vec<String>,
    /// Placed by this scheduler, not yet seen bound.
    pub assumed: bool,
}

impl Placed {
    /// What a pod holds on `node`.
    pub fn new(pod: &Pod, node: String) -> Self {
        let affinity = PodAffinityTerms::of(pod);
        Placed {
            name: pod.name_any(),
            node,
            requests: plugins::requests(pod),
            nonzero: nonzero_requests(pod),
            host_ports: host_ports(pod),
            labels: Arc::new(PodLabels::of(pod)),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
            affinity: (!affinity.is_empty()).then(|| Arc::new(affinity)),
            claims: crate::api::storage::pod_claims(pod)
                .map(str::to_owned)
                .collect(),
            assumed: false,
        }
    }
}

/// One node and its load.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// The Node object (absent while only pods bound to that name are known).
    pub node: Option<Arc<Node>>,
    /// What the node offers to pods.
    pub allocatable: Resources,
    /// Whether its Ready condition is True.
    pub ready: bool,
    /// Whether it is cordoned (`spec.unschedulable`).
    pub cordoned: bool,
    /// The sum of its pods' requests.
    pub requested: Resources,
    /// The sum of its pods' requests as scoring counts them.
    pub nonzero_requested: Resources,
    /// Host ports in use, with how many pods hold each.
    pub host_ports: HashMap<i32, usize>,
    /// How many of its pods (not terminating) carry each namespace and label set.
    pub label_groups: HashMap<Arc<PodLabels>, usize>,
    /// The uids of its pods.
    pub pods: BTreeSet<String>,
    /// How many of its pods have each priority.
    pub priorities: BTreeMap<i32, usize>,
}

impl NodeInfo {
    /// How many of the node's pods in `namespace` a selector picks.
    pub fn count_matching(
        &self,
        namespace: &str,
        selector: &crate::api::selector::LabelSelector,
    ) -> i64 {
        self.label_groups
            .iter()
            .filter(|(group, _)| group.namespace == namespace && selector.matches(&group.labels))
            .map(|(_, n)| *n as i64)
            .sum()
    }

    /// The lowest priority of its pods.
    pub fn lowest_priority(&self) -> Option<i32> {
        self.priorities.keys().next().copied()
    }

    /// The node's labels.
    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.node.as_ref()?.metadata.labels.as_ref()
    }

    /// One label of the node.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels()?.get(key).map(String::as_str)
    }

    /// Counts a pod on the node.
    pub fn add(&mut self, uid: &str, placed: &Placed) {
        self.requested = self.requested + placed.requests;
        self.nonzero_requested = self.nonzero_requested + placed.nonzero;
        for port in &placed.host_ports {
            *self.host_ports.entry(*port).or_default() += 1;
        }
        if !placed.terminating {
            *self.label_groups.entry(placed.labels.clone()).or_default() += 1;
        }
        self.pods.insert(uid.to_owned());
        *self.priorities.entry(placed.priority).or_default() += 1;
    }

    /// Stops counting a pod on the node.
    pub fn remove(&mut self, uid: &str, placed: &Placed) {
        self.requested = self.requested - placed.requests;
        self.nonzero_requested = self.nonzero_requested - placed.nonzero;
        for port in &placed.host_ports {
            if let Some(count) = self.host_ports.get_mut(port) {
                *count -= 1;
                if *count == 0 {
                    self.host_ports.remove(port);
                }
            }
        }
        if !placed.terminating
            && let Some(count) = self.label_groups.get_mut(&placed.labels)
        {
            *count -= 1;
            if *count == 0 {
                self.label_groups.remove(&placed.labels);
            }
        }
        self.pods.remove(uid);
        if let Some(count) = self.priorities.get_mut(&placed.priority) {
            *count -= 1;
            if *count == 0 {
                self.priorities.remove(&placed.priority);
            }
        }
    }
}

/// Every placed pod by uid, every node by name, and the namespaces' labels.
#[derive(Debug, Default)]
pub struct Cache {
    pods: HashMap<String, Placed>,
    nodes: HashMap<String, NodeInfo>,
    /// The names of the nodes that have a Node object, sorted: the order nodes are tried in.
    order: Vec<String>,
    namespaces: NamespaceLabels,
    /// Every namespace and label set of placed pods (not terminating), with how many carry it on each node:
    /// what selectors are matched against, once per set rather than once per pod or node.
    groups: HashMap<Arc<PodLabels>, HashMap<String, usize>>,
    with_affinity: BTreeSet<String>,
    /// Unbound pods that preempted others, by uid: their nominated node and what they will take there.
    nominated: HashMap<String, Placed>,
    relisted_namespaces: Option<HashSet<String>>,
    /// Where the next search through the nodes starts (kube-scheduler's nextStartNodeIndex).
    pub next_start: usize,
}

/// What a pod holds on its node, if it is bound and not finished.
pub fn placed(pod: &Pod) -> Option<Placed> {
    let node = pod
        .spec
        .as_ref()?
        .node_name
        .clone()
        .filter(|n| !n.is_empty())?;
    (!pod_finished(pod)).then(|| Placed::new(pod, node))
}

fn pod_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Cache {
    /// The names of the nodes with a Node object, in the order they are tried.
    pub fn node_names(&self) -> &[String] {
        &self.order
    }

    /// One node and its load.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    /// The placed pods of a node, with their uids.
    pub fn pods_on<'a>(
        &'a self,
        node: &'a NodeInfo,
    ) -> impl Iterator<Item = (&'a str, &'a Placed)> {
        node.pods
            .iter()
            .filter_map(|uid| Some((uid.as_str(), self.pods.get(uid)?)))
    }

    /// The placed pods that have affinity terms, with their uids.
    pub fn pods_with_affinity(&self) -> impl Iterator<Item = (&str, &Placed)> {
        self.with_affinity
            .iter()
            .filter_map(|uid| Some((uid.as_str(), self.pods.get(uid)?)))
    }

    /// How many placed pods other than `uid` use the claim `namespace/name`.
    pub fn claim_users(&self, uid: &str, namespace: &str, name: &str) -> i64 {
        self.pods
            .iter()
            .filter(|(other, p)| {
                *other != uid
                    && p.labels.namespace == namespace
                    && p.claims.iter().any(|c| c == name)
            })
            .count() as i64
    }

    /// Every namespace and label set of placed pods (not terminating), with how many carry it on each node.
    pub fn label_groups(&self) -> impl Iterator<Item = (&PodLabels, &HashMap<String, usize>)> {
        self.groups
            .iter()
            .map(|(group, nodes)| (group.as_ref(), nodes))
    }

    /// The names of the nodes holding pods in `namespace` that `selector` picks, with how many.
    pub fn matching_names<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a crate::api::selector::LabelSelector,
    ) -> impl Iterator<Item = (&'a str, i64)> + 'a {
        self.groups
            .iter()
            .filter(move |(group, _)| {
                group.namespace == namespace && selector.matches(&group.labels)
            })
            .flat_map(|(_, nodes)| nodes.iter())
            .map(|(node, count)| (node.as_str(), *count as i64))
    }

    /// The nodes (with a Node object) holding pods in `namespace` that `selector` picks, with how many.
    pub fn matching_by_node<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a crate::api::selector::LabelSelector,
    ) -> impl Iterator<Item = (&'a NodeInfo, i64)> + 'a {
        self.matching_names(namespace, selector)
            .filter_map(|(node, count)| {
                Some((self.nodes.get(node).filter(|n| n.node.is_some())?, count))
            })
    }

    /// Every namespace's labels.
    pub fn namespaces(&self) -> &NamespaceLabels {
        &self.namespaces
    }

    /// Takes one change of the shared pod informer (which reports pods that vanished while its watch was down as
    /// deleted).
    pub fn pod_changed(&mut self, change: &Change<Pod>) {
        match change {
            Change::Applied(pod) => self.update_pod(pod),
            Change::Deleted(pod) => {
                if let Some(uid) = pod.uid() {
                    self.nominated.remove(&uid);
                    self.remove(&uid);
                }
            }
        }
    }

    /// Takes one change of the shared node informer (which reports nodes that vanished while its watch was
    /// down as deleted).
    pub fn node_changed(&mut self, change: &Change<Node>) {
        match change {
            Change::Applied(node) => self.set_node(node.name_any(), Some(node)),
            Change::Deleted(node) => self.set_node(node.name_any(), None),
        }
    }

    /// Takes one event of the namespace watch.
    pub fn apply_namespace(&mut self, event: &Event<Namespace>) {
        match event {
            Event::Init => self.relisted_namespaces = Some(HashSet::new()),
            Event::InitApply(namespace) | Event::Apply(namespace) => {
                if let Some(seen) = self.relisted_namespaces.as_mut() {
                    seen.insert(namespace.name_any());
                }
                self.namespaces
                    .insert(namespace.name_any(), namespace.labels().clone());
            }
            Event::InitDone => {
                let seen = self.relisted_namespaces.take().unwrap_or_default();
                self.namespaces.retain(|name, _| seen.contains(name));
            }
            Event::Delete(namespace) => {
                self.namespaces.remove(&namespace.name_any());
            }
        }
    }

    fn set_node(&mut self, name: String, node: Option<&Node>) {
        match node {
            Some(node) => {
                let info = self.nodes.entry(name.clone()).or_default();
                info.allocatable = plugins::allocatable(node);
                info.ready = plugins::node_unschedulable::is_ready(node);
                info.cordoned = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
                info.node = Some(Arc::new(node.clone()));
                if let Err(at) = self.order.binary_search(&name) {
                    self.order.insert(at, name);
                }
            }
            None => {
                if let Ok(at) = self.order.binary_search(&name) {
                    self.order.remove(at);
                }
                if let Some(info) = self.nodes.get_mut(&name) {
                    info.node = None;
                    info.allocatable = Resources::default();
                    info.ready = false;
                    if info.pods.is_empty() {
                        self.nodes.remove(&name);
                    }
                }
            }
        }
    }

    /// What the pods nominated to `node` that come before `placed` (as high a priority or higher, not the pod
    /// itself) will take there: kept free for them while their victims leave.
    pub fn nominated_ahead_of(&self, uid: &str, placed: &Placed, node: &str) -> Resources {
        self.nominated
            .iter()
            .filter(|(other, p)| *other != uid && p.node == node && p.priority >= placed.priority)
            .fold(Resources::default(), |sum, (_, p)| sum + p.requests)
    }

    fn update_pod(&mut self, pod: &Pod) {
        let Some(uid) = pod.uid() else { return };
        let bound = placed(pod);
        let nominated = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| {
                !n.is_empty()
                    && bound.is_none()
                    && !pod_finished(pod)
                    && pod.metadata.deletion_timestamp.is_none()
            });
        match nominated {
            Some(node) => {
                self.nominated
                    .insert(uid.clone(), Placed::new(pod, node.to_owned()));
            }
            None => {
                self.nominated.remove(&uid);
            }
        }
        match bound {
            Some(placed) => self.insert(uid, placed),
            // Not bound (yet): an assumption of ours stands until its binding is seen or fails.
            None if self.pods.get(&uid).is_some_and(|p| p.assumed) && !pod_finished(pod) => {}
            None => self.remove(&uid),
        }
    }

    /// Places a pod on a node before the watch shows its binding.
    pub fn assume(&mut self, uid: &str, placed: Placed) {
        self.insert(
            uid.to_owned(),
            Placed {
                assumed: true,
                ..placed
            },
        );
    }

    /// Drops an assumption whose binding failed.
    pub fn forget(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|p| p.assumed) {
            self.remove(uid);
        }
    }

    fn insert(&mut self, uid: String, placed: Placed) {
        self.remove(&uid);
        if !placed.terminating {
            *self
                .groups
                .entry(placed.labels.clone())
                .or_default()
                .entry(placed.node.clone())
                .or_default() += 1;
        }
        self.nodes
            .entry(placed.node.clone())
            .or_default()
            .add(&uid, &placed);
        if placed.affinity.is_some() {
            self.with_affinity.insert(uid.clone());
        }
        self.pods.insert(uid, placed);
    }

    fn remove(&mut self, uid: &str) {
        let Some(placed) = self.pods.remove(uid) else {
            return;
        };
        self.with_affinity.remove(uid);
        if !placed.terminating
            && let Some(nodes) = self.groups.get_mut(&placed.labels)
        {
            if let Some(count) = nodes.get_mut(&placed.node) {
                *count -= 1;
                if *count == 0 {
                    nodes.remove(&placed.node);
                }
            }
            if nodes.is_empty() {
                self.groups.remove(&placed.labels);
            }
        }
        let Some(node) = self.nodes.get_mut(&placed.node) else {
            return;
        };
        node.remove(uid, &placed);
        if node.node.is_none() && node.pods.is_empty() {
            self.nodes.remove(&placed.node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, node: Option<&str>, phase: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": uid, "namespace": "ns", "uid": uid, "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}},
                     "ports": [{"containerPort": 80, "hostPort": 8080}]}]},
            "status": {"phase": phase}})).unwrap()
    }

    fn web() -> crate::api::selector::LabelSelector {
        crate::api::selector::LabelSelector::parse("app=web").unwrap()
    }

    #[test]
    fn loads_follow_bindings_assumptions_and_finished_pods() {
        let mut cache = Cache::default();
        cache.pod_changed(&Change::Applied(Arc::new(pod("a", Some("n1"), "Running"))));
        let load = cache.node("n1").unwrap();
        assert_eq!((load.requested.cpu_milli, load.requested.pods), (100, 1));
        assert_eq!(load.count_matching("ns", &web()), 1);
        assert_eq!(load.count_matching("other", &web()), 0);
        assert!(load.host_ports.contains_key(&8080));

        // An assumed pod counts at once and survives status updates that do not show the binding yet.
        cache.assume("b", placed(&pod("b", Some("n1"), "Pending")).unwrap());
        cache.pod_changed(&Change::Applied(Arc::new(pod("b", None, "Pending"))));
        assert_eq!(cache.node("n1").unwrap().requested.pods, 2);
        cache.pod_changed(&Change::Applied(Arc::new(pod("b", Some("n1"), "Running"))));
        let load = cache.node("n1").unwrap();
        assert_eq!(load.requested.pods, 2, "seen bound: counted once");
        assert_eq!(load.count_matching("ns", &web()), 2);

        cache.pod_changed(&Change::Applied(Arc::new(pod(
            "a",
            Some("n1"),
            "Succeeded",
        ))));
        cache.forget("b");
        assert_eq!(
            cache.node("n1").unwrap().requested.pods,
            1,
            "b was confirmed, so forget leaves it"
        );
        cache.pod_changed(&Change::Deleted(Arc::new(pod("b", Some("n1"), "Running"))));
        assert!(
            cache.node("n1").is_none(),
            "a name with neither a Node nor pods is dropped"
        );
    }

    #[test]
    fn nodes_are_tried_in_name_order_and_leave_with_their_object() {
        let node = |name: &str| -> Node {
            serde_json::from_value(json!({"metadata": {"name": name},
                "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "10"}}}))
            .unwrap()
        };
        let mut cache = Cache::default();
        cache.node_changed(&Change::Applied(Arc::new(node("n2"))));
        cache.node_changed(&Change::Applied(Arc::new(node("n1"))));
        cache.pod_changed(&Change::Applied(Arc::new(pod("a", Some("n2"), "Running"))));
        assert_eq!(cache.node_names(), ["n1", "n2"]);
        assert_eq!(cache.node("n1").unwrap().allocatable.cpu_milli, 2000);
        cache.node_changed(&Change::Deleted(Arc::new(node("n2"))));
        assert_eq!(cache.node_names(), ["n1"], "n2 was deleted");
        assert_eq!(
            cache.node("n2").unwrap().requested.pods,
            1,
            "its pods stay known until they go"
        );
    }
}
