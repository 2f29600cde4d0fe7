//! An in-memory copy of a store's keys and of its recent changes, fed by the store's own change stream: what
//! the etcd backend serves reads, paged lists and watches from, as kube-apiserver's watch cache serves from
//! memory what it watched. Pure: no IO, no clock but the instants it is given.

use super::{Event, EventKind, KeyValue, ListRequest, ListResult, Revision, StoreError};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// One change kept in the history, with what a list in the past needs.
#[derive(Debug, Clone)]
struct Change {
    event: Event,
    /// The revision of the value the change replaced or removed (0: the key did not exist).
    prev_revision: Revision,
    /// When the mirror saw it.
    seen: Instant,
}

/// A key's state at some revision: its mod revision and value, or none.
type KeyState<'a> = Option<(Revision, &'a Arc<[u8]>)>;

/// The keys at one revision and the changes that led there from `oldest`.
#[derive(Debug, Default)]
pub(super) struct Mirror {
    keys: BTreeMap<String, (Revision, Arc<[u8]>)>,
    history: VecDeque<Change>,
    revision: Revision,
    oldest: Revision,
}

impl Mirror {
    /// A mirror of `items`, the whole keyspace read at `revision`; its history starts there.
    pub(super) fn load(items: Vec<KeyValue>, revision: Revision) -> Self {
        Self {
            keys: items
                .into_iter()
                .map(|kv| (kv.key, (kv.mod_revision, Arc::from(kv.value))))
                .collect(),
            history: VecDeque::new(),
            revision,
            oldest: revision,
        }
    }

    /// The revision the mirror is at.
    pub(super) fn revision(&self) -> Revision {
        self.revision
    }

    /// Every change after this revision is in the history.
    pub(super) fn oldest(&self) -> Revision {
        self.oldest
    }

    /// Applies one change made at `revision` (a put of `value`, or a delete when `None`); returns its event,
    /// or `None` when it changes nothing the mirror holds (a delete of a key it does not have, or a change
    /// older than the mirror's revision). Several changes may share a revision (one etcd transaction).
    pub(super) fn apply(
        &mut self,
        key: String,
        value: Option<Arc<[u8]>>,
        revision: Revision,
        seen: Instant,
    ) -> Option<Event> {
        if revision < self.revision || revision <= self.oldest {
            return None;
        }
        let previous = self.keys.get(&key).cloned();
        let (event, prev_revision) = match (value, previous) {
            (Some(value), previous) => {
                self.keys.insert(key.clone(), (revision, value.clone()));
                let prev_revision = previous.as_ref().map_or(0, |(r, _)| *r);
                let event = Event {
                    revision,
                    kind: EventKind::Put,
                    key,
                    value,
                    prev: previous.map(|(_, v)| v),
                };
                (event, prev_revision)
            }
            (None, Some((prev_revision, value))) => {
                self.keys.remove(&key);
                let event = Event {
                    revision,
                    kind: EventKind::Delete,
                    key,
                    value,
                    prev: None,
                };
                (event, prev_revision)
            }
            (None, None) => return None,
        };
        self.revision = self.revision.max(revision);
        self.history.push_back(Change {
            event: event.clone(),
            prev_revision,
            seen,
        });
        Some(event)
    }

    /// The store has reached `revision` with no change the mirror has not seen (a progress notification).
    pub(super) fn advance(&mut self, revision: Revision) {
        self.revision = self.revision.max(revision);
    }

    /// Drops the history at or before `upto`, and the oldest changes beyond `capacity` or seen before
    /// `seen_before`.
    pub(super) fn forget(&mut self, upto: Revision, seen_before: Option<Instant>, capacity: usize) {
        let upto = upto.min(self.revision);
        while let Some(first) = self.history.front() {
            let old = first.event.revision <= upto
                || self.history.len() > capacity
                || seen_before.is_some_and(|cutoff| first.seen < cutoff);
            if !old {
                break;
            }
            self.oldest = first.event.revision;
            self.history.pop_front();
        }
        if self.history.is_empty() || upto > self.oldest {
            self.oldest = self.oldest.max(upto);
        }
    }

