//! The embedded store: one redb file holding the current keys, an append-only change log keyed by revision,
//! and the revision counters.
//!
//! All writes go through one writer thread, which drains every request waiting for it into a single redb
//! transaction: 64 concurrent writers share one fsync instead of paying 64. Each write in the batch still gets
//! its own revision and its own compare-and-swap check against the state left by the writes before it.

use super::{
    Event, EventKind, Expect, Feed, KeyValue, ListRequest, ListResult, Revision, Store, StoreError,
    WatchStream, run_watch,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

/// key → (mod_revision, value)
const KV: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("kv");
/// revision → (key, kind, unix millis, new value or empty for a delete, previous value, previous mod_revision)
type LogRow<'a> = (&'a str, u8, u64, &'a [u8], Option<&'a [u8]>, u64);
const LOG: TableDefinition<u64, LogRow> = TableDefinition::new("log");
/// "revision" and "compacted" counters.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const KIND_PUT: u8 = 0;
const KIND_DELETE: u8 = 1;
/// Largest number of requests committed in one transaction.
const MAX_BATCH: usize = 512;
/// Log entries read per step of a watch replay: each lagging watcher holds a copy of one step (value and value
/// before) while its consumer takes them, so steps are short.
const REPLAY_CHUNK: usize = 64;
/// Log entries removed per compaction transaction, so compaction never stalls writers for long.
const COMPACT_CHUNK: usize = 10_000;

/// How the redb store keeps its history, and how much of the file it keeps in memory.
#[derive(Debug, Clone)]
pub struct RedbStoreConfig {
    /// How long changes stay in the history that watches and paged lists can read from.
    pub history_window: Duration,
    /// How often history older than the window is compacted.
    pub compaction_interval: Duration,
    /// Bytes of the file redb caches in the process (what it does not, the kernel's page cache holds).
    pub cache_bytes: usize,
}

impl Default for RedbStoreConfig {
    fn default() -> Self {
        // Kubernetes' apiserver compacts etcd every 5 minutes.
        Self {
            history_window: Duration::from_secs(300),
            compaction_interval: Duration::from_secs(30),
            // redb's default, 1 GiB, filled with five minutes of pod churn: a server with 10,000 pods grew past
            // 2 GiB. The file's pages stay in the kernel's page cache beyond it, a read away. 64 MiB held
            // ~70 MB live at 5,000 pods; 16 MiB cost the scheduling benchmark (35,000 objects, a binding and an
            // Event per pod) ~10% of its pods/s.
            cache_bytes: 32 << 20,
        }
    }
}

/// The redb-backed [`Store`].
#[derive(Clone)]
pub struct RedbStore {
    shared: Arc<Shared>,
    writer: std_mpsc::Sender<WriteRequest>,
}

struct Shared {
    db: Database,
    events: broadcast::Sender<Feed>,
    revision: AtomicU64,
    compacted: AtomicU64,
}

enum WriteRequest {
    Put {
        key: String,
        value: Vec<u8>,
        expect: Expect,
        reply: oneshot::Sender<Result<Revision, StoreError>>,
    },
    Delete {
        key: String,
        expect: Expect,
        reply: oneshot::Sender<Result<(Revision, KeyValue), StoreError>>,
    },
    Compact {
        upto: Revision,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl RedbStore {
    /// Opens (or creates) the store file at `path` and starts its writer thread.
    pub fn open(path: &Path, config: RedbStoreConfig) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(config.cache_bytes)
            .create(path)
            .map_err(backend)?;
        let txn = db.begin_write().map_err(backend)?;
        let (revision, compacted) = {
            txn.open_table(KV).map_err(backend)?;
            txn.open_table(LOG).map_err(backend)?;
            let meta = txn.open_table(META).map_err(backend)?;
            (
                read_counter(&meta, "revision")?,
                read_counter(&meta, "compacted")?,
            )
        };
        txn.commit().map_err(backend)?;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            db,
            events,
            revision: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
        });
        let (writer, requests) = std_mpsc::channel();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&thread_shared, &requests, &config))
            .map_err(backend)?;
        Ok(Self { shared, writer })
    }
}

fn read_counter(
    table: &impl ReadableTable<&'static str, u64>,
    name: &str,
) -> Result<u64, StoreError> {
    Ok(table
        .get(name)
        .map_err(backend)?
        .map(|v| v.value())
        .unwrap_or(0))
}

