//! The controllers' metrics, with controller-runtime's names (kube-runtime is its Rust counterpart):
//! `controller_runtime_reconcile_total` by controller and result, `controller_runtime_reconcile_errors_total` and
//! `controller_runtime_reconcile_time_seconds` by controller. Served at the apiserver's `/metrics` when the
//! controllers run in its process.

use futures::FutureExt;
use futures::future::BoxFuture;
use kube::runtime::controller::Action;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reconciled {
    controller: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Named {
    controller: &'static str,
}

struct ControllerMetrics {
    total: Family<Reconciled, Counter>,
    errors: Family<Named, Counter>,
    time: Family<Named, Histogram, fn() -> Histogram>,
}

/// controller-runtime's reconcile time buckets, in seconds.
const TIME_BUCKETS: [f64; 17] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9,
];

fn time_histogram() -> Histogram {
    Histogram::new(TIME_BUCKETS)
}

fn metrics() -> &'static ControllerMetrics {
    static METRICS: OnceLock<ControllerMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let metrics = ControllerMetrics {
            total: Family::default(),
            errors: Family::default(),
            time: Family::new_with_constructor(time_histogram),
        };
        crate::component_metrics::register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            metrics.total.clone(),
        );
        crate::component_metrics::register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            metrics.errors.clone(),
        );
        crate::component_metrics::register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            metrics.time.clone(),
        );
        metrics
    })
}

/// `reconcile`, with each run counted and timed under `controller`.
pub fn timed<K, C, F, Fut, E>(
    controller: &'static str,
    mut reconcile: F,
) -> impl FnMut(Arc<K>, Arc<C>) -> BoxFuture<'static, Result<Action, E>>
where
    F: FnMut(Arc<K>, Arc<C>) -> Fut,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    move |object, context| {
        let running = reconcile(object, context);
        async move {
            let started = Instant::now();
            let result = running.await;
            let metrics = metrics();
            let named = Named { controller };
            metrics
                .time
                .get_or_create(&named)
                .observe(started.elapsed().as_secs_f64());
            let outcome = if result.is_ok() { "success" } else { "error" };
            metrics
                .total
                .get_or_create(&Reconciled {
                    controller,
                    result: outcome,
                })
                .inc();
            if result.is_err() {
                metrics.errors.get_or_create(&named).inc();
            }
            result
        }
        .boxed()
    }
}
