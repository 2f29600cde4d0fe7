//! PodTopologySpread: a pod's topologySpreadConstraints keep the pods they select within `maxSkew` of each
//! other across topology domains (DoNotSchedule filters, ScheduleAnyway scores); a pod without constraints that
//! belongs to a Service, ReplicaSet, StatefulSet or ReplicationController is spread by the system defaults
//! (per node, maxSkew 3; per zone, maxSkew 5; both ScheduleAnyway).

use super::selection::{PodLabels, selector};
use super::{
    MAX_NODE_SCORE, Rejection, node_selector_matches, resolvable, tolerates_taints, unresolvable,
};
use crate::api::selector::{LabelSelector, Requirement};
use crate::scheduler::cache::{Cache, NodeInfo, Placed};
use k8s_openapi::api::core::v1::{Node, Pod, TopologySpreadConstraint};
use std::collections::{HashMap, HashSet};

const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

/// One spreading constraint, read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpreadConstraint {
    /// How far a domain's count may exceed the lowest.
    pub max_skew: i64,
    /// The node label whose values are the domains.
    pub topology_key: String,
    /// Which pods (of the pod's namespace) count; `None` counts none.
    pub selector: Option<LabelSelector>,
    /// Below this many domains, the lowest count is taken as 0.
    pub min_domains: Option<i64>,
    /// Only nodes the pod's node affinity and selector accept count (nodeAffinityPolicy Honor, the default).
    pub honor_node_affinity: bool,
    /// Only nodes whose taints the pod tolerates count (nodeTaintsPolicy Honor; Ignore is the default).
    pub honor_taints: bool,
}

impl SpreadConstraint {
    fn counts_node(&self, pod: &Pod, node: &Node) -> bool {
        (!self.honor_node_affinity || node_selector_matches(pod, node).is_ok())
            && (!self.honor_taints || tolerates_taints(pod, node).is_ok())
    }

    fn count(&self, namespace: &str, node: &NodeInfo) -> i64 {
        self.selector
            .as_ref()
            .map_or(0, |s| node.count_matching(namespace, s))
    }
}

/// The pod's constraints of one kind: `hard` for DoNotSchedule, else ScheduleAnyway. `matchLabelKeys` add the
/// pod's own values of those labels to the selector.
pub fn constraints(pod: &Pod, hard: bool) -> Vec<SpreadConstraint> {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let wanted = if hard {
        "DoNotSchedule"
    } else {
        "ScheduleAnyway"
    };
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == wanted)
        .map(|c: &TopologySpreadConstraint| {
            let selector = selector(c.label_selector.as_ref()).map(|mut s| {
                for key in c.match_label_keys.iter().flatten() {
                    if let Some(value) = labels.get(key) {
                        s.0.push(Requirement::In(key.clone(), vec![value.clone()]));
                    }
                }
                s
            });
            SpreadConstraint {
                max_skew: i64::from(c.max_skew),
                topology_key: c.topology_key.clone(),
                selector,
                min_domains: c.min_domains.map(i64::from),
                honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            }
        })
        .collect()
}

/// Whether the pod has spreading constraints of its own (then the system defaults do not apply).
pub fn has_constraints(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .is_some_and(|c| !c.is_empty())
}

/// Kubernetes' system default constraints for a pod whose Services and controller select it with `selector`
/// (none when the selector is empty).
pub fn system_defaults(selector: LabelSelector) -> Vec<SpreadConstraint> {
    if selector.0.is_empty() {
        return Vec::new();
    }
    [(HOSTNAME, 3), (ZONE, 5)]
        .into_iter()
        .map(|(key, max_skew)| SpreadConstraint {
            max_skew,
            topology_key: key.to_owned(),
            selector: Some(selector.clone()),
            min_domains: None,
            honor_node_affinity: true,
            honor_taints: false,
        })
        .collect()
}

/// A topology domain: a node label key and value.
type Domain = (String, String);

fn has_all_keys(node: &NodeInfo, constraints: &[SpreadConstraint]) -> bool {
    constraints
        .iter()
        .all(|c| node.label(&c.topology_key).is_some())
}

fn domain(node: &NodeInfo, key: &str) -> Domain {
    (
        key.to_owned(),
        node.label(key).unwrap_or_default().to_owned(),
    )
}

/// The lowest count of a key's domains (i32::MAX with none) and how many domains it has.
fn lowest_count(counts: &HashMap<Domain, i64>, key: &str) -> (i64, i64) {
    counts
        .iter()
        .filter(|((k, _), _)| k == key)
        .fold((i64::from(i32::MAX), 0), |(low, n), (_, count)| {
            (low.min(*count), n + 1)
        })
}

