//! NodeUnschedulable: a cordoned node takes only pods that tolerate its `node.kubernetes.io/unschedulable`
//! taint; and a node that is not Ready takes none.

use super::{Reason, tolerates};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};

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
        let cordon = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerated = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| tolerates(t, &cordon)));
        if !tolerated {
            return Err("node(s) were unschedulable".into());
        }
    }
    Ok(())
}
