//! The etcd backend: every write is an etcd transaction (compare-and-swap on the key's mod revision, so
//! revisions are etcd's own), and reads, paged lists and watches are served from a [`Mirror`] of the whole
//! keyspace that one etcd watch keeps current, as kube-apiserver's watch cache does. A write returns once the
//! mirror has it, so an apiserver reads its own writes; several apiservers on one etcd see each other's
//! writes as fast as etcd's watch delivers them, and their compare-and-swap checks are etcd's.
//!
//! When the watch breaks, the feed resumes from the mirror's revision; when etcd has compacted that far, the
//! mirror is read again whole and every watcher ends with [`StoreError::Expired`] (clients list again), as
//! Kubernetes' reflectors do after a 410.

use super::etcd_endpoints::{COMPACT_KEY, Endpoints};
use super::mirror::Mirror;
use super::{
    Expect, Feed, KeyValue, ListRequest, ListResult, Revision, Store, StoreError, WatchStream,
    run_watch,
};
use etcd_client::{
    Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use std::collections::VecDeque;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

/// Keys read per request when the mirror is loaded.
const LOAD_PAGE: i64 = 1000;
/// Changes sent per step of a watch's replay from the mirror.
const REPLAY_CHUNK: usize = 1024;

/// How the etcd store connects and keeps its history.
#[derive(Debug, Clone)]
pub struct EtcdStoreConfig {
    /// etcd's client URLs (`http://host:2379`).
    pub endpoints: Vec<String>,
    /// How long a request to etcd may take before it fails (as 504).
    pub request_timeout: Duration,
    /// How long changes stay in the history that watches and paged lists read from, and how far back etcd
    /// keeps its own.
    pub history_window: Duration,
    /// The most changes the history holds, whatever their age.
    pub history_capacity: usize,
    /// How often history older than the window is dropped and etcd compacted.
    pub compaction_interval: Duration,
}

impl EtcdStoreConfig {
    /// Kubernetes' defaults (etcd compacted every 5 minutes) for these endpoints.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            request_timeout: Duration::from_secs(5),
            history_window: Duration::from_secs(300),
            history_capacity: 100_000,
            compaction_interval: Duration::from_secs(30),
        }
    }
}

/// The etcd-backed [`Store`].
#[derive(Clone)]
pub struct EtcdStore {
    shared: Arc<Shared>,
}

struct Shared {
    endpoints: Endpoints,
    config: EtcdStoreConfig,
    mirror: RwLock<Mirror>,
    /// Each batch of changes the mirror applied, or a reset.
    feed: broadcast::Sender<Feed>,
    /// The revision the mirror has applied.
    applied: watch::Sender<Revision>,
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| h.revision().max(0) as Revision)
}

fn key_value(kv: &etcd_client::KeyValue) -> Option<KeyValue> {
    Some(KeyValue {
        key: kv.key_str().ok()?.to_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision().max(0) as Revision,
    })
}

