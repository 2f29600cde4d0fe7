//! kube-scheduler's scheduling queue: pods are tried in priority order (the highest `spec.priority` first, then
//! the one waiting longest), back off after each failed attempt (1 s, doubling up to 10 s), wait apart when they
//! fit nowhere until the cluster changes (or a while passes), and are not tried at all while they carry
//! scheduling gates. Pure: the caller passes the time and tells what happened.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// The backoff after a pod's first failed attempt (kube-scheduler's podInitialBackoffSeconds).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest backoff (kube-scheduler's podMaxBackoffSeconds).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How an attempt to schedule a pod ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Bound (or found bound or gone): the pending-pod watch will drop it.
    Scheduled,
    /// It fits on no node now.
    Unschedulable,
    /// The apiserver failed; try again after the backoff.
    Error,
}

/// Where a queued pod waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Ready to be tried, in priority order.
    Active,
    /// Tried and failed; ready again when its backoff ends.
    Backoff,
    /// Fits nowhere; waits for a cluster change or the leftover flush.
    Unschedulable,
    /// Carries scheduling gates: never tried until they are all removed.
    Gated,
    /// Being tried now.
    InFlight,
    /// Bound; waiting for the watch to drop it.
    Bound,
}

/// What the queue knows of one pod.
struct Entry<P> {
    pod: P,
    priority: i32,
    /// When the pod entered the queue or last failed (kube-scheduler's QueuedPodInfo.Timestamp).
    since: Instant,
    /// Scheduling attempts so far.
    attempts: u32,
    place: Place,
    /// Ties in `since` are broken by arrival order.
    seq: u64,
    /// While in flight, the cluster or the pod changed: a failure goes back to backoff rather than waiting.
    moved: bool,
}

impl<P> Entry<P> {
    fn backoff_until(&self) -> Instant {
        self.since + backoff(self.attempts)
    }
}

/// The backoff after `attempts` failed attempts: none before the first, then 1 s, 2 s, 4 s, 8 s, 10 s, 10 s...
pub fn backoff(attempts: u32) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    let doubled = INITIAL_BACKOFF.saturating_mul(1u32 << (attempts - 1).min(16));
    doubled.min(MAX_BACKOFF)
}

/// The scheduling queue of pods `P` by key `ns/name`.
pub struct SchedulingQueue<P> {
    entries: HashMap<String, Entry<P>>,
    /// Ready pods: the highest priority first, then the earliest.
    active: BTreeSet<(Reverse<i32>, Instant, u64, String)>,
    /// Backing-off pods by the end of their backoff.
    backoff: BTreeSet<(Instant, u64, String)>,
    /// Unschedulable pods by when they were found so.
    unschedulable: BTreeSet<(Instant, u64, String)>,
    next_seq: u64,
}

impl<P> Default for SchedulingQueue<P> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            active: BTreeSet::new(),
            backoff: BTreeSet::new(),
            unschedulable: BTreeSet::new(),
            next_seq: 0,
        }
    }
}

impl<P: Clone> SchedulingQueue<P> {
    /// The pod queued under `key`.
    pub fn get(&self, key: &str) -> Option<&P> {
        self.entries.get(key).map(|e| &e.pod)
    }

    /// Where the pod under `key` waits.
    pub fn place(&self, key: &str) -> Option<Place> {
        self.entries.get(key).map(|e| e.place)
    }