/// What the filter needs, computed once per pod: the matching pods per domain, and each key's lowest count.
/// Preemption updates it as it takes pods away and gives them back.
#[derive(Debug, Clone, Default)]
pub struct SpreadFilter {
    constraints: Vec<SpreadConstraint>,
    counts: HashMap<Domain, i64>,
    /// Per constraint: the lowest count of its domains (i32::MAX with none) and how many domains it has.
    lowest: Vec<(i64, i64)>,
    /// Per constraint: whether the pod counts in its own selector.
    self_match: Vec<bool>,
}

impl SpreadFilter {
    /// Counts the pods each DoNotSchedule constraint selects, per domain, over the nodes that count.
    pub fn new(pod: &Pod, labels: &PodLabels, cache: &Cache) -> Self {
        let constraints = constraints(pod, true);
        if constraints.is_empty() {
            return Self::default();
        }
        let mut counts: HashMap<Domain, i64> = HashMap::new();
        for name in cache.node_names() {
            let Some(info) = cache.node(name) else {
                continue;
            };
            let Some(node) = info.node.as_deref() else {
                continue;
            };
            if !has_all_keys(info, &constraints) {
                continue;
            }
            for constraint in constraints.iter().filter(|c| c.counts_node(pod, node)) {
                *counts
                    .entry(domain(info, &constraint.topology_key))
                    .or_default() += constraint.count(&labels.namespace, info);
            }
        }
        let lowest = constraints
            .iter()
            .map(|c| lowest_count(&counts, &c.topology_key))
            .collect();
        let self_match = constraints
            .iter()
            .map(|c| {
                c.selector
                    .as_ref()
                    .is_some_and(|s| s.matches(&labels.labels))
            })
            .collect();
        SpreadFilter {
            constraints,
            counts,
            lowest,
            self_match,
        }
    }

    /// Counts (`sign` 1) or stops counting (-1) a pod on `node` for the constraints that select it
    /// (kube-scheduler's AddPod/RemovePod extensions); `incoming` is the pod being placed.
    pub fn update(&mut self, incoming: &Pod, pod: &Placed, node: &NodeInfo, sign: i64) {
        let Some(object) = node.node.as_deref() else {
            return;
        };
        let namespace = incoming.metadata.namespace.as_deref().unwrap_or_default();
        if pod.terminating
            || pod.labels.namespace != namespace
            || !has_all_keys(node, &self.constraints)
        {
            return;
        }
        for (i, constraint) in self.constraints.iter().enumerate() {
            let selects = constraint
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(&pod.labels.labels));
            if !selects || !constraint.counts_node(incoming, object) {
                continue;
            }
            *self
                .counts
                .entry(domain(node, &constraint.topology_key))
                .or_default() += sign;
            self.lowest[i] = lowest_count(&self.counts, &constraint.topology_key);
        }
    }

    /// Whether the pod has no DoNotSchedule constraints.
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty()
    }

    /// The filter for one node: placing the pod there keeps every constraint's skew within maxSkew. A skew
    /// too large is resolvable by removing pods; a node without the topology key is not.
    pub fn check(&self, node: &NodeInfo) -> Result<(), Rejection> {
        for (i, constraint) in self.constraints.iter().enumerate() {
            let Some(value) = node.label(&constraint.topology_key) else {
                return unresolvable(Err(
                    "node(s) didn't match pod topology spread constraints (missing required label)"
                        .into(),
                ));
            };
            let (mut lowest, domains) = self.lowest[i];
            if constraint.min_domains.is_some_and(|min| domains < min) {
                lowest = 0;
            }
            let matching = self
                .counts
                .get(&(constraint.topology_key.clone(), value.to_owned()))
                .copied()
                .unwrap_or(0);
            let skew = matching + i64::from(self.self_match[i]) - lowest;
            if skew > constraint.max_skew {
                return resolvable(Err(
                    "node(s) didn't match pod topology spread constraints".into()
                ));
            }
        }
        Ok(())
    }
}

/// What the score needs, computed once per pod over the nodes that passed the filters.
#[derive(Debug)]
pub struct SpreadScore {
    constraints: Vec<SpreadConstraint>,
    /// Per constraint, the matching pods in each of its domains: by label value, or by node name for the
    /// per-node (hostname) ones.
    counts: Vec<HashMap<String, i64>>,
    weights: Vec<f64>,
    ignored: HashSet<String>,
}

