//! The namespace controller: a namespace being deleted (phase Terminating) has everything in it deleted; once
//! it is empty, the namespace itself goes.

use super::controller_loop::ControllerLoop;
use super::{ControllerError, api_resource, retry_after};
use crate::api::resources;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// How often a terminating namespace is looked at while its content goes (pods stop within their grace).
const POLL: Duration = Duration::from_millis(500);

async fn reconcile(
    namespace: Arc<Namespace>,
    client: Arc<kube::Client>,
) -> Result<Action, ControllerError> {
    if namespace.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = namespace.name_any();
    let mut empty = true;
    for resource in resources::stored().iter().filter(|r| r.namespaced) {
        let api: Api<DynamicObject> =
            Api::namespaced_with((*client).clone(), &name, &api_resource(resource));
        let left = api.list(&ListParams::default().limit(1)).await?;
        if left.items.is_empty() {
            continue;
        }
        empty = false;
        api.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await?;
    }
    if !empty {
        return Ok(Action::requeue(POLL));
    }
    // Deleting an empty terminating namespace removes it.
    match Api::<Namespace>::all((*client).clone())
        .delete(&name, &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error.into()),
    }
    tracing::info!(namespace = %name, "namespace emptied and removed");
    Ok(Action::await_change())
}

fn error_policy(
    namespace: Arc<Namespace>,
    error: &ControllerError,
    _client: Arc<kube::Client>,
) -> Action {
    tracing::warn!(namespace = %namespace.name_any(), %error, "namespace cleanup failed");
    retry_after(error)
}

/// Runs the controller until the process ends.
pub async fn run(client: kube::Client) {
    let controller = ControllerLoop::new(
        "namespace",
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    );
    controller
        .run(reconcile, error_policy, Arc::new(client))
        .await;
}
