//! Events: what a component did to an object, for `describe` to show.
//!
//! As client-go's event broadcaster: `record` queues the Event and returns at once, and one writer per recorder
//! sends them in order. An Event like one this recorder wrote before (same source, object, type, reason and
//! message) adds to that Event's `count` and moves its `lastTimestamp` instead of making another (client-go's
//! EventCorrelator, which `describe` shows as "x5 over 2m"). A full queue drops what comes (client-go queues
//! 1,000), and the writer may be held to a rate (the kubelet's `--event-qps` and `--event-burst`), so a burst
//! of Events never competes with the writes that matter.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Events waiting for the writer before new ones are dropped (client-go's maxQueuedEvents).
const QUEUE: usize = 1000;
/// Events whose names are remembered for counting repeats (client-go's maxLruCacheEntries).
const REMEMBERED: usize = 4096;

/// Records Events in the name of one component (`default-scheduler`, `replicaset-controller`, ...).
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Event>,
    component: &'static str,
    host: Option<String>,
}

/// Whether an Event reports something normal or something that needs attention.
#[derive(Debug, Clone, Copy)]
pub enum EventType {
    /// Things going as they should.
    Normal,
    /// Something a user should look at.
    Warning,
}

/// How many Events a recorder writes per second on average, and at once after a quiet time.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Events per second; 0 for no limit.
    pub qps: f64,
    /// Events written at once before the rate applies.
    pub burst: u32,
}

impl Recorder {
    /// A recorder for one component, writing as fast as the apiserver takes its Events. Starts its writer on
    /// the current Tokio runtime.
    pub fn new(client: kube::Client, component: &'static str) -> Self {
        Self::limited(client, component, None)
    }

    /// A recorder whose writer keeps to `limit`.
    pub fn limited(
        client: kube::Client,
        component: &'static str,
        limit: Option<RateLimit>,
    ) -> Self {
        let (queue, queued) = mpsc::channel(QUEUE);
        let bucket = limit
            .filter(|l| l.qps > 0.0)
            .map(|l| TokenBucket::new(l, Instant::now()));
        tokio::spawn(write_events(client, queued, bucket));
        Self {
            queue,
            component,
            host: None,
        }
    }

    /// The same recorder, naming the node it reports from (as a kubelet's Events do).
    pub fn on_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Queues an Event about `object`; when the queue is full it is dropped and logged.
    pub fn record<K>(&self, object: &K, kind: EventType, reason: &str, message: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        let namespace = object.namespace().unwrap_or_else(|| "default".into());
        let now = Time(jiff::Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", object.name_any())),
                namespace: Some(namespace),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(K::api_version(&()).into_owned()),
                kind: Some(K::kind(&()).into_owned()),
                name: Some(object.name_any()),
                namespace: object.namespace(),
                uid: object.uid(),
                resource_version: object.resource_version(),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(format!("{kind:?}")),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            reporting_component: Some(self.component.into()),
            reporting_instance: self.host.clone(),
            source: Some(EventSource {
                component: Some(self.component.into()),
                host: self.host.clone(),
            }),
            ..Default::default()
        };
        if self.queue.try_send(event).is_err() {
            tracing::warn!(
                component = self.component,
                reason,
                "event dropped: too many waiting to be written"
            );
        }
    }
}

/// What makes two Events the same one happening again (client-go's getEventKey; the object's
/// resourceVersion is left out, as it changes with every write to the object).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EventKey {
    source: (Option<String>, Option<String>),
    object: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    type_: Option<String>,
    reason: Option<String>,
    message: Option<String>,
}

impl EventKey {
    fn of(event: &Event) -> Self {
        let source = event.source.clone().unwrap_or_default();
        let object = &event.involved_object;
        Self {
            source: (source.component, source.host),
            object: (
                object.kind.clone(),
                object.namespace.clone(),
                object.name.clone(),
                object.uid.clone(),
            ),
            type_: event.type_.clone(),
            reason: event.reason.clone(),
            message: event.message.clone(),
        }
    }
}

/// A written Event, to count its repeats on.
struct Written {
    namespace: String,
    name: String,
    count: i32,
}

/// The Events written last, by key, forgetting the oldest beyond [`REMEMBERED`].
#[derive(Default)]
struct Remembered {
    by_key: HashMap<EventKey, Written>,
    order: VecDeque<EventKey>,
}

