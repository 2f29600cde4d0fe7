//! The loop behind controllers that keep one named object in every namespace that is not being deleted (the
//! `default` ServiceAccount, the `kube-root-ca.crt` ConfigMap): made again if deleted, put right if changed.

use super::controller_loop::ControllerLoop;
use super::{ControllerError, reflect_with, retry_after};
use crate::cache::Cache;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;

/// The object a namespace must have.
pub(super) trait NamespaceObject: Send + Sync + 'static {
    /// Its kind.
    type Object: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static;
    /// The controller's name, as Kubernetes names its counterpart.
    const CONTROLLER: &'static str;
    /// The object's name.
    const NAME: &'static str;

    /// The object as it should be (without namespace).
    fn desired(&self) -> Self::Object;

    /// Whether an existing object is as it should be.
    fn is_current(&self, existing: &Self::Object) -> bool;
}

struct Context<N: NamespaceObject> {
    client: kube::Client,
    objects: Cache<N::Object>,
    spec: N,
}

async fn reconcile<N: NamespaceObject>(
    namespace: Arc<Namespace>,
    ctx: Arc<Context<N>>,
) -> Result<Action, ControllerError> {
    let name = namespace.name_any();
    let terminating = namespace.metadata.deletion_timestamp.is_some()
        || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    ctx.objects
        .ready()
        .await
        .map_err(|_| ControllerError::NotReady)?;
    let existing = ctx.objects.get(&ObjectRef::new(N::NAME).within(&name));
    if terminating || existing.as_deref().is_some_and(|o| ctx.spec.is_current(o)) {
        return Ok(Action::await_change());
    }
    let api = Api::<N::Object>::namespaced(ctx.client.clone(), &name);
    let desired = ctx.spec.desired();
    let written = match existing {
        Some(_) => api
            .patch(N::NAME, &PatchParams::default(), &Patch::Merge(&desired))
            .await
            .map(drop),
        None => api.create(&PostParams::default(), &desired).await.map(drop),
    };
    match written {
        Ok(()) => Ok(Action::await_change()),
        // Made or deleted meanwhile: look again once the cache has it.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
            Ok(Action::requeue(std::time::Duration::from_millis(100)))
        }
        // A namespace being deleted refuses new objects.
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

fn error_policy<N: NamespaceObject>(
    namespace: Arc<Namespace>,
    error: &ControllerError,
    _ctx: Arc<Context<N>>,
) -> Action {
    tracing::warn!(namespace = %namespace.name_any(), object = N::NAME, %error, "namespace object not kept");
    retry_after(error)
}

/// Keeps `spec`'s object in every namespace until the process ends.
pub(super) async fn run<N: NamespaceObject>(client: kube::Client, spec: N) {
    let only_ours = watcher::Config::default().fields(&format!("metadata.name={}", N::NAME));
    let (objects, changes) = reflect_with(Api::<N::Object>::all(client.clone()), only_ours);
    let controller = ControllerLoop::new(
        N::CONTROLLER,
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches_stream(changes, |object: N::Object| {
        object
            .namespace()
            .map(|ns| ObjectRef::<Namespace>::new(&ns))
    });
    controller
        .run(
            reconcile,
            error_policy,
            Arc::new(Context {
                client,
                objects,
                spec,
            }),
        )
        .await;
}
