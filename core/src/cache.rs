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
use std::collections::HashMap;
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

/// What one subscriber has not taken yet: each changed object once, at its newest version, in the order the
/// objects first changed. A change to an object already waiting replaces it there, so a subscriber that falls
/// behind holds one version of each object it has yet to see (level-triggered controllers read the newest
/// state anyway), not every version the watch saw.
struct Subscription<K: Cacheable> {
    waiting: Arc<Mutex<HashMap<Identity<K>, Arc<K>>>>,
    /// The order the waiting objects changed in: an identity is sent when its object starts waiting.
    order: mpsc::UnboundedSender<Identity<K>>,
}

/// An object as subscriptions tell objects apart: its reference and its uid, so an object deleted and made
/// again under its name is handed over as both.
type Identity<K> = (ObjectRef<K>, Option<String>);

impl<K: Cacheable> Subscription<K> {
    /// A subscription, and the stream of the objects it hands over.
    fn new() -> (Self, impl Stream<Item = Arc<K>> + Send + 'static) {
        let (order, changes) = mpsc::unbounded_channel();
        let waiting: Arc<Mutex<HashMap<Identity<K>, Arc<K>>>> = Arc::default();
        let taken = waiting.clone();
        let changed = tokio_stream::wrappers::UnboundedReceiverStream::new(changes).filter_map(
            move |identity| {
                let object = taken
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&identity);
                futures::future::ready(object)
            },
        );
        (Self { waiting, order }, changed)
    }

    /// Hands `object` over; false once the subscriber is gone.
    fn offer(&self, object: &Arc<K>) -> bool {
        let identity = (
            ObjectRef::from_obj(object.as_ref()),
            object.meta().uid.clone(),
        );
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        match waiting.insert(identity.clone(), object.clone()) {
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
        let fan_out = subscribers.clone();
        let cached = cache.store.clone();
        let watch = tokio::spawn(events.for_each(move |event| {
            match event {
                Ok(Event::Apply(object) | Event::Delete(object) | Event::InitApply(object)) => {
                    // One copy for all: a burst of 10,000 pod changes waiting in nine subscriptions took 700 MB
                    // as a copy each. An applied object is the one the store just took (the reflector stores a
                    // copy of what it watched): subscribers share it, so an object a subscriber holds on to is
                    // not kept twice. Deleted objects, and those of a first list (buffered by the reflector
                    // until the list is complete), are not in the store.
                    let object = match cached.get(&ObjectRef::from_obj(&object)) {
                        Some(stored)
                            if stored.meta().resource_version == object.meta().resource_version =>
                        {
                            stored
                        }
                        _ => Arc::new(object),
                    };
                    fan_out
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .retain(|subscriber| subscriber.offer(&object));
                }
                Ok(Event::Init | Event::InitDone) => {}
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
        let (subscription, changed) = Subscription::new();
        // Under the lock the watch fans out with: an object cached after this look is sent to the new subscriber.
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let cached = self.cache.state();
        subscribers.push(subscription);
        drop(subscribers);
        futures::stream::iter(cached).chain(changed)
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

    #[tokio::test]
    async fn a_subscriber_behind_gets_each_changed_object_once_at_its_newest_version_in_order() {
        let (subscription, changed) = Subscription::new();
        for (name, version) in [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("b", "5")] {
            assert!(subscription.offer(&pod(name, version)));
        }
        assert_eq!(subscription.waiting.lock().unwrap().len(), 3);
        let mut changed = Box::pin(changed);
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
        assert!(subscription.offer(&pod("a", "6")));
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
        assert!(subscription.offer(&pod("c", "7")));
        assert!(subscription.offer(&Arc::new(again)));
        let versions = [changed.next().await.unwrap(), changed.next().await.unwrap()]
            .map(|p| p.metadata.resource_version.clone().unwrap_or_default());
        assert_eq!(versions, ["7", "8"]);
        // The subscriber gone, the informer lets it go.
        drop(changed);
        assert!(!subscription.offer(&pod("a", "9")));
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
