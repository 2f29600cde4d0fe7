//! The root CA publisher, as Kubernetes' `root-ca-cert-publisher`: every namespace that is not being deleted
//! has the ConfigMap `kube-root-ca.crt` whose `ca.crt` is the cluster CA's certificate, so pods can trust the
//! apiserver (ServiceAccount admission mounts it beside their token). Made again if deleted, put right if
//! changed.

use super::{ControllerError, drive, reflect_with, retry_after};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The ConfigMap's name.
const NAME: &str = "kube-root-ca.crt";
/// Its key.
const KEY: &str = "ca.crt";

struct Context {
    client: kube::Client,
    maps: Store<ConfigMap>,
    ca_pem: String,
}

async fn reconcile(
    namespace: Arc<Namespace>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let name = namespace.name_any();
    let terminating = namespace.metadata.deletion_timestamp.is_some()
        || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    ctx.maps
        .wait_until_ready()
        .await
        .map_err(|_| ControllerError::NotReady)?;
    let current = ctx.maps.get(&ObjectRef::new(NAME).within(&name));
    let published = current
        .as_ref()
        .and_then(|m| m.data.as_ref())
        .and_then(|d| d.get(KEY))
        .is_some_and(|pem| *pem == ctx.ca_pem);
    if terminating || published {
        return Ok(Action::await_change());
    }
    let map = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(NAME.into()),
            annotations: Some(BTreeMap::from([(
                "kubernetes.io/description".to_owned(),
                "Contains a CA bundle that can be used to verify the kube-apiserver when using internal \
                 endpoints such as the internal service IP or kubernetes.default.svc. No other usage is \
                 guaranteed across distributions of Kubernetes clusters."
                    .to_owned(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(KEY.to_owned(), ctx.ca_pem.clone())])),
        ..Default::default()
    };
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), &name);
    let written = if current.is_some() {
        let patch = serde_json::json!({"data": {KEY: ctx.ca_pem}});
        api.patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    } else {
        api.create(&PostParams::default(), &map).await.map(|_| ())
    };
    match written {
        Ok(()) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
            Ok(Action::requeue(std::time::Duration::from_millis(100)))
        }
        // A namespace being deleted refuses new objects.
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

fn error_policy(namespace: Arc<Namespace>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(namespace = %namespace.name_any(), %error, "root CA not published");
    retry_after(error)
}

/// Runs the publisher of `ca_pem` until the process ends.
pub async fn run(client: kube::Client, ca_pem: String) {
    let only_ours = watcher::Config::default().fields(&format!("metadata.name={NAME}"));
    let (maps, map_changes) = reflect_with(Api::<ConfigMap>::all(client.clone()), only_ours);
    let controller = Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches_stream(map_changes, |map: ConfigMap| {
        map.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns))
    });
    drive(
        "root-ca-cert-publisher",
        controller.run(
            reconcile,
            error_policy,
            Arc::new(Context {
                client,
                maps,
                ca_pem,
            }),
        ),
    )
    .await;
}
