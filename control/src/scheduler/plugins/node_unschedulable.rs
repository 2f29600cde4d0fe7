//! NodeUnschedulable: a cordoned node takes only pods that tolerate its `node.kubernetes.io/unschedulable`
//! taint; and a node that is not Ready takes none.

use super::Reason;
use k8s_openapi::api::core::v1::{Node, Pod};
use wasmkube_core::tolerations::tolerates_no_schedule;

/// Whether a node's Ready condition is True.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The node is Ready, and not cordoned or cordoned with a toleration of the pod for it (the node's state read
/// once per node change: `ready`, `cordoned`).
pub fn node_schedulable(pod: &Pod, ready: bool, cordoned: bool) -> Result<(), Reason> {
    if !ready {
        return Err("node(s) were not ready".into());
    }
    if cordoned {
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or_default();
        let tolerated = tolerates_no_schedule(tolerations, "node.kubernetes.io/unschedulable");
        if !tolerated {
            return Err("node(s) were unschedulable".into());
        }
    }
    Ok(())
}
