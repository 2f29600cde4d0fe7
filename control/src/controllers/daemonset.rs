//! The DaemonSet controller: one pod on every node the template fits (nodeSelector, node affinity, taints),
//! following nodes as they join and leave; pods are pinned by node affinity on `metadata.name` and bound by the
//! scheduler, as in Kubernetes; RollingUpdate replaces them at most `maxUnavailable` at a time.

use super::controller_loop::ControllerLoop;
use super::pods::{self, is_active};
use super::rollout::{scaled_value, template_hash};
use super::{ControllerError, Expectations, cached_in, ownership, retry_after, write_status};
use crate::cache::Cache;
use crate::events::Recorder;
use crate::informers::Informers;
use crate::scheduler::plugins::{node_selector_matches, tolerates_taints};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    Toleration,
};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The label with the hash of the template a DaemonSet's pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

struct Context {
    client: kube::Client,
    pods: Cache<Pod>,
    nodes: Cache<Node>,
    expectations: Expectations,
    events: Recorder,
}

/// The tolerations Kubernetes gives every DaemonSet pod, so that node problems do not evict it.
fn daemon_tolerations() -> Vec<Toleration> {
    let toleration = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// The DaemonSet's pod for one node: its template, the revision label, the daemon tolerations and a required
/// node affinity for exactly that node.
pub fn pod_for(ds: &DaemonSet, node: &str) -> Pod {
    let hash = template_hash(&ds.spec.template, None);
    let mut pod = pods::from_template(ds, Some(&ds.spec.template));
    pod.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(REVISION_LABEL.into(), hash);
    let spec = pod.spec.get_or_insert_with(Default::default);
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    tolerations.extend(daemon_tolerations());
    spec.tolerations = Some(tolerations);
    let pin = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
        match_expressions: None,
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    affinity.node_affinity = Some(NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
            node_selector_terms: vec![pin],
        }),
        ..Default::default()
    });
    pod
}

/// The node a DaemonSet pod belongs to: where it is bound, or where its affinity pins it.
fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(node);
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

/// Whether the DaemonSet should run on this node (its pod fits there apart from resources).
pub fn eligible(ds: &DaemonSet, node: &Node) -> bool {
    let probe = pod_for(ds, &node.name_any());
    node_selector_matches(&probe, node).is_ok() && tolerates_taints(&probe, node).is_ok()
}

/// What one sync should do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Nodes that need a pod.
    pub create_on: Vec<String>,
    /// Pods to delete: extras, pods on nodes that no longer qualify, and old pods being rolled.
    pub delete: Vec<String>,
}

/// Compares nodes with pods: one active pod per eligible node; old-revision pods replaced while at most
/// `max_unavailable` of the DaemonSet's pods are unavailable.
pub fn plan(ds: &DaemonSet, nodes: &[Arc<Node>], owned: &[&Pod], max_unavailable: i32) -> Plan {
    let hash = template_hash(&ds.spec.template, None);
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in owned.iter().filter(|p| is_active(p)) {
        by_node
            .entry(node_of(pod).unwrap_or_default())
            .or_default()
            .push(pod);
    }
    let mut result = Plan::default();
    let mut unavailable = 0;
    let mut old = Vec::new();
    for node in nodes {
        let name = node.name_any();
        let pods_here = by_node.remove(&name).unwrap_or_default();
        if !eligible(ds, node) {
            result.delete.extend(pods_here.iter().map(|p| p.name_any()));
            continue;
        }
        let Some((first, extras)) = pods_here.split_first() else {
            result.create_on.push(name);
            unavailable += 1;
            continue;
        };
        result.delete.extend(extras.iter().map(|p| p.name_any()));
        if !pods::is_ready(first) {
            unavailable += 1;
        }
        if first.labels().get(REVISION_LABEL) != Some(&hash) {
            old.push(*first);
        }
    }
    // Pods on nodes that are gone.
    result
        .delete
        .extend(by_node.values().flatten().map(|p| p.name_any()));
    let on_delete = ds
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        == Some("OnDelete");
    if !on_delete {
        // Not-ready old pods first: replacing them costs no availability.
        old.sort_by_key(|p| pods::is_ready(p));
        let mut budget = (max_unavailable - unavailable).max(0);
        for pod in old {
            if !pods::is_ready(pod) {
                result.delete.push(pod.name_any());
            } else if budget > 0 {
                result.delete.push(pod.name_any());
                budget -= 1;
            }
        }
    }
    result
}

