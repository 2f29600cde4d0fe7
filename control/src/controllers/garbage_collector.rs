//! The garbage collector: keeps a graph of every object's owner references, fed by watches of every kind (the
//! pods by the process's shared pod informer, which has decoded them already), and plans from it, purely,
//! what Kubernetes' collector does: dependents whose owners are all gone are deleted
//! (background propagation), dangling references are dropped, an owner deleted with `Foreground` waits for its
//! dependents to go first, and one deleted with `Orphan` lets them go free.

use super::api_resource;
use crate::api::resources::{self, ResourceType};
use crate::cache::Change;
use crate::informers::Informers;
use futures::{FutureExt, StreamExt, stream};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, DynamicObject, Preconditions, PropagationPolicy};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// The finalizer of an owner deleted with `propagationPolicy=Foreground`.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an owner deleted with `propagationPolicy=Orphan`.
pub const ORPHAN: &str = "orphan";

/// How often the graph is looked at even without changes.
const RESYNC: Duration = Duration::from_secs(5);
/// An action is not repeated sooner than this while its effect has not reached the graph.
const REPEAT_AFTER: Duration = Duration::from_secs(1);
/// Actions carried out at once.
const PARALLEL: usize = 32;

/// One object as the collector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Index of its kind in [`resources::all`].
    pub kind: usize,
    /// Its namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Its owner references.
    pub owners: Vec<OwnerReference>,
    /// Whether it has a deletionTimestamp.
    pub deleting: bool,
    /// Its finalizers.
    pub finalizers: Vec<String>,
}

/// Every object of the cluster by uid, and which kinds have been listed completely.
#[derive(Debug, Default)]
pub struct Graph {
    objects: HashMap<String, Node>,
    synced: HashSet<usize>,
    /// uids seen during a relist of a kind, to drop the ones that vanished meanwhile.
    relisting: HashMap<usize, HashSet<String>>,
}

/// What the collector does to one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Delete it: all its owners are gone, or its owner is being deleted in the foreground.
    Delete {
        /// Its uid.
        uid: String,
        /// Delete its own dependents first (an owner's foreground deletion cascades).
        foreground: bool,
    },
    /// Remove references to owners that are gone (or that orphan it).
    DropOwners {
        /// Its uid.
        uid: String,
        /// The owners to forget.
        owners: Vec<String>,
    },
    /// Remove a propagation finalizer: its dependents are dealt with.
    Finalize {
        /// Its uid.
        uid: String,
        /// [`FOREGROUND`] or [`ORPHAN`].
        finalizer: &'static str,
    },
}

impl Graph {
    /// Whether every kind has been listed once.
    pub fn synced(&self) -> bool {
        self.synced.len() == resources::stored().len()
    }

    /// Takes one watch event of kind `kind`.
    pub fn apply(&mut self, kind: usize, event: Event<DynamicObject>) {
        match event {
            Event::Init => {
                self.relisting.insert(kind, HashSet::new());
            }
            Event::InitApply(object) => {
                if let Some(seen) = self.relisting.get_mut(&kind) {
                    seen.insert(object.uid().unwrap_or_default());
                }
                self.put(kind, &object);
            }
            Event::InitDone => {
                let seen = self.relisting.remove(&kind).unwrap_or_default();
                self.objects
                    .retain(|uid, node| node.kind != kind || seen.contains(uid));
                self.synced.insert(kind);
            }
            Event::Apply(object) => self.put(kind, &object),
            Event::Delete(object) => {
                self.objects.remove(&object.uid().unwrap_or_default());
            }
        }
    }

    /// Takes one change of an informer of kind `kind` (which reports objects that vanished while its watch was
    /// down as deleted).
    pub fn changed<K: Resource>(&mut self, kind: usize, change: &Change<K>) {
        match change {
            Change::Applied(object) => self.put(kind, object.as_ref()),
            Change::Deleted(object) => {
                self.objects.remove(&object.uid().unwrap_or_default());
            }
        }
    }

