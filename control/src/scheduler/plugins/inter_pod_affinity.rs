//! InterPodAffinity: required pod affinity and anti-affinity filter nodes by the pods already in each node's
//! topology domain (and existing pods' anti-affinity keeps matching pods out of theirs); preferred terms, and
//! existing pods' terms toward the new pod, score them.

use super::selection::{NamespaceLabels, PodLabels, selector, selects};
use super::{MAX_NODE_SCORE, Rejection, resolvable, unresolvable};
use crate::api::selector::LabelSelector;
use crate::scheduler::cache::{Cache, NodeInfo, Placed};
use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Existing pods' required affinity toward a new pod counts this much in its score (kube-scheduler's
/// hardPodAffinityWeight default).
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// One pod (anti-)affinity term, read once for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityTerm {
    selector: Option<LabelSelector>,
    namespaces: BTreeSet<String>,
    namespace_selector: Option<LabelSelector>,
    /// The node label whose value is the term's topology domain.
    pub topology_key: String,
    /// Its weight (preferred terms; 0 for required ones).
    pub weight: i64,
}

impl AffinityTerm {
    /// Reads a term of a pod in `namespace`: no namespaces and no namespace selector mean the pod's own.
    fn new(term: &PodAffinityTerm, namespace: &str, weight: i64) -> Self {
        let mut namespaces: BTreeSet<String> = term.namespaces.iter().flatten().cloned().collect();
        if namespaces.is_empty() && term.namespace_selector.is_none() {
            namespaces.insert(namespace.to_owned());
        }
        Self {
            selector: selector(term.label_selector.as_ref()),
            namespaces,
            namespace_selector: selector(term.namespace_selector.as_ref()),
            topology_key: term.topology_key.clone(),
            weight,
        }
    }

    /// Whether the term picks a pod.
    pub fn matches(&self, pod: &PodLabels, namespaces: &NamespaceLabels) -> bool {
        let empty = BTreeMap::new();
        let in_namespace = self.namespaces.contains(&pod.namespace)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| s.matches(namespaces.get(&pod.namespace).unwrap_or(&empty)));
        in_namespace && selects(self.selector.as_ref(), &pod.labels)
    }
}

/// A pod's inter-pod affinity terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAffinityTerms {
    /// Required affinity: all must hold.
    pub required_affinity: Vec<AffinityTerm>,
    /// Required anti-affinity: none may be broken.
    pub required_anti_affinity: Vec<AffinityTerm>,
    /// Preferred affinity, weighted.
    pub preferred_affinity: Vec<AffinityTerm>,
    /// Preferred anti-affinity, weighted.
    pub preferred_anti_affinity: Vec<AffinityTerm>,
}