    /// One key's current value.
    pub(super) fn get(&self, key: &str) -> Option<KeyValue> {
        self.keys.get(key).map(|(revision, value)| KeyValue {
            key: key.to_owned(),
            value: value.to_vec(),
            mod_revision: *revision,
        })
    }

    /// A list, at the newest revision or at one the history still reaches.
    pub(super) fn list(&self, request: &ListRequest) -> Result<ListResult, StoreError> {
        let revision = request.revision.unwrap_or(self.revision);
        if revision > self.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        if revision < self.oldest {
            return Err(StoreError::Expired {
                requested: revision,
                compacted: self.oldest,
            });
        }
        let start = match &request.start_after {
            Some(after) => format!("{after}\0"),
            None => request.prefix.clone(),
        };
        let in_range = |key: &str| key >= start.as_str() && key.starts_with(&request.prefix);
        // Every key changed since `revision` had, at `revision`, what its first later change replaced.
        let mut snapshot: BTreeMap<&str, KeyState<'_>> = BTreeMap::new();
        for change in self.changes_since(revision) {
            let event = &change.event;
            if in_range(&event.key) && !snapshot.contains_key(event.key.as_str()) {
                let before = match event.kind {
                    EventKind::Put => event.prev.as_ref(),
                    EventKind::Delete => Some(&event.value),
                };
                snapshot.insert(&event.key, before.map(|v| (change.prev_revision, v)));
            }
        }
        let present = self
            .keys
            .range::<str, _>((
                std::ops::Bound::Included(start.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(key, _)| key.starts_with(&request.prefix))
            .filter(|(key, _)| !snapshot.contains_key(key.as_str()))
            .map(|(key, (revision, value))| (key.as_str(), Some((*revision, value))));
        let mut merged: BTreeMap<&str, KeyState<'_>> = present.collect();
        merged.extend(snapshot);
        let limit = if request.limit == 0 {
            usize::MAX
        } else {
            request.limit
        };
        let mut existing = merged
            .into_iter()
            .filter_map(|(key, state)| state.map(|s| (key, s)));
        let items = existing
            .by_ref()
            .take(limit)
            .map(|(key, (mod_revision, value))| KeyValue {
                key: key.to_owned(),
                value: value.to_vec(),
                mod_revision,
            })
            .collect();
        Ok(ListResult {
            items,
            revision,
            more: existing.next().is_some(),
        })
    }

    /// The changes under `prefix` after `after`, at most about `max` (a revision's changes are never split);
    /// with the revision they reach and whether more follow.
    pub(super) fn changes_after(
        &self,
        prefix: &str,
        after: Revision,
        max: usize,
    ) -> Result<(Vec<Event>, Revision, bool), StoreError> {
        if after < self.oldest {
            return Err(StoreError::Expired {
                requested: after,
                compacted: self.oldest,
            });
        }
        let mut events = Vec::new();
        let mut upto = after;
        for change in self.changes_since(after) {
            let revision = change.event.revision;
            if events.len() >= max && revision != upto {
                return Ok((events, upto, true));
            }
            upto = revision;
            if change.event.key.starts_with(prefix) {
                events.push(change.event.clone());
            }
        }
        Ok((events, self.revision.max(after), false))
    }

    fn changes_since(&self, revision: Revision) -> impl Iterator<Item = &Change> {
        let first = self
            .history
            .partition_point(|change| change.event.revision <= revision);
        self.history.range(first..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(mirror: &mut Mirror, key: &str, value: &str, revision: Revision) -> Option<Event> {
        mirror.apply(
            key.into(),
            Some(Arc::from(value.as_bytes())),
            revision,
            Instant::now(),
        )
    }

    fn keys(result: &ListResult) -> Vec<(String, String, Revision)> {
        result
            .items
            .iter()
            .map(|kv| {
                let value = String::from_utf8_lossy(&kv.value).into_owned();
                (kv.key.clone(), value, kv.mod_revision)
            })
            .collect()
    }

    #[test]
    fn a_list_in_the_past_undoes_the_changes_since() {
        let mut mirror = Mirror::load(
            vec![KeyValue {
                key: "/a".into(),
                value: b"a1".to_vec(),
                mod_revision: 3,
            }],
            5,
        );
        put(&mut mirror, "/b", "b1", 6);
        put(&mut mirror, "/a", "a2", 7);
        mirror.apply("/b".into(), None, 8, Instant::now());
        put(&mut mirror, "/c", "c1", 9);
        let at = |revision| {
            let request = ListRequest {
                prefix: "/".into(),
                revision: Some(revision),
                ..Default::default()
            };
            keys(&mirror.list(&request).unwrap())
        };
        let own = |k: &str, v: &str, r| (k.to_owned(), v.to_owned(), r);
        assert_eq!(at(5), [own("/a", "a1", 3)]);
        assert_eq!(at(6), [own("/a", "a1", 3), own("/b", "b1", 6)]);
        assert_eq!(at(7), [own("/a", "a2", 7), own("/b", "b1", 6)]);
        assert_eq!(at(9), [own("/a", "a2", 7), own("/c", "c1", 9)]);
        let paged = mirror
            .list(&ListRequest {
                prefix: "/".into(),
                start_after: Some("/a".into()),
                limit: 1,
                revision: Some(7),
            })
            .unwrap();
        assert_eq!(
            (keys(&paged), paged.more),
            (vec![own("/b", "b1", 6)], false)
        );
        assert!(matches!(
            mirror.list(&ListRequest {
                revision: Some(4),
                ..Default::default()
            }),
            Err(StoreError::Expired {
                requested: 4,
                compacted: 5
            })
        ));
        assert!(matches!(
            mirror.list(&ListRequest {
                revision: Some(10),
                ..Default::default()
            }),
            Err(StoreError::FutureRevision { .. })
        ));
    }

    #[test]
    fn changes_come_after_a_revision_by_prefix_and_are_forgotten_in_order() {
        let mut mirror = Mirror::load(Vec::new(), 1);
        for (i, key) in ["/p/1", "/n/1", "/p/2", "/p/3"].iter().enumerate() {
            put(&mut mirror, key, "x", i as Revision + 2);
        }
        let (events, upto, more) = mirror.changes_after("/p/", 2, 1).unwrap();
        let revisions: Vec<Revision> = events.iter().map(|e| e.revision).collect();
        assert_eq!((revisions, upto, more), (vec![4], 4, true));
        let (events, upto, more) = mirror.changes_after("/p/", 4, 10).unwrap();
        assert_eq!((events.len(), upto, more), (1, 5, false));
        // A change older than the mirror (a feed that reconnected too far back) is ignored.
        assert!(put(&mut mirror, "/p/1", "y", 2).is_none());
        assert_eq!(mirror.get("/p/1").unwrap().value, b"x");
        mirror.forget(3, None, usize::MAX);
        assert_eq!(mirror.oldest(), 3);
        assert!(matches!(
            mirror.changes_after("/", 2, 10),
            Err(StoreError::Expired {
                requested: 2,
                compacted: 3
            })
        ));
        mirror.forget(0, None, 1);
        assert_eq!(mirror.oldest(), 4);
        assert_eq!(mirror.changes_after("/", 4, 10).unwrap().0.len(), 1);
    }

    #[test]
    fn events_carry_the_previous_value_and_deletes_the_removed_one() {
        let mut mirror = Mirror::load(Vec::new(), 0);
        assert_eq!(put(&mut mirror, "/k", "1", 1).unwrap().prev, None);
        let update = put(&mut mirror, "/k", "2", 2).unwrap();
        assert_eq!(update.prev.as_deref(), Some(&b"1"[..]));
        let delete = mirror.apply("/k".into(), None, 3, Instant::now()).unwrap();
        assert_eq!(
            (delete.kind, &delete.value[..]),
            (EventKind::Delete, &b"2"[..])
        );
        assert!(mirror.apply("/k".into(), None, 4, Instant::now()).is_none());
        assert_eq!(mirror.get("/k"), None);
    }
}
