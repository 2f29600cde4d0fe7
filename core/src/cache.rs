//! A reflector's store with a readiness signal that any number of tasks can wait on.
//!
//! kube-runtime's `Store::wait_until_ready` keeps one oneshot receiver behind a mutex, and a oneshot receiver
//! keeps one waker: when several tasks wait at once (concurrent reconciles of a controller, pods starting
//! together), only the last to poll is woken when the store fills, and the others wait forever. Seen as a
//! ReplicaSet that a newly elected controller-manager never scaled down. Here readiness is a
//! `tokio::sync::watch`, set when the reflector has applied the first complete list.

use futures::{Stream, StreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

/// The cache closed before it was ready (its watch stream was dropped).
#[derive(Debug, thiserror::Error)]
#[error("the cache closed before it filled")]
pub struct CacheClosed;

/// A reflector store and whether it holds a complete list yet.
pub struct Cache<K: 'static + Resource<DynamicType = ()> + Clone> {
    store: Store<K>,
    ready: tokio::sync::watch::Receiver<bool>,
}

impl<K: 'static + Resource<DynamicType = ()> + Clone> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<K: 'static + Resource<DynamicType = ()> + Clone> Deref for Cache<K> {
    type Target = Store<K>;

    fn deref(&self) -> &Store<K> {
        &self.store
    }
}

impl<K: 'static + Resource<DynamicType = ()> + Clone> Cache<K> {
    /// Waits until the store holds a complete list.
    pub async fn ready(&self) -> Result<(), CacheClosed> {
        self.ready
            .clone()
            .wait_for(|ready| *ready)
            .await
            .map(|_| ())
            .map_err(|_| CacheClosed)
    }

    /// The store itself (what kube-runtime's `Controller::for_stream` reads).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Whether the store holds a complete list now.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }
}

/// What a cache can hold: a Kubernetes object type that can be watched.
pub trait Cacheable:
    Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Cacheable for K where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// Watches `api` into a cache; the returned stream of watch events (retried with kube-runtime's default
/// backoff) must be polled for the cache to fill and stay current.
pub fn reflect<K: Cacheable>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Cache<K>,
    impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
) {
    let (store, writer) = reflector::store();
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    // No component reads managedFields, often the largest part of an object: as kube-controller-manager's
    // informers, the cache drops them (unset, so an update sent from a cached object keeps the stored ones).
    let watched = watcher::watcher(api, config).modify(|object: &mut K| {
        object.meta_mut().managed_fields = None;
    });
    let events = reflector::reflector(writer, watched)
        .default_backoff()
        .inspect(move |event| {
            if matches!(event, Ok(Event::InitDone)) {
                ready_tx.send_replace(true);
            }
        });
    (Cache { store, ready }, events)
}

/// One watch of a kind shared by every controller of a process that follows it (client-go's shared informer):
/// one cache, and for each subscriber a stream of the objects that change. A subscriber first gets every object
/// cached when it subscribed, so one that joins late misses nothing. The watch stops when the informer is
/// dropped.
pub struct Informer<K: Cacheable> {
    cache: Cache<K>,
    subscribers: Subscribers<K>,
    watch: tokio::task::AbortHandle,
}

type Subscribers<K> = Arc<Mutex<Vec<Subscription<K>>>>;

/// What happened to an object a subscriber is handed.
#[derive(Debug, Clone)]
pub enum Change<K> {
    /// It exists, as it is now.
    Applied(Arc<K>),
    /// It is gone (deleted, or absent from a list taken again after the watch broke); its last state.
    Deleted(Arc<K>),
}

impl<K> Change<K> {
    /// The object, whether it exists or not.
    pub fn object(&self) -> &Arc<K> {
        match self {
            Self::Applied(object) | Self::Deleted(object) => object,
        }
    }

    fn into_object(self) -> Arc<K> {
        match self {
            Self::Applied(object) | Self::Deleted(object) => object,
        }
    }
}

/// What one subscriber has not taken yet: each changed object once, at its newest state, in the order the
/// objects first changed. A change to an object already waiting replaces it there, so a subscriber that falls
/// behind holds one version of each object it has yet to see (level-triggered controllers read the newest
/// state anyway), not every version the watch saw.
struct Subscription<K: Cacheable> {
    waiting: Arc<Mutex<HashMap<Identity, Change<K>>>>,
    /// The order the waiting objects changed in: an identity is sent when its object starts waiting.
    order: mpsc::UnboundedSender<Identity>,
}

/// An object as subscriptions tell objects apart: its uid, so an object deleted and made again under its name
/// is handed over as both; its namespace and name when it has no uid (objects the apiserver serves always
/// have one). One allocation, shared by the waiting map and the order channel: at 10,000 pods in nine
/// subscriptions a key of kube's `ObjectRef` and the uid took 19 MB.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Identity {
    Uid(Arc<str>),
    Name(Arc<(Option<String>, String)>),
}

impl Identity {
    fn of<K: Resource>(object: &K) -> Self {
        let meta = object.meta();
        match &meta.uid {
            Some(uid) => Self::Uid(uid.as_str().into()),
            None => Self::Name(Arc::new((
                meta.namespace.clone(),
                meta.name.clone().unwrap_or_default(),
            ))),
        }
    }
}

