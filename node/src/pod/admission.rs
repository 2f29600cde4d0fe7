//! Admission of a pod bound to this node, as the kubelet does it: a pod placed here directly (with `nodeName`,
//! bypassing the scheduler) whose requests do not fit what the node has left is rejected, phase Failed with
//! `OutOfpods`, `OutOfcpu` or `OutOfmemory`, instead of overcommitting the node; and while the node is under
//! memory pressure, a BestEffort pod that does not tolerate it is rejected (`Evicted`), as the kubelet's
//! eviction manager does.

use k8s_openapi::api::core::v1::Pod;
use wasmkube_core::qos::QosClass;
use wasmkube_core::resources::Resources;
use wasmkube_core::tolerations::tolerates_no_schedule;

/// Why a pod was turned away: the pod status' reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `OutOfpods`, `OutOfcpu` or `OutOfmemory`.
    pub reason: String,
    /// Kubernetes' wording, with the numbers.
    pub message: String,
}

/// Whether a pod asking for `request` fits beside the running pods' `used`, within `allocatable`.
pub fn admit(request: Resources, used: Resources, allocatable: Resources) -> Result<(), Rejection> {
    let checks = [
        ("pods", request.pods, used.pods, allocatable.pods),
        (
            "cpu",
            request.cpu_milli,
            used.cpu_milli,
            allocatable.cpu_milli,
        ),
        ("memory", request.memory, used.memory, allocatable.memory),
    ];
    for (resource, requested, used, capacity) in checks {
        if requested > 0 && requested + used > capacity {
            return Err(Rejection {
                reason: format!("OutOf{resource}"),
                message: format!(
                    "Pod was rejected: Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
                ),
            });
        }
    }
    Ok(())
}

/// The kubelet's eviction-manager admission: under memory pressure only pods that are not BestEffort, or that
/// tolerate the `node.kubernetes.io/memory-pressure` taint, may start.
pub fn admit_under_memory_pressure(pod: &Pod, under_pressure: bool) -> Result<(), Rejection> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let tolerated = tolerates_no_schedule(
        spec.tolerations.as_deref().unwrap_or_default(),
        "node.kubernetes.io/memory-pressure",
    );
    if !under_pressure || QosClass::of(spec) != QosClass::BestEffort || tolerated {
        return Ok(());
    }
    Err(Rejection {
        reason: "Evicted".into(),
        message: "The node had condition: [MemoryPressure]. ".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn under_memory_pressure_only_best_effort_pods_that_do_not_tolerate_it_are_turned_away() {
        let pod = |resources: serde_json::Value, tolerations: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
                "containers": [{"name": "c", "image": "i", "resources": resources}],
                "tolerations": tolerations}}))
            .unwrap()
        };
        let best_effort = pod(json!({}), json!([]));
        let burstable = pod(json!({"requests": {"memory": "10Mi"}}), json!([]));
        let tolerant = pod(
            json!({}),
            json!([{"key": "node.kubernetes.io/memory-pressure", "operator": "Exists"}]),
        );
        let rejected = admit_under_memory_pressure(&best_effort, true).unwrap_err();
        assert_eq!(rejected.reason, "Evicted");
        assert_eq!(
            rejected.message,
            "The node had condition: [MemoryPressure]. "
        );
        assert_eq!(admit_under_memory_pressure(&best_effort, false), Ok(()));
        assert_eq!(admit_under_memory_pressure(&burstable, true), Ok(()));
        assert_eq!(admit_under_memory_pressure(&tolerant, true), Ok(()));
    }

    fn resources(pods: i64, cpu_milli: i64, memory: i64) -> Resources {
        Resources {
            cpu_milli,
            memory,
            pods,
        }
    }

    #[test]
    fn a_pod_fits_until_a_resource_runs_out() {
        let node = resources(3, 2000, 1 << 30);
        assert_eq!(
            admit(resources(1, 500, 0), resources(1, 1000, 0), node),
            Ok(())
        );
        let cpu = admit(resources(1, 1500, 0), resources(1, 1000, 0), node).unwrap_err();
        assert_eq!(cpu.reason, "OutOfcpu");
        assert_eq!(
            cpu.message,
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 1500, used: 1000, capacity: 2000"
        );
        let memory = admit(resources(1, 0, 2 << 30), resources(0, 0, 0), node).unwrap_err();
        assert_eq!(memory.reason, "OutOfmemory");
        let pods = admit(resources(1, 0, 0), resources(3, 0, 0), node).unwrap_err();
        assert_eq!(pods.reason, "OutOfpods");
        // Asking for nothing always fits what is left, even on a full node.
        assert_eq!(
            admit(resources(1, 0, 0), resources(1, 5000, 0), node),
            Ok(())
        );
    }
}
