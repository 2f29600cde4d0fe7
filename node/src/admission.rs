//! Admission of a pod bound to this node, as the kubelet does it: a pod placed here directly (with `nodeName`,
//! bypassing the scheduler) whose requests do not fit what the node has left is rejected, phase Failed with
//! `OutOfpods`, `OutOfcpu` or `OutOfmemory`, instead of overcommitting the node.

use wasmkube_control::scheduler::plugins::Resources;

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

#[cfg(test)]
mod tests {
    use super::*;

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
