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

type Subscribers<K> = Arc<Mutex<Vec<mpsc::UnboundedSender<Arc<K>>>>>;

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
                        .retain(|subscriber| subscriber.send(object.clone()).is_ok());
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

    /// The objects cached now, then every object that changes (or is deleted) from now on.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (sender, changes) = mpsc::unbounded_channel();
        // Under the lock the watch fans out with: an object cached after this look is sent to the new subscriber.
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let cached = self.cache.state();
        subscribers.push(sender);
        drop(subscribers);
        futures::stream::iter(cached).chain(tokio_stream::wrappers::UnboundedReceiverStream::new(
            changes,
        ))
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
