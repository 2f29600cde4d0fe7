//! The scheduler: binds pods without a node to the best node that fits them, through the binding subresource.
//! It keeps a watch-fed cache of nodes and of each node's load (no list per pod), counts pods it bound but has
//! not seen bound yet ("assumed"), and marks pods that fit nowhere as Unschedulable with Kubernetes' message.

pub mod cache;
pub mod plugins;

use crate::events::{EventType, Recorder};
use cache::Cache;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often an unschedulable pod is tried again even if nothing changed.
const RETRY: Duration = Duration::from_secs(10);
/// Pods being scheduled (and bound) at once.
const BINDINGS_IN_FLIGHT: u16 = 64;

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
    nodes: crate::cache::Cache<Node>,
    /// Each node's load, with the pods this scheduler placed but has not seen bound yet.
    cache: Mutex<Cache>,
    /// Whether the pod watch has listed every pod once.
    pods_synced: tokio::sync::watch::Sender<bool>,
}

/// Picks the node for a pod and assumes the pod there, or explains why none fits.
fn choose(ctx: &Context, pod: &Pod) -> Result<String, String> {
    let nodes = ctx.nodes.state();
    let request = plugins::requests(pod);
    let owner = plugins::owner(pod).map(str::to_owned);
    // Choosing and assuming under one lock: pods scheduled at once see each other.
    let mut cache = ctx.cache.lock().unwrap_or_else(|e| e.into_inner());
    let mut reasons = Vec::new();
    let mut best: Option<(i64, String)> = None;
    for node in &nodes {
        let name = node.name_any();
        let load = cache.load(&name);
        let total = plugins::allocatable(node);
        let free = total - load.requested;
        let verdict = plugins::node_ready(node)
            .and_then(|()| plugins::node_selector_matches(pod, node))
            .and_then(|()| plugins::tolerates_taints(pod, node))
            .and_then(|()| plugins::fits(request, free))
            .and_then(|()| plugins::host_ports_free(pod, &load.host_ports));
        match verdict {
            Err(reason) => reasons.push(reason),
            Ok(()) => {
                let siblings = owner
                    .as_ref()
                    .and_then(|uid| load.owners.get(uid))
                    .copied()
                    .unwrap_or(0);
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
        let placed = cache::Placed {
            node: node.clone(),
            requests: request,
            owner,
            host_ports: plugins::host_ports(pod),
            assumed: true,
        };
        cache.assume(&uid, placed);
    }
    Ok(node)
}

/// Whether the pod waits with PodScheduled=False.
fn is_unschedulable(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "False")
        })
}

/// Drops the assumption of a pod whose binding failed.
fn forget(ctx: &Context, pod: &Pod) {
    if let Some(uid) = pod.uid() {
        ctx.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget(&uid);
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
    let mut pods_synced = ctx.pods_synced.subscribe();
    if ctx.nodes.ready().await.is_err() || pods_synced.wait_for(|s| *s).await.is_err() {
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
    let (nodes, node_events) =
        crate::cache::reflect(Api::<Node>::all(client.clone()), watcher::Config::default());
    // Unschedulable pods are tried again when a node changes or a pod frees room, and every RETRY anyway.
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel::<()>();
    let wake_on_node = wake.clone();
    tokio::spawn(node_events.applied_objects().for_each(move |_| {
        let _ = wake_on_node.send(());
        async {}
    }));
    let ctx = Arc::new(Context {
        client: client.clone(),
        events: Recorder::new(client.clone(), "default-scheduler"),
        nodes,
        cache: Mutex::new(Cache::default()),
        pods_synced: tokio::sync::watch::channel(false).0,
    });
    let feed = ctx.clone();
    let pod_events =
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).default_backoff();
    tokio::spawn(pod_events.for_each(move |event| {
        if let Ok(event) = event {
            let synced = matches!(event, watcher::Event::InitDone);
            let frees_room = match &event {
                watcher::Event::Delete(_) => true,
                watcher::Event::Apply(pod) => {
                    cache::placed(pod).is_none()
                        && pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.node_name.as_deref())
                            .is_some_and(|n| !n.is_empty())
                }
                _ => false,
            };
            if frees_room {
                let _ = wake.send(());
            }
            feed.cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .apply(&event);
            if synced {
                feed.pods_synced.send_replace(true);
            }
        }
        async {}
    }));
    let pending = watcher::Config::default().fields("spec.nodeName=");
    tracing::info!("scheduler running");
    // Decisions are serial (one cache lock); this many bindings may be in flight at once.
    let config = kube::runtime::controller::Config::default().concurrency(BINDINGS_IN_FLIGHT);
    let controller = Controller::new(Api::<Pod>::all(client), pending).with_config(config);
    let waiting = controller.store();
    let retries = tokio_stream::wrappers::UnboundedReceiverStream::new(woken).flat_map(move |()| {
        let unschedulable: Vec<ObjectRef<Pod>> = waiting
            .state()
            .iter()
            .filter(|pod| is_unschedulable(pod))
            .map(|pod| ObjectRef::from_obj(pod.as_ref()))
            .collect();
        futures::stream::iter(unschedulable)
    });
    controller
        .reconcile_on(retries)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}
