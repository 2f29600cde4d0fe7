//! One scheduling decision, as kube-scheduler's framework makes it: the filters run over the nodes from where
//! the last search stopped until enough feasible ones are found (all of them in small clusters, a share in
//! large ones: percentageOfNodesToScore), the score plugins rank those, each normalized to 0–100 and weighted,
//! and the best node wins. Pure: a function of the cache and the pod.

use super::cache::{Cache, NodeInfo, Placed};
pub use super::plugins::Rejection;
use super::plugins::inter_pod_affinity::{self, AffinityFilter, AffinityScore};
use super::plugins::pod_topology_spread::{self, SpreadFilter, SpreadScore};
use super::plugins::volume_binding::VolumeFilter;
use super::plugins::{
    Reason, Resources, count_reasons, default_normalize, node_affinity, node_ports, node_resources,
    node_unschedulable, resolvable, taint_toleration, unresolvable,
};
use crate::api::selector::LabelSelector;
use k8s_openapi::api::core::v1::Pod;

/// Below this many nodes every node is tried (kube-scheduler's minFeasibleNodesToFind).
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The least share of a large cluster's nodes tried, in percent (minFeasibleNodesPercentageToFind).
const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// The weights of the score plugins: kube-scheduler's defaults.
const WEIGHT_TAINT_TOLERATION: i64 = 3;
const WEIGHT_NODE_AFFINITY: i64 = 2;
const WEIGHT_POD_TOPOLOGY_SPREAD: i64 = 2;
const WEIGHT_INTER_POD_AFFINITY: i64 = 2;
const WEIGHT_NODE_RESOURCES_FIT: i64 = 1;
const WEIGHT_BALANCED_ALLOCATION: i64 = 1;

/// Why a pod fits no node: each node's rejection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FitError {
    /// How many nodes there are.
    pub nodes: usize,
    /// Each node that was tried and why it cannot take the pod.
    pub rejections: Vec<(String, Rejection)>,
    /// Why the pod fits no node before any node is looked at (a PreFilter's refusal), if so.
    pub pre_filter: Option<Reason>,
}

impl FitError {
    /// Kubernetes' message: "0/3 nodes are available: 1 node(s) were not ready, 2 Insufficient cpu."
    pub fn message(&self) -> String {
        if let Some(reason) = &self.pre_filter {
            return format!("0/{} nodes are available: {reason}.", self.nodes);
        }
        let reasons: Vec<Reason> = self
            .rejections
            .iter()
            .map(|(_, r)| r.reason.clone())
            .collect();
        super::plugins::unschedulable_message(self.nodes, &reasons)
    }
}