fn status(
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    owned: &[&Pod],
    now: jiff::Timestamp,
) -> DaemonSetStatus {
    let hash = template_hash(&ds.spec.template, None);
    let min_ready = ds.spec.min_ready_seconds.unwrap_or(0);
    let active: Vec<&&Pod> = owned.iter().filter(|p| is_active(p)).collect();
    let eligible_nodes: Vec<String> = nodes
        .iter()
        .filter(|n| eligible(ds, n))
        .map(|n| n.name_any())
        .collect();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        let nodes: std::collections::BTreeSet<String> = active
            .iter()
            .filter(|p| f(p))
            .filter_map(|p| node_of(p))
            .filter(|n| eligible_nodes.contains(n))
            .collect();
        i32::try_from(nodes.len()).unwrap_or(i32::MAX)
    };
    let desired = i32::try_from(eligible_nodes.len()).unwrap_or(i32::MAX);
    let available = count(&|p| pods::is_available(p, min_ready, now));
    DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: count(&|_| true),
        number_misscheduled: i32::try_from(
            active
                .iter()
                .filter(|p| node_of(p).is_some_and(|n| !eligible_nodes.contains(&n)))
                .count(),
        )
        .unwrap_or(i32::MAX),
        number_ready: count(&pods::is_ready),
        number_available: Some(available),
        number_unavailable: Some((desired - available).max(0)),
        updated_number_scheduled: Some(count(&|p| p.labels().get(REVISION_LABEL) == Some(&hash))),
        observed_generation: ds.metadata.generation,
        collision_count: None,
        conditions: None,
    }
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if !ownership::selector_usable(ds.as_ref(), &ds.spec.selector, &ctx.events).await {
        return Ok(Action::await_change());
    }
    let namespace = ds.namespace().unwrap_or_default();
    let key = format!("{namespace}/{}", ds.name_any());
    ctx.nodes
        .ready()
        .await
        .map_err(|_| ControllerError::NotReady)?;
    let nodes = ctx.nodes.state();
    let candidates = cached_in(&ctx.pods, &namespace).await?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let owned = ownership::claim(
        &api,
        ds.as_ref(),
        &ds.spec.selector,
        candidates.clone(),
        is_active,
    )
    .await;
    let owned: Vec<&Pod> = owned.iter().map(AsRef::as_ref).collect();
    if ctx.expectations.satisfied(&key, &candidates) {
        let rolling = ds
            .spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref());
        let desired = i32::try_from(nodes.len()).unwrap_or(i32::MAX);
        let max_unavailable = scaled_value(
            rolling.and_then(|r| r.max_unavailable.as_ref()),
            desired,
            true,
        )
        .max(1);
        let plan = plan(&ds, &nodes, &owned, max_unavailable);
        let control = pods::PodControl {
            api: &api,
            owner: ds.as_ref(),
            key: &key,
            expectations: &ctx.expectations,
            events: &ctx.events,
        };
        control.delete(&plan.delete).await?;
        for node in &plan.create_on {
            control.create_copies(&pod_for(&ds, node), 1).await?;
        }
    }
    let status = status(&ds, &nodes, &owned, jiff::Timestamp::now());
    let sets: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &namespace);
    write_status(&sets, &ds.name_any(), ds.status.as_ref(), &status).await?;
    Ok(Action::await_change())
}