    fn put<K: Resource>(&mut self, kind: usize, object: &K) {
        let Some(uid) = object.uid() else { return };
        let node = Node {
            kind,
            namespace: object.namespace(),
            name: object.name_any(),
            owners: object.owner_references().to_vec(),
            deleting: object.meta().deletion_timestamp.is_some(),
            finalizers: object.finalizers().to_vec(),
        };
        self.objects.insert(uid, node);
    }

    /// Marks kind `kind` listed (its informer is ready and its objects are in).
    fn kind_synced(&mut self, kind: usize) {
        self.synced.insert(kind);
    }

    /// Inserts an object directly (for tests and tools).
    pub fn insert(&mut self, uid: &str, node: Node) {
        self.objects.insert(uid.to_owned(), node);
    }

    /// Marks every kind listed.
    pub fn mark_synced(&mut self) {
        self.synced = (0..resources::stored().len()).collect();
    }

    fn get(&self, uid: &str) -> Option<&Node> {
        self.objects.get(uid)
    }
}

/// What the collector should do now, from the graph alone.
pub fn plan(graph: &Graph) -> Vec<Action> {
    if !graph.synced() {
        return Vec::new();
    }
    let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
    for (uid, node) in &graph.objects {
        for owner in &node.owners {
            dependents.entry(owner.uid.as_str()).or_default().push(uid);
        }
    }
    let mut actions = Vec::new();
    for (uid, node) in &graph.objects {
        // Owners that are gone, or that sit in another namespace (a reference cannot cross namespaces).
        let missing: Vec<String> = node
            .owners
            .iter()
            .filter(|r| {
                graph.get(&r.uid).is_none_or(|owner| {
                    owner.namespace.is_some() && owner.namespace != node.namespace
                })
            })
            .map(|r| r.uid.clone())
            .collect();
        if !node.owners.is_empty() && missing.len() == node.owners.len() {
            if !node.deleting {
                actions.push(Action::Delete {
                    uid: uid.clone(),
                    foreground: false,
                });
            }
        } else if !missing.is_empty() {
            actions.push(Action::DropOwners {
                uid: uid.clone(),
                owners: missing,
            });
        }
        if !node.deleting {
            continue;
        }
        let mine = dependents.get(uid.as_str()).cloned().unwrap_or_default();
        if node.finalizers.iter().any(|f| f == ORPHAN) {
            for dependent in &mine {
                actions.push(Action::DropOwners {
                    uid: (*dependent).to_owned(),
                    owners: vec![uid.clone()],
                });
            }
            if mine.is_empty() {
                actions.push(Action::Finalize {
                    uid: uid.clone(),
                    finalizer: ORPHAN,
                });
            }
        } else if node.finalizers.iter().any(|f| f == FOREGROUND) {
            for dependent in &mine {
                if graph.get(dependent).is_some_and(|d| !d.deleting) {
                    actions.push(Action::Delete {
                        uid: (*dependent).to_owned(),
                        foreground: true,
                    });
                }
            }
            if mine.is_empty() {
                actions.push(Action::Finalize {
                    uid: uid.clone(),
                    finalizer: FOREGROUND,
                });
            }
        }
    }
    actions
}

