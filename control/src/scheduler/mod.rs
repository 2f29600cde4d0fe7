//! The scheduler: binds pods without a node to the best node that fits them, through the binding subresource.
//! It keeps a watch-fed cache of the nodes, of what each node's pods hold and of the namespaces, counts pods
//! it bound but has not seen bound yet ("assumed"), takes pending pods from a priority queue with per-pod
//! backoff, preempts pods of lower priority when a pod fits nowhere, and marks pods that fit nowhere as
//! Unschedulable with Kubernetes' message.

pub mod cache;
#[cfg(test)]
mod fixtures;
pub mod framework;
pub mod metrics;
pub mod plugins;
pub mod preemption;
pub mod queue;

use crate::api::selector::{LabelSelector, Requirement};
use crate::cache::{Change, Informer};
use crate::events::{EventType, Recorder};
use crate::informers::Informers;
use cache::Cache;
use framework::{FitError, Incoming};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use plugins::selection::{PodLabels, selector};
use preemption::Preemption;
use queue::{Outcome, SchedulingQueue};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an unschedulable pod waits for a change before it is tried again anyway. kube-scheduler waits
/// 5 minutes, but it also retries on every kind of change its plugins name (queueing hints); this scheduler
/// retries on node changes and freed room only, so it flushes sooner.
const RETRY: Duration = Duration::from_secs(10);
/// Pods being scheduled (and bound) at once.
const BINDINGS_IN_FLIGHT: usize = 64;
/// How often the queue sizes of `/metrics` are counted at most.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);

/// Scheduler failures.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The apiserver refused or could not be reached.
    #[error("apiserver request failed: {0}")]
    Api(#[from] kube::Error),
    /// The caches have not synced yet.
    #[error("the scheduler's caches are not ready yet")]
    NotReady,
}

/// The other objects decisions read: what selects pods for default spreading (Services and the controllers
/// that own pods) and the disruption budgets preemption respects.
struct Listers {
    services: crate::cache::Cache<Service>,
    replica_sets: crate::cache::Cache<ReplicaSet>,
    stateful_sets: crate::cache::Cache<StatefulSet>,
    replication_controllers: crate::cache::Cache<ReplicationController>,
    budgets: crate::cache::Cache<PodDisruptionBudget>,
    claims: crate::cache::Cache<PersistentVolumeClaim>,
    volumes: crate::cache::Cache<PersistentVolume>,
    classes: crate::cache::Cache<StorageClass>,
}

impl plugins::volume_binding::Volumes for Listers {
    fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims.get(&ObjectRef::new(name).within(namespace))
    }

    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.volumes.get(&ObjectRef::new(name))
    }

    fn volumes(&self) -> Vec<Arc<PersistentVolume>> {
        self.volumes.state()
    }

    fn class(&self, name: &str) -> Option<Arc<StorageClass>> {
        self.classes.get(&ObjectRef::new(name))
    }
}

impl Listers {
    async fn ready(&self) -> bool {
        self.services.ready().await.is_ok()
            && self.replica_sets.ready().await.is_ok()
            && self.stateful_sets.ready().await.is_ok()
            && self.replication_controllers.ready().await.is_ok()
            && self.budgets.ready().await.is_ok()
            && self.claims.ready().await.is_ok()
            && self.volumes.ready().await.is_ok()
            && self.classes.ready().await.is_ok()
    }