impl SpreadScore {
    /// `constraints` are the pod's ScheduleAnyway ones or the system defaults (`defaulted`: then a node without
    /// a zone label is still scored). `None` without constraints.
    pub fn new(
        pod: &Pod,
        namespace: &str,
        constraints: Vec<SpreadConstraint>,
        defaulted: bool,
        feasible: &[(&str, &NodeInfo)],
        cache: &Cache,
    ) -> Option<Self> {
        if constraints.is_empty() {
            return None;
        }
        let require_all = !defaulted;
        let mut ignored = HashSet::new();
        let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); constraints.len()];
        for (name, node) in feasible {
            if require_all && !has_all_keys(node, &constraints) {
                ignored.insert((*name).to_owned());
                continue;
            }
            for (constraint, domains) in constraints.iter().zip(counts.iter_mut()) {
                if constraint.topology_key == HOSTNAME {
                    continue;
                }
                let value = node.label(&constraint.topology_key).unwrap_or_default();
                if !domains.contains_key(value) {
                    domains.insert(value.to_owned(), 0);
                }
            }
        }
        // Counted through the cache's label sets (each matched once), not node by node: per node (hostname,
        // keyed by node name) over every node, the others over every node that counts.
        for (constraint, domains) in constraints.iter().zip(counts.iter_mut()) {
            let Some(selector) = constraint.selector.as_ref() else {
                continue;
            };
            if constraint.topology_key == HOSTNAME {
                for (name, count) in cache.matching_names(namespace, selector) {
                    *domains.entry(name.to_owned()).or_default() += count;
                }
                continue;
            }
            for (info, count) in cache.matching_by_node(namespace, selector) {
                let Some(node) = info.node.as_deref() else {
                    continue;
                };
                if (require_all && !has_all_keys(info, &constraints))
                    || !constraint.counts_node(pod, node)
                {
                    continue;
                }
                let value = info.label(&constraint.topology_key).unwrap_or_default();
                if let Some(total) = domains.get_mut(value) {
                    *total += count;
                }
            }
        }
        let weights = constraints
            .iter()
            .zip(&counts)
            .map(|(c, domains)| {
                let size = if c.topology_key == HOSTNAME {
                    feasible.len() - ignored.len()
                } else {
                    domains.len()
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        Some(SpreadScore {
            constraints,
            counts,
            weights,
            ignored,
        })
    }

    /// Whether a node is left out of spreading (it lacks a constraint's key): it scores 0.
    pub fn ignores(&self, name: &str) -> bool {
        !self.ignored.is_empty() && self.ignored.contains(name)
    }

    /// The raw score of a node: the matching pods in its domains, weighted by how many domains each key has
    /// (ln(domains + 2)), plus maxSkew − 1 each; the fewest is best.
    pub fn raw(&self, name: &str, node: &NodeInfo) -> i64 {
        if self.ignores(name) {
            return 0;
        }
        let mut score = 0.0;
        for (i, constraint) in self.constraints.iter().enumerate() {
            let Some(value) = node.label(&constraint.topology_key) else {
                continue;
            };
            let domain = if constraint.topology_key == HOSTNAME {
                name
            } else {
                value
            };
            let count = self.counts[i].get(domain).copied().unwrap_or(0);
            score += count as f64 * self.weights[i] + (constraint.max_skew - 1) as f64;
        }
        score.round() as i64
    }

    /// Scales raw scores so the lowest becomes the best: 100 × (max + min − score) / max over the nodes not
    /// ignored (all 100 when every raw score is 0); ignored nodes get 0.
    pub fn normalize(&self, names: &[&str], scores: &mut [i64]) {
        let counted = || {
            names
                .iter()
                .zip(scores.iter())
                .filter(|(name, _)| !self.ignores(name))
                .map(|(_, s)| *s)
        };
        let min = counted().min().unwrap_or(0);
        let max = counted().max().unwrap_or(0);
        for (name, score) in names.iter().zip(scores.iter_mut()) {
            *score = if self.ignores(name) {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *score) / max
            };
        }
    }
}

/// What selects the pod for default spreading: the selectors of the Services of its namespace that select it,
/// and its controller's selector (kube-scheduler's DefaultSelector).
pub fn default_selector<'a>(
    labels: &PodLabels,
    service_selectors: impl IntoIterator<Item = &'a std::collections::BTreeMap<String, String>>,
    controller_selector: Option<LabelSelector>,
) -> LabelSelector {
    let mut merged = std::collections::BTreeMap::new();
    for selector in service_selectors {
        let selects = !selector.is_empty()
            && selector
                .iter()
                .all(|(k, v)| labels.labels.get(k) == Some(v));
        if selects {
            merged.extend(selector.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    let mut requirements: Vec<Requirement> = merged
        .into_iter()
        .map(|(k, v)| Requirement::In(k, vec![v]))
        .collect();
    requirements.extend(controller_selector.into_iter().flat_map(|s| s.0));
    LabelSelector(requirements)
}
