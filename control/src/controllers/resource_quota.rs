//! The resource quota controller: keeps each ResourceQuota's `status.hard` and `status.used` current as pods
//! come and go (admission refuses what would exceed `hard`; this reports what is used).

use super::controller_loop::ControllerLoop;
use super::{ControllerError, cached_in, retry_after};
use crate::api::quota::{used, used_quantities};
use crate::cache::Cache;
use crate::informers::Informers;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::sync::Arc;

struct Context {
    client: kube::Client,
    pods: Cache<Pod>,
}

async fn reconcile(
    quota: Arc<ResourceQuota>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let namespace = quota.namespace().unwrap_or_default();
    let hard = quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let pods: Vec<Pod> = cached_in(&ctx.pods, &namespace)
        .await?
        .iter()
        .map(|p| (**p).clone())
        .collect();
    let used = used_quantities(&used(&hard, &pods));
    let status = quota.status.clone().unwrap_or_default();
    if status.hard.as_ref() == Some(&hard) && status.used.as_ref() == Some(&used) {
        return Ok(Action::await_change());
    }
    let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({"status": {"hard": hard, "used": used}});
    api.patch_status(
        &quota.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(Action::await_change())
}

fn error_policy(quota: Arc<ResourceQuota>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(quota = %quota.name_any(), namespace = ?quota.namespace(), %error, "quota usage update failed");
    retry_after(error)
}

/// Runs the controller until the process ends.
pub async fn run(client: kube::Client, informers: &Informers) {
    let (pods, pod_changes) = informers.pods().follow();
    let quotas = Api::<ResourceQuota>::all(client.clone());
    let controller = ControllerLoop::new("resource-quota", quotas, watcher::Config::default());
    let all_quotas = controller.store();
    // A pod's change concerns every quota of its namespace.
    let controller = controller.watches_shared_stream(pod_changes, move |pod: Arc<Pod>| {
        let namespace = pod.namespace().unwrap_or_default();
        all_quotas
            .state()
            .into_iter()
            .filter(|q| q.namespace().as_deref() == Some(namespace.as_str()))
            .map(|q| ObjectRef::from_obj(q.as_ref()))
            .collect::<Vec<_>>()
    });
    controller
        .run(reconcile, error_policy, Arc::new(Context { client, pods }))
        .await;
}
