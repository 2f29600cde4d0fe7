//! The scheduler's filters and scores: pure functions of a pod, a node and the pods already on it.

use crate::api::quantity::{milli_of, value_of};
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use std::collections::BTreeMap;

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

/// What a pod asks for: the sum of its containers' requests, and one pod.
pub fn requests(pod: &Pod) -> Resources {
    let mut total = Resources {
        pods: 1,
        ..Default::default()
    };
    for container in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let requests = container
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref());
        if let Some(cpu) = requests.and_then(|r| r.get("cpu")) {
            total.cpu_milli += milli_of(&cpu.0);
        }
        if let Some(memory) = requests.and_then(|r| r.get("memory")) {
            total.memory += value_of(&memory.0);
        }
    }
    total
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

/// Why a node cannot take a pod, worded as Kubernetes' scheduler words it.
pub type Reason = String;

/// The node is Ready and schedulable.
pub fn node_ready(node: &Node) -> Result<(), Reason> {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready {
        return Err("node(s) were not ready".into());
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        return Err("node(s) were unschedulable".into());
    }
    Ok(())
}

/// The pod's requests fit what is left of the node.
pub fn fits(request: Resources, free: Resources) -> Result<(), Reason> {
    if request.pods > free.pods {
        return Err("Too many pods".into());
    }
    if request.cpu_milli > free.cpu_milli {
        return Err("Insufficient cpu".into());
    }
    if request.memory > free.memory {
        return Err("Insufficient memory".into());
    }
    Ok(())
}

/// The node has every label of the pod's nodeSelector and satisfies its required node affinity.
pub fn node_selector_matches(pod: &Pod, node: &Node) -> Result<(), Reason> {
    let selector = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_selector.clone())
        .unwrap_or_default();
    let labels: BTreeMap<String, String> = node.metadata.labels.clone().unwrap_or_default();
    let required = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let name = node.metadata.name.clone().unwrap_or_default();
    // The terms are ORed; within a term every expression must hold.
    let affinity_ok = required.is_none_or(|r| {
        r.node_selector_terms.iter().any(|term| {
            let fields = term.match_fields.iter().flatten().all(|e| {
                let value = (e.key == "metadata.name").then_some(name.as_str());
                requirement_holds(&e.operator, value, e.values.as_deref().unwrap_or_default())
            });
            let expressions = term.match_expressions.iter().flatten().all(|e| {
                let value = labels.get(&e.key).map(String::as_str);
                requirement_holds(&e.operator, value, e.values.as_deref().unwrap_or_default())
            });
            let empty = term.match_fields.as_ref().is_none_or(Vec::is_empty)
                && term.match_expressions.as_ref().is_none_or(Vec::is_empty);
            !empty && fields && expressions
        })
    });
    if affinity_ok && selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        Ok(())
    } else {
        Err("node(s) didn't match Pod's node affinity/selector".into())
    }
}

/// One node selector requirement on a label (or field) value: In, NotIn, Exists, DoesNotExist, Gt, Lt.
fn requirement_holds(operator: &str, value: Option<&str>, values: &[String]) -> bool {
    let number = |text: &str| text.parse::<i64>().ok();
    match operator {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(bound)) = (
                value.and_then(number),
                values.first().and_then(|v| number(v)),
            ) else {
                return false;
            };
            if operator == "Gt" {
                have > bound
            } else {
                have < bound
            }
        }
        _ => false,
    }
}

/// Whether one toleration tolerates one taint (key, effect and value or `Exists`; an empty key with `Exists`
/// tolerates everything).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let key_ok = toleration
        .key
        .as_deref()
        .is_none_or(|k| k.is_empty() || k == taint.key);
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let value_ok = match toleration.operator.as_deref() {
        Some("Exists") => true,
        _ => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
    };
    key_ok && effect_ok && value_ok
}

