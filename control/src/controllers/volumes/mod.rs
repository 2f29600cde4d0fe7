//! Storage controllers, as kube-controller-manager's and k3s' run them: the PersistentVolume binder (claims
//! bound to matching volumes, released volumes reclaimed by their policy), the built-in local-path
//! provisioner, and the pvc-protection and pv-protection controllers (a claim stays while a pod uses it, a
//! volume while it is bound). Two loops share one watch of claims and one of volumes: one over claims, one
//! over volumes.

pub mod binder;
pub mod local_path;

use super::controller_loop::ControllerLoop;
use super::{ControllerError, retry_after};
use crate::api::storage::{
    BIND_COMPLETED, BOUND_BY_CONTROLLER, LOCAL_PATH_PROVISIONER, PV_PROTECTION, PVC_PROTECTION,
    STORAGE_PROVISIONER, pod_claims,
};
use crate::cache::{Cache, Informer};
use crate::events::{EventType, Recorder};
use crate::informers::Informers;
use binder::{ClaimStep, VolumeStep, Waiting};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How often a waiting claim is looked at again (kube-controller-manager's PV sync period).
const RESYNC: Duration = Duration::from_secs(15);

struct Context {
    client: kube::Client,
    events: Recorder,
    claims: Cache<PersistentVolumeClaim>,
    volumes: Cache<PersistentVolume>,
    classes: Cache<StorageClass>,
    nodes: Cache<Node>,
    pods: Cache<Pod>,
}

/// Whether a pod that has not finished uses the claim (pvc-protection's test).
fn in_use(pods: &Cache<Pod>, claim: &PersistentVolumeClaim) -> bool {
    let (namespace, name) = (claim.namespace(), claim.name_any());
    pods.state().iter().any(|pod| {
        pod.namespace() == namespace
            && !matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
            && pod_claims(pod).any(|c| c == name)
    })
}

/// The object's finalizers without `finalizer`, as a merge patch that fails if the object changed since.
fn without_finalizer(meta: &kube::api::ObjectMeta, finalizer: &str) -> serde_json::Value {
    let kept: Vec<&String> = meta
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .collect();
    json!({"metadata": {"finalizers": kept, "resourceVersion": meta.resource_version}})
}

fn has_finalizer(meta: &kube::api::ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

async fn patch<K>(api: &Api<K>, name: &str, body: &serde_json::Value) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(body))
        .await
        .map(|_| ())
}

async fn patch_status<K>(
    api: &Api<K>,
    name: &str,
    status: serde_json::Value,
) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await
    .map(|_| ())
}

/// Binds a claim and a volume both ways: the volume's claimRef, its phase, the claim's volumeName, its phase
/// (each written only when not already so).
async fn bind(
    ctx: &Context,
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
) -> Result<(), ControllerError> {
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    let volume_name = volume.name_any();
    let reference = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    if reference.and_then(|r| r.uid.as_deref()) != claim.metadata.uid.as_deref() {
        let mut body = json!({"metadata": {"resourceVersion": volume.metadata.resource_version},
            "spec": {"claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": claim.namespace(), "name": claim.name_any(), "uid": claim.metadata.uid,
                "resourceVersion": claim.metadata.resource_version}}});
        if reference.is_none() {
            body["metadata"]["annotations"] = json!({ BOUND_BY_CONTROLLER: "yes" });
        }
        patch(&volumes, &volume_name, &body).await?;
    }
    let volume_phase = volume.status.as_ref().and_then(|s| s.phase.as_deref());
    if volume_phase != Some("Bound") {
        patch_status(&volumes, &volume_name, json!({"phase": "Bound"})).await?;
    }
    if binder::claim_volume(claim) != Some(volume_name.as_str()) {
        let mut annotations = json!({ BIND_COMPLETED: "yes" });
        if binder::claim_volume(claim).is_none() {
            annotations[BOUND_BY_CONTROLLER] = json!("yes");
        }
        let body = json!({"metadata": {"annotations": annotations,
            "resourceVersion": claim.metadata.resource_version},
            "spec": {"volumeName": volume_name}});
        patch(&claims, &claim.name_any(), &body).await?;
    }
    let spec = volume.spec.clone().unwrap_or_default();
    let status =
        json!({"phase": "Bound", "accessModes": spec.access_modes, "capacity": spec.capacity});
    let shown = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    if shown != Some("Bound") {
        patch_status(&claims, &claim.name_any(), status).await?;
    }
    Ok(())
}

