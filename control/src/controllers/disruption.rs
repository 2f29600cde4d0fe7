//! The disruption controller: keeps each PodDisruptionBudget's status (expected and healthy pods, how many
//! may be evicted now) current as its pods come, go and change readiness. The eviction API spends what it
//! reports.

use super::controller_loop::ControllerLoop;
use super::{ControllerError, cached_in, retry_after};
use crate::api::disruption::{self, DISRUPTION_WINDOW_SECONDS};
use crate::cache::Cache;
use crate::informers::Informers;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

struct Context {
    client: kube::Client,
    pods: Cache<Pod>,
}

/// The summed replicas of the controllers (Deployments through their ReplicaSets, ReplicaSets, StatefulSets)
/// of `pods`; `None` when a pod has no controller whose scale is known.
async fn controllers_scale(client: &kube::Client, namespace: &str, pods: &[&Pod]) -> Option<i32> {
    let mut controllers = BTreeSet::new();
    for pod in pods {
        let owner = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))?;
        controllers.insert((owner.kind.clone(), owner.name.clone()));
    }
    let mut total = 0;
    let mut counted = BTreeSet::new();
    for (kind, name) in controllers {
        let (kind, name, replicas) = match kind.as_str() {
            "ReplicaSet" => {
                let rs = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
                    .get(&name)
                    .await
                    .ok()?;
                match rs
                    .owner_references()
                    .iter()
                    .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                {
                    Some(owner) => {
                        let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
                            .get(&owner.name)
                            .await
                            .ok()?;
                        let replicas = deployment.spec.replicas.unwrap_or(1);
                        ("Deployment".to_owned(), owner.name.clone(), replicas)
                    }
                    None => (kind, name, rs.spec.replicas.unwrap_or(1)),
                }
            }
            "StatefulSet" => {
                let set = Api::<StatefulSet>::namespaced(client.clone(), namespace)
                    .get(&name)
                    .await
                    .ok()?;
                (kind, name, set.spec.replicas.unwrap_or(1))
            }
            _ => return None,
        };
        if counted.insert((kind, name)) {
            total += replicas;
        }
    }
    Some(total)
}

async fn reconcile(
    budget: Arc<PodDisruptionBudget>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let namespace = budget.namespace().unwrap_or_default();
    let in_namespace = cached_in(&ctx.pods, &namespace).await?;
    let pods: Vec<&Pod> = in_namespace
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| disruption::selects(&budget, p))
        .collect();
    let scale = if disruption::needs_scale(&budget) {
        controllers_scale(&ctx.client, &namespace, &pods).await
    } else {
        None
    };
    let now = jiff::Timestamp::now().as_second();
    let status = budget.status.clone().unwrap_or_default();
    // Evictions the pods' deletions have not shown yet, for a while.
    let live: BTreeSet<&str> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    let recorded = status.disrupted_pods.clone().unwrap_or_default();
    let disrupted: BTreeMap<String, i64> = recorded
        .clone()
        .into_iter()
        .map(|(name, at)| (name, at.0.as_second()))
        .filter(|(name, at)| live.contains(name.as_str()) && now - at < DISRUPTION_WINDOW_SECONDS)
        .collect();
    let counted = disruption::count(&budget, &pods, scale, &disrupted, now);
    let (numbers, reason, message) = match &counted {
        Ok(b) if b.disruptions_allowed > 0 => (b.clone(), "SufficientPods", String::new()),
        Ok(b) => (b.clone(), "InsufficientPods", String::new()),
        Err(error) => (
            disruption::Budget {
                expected_pods: 0,
                desired_healthy: 0,
                current_healthy: 0,
                disruptions_allowed: 0,
            },
            "SyncFailed",
            error.clone(),
        ),
    };
    let allowed = numbers.disruptions_allowed > 0;
    let condition_status = if allowed { "True" } else { "False" };
    // The condition keeps its transition time while it says the same.
    let transition = status
        .conditions
        .iter()
        .flatten()
        .find(|c| {
            c.type_ == "DisruptionAllowed" && c.status == condition_status && c.reason == reason
        })
        .map(|c| c.last_transition_time.0.as_second())
        .unwrap_or(now);
    // A merge patch keeps map keys it does not name: the entries that lapsed are nulled.
    let mut disrupted_pods: serde_json::Map<String, serde_json::Value> = recorded
        .keys()
        .map(|name| (name.clone(), serde_json::Value::Null))
        .collect();
    for (name, at) in &disrupted {
        disrupted_pods.insert(name.clone(), rfc3339(*at).into());
    }
    let patch = serde_json::json!({"status": {
        "observedGeneration": budget.metadata.generation,
        "expectedPods": numbers.expected_pods,
        "desiredHealthy": numbers.desired_healthy,
        "currentHealthy": numbers.current_healthy,
        "disruptionsAllowed": numbers.disruptions_allowed,
        "disruptedPods": if disrupted.is_empty() { serde_json::Value::Null } else { serde_json::Value::Object(disrupted_pods) },
        "conditions": [{"type": "DisruptionAllowed", "status": condition_status, "reason": reason,
                        "message": message, "lastTransitionTime": rfc3339(transition),
                        "observedGeneration": budget.metadata.generation}],
    }});
    let current =
        serde_json::to_value(budget.status.clone().unwrap_or_default()).unwrap_or_default();
    let mut wanted = current.clone();
    json_patch::merge(&mut wanted, &patch["status"]);
    if wanted != current {
        Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &budget.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(if disrupted.is_empty() {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(10))
    })
}

/// Seconds since the epoch as an RFC 3339 time.
fn rfc3339(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn error_policy(
    budget: Arc<PodDisruptionBudget>,
    error: &ControllerError,
    _ctx: Arc<Context>,
) -> Action {
    tracing::warn!(budget = %budget.name_any(), namespace = ?budget.namespace(), %error, "disruption budget update failed");
    retry_after(error)
}

/// Runs the controller until the process ends.
pub async fn run(client: kube::Client, informers: &Informers) {
    let (pods, pod_changes) = informers.pods().follow();
    let budgets = Api::<PodDisruptionBudget>::all(client.clone());
    let controller = ControllerLoop::new("disruption", budgets, watcher::Config::default());
    let all_budgets = controller.store();
    // A pod's change concerns the budgets that select it.
    let controller = controller.watches_shared_stream(pod_changes, move |pod: Arc<Pod>| {
        all_budgets
            .state()
            .into_iter()
            .filter(|b| disruption::selects(b, &pod))
            .map(|b| ObjectRef::from_obj(b.as_ref()))
            .collect::<Vec<_>>()
    });
    controller
        .run(reconcile, error_policy, Arc::new(Context { client, pods }))
        .await;
}
