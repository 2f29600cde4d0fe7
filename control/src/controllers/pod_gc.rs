//! Pod garbage collection: pods bound to a node that no longer exists can never be stopped by an agent, so
//! they are deleted for good (grace 0).

use super::reflect;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use std::collections::HashSet;
use std::time::Duration;

/// How often pods are checked against the nodes.
const PERIOD: Duration = Duration::from_secs(2);

/// The pods bound to a node that is not in `nodes`.
pub fn orphaned<'a>(pods: &'a [std::sync::Arc<Pod>], nodes: &HashSet<String>) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty() && !nodes.contains(n))
        })
        .map(AsRef::as_ref)
        .collect()
}

/// Runs the collector until the process ends.
pub async fn run(client: kube::Client) {
    let (nodes, node_changes) = reflect(Api::<Node>::all(client.clone()));
    let (pods, pod_changes) = reflect(Api::<Pod>::all(client.clone()));
    tokio::spawn(node_changes.for_each(|_| async {}));
    tokio::spawn(pod_changes.for_each(|_| async {}));
    loop {
        tokio::time::sleep(PERIOD).await;
        if nodes.wait_until_ready().await.is_err() || pods.wait_until_ready().await.is_err() {
            continue;
        }
        let present: HashSet<String> = nodes.state().iter().map(|n| n.name_any()).collect();
        let all = pods.state();
        for pod in orphaned(&all, &present) {
            let api: Api<Pod> =
                Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
            match api
                .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
                .await
            {
                Ok(_) => {
                    tracing::info!(pod = %pod.name_any(), namespace = ?pod.namespace(), "deleted a pod of a node that is gone")
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => {
                    tracing::warn!(pod = %pod.name_any(), %error, "cannot delete a pod of a node that is gone")
                }
            }
        }
    }
}