impl EtcdStore {
    /// Connects to etcd, reads the keyspace into the mirror and starts following it. Fails if etcd cannot be
    /// reached within the request timeout.
    pub fn connect(
        config: EtcdStoreConfig,
    ) -> wasmkube_core::EntryFuture<'static, Result<Self, StoreError>> {
        Box::pin(Self::connect_now(config))
    }

    async fn connect_now(config: EtcdStoreConfig) -> Result<Self, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(config.request_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(2), config.request_timeout)
            .with_require_leader(true);
        let endpoints = Endpoints::new(&config.endpoints, options).await?;
        let mirror = load(&endpoints).await?;
        let revision = mirror.revision();
        let (feed, _) = broadcast::channel(1024);
        let (applied, _) = watch::channel(revision);
        let shared = Arc::new(Shared {
            endpoints,
            config,
            mirror: RwLock::new(mirror),
            feed,
            applied,
        });
        tokio::spawn(follow(Arc::downgrade(&shared)));
        tokio::spawn(compact_periodically(Arc::downgrade(&shared)));
        Ok(Self { shared })
    }
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Mirror> {
        self.mirror.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Mirror> {
        self.mirror.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits (at most the request timeout) until the mirror has applied `revision`; whether it did. A write
    /// waits so that this process reads what it wrote, but does not fail when the feed is late: etcd has made
    /// it durable.
    async fn until_applied(&self, revision: Revision) -> bool {
        let mut applied = self.applied.subscribe();
        matches!(
            tokio::time::timeout(
                self.config.request_timeout,
                applied.wait_for(|r| *r >= revision),
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// The condition of `expect` on `key`, as an etcd comparison.
    fn condition(key: &str, expect: Expect) -> Compare {
        match expect {
            Expect::Absent => Compare::create_revision(key, CompareOp::Equal, 0),
            Expect::Present => Compare::create_revision(key, CompareOp::Greater, 0),
            Expect::Revision(revision) => {
                Compare::mod_revision(key, CompareOp::Equal, revision as i64)
            }
        }
    }

    /// Why a conditional write was refused, from the key's state the transaction read instead.
    fn refusal(key: String, expect: Expect, response: &etcd_client::TxnResponse) -> StoreError {
        let current = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        });
        match (expect, current) {
            (Expect::Absent, _) => StoreError::AlreadyExists(key),
            (Expect::Revision(expected), Some(actual)) => StoreError::Conflict {
                key,
                expected,
                actual: actual.max(0) as Revision,
            },
            (_, _) => StoreError::NotFound(key),
        }
    }
}

/// Reads the whole keyspace at one revision, a page at a time.
async fn load(endpoints: &Endpoints) -> Result<Mirror, StoreError> {
    let mut items = Vec::new();
    let mut revision = 0;
    let mut from = b"\0".to_vec();
    loop {
        let mut options = GetOptions::new().with_from_key().with_limit(LOAD_PAGE);
        if revision > 0 {
            options = options.with_revision(revision as i64);
        }
        let page = endpoints
            .call(|client| {
                let (from, options) = (from.clone(), options.clone());
                async move { client.kv_client().get(from, Some(options)).await }
            })
            .await?;
        if revision == 0 {
            revision = revision_of(page.header());
        }
        for kv in page.kvs() {
            match key_value(kv) {
                Some(item) => items.push(item),
                None => tracing::warn!(key = ?kv.key(), "etcd key is not UTF-8; not served"),
            }
        }
        match page.kvs().last() {
            Some(last) if page.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    Ok(Mirror::load(items, revision))
}

/// Why the feed stopped.
enum Stop {
    /// etcd no longer has the changes after the mirror's revision.
    Compacted,
    /// The watch failed; resume from the mirror's revision.
    Broken(String),
    /// The store was dropped.
    Closed,
}

/// Resolves once the store is dropped (its `applied` sender with it).
async fn dropped(mut applied: watch::Receiver<Revision>) {
    while applied.changed().await.is_ok() {}
}

/// Keeps the mirror current until the store is dropped: one etcd watch of every key from the mirror's
/// revision, resumed when it breaks, and a fresh load when etcd has compacted past it.
async fn follow(shared: Weak<Shared>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match watch_once(&shared).await {
            Stop::Closed => return,
            Stop::Broken(reason) => {
                tracing::warn!(%reason, "etcd watch broke; resuming");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Stop::Compacted => {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                match load(&shared.endpoints).await {
                    Ok(mirror) => {
                        let revision = mirror.revision();
                        tracing::warn!(revision, "etcd compacted past the mirror; read it again");
                        *shared.write() = mirror;
                        let _ = shared.feed.send(Feed::Reset);
                        shared.applied.send_replace(revision);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot read etcd again");
                        tokio::time::sleep(backoff).await;
                    }
                }
            }
        }
    }
}

async fn watch_once(shared: &Weak<Shared>) -> Stop {
    let Some(store) = shared.upgrade() else {
        return Stop::Closed;
    };
    let from = store.read().revision() + 1;
    let options = WatchOptions::new()
        .with_all_keys()
        .with_start_revision(from as i64)
        .with_progress_notify();
    let closed = dropped(store.applied.subscribe());
    let opened = store
        .endpoints
        .call(|client| {
            let options = options.clone();
            async move {
                client
                    .watch_client()
                    .watch(b"\0".to_vec(), Some(options))
                    .await
            }
        })
        .await;
    drop(store);
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(error) => return Stop::Broken(error.to_string()),
    };
    tokio::pin!(closed);
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            () = &mut closed => return Stop::Closed,
        };
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => return Stop::Broken("the watch ended".into()),
            Err(error) => return Stop::Broken(error.to_string()),
        };
        if response.canceled() {
            if response.compact_revision() > 0 {
                return Stop::Compacted;
            }
            return Stop::Broken(format!("canceled: {}", response.cancel_reason()));
        }
        let Some(store) = shared.upgrade() else {
            return Stop::Closed;
        };
        store.apply(&response);
    }
}

impl Shared {
    /// Applies one watch response to the mirror and tells watchers and waiting writers.
    fn apply(&self, response: &etcd_client::WatchResponse) {
        let now = Instant::now();
        let (batch, revision) = {
            let mut mirror = self.write();
            let mut batch = Vec::with_capacity(response.events().len());
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let Ok(key) = kv.key_str() else {
                    tracing::warn!(key = ?kv.key(), "etcd key is not UTF-8; not served");
                    continue;
                };
                let value = match event.event_type() {
                    EventType::Put => Some(Arc::from(kv.value())),
                    EventType::Delete => None,
                };
                let revision = kv.mod_revision().max(0) as Revision;
                batch.extend(mirror.apply(key.to_owned(), value, revision, now));
            }
            // A response without changes that does not open the watch is a progress notification: etcd
            // has sent every change up to its revision.
            if response.events().is_empty() && !response.created() {
                mirror.advance(revision_of(response.header()));
            }
            (batch, mirror.revision())
        };
        if !batch.is_empty() && self.feed.receiver_count() > 0 {
            let _ = self.feed.send(Feed::Changes(Arc::new(batch)));
        }
        self.applied.send_replace(revision);
    }
}

