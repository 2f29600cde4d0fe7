//! Node lifecycle: a node whose agent stops renewing its Lease for the grace period becomes Ready=Unknown and
//! gets the `node.kubernetes.io/unreachable` taints; its pods are marked not Ready at once (Services stop
//! sending them traffic), and those that do not tolerate the NoExecute taint (or whose tolerationSeconds ran
//! out) are evicted, so their owners replace them on live nodes. When the agent is back, the taints go and the
//! agent writes its pods' readiness again.

use super::controller_loop::ControllerLoop;
use super::{ControllerError, reflect, retry_after};
use crate::cache::Cache;
use crate::events::{EventType, Recorder};
use crate::informers::Informers;
use crate::scheduler::plugins::tolerates;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The taint of a node whose agent went silent.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

struct Context {
    client: kube::Client,
    leases: Cache<Lease>,
    pods: Cache<Pod>,
    grace: Duration,
    events: Recorder,
    /// When this controller last saw each node's agent report in, by node name.
    observed: Mutex<HashMap<String, Observation>>,
}

/// A node's last report as this controller saw it. Silence is measured from when a report was *observed*, not
/// from the time written in it, as Kubernetes' node controller does: a control plane that was down itself
/// (or a skewed clock) must not declare every node lost the moment it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The report: the later of the Lease renewal and the Ready heartbeat.
    pub heard: jiff::Timestamp,
    /// When this controller first saw that report.
    pub seen_at: jiff::Timestamp,
}

/// The observation after looking at a node's report `heard` at `now`: a new report (or the first look) starts
/// the grace period again; the same report keeps when it was first seen.
pub fn observe(
    previous: Option<Observation>,
    heard: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Observation {
    match previous {
        Some(seen) if seen.heard == heard => seen,
        _ => Observation {
            heard,
            seen_at: now,
        },
    }
}

/// The last time the node's agent was heard from: its Lease renewal or its Ready heartbeat.
fn last_heard(node: &Node, lease: Option<&Lease>) -> Option<jiff::Timestamp> {
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let heartbeat = ready_condition(node).and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
    renewed.max(heartbeat)
}

fn ready_condition(node: &Node) -> Option<&k8s_openapi::api::core::v1::NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

fn taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

/// Kubernetes' TaintNodesByCondition: the NoSchedule taint a node condition in a status puts on the node.
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", "node.kubernetes.io/not-ready"),
    ("Ready", "Unknown", UNREACHABLE_TAINT),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
];

/// The taint of a cordoned node (`spec.unschedulable`).
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// The node's taints as the node controller keeps them: a NoSchedule taint for each condition of
/// [`CONDITION_TAINTS`] and for `spec.unschedulable`, and the unreachable NoExecute taint (with the time it was
/// added, which tolerationSeconds count from) while the agent is `silent` (its Ready condition then counts as
/// Unknown). Taints set by others are kept, and so are those of ours that still hold.
pub fn wanted_taints(node: &Node, silent: bool, now: jiff::Timestamp) -> Vec<Taint> {
    let current = taints(node);
    let status_of = |condition: &str| {
        if silent && condition == "Ready" {
            return Some("Unknown");
        }
        node.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == condition)
            .map(|c| c.status.as_str())
    };
    let mut wanted: Vec<(&str, &str)> = CONDITION_TAINTS
        .iter()
        .filter(|(condition, status, _)| status_of(condition) == Some(*status))
        .map(|(_, _, key)| (*key, "NoSchedule"))
        .collect();
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        wanted.push((UNSCHEDULABLE_TAINT, "NoSchedule"));
    }
    if silent {
        wanted.push((UNREACHABLE_TAINT, "NoExecute"));
    }
    let ours = |t: &Taint| {
        t.key == UNSCHEDULABLE_TAINT || CONDITION_TAINTS.iter().any(|(_, _, key)| t.key == *key)
    };
    let mut kept: Vec<Taint> = current.iter().filter(|t| !ours(t)).cloned().collect();
    for (key, effect) in wanted {
        let existing = current.iter().find(|t| t.key == key && t.effect == effect);
        kept.push(existing.cloned().unwrap_or_else(|| Taint {
            key: key.into(),
            effect: effect.into(),
            time_added: (effect == "NoExecute").then_some(Time(now)),
            value: None,
        }));
    }
    kept
}

