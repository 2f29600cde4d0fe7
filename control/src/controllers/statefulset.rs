//! The StatefulSet controller: pods with stable names `<set>-<ordinal>`, started in order (each one Running and
//! Ready before the next, or all at once with `Parallel`), removed from the highest ordinal down, and updated
//! from the highest ordinal down to `partition`, one pod at a time.

use super::Informers;
use super::daemonset::REVISION_LABEL;
use super::pods::{self, is_active};
use super::rollout::template_hash;
use super::{
    ControllerError, Expectations, cached_in, drive, ownership, retry_after, write_status,
};
use crate::cache::Cache;
use crate::events::Recorder;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;

struct Context {
    client: kube::Client,
    pods: Cache<Pod>,
    expectations: Expectations,
    events: Recorder,
}

/// The name of the revision of the set's current template: `<set>-<hash>`.
pub fn update_revision(sts: &StatefulSet) -> String {
    format!(
        "{}-{}",
        sts.name_any(),
        template_hash(&sts.spec.template, None)
    )
}

/// A pod's ordinal, if its name is `<set>-<n>`.
fn ordinal(sts: &StatefulSet, pod: &Pod) -> Option<i32> {
    pod.name_any()
        .strip_prefix(&format!("{}-", sts.name_any()))?
        .parse()
        .ok()
}

/// What one sync should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Create the pods of these ordinals.
    Create(Vec<i32>),
    /// Delete these pods.
    Delete(Vec<String>),
    /// Wait for pods to become ready or go away.
    Wait,
    /// Everything is as it should be.
    Done,
}

fn revision(pod: &Pod) -> Option<&String> {
    pod.metadata.labels.as_ref()?.get(REVISION_LABEL)
}

/// The next step for a set whose pods are `pods` (by ordinal), towards `replicas` pods at `update`.
pub fn plan(sts: &StatefulSet, pods: &BTreeMap<i32, &Pod>, update: &str) -> Step {
    let replicas = sts.spec.replicas.unwrap_or(1).max(0);
    let parallel = sts.spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = sts.spec.update_strategy.as_ref();
    let on_delete = strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete");
    let partition = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let name = |p: &&Pod| p.name_any();
    let failed: Vec<String> = pods
        .values()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
        .map(name)
        .collect();
    if !failed.is_empty() {
        return Step::Delete(failed);
    }
    let healthy = |p: &Pod| is_active(p) && pods::is_ready(p);
    let missing: Vec<i32> = (0..replicas).filter(|i| !pods.contains_key(i)).collect();
    if parallel && !missing.is_empty() {
        return Step::Create(missing);
    }
    if !parallel {
        for i in 0..replicas {
            match pods.get(&i) {
                None => return Step::Create(vec![i]),
                Some(pod) if !healthy(pod) => return Step::Wait,
                Some(_) => {}
            }
        }
    }
    let excess: Vec<&&Pod> = pods.range(replicas..).map(|(_, p)| p).collect();
    if !excess.is_empty() {
        if parallel {
            let live: Vec<String> = excess
                .iter()
                .filter(|p| is_active(p))
                .map(|p| p.name_any())
                .collect();
            return if live.is_empty() {
                Step::Wait
            } else {
                Step::Delete(live)
            };
        }
        if pods.values().any(|p| !healthy(p)) {
            return Step::Wait;
        }
        return excess
            .last()
            .map_or(Step::Wait, |p| Step::Delete(vec![p.name_any()]));
    }
    if on_delete {
        return Step::Done;
    }
    for i in (partition..replicas).rev() {
        let Some(pod) = pods.get(&i) else {
            return Step::Wait;
        };
        if revision(pod).map(String::as_str) != Some(update) {
            return if pods.values().all(|p| healthy(p)) {
                Step::Delete(vec![pod.name_any()])
            } else {
                Step::Wait
            };
        }
    }
    Step::Done
}

/// The pod of one ordinal at the current template.
fn pod_for(sts: &StatefulSet, ordinal: i32, update: &str) -> Pod {
    let name = format!("{}-{ordinal}", sts.name_any());
    let mut pod = pods::from_template(sts, Some(&sts.spec.template));
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(REVISION_LABEL.into(), update.into());
    labels.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
    labels.insert("apps.kubernetes.io/pod-index".into(), ordinal.to_string());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name);
    spec.subdomain = sts.spec.service_name.clone().filter(|s| !s.is_empty());
    pod
}