impl Remembered {
    fn insert(&mut self, key: EventKey, written: Written) {
        if self.by_key.insert(key.clone(), written).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.by_key.remove(&oldest);
            }
        }
    }
}

/// Writes queued Events one at a time, in order, keeping to the rate limit.
async fn write_events(
    client: kube::Client,
    mut queued: mpsc::Receiver<Event>,
    mut bucket: Option<TokenBucket>,
) {
    let mut remembered = Remembered::default();
    while let Some(event) = queued.recv().await {
        if let Some(bucket) = &mut bucket {
            tokio::time::sleep(bucket.take(Instant::now())).await;
        }
        let key = EventKey::of(&event);
        let component = event.reporting_component.clone().unwrap_or_default();
        let outcome = match remembered.by_key.get(&key) {
            Some(written) => repeat(&client, written, &event).await,
            None => create(&client, &event).await,
        };
        match outcome {
            Ok(written) => remembered.insert(key, written),
            Err(error) => tracing::warn!(%error, component, "cannot record an event"),
        }
    }
}

async fn create(client: &kube::Client, event: &Event) -> Result<Written, kube::Error> {
    let namespace = event.metadata.namespace.clone().unwrap_or_default();
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let created = events.create(&PostParams::default(), event).await?;
    Ok(Written {
        namespace,
        name: created.metadata.name.unwrap_or_default(),
        count: 1,
    })
}

/// Counts `event` on the Event written for it before; makes a new one when that one is gone (deleted, or
/// expired).
async fn repeat(
    client: &kube::Client,
    written: &Written,
    event: &Event,
) -> Result<Written, kube::Error> {
    let events: Api<Event> = Api::namespaced(client.clone(), &written.namespace);
    let count = written.count.saturating_add(1);
    let patch = serde_json::json!({"count": count, "lastTimestamp": event.last_timestamp});
    match events
        .patch(
            &written.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(Written {
            namespace: written.namespace.clone(),
            name: written.name.clone(),
            count,
        }),
        Err(kube::Error::Api(e)) if e.code == 404 => create(client, event).await,
        Err(error) => Err(error),
    }
}

/// client-go's token bucket: `burst` tokens at first, refilled at `qps`; each Event takes one.
struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst.max(1)),
            at: now,
        }
    }

    /// Takes a token at `now`: how long to wait before writing (zero when one was there).
    fn take(&mut self, now: Instant) -> Duration {
        let refilled = now.saturating_duration_since(self.at).as_secs_f64() * self.limit.qps;
        self.tokens = (self.tokens + refilled).min(f64::from(self.limit.burst.max(1)));
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.limit.qps)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_a_burst_through_then_keeps_to_the_rate() {
        let start = Instant::now();
        let limit = RateLimit {
            qps: 50.0,
            burst: 3,
        };
        let mut bucket = TokenBucket::new(limit, start);
        assert_eq!(bucket.take(start), Duration::ZERO);
        assert_eq!(bucket.take(start), Duration::ZERO);
        assert_eq!(bucket.take(start), Duration::ZERO);
        // Empty: the 4th waits one token (20 ms at 50/s), the 5th two.
        assert_eq!(bucket.take(start), Duration::from_millis(20));
        assert_eq!(bucket.take(start), Duration::from_millis(40));
        // A second later the bucket is full again, never fuller than the burst.
        let later = start + Duration::from_secs(1);
        for _ in 0..3 {
            assert_eq!(bucket.take(later), Duration::ZERO);
        }
        assert_eq!(bucket.take(later), Duration::from_millis(20));
    }

    #[test]
    fn only_the_newest_events_are_remembered() {
        let mut remembered = Remembered::default();
        let key = |i: usize| EventKey {
            source: (Some("kubelet".into()), None),
            object: (None, None, Some(format!("pod-{i}")), None),
            type_: None,
            reason: None,
            message: None,
        };
        for i in 0..=REMEMBERED {
            let written = Written {
                namespace: "default".into(),
                name: format!("e{i}"),
                count: 1,
            };
            remembered.insert(key(i), written);
        }
        assert_eq!(remembered.by_key.len(), REMEMBERED);
        assert!(!remembered.by_key.contains_key(&key(0)));
        assert!(remembered.by_key.contains_key(&key(REMEMBERED)));
    }
}