impl PodAffinityTerms {
    /// The terms of a pod's `spec.affinity`.
    pub fn of(pod: &Pod) -> Self {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let required = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .map(|t| AffinityTerm::new(t, namespace, 0))
                .collect()
        };
        let preferred = |terms: Option<&Vec<WeightedPodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .map(|t| AffinityTerm::new(&t.pod_affinity_term, namespace, i64::from(t.weight)))
                .collect()
        };
        let pod_affinity = affinity.and_then(|a| a.pod_affinity.as_ref());
        let anti = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        Self {
            required_affinity: required(pod_affinity.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti_affinity: required(anti.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: preferred(pod_affinity.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: preferred(anti.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
        }
    }

    /// Whether the pod has no terms at all.
    pub fn is_empty(&self) -> bool {
        self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty()
    }
}

/// A topology domain: a node label key and value.
type Domain = (String, String);

/// What the filter needs, computed once per pod (kube-scheduler's PreFilter state); preemption updates it as
/// it takes pods away and gives them back.
#[derive(Debug, Clone, Default)]
pub struct AffinityFilter {
    /// The new pod's namespace and labels.
    incoming: PodLabels,
    /// Domains that existing pods' required anti-affinity keeps the new pod out of.
    blocked_by_existing: HashMap<Domain, i64>,
    /// Pods matching all the new pod's required affinity terms, per domain of each term.
    affinity_counts: HashMap<Domain, i64>,
    /// Pods matching each of the new pod's required anti-affinity terms, per domain.
    anti_affinity_counts: HashMap<Domain, i64>,
    required_affinity: Vec<AffinityTerm>,
    required_anti_affinity: Vec<AffinityTerm>,
    /// The new pod matches its own affinity terms (it may be the first of its group).
    matches_own_affinity: bool,
}

impl AffinityFilter {
    /// Counts, over the cluster, the pods the new pod's required terms and other pods' anti-affinity care about.
    pub fn new(pod: &PodLabels, terms: &PodAffinityTerms, cache: &Cache) -> Self {
        let namespaces = cache.namespaces();
        let mut state = AffinityFilter {
            incoming: pod.clone(),
            required_affinity: terms.required_affinity.clone(),
            required_anti_affinity: terms.required_anti_affinity.clone(),
            matches_own_affinity: terms
                .required_affinity
                .iter()
                .all(|t| t.matches(pod, namespaces)),
            ..Default::default()
        };
        for (_, existing) in cache.pods_with_affinity() {
            let Some(affinity) = &existing.affinity else {
                continue;
            };
            let Some(node) = cache.node(&existing.node) else {
                continue;
            };
            for term in &affinity.required_anti_affinity {
                if let Some(value) = node.label(&term.topology_key)
                    && term.matches(pod, namespaces)
                {
                    *state
                        .blocked_by_existing
                        .entry((term.topology_key.clone(), value.to_owned()))
                        .or_default() += 1;
                }
            }
        }
        if state.required_affinity.is_empty() && state.required_anti_affinity.is_empty() {
            return state;
        }
        for (group, nodes) in cache.label_groups() {
            let affine = !state.required_affinity.is_empty()
                && state
                    .required_affinity
                    .iter()
                    .all(|t| t.matches(group, namespaces));
            let repelling: Vec<&AffinityTerm> = state
                .required_anti_affinity
                .iter()
                .filter(|t| t.matches(group, namespaces))
                .collect();
            if !affine && repelling.is_empty() {
                continue;
            }
            for (name, count) in nodes {
                let Some(node) = cache.node(name).filter(|n| n.node.is_some()) else {
                    continue;
                };
                let count = *count as i64;
                if affine {
                    for term in &state.required_affinity {
                        if let Some(value) = node.label(&term.topology_key) {
                            *state
                                .affinity_counts
                                .entry((term.topology_key.clone(), value.to_owned()))
                                .or_default() += count;
                        }
                    }
                }
                for term in &repelling {
                    if let Some(value) = node.label(&term.topology_key) {
                        *state
                            .anti_affinity_counts
                            .entry((term.topology_key.clone(), value.to_owned()))
                            .or_default() += count;
                    }
                }
            }
        }
        state
    }

    /// Whether there is nothing to check (no terms of the pod, no anti-affinity of others toward it).
    pub fn is_empty(&self) -> bool {
        self.blocked_by_existing.is_empty()
            && self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
    }

    fn count(counts: &HashMap<Domain, i64>, key: &str, value: &str) -> i64 {
        counts
            .get(&(key.to_owned(), value.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// The filter for one node. Existing pods' anti-affinity and the pod's own anti-affinity are resolvable by
    /// removing pods; a missing affinity match is not (kube-scheduler's statuses).
    pub fn check(&self, node: &NodeInfo) -> Result<(), Rejection> {
        let labels = node.labels();
        let blocked = labels.into_iter().flatten().any(|(key, value)| {
            !self.blocked_by_existing.is_empty()
                && Self::count(&self.blocked_by_existing, key, value) > 0
        });
        if blocked {
            return resolvable(Err(
                "node(s) didn't satisfy existing pods anti-affinity rules".into(),
            ));
        }
        if !self.satisfies_affinity(node) {
            return unresolvable(Err("node(s) didn't match pod affinity rules".into()));
        }
        let anti = self.required_anti_affinity.iter().any(|term| {
            node.label(&term.topology_key).is_some_and(|value| {
                Self::count(&self.anti_affinity_counts, &term.topology_key, value) > 0
            })
        });
        if anti {
            return resolvable(Err("node(s) didn't match pod anti-affinity rules".into()));
        }
        Ok(())
    }

    /// Counts (`sign` 1) or stops counting (-1) a pod on `node` (kube-scheduler's AddPod/RemovePod extensions):
    /// its anti-affinity toward the new pod, and whether the new pod's required terms pick it.
    pub fn update(
        &mut self,
        pod: &Placed,
        node: &NodeInfo,
        namespaces: &NamespaceLabels,
        sign: i64,
    ) {
        fn add(counts: &mut HashMap<Domain, i64>, node: &NodeInfo, key: &str, sign: i64) {
            let Some(value) = node.label(key) else {
                return;
            };
            let domain = (key.to_owned(), value.to_owned());
            let count = counts.entry(domain.clone()).or_default();
            *count += sign;
            if *count == 0 {
                counts.remove(&domain);
            }
        }
        for term in pod.affinity.iter().flat_map(|a| &a.required_anti_affinity) {
            if term.matches(&self.incoming, namespaces) {
                add(
                    &mut self.blocked_by_existing,
                    node,
                    &term.topology_key,
                    sign,
                );
            }
        }
        if pod.terminating {
            return;
        }
        let affine = !self.required_affinity.is_empty()
            && self
                .required_affinity
                .iter()
                .all(|t| t.matches(&pod.labels, namespaces));
        if affine {
            for term in &self.required_affinity {
                add(&mut self.affinity_counts, node, &term.topology_key, sign);
            }
        }
        for term in &self.required_anti_affinity {
            if term.matches(&pod.labels, namespaces) {
                add(
                    &mut self.anti_affinity_counts,
                    node,
                    &term.topology_key,
                    sign,
                );
            }
        }
    }

    fn satisfies_affinity(&self, node: &NodeInfo) -> bool {
        let mut pods_exist = true;
        for term in &self.required_affinity {
            // Every topology key of the terms must be on the node.
            let Some(value) = node.label(&term.topology_key) else {
                return false;
            };
            if Self::count(&self.affinity_counts, &term.topology_key, value) <= 0 {
                pods_exist = false;
            }
        }
        // The first pod of a group with affinity to itself may go anywhere its keys are, or it would wait forever.
        pods_exist || (self.affinity_counts.is_empty() && self.matches_own_affinity)
    }
}

/// What the score needs, computed once per pod (kube-scheduler's PreScore state): for each topology key and
/// value, the weight the domain carries.
#[derive(Debug, Default)]
pub struct AffinityScore {
    domains: HashMap<String, HashMap<String, i64>>,
}

impl AffinityScore {
    /// Weighs every domain by the new pod's preferred terms and by existing pods' terms toward it; `None`
    /// when neither exists (the plugin does not score).
    pub fn new(pod: &PodLabels, terms: &PodAffinityTerms, cache: &Cache) -> Option<Self> {
        let has_preferences =
            !terms.preferred_affinity.is_empty() || !terms.preferred_anti_affinity.is_empty();
        if !has_preferences && cache.pods_with_affinity().next().is_none() {
            return None;
        }
        let namespaces = cache.namespaces();
        let mut score = AffinityScore::default();
        let mut add = |node: &NodeInfo, term: &AffinityTerm, weight: i64| {
            if let Some(value) = node.label(&term.topology_key) {
                *score
                    .domains
                    .entry(term.topology_key.clone())
                    .or_default()
                    .entry(value.to_owned())
                    .or_default() += weight;
            }
        };
        if has_preferences {
            for (group, nodes) in cache.label_groups() {
                let attracting: Vec<&AffinityTerm> = terms
                    .preferred_affinity
                    .iter()
                    .filter(|t| t.matches(group, namespaces))
                    .collect();
                let repelling: Vec<&AffinityTerm> = terms
                    .preferred_anti_affinity
                    .iter()
                    .filter(|t| t.matches(group, namespaces))
                    .collect();
                if attracting.is_empty() && repelling.is_empty() {
                    continue;
                }
                for (name, count) in nodes {
                    let Some(node) = cache.node(name).filter(|n| n.node.is_some()) else {
                        continue;
                    };
                    let count = *count as i64;
                    for term in &attracting {
                        add(node, term, term.weight * count);
                    }
                    for term in &repelling {
                        add(node, term, -term.weight * count);
                    }
                }
            }
        }
        for (_, existing) in cache.pods_with_affinity() {
            let (Some(affinity), Some(node)) = (&existing.affinity, cache.node(&existing.node))
            else {
                continue;
            };
            if existing.terminating {
                continue;
            }
            for term in &affinity.required_affinity {
                if term.matches(pod, namespaces) {
                    add(node, term, HARD_POD_AFFINITY_WEIGHT);
                }
            }
            for term in &affinity.preferred_affinity {
                if term.matches(pod, namespaces) {
                    add(node, term, term.weight);
                }
            }
            for term in &affinity.preferred_anti_affinity {
                if term.matches(pod, namespaces) {
                    add(node, term, -term.weight);
                }
            }
        }
        Some(score)
    }

    /// The raw score of a node: the weights of the domains it is in.
    pub fn raw(&self, node: &NodeInfo) -> i64 {
        self.domains
            .iter()
            .filter_map(|(key, values)| values.get(node.label(key)?))
            .sum()
    }
}

/// Scales raw scores between the lowest (0) and the highest (100); all equal: all 0.
pub fn normalize(scores: &mut [i64]) {
    let (Some(min), Some(max)) = (scores.iter().min().copied(), scores.iter().max().copied())
    else {
        return;
    };
    for score in scores.iter_mut() {
        *score = if max > min {
            (MAX_NODE_SCORE as f64 * ((*score - min) as f64 / (max - min) as f64)) as i64
        } else {
            0
        };
    }
}