fn status(sts: &StatefulSet, pods: &BTreeMap<i32, &Pod>, update: &str) -> StatefulSetStatus {
    let min_ready = sts.spec.min_ready_seconds.unwrap_or(0);
    let now = jiff::Timestamp::now();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(pods.values().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let replicas = sts.spec.replicas.unwrap_or(1);
    let previous = sts.status.as_ref().and_then(|s| s.current_revision.clone());
    let updated = count(&|p| revision(p).map(String::as_str) == Some(update));
    let ready = count(&pods::is_ready);
    let complete = updated == replicas
        && ready == replicas
        && pods.len() == usize::try_from(replicas).unwrap_or(0);
    let current = if complete || previous.is_none() {
        update.to_owned()
    } else {
        previous.unwrap_or_default()
    };
    StatefulSetStatus {
        replicas: count(&is_active),
        ready_replicas: Some(ready),
        available_replicas: Some(count(&|p| pods::is_available(p, min_ready, now))),
        current_replicas: Some(count(&|p| revision(p) == Some(&current))),
        updated_replicas: Some(updated),
        current_revision: Some(current),
        update_revision: Some(update.to_owned()),
        observed_generation: sts.metadata.generation,
        collision_count: Some(0),
        conditions: None,
    }
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if !ownership::selector_usable(sts.as_ref(), &sts.spec.selector, &ctx.events).await {
        return Ok(Action::await_change());
    }
    let namespace = sts.namespace().unwrap_or_default();
    let key = format!("{namespace}/{}", sts.name_any());
    let candidates = cached_in(&ctx.pods, &namespace).await?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let owned = ownership::claim(
        &api,
        sts.as_ref(),
        &sts.spec.selector,
        candidates.clone(),
        is_active,
    )
    .await;
    let by_ordinal: BTreeMap<i32, &Pod> = owned
        .iter()
        .filter_map(|p| ordinal(&sts, p).map(|i| (i, p.as_ref())))
        .collect();
    let update = update_revision(&sts);
    if ctx.expectations.satisfied(&key, &candidates) {
        let control = pods::PodControl {
            api: &api,
            owner: sts.as_ref(),
            key: &key,
            expectations: &ctx.expectations,
            events: &ctx.events,
        };
        match plan(&sts, &by_ordinal, &update) {
            Step::Create(ordinals) => {
                for i in ordinals {
                    control.create_copies(&pod_for(&sts, i, &update), 1).await?;
                }
            }
            Step::Delete(names) => control.delete(&names).await?,
            Step::Wait | Step::Done => {}
        }
    }
    let status = status(&sts, &by_ordinal, &update);
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    write_status(&sets, &sts.name_any(), sts.status.as_ref(), &status).await?;
    Ok(Action::await_change())
}

fn error_policy(sts: Arc<StatefulSet>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(statefulset = %sts.name_any(), namespace = ?sts.namespace(), %error, "statefulset sync failed");
    retry_after(error)
}

/// Runs the controller until the process ends.
pub async fn run(client: kube::Client, informers: &Informers) {
    let (pods, pod_changes) = informers.pods().follow();
    let controller = Controller::new(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let sets = controller.store();
    let ctx = Arc::new(Context {
        events: Recorder::new(client.clone(), "statefulset-controller"),
        client,
        pods,
        expectations: Expectations::default(),
    });
    let controller = controller.watches_shared_stream(pod_changes, move |pod| {
        ownership::owners_of(pod.as_ref(), &sets, |sts: &StatefulSet| {
            Some(&sts.spec.selector)
        })
    });
    drive(
        "statefulset",
        controller.run(
            super::metrics::timed("statefulset", reconcile),
            error_policy,
            ctx,
        ),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(replicas: i32, policy: &str) -> StatefulSet {
        serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "default", "uid": "sts"},
            "spec": {"replicas": replicas, "podManagementPolicy": policy, "serviceName": "db",
                     "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": []}}}})).unwrap()
    }

    fn pod(sts: &StatefulSet, i: i32, ready: bool, revision: &str) -> Pod {
        let mut pod = pod_for(sts, i, revision);
        pod.status = serde_json::from_value(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}))
        .unwrap();
        pod
    }

    fn map(pods: &[Pod]) -> BTreeMap<i32, &Pod> {
        pods.iter()
            .map(|p| (p.name_any().rsplit('-').next().unwrap().parse().unwrap(), p))
            .collect()
    }

    #[test]
    fn ordered_pods_start_one_at_a_time_and_stop_from_the_top() {
        let sts = set(3, "OrderedReady");
        let rev = update_revision(&sts);
        assert_eq!(plan(&sts, &map(&[]), &rev), Step::Create(vec![0]));
        let starting = [pod(&sts, 0, false, &rev)];
        assert_eq!(plan(&sts, &map(&starting), &rev), Step::Wait);
        let one = [pod(&sts, 0, true, &rev)];
        assert_eq!(plan(&sts, &map(&one), &rev), Step::Create(vec![1]));
        let smaller = set(1, "OrderedReady");
        let three = [
            pod(&sts, 0, true, &rev),
            pod(&sts, 1, true, &rev),
            pod(&sts, 2, true, &rev),
        ];
        assert_eq!(
            plan(&smaller, &map(&three), &update_revision(&smaller)),
            Step::Delete(vec!["db-2".into()])
        );
        let parallel = set(3, "Parallel");
        assert_eq!(
            plan(&parallel, &map(&[]), &rev),
            Step::Create(vec![0, 1, 2])
        );
    }

    #[test]
    fn updates_go_from_the_highest_ordinal_down_to_the_partition() {
        let sts = set(3, "OrderedReady");
        let three = [
            pod(&sts, 0, true, "old"),
            pod(&sts, 1, true, "old"),
            pod(&sts, 2, true, "old"),
        ];
        let rev = update_revision(&sts);
        assert_eq!(
            plan(&sts, &map(&three), &rev),
            Step::Delete(vec!["db-2".into()])
        );
        let mut partitioned = sts.clone();
        partitioned.spec.update_strategy = serde_json::from_value(
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}),
        )
        .unwrap();
        let two_done = [
            pod(&sts, 0, true, "old"),
            pod(&sts, 1, true, "old"),
            pod(&sts, 2, true, &rev),
        ];
        assert_eq!(plan(&partitioned, &map(&two_done), &rev), Step::Done);
        assert_eq!(
            plan(&sts, &map(&two_done), &rev),
            Step::Delete(vec!["db-1".into()])
        );
    }
}
