//! The store's etcd semantics, one suite run on each backend: a real redb file, a real one-member etcd and a
//! real three-member etcd cluster (Debian's etcd-server on loopback ports). Revisions are checked relative to
//! where each store starts (etcd's first is 1, redb's 0). Then what only one backend has: redb's reopening and
//! background compaction; etcd's shared keyspace between stores, member loss and unreachable servers.

// Shared with the other suites; not every helper is used here.
#[allow(dead_code)]
#[path = "../../tests/common/etcd.rs"]
mod etcd;

use etcd::EtcdCluster;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use wasmkube_control::store::{
    EtcdStore, EtcdStoreConfig, EventKind, Expect, ListRequest, RedbStore, RedbStoreConfig, Store,
    StoreError,
};

/// A store under test and what keeps its backend alive.
struct Opened {
    store: Arc<dyn Store>,
    _backend: Box<dyn std::any::Any + Send>,
}

fn redb() -> Opened {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("store.redb"), RedbStoreConfig::default())
        .expect("open store");
    Opened {
        store: Arc::new(store),
        _backend: Box::new(dir),
    }
}

async fn connect(cluster: &EtcdCluster) -> EtcdStore {
    EtcdStore::connect(EtcdStoreConfig::new(cluster.endpoints()))
        .await
        .expect("connect to etcd")
}

async fn etcd(members: usize) -> Opened {
    let cluster = EtcdCluster::start(members);
    let store = connect(&cluster).await;
    Opened {
        store: Arc::new(store),
        _backend: Box::new(cluster),
    }
}

/// Each case, run on every backend.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod on_redb {
            $(#[tokio::test]
            async fn $case() {
                super::cases::$case(&super::redb().store).await;
            })*
        }
        mod on_etcd {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let opened = super::etcd(1).await;
                super::cases::$case(&opened.store).await;
            })*
        }
        mod on_etcd_cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let opened = super::etcd(3).await;
                super::cases::$case(&opened.store).await;
            })*
        }
    };
}

suite!(
    every_write_gets_the_next_revision_and_keys_remember_theirs,
    create_of_an_existing_key_and_stale_compare_and_swap_are_refused,
    concurrent_compare_and_swap_lets_exactly_one_writer_win,
    paged_list_stays_consistent_while_keys_change,
    watch_replays_history_after_a_revision_then_follows_live_writes_without_gaps,
    a_watcher_that_falls_far_behind_still_gets_every_event,
    watch_and_paged_list_from_a_compacted_revision_fail_as_expired,
);

mod cases {
    use super::*;

    type Shared = Arc<dyn Store>;

    async fn put(store: &Shared, key: &str, value: &[u8], expect: Expect) -> u64 {
        store
            .put(key.into(), value.to_vec(), expect)
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"))
    }

    pub async fn every_write_gets_the_next_revision_and_keys_remember_theirs(store: &Shared) {
        let base = store.current_revision();
        let a = put(store, "/registry/pods/default/a", b"1", Expect::Absent).await;
        let b = put(store, "/registry/pods/default/b", b"2", Expect::Absent).await;
        assert_eq!((a, b), (base + 1, base + 2));
        let a2 = put(store, "/registry/pods/default/a", b"3", Expect::Revision(a)).await;
        assert_eq!(a2, base + 3);
        let got = store.get("/registry/pods/default/a").unwrap().unwrap();
        assert_eq!((got.value.as_slice(), got.mod_revision), (&b"3"[..], a2));
        assert_eq!(store.current_revision(), base + 3);
    }

