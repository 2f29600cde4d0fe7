//! The Deployment controller: one ReplicaSet per template (named by its pod-template-hash), rolled out with
//! RollingUpdate (maxSurge, maxUnavailable) or Recreate, revisions in annotations so `rollout history` and
//! `rollout undo` work, old ReplicaSets pruned to revisionHistoryLimit, and a status `rollout status` trusts.
//! The arithmetic lives in [`super::rollout`].

use super::controller_loop::ControllerLoop;
use super::merge_patch;
use super::ownership::{self, controller_reference};
use super::rollout::{
    self, DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION, OldReplicaSet, REVISION_ANNOTATION,
    Step, TEMPLATE_HASH_LABEL, spec_replicas,
};
use super::{ControllerError, cached_in, reflect, retry_after, write_status};
use crate::cache::Cache;
use crate::events::{EventType, Recorder};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

struct Context {
    client: kube::Client,
    replicasets: Cache<ReplicaSet>,
    events: Recorder,
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn created(rs: &ReplicaSet) -> Option<jiff::Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Whether a ReplicaSet runs the Deployment's current template.
fn runs_template(rs: &ReplicaSet, deployment: &Deployment) -> bool {
    rs.spec.template.as_ref().is_some_and(|t| {
        rollout::without_hash(t) == rollout::without_hash(&deployment.spec.template)
    })
}

/// The ReplicaSet for the Deployment's template, as it should be created.
fn new_replicaset(deployment: &Deployment, hash: &str, replicas: i32, revision: i64) -> ReplicaSet {
    let mut template = deployment.spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(TEMPLATE_HASH_LABEL.into(), hash.into());
    let labels = meta.labels.clone();
    let mut selector = deployment.spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(TEMPLATE_HASH_LABEL.into(), hash.into());
    let (surge, _) = rollout::surge_and_unavailable(deployment);
    let desired = deployment.spec.replicas.unwrap_or(1);
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", deployment.name_any())),
            namespace: deployment.namespace(),
            labels,
            annotations: Some(BTreeMap::from([
                (REVISION_ANNOTATION.into(), revision.to_string()),
                (DESIRED_REPLICAS_ANNOTATION.into(), desired.to_string()),
                (
                    MAX_REPLICAS_ANNOTATION.into(),
                    (desired + surge).to_string(),
                ),
            ])),
            owner_references: Some(vec![controller_reference(deployment)]),
            ..Default::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: deployment.spec.min_ready_seconds,
            selector,
            template: Some(template),
        },
        status: None,
    }
}

/// Sets a ReplicaSet's replicas (and the annotations that record the Deployment's size for it).
async fn scale(
    ctx: &Context,
    deployment: &Deployment,
    rs: &ReplicaSet,
    replicas: i32,
) -> Result<ReplicaSet, ControllerError> {
    let (surge, _) = rollout::surge_and_unavailable(deployment);
    let desired = deployment.spec.replicas.unwrap_or(1);
    let patch = serde_json::json!({
        "metadata": {"annotations": {
            DESIRED_REPLICAS_ANNOTATION: desired.to_string(),
            MAX_REPLICAS_ANNOTATION: (desired + surge).to_string(),
        }},
        "spec": {"replicas": replicas},
    });
    let api: Api<ReplicaSet> =
        Api::namespaced(ctx.client.clone(), &rs.namespace().unwrap_or_default());
    let scaled = merge_patch(&api, &rs.name_any(), &patch).await?;
    record_scaling(ctx, deployment, &rs.name_any(), spec_replicas(rs), replicas).await;
    Ok(scaled)
}

/// Records the `ScalingReplicaSet` event `kubectl describe deployment` shows.
async fn record_scaling(ctx: &Context, deployment: &Deployment, name: &str, from: i32, to: i32) {
    let verb = if to > from { "up" } else { "down" };
    let message = format!("Scaled {verb} replica set {name} from {from} to {to}");
    ctx.events
        .record(deployment, EventType::Normal, "ScalingReplicaSet", &message);
}