fn record(ctx: &Context, claim: &PersistentVolumeClaim, waiting: &Waiting) {
    let kind = if waiting.warning {
        EventType::Warning
    } else {
        EventType::Normal
    };
    ctx.events
        .record(claim, kind, waiting.reason, &waiting.message);
}

/// Asks the class's provisioner for a volume: the built-in local-path one makes it here; another is waited for.
async fn provision(
    ctx: &Context,
    claim: &PersistentVolumeClaim,
    provisioner: &str,
    node: Option<&str>,
) -> Result<Action, ControllerError> {
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    let annotated = claim
        .annotations()
        .get(STORAGE_PROVISIONER)
        .is_some_and(|p| p == provisioner);
    if !annotated {
        let body = json!({"metadata": {"annotations": {
            STORAGE_PROVISIONER: provisioner, "volume.beta.kubernetes.io/storage-provisioner": provisioner}}});
        patch(&claims, &claim.name_any(), &body).await?;
    }
    if provisioner != LOCAL_PATH_PROVISIONER {
        record(
            ctx,
            claim,
            &Waiting {
                warning: false,
                reason: "ExternalProvisioning",
                message: format!(
                    "Waiting for a volume to be created either by the external provisioner '{provisioner}' or \
                 manually by the system administrator. If volume creation is delayed, please verify that the \
                 provisioner is running and correctly registered."
                ),
            },
        );
        return Ok(Action::requeue(RESYNC));
    }
    let name = local_path::volume_name(claim);
    if ctx.volumes.get(&ObjectRef::new(&name)).is_some() {
        return Ok(Action::await_change());
    }
    let class_name = crate::api::storage::claim_class(claim);
    let class = ctx.classes.get(&ObjectRef::new(class_name));
    let node_object = node.and_then(|n| ctx.nodes.get(&ObjectRef::new(n)));
    let planned = class
        .as_deref()
        .ok_or_else(|| format!("storageclass.storage.k8s.io {class_name:?} not found"))
        .and_then(|class| {
            local_path::volume_for(
                claim,
                class,
                node_object.as_deref(),
                node.unwrap_or_default(),
            )
        });
    match planned {
        Ok(volume) => {
            let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
            match volumes.create(&PostParams::default(), &volume).await {
                Ok(_) => ctx.events.record(
                    claim,
                    EventType::Normal,
                    "ProvisioningSucceeded",
                    &format!("Successfully provisioned volume {name}"),
                ),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Action::await_change())
        }
        Err(reason) => {
            ctx.events.record(
                claim,
                EventType::Warning,
                "ProvisioningFailed",
                &format!("failed to provision volume with StorageClass {class_name:?}: {reason}"),
            );
            Ok(Action::requeue(RESYNC))
        }
    }
}

async fn reconcile_claim(
    claim: Arc<PersistentVolumeClaim>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    for ready in [
        ctx.volumes.ready().await,
        ctx.classes.ready().await,
        ctx.pods.ready().await,
    ] {
        ready.map_err(|_| ControllerError::NotReady)?;
    }
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    if claim.metadata.deletion_timestamp.is_some() {
        if has_finalizer(&claim.metadata, PVC_PROTECTION) && !in_use(&ctx.pods, &claim) {
            patch(
                &claims,
                &claim.name_any(),
                &without_finalizer(&claim.metadata, PVC_PROTECTION),
            )
            .await?;
        }
        return Ok(Action::await_change());
    }
    let volumes = ctx.volumes.state();
    let classes = ctx.classes.state();
    let volume_refs: Vec<&PersistentVolume> = volumes.iter().map(AsRef::as_ref).collect();
    let class_refs: Vec<&StorageClass> = classes.iter().map(AsRef::as_ref).collect();
    match binder::plan_claim(&claim, &volume_refs, &class_refs) {
        ClaimStep::Done => Ok(Action::await_change()),
        ClaimStep::Bind(name) => {
            if let Some(volume) = volume_refs
                .iter()
                .find(|v| v.metadata.name.as_deref() == Some(&name))
            {
                bind(&ctx, &claim, volume).await?;
            }
            Ok(Action::await_change())
        }
        ClaimStep::Provision { provisioner, node } => {
            provision(&ctx, &claim, &provisioner, node.as_deref()).await
        }
        ClaimStep::Wait(waiting) => {
            record(&ctx, &claim, &waiting);
            Ok(Action::requeue(RESYNC))
        }
        ClaimStep::Lost => {
            if claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Lost") {
                patch_status(&claims, &claim.name_any(), json!({"phase": "Lost"})).await?;
                ctx.events.record(
                    claim.as_ref(),
                    EventType::Warning,
                    "ClaimLost",
                    "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                );
            }
            Ok(Action::await_change())
        }
    }
}