/// Waiting objects past which a subscription's emptied map gives its room back: a burst leaves a table sized
/// for every object of the burst.
const KEPT_ROOM: usize = 1024;

impl<K: Cacheable> Subscription<K> {
    /// A subscription, and the stream of the changes it hands over.
    fn new() -> (Self, impl Stream<Item = Change<K>> + Send + 'static) {
        let (order, changes) = mpsc::unbounded_channel();
        let waiting: Arc<Mutex<HashMap<Identity, Change<K>>>> = Arc::default();
        let taken = waiting.clone();
        let changed = tokio_stream::wrappers::UnboundedReceiverStream::new(changes).filter_map(
            move |identity| {
                let mut waiting = taken.lock().unwrap_or_else(PoisonError::into_inner);
                let object = waiting.remove(&identity);
                if waiting.is_empty() && waiting.capacity() > KEPT_ROOM {
                    waiting.shrink_to_fit();
                }
                futures::future::ready(object)
            },
        );
        (Self { waiting, order }, changed)
    }

    /// Hands `change` over; false once the subscriber is gone.
    fn offer(&self, change: &Change<K>) -> bool {
        let identity = Identity::of(change.object().as_ref());
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        match waiting.insert(identity.clone(), change.clone()) {
            Some(_) => !self.order.is_closed(),
            None => self.order.send(identity).is_ok(),
        }
    }
}

impl<K: Cacheable> Informer<K> {
    /// Starts watching `api` (on the current tokio runtime).
    pub fn start(api: Api<K>, config: watcher::Config) -> Self {
        let (cache, events) = reflect(api, config);
        let subscribers: Subscribers<K> = Arc::default();
        let mut fan_out = FanOut {
            subscribers: subscribers.clone(),
            store: cache.store.clone(),
            relist: None,
        };
        let watch = tokio::spawn(events.for_each(move |event| {
            match event {
                Ok(event) => fan_out.take(event),
                Err(error) => {
                    tracing::warn!(kind = %K::kind(&()), %error, "watch failed; retrying");
                }
            }
            async {}
        }))
        .abort_handle();
        Self {
            cache,
            subscribers,
            watch,
        }
    }

    /// The cache every subscriber shares.
    pub fn cache(&self) -> Cache<K> {
        self.cache.clone()
    }

    /// The shared cache and a subscription: what a controller that follows the kind takes.
    pub fn follow(&self) -> (Cache<K>, impl Stream<Item = Arc<K>> + Send + 'static) {
        (self.cache(), self.subscribe())
    }

    /// The objects cached now, then every object that changes (or is deleted) from now on: each at least once
    /// after it changes, at the newest version it has when the subscriber takes it.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        self.subscribe_changes().map(Change::into_object)
    }

    /// [`Informer::subscribe`], saying of each object whether it exists (for a subscriber that keeps its own
    /// state of the objects rather than reading the cache).
    pub fn subscribe_changes(&self) -> impl Stream<Item = Change<K>> + Send + 'static {
        let (subscription, changed) = Subscription::new();
        // Under the lock the watch fans out with: an object cached after this look is sent to the new subscriber.
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let cached = self.cache.state();
        subscribers.push(subscription);
        drop(subscribers);
        futures::stream::iter(cached.into_iter().map(Change::Applied)).chain(changed)
    }
}

/// Hands each watched object to every subscription; after a list taken again (the watch broke), also the
/// objects cached before it that it no longer has, as deleted (client-go's DeltaFIFO does the same on Replace):
/// a subscriber keeping its own state learns of deletions it did not see.
struct FanOut<K: Cacheable> {
    subscribers: Subscribers<K>,
    store: Store<K>,
    /// While a list is taken again: the objects cached before it, and the ones it has listed so far.
    relist: Option<(Vec<Arc<K>>, HashSet<Identity>)>,
}

impl<K: Cacheable> FanOut<K> {
    fn take(&mut self, event: Event<K>) {
        match event {
            Event::Init => {
                // The reflector keeps the cache as it was until the list is complete.
                let before = self.store.state();
                self.relist = (!before.is_empty()).then(|| (before, HashSet::new()));
            }
            Event::InitApply(object) => {
                if let Some((_, listed)) = self.relist.as_mut() {
                    listed.insert(Identity::of(&object));
                }
                self.offer(&Change::Applied(Arc::new(object)));
            }
            Event::Apply(object) => {
                // One copy for all: a burst of 10,000 pod changes waiting in nine subscriptions took 700 MB as
                // a copy each. An applied object is the one the store just took (the reflector stores a copy
                // of what it watched): subscribers share it, so an object a subscriber holds on to is not
                // kept twice.
                let object = match self.store.get(&ObjectRef::from_obj(&object)) {
                    Some(stored)
                        if stored.meta().resource_version == object.meta().resource_version =>
                    {
                        stored
                    }
                    _ => Arc::new(object),
                };
                self.offer(&Change::Applied(object));
            }
            Event::Delete(object) => self.offer(&Change::Deleted(Arc::new(object))),
            Event::InitDone => {
                if let Some((before, listed)) = self.relist.take() {
                    for object in before {
                        if !listed.contains(&Identity::of(object.as_ref())) {
                            self.offer(&Change::Deleted(object));
                        }
                    }
                }
            }
        }
    }

