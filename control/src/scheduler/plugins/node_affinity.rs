//! NodeAffinity: a pod's nodeSelector and required node affinity filter nodes; its preferred node affinity
//! scores them (the sum of the weights of the terms a node matches).

use super::Reason;
use k8s_openapi::api::core::v1::{Node, Pod, PreferredSchedulingTerm};
pub use wasmkube_core::node_selection::{selector_matches, term_matches};

/// The node has every label of the pod's nodeSelector and satisfies its required node affinity.
pub fn node_selector_matches(pod: &Pod, node: &Node) -> Result<(), Reason> {
    let spec = pod.spec.as_ref();
    let labels = node.metadata.labels.as_ref();
    let selector_ok = spec
        .and_then(|s| s.node_selector.as_ref())
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
    let required = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    // The terms are ORed; within a term every expression must hold.
    let affinity_ok =
        required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)));
    if selector_ok && affinity_ok {
        Ok(())
    } else {
        Err("node(s) didn't match Pod's node affinity/selector".into())
    }
}

/// The pod's preferred node affinity terms.
fn preferences(pod: &Pod) -> &[PreferredSchedulingTerm] {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default()
}

/// The raw preferred-affinity score of a node: the sum of the weights of the preferred terms it matches
/// (normalized over the nodes afterwards, the best to 100).
pub fn preferred_score(pod: &Pod, node: &Node) -> i64 {
    preferences(pod)
        .iter()
        .filter(|term| term.weight != 0 && term_matches(&term.preference, node))
        .map(|term| i64::from(term.weight))
        .sum()
}

/// Whether the pod has preferred node affinity terms (else the plugin does not score).
pub fn has_preferences(pod: &Pod) -> bool {
    !preferences(pod).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": "edge-1", "labels": {"zone": "a", "cores": "4"}}}),
        )
        .unwrap()
    }

    #[test]
    fn required_node_affinity_terms_are_ored_and_their_expressions_anded() {
        let node = node();
        let pod = |terms: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}}))
            .unwrap()
        };
        let fits = |terms| node_selector_matches(&pod(terms), &node).is_ok();
        assert!(fits(
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["edge-1"]}]}])
        ));
        assert!(!fits(
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["edge-2"]}]}])
        ));
        assert!(fits(json!([
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
            {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["2"]}, {"key": "gpu", "operator": "DoesNotExist"}]}])));
        assert!(!fits(
            json!([{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}])
        ));
        assert!(!fits(json!([{}])), "an empty term matches nothing");
    }

    #[test]
    fn preferred_terms_add_the_weights_a_node_matches() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 20, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
                {"weight": 5, "preference": {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["2"]}]}},
                {"weight": 70, "preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}}]}}}}))
        .unwrap();
        assert!(has_preferences(&pod));
        assert_eq!(
            preferred_score(&pod, &node()),
            25,
            "zone a (20) + 4 cores (5), no gpu"
        );
    }
}