/// How many feasible nodes to find before scoring: all below 100 nodes; else a share that shrinks as the
/// cluster grows (50% − 1% per 125 nodes, at least 5%), never fewer than 100 (kube-scheduler's
/// numFeasibleNodesToFind with the adaptive percentageOfNodesToScore). 5,000 nodes: 10%, 500.
pub fn feasible_nodes_to_find(all: usize) -> usize {
    if all < MIN_FEASIBLE_NODES_TO_FIND {
        return all;
    }
    let percentage = 50usize
        .saturating_sub(all / 125)
        .max(MIN_FEASIBLE_NODES_PERCENTAGE);
    (all * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// A pod being scheduled, read once.
pub struct Incoming<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Its uid.
    pub uid: String,
    /// What it will hold on its node.
    pub placed: Placed,
    /// The selector of its default spreading (its Services' and controller's), when it has no constraints.
    pub default_selector: LabelSelector,
    /// What its claims ask of nodes.
    pub volumes: VolumeFilter,
}

impl<'a> Incoming<'a> {
    /// Reads a pod; `default_selector` is what its Services and controller select it by.
    pub fn new(pod: &'a Pod, default_selector: LabelSelector) -> Self {
        Self {
            pod,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            placed: Placed::new(pod, String::new()),
            default_selector,
            volumes: VolumeFilter::default(),
        }
    }

    /// The same pod with what its claims ask of nodes.
    pub fn with_volumes(self, volumes: VolumeFilter) -> Self {
        Self { volumes, ..self }
    }
}

/// The checks that need the whole cluster, computed once per pod (kube-scheduler's PreFilter).
#[derive(Clone)]
pub struct ClusterFilters {
    affinity: AffinityFilter,
    spread: SpreadFilter,
    /// Other pods using the pod's ReadWriteOncePod claims (kube-scheduler's VolumeRestrictions).
    once_pod_users: i64,
}

impl ClusterFilters {
    /// Counts what the pod's spreading constraints and (anti-)affinity terms care about.
    pub fn new(incoming: &Incoming, cache: &Cache) -> Self {
        let terms = incoming
            .placed
            .affinity
            .as_deref()
            .cloned()
            .unwrap_or_default();
        Self {
            affinity: AffinityFilter::new(&incoming.placed.labels, &terms, cache),
            spread: SpreadFilter::new(incoming.pod, &incoming.placed.labels, cache),
            once_pod_users: incoming
                .volumes
                .once_pod_claims()
                .iter()
                .map(|c| cache.claim_users(&incoming.uid, &incoming.placed.labels.namespace, c))
                .sum(),
        }
    }

    /// Counts (`sign` 1) or stops counting (-1) a pod placed on `node`, as preemption weighs taking it away.
    pub fn update(
        &mut self,
        incoming: &Incoming,
        cache: &Cache,
        node: &NodeInfo,
        pod: &Placed,
        sign: i64,
    ) {
        self.spread.update(incoming.pod, pod, node, sign);
        self.affinity.update(pod, node, cache.namespaces(), sign);
        if pod.labels.namespace == incoming.placed.labels.namespace {
            let uses = pod
                .claims
                .iter()
                .filter(|c| incoming.volumes.once_pod_claims().contains(c))
                .count() as i64;
            self.once_pod_users += sign * uses;
        }
    }

    /// The filters whose answer depends on other pods: ReadWriteOncePod claims in use, spreading and
    /// inter-pod affinity.
    pub fn check(&self, node: &NodeInfo) -> Result<(), Rejection> {
        if self.once_pod_users > 0 {
            return resolvable(Err(
                "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode"
                    .into(),
            ));
        }
        if !self.spread.is_empty() {
            self.spread.check(node)?;
        }
        if !self.affinity.is_empty() {
            self.affinity.check(node)?;
        }
        Ok(())
    }
}

/// Whether the pod's host ports are free on the node and its requests fit what the node's pods and
/// `reserved` (pods nominated to it that come first) leave: what preemption can change.
pub fn fits_resources(
    placed: &Placed,
    node: &NodeInfo,
    reserved: Resources,
) -> Result<(), Rejection> {
    resolvable(node_ports::host_ports_free(
        &placed.host_ports,
        &node.host_ports,
    ))?;
    resolvable(node_resources::fits(
        placed.requests,
        node.allocatable - node.requested - reserved,
    ))
}

/// The filters for one node, in kube-scheduler's order.
pub fn filter(
    incoming: &Incoming,
    cluster: &ClusterFilters,
    node: &NodeInfo,
    cache: &Cache,
) -> Result<(), Rejection> {
    let Some(object) = node.node.as_deref() else {
        return unresolvable(Err("node(s) were not found".into()));
    };
    let pod = incoming.pod;
    unresolvable(node_unschedulable::node_schedulable(
        pod,
        node.ready,
        node.cordoned,
    ))?;
    unresolvable(taint_toleration::tolerates_taints(pod, object))?;
    unresolvable(node_affinity::node_selector_matches(pod, object))?;
    let reserved = cache.nominated_ahead_of(&incoming.uid, &incoming.placed, node_name(node));
    fits_resources(&incoming.placed, node, reserved)?;
    if !incoming.volumes.is_empty() {
        incoming.volumes.check(object)?;
    }
    cluster.check(node)
}

fn node_name(node: &NodeInfo) -> &str {
    node.node
        .as_deref()
        .and_then(|n| n.metadata.name.as_deref())
        .unwrap_or_default()
}

/// Each feasible node's total score: every plugin's normalized score times its weight.
pub fn score(incoming: &Incoming, feasible: &[(&str, &NodeInfo)], cache: &Cache) -> Vec<i64> {
    let pod = incoming.pod;
    let placed = &incoming.placed;
    let mut total = vec![0i64; feasible.len()];
    let mut add = |scores: Vec<i64>, weight: i64| {
        for (t, s) in total.iter_mut().zip(scores) {
            *t += s * weight;
        }
    };
    let nodes = || feasible.iter().map(|(_, n)| *n);

    add(
        nodes()
            .map(|n| {
                node_resources::least_allocated(n.nonzero_requested + placed.nonzero, n.allocatable)
            })
            .collect(),
        WEIGHT_NODE_RESOURCES_FIT,
    );
    add(
        nodes()
            .map(|n| {
                node_resources::balanced_allocation(n.requested + placed.requests, n.allocatable)
            })
            .collect(),
        WEIGHT_BALANCED_ALLOCATION,
    );
    if node_affinity::has_preferences(pod) {
        let mut scores: Vec<i64> = nodes()
            .map(|n| {
                n.node
                    .as_deref()
                    .map_or(0, |o| node_affinity::preferred_score(pod, o))
            })
            .collect();
        default_normalize(&mut scores, false);
        add(scores, WEIGHT_NODE_AFFINITY);
    }
    let mut taints: Vec<i64> = nodes()
        .map(|n| {
            n.node
                .as_deref()
                .map_or(0, |o| taint_toleration::intolerable_preferences(pod, o))
        })
        .collect();
    default_normalize(&mut taints, true);
    add(taints, WEIGHT_TAINT_TOLERATION);

    let (constraints, defaulted) = if pod_topology_spread::has_constraints(pod) {
        (pod_topology_spread::constraints(pod, false), false)
    } else {
        (
            pod_topology_spread::system_defaults(incoming.default_selector.clone()),
            true,
        )
    };
    if let Some(spread) = SpreadScore::new(
        pod,
        &placed.labels.namespace,
        constraints,
        defaulted,
        feasible,
        cache,
    ) {
        let names: Vec<&str> = feasible.iter().map(|(name, _)| *name).collect();
        let mut scores: Vec<i64> = feasible
            .iter()
            .map(|(name, n)| spread.raw(name, n))
            .collect();
        spread.normalize(&names, &mut scores);
        add(scores, WEIGHT_POD_TOPOLOGY_SPREAD);
    }
    let terms = placed.affinity.as_deref().cloned().unwrap_or_default();
    if let Some(affinity) = AffinityScore::new(&placed.labels, &terms, cache) {
        let mut scores: Vec<i64> = nodes().map(|n| affinity.raw(n)).collect();
        inter_pod_affinity::normalize(&mut scores);
        add(scores, WEIGHT_INTER_POD_AFFINITY);
    }
    total
}

/// Finds the best node for the pod, or every node's rejection. Moves the cache's start for the next search.
pub fn find_node(cache: &mut Cache, incoming: &Incoming) -> Result<String, FitError> {
    let (chosen, next_start) = {
        let cluster = ClusterFilters::new(incoming, cache);
        let names = cache.node_names();
        let all = names.len();
        let wanted = feasible_nodes_to_find(all);
        let start = if all == 0 { 0 } else { cache.next_start % all };
        let mut feasible: Vec<(&str, &NodeInfo)> = Vec::with_capacity(wanted);
        let mut rejections = Vec::new();
        let mut processed = 0;
        for i in 0..all {
            if feasible.len() >= wanted {
                break;
            }
            processed += 1;
            let name = names[(start + i) % all].as_str();
            let Some(node) = cache.node(name) else {
                continue;
            };
            match filter(incoming, &cluster, node, cache) {
                Ok(()) => feasible.push((name, node)),
                Err(rejection) => rejections.push((name.to_owned(), rejection)),
            }
        }
        if feasible.is_empty() {
            return Err(FitError {
                nodes: all,
                rejections,
                pre_filter: incoming.volumes.refused().cloned(),
            });
        }
        let chosen = if let [(only, _)] = feasible.as_slice() {
            (*only).to_owned()
        } else {
            let scores = score(incoming, &feasible, cache);
            feasible
                .iter()
                .zip(scores)
                .max_by(|((a, _), x), ((b, _), y)| x.cmp(y).then_with(|| b.cmp(a)))
                .map(|((name, _), _)| (*name).to_owned())
                .unwrap_or_default()
        };
        (chosen, (start + processed) % all.max(1))
    };
    cache.next_start = next_start;
    Ok(chosen)
}

/// The reasons of a fit error for the nodes preemption could not help, counted (the part after
/// "preemption:").
pub fn preemption_message(nodes: usize, reasons: &[Reason]) -> String {
    format!(
        "preemption: 0/{nodes} nodes are available: {}.",
        count_reasons(reasons)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::fixtures::{cluster, node, pod};
    use serde_json::json;

    fn schedule(cache: &mut Cache, pod: &Pod) -> Result<String, String> {
        find_node(cache, &Incoming::new(pod, LabelSelector::default())).map_err(|e| e.message())
    }

    #[test]
    fn large_clusters_score_a_shrinking_share_of_their_nodes() {
        assert_eq!(feasible_nodes_to_find(50), 50, "small: every node");
        assert_eq!(
            feasible_nodes_to_find(100),
            100,
            "50% of 100 is under the floor of 100"
        );
        assert_eq!(feasible_nodes_to_find(1000), 420, "50% − 8% = 42%");
        assert_eq!(feasible_nodes_to_find(5000), 500, "50% − 40% = 10%");
        assert_eq!(feasible_nodes_to_find(20_000), 1000, "never under 5%");
    }

    #[test]
    fn a_search_resumes_where_the_last_one_stopped() {
        let nodes = (0..200)
            .map(|i| node(&format!("n{i:03}"), json!({})))
            .collect();
        let mut cache = cluster(nodes, vec![]);
        let first = schedule(&mut cache, &pod("a", json!({}), "10m", json!({}))).unwrap();
        assert_eq!(
            cache.next_start, 100,
            "200 nodes: 100 feasible found, the next search starts after them"
        );
        let second = schedule(&mut cache, &pod("b", json!({}), "10m", json!({}))).unwrap();
        assert!(
            first.as_str() < "n100" && second.as_str() >= "n100",
            "{first} then {second}"
        );
    }

    #[test]
    fn hard_spreading_keeps_zones_within_max_skew() {
        let web = || json!({"app": "web"});
        let mut cache = cluster(
            vec![
                node("a1", json!({"topology.kubernetes.io/zone": "a"})),
                node("a2", json!({"topology.kubernetes.io/zone": "a"})),
                node("b1", json!({"topology.kubernetes.io/zone": "b"})),
                node("nozone", json!({})),
            ],
            vec![
                (pod("w1", web(), "10m", json!({})), "a1"),
                (pod("w2", web(), "10m", json!({})), "a2"),
            ],
        );
        let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]});
        // Zone a holds 2, zone b 0: in a the skew would be 2 + 1 − 0 = 3 > 1; in b, 0 + 1 − 0 = 1.
        assert_eq!(
            schedule(&mut cache, &pod("w3", web(), "10m", spread.clone())).unwrap(),
            "b1"
        );
        let mut full = cluster(
            vec![
                node("a1", json!({"topology.kubernetes.io/zone": "a"})),
                node("nozone", json!({})),
            ],
            vec![(pod("w1", web(), "10m", json!({})), "a1")],
        );
        let mut b_down = spread.clone();
        b_down["nodeSelector"] = json!({"kubernetes.io/hostname": "a1"});
        assert_eq!(
            schedule(&mut full, &pod("w3", web(), "10m", b_down)).unwrap(),
            "a1",
            "one domain only: its own minimum, skew 1"
        );
        let mut cache = cluster(vec![node("nozone", json!({}))], vec![]);
        assert_eq!(
            schedule(&mut cache, &pod("w3", web(), "10m", spread)).unwrap_err(),
            "0/1 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label)."
        );
    }

    #[test]
    fn anti_affinity_keeps_pods_apart_both_ways() {
        let anti = |app: &str| {
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}]}}})
        };
        let mut cache = cluster(
            vec![node("n1", json!({})), node("n2", json!({}))],
            vec![(pod("db-0", json!({"app": "db"}), "10m", anti("db")), "n1")],
        );
        // The new db pod's own term and the existing db pod's term both rule out n1.
        assert_eq!(
            schedule(
                &mut cache,
                &pod("db-1", json!({"app": "db"}), "10m", anti("db"))
            )
            .unwrap(),
            "n2"
        );
        let mut cache = cluster(
            vec![node("n1", json!({}))],
            vec![(pod("db-0", json!({"app": "db"}), "10m", anti("db")), "n1")],
        );
        assert_eq!(
            schedule(
                &mut cache,
                &pod("db-1", json!({"app": "db"}), "10m", json!({}))
            )
            .unwrap_err(),
            "0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules."
        );
        assert_eq!(
            schedule(
                &mut cache,
                &pod("cache", json!({"app": "cache"}), "10m", anti("db"))
            )
            .unwrap_err(),
            "0/1 nodes are available: 1 node(s) didn't match pod anti-affinity rules."
        );
    }

    #[test]
    fn affinity_follows_the_pods_it_names_and_lets_the_first_of_a_group_anywhere() {
        let with_web = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}});
        let nodes = || {
            vec![
                node("a1", json!({"topology.kubernetes.io/zone": "a"})),
                node("b1", json!({"topology.kubernetes.io/zone": "b"})),
                node("b2", json!({"topology.kubernetes.io/zone": "b"})),
            ]
        };
        let mut empty = cluster(nodes(), vec![]);
        assert!(
            schedule(
                &mut empty,
                &pod("web-0", json!({"app": "web"}), "10m", with_web.clone())
            )
            .is_ok(),
            "the first web pod matches its own term"
        );
        assert_eq!(
            schedule(
                &mut empty,
                &pod("cache", json!({"app": "cache"}), "10m", with_web.clone())
            )
            .unwrap_err(),
            "0/3 nodes are available: 3 node(s) didn't match pod affinity rules."
        );
        let mut cache = cluster(
            nodes(),
            vec![(pod("web-0", json!({"app": "web"}), "10m", json!({})), "b2")],
        );
        let placed = schedule(
            &mut cache,
            &pod("cache", json!({"app": "cache"}), "10m", with_web),
        )
        .unwrap();
        assert!(placed == "b1" || placed == "b2", "zone b: {placed}");
    }

    #[test]
    fn scores_in_worked_numbers() {
        // n1 holds two pods of the Deployment (100m each), n2 none; both 1 cpu, 1 GiB.
        let web = || json!({"app": "web"});
        let mut cache = cluster(
            vec![node("n1", json!({})), node("n2", json!({}))],
            vec![
                (pod("w1", web(), "100m", json!({})), "n1"),
                (pod("w2", web(), "100m", json!({})), "n1"),
            ],
        );
        let incoming_pod = pod("w3", web(), "100m", json!({}));
        let selector = LabelSelector::parse("app=web").unwrap();
        let incoming = Incoming::new(&incoming_pod, selector);
        let n1 = cache.node("n1").unwrap();
        let n2 = cache.node("n2").unwrap();
        let scores = score(&incoming, &[("n1", n1), ("n2", n2)], &cache);
        // Least allocated: cpu (1000 − 300) / 1000 = 70 vs 90; memory counts 200Mi per pod unset:
        //   (1024 − 600) / 1024 = 41 vs (1024 − 200) / 1024 = 80 → (70 + 41) / 2 = 55 vs (90 + 80) / 2 = 85.
        // Balanced: shares 0.3 and 0 (no memory requested) → 85; 0.1 and 0 → 95.
        // Taints: none → 100 each, × 3.
        // Spreading (system default, per node maxSkew 3): ln(2 + 2) = 1.386 per pod; n1 2 × 1.386 + 2 = 5,
        //   n2 0 + 2 = 2 → 100 × (5 + 2 − 5) / 5 = 40 and 100 × (5 + 2 − 2) / 5 = 100, × 2.
        assert_eq!(scores, vec![55 + 85 + 300 + 80, 85 + 95 + 300 + 200]);
        cache.next_start = 0;
        assert_eq!(find_node(&mut cache, &incoming).unwrap(), "n2");
    }

    #[test]
    fn preferred_pod_affinity_draws_a_pod_to_the_zone_of_the_pods_it_names() {
        // n1 (zone a) holds the cache pod and is busier; the web pod prefers the cache's zone with weight 50:
        // n1 scores 50 raw, n2 0 → 100 and 0 after normalizing, × 2 = 200, more than the load costs n1.
        let mut cache = cluster(
            vec![
                node("n1", json!({"topology.kubernetes.io/zone": "a"})),
                node("n2", json!({"topology.kubernetes.io/zone": "b"})),
            ],
            vec![(
                pod("cache", json!({"app": "cache"}), "500m", json!({})),
                "n1",
            )],
        );
        let near = json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}},
                                               "topologyKey": "topology.kubernetes.io/zone"}}]}}});
        assert_eq!(
            schedule(&mut cache, &pod("web", json!({"app": "web"}), "100m", near)).unwrap(),
            "n1"
        );
        assert_eq!(
            schedule(
                &mut cache,
                &pod("other", json!({"app": "other"}), "100m", json!({}))
            )
            .unwrap(),
            "n2",
            "without the preference, the emptier node"
        );
    }

    #[test]
    fn preferred_node_affinity_and_prefer_no_schedule_taints_weigh_in() {
        let mut tainted = node("n1", json!({"disk": "ssd"}));
        tainted.spec = serde_json::from_value(
            json!({"taints": [{"key": "spot", "effect": "PreferNoSchedule"}]}),
        )
        .unwrap();
        let mut cache = cluster(vec![tainted, node("n2", json!({}))], vec![]);
        // The taint costs n1 3 × 100; a preferred ssd (weight 2 × 100) does not make up for it.
        let ssd = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}});
        assert_eq!(
            schedule(&mut cache, &pod("p", json!({}), "10m", ssd.clone())).unwrap(),
            "n2"
        );
        let mut tolerant = ssd;
        tolerant["tolerations"] = json!([{"key": "spot", "operator": "Exists"}]);
        assert_eq!(
            schedule(&mut cache, &pod("q", json!({}), "10m", tolerant)).unwrap(),
            "n1"
        );
    }
}