    pub async fn create_of_an_existing_key_and_stale_compare_and_swap_are_refused(store: &Shared) {
        let first = put(store, "/k", b"1", Expect::Absent).await;
        let err = store
            .put("/k".into(), b"2".to_vec(), Expect::Absent)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
        let second = put(store, "/k", b"2", Expect::Revision(first)).await;
        let err = store
            .put("/k".into(), b"3".to_vec(), Expect::Revision(first))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { expected, actual, .. } if expected == first && actual == second),
            "{err}"
        );
        let err = store
            .delete("/k".into(), Expect::Revision(first))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        let err = store
            .put("/missing".into(), b"x".to_vec(), Expect::Present)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err}");
        let err = store
            .delete("/missing".into(), Expect::Present)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err}");
        let (rev, old) = store
            .delete("/k".into(), Expect::Revision(second))
            .await
            .unwrap();
        assert_eq!(
            (rev, old.value.as_slice(), old.mod_revision),
            (second + 1, &b"2"[..], second)
        );
        assert!(store.get("/k").unwrap().is_none());
        // Refused writes take no revision.
        assert_eq!(store.current_revision(), second + 1);
    }

    pub async fn concurrent_compare_and_swap_lets_exactly_one_writer_win(store: &Shared) {
        let created = put(store, "/counter", b"0", Expect::Absent).await;
        let attempts = (0..32).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put(
                        "/counter".into(),
                        format!("{i}").into_bytes(),
                        Expect::Revision(created),
                    )
                    .await
            })
        });
        let results = futures::future::join_all(attempts).await;
        let wins = results
            .into_iter()
            .filter(|r| matches!(r, Ok(Ok(_))))
            .count();
        assert_eq!(wins, 1);
    }

    pub async fn paged_list_stays_consistent_while_keys_change(store: &Shared) {
        for i in 0..10 {
            put(
                store,
                &format!("/registry/cm/ns/k{i}"),
                &[i],
                Expect::Absent,
            )
            .await;
        }
        put(store, "/registry/other/x", b"x", Expect::Absent).await;
        let first = store
            .list(&ListRequest {
                prefix: "/registry/cm/".into(),
                limit: 4,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(first.items.len(), 4);
        assert!(first.more);
        // Change the world between pages: delete a later key, add one, overwrite one.
        store
            .delete("/registry/cm/ns/k7".into(), Expect::Present)
            .await
            .unwrap();
        put(store, "/registry/cm/ns/k55", b"new", Expect::Absent).await;
        put(store, "/registry/cm/ns/k8", b"changed", Expect::Present).await;
        let mut keys: Vec<String> = first.items.iter().map(|kv| kv.key.clone()).collect();
        let mut after = first.items.last().map(|kv| kv.key.clone());
        loop {
            let page = store
                .list(&ListRequest {
                    prefix: "/registry/cm/".into(),
                    start_after: after.clone(),
                    limit: 4,
                    revision: Some(first.revision),
                })
                .unwrap();
            assert_eq!(page.revision, first.revision);
            for kv in &page.items {
                if kv.key.ends_with("k8") {
                    assert_eq!(
                        kv.value,
                        vec![8],
                        "a page must show the value at the first page's revision"
                    );
                }
            }
            keys.extend(page.items.iter().map(|kv| kv.key.clone()));
            after = page.items.last().map(|kv| kv.key.clone());
            if !page.more {
                break;
            }
        }
        let expected: Vec<String> = (0..10).map(|i| format!("/registry/cm/ns/k{i}")).collect();
        assert_eq!(keys, expected);
        let now = store
            .list(&ListRequest {
                prefix: "/registry/cm/".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(now.items.len(), 10);
        assert!(now.items.iter().any(|kv| kv.key.ends_with("k55")));
    }

    pub async fn watch_replays_history_after_a_revision_then_follows_live_writes_without_gaps(
        store: &Shared,
    ) {
        let base = store.current_revision();
        for i in 0..5u8 {
            put(
                store,
                &format!("/registry/pods/ns/p{i}"),
                &[i],
                Expect::Absent,
            )
            .await;
            put(
                store,
                &format!("/registry/nodes/n{i}"),
                &[i],
                Expect::Absent,
            )
            .await;
        }
        // base + 4 is the fourth write; pods written after it are at base + 5, 7, 9.
        let mut watch = store.watch("/registry/pods/", base + 4).unwrap();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..200u8 {
                    put(
                        &store,
                        &format!("/registry/pods/ns/live{i}"),
                        &[i],
                        Expect::Absent,
                    )
                    .await;
                }
                store
                    .delete("/registry/pods/ns/p0".into(), Expect::Present)
                    .await
                    .unwrap();
            })
        };
        let mut seen = Vec::new();
        while seen.len() < 3 + 200 + 1 {
            let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            seen.push(event);
        }
        writer.await.unwrap();
        let revisions: Vec<u64> = seen.iter().map(|e| e.revision - base).collect();
        assert_eq!(&revisions[..3], &[5, 7, 9]);
        assert!(
            revisions.windows(2).all(|w| w[0] < w[1]),
            "in order, no duplicates"
        );
        assert!(
            revisions[3..].windows(2).all(|w| w[1] == w[0] + 1),
            "no gaps among live writes"
        );
        let last = seen.last().unwrap();
        assert_eq!(
            (last.kind, last.key.as_str(), &last.value[..]),
            (EventKind::Delete, "/registry/pods/ns/p0", &[0u8][..])
        );
    }

    pub async fn a_watcher_that_falls_far_behind_still_gets_every_event(store: &Shared) {
        let base = store.current_revision();
        let mut watch = store.watch("/", base).unwrap();
        // Far more batches than the live channel holds, while the watcher reads nothing.
        let writes = (0..3000u32).map(|i| {
            let store = store.clone();
            async move { put(&store, &format!("/k/{i}"), &[1], Expect::Absent).await }
        });
        futures::future::join_all(writes).await;
        for expected in 1..=3000u64 {
            let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(event.revision, base + expected);
        }
    }

    pub async fn watch_and_paged_list_from_a_compacted_revision_fail_as_expired(store: &Shared) {
        let base = store.current_revision();
        for i in 0..10u8 {
            put(store, &format!("/k/{i}"), &[i], Expect::Absent).await;
        }
        store.compact(base + 6).await.unwrap();
        assert_eq!(store.compacted_revision(), base + 6);
        let err = store
            .watch("/k/", base + 5)
            .err()
            .expect("a watch from before the compaction must fail");
        assert!(
            matches!(err, StoreError::Expired { requested, compacted } if requested == base + 5 && compacted == base + 6),
            "{err}"
        );
        let err = store
            .list(&ListRequest {
                prefix: "/k/".into(),
                revision: Some(base + 3),
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::Expired { .. }), "{err}");
        let mut watch = store.watch("/k/", base + 6).unwrap();
        let event = watch.next().await.unwrap().unwrap();
        assert_eq!(event.revision, base + 7);
    }
}