async fn reconcile_volume(
    volume: Arc<PersistentVolume>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    ctx.claims
        .ready()
        .await
        .map_err(|_| ControllerError::NotReady)?;
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let name = volume.name_any();
    let phase = volume.status.as_ref().and_then(|s| s.phase.as_deref());
    if volume.metadata.deletion_timestamp.is_some() {
        if has_finalizer(&volume.metadata, PV_PROTECTION) && phase != Some("Bound") {
            patch(
                &volumes,
                &name,
                &without_finalizer(&volume.metadata, PV_PROTECTION),
            )
            .await?;
        }
        return Ok(Action::await_change());
    }
    let claim = volume
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|r| {
            ctx.claims.get(
                &ObjectRef::new(r.name.as_deref().unwrap_or_default())
                    .within(r.namespace.as_deref().unwrap_or_default()),
            )
        });
    match binder::plan_volume(&volume, claim.as_deref()) {
        VolumeStep::Done => {}
        VolumeStep::Phase(wanted) => {
            patch_status(&volumes, &name, json!({"phase": wanted})).await?
        }
        VolumeStep::Delete => {
            // Released first: pv-protection lets a volume go once it is no longer bound.
            if phase != Some("Released") {
                patch_status(&volumes, &name, json!({"phase": "Released"})).await?;
            }
            match volumes.delete(&name, &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        VolumeStep::Fail(message) => {
            patch_status(
                &volumes,
                &name,
                json!({"phase": "Failed", "message": message}),
            )
            .await?;
            ctx.events.record(
                volume.as_ref(),
                EventType::Warning,
                "VolumeFailedDelete",
                &message,
            );
        }
    }
    Ok(Action::await_change())
}

fn error_policy<K: kube::Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &ControllerError,
    _ctx: Arc<Context>,
) -> Action {
    tracing::warn!(name = %object.name_any(), namespace = ?object.namespace(), kind = %K::kind(&()), %error, "volume sync failed");
    retry_after(error)
}

/// Runs the storage controllers until the process ends.
pub async fn run(client: kube::Client, informers: &Informers) {
    let claims = Informer::<PersistentVolumeClaim>::start(
        Api::all(client.clone()),
        watcher::Config::default(),
    );
    let volumes =
        Informer::<PersistentVolume>::start(Api::all(client.clone()), watcher::Config::default());
    let classes =
        Informer::<StorageClass>::start(Api::all(client.clone()), watcher::Config::default());
    let (pods, pod_changes) = informers.pods().follow();
    let ctx = Arc::new(Context {
        events: Recorder::new(client.clone(), "persistentvolume-controller"),
        client,
        claims: claims.cache(),
        volumes: volumes.cache(),
        classes: classes.cache(),
        nodes: informers.nodes().cache(),
        pods,
    });
    let claim_loop = ControllerLoop::for_shared_stream(
        "persistentvolume-binder-claims",
        claims.subscribe(),
        claims.cache().store().clone(),
    )
    // A volume's change concerns the claim it refers to.
    .watches_shared_stream(volumes.subscribe(), |volume: Arc<PersistentVolume>| {
        let reference = volume.spec.as_ref()?.claim_ref.as_ref()?;
        Some(ObjectRef::new(reference.name.as_deref()?).within(reference.namespace.as_deref()?))
    })
    // A pod that goes (or comes) concerns the claims it names: protection, and a first consumer.
    .watches_shared_stream(pod_changes, |pod: Arc<Pod>| {
        let namespace = pod.namespace().unwrap_or_default();
        pod_claims(&pod)
            .map(|c| ObjectRef::new(c).within(&namespace))
            .collect::<Vec<_>>()
    })
    .run(reconcile_claim, error_policy, ctx.clone());
    let volume_loop = ControllerLoop::for_shared_stream(
        "persistentvolume-binder-volumes",
        volumes.subscribe(),
        volumes.cache().store().clone(),
    )
    // A claim's change (its deletion above all) concerns the volume it is bound to.
    .watches_shared_stream(claims.subscribe(), |claim: Arc<PersistentVolumeClaim>| {
        binder::claim_volume(&claim).map(ObjectRef::new)
    })
    .run(reconcile_volume, error_policy, ctx);
    tokio::join!(claim_loop, volume_loop);
}
