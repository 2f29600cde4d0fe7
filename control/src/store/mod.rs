//! The revisioned key-value store with etcd semantics that every object lives in.
//!
//! One global revision grows by one per committed write; each key remembers the revision of its last write
//! (its `mod_revision`, which the apiserver exposes as `metadata.resourceVersion`). Writes can be made
//! conditional on that revision (compare-and-swap). A watch from revision R replays the retained history after
//! R and then follows live writes, with no gaps and no duplicates; history older than the retention window is
//! compacted, and asking for it fails with [`StoreError::Expired`].

mod redb_store;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use std::sync::Arc;

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
}