    /// Where each queued pod waits.
    pub fn places(&self) -> impl Iterator<Item = Place> + '_ {
        self.entries.values().map(|e| e.place)
    }

    /// A pending pod was added or changed. `changed` says whether what scheduling reads (its spec, labels or
    /// priority) changed, rather than only its status: a changed pod that fits nowhere is tried again.
    pub fn upsert(
        &mut self,
        key: &str,
        pod: P,
        priority: i32,
        gated: bool,
        changed: bool,
        now: Instant,
    ) {
        let Some(entry) = self.entries.get_mut(key) else {
            let seq = self.next_seq;
            self.next_seq += 1;
            let place = if gated { Place::Gated } else { Place::Active };
            let entry = Entry {
                pod,
                priority,
                since: now,
                attempts: 0,
                place,
                seq,
                moved: false,
            };
            self.entries.insert(key.to_owned(), entry);
            if !gated {
                self.active
                    .insert((Reverse(priority), now, seq, key.to_owned()));
            }
            return;
        };
        entry.pod = pod;
        let (old_priority, since, seq, place) =
            (entry.priority, entry.since, entry.seq, entry.place);
        entry.priority = priority;
        match place {
            Place::InFlight => entry.moved |= changed,
            Place::Active if priority != old_priority => {
                self.active
                    .remove(&(Reverse(old_priority), since, seq, key.to_owned()));
                self.active
                    .insert((Reverse(priority), since, seq, key.to_owned()));
            }
            Place::Gated if !gated => self.unpark(key, now),
            Place::Unschedulable if changed => self.unpark(key, now),
            Place::Active | Place::Backoff | Place::Gated | Place::Unschedulable | Place::Bound => {
            }
        }
    }

    /// The pod left the pending pods (deleted, or bound).
    pub fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key) {
            self.unlink(key, &entry);
        }
    }

    /// Takes the next pod to try: the highest priority of those ready, backoffs that ended first moved in.
    pub fn pop(&mut self, now: Instant) -> Option<(String, P)> {
        self.flush_backoff(now);
        let (_, _, _, key) = self.active.pop_first()?;
        let entry = self.entries.get_mut(&key)?;
        entry.place = Place::InFlight;
        entry.attempts += 1;
        entry.moved = false;
        let pod = entry.pod.clone();
        Some((key, pod))
    }

    /// An attempt ended.
    pub fn done(&mut self, key: &str, outcome: Outcome, now: Instant) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if entry.place != Place::InFlight {
            return;
        }
        entry.since = now;
        match outcome {
            Outcome::Scheduled => entry.place = Place::Bound,
            Outcome::Unschedulable if !entry.moved => {
                entry.place = Place::Unschedulable;
                self.unschedulable.insert((now, entry.seq, key.to_owned()));
            }
            Outcome::Unschedulable | Outcome::Error => {
                entry.place = Place::Backoff;
                let until = entry.backoff_until();
                self.backoff.insert((until, entry.seq, key.to_owned()));
            }
        }
    }

    /// Something changed in the cluster that may let waiting pods fit: every unschedulable pod is tried again
    /// once its backoff ends, and pods in flight that fail go to backoff rather than waiting.
    pub fn move_all(&mut self, now: Instant) {
        let keys: Vec<String> = self
            .unschedulable
            .iter()
            .map(|(_, _, k)| k.clone())
            .collect();
        for key in keys {
            self.unpark(&key, now);
        }
        for entry in self.entries.values_mut() {
            if entry.place == Place::InFlight {
                entry.moved = true;
            }
        }
    }

    /// Pods unschedulable for `max_wait` are tried again even if nothing changed (kube-scheduler's
    /// flushUnschedulablePodsLeftover).
    pub fn flush_unschedulable(&mut self, now: Instant, max_wait: Duration) {
        while let Some((since, _, key)) = self.unschedulable.first().cloned() {
            if since + max_wait > now {
                break;
            }
            self.unpark(&key, now);
        }
    }

    /// When a backoff or the leftover flush next needs the queue's attention.
    pub fn next_deadline(&self, max_wait: Duration) -> Option<Instant> {
        let backoff = self.backoff.first().map(|(until, _, _)| *until);
        let leftover = self
            .unschedulable
            .first()
            .map(|(since, _, _)| *since + max_wait);
        backoff.into_iter().chain(leftover).min()
    }

    /// Moves backoffs that ended into the active pods.
    fn flush_backoff(&mut self, now: Instant) {
        while let Some((until, _, key)) = self.backoff.first().cloned() {
            if until > now {
                break;
            }
            self.backoff.pop_first();
            self.activate(&key);
        }
    }

    /// Moves an unschedulable or gated pod to backoff, or to the active pods if its backoff is over.
    fn unpark(&mut self, key: &str, now: Instant) {
        let Some(entry) = self.entries.get(key) else {
            return;
        };
        if entry.place == Place::Unschedulable {
            self.unschedulable
                .remove(&(entry.since, entry.seq, key.to_owned()));
        }
        let until = entry.backoff_until();
        if until > now {
            let seq = entry.seq;
            if let Some(entry) = self.entries.get_mut(key) {
                entry.place = Place::Backoff;
            }
            self.backoff.insert((until, seq, key.to_owned()));
        } else {
            self.activate(key);
        }
    }

    fn activate(&mut self, key: &str) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.place = Place::Active;
            self.active.insert((
                Reverse(entry.priority),
                entry.since,
                entry.seq,
                key.to_owned(),
            ));
        }
    }

    fn unlink(&mut self, key: &str, entry: &Entry<P>) {
        let key = key.to_owned();
        match entry.place {
            Place::Active => {
                self.active
                    .remove(&(Reverse(entry.priority), entry.since, entry.seq, key));
            }
            Place::Backoff => {
                self.backoff
                    .remove(&(entry.backoff_until(), entry.seq, key));
            }
            Place::Unschedulable => {
                self.unschedulable.remove(&(entry.since, entry.seq, key));
            }
            Place::Gated | Place::InFlight | Place::Bound => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn queue_of(pods: &[(&str, i32)], at: Instant) -> SchedulingQueue<()> {
        let mut queue = SchedulingQueue::default();
        for (key, priority) in pods {
            queue.upsert(key, (), *priority, false, true, at);
        }
        queue
    }

    fn popped(queue: &mut SchedulingQueue<()>, now: Instant) -> Vec<String> {
        std::iter::from_fn(|| queue.pop(now).map(|(k, _)| k)).collect()
    }

    #[test]
    fn backoff_doubles_from_one_second_to_ten() {
        let got: Vec<u64> = (0..7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(got, [0, 1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn higher_priority_pods_are_tried_first_and_equal_ones_in_arrival_order() {
        let t0 = Instant::now();
        let mut queue = queue_of(
            &[("ns/a", 0), ("ns/b", 1000), ("ns/c", 0), ("ns/d", 1000)],
            t0,
        );
        assert_eq!(popped(&mut queue, t0), ["ns/b", "ns/d", "ns/a", "ns/c"]);
    }

    #[test]
    fn a_priority_change_reorders_a_waiting_pod() {
        let t0 = Instant::now();
        let mut queue = queue_of(&[("ns/a", 0), ("ns/b", 0)], t0);
        queue.upsert("ns/b", (), 5, false, true, t0);
        assert_eq!(popped(&mut queue, t0), ["ns/b", "ns/a"]);
    }

    #[test]
    fn an_unschedulable_pod_waits_for_a_cluster_change_then_its_backoff() {
        let t0 = Instant::now();
        let mut queue = queue_of(&[("ns/a", 0)], t0);
        assert_eq!(popped(&mut queue, t0), ["ns/a"]);
        queue.done("ns/a", Outcome::Unschedulable, t0);
        assert_eq!(queue.place("ns/a"), Some(Place::Unschedulable));
        // Nothing changed: not tried again, however long (short of the leftover flush).
        assert!(popped(&mut queue, t0 + secs(5)).is_empty());
        // A node changes 0.5 s after the failure: the first backoff (1 s) is not over, so it waits in backoff.
        queue.move_all(t0 + Duration::from_millis(500));
        assert_eq!(queue.place("ns/a"), Some(Place::Backoff));
        assert!(popped(&mut queue, t0 + Duration::from_millis(900)).is_empty());
        assert_eq!(queue.next_deadline(secs(10)), Some(t0 + secs(1)));
        assert_eq!(popped(&mut queue, t0 + secs(1)), ["ns/a"]);
        // Second failure at t0+1s: the backoff is 2 s; a change at t0+4s finds it over and makes it active.
        queue.done("ns/a", Outcome::Unschedulable, t0 + secs(1));
        queue.move_all(t0 + secs(4));
        assert_eq!(queue.place("ns/a"), Some(Place::Active));
    }

    #[test]
    fn a_cluster_change_during_an_attempt_sends_its_failure_to_backoff() {
        let t0 = Instant::now();
        let mut queue = queue_of(&[("ns/a", 0)], t0);
        popped(&mut queue, t0);
        queue.move_all(t0);
        queue.done("ns/a", Outcome::Unschedulable, t0);
        assert_eq!(queue.place("ns/a"), Some(Place::Backoff));
        assert_eq!(popped(&mut queue, t0 + secs(1)), ["ns/a"]);
    }

    #[test]
    fn unschedulable_pods_are_flushed_after_the_longest_wait() {
        let t0 = Instant::now();
        let mut queue = queue_of(&[("ns/a", 0), ("ns/b", 0)], t0);
        popped(&mut queue, t0);
        queue.done("ns/a", Outcome::Unschedulable, t0);
        queue.done("ns/b", Outcome::Unschedulable, t0 + secs(3));
        assert_eq!(queue.next_deadline(secs(10)), Some(t0 + secs(10)));
        queue.flush_unschedulable(t0 + secs(10), secs(10));
        assert_eq!(queue.place("ns/a"), Some(Place::Active));
        assert_eq!(queue.place("ns/b"), Some(Place::Unschedulable));
        assert_eq!(queue.next_deadline(secs(10)), Some(t0 + secs(13)));
    }

    #[test]
    fn an_error_backs_off_and_a_change_to_the_pod_itself_retries_it() {
        let t0 = Instant::now();
        let mut queue = queue_of(&[("ns/a", 0), ("ns/b", 0)], t0);
        popped(&mut queue, t0);
        queue.done("ns/a", Outcome::Error, t0);
        assert_eq!(queue.place("ns/a"), Some(Place::Backoff));
        queue.done("ns/b", Outcome::Unschedulable, t0);
        // Its own status written (not a change): it stays; its spec changed: retried after the backoff.
        queue.upsert("ns/b", (), 0, false, false, t0 + secs(2));
        assert_eq!(queue.place("ns/b"), Some(Place::Unschedulable));
        queue.upsert("ns/b", (), 0, false, true, t0 + secs(2));
        assert_eq!(queue.place("ns/b"), Some(Place::Active));
        assert_eq!(popped(&mut queue, t0 + secs(2)), ["ns/a", "ns/b"]);
    }

    #[test]
    fn gated_pods_are_never_tried_until_their_last_gate_goes() {
        let t0 = Instant::now();
        let mut queue: SchedulingQueue<()> = SchedulingQueue::default();
        queue.upsert("ns/gated", (), 100, true, true, t0);
        queue.upsert("ns/plain", (), 0, false, true, t0);
        queue.move_all(t0);
        queue.flush_unschedulable(t0 + secs(600), secs(10));
        assert_eq!(popped(&mut queue, t0 + secs(600)), ["ns/plain"]);
        queue.upsert("ns/gated", (), 100, true, true, t0 + secs(601));
        assert_eq!(queue.place("ns/gated"), Some(Place::Gated));
        queue.upsert("ns/gated", (), 100, false, true, t0 + secs(602));
        assert_eq!(popped(&mut queue, t0 + secs(602)), ["ns/gated"]);
    }

    #[test]
    fn a_bound_pod_is_not_tried_again_and_removal_forgets_it_anywhere() {
        let t0 = Instant::now();
        let mut queue = queue_of(&[("ns/a", 0), ("ns/b", 0), ("ns/c", 0)], t0);
        popped(&mut queue, t0);
        queue.done("ns/a", Outcome::Scheduled, t0);
        queue.upsert("ns/a", (), 0, false, true, t0);
        queue.done("ns/b", Outcome::Error, t0);
        queue.done("ns/c", Outcome::Unschedulable, t0);
        for key in ["ns/a", "ns/b", "ns/c"] {
            queue.remove(key);
        }
        queue.move_all(t0 + secs(60));
        assert!(popped(&mut queue, t0 + secs(60)).is_empty());
        assert_eq!(queue.next_deadline(secs(10)), None);
        assert_eq!(queue.places().count(), 0);
    }
}
