//! The revisioned key-value store with etcd semantics that every object lives in.
//!
//! One global revision grows by one per committed write; each key remembers the revision of its last write
//! (its `mod_revision`, which the apiserver exposes as `metadata.resourceVersion`). Writes can be made
//! conditional on that revision (compare-and-swap). A watch from revision R replays the retained history after
//! R and then follows live writes, with no gaps and no duplicates; history older than the retention window is
//! compacted, and asking for it fails with [`StoreError::Expired`].

mod etcd_endpoints;
mod etcd_store;
pub mod lock;
mod metered;
mod mirror;
mod redb_store;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use std::sync::Arc;
use tokio::sync::mpsc;

pub use etcd_store::{EtcdStore, EtcdStoreConfig};
pub use metered::metered;
pub use redb_store::{RedbStore, RedbStoreConfig};

/// A store revision: 0 before the first write, then +1 per committed write.
pub type Revision = u64;

/// One key's current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key, e.g. `/registry/pods/default/web-0`.
    pub key: String,
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The revision of the last write to this key.
    pub mod_revision: Revision,
}

/// What a write may require of the key's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist (create).
    Absent,
    /// The key must exist, at any revision.
    Present,
    /// The key must exist and have been last written at exactly this revision (compare-and-swap).
    Revision(Revision),
}

/// Whether a change wrote or removed its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or overwritten.
    Put,
    /// The key was removed.
    Delete,
}

/// One committed change, as a watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The revision of this change.
    pub revision: Revision,
    /// Put or delete.
    pub kind: EventKind,
    /// The key changed.
    pub key: String,
    /// For a put the new value; for a delete the value the key had when it was removed.
    pub value: Arc<[u8]>,
    /// For a put, the value the key had before (none if the put created it); none for a delete.
    pub prev: Option<Arc<[u8]>>,
}

/// The result of a (possibly paged) list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    /// The items, in key order.
    pub items: Vec<KeyValue>,
    /// The revision the list is a consistent snapshot of.
    pub revision: Revision,
    /// Whether more items follow the last one returned.
    pub more: bool,
}

/// What a list asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListRequest {
    /// Only keys that start with this prefix.
    pub prefix: String,
    /// Start strictly after this key (paging).
    pub start_after: Option<String>,
    /// At most this many items (0 = no limit).
    pub limit: usize,
    /// Read at this revision instead of the newest (paging stays consistent by reading every page at the
    /// revision of the first).
    pub revision: Option<Revision>,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A create found the key already there.
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// An update or delete found no such key.
    #[error("key {0} not found")]
    NotFound(String),
    /// A compare-and-swap found the key at another revision.
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        /// The key written.
        key: String,
        /// The revision the writer expected.
        expected: Revision,
        /// The revision the key has.
        actual: Revision,
    },
    /// The revision asked for is older than the retained history.
    #[error("revision {requested} has been compacted (oldest retained is {compacted})")]
    Expired {
        /// The revision asked for.
        requested: Revision,
        /// Everything at or before this revision is gone.
        compacted: Revision,
    },
    /// The revision asked for has not happened yet.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The newest committed revision.
        current: Revision,
    },
    /// The store has shut down.
    #[error("the store is closed")]
    Closed,
    /// The store's servers cannot be reached or cannot serve (etcd without quorum).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer within the request timeout.
    #[error("the store did not answer in time: {0}")]
    Timeout(String),
    /// The database failed.
    #[error("database failure: {0}")]
    Backend(String),
}

/// A stream of committed changes, in revision order.
pub type WatchStream = BoxStream<'static, Result<Event, StoreError>>;

