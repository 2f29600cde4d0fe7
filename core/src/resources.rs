//! Kubernetes' resource arithmetic on pods and nodes: what a pod requests (as the scheduler and the kubelet
//! count it) and what a node offers.

use crate::quantity::{milli_of, value_of};
use k8s_openapi::api::core::v1::{Container, Node, Pod};

/// What kube-scheduler counts for a container without a cpu request when it scores (not when it filters).
const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// What kube-scheduler counts for a container without a memory request when it scores: 200 MiB.
const DEFAULT_MEMORY_REQUEST: i64 = 200 << 20;

/// Resource amounts in the units the scheduler compares: millicores and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_milli: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Pod count.
    pub pods: i64,
}

impl std::ops::Add for Resources {
    type Output = Resources;
    fn add(self, other: Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli + other.cpu_milli,
            memory: self.memory + other.memory,
            pods: self.pods + other.pods,
        }
    }
}

impl std::ops::Sub for Resources {
    type Output = Resources;
    fn sub(self, other: Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli - other.cpu_milli,
            memory: self.memory - other.memory,
            pods: self.pods - other.pods,
        }
    }
}

impl Resources {
    fn max(self, other: Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli.max(other.cpu_milli),
            memory: self.memory.max(other.memory),
            pods: self.pods.max(other.pods),
        }
    }
}

/// One container's requests; with `nonzero`, an unset cpu or memory request counts as kube-scheduler's
/// default (an explicit zero stays zero).
fn container_requests(container: &Container, nonzero: bool) -> Resources {
    let requests = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref());
    let get =
        |name: &str, of: fn(&str) -> i64, default: i64| match requests.and_then(|r| r.get(name)) {
            Some(quantity) => of(&quantity.0),
            None if nonzero => default,
            None => 0,
        };
    Resources {
        cpu_milli: get("cpu", milli_of, DEFAULT_MILLI_CPU_REQUEST),
        memory: get("memory", value_of, DEFAULT_MEMORY_REQUEST),
        pods: 0,
    }
}

fn pod_requests(pod: &Pod, nonzero: bool) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources {
            pods: 1,
            ..Default::default()
        };
    };
    let running = spec
        .containers
        .iter()
        .map(|c| container_requests(c, nonzero))
        .fold(Resources::default(), |a, b| a + b);
    // Init containers run one at a time before the others, beside the sidecars (restartable init containers)
    // started before them; the pod needs the most of what any moment takes.
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for init in spec.init_containers.iter().flatten() {
        let requests = container_requests(init, nonzero);
        if init.restart_policy.as_deref() == Some("Always") {
            sidecars = sidecars + requests;
            init_peak = init_peak.max(sidecars);
        } else {
            init_peak = init_peak.max(sidecars + requests);
        }
    }
    let overhead = spec.overhead.as_ref();
    let get_overhead = |name: &str, of: fn(&str) -> i64| {
        overhead.and_then(|o| o.get(name)).map_or(0, |q| of(&q.0))
    };
    let overhead = Resources {
        cpu_milli: get_overhead("cpu", milli_of),
        memory: get_overhead("memory", value_of),
        pods: 0,
    };
    Resources {
        pods: 1,
        ..(running + sidecars).max(init_peak) + overhead
    }
}

/// What a pod asks for: the most its containers, init containers and sidecars need at once, its overhead, and
/// one pod (Kubernetes' PodRequests).
pub fn requests(pod: &Pod) -> Resources {
    pod_requests(pod, false)
}

/// What a pod counts for when nodes are scored: unset cpu and memory requests count as 100m and 200Mi, so a
/// node full of pods without requests does not look empty.
pub fn nonzero_requests(pod: &Pod) -> Resources {
    pod_requests(pod, true)
}

/// What a node offers to pods.
pub fn allocatable(node: &Node) -> Resources {
    let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let get = |name: &str, of: fn(&str) -> i64| {
        allocatable
            .and_then(|a| a.get(name))
            .map_or(0, |q| of(&q.0))
    };
    Resources {
        cpu_milli: get("cpu", milli_of),
        memory: get("memory", value_of),
        pods: get("pods", value_of),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_needs_the_most_its_init_containers_and_sidecars_take_at_once() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "200m", "memory": "100Mi"}}},
                           {"name": "b", "resources": {"requests": {"cpu": "300m"}}}],
            "initContainers": [{"name": "migrate", "resources": {"requests": {"cpu": "1", "memory": "50Mi"}}},
                               {"name": "proxy", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}],
            "overhead": {"memory": "10Mi"}}}))
        .unwrap();
        // cpu: containers 500m + sidecar 100m = 600m < the migration's 1000m; memory: 100Mi vs 50Mi, + 10Mi overhead.
        assert_eq!(
            requests(&pod),
            Resources {
                cpu_milli: 1000,
                memory: 110 << 20,
                pods: 1
            }
        );
        // Scoring counts b's unset memory and the sidecar's as 200Mi each: 100 + 200 + 200 + 10 overhead.
        assert_eq!(nonzero_requests(&pod).memory, 510 << 20);
    }
}