    fn offer(&self, change: &Change<K>) {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|subscriber| subscriber.offer(change));
    }
}

impl<K: Cacheable> Drop for Informer<K> {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use std::time::Duration;

    fn pod(name: &str, version: &str) -> Arc<Pod> {
        let mut pod = Pod::default();
        pod.metadata.uid = Some(format!("uid-{name}"));
        pod.metadata.name = Some(name.into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.resource_version = Some(version.into());
        Arc::new(pod)
    }

    fn applied(name: &str, version: &str) -> Change<Pod> {
        Change::Applied(pod(name, version))
    }

    #[tokio::test]
    async fn a_subscriber_behind_gets_each_changed_object_once_at_its_newest_version_in_order() {
        let (subscription, changed) = Subscription::new();
        for (name, version) in [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("b", "5")] {
            assert!(subscription.offer(&applied(name, version)));
        }
        assert_eq!(subscription.waiting.lock().unwrap().len(), 3);
        let mut changed = Box::pin(changed.map(Change::into_object));
        let mut taken = Vec::new();
        for _ in 0..3 {
            let pod = changed.next().await.unwrap();
            taken.push(format!(
                "{}@{}",
                pod.metadata.name.clone().unwrap(),
                pod.metadata.resource_version.clone().unwrap()
            ));
        }
        assert_eq!(taken, ["a@3", "b@5", "c@4"]);
        // Once taken, an object waits again at its next change.
        assert!(subscription.offer(&applied("a", "6")));
        assert_eq!(
            changed
                .next()
                .await
                .unwrap()
                .metadata
                .resource_version
                .as_deref(),
            Some("6")
        );
        // An object made again under its name is another one: both are handed over.
        let mut again = Pod::clone(&pod("c", "8"));
        again.metadata.uid = Some("uid-c2".into());
        assert!(subscription.offer(&applied("c", "7")));
        assert!(subscription.offer(&Change::Applied(Arc::new(again))));
        let versions = [changed.next().await.unwrap(), changed.next().await.unwrap()]
            .map(|p| p.metadata.resource_version.clone().unwrap_or_default());
        assert_eq!(versions, ["7", "8"]);
        // The subscriber gone, the informer lets it go.
        drop(changed);
        assert!(!subscription.offer(&applied("a", "9")));
    }

    #[tokio::test]
    async fn a_list_taken_again_hands_over_what_it_no_longer_has_as_deleted() {
        let (store, mut writer) = reflector::store::<Pod>();
        let (subscription, changed) = Subscription::new();
        let mut fan_out = FanOut {
            subscribers: Arc::new(Mutex::new(vec![subscription])),
            store,
            relist: None,
        };
        let mut watch = |event: Event<Pod>| {
            writer.apply_watcher_event(&event);
            fan_out.take(event);
        };
        watch(Event::Init);
        watch(Event::InitApply(Pod::clone(&pod("a", "1"))));
        watch(Event::InitApply(Pod::clone(&pod("b", "2"))));
        watch(Event::InitDone);
        watch(Event::Apply(Pod::clone(&pod("c", "3"))));
        // The watch breaks; b is deleted meanwhile, a changes.
        watch(Event::Init);
        watch(Event::InitApply(Pod::clone(&pod("a", "4"))));
        watch(Event::InitApply(Pod::clone(&pod("c", "3"))));
        watch(Event::InitDone);
        let changes: Vec<String> = changed
            .take(3)
            .map(|change| {
                let (what, pod) = match &change {
                    Change::Applied(pod) => ("applied", pod),
                    Change::Deleted(pod) => ("deleted", pod),
                };
                format!(
                    "{what} {}@{}",
                    pod.metadata.name.clone().unwrap(),
                    pod.metadata.resource_version.clone().unwrap()
                )
            })
            .collect()
            .await;
        assert_eq!(changes, ["applied a@4", "deleted b@2", "applied c@3"]);
    }

    #[tokio::test]
    async fn a_subscription_that_took_a_burst_gives_its_room_back() {
        let (subscription, changed) = Subscription::new();
        let burst = 4 * KEPT_ROOM;
        for i in 0..burst {
            assert!(subscription.offer(&applied(&format!("p{i}"), "1")));
        }
        assert!(subscription.waiting.lock().unwrap().capacity() >= burst);
        let taken = changed.take(burst).count().await;
        assert_eq!(taken, burst);
        assert!(subscription.waiting.lock().unwrap().capacity() <= KEPT_ROOM);
    }

    #[tokio::test]
    async fn every_task_waiting_for_a_cache_is_woken_when_it_fills() {
        let (store, _writer) = reflector::store::<Pod>();
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let cache = Cache { store, ready };
        let waiters: Vec<_> = (0..16)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.ready().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!cache.is_ready());
        ready_tx.send_replace(true);
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .expect("a waiter was not woken")
                .unwrap()
                .unwrap();
        }
    }
}