/// When a pod must leave a node with these taints: now for an untolerated NoExecute taint, after its
/// tolerationSeconds for a tolerated one, never if every NoExecute taint is tolerated without a limit.
pub fn eviction_time(pod: &Pod, taints: &[Taint]) -> Option<jiff::Timestamp> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .filter_map(|taint| {
            let added = taint
                .time_added
                .as_ref()
                .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0);
            let matching: Vec<_> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
            if matching.is_empty() {
                return Some(added);
            }
            // The most generous of the matching tolerations; one without a limit keeps the pod for good.
            let limits: Option<Vec<i64>> = matching.iter().map(|t| t.toleration_seconds).collect();
            let seconds = limits?.into_iter().max()?;
            added
                .checked_add(jiff::SignedDuration::from_secs(seconds.max(0)))
                .ok()
        })
        .min()
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let name = node.name_any();
    let lease = ctx
        .leases
        .get(&ObjectRef::new(&name).within("kube-node-lease"));
    let now = jiff::Timestamp::now();
    let heard = last_heard(&node, lease.as_deref());
    let observation = heard.map(|heard| {
        let mut observed = ctx.observed.lock().unwrap_or_else(|e| e.into_inner());
        let observation = observe(observed.get(&name).copied(), heard, now);
        observed.insert(name.clone(), observation);
        observation
    });
    let grace = jiff::SignedDuration::try_from(ctx.grace).unwrap_or_default();
    // A node that never reported (registered by hand) is left alone.
    let deadline = observation.and_then(|o| o.seen_at.checked_add(grace).ok());
    let silent = deadline.is_some_and(|d| d < now);
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let ready = ready_condition(&node).map(|c| c.status.clone());
    if silent && ready.as_deref() != Some("Unknown") {
        let message = "Kubelet stopped posting node status.";
        let status = serde_json::json!({"status": {"conditions": [{
            "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": message,
            "lastTransitionTime": now.to_string(),
            "lastHeartbeatTime": heard.map(|h| h.to_string()),
        }]}});
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&status))
            .await?;
        tracing::warn!(node = %name, "node stopped renewing its lease: not ready");
        ctx.events.record(
            node.as_ref(),
            EventType::Normal,
            "NodeNotReady",
            &format!("Node {name} status is now: NodeNotReady"),
        );
    }
    let current = taints(&node);
    let wanted = wanted_taints(&node, silent, now);
    if wanted != current {
        let patch = serde_json::json!({"spec": {"taints": wanted}, "metadata": {"resourceVersion": node.resource_version()}});
        super::merge_patch(&nodes, &name, &patch).await?;
    }
    // Evict what must leave a tainted node.
    let mut next = None;
    for pod in ctx.pods.state() {
        let on_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str());
        if !on_node || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if silent && is_ready(&pod) {
            mark_not_ready(&ctx.client, &pod, now).await?;
        }
        let Some(at) = eviction_time(&pod, &wanted) else {
            continue;
        };
        if at > now {
            next = Some(next.map_or(at, |n: jiff::Timestamp| n.min(at)));
            continue;
        }
        let pods: Api<Pod> =
            Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
        match pods.delete(&pod.name_any(), &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(pod = %pod.name_any(), namespace = ?pod.namespace(), node = %name, "evicted from an unreachable node");
                ctx.events.record(
                    pod.as_ref(),
                    EventType::Normal,
                    "TaintManagerEviction",
                    "Marking for deletion Pod",
                );
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    // Look again when the node would go silent, or when a toleration runs out.
    let wake = if silent {
        next
    } else {
        deadline.into_iter().chain(next).min()
    };
    Ok(match wake {
        Some(at) => Action::requeue(
            Duration::from_millis(
                (at.as_millisecond() - now.as_millisecond())
                    .max(0)
                    .unsigned_abs(),
            ) + Duration::from_millis(200),
        ),
        None => Action::requeue(ctx.grace),
    })
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Kubernetes' MarkPodsNotReady: the pods of a node that stopped reporting are no longer Ready, so Services stop
/// sending them traffic at once rather than when they are evicted. The agent writes the truth again when it
/// is back.
async fn mark_not_ready(
    client: &kube::Client,
    pod: &Pod,
    now: jiff::Timestamp,
) -> Result<(), ControllerError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let status = serde_json::json!({"status": {"conditions": [{
        "type": "Ready", "status": "False", "reason": "NodeNotReady",
        "message": "the node's agent stopped posting status", "lastTransitionTime": now.to_string(),
    }]}});
    match pods
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(&status),
        )
        .await
    {
        Ok(_) => {
            tracing::info!(pod = %pod.name_any(), namespace = ?pod.namespace(), "marked not ready: its node is silent");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn error_policy(node: Arc<Node>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(node = %node.name_any(), %error, "node lifecycle check failed");
    retry_after(error)
}

/// Runs the controller until the process ends; `grace` is how long a node may stay silent.
pub async fn run(client: kube::Client, informers: &Informers, grace: Duration) {
    let (leases, lease_changes) =
        reflect(Api::<Lease>::namespaced(client.clone(), "kube-node-lease"));
    let (pods, pod_changes) = informers.pods().follow();
    let controller = ControllerLoop::new(
        "node-lifecycle",
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches_stream(lease_changes, |lease: Lease| {
        Some(ObjectRef::new(&lease.name_any()))
    })
    .watches_shared_stream(pod_changes, |pod: Arc<Pod>| {
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
            .map(ObjectRef::new)
    });
    let ctx = Arc::new(Context {
        events: Recorder::new(client.clone(), "node-controller"),
        client,
        leases,
        pods,
        grace,
        observed: Mutex::new(HashMap::new()),
    });
    controller.run(reconcile, error_policy, ctx).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn silence_counts_from_when_a_report_was_seen_not_from_its_timestamp() {
        let old_report = at("2026-01-01T00:00:00Z");
        // A control plane starting an hour later sees the old report for the first time: a fresh start.
        let start = at("2026-01-01T01:00:00Z");
        let first = observe(None, old_report, start);
        assert_eq!(first.seen_at, start);
        // Looking again without a new report keeps the first sighting; the grace runs from it.
        let later = at("2026-01-01T01:00:30Z");
        assert_eq!(observe(Some(first), old_report, later), first);
        // A new report restarts the grace period.
        let renewed = at("2026-01-01T01:00:02Z");
        assert_eq!(observe(Some(first), renewed, later).seen_at, later);
    }

    fn node(conditions: serde_json::Value, spec: serde_json::Value) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": "n"}, "spec": spec, "status": {"conditions": conditions}}),
        )
        .unwrap()
    }

    fn keys(taints: &[Taint]) -> Vec<String> {
        taints
            .iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect()
    }

    #[test]
    fn silent_nodes_get_both_unreachable_taints_once_and_lose_them_when_back() {
        let now = at("2026-01-01T00:00:00Z");
        let own = json!({"key": "dedicated", "value": "edge", "effect": "NoSchedule"});
        let ready = json!([{"type": "Ready", "status": "True"}]);
        let tainted = wanted_taints(&node(ready.clone(), json!({"taints": [own]})), true, now);
        assert_eq!(
            keys(&tainted),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        assert_eq!(tainted[2].time_added, Some(Time(now)));
        let later = at("2026-01-01T00:01:00Z");
        let unknown = json!([{"type": "Ready", "status": "Unknown"}]);
        assert_eq!(
            wanted_taints(&node(unknown, json!({"taints": tainted})), true, later),
            tainted,
            "timeAdded is kept"
        );
        let back = wanted_taints(&node(ready, json!({"taints": tainted})), false, later);
        assert_eq!(keys(&back), ["dedicated:NoSchedule"]);
    }

    #[test]
    fn conditions_and_cordons_taint_the_node_as_kubernetes_does() {
        let now = at("2026-01-01T00:00:00Z");
        let pressed = node(
            json!([{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "True"},
                   {"type": "DiskPressure", "status": "False"}]),
            json!({"unschedulable": true}),
        );
        let taints = wanted_taints(&pressed, false, now);
        assert_eq!(
            keys(&taints),
            [
                "node.kubernetes.io/memory-pressure:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule"
            ]
        );
        assert!(taints.iter().all(|t| t.time_added.is_none()));
        let relieved = node(
            json!([{"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "False"}]),
            json!({"taints": taints}),
        );
        assert_eq!(
            keys(&wanted_taints(&relieved, false, now)),
            ["node.kubernetes.io/not-ready:NoSchedule"]
        );
    }

    #[test]
    fn pods_leave_at_once_unless_they_tolerate_and_then_after_their_seconds() {
        let now = at("2026-01-01T00:00:00Z");
        let taints = wanted_taints(&node(json!([]), json!({})), true, now);
        let pod = |tolerations: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tolerations}})).unwrap()
        };
        assert_eq!(eviction_time(&pod(json!([])), &taints), Some(now));
        let patient = pod(
            json!([{"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]),
        );
        assert_eq!(
            eviction_time(&patient, &taints),
            Some(at("2026-01-01T00:00:30Z"))
        );
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction_time(&forever, &taints), None);
        assert_eq!(eviction_time(&pod(json!([])), &[]), None);
    }
}
