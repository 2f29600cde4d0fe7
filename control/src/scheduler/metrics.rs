//! kube-scheduler's metrics, with its names: `scheduler_schedule_attempts_total` and
//! `scheduler_scheduling_attempt_duration_seconds` by result (scheduled, unschedulable, error) and profile, and
//! `scheduler_pending_pods` by queue (active, backoff, unschedulable, gated).

use super::queue::{Outcome, Place};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::sync::OnceLock;
use std::time::Duration;

/// The scheduler's one profile.
const PROFILE: &str = "default-scheduler";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Attempt {
    result: &'static str,
    profile: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Queue {
    queue: &'static str,
}

/// The scheduler's metrics, registered once per process.
pub struct SchedulerMetrics {
    attempts: Family<Attempt, Counter>,
    durations: Family<Attempt, Histogram, fn() -> Histogram>,
    pending: Family<Queue, Gauge>,
}

/// kube-scheduler's buckets: 1 ms doubling, 15 of them.
fn attempt_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The process's scheduler metrics.
pub fn metrics() -> &'static SchedulerMetrics {
    static METRICS: OnceLock<SchedulerMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let metrics = SchedulerMetrics {
            attempts: Family::default(),
            durations: Family::new_with_constructor(attempt_histogram),
            pending: Family::default(),
        };
        crate::component_metrics::register(
            "scheduler_schedule_attempts",
            "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be \
             scheduled, while 'error' means an internal scheduler problem.",
            metrics.attempts.clone(),
        );
        crate::component_metrics::register(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            metrics.durations.clone(),
        );
        crate::component_metrics::register(
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type. 'active' means number of pods in activeQ; 'backoff' \
             means number of pods in backoffQ; 'unschedulable' means number of pods in unschedulablePods; \
             'gated' is the number of unschedulable pods that the scheduler never attempted to schedule \
             because they are gated.",
            metrics.pending.clone(),
        );
        metrics
    })
}

impl SchedulerMetrics {
    /// Records one attempt's outcome and how long its decision and binding took.
    pub fn attempted(&self, outcome: Outcome, took: Duration) {
        let attempt = Attempt {
            result: match outcome {
                Outcome::Scheduled => "scheduled",
                Outcome::Unschedulable => "unschedulable",
                Outcome::Error => "error",
            },
            profile: PROFILE,
        };
        self.attempts.get_or_create(&attempt).inc();
        self.durations
            .get_or_create(&attempt)
            .observe(took.as_secs_f64());
    }

    /// Sets the queue sizes from the places of the queued pods.
    pub fn queued(&self, places: impl Iterator<Item = Place>) {
        let (mut active, mut backoff, mut unschedulable, mut gated) = (0, 0, 0, 0);
        for place in places {
            match place {
                Place::Active => active += 1,
                Place::Backoff => backoff += 1,
                Place::Unschedulable => unschedulable += 1,
                Place::Gated => gated += 1,
                Place::InFlight | Place::Bound => {}
            }
        }
        for (queue, count) in [
            ("active", active),
            ("backoff", backoff),
            ("unschedulable", unschedulable),
            ("gated", gated),
        ] {
            self.pending.get_or_create(&Queue { queue }).set(count);
        }
    }
}