    /// Every PodDisruptionBudget, as preemption weighs them.
    fn budgets(&self) -> Vec<preemption::Budget> {
        self.budgets
            .state()
            .iter()
            .map(|pdb| preemption::Budget {
                namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
                selector: selector(pdb.spec.as_ref().and_then(|s| s.selector.as_ref())),
                allowed: pdb
                    .status
                    .as_ref()
                    .and_then(|s| s.disruptions_allowed)
                    .unwrap_or(0),
                disrupted: pdb
                    .status
                    .as_ref()
                    .and_then(|s| s.disrupted_pods.as_ref())
                    .map(|d| d.keys().cloned().collect())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// The selectors of the pod's Services and of its controller, merged (kube-scheduler's DefaultSelector).
    fn default_selector(&self, pod: &Pod) -> LabelSelector {
        let labels = PodLabels::of(pod);
        let services = self.services.state();
        let service_selectors = services
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(labels.namespace.as_str()))
            .filter_map(|s| s.spec.as_ref()?.selector.as_ref());
        let controller = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true));
        let controller_selector = controller.and_then(|owner| {
            let name = owner.name.as_str();
            let namespace = labels.namespace.as_str();
            match (owner.api_version.as_str(), owner.kind.as_str()) {
                ("apps/v1", "ReplicaSet") => {
                    let rs = self
                        .replica_sets
                        .get(&ObjectRef::new(name).within(namespace))?;
                    selector(Some(&rs.spec.selector))
                }
                ("apps/v1", "StatefulSet") => {
                    let set = self
                        .stateful_sets
                        .get(&ObjectRef::new(name).within(namespace))?;
                    selector(Some(&set.spec.selector))
                }
                ("v1", "ReplicationController") => {
                    let rc = self
                        .replication_controllers
                        .get(&ObjectRef::new(name).within(namespace))?;
                    let map = rc.spec.as_ref()?.selector.clone()?;
                    Some(LabelSelector(
                        map.into_iter()
                            .map(|(k, v)| Requirement::In(k, vec![v]))
                            .collect(),
                    ))
                }
                _ => None,
            }
        });
        plugins::pod_topology_spread::default_selector(
            &labels,
            service_selectors,
            controller_selector,
        )
    }
}

struct Context {
    client: kube::Client,
    events: Recorder,
    /// Nodes, what their pods hold, namespaces, and the pods this scheduler placed but has not seen bound yet.
    cache: Mutex<Cache>,
    listers: Listers,
    /// Whether the pod, node and namespace watches have each listed everything once.
    synced: tokio::sync::watch::Sender<[bool; 3]>,
}

/// What one scheduling attempt decided.
enum Decision {
    /// Write these choices for its claims, then bind to this node.
    Bind(String, Vec<plugins::volume_binding::VolumeBinding>),
    /// Fits nowhere; preempt these pods, or explain why preemption does not help.
    Unschedulable(FitError, Result<Preemption, String>),
}

/// Picks the node for a pod and assumes the pod there, or plans a preemption.
fn decide(ctx: &Context, pod: &Pod) -> Decision {
    let volumes = plugins::volume_binding::VolumeFilter::new(pod, &ctx.listers);
    let incoming = Incoming::new(pod, ctx.listers.default_selector(pod)).with_volumes(volumes);
    // Choosing and assuming under one lock: pods scheduled at once see each other.
    let mut cache = ctx.cache.lock().unwrap_or_else(|e| e.into_inner());
    match framework::find_node(&mut cache, &incoming) {
        Ok(node) => {
            if !incoming.uid.is_empty() {
                let placed = cache::Placed {
                    node: node.clone(),
                    ..incoming.placed.clone()
                };
                cache.assume(&incoming.uid, placed);
            }
            let bindings = cache
                .node(&node)
                .and_then(|n| n.node.as_deref())
                .map(|n| incoming.volumes.bindings(n))
                .unwrap_or_default();
            Decision::Bind(node, bindings)
        }
        Err(error) => {
            let preemption = preemption::plan(&cache, &incoming, &error, &ctx.listers.budgets());
            Decision::Unschedulable(error, preemption)
        }
    }
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

async fn bind(ctx: &Context, pod: &Pod, node: &str) -> Result<(), SchedulerError> {
    let (name, namespace) = (pod.name_any(), pod.namespace().unwrap_or_default());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
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
            ctx.events.record(
                pod,
                EventType::Normal,
                "Scheduled",
                &format!("Successfully assigned {namespace}/{name} to {node}"),
            );
            Ok(())
        }
        // Bound meanwhile (by another scheduler run, or the pod went away): nothing to do.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
            forget(ctx, pod);
            Ok(())
        }
        Err(e) => {
            forget(ctx, pod);
            Err(e.into())
        }
    }
}