fn writer_loop(
    shared: &Shared,
    requests: &std_mpsc::Receiver<WriteRequest>,
    config: &RedbStoreConfig,
) {
    loop {
        let first = match requests.recv_timeout(config.compaction_interval) {
            Ok(request) => request,
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                compact_by_age(shared, config.history_window);
                continue;
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        commit_batch(shared, batch);
    }
}

/// The outcome of one request inside a batch, sent once the batch is durable.
enum Reply {
    Put(
        oneshot::Sender<Result<Revision, StoreError>>,
        Result<Revision, StoreError>,
    ),
    Delete(
        oneshot::Sender<Result<(Revision, KeyValue), StoreError>>,
        Result<(Revision, KeyValue), StoreError>,
    ),
    Compact(
        oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
    ),
}

impl Reply {
    fn fail(self, error: &StoreError) -> Self {
        let copy = || StoreError::Backend(error.to_string());
        match self {
            Reply::Put(tx, _) => Reply::Put(tx, Err(copy())),
            Reply::Delete(tx, _) => Reply::Delete(tx, Err(copy())),
            Reply::Compact(tx, _) => Reply::Compact(tx, Err(copy())),
        }
    }

    fn send(self) {
        // A requester that gave up waiting is not an error of the store.
        match self {
            Reply::Put(tx, r) => drop(tx.send(r)),
            Reply::Delete(tx, r) => drop(tx.send(r)),
            Reply::Compact(tx, r) => drop(tx.send(r)),
        }
    }
}

fn check(key: &str, current: Option<Revision>, expect: Expect) -> Result<(), StoreError> {
    match (expect, current) {
        (Expect::Absent, Some(_)) => Err(StoreError::AlreadyExists(key.to_owned())),
        (Expect::Absent, None) => Ok(()),
        (Expect::Present | Expect::Revision(_), None) => Err(StoreError::NotFound(key.to_owned())),
        (Expect::Revision(expected), Some(actual)) if expected != actual => {
            Err(StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual,
            })
        }
        (Expect::Present | Expect::Revision(_), Some(_)) => Ok(()),
    }
}

fn commit_batch(shared: &Shared, batch: Vec<WriteRequest>) {
    let mut replies = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    let mut compacted_to = None;
    let outcome = (|| -> Result<Revision, StoreError> {
        let txn = shared.db.begin_write().map_err(backend)?;
        let revision = {
            let mut kv = txn.open_table(KV).map_err(backend)?;
            let mut log = txn.open_table(LOG).map_err(backend)?;
            let mut meta = txn.open_table(META).map_err(backend)?;
            let mut revision = read_counter(&meta, "revision")?;
            let now = now_millis();
            for request in batch {
                match request {
                    WriteRequest::Put {
                        key,
                        value,
                        expect,
                        reply,
                    } => {
                        let current = kv.get(key.as_str()).map_err(backend)?.map(|g| {
                            let (rev, bytes) = g.value();
                            (rev, bytes.to_vec())
                        });
                        if let Err(e) = check(&key, current.as_ref().map(|c| c.0), expect) {
                            replies.push(Reply::Put(reply, Err(e)));
                            continue;
                        }
                        revision += 1;
                        kv.insert(key.as_str(), (revision, value.as_slice()))
                            .map_err(backend)?;
                        let (prev_rev, prev) = match &current {
                            Some((rev, bytes)) => (*rev, Some(bytes.as_slice())),
                            None => (0, None),
                        };
                        log.insert(
                            revision,
                            (
                                key.as_str(),
                                KIND_PUT,
                                now,
                                value.as_slice(),
                                prev,
                                prev_rev,
                            ),
                        )
                        .map_err(backend)?;
                        events.push(Event {
                            revision,
                            kind: EventKind::Put,
                            key,
                            value: value.into(),
                            prev: current.map(|(_, bytes)| bytes.into()),
                        });
                        replies.push(Reply::Put(reply, Ok(revision)));
                    }
                    WriteRequest::Delete { key, expect, reply } => {
                        let current = kv.get(key.as_str()).map_err(backend)?.map(|g| {
                            let (rev, bytes) = g.value();
                            (rev, bytes.to_vec())
                        });
                        let expect = if expect == Expect::Absent {
                            Expect::Present
                        } else {
                            expect
                        };
                        let (prev_rev, prev) =
                            match check(&key, current.as_ref().map(|c| c.0), expect) {
                                Ok(()) => current.unwrap_or_default(),
                                Err(e) => {
                                    replies.push(Reply::Delete(reply, Err(e)));
                                    continue;
                                }
                            };
                        revision += 1;
                        kv.remove(key.as_str()).map_err(backend)?;
                        log.insert(
                            revision,
                            (
                                key.as_str(),
                                KIND_DELETE,
                                now,
                                &[][..],
                                Some(prev.as_slice()),
                                prev_rev,
                            ),
                        )
                        .map_err(backend)?;
                        let kept = KeyValue {
                            key: key.clone(),
                            value: prev.clone(),
                            mod_revision: prev_rev,
                        };
                        events.push(Event {
                            revision,
                            kind: EventKind::Delete,
                            key,
                            value: prev.into(),
                            prev: None,
                        });
                        replies.push(Reply::Delete(reply, Ok((revision, kept))));
                    }
                    WriteRequest::Compact { upto, reply } => {
                        let done = compact_in(&mut log, &mut meta, upto.min(revision));
                        if let Ok(Some(rev)) = &done {
                            compacted_to = Some(*rev);
                        }
                        replies.push(Reply::Compact(reply, done.map(|_| ())));
                    }
                }
            }
            meta.insert("revision", revision).map_err(backend)?;
            revision
        };
        let committing = std::time::Instant::now();
        txn.commit().map_err(backend)?;
        super::metered::backend_committed(committing.elapsed());
        Ok(revision)
    })();
    match outcome {
        Ok(revision) => {
            shared.revision.store(revision, Ordering::SeqCst);
            if let Some(rev) = compacted_to {
                shared.compacted.store(rev, Ordering::SeqCst);
            }
            if !events.is_empty() {
                // No receiver just means nobody watches right now.
                let _ = shared.events.send(Feed::Changes(Arc::new(events)));
            }
            replies.into_iter().for_each(Reply::send);
        }
        Err(error) => {
            tracing::error!(%error, "store commit failed");
            replies.into_iter().for_each(|r| r.fail(&error).send());
        }
    }
}

