//! A mutex kept in the store, so servers sharing one store (several apiservers on one etcd) take turns: held
//! while its key exists, taken by creating the key (`Expect::Absent`), released by deleting it at the revision
//! that took it. A holder that died without releasing leaves a key whose expiry passes; the next taker replaces
//! it by compare-and-swap, so only one of several waiters gets it.

use super::{Expect, Revision, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a holder may keep the lock before others may take it: well past any write's timeout.
pub const LOCK_TTL: Duration = Duration::from_secs(30);

/// The longest a waiter waits for the lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// What the lock's key holds.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    /// Who holds it (for people reading the store).
    holder: String,
    /// Milliseconds since the Unix epoch after which the lock may be taken over.
    expires_ms: u128,
}

/// A held store lock; dropping it releases the key (in the background when not released with
/// [`StoreLockGuard::release`]).
pub struct StoreLockGuard {
    store: Arc<dyn Store>,
    key: String,
    revision: Option<Revision>,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// Takes the lock at `key` for `holder`, waiting (up to [`LOCK_WAIT`]) while another holds it.
pub async fn acquire(
    store: Arc<dyn Store>,
    key: String,
    holder: &str,
) -> Result<StoreLockGuard, StoreError> {
    let value = serde_json::to_vec(&Holder {
        holder: holder.to_owned(),
        expires_ms: now_ms() + LOCK_TTL.as_millis(),
    })
    .map_err(|e| StoreError::Backend(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        let expect = match store.get(&key)? {
            None => Expect::Absent,
            Some(current) if expired(&current.value) => Expect::Revision(current.mod_revision),
            Some(_) => {
                if tokio::time::Instant::now() + pause > deadline {
                    return Err(StoreError::Timeout(format!(
                        "waited {} s for the lock {key}",
                        LOCK_WAIT.as_secs()
                    )));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
                continue;
            }
        };
        match store.put(key.clone(), value.clone(), expect).await {
            Ok(revision) => {
                return Ok(StoreLockGuard {
                    store,
                    key,
                    revision: Some(revision),
                });
            }
            Err(StoreError::AlreadyExists(_) | StoreError::Conflict { .. }) => continue,
            Err(other) => return Err(other),
        }
    }
}

/// Whether a lock's value says its holder's time is up (an unreadable value counts as expired).
fn expired(value: &[u8]) -> bool {
    serde_json::from_slice::<Holder>(value).map_or(true, |h| h.expires_ms <= now_ms())
}

impl StoreLockGuard {
    /// Releases the lock now.
    pub async fn release(mut self) {
        if let Some(revision) = self.revision.take() {
            release(&*self.store, self.key.clone(), revision).await;
        }
    }
}

async fn release(store: &dyn Store, key: String, revision: Revision) {
    if let Err(error) = store.delete(key.clone(), Expect::Revision(revision)).await {
        tracing::warn!(%key, %error, "could not release a store lock; it expires by itself");
    }
}

impl Drop for StoreLockGuard {
    fn drop(&mut self) {
        if let Some(revision) = self.revision.take() {
            let store = self.store.clone();
            let key = std::mem::take(&mut self.key);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { release(&*store, key, revision).await });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RedbStore, RedbStoreConfig};

    fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        Arc::new(RedbStore::open(&dir.path().join("db"), RedbStoreConfig::default()).unwrap())
    }

    #[tokio::test]
    async fn a_second_taker_waits_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let first = acquire(store.clone(), "/lock".into(), "a").await.unwrap();
        let waiter = tokio::spawn(acquire(store.clone(), "/lock".into(), "b"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        first.release().await;
        let second = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        second.release().await;
        assert!(store.get("/lock").unwrap().is_none());
    }

    #[tokio::test]
    async fn a_lock_whose_holder_died_is_taken_once_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let stale = serde_json::to_vec(&Holder {
            holder: "gone".into(),
            expires_ms: now_ms() - 1,
        })
        .unwrap();
        store
            .put("/lock".into(), stale, Expect::Absent)
            .await
            .unwrap();
        let guard = tokio::time::timeout(
            Duration::from_secs(2),
            acquire(store.clone(), "/lock".into(), "b"),
        )
        .await
        .unwrap()
        .unwrap();
        let held: Holder =
            serde_json::from_slice(&store.get("/lock").unwrap().unwrap().value).unwrap();
        assert_eq!(held.holder, "b");
        drop(guard);
    }
}
