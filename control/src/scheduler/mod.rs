//! The scheduler: binds pods without a node to the best node that fits them, through the binding subresource.
//! It keeps watch-fed caches of nodes and pods (no list per pod), counts pods it bound but has not seen bound
//! yet ("assumed"), and marks pods that fit nowhere as Unschedulable with Kubernetes' message.

pub mod plugins;

use crate::events::{EventType, Recorder};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use plugins::Resources;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often an unschedulable pod is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// Scheduler failures.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The apiserver refused or could not be reached.
    #[error("apiserver request failed: {0}")]
    Api(#[from] kube::Error),
    /// The caches have not synced yet.
    #[error("the node and pod caches are not ready yet")]
    NotReady,
}

struct Context {
    client: kube::Client,
    events: Recorder,
    nodes: Store<Node>,
    pods: Store<Pod>,
    /// Pods placed by this scheduler that the pod cache may not show bound yet, by uid. Choosing a node and
    /// assuming the pod there happen under this one lock, so pods scheduled at once see each other.
    assumed: Mutex<HashMap<String, Assumed>>,
}

/// A pod placed on a node before the cache shows it bound.
#[derive(Clone)]
struct Assumed {
    node: String,
    requests: Resources,
    owner: Option<String>,
    since: std::time::Instant,
}

/// How long an assumption is kept if the cache never shows the pod bound (its binding failed or it was deleted).
const ASSUME_TIMEOUT: Duration = Duration::from_secs(30);

fn running_on<'a>(pods: &'a [Arc<Pod>], node: &str) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .map(|p| p.as_ref())
        .collect()
}

/// Picks the node for a pod and assumes the pod there, or explains why none fits.
fn choose(ctx: &Context, pod: &Pod) -> Result<String, String> {
    let nodes = ctx.nodes.state();
    let pods = ctx.pods.state();
    let request = plugins::requests(pod);
    let owner = plugins::owner(pod).map(str::to_owned);
    let mut assumed = ctx.assumed.lock().unwrap_or_else(|e| e.into_inner());
    // Forget assumptions the cache has caught up with (or that are too old to matter).
    let bound: std::collections::HashSet<String> = pods
        .iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty())
        })
        .filter_map(|p| p.uid())
        .collect();
    assumed.retain(|uid, a| !bound.contains(uid) && a.since.elapsed() < ASSUME_TIMEOUT);
    let mut reasons = Vec::new();
    let mut best: Option<(i64, String)> = None;
    for node in &nodes {
        let name = node.name_any();
        let on_node = running_on(&pods, &name);
        let extra: Vec<&Assumed> = assumed.values().filter(|a| a.node == name).collect();
        let used = on_node
            .iter()
            .fold(Resources::default(), |sum, p| sum + plugins::requests(p));
        let used = extra.iter().fold(used, |sum, a| sum + a.requests);
        let total = plugins::allocatable(node);
        let free = Resources {
            cpu_milli: total.cpu_milli - used.cpu_milli,
            memory: total.memory - used.memory,
            pods: total.pods - used.pods,
        };
        let verdict = plugins::node_ready(node)
            .and_then(|()| plugins::node_selector_matches(pod, node))
            .and_then(|()| plugins::tolerates_taints(pod, node))
            .and_then(|()| plugins::fits(request, free))
            .and_then(|()| plugins::host_ports_free(pod, &on_node));
        match verdict {
            Err(reason) => reasons.push(reason),
            Ok(()) => {
                let siblings = owner.as_deref().map_or(0, |uid| {
                    on_node
                        .iter()
                        .filter(|p| plugins::owner(p) == Some(uid))
                        .count()
                        + extra
                            .iter()
                            .filter(|a| a.owner.as_deref() == Some(uid))
                            .count()
                });
                let score = plugins::score(request, free, total, siblings);
                if best
                    .as_ref()
                    .is_none_or(|(s, n)| score > *s || (score == *s && name < *n))
                {
                    best = Some((score, name));
                }
            }
        }
    }
    let (_, node) = best.ok_or_else(|| plugins::unschedulable_message(nodes.len(), &reasons))?;
    if let Some(uid) = pod.uid() {
        let placed = Assumed {
            node: node.clone(),
            requests: request,
            owner,
            since: std::time::Instant::now(),
        };
        assumed.insert(uid, placed);
    }
    Ok(node)
}

/// Drops the assumption of a pod whose binding failed.
fn forget(ctx: &Context, pod: &Pod) {
    if let Some(uid) = pod.uid() {
        ctx.assumed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
    }
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, SchedulerError> {
    let spec = pod.spec.as_ref();
    let bound = spec
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let ours = spec
        .and_then(|s| s.scheduler_name.as_deref())
        .is_none_or(|n| n == "default-scheduler");
    if bound || !ours || pod.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let (nodes_ready, pods_ready) = (ctx.nodes.wait_until_ready(), ctx.pods.wait_until_ready());
    if nodes_ready.await.is_err() || pods_ready.await.is_err() {
        return Err(SchedulerError::NotReady);
    }
    let (name, namespace) = (pod.name_any(), pod.namespace().unwrap_or_default());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    match choose(&ctx, &pod) {
        Ok(node) => {
            let binding = serde_json::json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": node}});
            match pods
                .create_subresource::<serde_json::Value, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(pod = %name, namespace = %namespace, node = %node, "scheduled");
                    ctx.events
                        .record(
                            pod.as_ref(),
                            EventType::Normal,
                            "Scheduled",
                            &format!("Successfully assigned {namespace}/{name} to {node}"),
                        )
                        .await;
                }
                // Bound meanwhile (by another scheduler run, or the pod went away): nothing to do.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => forget(&ctx, &pod),
                Err(e) => {
                    forget(&ctx, &pod);
                    return Err(e.into());
                }
            }
            Ok(Action::await_change())
        }
        Err(message) => {
            let already = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.type_ == "PodScheduled"
                            && c.status == "False"
                            && c.message.as_deref() == Some(message.as_str())
                    })
                });
            if !already {
                let status = serde_json::json!({"status": {"conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                    "lastTransitionTime": jiff::Timestamp::now().to_string(), "lastProbeTime": null,
                }]}});
                pods.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&status))
                    .await?;
                ctx.events
                    .record(
                        pod.as_ref(),
                        EventType::Warning,
                        "FailedScheduling",
                        &message,
                    )
                    .await;
            }
            Ok(Action::requeue(RETRY))
        }
    }
}

fn error_policy(_pod: Arc<Pod>, error: &SchedulerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "scheduling failed");
    Action::requeue(RETRY)
}

/// Runs the scheduler until the process ends.
pub async fn run(client: kube::Client) {
    let (nodes, node_writer) = reflector::store();
    let node_events = reflector::reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    );
    tokio::spawn(node_events.applied_objects().for_each(|_| async {}));
    let (pods, pod_writer) = reflector::store();
    let pod_events = reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    );
    tokio::spawn(pod_events.touched_objects().for_each(|_| async {}));
    let ctx = Arc::new(Context {
        client: client.clone(),
        events: Recorder::new(client.clone(), "default-scheduler"),
        nodes,
        pods,
        assumed: Mutex::new(HashMap::new()),
    });
    let pending = watcher::Config::default().fields("spec.nodeName=");
    tracing::info!("scheduler running");
    Controller::new(Api::<Pod>::all(client), pending)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}