/// Drops history older than the window from the mirror and compacts etcd at the revision it had one window
/// ago, taking turns with other apiservers through [`COMPACT_KEY`] as kube-apiserver's compactor does.
async fn compact_periodically(shared: Weak<Shared>) {
    let mut samples: VecDeque<(Instant, Revision)> = VecDeque::new();
    let mut compact_version = 0;
    loop {
        let Some(interval) = shared.upgrade().map(|s| s.config.compaction_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let window = shared.config.history_window;
        samples.push_back((now, shared.read().revision()));
        let mut due = None;
        while let Some(&(at, revision)) = samples.front() {
            if now.duration_since(at) < window {
                break;
            }
            due = Some(revision);
            samples.pop_front();
        }
        shared
            .write()
            .forget(0, now.checked_sub(window), shared.config.history_capacity);
        if let Some(revision) = due {
            match compact_turn(&shared, revision, compact_version).await {
                Ok(version) => compact_version = version,
                Err(error) => tracing::warn!(%error, "etcd compaction failed"),
            }
        }
    }
}

/// Compacts etcd at `revision` if this apiserver wins the round (moves [`COMPACT_KEY`]'s version from
/// `version`); returns the version it saw.
async fn compact_turn(
    shared: &Shared,
    revision: Revision,
    version: i64,
) -> Result<i64, StoreError> {
    let txn = Txn::new()
        .when([Compare::version(COMPACT_KEY, CompareOp::Equal, version)])
        .and_then([TxnOp::put(COMPACT_KEY, revision.to_string(), None)])
        .or_else([TxnOp::get(COMPACT_KEY, None)]);
    let response = shared.endpoints.transact(txn).await?;
    if !response.succeeded() {
        let seen = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.version()),
            _ => None,
        });
        return Ok(seen.unwrap_or(0));
    }
    shared.endpoints.compact(revision).await?;
    Ok(version + 1)
}

impl Store for EtcdStore {
    fn put(
        &self,
        key: String,
        value: Vec<u8>,
        expect: Expect,
    ) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(async move {
            let txn = Txn::new()
                .when([Shared::condition(&key, expect)])
                .and_then([TxnOp::put(key.as_str(), value, None)])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let response = self.shared.endpoints.transact(txn).await?;
            if !response.succeeded() {
                return Err(Shared::refusal(key, expect, &response));
            }
            let revision = revision_of(response.header());
            self.shared.until_applied(revision).await;
            Ok(revision)
        })
    }

    fn delete(
        &self,
        key: String,
        expect: Expect,
    ) -> BoxFuture<'_, Result<(Revision, KeyValue), StoreError>> {
        Box::pin(async move {
            let expect = match expect {
                Expect::Absent => Expect::Present,
                other => other,
            };
            let txn = Txn::new()
                .when([Shared::condition(&key, expect)])
                .and_then([TxnOp::delete(
                    key.as_str(),
                    Some(DeleteOptions::new().with_prev_key()),
                )])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let response = self.shared.endpoints.transact(txn).await?;
            if !response.succeeded() {
                return Err(Shared::refusal(key, expect, &response));
            }
            let removed = response.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Delete(delete) => delete.prev_kvs().first().and_then(key_value),
                _ => None,
            });
            let removed = removed.ok_or_else(|| StoreError::NotFound(key.clone()))?;
            let revision = revision_of(response.header());
            self.shared.until_applied(revision).await;
            Ok((revision, removed))
        })
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.shared.read().get(key))
    }

    fn list(&self, request: &ListRequest) -> Result<ListResult, StoreError> {
        self.shared.read().list(request)
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // Subscribe before reading history, so nothing applied in between is missed.
        let live = self.shared.feed.subscribe();
        let oldest = self.shared.read().oldest();
        if after < oldest {
            return Err(StoreError::Expired {
                requested: after,
                compacted: oldest,
            });
        }
        let (out, rx) = mpsc::channel(256);
        let (reader, compacted) = (Arc::downgrade(&self.shared), Arc::downgrade(&self.shared));
        tokio::spawn(run_watch(
            prefix.to_owned(),
            after,
            live,
            out,
            move |prefix, after| match reader.upgrade() {
                Some(store) => store.read().changes_after(prefix, after, REPLAY_CHUNK),
                None => Err(StoreError::Closed),
            },
            move || compacted.upgrade().map_or(0, |s| s.read().oldest()),
        ));
        Ok(ReceiverStream::new(rx).boxed())
    }

    fn current_revision(&self) -> Revision {
        self.shared.read().revision()
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.read().oldest()
    }

    fn catch_up(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let revision = self.shared.endpoints.current_revision().await?;
            if !self.shared.until_applied(revision).await {
                return Err(StoreError::Timeout(format!(
                    "the watch of etcd has not reached revision {revision}"
                )));
            }
            Ok(())
        })
    }

    fn compact(&self, upto: Revision) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.shared.write().forget(upto, None, usize::MAX);
            self.shared.endpoints.compact(upto).await
        })
    }
}
