//! The controller-manager: level-triggered reconcile loops over the API. Each controller is a small reconcile
//! function run by kube-runtime's Controller (watch → deduplicating queue → reconcile → retry), talking to the
//! rest of the cluster only through the apiserver.

pub mod autoscaling;
pub mod certificates;
mod controller_loop;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod garbage_collector;
pub mod job;
mod metrics;
pub mod namespace;
mod namespace_object;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod ownership;
pub mod pod_gc;
pub mod pods;
pub mod replicaset;
pub mod resource_quota;
pub mod rollout;
pub mod root_ca;
pub mod service_accounts;
pub mod statefulset;
pub mod token_cleaner;
pub mod volumes;

use crate::cache::{Cache, Cacheable};
use crate::informers::Informers;
use futures::Stream;
use ipnet::Ipv4Net;
use kube::runtime::controller::Action;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

/// The controllers' settings.
#[derive(Debug, Clone)]
pub struct ControllersConfig {
    /// The range every pod address comes from; each node gets a slice of it as its podCIDR.
    pub cluster_cidr: Ipv4Net,
    /// The prefix length of each node's podCIDR (24: 254 addresses a node).
    pub node_cidr_mask: u8,
    /// How long a node's agent may be silent before the node is NotReady and its pods are evicted.
    pub node_monitor_grace: Duration,
    /// The delay before a Job's first retry after a failed pod (doubling after each failure).
    pub job_backoff: Duration,
    /// How long a node must be missing before the pods bound to it are deleted.
    pub pod_gc_quarantine: Duration,
    /// The CA that signs approved client certificate requests (none: requests wait for another signer).
    pub signer: Option<Arc<crate::pki::ClusterCa>>,
    /// How often each HorizontalPodAutoscaler looks at its metrics.
    pub hpa_sync_period: Duration,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        Self {
            cluster_cidr: Ipv4Net::new(std::net::Ipv4Addr::new(127, 42, 0, 0), 16)
                .unwrap_or_default(),
            node_cidr_mask: 24,
            node_monitor_grace: Duration::from_secs(10),
            job_backoff: Duration::from_secs(10),
            pod_gc_quarantine: Duration::from_secs(40),
            signer: None,
            hpa_sync_period: Duration::from_secs(15),
        }
    }
}

/// Why one reconcile failed; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The apiserver refused or could not be reached.
    #[error("apiserver request failed: {0}")]
    Api(#[from] kube::Error),
    /// The cache has not synced yet.
    #[error("the cache is not ready yet")]
    NotReady,
    /// A resource (addresses, names) ran out.
    #[error("{0}")]
    Exhausted(String),
    /// An object the controller acts on cannot be used as it is (a selector that does not parse).
    #[error("{0}")]
    Invalid(String),
}

/// Runs every controller until the process ends.
pub fn run(
    client: kube::Client,
    config: ControllersConfig,
    informers: Arc<Informers>,
) -> wasmkube_core::EntryFuture<'static, ()> {
    Box::pin(run_all(client, config, informers))
}

async fn run_all(client: kube::Client, config: ControllersConfig, informers: Arc<Informers>) {
    tracing::info!("controllers running");
    tokio::join!(
        node_ipam::run(client.clone(), config.clone()),
        replicaset::run(client.clone(), &informers),
        deployment::run(client.clone()),
        garbage_collector::run(client.clone(), &informers),
        namespace::run(client.clone()),
        endpoints::run(client.clone(), &informers),
        node_lifecycle::run(client.clone(), &informers, config.node_monitor_grace),
        pod_gc::run(client.clone(), &informers, config.pod_gc_quarantine),
        job::run(client.clone(), &informers, config.job_backoff),
        daemonset::run(client.clone(), &informers),
        statefulset::run(client.clone(), &informers),
        cronjob::run(client.clone()),
        resource_quota::run(client.clone(), &informers),
        disruption::run(client.clone(), &informers),
        autoscaling::run(client.clone(), &informers, config.hpa_sync_period),
        service_accounts::run(client.clone()),
        token_cleaner::run(client.clone()),
        volumes::run(client.clone(), &informers),
        async {
            if let Some(ca) = config.signer.clone() {
                tokio::join!(
                    root_ca::run(client.clone(), ca.cert_pem().to_owned()),
                    certificates::run(client.clone(), ca),
                );
            }
        },
    );
}

