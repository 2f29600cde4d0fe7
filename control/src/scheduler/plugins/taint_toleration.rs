//! TaintToleration: a node's NoSchedule and NoExecute taints keep away pods that do not tolerate them; its
//! PreferNoSchedule taints lower the score of the nodes for pods that do not.

use super::Reason;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
pub use wasmkube_core::tolerations::tolerates;

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// Every NoSchedule/NoExecute taint of the node is tolerated by the pod.
pub fn tolerates_taints(pod: &Pod, node: &Node) -> Result<(), Reason> {
    let tolerations = tolerations(pod);
    for taint in taints(node) {
        if taint.effect == "PreferNoSchedule" {
            continue;
        }
        if !tolerations.iter().any(|t| tolerates(t, taint)) {
            return Err(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// The raw score: how many PreferNoSchedule taints of the node the pod does not tolerate (counting only its
/// tolerations for that effect or every effect); normalized reversed, the fewest best.
pub fn intolerable_preferences(pod: &Pod, node: &Node) -> i64 {
    let tolerations: Vec<&Toleration> = tolerations(pod)
        .iter()
        .filter(|t| {
            t.effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
        })
        .collect();
    taints(node)
        .iter()
        .filter(|taint| taint.effect == "PreferNoSchedule")
        .filter(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
        .count() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prefer_no_schedule_taints_count_unless_tolerated_for_that_effect() {
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {"taints": [
            {"key": "spot", "effect": "PreferNoSchedule"},
            {"key": "slow", "value": "yes", "effect": "PreferNoSchedule"},
            {"key": "gpu", "effect": "NoSchedule"}]}}))
            .unwrap();
        let pod = |tolerations: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tolerations}})).unwrap()
        };
        assert_eq!(intolerable_preferences(&pod(json!([])), &node), 2);
        assert_eq!(
            intolerable_preferences(
                &pod(json!([{"key": "spot", "operator": "Exists", "effect": "PreferNoSchedule"}])),
                &node
            ),
            1
        );
        assert_eq!(
            intolerable_preferences(
                &pod(json!([{"key": "slow", "value": "yes", "effect": "NoSchedule"}])),
                &node
            ),
            2,
            "a toleration for another effect does not count"
        );
        assert_eq!(
            tolerates_taints(&pod(json!([])), &node).unwrap_err(),
            "node(s) had untolerated taint {gpu: }"
        );
    }
}