/// Finds the ReplicaSet of the current template or creates it; moves its revision past the old ones (a
/// rollback makes an old template current again).
async fn ensure_new(
    ctx: &Context,
    deployment: &Deployment,
    owned: &[Arc<ReplicaSet>],
    initial_replicas: i32,
) -> Result<(ReplicaSet, Step), ControllerError> {
    let max_old = owned
        .iter()
        .filter(|rs| !runs_template(rs, deployment))
        .map(|rs| revision(rs))
        .max()
        .unwrap_or(0);
    let api: Api<ReplicaSet> = Api::namespaced(
        ctx.client.clone(),
        &deployment.namespace().unwrap_or_default(),
    );
    if let Some(existing) = owned.iter().find(|rs| runs_template(rs, deployment)) {
        if revision(existing) <= max_old {
            let patch = serde_json::json!({"metadata": {"annotations": {REVISION_ANNOTATION: (max_old + 1).to_string()}}});
            let updated = merge_patch(&api, &existing.name_any(), &patch).await?;
            return Ok((updated, Step::Found));
        }
        return Ok(((**existing).clone(), Step::Found));
    }
    let collisions = deployment.status.as_ref().and_then(|s| s.collision_count);
    let hash = rollout::template_hash(&deployment.spec.template, collisions);
    let rs = new_replicaset(deployment, &hash, initial_replicas, max_old + 1);
    match api.create(&PostParams::default(), &rs).await {
        Ok(created) => {
            record_scaling(ctx, deployment, &created.name_any(), 0, initial_replicas).await;
            Ok((created, Step::Created))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // This Deployment's own ReplicaSet, made by an earlier sync the cache has not shown yet, is the new one.
            if let Some(existing) = api.get_opt(&rs.name_any()).await?
                && super::ownership::controller_of(&existing.metadata)
                    .is_some_and(|owner| Some(&owner.uid) == deployment.metadata.uid.as_ref())
                && runs_template(&existing, deployment)
            {
                return Ok((existing, Step::Found));
            }
            // A ReplicaSet of that name that is not this template's: count a collision so the next hash differs.
            let patch =
                serde_json::json!({"status": {"collisionCount": collisions.unwrap_or(0) + 1}});
            Api::<Deployment>::namespaced(
                ctx.client.clone(),
                &deployment.namespace().unwrap_or_default(),
            )
            .patch_status(
                &deployment.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            Err(ControllerError::Exhausted(format!(
                "replica set name {} is taken; retrying with a new hash",
                rs.name_any()
            )))
        }
        Err(error) => Err(error.into()),
    }
}

/// One step of the rollout; returns the new ReplicaSet (if any), all owned ones as they are now, and the step.
async fn roll(
    ctx: &Context,
    deployment: &Deployment,
    mut owned: Vec<Arc<ReplicaSet>>,
) -> Result<(Option<ReplicaSet>, Vec<Arc<ReplicaSet>>, Step), ControllerError> {
    let desired = deployment.spec.replicas.unwrap_or(1);
    let (surge, unavailable) = rollout::surge_and_unavailable(deployment);
    owned.sort_by(|a, b| {
        created(a)
            .cmp(&created(b))
            .then(revision(a).cmp(&revision(b)))
    });
    let replace = |owned: &mut Vec<Arc<ReplicaSet>>, rs: ReplicaSet| match owned
        .iter()
        .position(|o| o.name_any() == rs.name_any())
    {
        Some(i) => owned[i] = Arc::new(rs),
        None => owned.push(Arc::new(rs)),
    };
    if deployment.spec.paused == Some(true) {
        // Paused: no new ReplicaSet; only follow a change of replicas when one set is active.
        let new = owned
            .iter()
            .find(|rs| runs_template(rs, deployment))
            .map(|rs| (**rs).clone());
        let active: Vec<Arc<ReplicaSet>> = owned
            .iter()
            .filter(|rs| spec_replicas(rs) > 0)
            .cloned()
            .collect();
        if let [only] = active.as_slice()
            && spec_replicas(only) != desired
        {
            let scaled = scale(ctx, deployment, only, desired).await?;
            replace(&mut owned, scaled);
        }
        return Ok((new, owned, Step::Found));
    }
    let recreate = deployment
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate");
    let olds: Vec<Arc<ReplicaSet>> = owned
        .iter()
        .filter(|rs| !runs_template(rs, deployment))
        .cloned()
        .collect();
    if recreate {
        // Every old pod goes before a new one starts.
        let mut waiting = false;
        for old in olds.iter().filter(|rs| spec_replicas(rs) > 0) {
            let scaled = scale(ctx, deployment, old, 0).await?;
            replace(&mut owned, scaled);
            waiting = true;
        }
        waiting |= olds
            .iter()
            .any(|rs| rs.status.as_ref().is_some_and(|s| s.replicas > 0));
        if waiting {
            let new = owned
                .iter()
                .find(|rs| runs_template(rs, deployment))
                .map(|rs| (**rs).clone());
            return Ok((new, owned, Step::Found));
        }
        let (new, step) = ensure_new(ctx, deployment, &owned, desired).await?;
        let new = if spec_replicas(&new) == desired {
            new
        } else {
            scale(ctx, deployment, &new, desired).await?
        };
        replace(&mut owned, new.clone());
        return Ok((Some(new), owned, step));
    }
    let all: i32 = owned.iter().map(|rs| spec_replicas(rs)).sum();
    let initial = rollout::new_replicas_rolling(desired, surge, all, 0);
    let (mut new, step) = ensure_new(ctx, deployment, &owned, initial).await?;
    replace(&mut owned, new.clone());
    let all: i32 = owned.iter().map(|rs| spec_replicas(rs)).sum();
    let target = rollout::new_replicas_rolling(desired, surge, all, spec_replicas(&new));
    if target != spec_replicas(&new) {
        new = scale(ctx, deployment, &new, target).await?;
        replace(&mut owned, new.clone());
        return Ok((Some(new), owned, step));
    }
    let old_sets: Vec<OldReplicaSet> = olds
        .iter()
        .map(|rs| OldReplicaSet {
            name: rs.name_any(),
            replicas: spec_replicas(rs),
            available: rollout::available_replicas(rs),
        })
        .collect();
    let changes = rollout::old_scale_down(
        &old_sets,
        desired,
        unavailable,
        spec_replicas(&new),
        rollout::available_replicas(&new),
    );
    for (name, replicas) in changes {
        if let Some(old) = olds.iter().find(|rs| rs.name_any() == name) {
            let scaled = scale(ctx, deployment, old, replicas).await?;
            replace(&mut owned, scaled);
        }
    }
    Ok((Some(new), owned, step))
}

/// Deletes the oldest fully scaled-down ReplicaSets beyond revisionHistoryLimit.
async fn prune_history(
    ctx: &Context,
    deployment: &Deployment,
    owned: &[Arc<ReplicaSet>],
) -> Result<(), ControllerError> {
    let limit =
        usize::try_from(deployment.spec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(0);
    let mut idle: Vec<&Arc<ReplicaSet>> = owned
        .iter()
        .filter(|rs| !runs_template(rs, deployment))
        .filter(|rs| spec_replicas(rs) == 0 && rs.status.as_ref().is_some_and(|s| s.replicas == 0))
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    idle.sort_by_key(|rs| revision(rs));
    let api: Api<ReplicaSet> = Api::namespaced(
        ctx.client.clone(),
        &deployment.namespace().unwrap_or_default(),
    );
    for rs in idle.iter().take(idle.len().saturating_sub(limit)) {
        match api
            .delete(&rs.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn reconcile(
    deployment: Arc<Deployment>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    if deployment.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if !ownership::selector_usable(deployment.as_ref(), &deployment.spec.selector, &ctx.events)
        .await
    {
        return Ok(Action::await_change());
    }
    let namespace = deployment.namespace().unwrap_or_default();
    let candidates = cached_in(&ctx.replicasets, &namespace).await?;
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let owned = ownership::claim(
        &rs_api,
        deployment.as_ref(),
        &deployment.spec.selector,
        candidates,
        |_| true,
    )
    .await;
    let (new, owned, step) = roll(&ctx, &deployment, owned).await?;
    let all: Vec<&ReplicaSet> = owned.iter().map(AsRef::as_ref).collect();
    let now = jiff::Timestamp::now();
    let status = rollout::status(&deployment, &all, new.as_ref(), step, now);
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let complete = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"));
    if complete {
        prune_history(&ctx, &deployment, &owned).await?;
    }
    if let Some(new) = &new {
        let current = revision(new).to_string();
        if deployment.annotations().get(REVISION_ANNOTATION) != Some(&current) {
            let patch =
                serde_json::json!({"metadata": {"annotations": {REVISION_ANNOTATION: current}}});
            merge_patch(&api, &deployment.name_any(), &patch).await?;
        }
    }
    if deployment.status.as_ref() != Some(&status) {
        if status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
            && !deployment
                .status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
        {
            ctx.events.record(
                deployment.as_ref(),
                EventType::Warning,
                "ProgressDeadlineExceeded",
                &format!(
                    "Deployment {} has timed out progressing.",
                    deployment.name_any()
                ),
            );
        }
        write_status(&api, &deployment.name_any(), None, &status).await?;
    }
    // Look again when the rollout would time out.
    let mut with_status = (*deployment).clone();
    with_status.status = Some(status);
    Ok(match rollout::progress_deadline(&with_status) {
        Some(at) => {
            let seconds = (at.as_second() - now.as_second()).max(0).unsigned_abs();
            Action::requeue(Duration::from_secs(seconds) + Duration::from_millis(500))
        }
        None => Action::await_change(),
    })
}

fn error_policy(
    deployment: Arc<Deployment>,
    error: &ControllerError,
    _ctx: Arc<Context>,
) -> Action {
    tracing::warn!(deployment = %deployment.name_any(), namespace = ?deployment.namespace(), %error, "deployment sync failed");
    retry_after(error)
}

/// Runs the controller until the process ends.
pub async fn run(client: kube::Client) {
    let (replicasets, changes) = reflect(Api::<ReplicaSet>::all(client.clone()));
    let controller = ControllerLoop::new(
        "deployment",
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    );
    let deployments = controller.store();
    let ctx = Arc::new(Context {
        events: Recorder::new(client.clone(), "deployment-controller"),
        client,
        replicasets,
    });
    let controller = controller.watches_stream(changes, move |rs| {
        ownership::owners_of(&rs, &deployments, |d: &Deployment| Some(&d.spec.selector))
    });
    controller.run(reconcile, error_policy, ctx).await;
}