fn open(dir: &tempfile::TempDir) -> RedbStore {
    RedbStore::open(&dir.path().join("store.redb"), RedbStoreConfig::default()).expect("open store")
}

#[tokio::test]
async fn redb_compacts_history_older_than_the_window_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let config = RedbStoreConfig {
        history_window: Duration::from_millis(100),
        compaction_interval: Duration::from_millis(50),
        ..RedbStoreConfig::default()
    };
    let store = RedbStore::open(&dir.path().join("store.redb"), config).unwrap();
    for i in 0..5u8 {
        store
            .put(format!("/k/{i}"), vec![i], Expect::Absent)
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.compacted_revision() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "history was never compacted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(
        store.watch("/k/", 1),
        Err(StoreError::Expired { .. })
    ));
    // Current values are untouched by compaction.
    assert_eq!(
        store
            .list(&ListRequest {
                prefix: "/k/".into(),
                ..Default::default()
            })
            .unwrap()
            .items
            .len(),
        5
    );
}

#[tokio::test]
async fn redb_reopens_with_its_keys_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        store
            .put("/a".into(), b"1".to_vec(), Expect::Absent)
            .await
            .unwrap();
        store
            .put("/b".into(), b"2".to_vec(), Expect::Absent)
            .await
            .unwrap();
    }
    // The writer thread lets go of the file once the last handle is dropped.
    let mut reopened = None;
    for _ in 0..250 {
        match RedbStore::open(&dir.path().join("store.redb"), RedbStoreConfig::default()) {
            Ok(store) => {
                reopened = Some(store);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let store = reopened.expect("the store file is released within 5 seconds");
    assert_eq!(store.current_revision(), 2);
    assert_eq!(store.get("/b").unwrap().unwrap().value, b"2");
    assert_eq!(
        store
            .put("/c".into(), vec![], Expect::Absent)
            .await
            .unwrap(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stores_on_one_cluster_share_keys_revisions_and_compare_and_swap() {
    let cluster = EtcdCluster::start(1);
    let (a, b) = (connect(&cluster).await, connect(&cluster).await);
    let mut watch = b.watch("/registry/", b.current_revision()).unwrap();
    let created = a
        .put("/registry/x".into(), b"1".to_vec(), Expect::Absent)
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the other store sees the write")
        .unwrap()
        .unwrap();
    assert_eq!(
        (event.revision, event.key.as_str()),
        (created, "/registry/x")
    );
    assert_eq!(b.get("/registry/x").unwrap().unwrap().mod_revision, created);
    // Both write on the same revision: etcd lets exactly one win.
    let (from_a, from_b) = tokio::join!(
        a.put(
            "/registry/x".into(),
            b"a".to_vec(),
            Expect::Revision(created)
        ),
        b.put(
            "/registry/x".into(),
            b"b".to_vec(),
            Expect::Revision(created)
        ),
    );
    assert!(from_a.is_ok() != from_b.is_ok(), "{from_a:?} {from_b:?}");
    let err = b
        .put("/registry/x".into(), b"c".to_vec(), Expect::Absent)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_cluster_that_loses_a_member_keeps_every_acknowledged_write() {
    let mut cluster = EtcdCluster::start(3);
    let store = Arc::new(connect(&cluster).await);
    let started = tokio::time::Instant::now();
    let (killed_at, run_for) = (Duration::from_millis(300), Duration::from_secs(9));
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut results = Vec::new();
            let mut i = 0u32;
            while started.elapsed() < run_for {
                let key = format!("/registry/w/{i}");
                let sent = started.elapsed();
                let result = store.put(key.clone(), vec![1], Expect::Absent).await;
                results.push((sent, key, result.map_err(|e| e.to_string())));
                i += 1;
            }
            results
        })
    };
    tokio::time::sleep(killed_at).await;
    cluster.kill(0);
    let results = writer.await.unwrap();
    let failed: Vec<&String> = results
        .iter()
        .filter_map(|(_, _, r)| r.as_ref().err())
        .collect();
    // Writes go on with two of three members: those sent from a few seconds on all succeed (one in
    // flight to the lost leader may time out: it may or may not have been applied).
    let settled: Vec<_> = results
        .iter()
        .filter(|(at, _, _)| *at > killed_at + Duration::from_secs(4))
        .collect();
    assert!(!settled.is_empty());
    assert!(
        settled.iter().all(|(_, _, r)| r.is_ok()),
        "{} writes failed, the last ones too: {:?}",
        failed.len(),
        failed.last()
    );
    // A store connected afterwards, to the members left, reads every acknowledged write.
    let after = EtcdStore::connect(EtcdStoreConfig::new(cluster.endpoints()[1..].to_vec()))
        .await
        .unwrap();
    let acknowledged: Vec<&String> = results
        .iter()
        .filter(|(_, _, r)| r.is_ok())
        .map(|(_, key, _)| key)
        .collect();
    assert!(
        acknowledged.len() > 100,
        "{} writes acknowledged",
        acknowledged.len()
    );
    for key in &acknowledged {
        assert!(
            after.get(key).unwrap().is_some(),
            "{key} was acknowledged but is lost"
        );
    }
    // The lost member, back, catches up: a store reading only from it has them all too.
    cluster.restart(0);
    cluster.wait_healthy(0);
    let back = EtcdStore::connect(EtcdStoreConfig::new(cluster.endpoints()[..1].to_vec()))
        .await
        .unwrap();
    let missing = acknowledged
        .iter()
        .filter(|key| back.get(key).unwrap().is_none())
        .count();
    assert_eq!(missing, 0, "the restarted member lacks acknowledged writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_is_a_clear_error_within_the_timeout() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut config = EtcdStoreConfig::new(vec![url]);
    config.request_timeout = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let err = EtcdStore::connect(config)
        .await
        .err()
        .expect("no etcd there");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, StoreError::Unavailable(_) | StoreError::Timeout(_)),
        "{err}"
    );
}