/// The VolumeBinding plugin's PreBind: reserves the chosen volumes for their claims and tells provisioners
/// the node of the claims they are to make volumes for.
async fn bind_volumes(
    ctx: &Context,
    node: &str,
    bindings: &[plugins::volume_binding::VolumeBinding],
) -> Result<(), SchedulerError> {
    use plugins::volume_binding::VolumeBinding;
    for binding in bindings {
        match binding {
            VolumeBinding::Reserve {
                volume,
                namespace,
                claim,
                uid,
                resource_version,
            } => {
                let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
                let patch = serde_json::json!({"metadata": {"resourceVersion": resource_version},
                    "spec": {"claimRef": {"apiVersion": "v1",
                    "kind": "PersistentVolumeClaim", "namespace": namespace, "name": claim, "uid": uid}}});
                volumes
                    .patch(volume, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            VolumeBinding::SelectNode { namespace, claim } => {
                let claims: Api<PersistentVolumeClaim> =
                    Api::namespaced(ctx.client.clone(), namespace);
                let patch = serde_json::json!({"metadata": {"annotations": {
                    crate::api::storage::SELECTED_NODE: node}}});
                claims
                    .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
    }
    Ok(())
}

/// Deletes one victim as kube-scheduler does: a DisruptionTarget condition first, then the deletion (only of
/// that very pod), and a Preempted event.
async fn preempt(
    ctx: &Context,
    preemptor: &Pod,
    node: &str,
    victim: &preemption::Victim,
) -> Result<(), SchedulerError> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &victim.namespace);
    if !victim.terminating {
        let condition = serde_json::json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
            "message": "default-scheduler: preempting to accommodate a higher priority pod",
            "lastTransitionTime": jiff::Timestamp::now().to_string(),
        }]}});
        let deleted = match pods
            .patch_status(
                &victim.name,
                &PatchParams::default(),
                &Patch::Strategic(&condition),
            )
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 404 => true,
            other => other.map(|_| false)?,
        };
        if !deleted {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(victim.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match pods.delete(&victim.name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    tracing::info!(pod = %victim.name, namespace = %victim.namespace, node = %node, preemptor = %preemptor.name_any(), "preempted");
    let mut subject = Pod::default();
    subject.metadata.name = Some(victim.name.clone());
    subject.metadata.namespace = Some(victim.namespace.clone());
    subject.metadata.uid = Some(victim.uid.clone());
    ctx.events.record(
        &subject,
        EventType::Normal,
        "Preempted",
        &format!(
            "Preempted by pod {} on node {node}",
            preemptor.uid().unwrap_or_default()
        ),
    );
    Ok(())
}

/// Writes PodScheduled=False with the message (and the nominated node of a preemption), and a
/// FailedScheduling event, unless the pod already says so.
async fn mark_unschedulable(
    ctx: &Context,
    pod: &Pod,
    message: &str,
    nominated: Option<&str>,
) -> Result<(), SchedulerError> {
    let status = pod.status.as_ref();
    let already = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.message.as_deref() == Some(message)
            })
        });
    let nominated_now = status.and_then(|s| s.nominated_node_name.as_deref());
    if already && (nominated.is_none() || nominated == nominated_now) {
        return Ok(());
    }
    let mut patch = serde_json::json!({"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
        "lastTransitionTime": jiff::Timestamp::now().to_string(), "lastProbeTime": null,
    }]}});
    if let Some(node) = nominated {
        patch["status"]["nominatedNodeName"] = node.into();
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Strategic(&patch),
    )
    .await?;
    ctx.events
        .record(pod, EventType::Warning, "FailedScheduling", message);
    Ok(())
}

