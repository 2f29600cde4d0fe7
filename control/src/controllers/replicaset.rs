//! The ReplicaSet controller: keeps exactly `replicas` active pods matching each ReplicaSet, adopting orphans
//! that match and releasing pods that stop matching, and reports replicas, ready and available counts.

use super::controller_loop::ControllerLoop;
use super::ownership;
use super::pods::{self, is_active};
use super::{ControllerError, Expectations, cached_in, retry_after, write_status};
use crate::cache::Cache;
use crate::events::Recorder;
use crate::informers::Informers;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

struct Context {
    client: kube::Client,
    pods: Cache<Pod>,
    expectations: Expectations,
    events: Recorder,
}

/// What one sync should do to reach the desired count.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    None,
    /// Create this many pods.
    Create(usize),
    /// Delete these pods (by name), the cheapest to lose first.
    Delete(Vec<String>),
}

/// Compares `replicas` with the active pods the ReplicaSet owns.
pub fn plan(replicas: i32, active: &[&Pod]) -> Change {
    let want = usize::try_from(replicas.max(0)).unwrap_or_default();
    match active.len().cmp(&want) {
        std::cmp::Ordering::Less => Change::Create(want - active.len()),
        std::cmp::Ordering::Equal => Change::None,
        std::cmp::Ordering::Greater => {
            let mut ranked = active.to_vec();
            ranked.sort_by(|a, b| pods::deletion_order(a, b));
            Change::Delete(
                ranked
                    .iter()
                    .take(active.len() - want)
                    .map(|p| p.name_any())
                    .collect(),
            )
        }
    }
}

/// The status a ReplicaSet shows for the pods it owns.
pub fn status(rs: &ReplicaSet, owned: &[&Pod], now: jiff::Timestamp) -> ReplicaSetStatus {
    let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
    let template_labels = rs
        .spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let active: Vec<&&Pod> = owned.iter().filter(|p| is_active(p)).collect();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let previous = rs.status.as_ref();
    ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(count(&|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })),
        ready_replicas: Some(count(&pods::is_ready)),
        available_replicas: Some(count(&|p| pods::is_available(p, min_ready, now))),
        terminating_replicas: None,
        observed_generation: rs.metadata.generation,
        conditions: previous.and_then(|s| s.conditions.clone()),
    }
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    if !ownership::selector_usable(rs.as_ref(), &rs.spec.selector, &ctx.events).await {
        return Ok(Action::await_change());
    }
    let key = format!("{}/{}", rs.namespace().unwrap_or_default(), rs.name_any());
    let namespace = rs.namespace().unwrap_or_default();
    let in_namespace = cached_in(&ctx.pods, &namespace).await?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let owned = ownership::claim(
        &api,
        rs.as_ref(),
        &rs.spec.selector,
        in_namespace.clone(),
        is_active,
    )
    .await;
    let owned_refs: Vec<&Pod> = owned.iter().map(AsRef::as_ref).collect();
    let active: Vec<&Pod> = owned_refs
        .iter()
        .copied()
        .filter(|p| is_active(p))
        .collect();
    let mut failure = None;
    if rs.metadata.deletion_timestamp.is_none() && ctx.expectations.satisfied(&key, &in_namespace) {
        let replicas = rs.spec.replicas.unwrap_or(1);
        let control = pods::PodControl {
            api: &api,
            owner: rs.as_ref(),
            key: &key,
            expectations: &ctx.expectations,
            events: &ctx.events,
        };
        failure = match plan(replicas, &active) {
            Change::None => Ok(()),
            Change::Create(count) => control.create(rs.spec.template.as_ref(), count).await,
            Change::Delete(names) => control.delete(&names).await,
        }
        .err();
    }
    let now = jiff::Timestamp::now();
    let status = status(&rs, &owned_refs, now);
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    write_status(&sets, &rs.name_any(), rs.status.as_ref(), &status).await?;
    if let Some(error) = failure {
        return Err(error.into());
    }
    // A ready pod becomes available after minReadySeconds: look again then.
    let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
    let soonest = active
        .iter()
        .filter_map(|p| pods::until_available(p, min_ready, now))
        .min();
    Ok(soonest.map_or_else(Action::await_change, |d| {
        Action::requeue(d + Duration::from_millis(100))
    }))
}

fn error_policy(rs: Arc<ReplicaSet>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(replicaset = %rs.name_any(), namespace = ?rs.namespace(), %error, "replicaset sync failed");
    retry_after(error)
}

/// Runs the controller until the process ends.
pub async fn run(client: kube::Client, informers: &Informers) {
    let (pods, pod_changes) = informers.pods().follow();
    let controller = ControllerLoop::new(
        "replicaset",
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let replicasets = controller.store();
    let ctx = Arc::new(Context {
        events: Recorder::new(client.clone(), "replicaset-controller"),
        client,
        pods,
        expectations: Expectations::default(),
    });
    let controller = controller.watches_shared_stream(pod_changes, move |pod| {
        ownership::owners_of(pod.as_ref(), &replicasets, |rs: &ReplicaSet| {
            Some(&rs.spec.selector)
        })
    });
    controller.run(reconcile, error_policy, ctx).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: Option<&str>) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"nodeName": node, "containers": []}}),
        )
        .unwrap()
    }

    #[test]
    fn the_plan_creates_the_missing_and_deletes_the_cheapest_surplus() {
        let (a, b, c) = (pod("a", Some("n")), pod("b", None), pod("c", Some("n")));
        assert_eq!(plan(3, &[&a]), Change::Create(2));
        assert_eq!(plan(2, &[&a, &c]), Change::None);
        assert_eq!(
            plan(1, &[&a, &b, &c]),
            Change::Delete(vec!["b".into(), "a".into()])
        );
        assert_eq!(plan(-1, &[]), Change::None);
    }
}