/// A revisioned key-value store with etcd semantics.
pub trait Store: Send + Sync + 'static {
    /// Writes `value` at `key` if the key's state matches `expect`; returns the write's revision.
    fn put(
        &self,
        key: String,
        value: Vec<u8>,
        expect: Expect,
    ) -> BoxFuture<'_, Result<Revision, StoreError>>;

    /// Removes `key` if its state matches `expect` (`Absent` is not meaningful here and behaves as `Present`);
    /// returns the revision of the delete and the value the key had.
    fn delete(
        &self,
        key: String,
        expect: Expect,
    ) -> BoxFuture<'_, Result<(Revision, KeyValue), StoreError>>;

    /// Reads one key at the newest revision.
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Lists keys under a prefix as a consistent snapshot.
    fn list(&self, request: &ListRequest) -> Result<ListResult, StoreError>;

    /// Streams every change under `prefix` after revision `after`, then live changes.
    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    /// The newest committed revision.
    fn current_revision(&self) -> Revision;

    /// The revision at or before which history has been discarded.
    fn compacted_revision(&self) -> Revision;

    /// Discards history at or before `upto` (etcd's Compact).
    fn compact(&self, upto: Revision) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Waits until reads see every write acknowledged before the call, whoever made it (a store that more
    /// than one process writes serves reads from a copy that follows it).
    fn catch_up(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// Where a watch task sends its watcher's events.
type WatchSender = mpsc::Sender<Result<Event, StoreError>>;

/// One read of history for a watcher: the events after a revision, the revision they reach, whether more
/// follow.
type HistoryPage = Result<(Vec<Event>, Revision, bool), StoreError>;

/// What a store's live channel carries to its watch tasks.
#[derive(Clone)]
enum Feed {
    /// One committed batch of changes, in revision order.
    Changes(Arc<Vec<Event>>),
    /// The store's copy was read again whole: a watcher cannot know what it missed.
    Reset,
}

/// Feeds one watcher: the history after `last` (`read` gives it a page at a time), then live batches; back to
/// the history when it falls behind the live channel, [`StoreError::Expired`] (history since `compacted()`)
/// when the history no longer reaches it or the store was reset.
async fn run_watch(
    prefix: String,
    mut last: Revision,
    mut live: tokio::sync::broadcast::Receiver<Feed>,
    out: WatchSender,
    mut read: impl FnMut(&str, Revision) -> HistoryPage,
    compacted: impl Fn() -> Revision,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        if !replay(&out, &mut last, |after| read(&prefix, after)).await {
            return;
        }
        loop {
            let feed = tokio::select! {
                feed = live.recv() => feed,
                () = out.closed() => return,
            };
            match feed {
                Ok(Feed::Changes(batch)) => {
                    if !send_live(&batch, &prefix, &mut last, &out).await {
                        return;
                    }
                }
                Ok(Feed::Reset) => {
                    let error = StoreError::Expired {
                        requested: last,
                        compacted: compacted(),
                    };
                    let _ = out.send(Err(error)).await;
                    return;
                }
                // Behind the live channel: back to the history.
                Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => {
                    let _ = out.send(Err(StoreError::Closed)).await;
                    return;
                }
            }
        }
    }
}

/// Sends a watcher the history after `last` a page at a time until it is caught up, moving `last`; false when
/// the watch is over (the history failed, and the watcher was told, or the watcher has gone).
async fn replay(
    out: &WatchSender,
    last: &mut Revision,
    mut read: impl FnMut(Revision) -> HistoryPage,
) -> bool {
    loop {
        let (events, upto, more) = match read(*last) {
            Ok(page) => page,
            Err(error) => {
                let _ = out.send(Err(error)).await;
                return false;
            }
        };
        for event in events {
            if out.send(Ok(event)).await.is_err() {
                return false;
            }
        }
        *last = upto;
        if !more {
            return true;
        }
    }
}

/// Sends a watcher the events of a live batch that are after `last` and under `prefix`, moving `last`; false
/// when the watcher has gone.
async fn send_live(batch: &[Event], prefix: &str, last: &mut Revision, out: &WatchSender) -> bool {
    for event in batch {
        if event.revision <= *last {
            continue;
        }
        *last = event.revision;
        if event.key.starts_with(prefix) && out.send(Ok(event.clone())).await.is_err() {
            return false;
        }
    }
    true
}