/// A cache of every object of one kind, and the stream of its changes (which keeps the cache current while a
/// controller consumes it as a trigger).
fn reflect<K: Cacheable>(
    api: Api<K>,
) -> (
    Cache<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
) {
    reflect_with(api, watcher::Config::default())
}

/// [`reflect`] of the objects `config` selects.
fn reflect_with<K: Cacheable>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Cache<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
) {
    let (cache, events) = crate::cache::reflect(api, config);
    (cache, events.touched_objects())
}

/// The cached objects of one namespace, once the cache has synced.
async fn cached_in<K>(cache: &Cache<K>, namespace: &str) -> Result<Vec<Arc<K>>, ControllerError>
where
    K: Resource<DynamicType = ()> + Clone,
{
    cache.ready().await.map_err(|_| ControllerError::NotReady)?;
    Ok(cache
        .state()
        .into_iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
        .collect())
}

/// The dynamic-API description of one of the served resource types.
fn api_resource(resource: &crate::api::resources::ResourceType) -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: resource.group.into(),
        version: resource.version.into(),
        api_version: resource.api_version(),
        kind: resource.kind.into(),
        plural: resource.plural.into(),
    }
}

/// Writes an object's status when it differs from the one it shows.
async fn write_status<K, S>(
    api: &Api<K>,
    name: &str,
    shown: Option<&S>,
    status: &S,
) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: PartialEq + serde::Serialize,
{
    if shown == Some(status) {
        return Ok(());
    }
    let mut fields = serde_json::to_value(status).map_err(kube::Error::SerdeError)?;
    // A merge patch keeps what it does not name: fields the new status no longer has are nulled, so a
    // CronJob's `active` list, say, empties when its last Job finishes.
    if let (Some(new), Some(serde_json::Value::Object(old))) = (
        fields.as_object_mut(),
        shown.and_then(|s| serde_json::to_value(s).ok()),
    ) {
        for (key, _) in old {
            new.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    let patch = serde_json::json!({ "status": fields });
    api.patch_status(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
}

/// Applies a JSON merge patch to one object.
async fn merge_patch<K>(
    api: &Api<K>,
    name: &str,
    patch: &serde_json::Value,
) -> Result<K, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(patch),
    )
    .await
}

/// How long a controller waits for the cache to show its own writes before it acts again anyway.
const EXPECTATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Writes a controller made that its cache has not shown yet, per owner key: it must not act on a cache that
/// is behind its own writes (creating the same pods twice), as Kubernetes' controller expectations.
#[derive(Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    created: HashSet<String>,
    deleted: HashSet<String>,
    since: Instant,
}

impl Expectations {
    /// Remembers objects created for `key`, by name.
    pub fn expect_created(&self, key: &str, names: Vec<String>) {
        self.with(key, |p| p.created.extend(names));
    }

    /// Remembers objects deleted for `key`, by name.
    pub fn expect_deleted(&self, key: &str, names: Vec<String>) {
        self.with(key, |p| p.deleted.extend(names));
    }

    fn with(&self, key: &str, change: impl FnOnce(&mut Pending)) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pending.entry(key.to_owned()).or_insert_with(|| Pending {
            created: HashSet::new(),
            deleted: HashSet::new(),
            since: Instant::now(),
        });
        change(entry);
    }

    /// Whether the cache (`seen`, the objects of the owner's namespace) shows every write made for `key`: each
    /// created object present, each deleted one gone or being deleted. Satisfied expectations are forgotten.
    pub fn satisfied<K: Resource>(&self, key: &str, seen: &[Arc<K>]) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = pending.get_mut(key) else {
            return true;
        };
        let present = |name: &str| {
            seen.iter()
                .find(|o| o.meta().name.as_deref() == Some(name))
                .map(|o| o.meta().deletion_timestamp.is_none())
        };
        entry.created.retain(|name| present(name).is_none());
        entry.deleted.retain(|name| present(name) == Some(true));
        let done = entry.created.is_empty() && entry.deleted.is_empty();
        if done || entry.since.elapsed() > EXPECTATION_TIMEOUT {
            pending.remove(key);
            return true;
        }
        false
    }
}

/// How soon a failed reconcile is tried again: conflicts (someone else wrote first) at once, others after a
/// pause.
fn retry_after(error: &ControllerError) -> Action {
    match error {
        ControllerError::Api(kube::Error::Api(e)) if e.code == 409 => {
            Action::requeue(Duration::from_millis(50))
        }
        _ => Action::requeue(Duration::from_secs(1)),
    }
}