fn api_for(
    client: &kube::Client,
    resource: &ResourceType,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let ar = api_resource(resource);
    match namespace {
        Some(ns) if resource.namespaced => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

/// Whether an owner really is gone, asked of the apiserver (the graph may be behind).
async fn owner_gone(
    client: &kube::Client,
    namespace: Option<&str>,
    owner: &OwnerReference,
) -> bool {
    let Some(resource) = resources::by_kind(&owner.api_version, &owner.kind) else {
        // A kind this cluster does not serve: leave the dependent alone.
        return false;
    };
    match api_for(client, resource, namespace)
        .get_opt(&owner.name)
        .await
    {
        Ok(None) => true,
        Ok(Some(found)) => found.uid().as_deref() != Some(owner.uid.as_str()),
        Err(_) => false,
    }
}

/// Carries out one action against the live object.
async fn execute(
    client: kube::Client,
    node: Node,
    uid: String,
    action: Action,
) -> Result<(), kube::Error> {
    let resource = &resources::stored()[node.kind];
    let api = api_for(&client, resource, node.namespace.as_deref());
    match action {
        Action::Delete { foreground, .. } => {
            if !foreground {
                for owner in &node.owners {
                    if !owner_gone(&client, node.namespace.as_deref(), owner).await {
                        return Ok(());
                    }
                }
            }
            let params = DeleteParams {
                propagation_policy: Some(if foreground {
                    PropagationPolicy::Foreground
                } else {
                    PropagationPolicy::Background
                }),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            tracing::info!(kind = resource.kind, namespace = ?node.namespace, name = %node.name, "deleting a dependent");
            api.delete(&node.name, &params).await.map(|_| ())
        }
        Action::DropOwners { owners, .. } => {
            let Some(live) = api.get_opt(&node.name).await? else {
                return Ok(());
            };
            let kept: Vec<&OwnerReference> = live
                .owner_references()
                .iter()
                .filter(|r| !owners.contains(&r.uid))
                .collect();
            let patch = serde_json::json!({"metadata": {"ownerReferences": kept, "resourceVersion": live.resource_version()}});
            super::merge_patch(&api, &node.name, &patch)
                .await
                .map(|_| ())
        }
        Action::Finalize { finalizer, .. } => {
            let Some(live) = api.get_opt(&node.name).await? else {
                return Ok(());
            };
            let kept: Vec<&String> = live
                .finalizers()
                .iter()
                .filter(|f| *f != finalizer)
                .collect();
            let patch = serde_json::json!({"metadata": {"finalizers": kept, "resourceVersion": live.resource_version()}});
            super::merge_patch(&api, &node.name, &patch)
                .await
                .map(|_| ())
        }
    }
}

/// Whether a watch event can call for an action: an object without owners, finalizers or a deletion (a node's
/// heartbeat, an Event, a Lease renewal) changing cannot, so it does not cost a scan of every object (at 10,000
/// pods, a quarter of a core while idle). Deletions, relists and everything else can.
fn may_change_the_plan(event: &Event<DynamicObject>) -> bool {
    match event {
        Event::Apply(object) | Event::InitApply(object) => may_act_on(object),
        Event::Delete(_) | Event::Init | Event::InitDone => true,
    }
}

/// [`may_change_the_plan`] for an informer's change.
fn change_may_change_the_plan<K: Resource>(change: &Change<K>) -> bool {
    match change {
        Change::Applied(object) => may_act_on(object.as_ref()),
        Change::Deleted(_) => true,
    }
}

/// Whether the collector could act on this object as it is: it has owners, finalizers or a deletion.
fn may_act_on<K: Resource>(object: &K) -> bool {
    !object.owner_references().is_empty()
        || !object.finalizers().is_empty()
        || object.meta().deletion_timestamp.is_some()
}

fn uid_of(action: &Action) -> &str {
    match action {
        Action::Delete { uid, .. }
        | Action::DropOwners { uid, .. }
        | Action::Finalize { uid, .. } => uid,
    }
}

/// Runs the collector until the process ends.
pub async fn run(client: kube::Client, informers: &Informers) {
    let Some(pod_kind) = resources::stored()
        .iter()
        .position(|r| r.group.is_empty() && r.kind == "Pod")
    else {
        tracing::error!("garbage collector stopped: pods are not a stored kind");
        return;
    };
    let pods = informers.pods();
    let (pod_cache, pod_changes) = (pods.cache(), pods.subscribe_changes());
    let mut pod_changes = std::pin::pin!(pod_changes);
    let mut pods_synced = false;
    let watches = resources::stored()
        .iter()
        .enumerate()
        .filter(|(kind, _)| *kind != pod_kind)
        .map(|(kind, resource)| {
            watcher::watcher(
                Api::<DynamicObject>::all_with(client.clone(), &api_resource(resource)),
                watcher::Config::default(),
            )
            .default_backoff()
            .map(move |event| (kind, event))
            .boxed()
        });
    let mut events = stream::select_all(watches);
    let mut graph = Graph::default();
    let mut issued: HashMap<Action, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let (mut dirty, mut last_scan) = (false, Instant::now());
    loop {
        tokio::select! {
            Some((kind, event)) = events.next() => {
                match event {
                    Ok(event) => {
                        dirty |= may_change_the_plan(&event);
                        graph.apply(kind, event);
                    }
                    Err(error) => tracing::debug!(%error, "garbage collector watch failed; retrying"),
                }
            }
            Some(change) = pod_changes.next() => {
                dirty |= change_may_change_the_plan(&change);
                graph.changed(pod_kind, &change);
            }
            Ok(()) = pod_cache.ready(), if !pods_synced => {
                // Every pod the informer held is waiting in the subscription by now: in before the kind counts
                // as listed, or a pod's owner could look gone.
                while let Some(Some(change)) = pod_changes.next().now_or_never() {
                    graph.changed(pod_kind, &change);
                }
                graph.kind_synced(pod_kind);
                (pods_synced, dirty) = (true, true);
            }
            _ = tick.tick() => {
                if !(dirty || last_scan.elapsed() > RESYNC) {
                    continue;
                }
                (dirty, last_scan) = (false, Instant::now());
                issued.retain(|_, at| at.elapsed() < REPEAT_AFTER);
                let actions: Vec<(Node, Action)> = plan(&graph)
                    .into_iter()
                    .filter(|a| !issued.contains_key(a))
                    .filter_map(|a| graph.get(uid_of(&a)).cloned().map(|n| (n, a)))
                    .collect();
                for (_, action) in &actions {
                    issued.insert(action.clone(), Instant::now());
                }
                let client = client.clone();
                tokio::spawn(stream::iter(actions).for_each_concurrent(PARALLEL, move |(node, action)| {
                    let client = client.clone();
                    async move {
                        let uid = uid_of(&action).to_owned();
                        match execute(client, node, uid, action).await {
                            Ok(()) => {}
                            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
                            Err(error) => tracing::warn!(%error, "garbage collection step failed"),
                        }
                    }
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use std::sync::Arc;

    #[test]
    fn pods_from_the_shared_informer_enter_and_leave_the_graph() {
        let pod = |owners: serde_json::Value| -> Arc<Pod> {
            Arc::new(
                serde_json::from_value(
                    serde_json::json!({"metadata": {"name": "p", "namespace": "ns",
                    "uid": "u", "ownerReferences": owners}}),
                )
                .unwrap(),
            )
        };
        let owned = pod(
            serde_json::json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": "rs", "uid": "o"}]),
        );
        let mut graph = Graph::default();
        assert!(change_may_change_the_plan(&Change::Applied(owned.clone())));
        graph.changed(3, &Change::Applied(owned.clone()));
        let node = graph.get("u").unwrap();
        assert_eq!(
            (node.kind, node.name.as_str(), node.owners.len()),
            (3, "p", 1)
        );
        assert!(!change_may_change_the_plan(&Change::Applied(pod(
            serde_json::json!([])
        ))));
        assert!(change_may_change_the_plan(&Change::Deleted(owned.clone())));
        graph.changed(3, &Change::Deleted(owned));
        assert!(graph.get("u").is_none());
    }

    #[test]
    fn only_changes_of_owned_finalized_or_deleted_objects_call_for_a_scan() {
        let object = |extra: serde_json::Value| -> DynamicObject {
            let mut value = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "uid": "u"}});
            if let (Some(meta), Some(extra)) =
                (value["metadata"].as_object_mut(), extra.as_object())
            {
                meta.extend(extra.clone());
            }
            serde_json::from_value(value).unwrap()
        };
        let heartbeat = object(serde_json::json!({}));
        assert!(!may_change_the_plan(&Event::Apply(heartbeat.clone())));
        assert!(may_change_the_plan(&Event::Delete(heartbeat)));
        let owned = object(
            serde_json::json!({"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "o"}]}),
        );
        assert!(may_change_the_plan(&Event::Apply(owned)));
        let deleting = object(serde_json::json!({"deletionTimestamp": "2026-12-06T00:00:00Z"}));
        assert!(may_change_the_plan(&Event::Apply(deleting)));
        let finalized = object(serde_json::json!({"finalizers": ["foregroundDeletion"]}));
        assert!(may_change_the_plan(&Event::InitApply(finalized)));
    }

    fn kind(name: &str) -> usize {
        resources::stored()
            .iter()
            .position(|r| r.kind == name)
            .unwrap()
    }

    fn node(kind_name: &str, name: &str, owners: &[&str]) -> Node {
        Node {
            kind: kind(kind_name),
            namespace: Some("default".into()),
            name: name.into(),
            owners: owners
                .iter()
                .map(|uid| OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: "rs".into(),
                    uid: (*uid).into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                })
                .collect(),
            deleting: false,
            finalizers: Vec::new(),
        }
    }

    #[test]
    fn nothing_happens_before_every_kind_is_listed() {
        let mut graph = Graph::default();
        graph.insert("p", node("Pod", "p", &["gone"]));
        assert!(plan(&graph).is_empty());
    }

    #[test]
    fn dependents_of_gone_owners_are_deleted_and_dangling_references_dropped() {
        let mut graph = Graph::default();
        graph.mark_synced();
        graph.insert("rs", node("ReplicaSet", "rs", &[]));
        graph.insert("orphaned", node("Pod", "a", &["gone"]));
        graph.insert("half", node("Pod", "b", &["rs", "gone"]));
        graph.insert("owned", node("Pod", "c", &["rs"]));
        let mut actions = plan(&graph);
        actions.sort_by_key(|a| uid_of(a).to_owned());
        assert_eq!(
            actions,
            vec![
                Action::DropOwners {
                    uid: "half".into(),
                    owners: vec!["gone".into()]
                },
                Action::Delete {
                    uid: "orphaned".into(),
                    foreground: false
                },
            ]
        );
    }

    #[test]
    fn foreground_owners_wait_for_their_dependents_and_orphaning_owners_free_them() {
        let mut graph = Graph::default();
        graph.mark_synced();
        let mut fg = node("ReplicaSet", "fg", &[]);
        fg.deleting = true;
        fg.finalizers = vec![FOREGROUND.into()];
        graph.insert("fg", fg.clone());
        graph.insert("child", node("Pod", "a", &["fg"]));
        let mut orphaning = node("ReplicaSet", "or", &[]);
        orphaning.deleting = true;
        orphaning.finalizers = vec![ORPHAN.into()];
        graph.insert("or", orphaning);
        graph.insert("freed", node("Pod", "b", &["or"]));
        let actions = plan(&graph);
        assert!(actions.contains(&Action::Delete {
            uid: "child".into(),
            foreground: true
        }));
        assert!(actions.contains(&Action::DropOwners {
            uid: "freed".into(),
            owners: vec!["or".into()]
        }));
        assert!(!actions.iter().any(|a| matches!(a, Action::Finalize { .. })));

        let mut graph = Graph::default();
        graph.mark_synced();
        graph.insert("fg", fg);
        assert_eq!(
            plan(&graph),
            vec![Action::Finalize {
                uid: "fg".into(),
                finalizer: FOREGROUND
            }]
        );
    }
}