/// Carries out a decision: binds, or marks the pod unschedulable and preempts its victims.
async fn act(ctx: &Context, pod: &Pod, decision: Decision) -> Result<Outcome, SchedulerError> {
    match decision {
        Decision::Bind(node, bindings) => {
            if let Err(error) = bind_volumes(ctx, &node, &bindings).await {
                forget(ctx, pod);
                return Err(error);
            }
            bind(ctx, pod, &node).await?;
            Ok(Outcome::Scheduled)
        }
        Decision::Unschedulable(error, Ok(preemption)) => {
            mark_unschedulable(ctx, pod, &error.message(), Some(&preemption.node)).await?;
            for victim in &preemption.victims {
                preempt(ctx, pod, &preemption.node, victim).await?;
            }
            Ok(Outcome::Unschedulable)
        }
        Decision::Unschedulable(error, Err(why)) => {
            let message = if error.nodes == 0 {
                error.message()
            } else {
                format!("{} {why}.", error.message())
            };
            mark_unschedulable(ctx, pod, &message, None).await?;
            Ok(Outcome::Unschedulable)
        }
    }
}

/// One scheduling attempt's IO, ending in what the queue needs to know.
async fn attempt(
    ctx: Arc<Context>,
    key: String,
    pod: Arc<Pod>,
    decision: Decision,
    started: Instant,
) -> (String, Outcome) {
    let outcome = match act(&ctx, &pod, decision).await {
        Ok(outcome) => outcome,
        Err(error) => {
            tracing::warn!(%error, pod = %pod.name_any(), namespace = %pod.namespace().unwrap_or_default(), "scheduling failed");
            Outcome::Error
        }
    };
    metrics::metrics().attempted(outcome, started.elapsed());
    (key, outcome)
}

