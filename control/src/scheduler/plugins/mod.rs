//! The scheduler's plugins, one module each as kube-scheduler's: filters say whether a node can take a pod
//! (with Kubernetes' reason when not), scores rank the nodes that can. All pure functions of the pod, the
//! node and what the cache knows of the pods already placed.

pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_ports;
pub mod node_resources;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod selection;
pub mod taint_toleration;
pub mod volume_binding;

pub use node_affinity::node_selector_matches;
pub use node_resources::{Resources, allocatable, fits, requests};
pub use taint_toleration::{tolerates, tolerates_taints};

use std::collections::BTreeMap;

/// The highest score a plugin gives a node (kube-scheduler's MaxNodeScore).
pub const MAX_NODE_SCORE: i64 = 100;

/// Why a node cannot take a pod, worded as Kubernetes' scheduler words it.
pub type Reason = String;

/// Why one node cannot take the pod, and whether preemption could change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Kubernetes' reason.
    pub reason: Reason,
    /// Whether removing pods from the node could change it (kube-scheduler's Unschedulable, as opposed to
    /// UnschedulableAndUnresolvable).
    pub resolvable: bool,
}

/// A filter's result where removing pods could help.
pub fn resolvable(result: Result<(), Reason>) -> Result<(), Rejection> {
    result.map_err(|reason| Rejection {
        reason,
        resolvable: true,
    })
}

/// A filter's result that no preemption changes.
pub fn unresolvable(result: Result<(), Reason>) -> Result<(), Rejection> {
    result.map_err(|reason| Rejection {
        reason,
        resolvable: false,
    })
}

/// Scales raw scores so the highest becomes [`MAX_NODE_SCORE`] (kube-scheduler's DefaultNormalizeScore); with
/// `reverse`, the highest raw score becomes 0 and a raw 0 the maximum. All zero: all 0 (or all the maximum when
/// reversed).
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for score in scores.iter_mut() {
        let scaled = if max == 0 {
            0
        } else {
            MAX_NODE_SCORE * *score / max
        };
        *score = if reverse {
            MAX_NODE_SCORE - scaled
        } else {
            scaled
        };
    }
}

/// The message of an unschedulable pod: "0/3 nodes are available: 1 node(s) were not ready, 2 Insufficient
/// memory."
pub fn unschedulable_message(total_nodes: usize, reasons: &[Reason]) -> String {
    if total_nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    format!(
        "0/{total_nodes} nodes are available: {}.",
        count_reasons(reasons)
    )
}

/// Reasons counted, each "N reason", sorted as text as kube-scheduler sorts them: "1 node(s) were not ready,
/// 2 Insufficient memory".
pub fn count_reasons(reasons: &[Reason]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for reason in reasons {
        *counts.entry(reason.as_str()).or_default() += 1;
    }
    let mut parts: Vec<String> = counts
        .iter()
        .map(|(reason, n)| format!("{n} {reason}"))
        .collect();
    parts.sort();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_counts_reasons_like_kubernetes() {
        let reasons = vec![
            "Insufficient memory".to_owned(),
            "Insufficient memory".to_owned(),
            "node(s) were not ready".to_owned(),
        ];
        assert_eq!(
            unschedulable_message(3, &reasons),
            "0/3 nodes are available: 1 node(s) were not ready, 2 Insufficient memory."
        );
    }

    #[test]
    fn normalizing_scales_to_the_highest_and_reverses() {
        // Raw 0, 2, 4 → 0, 50, 100; reversed → 100, 50, 0.
        let mut scores = [0, 2, 4];
        default_normalize(&mut scores, false);
        assert_eq!(scores, [0, 50, 100]);
        let mut scores = [0, 2, 4];
        default_normalize(&mut scores, true);
        assert_eq!(scores, [100, 50, 0]);
        let mut zeros = [0, 0];
        default_normalize(&mut zeros, true);
        assert_eq!(zeros, [100, 100], "nothing to hold against any node");
    }
}