/// Removes log entries at or before `upto` (at most [`COMPACT_CHUNK`] of them); returns the new compacted
/// revision if it moved.
fn compact_in(
    log: &mut redb::Table<u64, LogRow>,
    meta: &mut redb::Table<&str, u64>,
    upto: Revision,
) -> Result<Option<Revision>, StoreError> {
    let compacted = read_counter(meta, "compacted")?;
    if upto <= compacted {
        return Ok(None);
    }
    let doomed: Vec<u64> = log
        .range(..=upto)
        .map_err(backend)?
        .take(COMPACT_CHUNK)
        .map(|entry| entry.map(|(rev, _)| rev.value()).map_err(backend))
        .collect::<Result<_, _>>()?;
    for rev in &doomed {
        log.remove(*rev).map_err(backend)?;
    }
    let reached = if doomed.len() == COMPACT_CHUNK {
        doomed.last().copied().unwrap_or(upto)
    } else {
        upto
    };
    meta.insert("compacted", reached).map_err(backend)?;
    Ok(Some(reached))
}

/// Compacts every change older than the history window.
fn compact_by_age(shared: &Shared, window: Duration) {
    let cutoff = now_millis().saturating_sub(window.as_millis() as u64);
    let upto = (|| -> Result<Option<Revision>, StoreError> {
        let txn = shared.db.begin_read().map_err(backend)?;
        let log = txn.open_table(LOG).map_err(backend)?;
        let mut upto = None;
        for entry in log.iter().map_err(backend)? {
            let (rev, row) = entry.map_err(backend)?;
            if row.value().2 >= cutoff {
                break;
            }
            upto = Some(rev.value());
        }
        Ok(upto)
    })();
    match upto {
        Ok(Some(upto)) => {
            let (reply, _ignored) = oneshot::channel();
            commit_batch(shared, vec![WriteRequest::Compact { upto, reply }]);
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "store compaction failed"),
    }
}

