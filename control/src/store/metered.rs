//! The store as the apiserver uses it, timed for its `/metrics` with kube-apiserver's storage metric,
//! `etcd_request_duration_seconds{operation, type}` (its name whatever the backend; `type` is the key prefix of
//! the resource, `/registry/pods/`), the store's revisions: `wasmkube_store_revision` (the newest) and
//! `wasmkube_store_compacted_revision` (history at or before it is gone), and for the embedded store the
//! latency of its commits (each a batch of writes made durable) under etcd's own name for its backend's,
//! `etcd_disk_backend_commit_duration_seconds`.

use super::{Expect, KeyValue, ListRequest, ListResult, Revision, Store, StoreError, WatchStream};
use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// kube-apiserver's buckets for etcd requests, below a few finer ones for an embedded store's microseconds.
const BUCKETS: [f64; 28] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25,
    1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// Key prefixes under which a resource's keys have one more fixed segment (`/registry/services/specs/`).
const NESTED_PREFIXES: [&str; 1] = ["services"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    operation: &'static str,
    r#type: String,
}

struct StoreMetrics {
    requests: Family<Request, Histogram, fn() -> Histogram>,
    revision: Gauge,
    compacted: Gauge,
    commits: Histogram,
}

/// etcd's buckets for backend commits: 1 ms to 8 s, doubling.
fn commit_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 14)
}

/// Records one commit of the embedded store, which took `took`.
pub fn backend_committed(took: std::time::Duration) {
    metrics().commits.observe(took.as_secs_f64());
}

fn request_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

fn metrics() -> &'static StoreMetrics {
    static METRICS: OnceLock<StoreMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let metrics = StoreMetrics {
            requests: Family::new_with_constructor(request_histogram),
            revision: Gauge::default(),
            compacted: Gauge::default(),
            commits: Histogram::new(commit_buckets()),
        };
        crate::component_metrics::register(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            metrics.commits.clone(),
        );
        crate::component_metrics::register(
            "etcd_request_duration_seconds",
            "Etcd request latency in seconds for each operation and object type.",
            metrics.requests.clone(),
        );
        crate::component_metrics::register(
            "wasmkube_store_revision",
            "The store's newest revision: one more per committed write.",
            metrics.revision.clone(),
        );
        crate::component_metrics::register(
            "wasmkube_store_compacted_revision",
            "The store revision at or before which history has been compacted away.",
            metrics.compacted.clone(),
        );
        metrics
    })
}

/// The key prefix of the resource a key or prefix belongs to: `/registry/pods/default/web` → `/registry/pods/`.
fn type_of(key: &str) -> String {
    let Some(rest) = key.strip_prefix("/registry/") else {
        return String::new();
    };
    let mut segments = rest.split('/');
    let first = segments.next().unwrap_or_default();
    match segments.next() {
        Some(second) if NESTED_PREFIXES.contains(&first) && !second.is_empty() => {
            format!("/registry/{first}/{second}/")
        }
        _ => format!("/registry/{first}/"),
    }
}

fn observe(operation: &'static str, key: &str, started: Instant) {
    let labels = Request {
        operation,
        r#type: type_of(key),
    };
    metrics()
        .requests
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
}

/// Raises a revision gauge to `revision` (writes finish out of order: it never goes back).
fn raise(gauge: &Gauge, revision: Revision) {
    let revision = i64::try_from(revision).unwrap_or(i64::MAX);
    gauge.inner().fetch_max(revision, Ordering::Relaxed);
}

/// A store whose every request is timed for the process's metrics.
pub struct Metered {
    inner: Arc<dyn Store>,
}

/// Wraps a store so its requests and revisions show in `/metrics`.
pub fn metered(inner: Arc<dyn Store>) -> Arc<dyn Store> {
    raise(&metrics().revision, inner.current_revision());
    raise(&metrics().compacted, inner.compacted_revision());
    Arc::new(Metered { inner })
}

impl Store for Metered {
    fn put(
        &self,
        key: String,
        value: Vec<u8>,
        expect: Expect,
    ) -> BoxFuture<'_, Result<Revision, StoreError>> {
        let operation = if expect == Expect::Absent {
            "create"
        } else {
            "update"
        };
        Box::pin(async move {
            let started = Instant::now();
            let kind = type_of(&key);
            let written = self.inner.put(key, value, expect).await;
            observe(operation, &kind, started);
            if let Ok(revision) = &written {
                raise(&metrics().revision, *revision);
            }
            written
        })
    }

    fn delete(
        &self,
        key: String,
        expect: Expect,
    ) -> BoxFuture<'_, Result<(Revision, KeyValue), StoreError>> {
        Box::pin(async move {
            let started = Instant::now();
            let kind = type_of(&key);
            let deleted = self.inner.delete(key, expect).await;
            observe("delete", &kind, started);
            if let Ok((revision, _)) = &deleted {
                raise(&metrics().revision, *revision);
            }
            deleted
        })
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let started = Instant::now();
        let got = self.inner.get(key);
        observe("get", key, started);
        got
    }

    fn list(&self, request: &ListRequest) -> Result<ListResult, StoreError> {
        let started = Instant::now();
        let listed = self.inner.list(request);
        observe("list", &request.prefix, started);
        listed
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, after)
    }

    fn current_revision(&self) -> Revision {
        self.inner.current_revision()
    }

    fn compacted_revision(&self) -> Revision {
        self.inner.compacted_revision()
    }

    fn compact(&self, upto: Revision) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let started = Instant::now();
            let compacted = self.inner.compact(upto).await;
            observe("compact", "", started);
            if compacted.is_ok() {
                raise(&metrics().compacted, self.inner.compacted_revision());
            }
            compacted
        })
    }

    fn catch_up(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.catch_up()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_labelled_with_its_resources_key_prefix() {
        assert_eq!(type_of("/registry/pods/default/web-0"), "/registry/pods/");
        assert_eq!(type_of("/registry/pods/"), "/registry/pods/");
        assert_eq!(type_of("/registry/minions/n1"), "/registry/minions/");
        assert_eq!(
            type_of("/registry/services/specs/default/web"),
            "/registry/services/specs/"
        );
        assert_eq!(
            type_of("/registry/services/endpoints/"),
            "/registry/services/endpoints/"
        );
        assert_eq!(type_of("/registry/services/"), "/registry/services/");
        assert_eq!(type_of("elsewhere"), "");
    }
}
