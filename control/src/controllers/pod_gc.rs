//! Pod garbage collection: pods bound to a node that no longer exists can never be stopped by an agent, so
//! they are deleted for good (grace 0) once the node has been missing for the quarantine time (Kubernetes: 40 s),
//! so pods bound to a node that has not registered yet are not lost.

use crate::informers::Informers;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How often pods are checked against the nodes.
const PERIOD: Duration = Duration::from_secs(2);

/// When each node that pods are bound to was first seen missing; nodes that came back are forgotten.
pub fn track_missing(
    pods: &[std::sync::Arc<Pod>],
    nodes: &HashSet<String>,
    missing_since: &mut HashMap<String, Instant>,
    now: Instant,
) {
    let bound: HashSet<&str> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()))
        .filter(|n| !n.is_empty())
        .collect();
    missing_since.retain(|node, _| bound.contains(node.as_str()) && !nodes.contains(node));
    for node in bound.into_iter().filter(|n| !nodes.contains(*n)) {
        missing_since.entry(node.to_owned()).or_insert(now);
    }
}

/// The pods bound to a node that has been missing for at least `quarantine`.
pub fn orphaned<'a>(
    pods: &'a [std::sync::Arc<Pod>],
    missing_since: &HashMap<String, Instant>,
    now: Instant,
    quarantine: Duration,
) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .and_then(|n| missing_since.get(n))
                .is_some_and(|since| now.duration_since(*since) >= quarantine)
        })
        .map(AsRef::as_ref)
        .collect()
}

/// Runs the collector until the process ends.
pub async fn run(client: kube::Client, informers: &Informers, quarantine: Duration) {
    let (nodes, pods) = (informers.nodes().cache(), informers.pods().cache());
    let node_api: Api<Node> = Api::all(client.clone());
    let mut missing_since = HashMap::new();
    loop {
        tokio::time::sleep(PERIOD).await;
        if nodes.ready().await.is_err() || pods.ready().await.is_err() {
            continue;
        }
        let present: HashSet<String> = nodes.state().iter().map(|n| n.name_any()).collect();
        let all = pods.state();
        let now = Instant::now();
        track_missing(&all, &present, &mut missing_since, now);
        for pod in orphaned(&all, &missing_since, now, quarantine) {
            // The cache may be behind: only a node the apiserver does not know makes a pod an orphan.
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            if let Some(node) = node
                && !matches!(node_api.get_opt(&node).await, Ok(None))
            {
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use std::sync::Arc;

    fn pod_on(node: &str) -> Arc<Pod> {
        Arc::new(Pod {
            spec: Some(PodSpec {
                node_name: Some(node.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn pods_of_a_missing_node_are_orphans_only_after_the_quarantine() {
        let pods = [pod_on("gone"), pod_on("here")];
        let nodes = HashSet::from(["here".to_owned()]);
        let quarantine = Duration::from_secs(40);
        let start = Instant::now();
        let mut missing = HashMap::new();
        track_missing(&pods, &nodes, &mut missing, start);
        assert!(orphaned(&pods, &missing, start, quarantine).is_empty());
        let later = start + Duration::from_secs(41);
        track_missing(&pods, &nodes, &mut missing, later);
        let orphans = orphaned(&pods, &missing, later, quarantine);
        assert_eq!(orphans.len(), 1);
        assert_eq!(
            orphans[0].spec.as_ref().unwrap().node_name.as_deref(),
            Some("gone")
        );
    }

    #[test]
    fn a_node_that_registers_within_the_quarantine_keeps_its_pods() {
        let pods = [pod_on("late")];
        let start = Instant::now();
        let mut missing = HashMap::new();
        track_missing(&pods, &HashSet::new(), &mut missing, start);
        let registered = HashSet::from(["late".to_owned()]);
        let later = start + Duration::from_secs(60);
        track_missing(&pods, &registered, &mut missing, later);
        assert!(orphaned(&pods, &missing, later, Duration::from_secs(40)).is_empty());
    }
}