fn prefix_end(prefix: &str) -> Option<String> {
    // Keys are ASCII paths; the smallest string above every key with this prefix bumps the last byte.
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

impl Shared {
    /// Reads up to [`REPLAY_CHUNK`] changes after `after`; returns them with the highest revision read and
    /// whether the log had more.
    fn read_log(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<(Vec<Event>, Revision, bool), StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        let compacted = read_counter(&meta, "compacted")?;
        if after < compacted {
            return Err(StoreError::Expired {
                requested: after,
                compacted,
            });
        }
        let log = txn.open_table(LOG).map_err(backend)?;
        let mut events = Vec::new();
        let mut last = after;
        for (read, entry) in log.range(after + 1..).map_err(backend)?.enumerate() {
            if read == REPLAY_CHUNK {
                return Ok((events, last, true));
            }
            let (rev, row) = entry.map_err(backend)?;
            let (key, kind, _, value, prev, _) = row.value();
            last = rev.value();
            if !key.starts_with(prefix) {
                continue;
            }
            let (kind, value, prev) = if kind == KIND_DELETE {
                (EventKind::Delete, prev.unwrap_or_default(), None)
            } else {
                (EventKind::Put, value, prev.map(Into::into))
            };
            events.push(Event {
                revision: last,
                kind,
                key: key.to_owned(),
                value: value.into(),
                prev,
            });
        }
        Ok((events, last, false))
    }
}

impl Store for RedbStore {
    fn put(
        &self,
        key: String,
        value: Vec<u8>,
        expect: Expect,
    ) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.writer
                .send(WriteRequest::Put {
                    key,
                    value,
                    expect,
                    reply,
                })
                .map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn delete(
        &self,
        key: String,
        expect: Expect,
    ) -> BoxFuture<'_, Result<(Revision, KeyValue), StoreError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.writer
                .send(WriteRequest::Delete { key, expect, reply })
                .map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let txn = self.shared.db.begin_read().map_err(backend)?;
        let kv = txn.open_table(KV).map_err(backend)?;
        Ok(kv.get(key).map_err(backend)?.map(|g| {
            let (mod_revision, value) = g.value();
            KeyValue {
                key: key.to_owned(),
                value: value.to_vec(),
                mod_revision,
            }
        }))
    }

    fn list(&self, request: &ListRequest) -> Result<ListResult, StoreError> {
        let txn = self.shared.db.begin_read().map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        let current = read_counter(&meta, "revision")?;
        let compacted = read_counter(&meta, "compacted")?;
        let revision = request.revision.unwrap_or(current);
        if revision > current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current,
            });
        }
        if revision < compacted {
            return Err(StoreError::Expired {
                requested: revision,
                compacted,
            });
        }
        let start = match &request.start_after {
            Some(after) => format!("{after}\0"),
            None => request.prefix.clone(),
        };
        let end = prefix_end(&request.prefix);
        let in_range = |key: &str| key >= start.as_str() && key.starts_with(&request.prefix);

        // Reading in the past: the state at `revision` of every key changed since is the previous value of
        // its first change after `revision`.
        let mut past: BTreeMap<String, Option<KeyValue>> = BTreeMap::new();
        if revision < current {
            let log = txn.open_table(LOG).map_err(backend)?;
            for entry in log.range(revision + 1..).map_err(backend)? {
                let (_, row) = entry.map_err(backend)?;
                let (key, _, _, _, prev, prev_rev) = row.value();
                if in_range(key) && !past.contains_key(key) {
                    let before = prev.map(|v| KeyValue {
                        key: key.to_owned(),
                        value: v.to_vec(),
                        mod_revision: prev_rev,
                    });
                    past.insert(key.to_owned(), before);
                }
            }
        }

        let kv = txn.open_table(KV).map_err(backend)?;
        let range = match &end {
            Some(end) => kv.range(start.as_str()..end.as_str()),
            None => kv.range(start.as_str()..),
        }
        .map_err(backend)?;
        let mut now = range.map(|entry| {
            entry.map_err(backend).map(|(k, v)| {
                let (mod_revision, value) = v.value();
                KeyValue {
                    key: k.value().to_owned(),
                    value: value.to_vec(),
                    mod_revision,
                }
            })
        });
        let mut then = past.into_iter().peekable();
        let limit = if request.limit == 0 {
            usize::MAX
        } else {
            request.limit
        };
        let mut items = Vec::new();
        let mut next_now = now.next().transpose()?;
        loop {
            // Merge the present keys with the rewritten past ones, in key order.
            let take_then = match (&next_now, then.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(n), Some((k, _))) => k.as_str() <= n.key.as_str(),
            };
            let item = if take_then {
                let (key, past_value) = then.next().expect("peeked");
                if next_now.as_ref().is_some_and(|n| n.key == key) {
                    next_now = now.next().transpose()?;
                }
                past_value
            } else {
                let item = next_now.take();
                next_now = now.next().transpose()?;
                item
            };
            if let Some(item) = item {
                if items.len() == limit {
                    return Ok(ListResult {
                        items,
                        revision,
                        more: true,
                    });
                }
                items.push(item);
            }
        }
        Ok(ListResult {
            items,
            revision,
            more: false,
        })
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // Subscribe before reading history, so nothing committed in between is missed.
        let live = self.shared.events.subscribe();
        let compacted = self.shared.compacted.load(Ordering::SeqCst);
        if after < compacted {
            return Err(StoreError::Expired {
                requested: after,
                compacted,
            });
        }
        let (out, rx) = mpsc::channel(256);
        let shared = self.shared.clone();
        tokio::spawn(run_watch(
            prefix.to_owned(),
            after,
            live,
            out,
            move |prefix, after| shared.read_log(prefix, after),
            || 0,
        ));
        Ok(ReceiverStream::new(rx).boxed())
    }

    fn current_revision(&self) -> Revision {
        self.shared.revision.load(Ordering::SeqCst)
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::SeqCst)
    }

    fn compact(&self, upto: Revision) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.writer
                .send(WriteRequest::Compact { upto, reply })
                .map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn catch_up(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        // This process is the file's only writer: what it acknowledged, it reads.
        Box::pin(async { Ok(()) })
    }
}
