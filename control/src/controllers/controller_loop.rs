//! The loop every controller runs: kube-runtime's Controller (watches, a queue that merges repeats, retries
//! with backoff), with its reconciles counted and timed (`metrics::timed`) and its work queue counted with
//! client-go's workqueue metrics, `workqueue_adds_total` and `workqueue_depth` by `name` (the controller).
//!
//! kube-runtime keeps its queue to itself (kube-rs/kube#1917), so the queue is counted where work goes in and
//! comes out: an object goes in when a change of its own or a mapped change of another object names it, and
//! comes out when its reconcile starts (or when it turns out to be gone). An object named again while it waits
//! is one add, as client-go's queue counts it; one whose reconcile starts without having been named was
//! requeued by its last reconcile (client-go's AddAfter), an add when it came due.

use futures::{Stream, StreamExt, TryStreamExt};
use kube::runtime::controller::{Action, Controller, Error};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueName {
    name: &'static str,
}

struct QueueMetrics {
    adds: Family<QueueName, Counter>,
    depth: Family<QueueName, Gauge>,
}

fn metrics() -> &'static QueueMetrics {
    static METRICS: OnceLock<QueueMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let metrics = QueueMetrics {
            adds: Family::default(),
            depth: Family::default(),
        };
        crate::component_metrics::register(
            "workqueue_adds",
            "Total number of adds handled by workqueue",
            metrics.adds.clone(),
        );
        crate::component_metrics::register(
            "workqueue_depth",
            "Current depth of workqueue",
            metrics.depth.clone(),
        );
        metrics
    })
}

/// An object's place in a queue: namespace and name.
type Key = (Option<String>, String);

fn key<K: Resource>(reference: &ObjectRef<K>) -> Key {
    (reference.namespace.clone(), reference.name.clone())
}

/// One controller's queue as counted: the objects named and not yet started.
struct Queue {
    waiting: Mutex<HashSet<Key>>,
    adds: Counter,
    depth: Gauge,
}

impl Queue {
    fn new(name: &'static str) -> Arc<Self> {
        let label = QueueName { name };
        Arc::new(Self {
            waiting: Mutex::default(),
            adds: metrics().adds.get_or_create(&label).clone(),
            depth: metrics().depth.get_or_create(&label).clone(),
        })
    }

    /// An object named by a change: an add unless it waits already.
    fn named(&self, key: Key) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.insert(key) {
            self.adds.inc();
        }
        self.depth
            .set(i64::try_from(waiting.len()).unwrap_or(i64::MAX));
    }

    /// An object taken off the queue; one that was not waiting came back by a requeue, an add of its own.
    fn taken(&self, key: &Key) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if !waiting.remove(key) {
            self.adds.inc();
        }
        self.depth
            .set(i64::try_from(waiting.len()).unwrap_or(i64::MAX));
    }
}

/// A controller of `K` objects being put together: what triggers its reconciles.
pub struct ControllerLoop<K: Resource<DynamicType = ()> + Clone + Debug + 'static> {
    name: &'static str,
    controller: Controller<K>,
    queue: Arc<Queue>,
}