/// The queue's key of a pod.
fn key_of(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// Whether this scheduler should place the pod: it names this scheduler and is not being deleted.
fn is_ours(pod: &Pod) -> bool {
    let ours = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .is_none_or(|n| n == "default-scheduler");
    ours && pod.metadata.deletion_timestamp.is_none()
}

/// Puts a pending pod into the queue, or takes it out when it is no longer this scheduler's to place (bound,
/// deleted, or naming another scheduler).
fn enqueue(queue: &mut SchedulingQueue<Arc<Pod>>, change: Change<Pod>, now: Instant) {
    let (pod, exists) = match change {
        Change::Applied(pod) => (pod, true),
        Change::Deleted(pod) => (pod, false),
    };
    let key = key_of(&pod);
    let known = queue.get(&key);
    let pending = exists && is_ours(&pod) && !is_bound(&pod);
    let another = known.is_some_and(|old| old.metadata.uid != pod.metadata.uid);
    if !pending {
        // A deletion of an earlier pod of the same name leaves the new one queued.
        if exists || !another {
            queue.remove(&key);
        }
        return;
    }
    if another {
        // Deleted and made anew under the same name.
        queue.remove(&key);
    }
    // Its own status written (by this scheduler, say) is no reason to try it again; its spec or labels are.
    let changed = queue
        .get(&key)
        .is_none_or(|old| old.spec != pod.spec || old.metadata.labels != pod.metadata.labels);
    let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    // kube-scheduler's SchedulingGates PreEnqueue plugin: a gated pod waits apart, never tried.
    let gated = crate::api::kinds::is_scheduling_gated(pod.spec.as_ref());
    queue.upsert(&key, pod, priority, gated, changed, now);
}

/// Whether a pod has its node.
fn is_bound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

/// The scheduling loop: pops pods in priority order and decides for each in turn (one cache, so pods decided
/// one after another see each other), while up to BINDINGS_IN_FLIGHT decisions are carried out at once.
async fn schedule(
    ctx: Arc<Context>,
    pending: impl futures::Stream<Item = Change<Pod>>,
    mut woken: tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let mut pending = std::pin::pin!(pending);
    let mut queue: SchedulingQueue<Arc<Pod>> = SchedulingQueue::default();
    let mut attempts = FuturesUnordered::new();
    let (mut counted, mut stale) = (Instant::now() - METRICS_INTERVAL, true);
    loop {
        let now = Instant::now();
        queue.flush_unschedulable(now, RETRY);
        while attempts.len() < BINDINGS_IN_FLIGHT {
            let Some((key, pod)) = queue.pop(now) else {
                break;
            };
            let started = Instant::now();
            let decision = decide(&ctx, &pod);
            attempts.push(attempt(ctx.clone(), key, pod, decision, started));
        }
        // The queue sizes for /metrics, counted after changes and at most once a second (a count walks every
        // queued pod).
        if stale && now >= counted + METRICS_INTERVAL {
            (counted, stale) = (now, false);
            metrics::metrics().queued(queue.places());
        }
        // With every binding slot taken, a backoff that ends changes nothing until an attempt does.
        let deadline = (attempts.len() < BINDINGS_IN_FLIGHT)
            .then(|| queue.next_deadline(RETRY))
            .flatten();
        let deadline = match (deadline, stale.then_some(counted + METRICS_INTERVAL)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let wait = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            change = pending.next() => {
                let mut change = change;
                // Every change already delivered goes in before the next decision: at the start, every pod
                // the informer holds, so the pods that were waiting are taken by priority, not in the order a
                // list happens to give them.
                loop {
                    match change {
                        Some(change) => enqueue(&mut queue, change, Instant::now()),
                        None => return,
                    }
                    match pending.next().now_or_never() {
                        Some(next) => change = next,
                        None => break,
                    }
                }
            }
            Some(()) = woken.recv() => {
                // One pass for a burst of changes.
                while woken.try_recv().is_ok() {}
                queue.move_all(Instant::now());
            }
            Some((key, outcome)) = attempts.next(), if !attempts.is_empty() => {
                queue.done(&key, outcome, Instant::now());
            }
            () = wait => {}
        }
        stale = true;
    }
}

/// Feeds one watch into the scheduler's cache, marking `synced[slot]` at its first complete list and calling
/// `wake` on every event that may let a waiting pod fit.
fn feed<K: crate::cache::Cacheable>(
    ctx: Arc<Context>,
    api: Api<K>,
    slot: usize,
    apply: fn(&mut Cache, &watcher::Event<K>),
    wakes: fn(&watcher::Event<K>) -> bool,
    wake: tokio::sync::mpsc::UnboundedSender<()>,
) {
    let events = watcher(api, watcher::Config::default()).default_backoff();
    tokio::spawn(events.for_each(move |event| {
        if let Ok(event) = event {
            apply(
                &mut ctx.cache.lock().unwrap_or_else(|e| e.into_inner()),
                &event,
            );
            if matches!(event, watcher::Event::InitDone) {
                ctx.synced.send_modify(|s| s[slot] = true);
            }
            if wakes(&event) {
                let _ = wake.send(());
            }
        }
        async {}
    }));
}

/// Feeds a shared informer's changes into the scheduler's cache, marking `synced[slot]` once the objects it
/// held are in, and calling `wake` on every change that may let a waiting pod fit.
fn follow<K: crate::cache::Cacheable>(
    ctx: Arc<Context>,
    informer: &Informer<K>,
    slot: usize,
    apply: fn(&mut Cache, &Change<K>),
    wakes: fn(&Change<K>) -> bool,
    wake: tokio::sync::mpsc::UnboundedSender<()>,
) {
    let cached = informer.cache();
    let changes = informer.subscribe_changes();
    tokio::spawn(async move {
        if cached.ready().await.is_err() {
            return;
        }
        let mut changes = std::pin::pin!(changes);
        let take = |change: Change<K>| {
            apply(
                &mut ctx.cache.lock().unwrap_or_else(|e| e.into_inner()),
                &change,
            );
            if wakes(&change) {
                let _ = wake.send(());
            }
        };
        loop {
            // Everything delivered so far goes in at once; the first time, every object the informer held.
            while let Some(Some(change)) = changes.next().now_or_never() {
                take(change);
            }
            ctx.synced
                .send_if_modified(|synced| !std::mem::replace(&mut synced[slot], true));
            match changes.next().await {
                Some(change) => take(change),
                None => return,
            }
        }
    });
}

/// A pod change that can free room: a deletion, or a pod that finished.
fn frees_room(change: &Change<Pod>) -> bool {
    match change {
        Change::Deleted(_) => true,
        Change::Applied(pod) => cache::placed(pod).is_none() && is_bound(pod),
    }
}

/// A cache of every object of a kind, kept by a watch of its own.
fn reflected<K: crate::cache::Cacheable>(api: Api<K>) -> crate::cache::Cache<K> {
    let (cache, events) = crate::cache::reflect(api, watcher::Config::default());
    tokio::spawn(events.for_each(|_| async {}));
    cache
}

/// Runs the scheduler until the process ends.
pub fn run(
    client: kube::Client,
    informers: Arc<Informers>,
) -> wasmkube_core::EntryFuture<'static, ()> {
    Box::pin(run_scheduler(client, informers))
}

