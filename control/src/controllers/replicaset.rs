//! The ReplicaSet controller: keeps exactly `replicas` active pods matching each ReplicaSet, adopting orphans
//! that match and releasing pods that stop matching, and reports replicas, ready and available counts.

use super::ownership::{self, controller_reference};
use super::pods::{self, is_active};
use super::{ControllerError, Expectations, cached_in, drive, reflect, retry_after};
use crate::events::{EventType, Recorder};
use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// The most pods created at once; creation starts with one and doubles while it succeeds (Kubernetes' slow
/// start), so a template that cannot work fails once, not a hundred times.
const MAX_BURST: usize = 64;

struct Context {
    client: kube::Client,
    pods: Store<Pod>,
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

/// The pod a ReplicaSet creates from its template.
fn new_pod(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.template.clone().unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![controller_reference(rs)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Creates `count` pods in doubling batches; returns the names created and the first error.
async fn create_pods(
    ctx: &Context,
    rs: &ReplicaSet,
    count: usize,
) -> (Vec<String>, Option<kube::Error>) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &rs.namespace().unwrap_or_default());
    let pod = new_pod(rs);
    let (mut created, mut batch) = (Vec::new(), 1);
    while created.len() < count {
        let size = batch.min(count - created.len());
        let params = PostParams::default();
        let results = join_all((0..size).map(|_| api.create(&params, &pod))).await;
        let mut failure = None;
        for result in results {
            match result {
                Ok(pod) => created.push(pod.name_any()),
                Err(error) => failure = Some(error),
            }
        }
        if failure.is_some() {
            return (created, failure);
        }
        batch = (batch * 2).min(MAX_BURST);
    }
    (created, None)
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
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
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        match plan(replicas, &active) {
            Change::None => {}
            Change::Create(count) => {
                let (created, error) = create_pods(&ctx, &rs, count).await;
                ctx.expectations.expect_created(&key, created.clone());
                if !created.is_empty() {
                    ctx.events
                        .record(
                            rs.as_ref(),
                            EventType::Normal,
                            "SuccessfulCreate",
                            &format!("Created pod: {}", created.join(", ")),
                        )
                        .await;
                }
                if let Some(error) = error {
                    ctx.events
                        .record(
                            rs.as_ref(),
                            EventType::Warning,
                            "FailedCreate",
                            &format!("Error creating: {error}"),
                        )
                        .await;
                    failure = Some(error);
                }
            }
            Change::Delete(names) => {
                let params = DeleteParams::default();
                let deletions = join_all(names.iter().map(|n| api.delete(n, &params))).await;
                ctx.expectations.expect_deleted(&key, names.clone());
                let gone = |r: &Result<_, kube::Error>| {
                    r.is_ok() || matches!(r, Err(kube::Error::Api(e)) if e.code == 404)
                };
                if let Some(Err(error)) = deletions.into_iter().find(|r| !gone(r)) {
                    failure = Some(error);
                }
                ctx.events
                    .record(
                        rs.as_ref(),
                        EventType::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted pod: {}", names.join(", ")),
                    )
                    .await;
            }
        }
    }
    let now = jiff::Timestamp::now();
    let status = status(&rs, &owned_refs, now);
    if rs.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({"status": status});
        Api::<ReplicaSet>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
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
pub async fn run(client: kube::Client) {
    let (pods, pod_changes) = reflect(Api::<Pod>::all(client.clone()));
    let controller = Controller::new(
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
    let controller = controller.watches_stream(pod_changes, move |pod| {
        ownership::owners_of(&pod, &replicasets, |rs: &ReplicaSet| &rs.spec.selector)
    });
    drive("replicaset", controller.run(reconcile, error_policy, ctx)).await;
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