impl<K> ControllerLoop<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// A controller named `name` (its metrics' label) of the objects `api` lists and `config` selects,
    /// reconciling each one when it changes.
    pub fn new(name: &'static str, api: Api<K>, config: watcher::Config) -> Self {
        let queue = Queue::new(name);
        let writer = reflector::store::Writer::<K>::default();
        let reader = writer.as_reader();
        let named = queue.clone();
        let changes = reflector::reflector(writer, watcher(api, config))
            .applied_objects()
            .inspect_ok(move |object| named.named(key(&ObjectRef::from_obj(object))));
        Self {
            name,
            controller: Controller::for_stream(changes, reader),
            queue,
        }
    }

    /// [`ControllerLoop::new`] over objects an informer shares: `changes` as it follows them, `reader` its
    /// store.
    pub fn for_shared_stream(
        name: &'static str,
        changes: impl Stream<Item = Arc<K>> + Send + 'static,
        reader: Store<K>,
    ) -> Self {
        let queue = Queue::new(name);
        let named = queue.clone();
        let changes =
            changes.inspect(move |object| named.named(key(&ObjectRef::from_obj(&**object))));
        Self {
            name,
            controller: Controller::for_shared_stream(changes, reader),
            queue,
        }
    }

    /// The controller's store of its objects.
    pub fn store(&self) -> Store<K> {
        self.controller.store()
    }

    /// Also reconciles the objects `mapper` names for each change of another kind in `changes`.
    pub fn watches_stream<Other, I>(
        self,
        changes: impl Stream<Item = Result<Other, watcher::Error>> + Send + 'static,
        mapper: impl Fn(Other) -> I + Sync + Send + 'static,
    ) -> Self
    where
        Other: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
        I: IntoIterator<Item = ObjectRef<K>>,
    {
        let mapper = self.counted(mapper);
        Self {
            controller: self.controller.watches_stream(changes, mapper),
            ..self
        }
    }

    /// [`ControllerLoop::watches_stream`] of changes an informer shares.
    pub fn watches_shared_stream<Other, I>(
        self,
        changes: impl Stream<Item = Arc<Other>> + Send + 'static,
        mapper: impl Fn(Arc<Other>) -> I + Sync + Send + 'static,
    ) -> Self
    where
        Other: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
        I: IntoIterator<Item = ObjectRef<K>>,
    {
        let mapper = self.counted(mapper);
        Self {
            controller: self.controller.watches_shared_stream(changes, mapper),
            ..self
        }
    }

    /// `mapper`, with what it names counted as named.
    fn counted<O, I>(
        &self,
        mapper: impl Fn(O) -> I + Sync + Send + 'static,
    ) -> impl Fn(O) -> Vec<ObjectRef<K>> + Sync + Send + 'static
    where
        I: IntoIterator<Item = ObjectRef<K>>,
    {
        let queue = self.queue.clone();
        move |other| {
            let named: Vec<ObjectRef<K>> = mapper(other).into_iter().collect();
            for reference in &named {
                queue.named(key(reference));
            }
            named
        }
    }

    /// Runs the controller until the process ends: `reconcile` for each object named, `error_policy` when it
    /// fails; failures are logged at debug level (the reconcilers log what a user should see).
    pub async fn run<Ctx, Fut, E>(
        self,
        reconcile: impl FnMut(Arc<K>, Arc<Ctx>) -> Fut,
        error_policy: impl Fn(Arc<K>, &E, Arc<Ctx>) -> Action,
        context: Arc<Ctx>,
    ) where
        Ctx: Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let name = self.name;
        let queue = self.queue.clone();
        let mut timed = super::metrics::timed(name, reconcile);
        let taken = queue.clone();
        let reconcile = move |object: Arc<K>, context: Arc<Ctx>| {
            taken.taken(&key(&ObjectRef::from_obj(&*object)));
            timed(object, context)
        };
        self.controller
            .run(reconcile, error_policy, context)
            .for_each(|result| {
                match result {
                    Err(Error::ObjectNotFound(gone)) => {
                        // Named, but gone before its turn: off the queue.
                        queue.taken(&(gone.namespace.clone(), gone.name.clone()));
                    }
                    Err(error) => {
                        tracing::debug!(controller = name, %error, "reconcile failed");
                    }
                    Ok(_) => {}
                }
                std::future::ready(())
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_while_waiting_is_one_add_and_a_requeue_is_an_add_of_its_own() {
        let queue = Queue::new("test-queue");
        let web = (Some("default".to_owned()), "web".to_owned());
        let db = (Some("default".to_owned()), "db".to_owned());
        queue.named(web.clone());
        queue.named(web.clone());
        queue.named(db.clone());
        assert_eq!((queue.adds.get(), queue.depth.get()), (2, 2));
        queue.taken(&web);
        assert_eq!((queue.adds.get(), queue.depth.get()), (2, 1));
        // Named again while its reconcile runs: waiting again, one more add.
        queue.named(web.clone());
        assert_eq!((queue.adds.get(), queue.depth.get()), (3, 2));
        queue.taken(&web);
        queue.taken(&db);
        // Its reconcile asked to be run again later: the requeue is an add when it comes due.
        queue.taken(&db);
        assert_eq!((queue.adds.get(), queue.depth.get()), (4, 0));
    }
}