fn error_policy(ds: Arc<DaemonSet>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(daemonset = %ds.name_any(), namespace = ?ds.namespace(), %error, "daemonset sync failed");
    retry_after(error)
}

/// Runs the controller until the process ends.
pub async fn run(client: kube::Client, informers: &Informers) {
    let (pods, pod_changes) = informers.pods().follow();
    let (nodes, node_changes) = informers.nodes().follow();
    let controller = ControllerLoop::new(
        "daemonset",
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let (for_pods, for_nodes) = (controller.store(), controller.store());
    let ctx = Arc::new(Context {
        events: Recorder::new(client.clone(), "daemonset-controller"),
        client,
        pods,
        nodes,
        expectations: Expectations::default(),
    });
    let controller = controller
        .watches_shared_stream(pod_changes, move |pod| {
            ownership::owners_of(pod.as_ref(), &for_pods, |ds: &DaemonSet| {
                Some(&ds.spec.selector)
            })
        })
        // Every DaemonSet may want a pod on a node that joined or changed.
        .watches_shared_stream(node_changes, move |_node: Arc<Node>| {
            for_nodes
                .state()
                .iter()
                .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                .collect::<Vec<_>>()
        });
    controller.run(reconcile, error_policy, ctx).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn daemonset(node_selector: serde_json::Value) -> DaemonSet {
        serde_json::from_value(
            json!({"metadata": {"name": "agent", "namespace": "default", "uid": "ds"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"nodeSelector": node_selector, "containers": []}}}}),
        )
        .unwrap()
    }

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}),
            )
            .unwrap(),
        )
    }

    fn running(ds: &DaemonSet, name: &str, node: &str, ready: bool) -> Pod {
        let mut pod = pod_for(ds, node);
        pod.metadata.name = Some(name.into());
        pod.spec.as_mut().unwrap().node_name = Some(node.into());
        pod.status = serde_json::from_value(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}))
        .unwrap();
        pod
    }

    #[test]
    fn every_eligible_node_gets_one_pod_and_others_none() {
        let ds = daemonset(json!({"edge": "true"}));
        let nodes = vec![
            node("a", json!({"edge": "true"}), json!([])),
            node("b", json!({"edge": "true"}), json!([])),
            node("c", json!({}), json!([])),
            node(
                "d",
                json!({"edge": "true"}),
                json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
            ),
        ];
        let on_a = running(&ds, "on-a", "a", true);
        let second_on_a = running(&ds, "again-a", "a", true);
        let on_c = running(&ds, "on-c", "c", true);
        let plan = plan(&ds, &nodes, &[&on_a, &second_on_a, &on_c], 1);
        assert_eq!(plan.create_on, vec!["b".to_owned()]);
        assert_eq!(plan.delete, vec!["again-a".to_owned(), "on-c".to_owned()]);
        // The daemon tolerations let it stay on an unreachable node.
        let unreachable = node(
            "e",
            json!({"edge": "true"}),
            json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
        );
        assert!(eligible(&ds, &unreachable));
    }

    #[test]
    fn a_new_template_rolls_at_most_max_unavailable_ready_pods_at_a_time() {
        let old = daemonset(json!({}));
        let nodes = vec![
            node("a", json!({}), json!([])),
            node("b", json!({}), json!([])),
            node("c", json!({}), json!([])),
        ];
        let pods = [
            running(&old, "pa", "a", true),
            running(&old, "pb", "b", true),
            running(&old, "pc", "c", false),
        ];
        let mut new = old.clone();
        new.spec
            .template
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert("v".into(), "2".into());
        let refs: Vec<&Pod> = pods.iter().collect();
        // pc is not ready: it is replaced for free, and it already uses the one unavailable slot.
        assert_eq!(plan(&new, &nodes, &refs, 1).delete, vec!["pc".to_owned()]);
        assert_eq!(
            plan(&new, &nodes, &refs, 2).delete,
            vec!["pc".to_owned(), "pa".to_owned()]
        );
    }
}