/// Every NoSchedule/NoExecute taint of the node is tolerated by the pod.
pub fn tolerates_taints(pod: &Pod, node: &Node) -> Result<(), Reason> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    for taint in node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
    {
        if taint.effect == "PreferNoSchedule" {
            continue;
        }
        let tolerated = tolerations.iter().any(|t| tolerates(t, &taint));
        if !tolerated {
            return Err(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// The host ports the pod asks for are free on the node.
pub fn host_ports_free(pod: &Pod, in_use: &std::collections::HashSet<i32>) -> Result<(), Reason> {
    if host_ports(pod).iter().any(|p| in_use.contains(p)) {
        return Err("node(s) didn't have free ports for the requested pod ports".into());
    }
    Ok(())
}

/// The host ports a pod's containers take.
pub fn host_ports(pod: &Pod) -> Vec<i32> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| p.host_port.filter(|h| *h > 0))
        .collect()
}

/// The uid of the pod's controller (its ReplicaSet, Job, ...).
pub fn owner(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// A node's score out of 100: half for free capacity after placing the pod (least allocated), half for
/// having fewer pods of the same owner already (`siblings`, for spread).
pub fn score(request: Resources, free: Resources, total: Resources, siblings: usize) -> i64 {
    let share = |free: i64, wanted: i64, total: i64| {
        if total <= 0 {
            0.0
        } else {
            (free - wanted).max(0) as f64 / total as f64
        }
    };
    let least_allocated = (share(free.cpu_milli, request.cpu_milli, total.cpu_milli)
        + share(free.memory, request.memory, total.memory))
        / 2.0;
    let spread = 1.0 / (1.0 + siblings as f64);
    ((least_allocated * 50.0) + (spread * 50.0)).round() as i64
}

/// The message of an unschedulable pod: "0/3 nodes are available: 2 Insufficient memory, 1 node(s) were not
/// ready."
pub fn unschedulable_message(total_nodes: usize, reasons: &[Reason]) -> String {
    if total_nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for reason in reasons {
        *counts.entry(reason.as_str()).or_default() += 1;
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(reason, n)| format!("{n} {reason}"))
        .collect();
    format!("0/{total_nodes} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_node_affinity_terms_are_ored_and_their_expressions_anded() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "edge-1", "labels": {"zone": "a", "cores": "4"}}}))
        .unwrap();
        let pod = |terms: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}}))
            .unwrap()
        };
        let fits = |terms| node_selector_matches(&pod(terms), &node).is_ok();
        assert!(fits(
            serde_json::json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["edge-1"]}]}])
        ));
        assert!(!fits(
            serde_json::json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["edge-2"]}]}])
        ));
        assert!(fits(serde_json::json!([
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
            {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["2"]}, {"key": "gpu", "operator": "DoesNotExist"}]}])));
        assert!(!fits(
            serde_json::json!([{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}])
        ));
        assert!(
            !fits(serde_json::json!([{}])),
            "an empty term matches nothing"
        );
    }

    #[test]
    fn requests_that_do_not_fit_say_which_resource() {
        let free = Resources {
            cpu_milli: 1000,
            memory: 1 << 30,
            pods: 10,
        };
        assert!(
            fits(
                Resources {
                    cpu_milli: 500,
                    memory: 1 << 20,
                    pods: 1
                },
                free
            )
            .is_ok()
        );
        assert_eq!(
            fits(
                Resources {
                    cpu_milli: 2000,
                    memory: 0,
                    pods: 1
                },
                free
            )
            .unwrap_err(),
            "Insufficient cpu"
        );
        assert_eq!(
            fits(
                Resources {
                    cpu_milli: 0,
                    memory: 2 << 30,
                    pods: 1
                },
                free
            )
            .unwrap_err(),
            "Insufficient memory"
        );
        assert_eq!(
            fits(
                Resources {
                    pods: 11,
                    ..Default::default()
                },
                free
            )
            .unwrap_err(),
            "Too many pods"
        );
    }

    #[test]
    fn the_message_counts_reasons_like_kubernetes() {
        let reasons = vec![
            "Insufficient memory".to_owned(),
            "Insufficient memory".to_owned(),
            "node(s) were not ready".to_owned(),
        ];
        assert_eq!(
            unschedulable_message(3, &reasons),
            "0/3 nodes are available: 2 Insufficient memory, 1 node(s) were not ready."
        );
    }
}