async fn run_scheduler(client: kube::Client, informers: Arc<Informers>) {
    let listers = Listers {
        services: reflected(Api::all(client.clone())),
        replica_sets: reflected(Api::all(client.clone())),
        stateful_sets: reflected(Api::all(client.clone())),
        replication_controllers: reflected(Api::all(client.clone())),
        budgets: reflected(Api::all(client.clone())),
        claims: reflected(Api::all(client.clone())),
        volumes: reflected(Api::all(client.clone())),
        classes: reflected(Api::all(client.clone())),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        events: Recorder::new(client.clone(), "default-scheduler"),
        cache: Mutex::new(Cache::default()),
        listers,
        synced: tokio::sync::watch::channel([false; 3]).0,
    });
    // Unschedulable pods are tried again when a node changes or a pod frees room, and every RETRY anyway.
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel::<()>();
    follow(
        ctx.clone(),
        informers.pods(),
        0,
        Cache::pod_changed,
        frees_room,
        wake.clone(),
    );
    follow(
        ctx.clone(),
        informers.nodes(),
        1,
        Cache::node_changed,
        |change| matches!(change, Change::Applied(_)),
        wake.clone(),
    );
    feed(
        ctx.clone(),
        Api::<Namespace>::all(client.clone()),
        2,
        Cache::apply_namespace,
        |_| false,
        wake,
    );
    let mut synced = ctx.synced.subscribe();
    if synced.wait_for(|s| s.iter().all(|s| *s)).await.is_err() || !ctx.listers.ready().await {
        tracing::error!(error = %SchedulerError::NotReady, "scheduler stopped");
        return;
    }
    tracing::info!("scheduler running");
    // The pending pods come from the same informer: a subscription of the scheduling loop's own.
    let pending = informers.pods().subscribe_changes();
    schedule(ctx, pending, woken).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, node: Option<&str>) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web", "namespace": "default", "uid": uid},
                "spec": {"nodeName": node, "containers": [{"name": "c"}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn the_queue_holds_a_pod_while_it_waits_for_a_node() {
        let now = Instant::now();
        let mut queue = SchedulingQueue::default();
        let queued = |queue: &SchedulingQueue<Arc<Pod>>| {
            queue
                .get("default/web")
                .map(|p| p.metadata.uid.clone().unwrap_or_default())
        };
        enqueue(&mut queue, Change::Applied(pod("1", None)), now);
        assert_eq!(queued(&queue).as_deref(), Some("1"));
        // Bound (by this scheduler or another): no longer waiting.
        enqueue(&mut queue, Change::Applied(pod("1", Some("n1"))), now);
        assert_eq!(queued(&queue), None);
        // Made again under its name; the earlier pod's deletion, seen after, leaves the new one waiting.
        enqueue(&mut queue, Change::Applied(pod("2", None)), now);
        enqueue(&mut queue, Change::Deleted(pod("1", Some("n1"))), now);
        assert_eq!(queued(&queue).as_deref(), Some("2"));
        enqueue(&mut queue, Change::Deleted(pod("2", None)), now);
        assert_eq!(queued(&queue), None);
    }
}
