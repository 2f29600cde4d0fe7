//! The StatefulSet controller: pods with stable names `<set>-<ordinal>`, started in order (each one Running and
//! Ready before the next, or all at once with `Parallel`), removed from the highest ordinal down, and updated
//! from the highest ordinal down to `partition`, one pod at a time. Each pod's claims, one per
//! volumeClaimTemplate (`<template>-<set>-<ordinal>`), are made before it and outlive it, so a replacement pod
//! finds its data; the set's persistentVolumeClaimRetentionPolicy says whether they go with the set or when
//! the set scales down.

use super::controller_loop::ControllerLoop;
use super::daemonset::REVISION_LABEL;
use super::pods::{self, is_active};
use super::rollout::template_hash;
use super::{ControllerError, Expectations, cached_in, ownership, retry_after, write_status};
use crate::cache::Cache;
use crate::events::{EventType, Recorder};
use crate::informers::Informers;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;
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
    // Each claim template becomes the volume of that name (replacing one the pod template has).
    let templates = sts.spec.volume_claim_templates.iter().flatten();
    let claimed: Vec<String> = templates.clone().map(|t| t.name_any()).collect();
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.retain(|v| !claimed.contains(&v.name));
    volumes.extend(templates.map(|t| Volume {
        name: t.name_any(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim_name(sts, t, ordinal),
            read_only: None,
        }),
        ..Default::default()
    }));
    if volumes.is_empty() {
        spec.volumes = None;
    }
    pod
}

/// The claim of one template for one ordinal: `<template>-<set>-<ordinal>`.
fn claim_name(sts: &StatefulSet, template: &PersistentVolumeClaim, ordinal: i32) -> String {
    format!("{}-{}-{ordinal}", template.name_any(), sts.name_any())
}

/// The claims an ordinal's pod needs, as made from the templates: labelled with the set's selector labels,
/// owned by the set when its retention policy deletes them with it.
pub fn claims_for(sts: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let deleted_with_set = sts
        .spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    sts.spec
        .volume_claim_templates
        .iter()
        .flatten()
        .map(|template| {
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            labels.extend(sts.spec.selector.match_labels.clone().unwrap_or_default());
            let owner = deleted_with_set.then(|| {
                vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "StatefulSet".into(),
                    name: sts.name_any(),
                    uid: sts.uid().unwrap_or_default(),
                    block_owner_deletion: Some(true),
                    controller: Some(true),
                }]
            });
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(sts, template, ordinal)),
                    namespace: sts.namespace(),
                    labels: Some(labels),
                    annotations: template.metadata.annotations.clone(),
                    owner_references: owner,
                    ..Default::default()
                },
                spec: template.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// Makes the claims of an ordinal that do not exist yet (kube-controller-manager's createPersistentVolumeClaims).
async fn create_claims(
    api: &Api<PersistentVolumeClaim>,
    sts: &StatefulSet,
    ordinal: i32,
    events: &Recorder,
) -> Result<(), ControllerError> {
    for claim in claims_for(sts, ordinal) {
        let name = claim.name_any();
        match api.get_opt(&name).await? {
            Some(existing) if existing.metadata.deletion_timestamp.is_some() => {
                return Err(ControllerError::Invalid(format!(
                    "pvc {name} is being deleted"
                )));
            }
            Some(_) => {}
            None => match api.create(&PostParams::default(), &claim).await {
                Ok(_) => events.record(
                    sts,
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!(
                        "create Claim {name} Pod {}-{ordinal} in StatefulSet {} success",
                        sts.name_any(),
                        sts.name_any()
                    ),
                ),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    events.record(
                        sts,
                        EventType::Warning,
                        "FailedCreate",
                        &format!("create Claim {name} for Pod {}-{ordinal} in StatefulSet {} failed error: {e}", sts.name_any(), sts.name_any()),
                    );
                    return Err(e.into());
                }
            },
        }
    }
    Ok(())
}

/// With `whenScaled: Delete`, the claims of a pod removed by scaling down are given to that pod (and taken from
/// the set), so they go with it (kube-controller-manager's updateClaimOwnerRefForSetAndPod).
async fn hand_claims_to(
    api: &Api<PersistentVolumeClaim>,
    sts: &StatefulSet,
    pod: &Pod,
    ordinal: i32,
) -> Result<(), ControllerError> {
    let scaled_away = sts
        .spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_scaled.as_deref())
        == Some("Delete");
    if !scaled_away || ordinal < sts.spec.replicas.unwrap_or(1) {
        return Ok(());
    }
    // The pod alone owns them now (the set no longer does): they go when it goes.
    let owners = [OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
        block_owner_deletion: Some(true),
        controller: Some(false),
    }];
    let owner = json!({"metadata": {"ownerReferences": owners}});
    for claim in claims_for(sts, ordinal) {
        match api
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&owner),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
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
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
        match plan(&sts, &by_ordinal, &update) {
            Step::Create(ordinals) => {
                for i in ordinals {
                    create_claims(&claims, &sts, i, &ctx.events).await?;
                    control.create_copies(&pod_for(&sts, i, &update), 1).await?;
                }
            }
            Step::Delete(names) => {
                for (i, pod) in &by_ordinal {
                    if names.contains(&pod.name_any()) {
                        hand_claims_to(&claims, &sts, pod, *i).await?;
                    }
                }
                control.delete(&names).await?
            }
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
    let controller = ControllerLoop::new(
        "statefulset",
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
    controller.run(reconcile, error_policy, ctx).await;
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
    fn each_ordinal_gets_its_own_claim_per_template_as_a_volume() {
        let mut sts = set(3, "OrderedReady");
        sts.spec.volume_claim_templates = Some(vec![
            serde_json::from_value(json!({"metadata": {"name": "data", "labels": {"tier": "db"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
            .unwrap(),
        ]);
        sts.spec.template.spec.as_mut().unwrap().volumes = Some(vec![
            serde_json::from_value(json!({"name": "data", "emptyDir": {}})).unwrap(),
            serde_json::from_value(json!({"name": "scratch", "emptyDir": {}})).unwrap(),
        ]);
        let pod = pod_for(&sts, 2, "rev");
        let volumes = serde_json::to_value(pod.spec.unwrap().volumes).unwrap();
        assert_eq!(
            volumes,
            json!([{"name": "scratch", "emptyDir": {}},
                   {"name": "data", "persistentVolumeClaim": {"claimName": "data-db-2"}}])
        );
        let claims = claims_for(&sts, 2);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data-db-2"));
        let labels = claims[0].metadata.labels.clone().unwrap();
        assert_eq!(labels.get("tier").map(String::as_str), Some("db"));
        assert_eq!(labels.get("app").map(String::as_str), Some("db"));
        assert!(
            claims[0].metadata.owner_references.is_none(),
            "kept by default"
        );
        sts.spec.persistent_volume_claim_retention_policy = Some(
            serde_json::from_value(json!({"whenDeleted": "Delete", "whenScaled": "Retain"}))
                .unwrap(),
        );
        let owned = claims_for(&sts, 0);
        assert_eq!(
            owned[0].metadata.owner_references.as_ref().unwrap()[0].kind,
            "StatefulSet"
        );
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
