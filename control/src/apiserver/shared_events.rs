//! Store changes as every watch serves them, decoded once and written as JSON once however many watches see
//! them (as kube-apiserver's watch cache shares one decoded object and one serialization per event): a pod
//! change seen by the scheduler, the controllers, its node's agent and a user's `kubectl get -w` is read once.

use super::objects::{Filter, served};
use super::stored_json::served_json;
use crate::store::{Event, Revision};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

/// How many recent changes are kept: live watches see a change within moments of each other, so a short
/// window shares nearly every decoding; a watch replaying older history decodes its own.
const KEPT: usize = 256;

/// One change as the watches serve it; each part is made when a watch first needs it.
pub struct SharedEvent {
    event: Event,
    object: OnceLock<Option<Value>>,
    before: OnceLock<Option<Value>>,
    json: OnceLock<Option<bytes::Bytes>>,
}

impl SharedEvent {
    fn new(event: Event) -> Self {
        Self {
            event,
            object: OnceLock::new(),
            before: OnceLock::new(),
            json: OnceLock::new(),
        }
    }

    /// The change's revision.
    pub fn revision(&self) -> Revision {
        self.event.revision
    }

    /// The object as served at this revision (`None` when its stored bytes cannot be read).
    pub fn object(&self) -> Option<&Value> {
        self.object
            .get_or_init(|| served(&self.event.value, self.event.revision).ok())
            .as_ref()
    }

    /// The object before a put, as served at this revision; `None` for a create, a delete, or unreadable bytes.
    pub fn before(&self) -> Option<&Value> {
        self.before
            .get_or_init(|| {
                let prev = self.event.prev.as_ref()?;
                served(prev, self.event.revision).ok()
            })
            .as_ref()
    }

    /// Whether the put replaced an earlier value.
    pub fn replaced(&self) -> bool {
        self.event.prev.is_some()
    }

    /// The object as JSON: the stored bytes with the revision put in (decoded and written again only when
    /// they are not plain JSON).
    pub fn json(&self) -> Option<&bytes::Bytes> {
        self.json
            .get_or_init(|| {
                match served_json(&self.event.value, self.event.revision) {
                    Some(json) => Some(json),
                    None => serde_json::to_vec(self.object()?).ok(),
                }
                .map(bytes::Bytes::from)
            })
            .as_ref()
    }

    /// Whether the object passes `filter` (false when it cannot be read).
    pub fn matches(&self, filter: &Filter) -> bool {
        filter
            .matches_stored(&self.event.value)
            .or_else(|| self.object().map(|object| filter.matches(object)))
            .unwrap_or(false)
    }

    /// Whether the object before a put passed `filter`; `None` for a create, a delete, or unreadable bytes.
    pub fn matched_before(&self, filter: &Filter) -> Option<bool> {
        let prev = self.event.prev.as_ref()?;
        filter
            .matches_stored(prev)
            .or_else(|| self.before().map(|before| filter.matches(before)))
    }
}

/// The recent changes, by revision (one revision is one change, whatever its key).
#[derive(Default)]
pub struct SharedEvents {
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    by_revision: HashMap<Revision, Arc<SharedEvent>>,
    order: VecDeque<Revision>,
}

impl SharedEvents {
    /// The shared form of a change, made by the first watch that asks. A revision that changed several keys
    /// (an etcd transaction someone else wrote) is shared for its first key only.
    pub fn get(&self, event: Event) -> Arc<SharedEvent> {
        let Ok(mut recent) = self.recent.lock() else {
            return Arc::new(SharedEvent::new(event));
        };
        if let Some(shared) = recent.by_revision.get(&event.revision) {
            return if shared.event.key == event.key {
                shared.clone()
            } else {
                Arc::new(SharedEvent::new(event))
            };
        }
        let revision = event.revision;
        let shared = Arc::new(SharedEvent::new(event));
        recent.by_revision.insert(revision, shared.clone());
        recent.order.push_back(revision);
        while recent.order.len() > KEPT {
            if let Some(oldest) = recent.order.pop_front() {
                recent.by_revision.remove(&oldest);
            }
        }
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventKind;

    fn event(revision: Revision, value: &str, prev: Option<&str>) -> Event {
        Event {
            revision,
            kind: EventKind::Put,
            key: "/registry/pods/default/a".into(),
            value: value.as_bytes().into(),
            prev: prev.map(|p| p.as_bytes().into()),
        }
    }

    #[test]
    fn a_change_is_decoded_once_for_every_watch_and_served_at_its_revision() {
        let events = SharedEvents::default();
        let first = events.get(event(7, r#"{"metadata":{"name":"a"}}"#, Some("{}")));
        let again = events.get(event(7, r#"{"metadata":{"name":"a"}}"#, Some("{}")));
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(first.object().unwrap()["metadata"]["resourceVersion"], "7");
        assert_eq!(
            first.json().unwrap().as_ref(),
            br#"{"metadata":{"resourceVersion":"7","name":"a"}}"#
        );
        assert!(first.replaced() && first.before().is_some());
    }

    #[test]
    fn only_recent_changes_are_kept_one_per_revision_and_key_and_unreadable_ones_serve_nothing() {
        let events = SharedEvents::default();
        let oldest = events.get(event(1, "{}", None));
        for revision in 2..=(KEPT as Revision + 1) {
            events.get(event(revision, "{}", None));
        }
        assert!(!Arc::ptr_eq(&oldest, &events.get(event(1, "{}", None))));
        let mut other_key = event(5000, r#"{"metadata":{"name":"b"}}"#, None);
        other_key.key = "/registry/pods/default/b".into();
        let first = events.get(event(5000, r#"{"metadata":{"name":"a"}}"#, None));
        let second = events.get(other_key);
        assert_eq!(first.object().unwrap()["metadata"]["name"], "a");
        assert_eq!(second.object().unwrap()["metadata"]["name"], "b");
        let corrupt = events.get(event(1000, "not json", Some("also not")));
        assert!(corrupt.object().is_none() && corrupt.json().is_none());
        assert!(corrupt.replaced() && corrupt.before().is_none());
    }
}
