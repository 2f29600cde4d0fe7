//! The redb store's etcd semantics, on a real redb file.

use futures::StreamExt;
use std::time::Duration;
use wasmkube_control::store::{
    EventKind, Expect, ListRequest, RedbStore, RedbStoreConfig, Store, StoreError,
};

fn open(dir: &tempfile::TempDir) -> RedbStore {
    RedbStore::open(&dir.path().join("store.redb"), RedbStoreConfig::default()).expect("open store")
}

#[tokio::test]
async fn every_write_gets_the_next_revision_and_keys_remember_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(store.current_revision(), 0);
    let a = store
        .put(
            "/registry/pods/default/a".into(),
            b"1".to_vec(),
            Expect::Absent,
        )
        .await
        .unwrap();
    let b = store
        .put(
            "/registry/pods/default/b".into(),
            b"2".to_vec(),
            Expect::Absent,
        )
        .await
        .unwrap();
    assert_eq!((a, b), (1, 2));
    let a2 = store
        .put(
            "/registry/pods/default/a".into(),
            b"3".to_vec(),
            Expect::Revision(1),
        )
        .await
        .unwrap();
    assert_eq!(a2, 3);
    let got = store.get("/registry/pods/default/a").unwrap().unwrap();
    assert_eq!((got.value.as_slice(), got.mod_revision), (&b"3"[..], 3));
    assert_eq!(store.current_revision(), 3);
}

#[tokio::test]
async fn create_of_an_existing_key_and_stale_compare_and_swap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .put("/k".into(), b"1".to_vec(), Expect::Absent)
        .await
        .unwrap();
    let err = store
        .put("/k".into(), b"2".to_vec(), Expect::Absent)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
    store
        .put("/k".into(), b"2".to_vec(), Expect::Revision(1))
        .await
        .unwrap();
    let err = store
        .put("/k".into(), b"3".to_vec(), Expect::Revision(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 1,
                actual: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = store
        .delete("/k".into(), Expect::Revision(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let err = store
        .put("/missing".into(), b"x".to_vec(), Expect::Present)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let (rev, old) = store
        .delete("/k".into(), Expect::Revision(2))
        .await
        .unwrap();
    assert_eq!((rev, old.value.as_slice()), (3, &b"2"[..]));
    assert!(store.get("/k").unwrap().is_none());
    // Refused writes take no revision.
    assert_eq!(store.current_revision(), 3);
}

#[tokio::test]
async fn concurrent_compare_and_swap_lets_exactly_one_writer_win() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .put("/counter".into(), b"0".to_vec(), Expect::Absent)
        .await
        .unwrap();
    let attempts = (0..32).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .put(
                    "/counter".into(),
                    format!("{i}").into_bytes(),
                    Expect::Revision(1),
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

#[tokio::test]
async fn paged_list_stays_consistent_while_keys_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..10 {
        store
            .put(format!("/registry/cm/ns/k{i}"), vec![i], Expect::Absent)
            .await
            .unwrap();
    }
    store
        .put("/registry/other/x".into(), b"x".to_vec(), Expect::Absent)
        .await
        .unwrap();
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
    store
        .put(
            "/registry/cm/ns/k55".into(),
            b"new".to_vec(),
            Expect::Absent,
        )
        .await
        .unwrap();
    store
        .put(
            "/registry/cm/ns/k8".into(),
            b"changed".to_vec(),
            Expect::Present,
        )
        .await
        .unwrap();
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

#[tokio::test]
async fn watch_replays_history_after_a_revision_then_follows_live_writes_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..5u8 {
        store
            .put(format!("/registry/pods/ns/p{i}"), vec![i], Expect::Absent)
            .await
            .unwrap();
        store
            .put(format!("/registry/nodes/n{i}"), vec![i], Expect::Absent)
            .await
            .unwrap();
    }
    // Revision 4 is the third write; pods written after it are at 5, 7, 9.
    let mut watch = store.watch("/registry/pods/", 4).unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..200u8 {
                store
                    .put(
                        format!("/registry/pods/ns/live{i}"),
                        vec![i],
                        Expect::Absent,
                    )
                    .await
                    .unwrap();
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
    let revisions: Vec<u64> = seen.iter().map(|e| e.revision).collect();
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

#[tokio::test]
async fn a_watcher_that_falls_far_behind_still_gets_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut watch = store.watch("/", 0).unwrap();
    // Far more batches than the live channel holds, while the watcher reads nothing.
    let writes = (0..3000u32).map(|i| {
        let store = store.clone();
        async move {
            store
                .put(format!("/k/{i}"), vec![1], Expect::Absent)
                .await
                .unwrap()
        }
    });
    futures::future::join_all(writes).await;
    for expected in 1..=3000u64 {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(event.revision, expected);
    }
}

#[tokio::test]
async fn watch_and_paged_list_from_a_compacted_revision_fail_as_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..10u8 {
        store
            .put(format!("/k/{i}"), vec![i], Expect::Absent)
            .await
            .unwrap();
    }
    store.compact(6).await.unwrap();
    assert_eq!(store.compacted_revision(), 6);
    let err = store.watch("/k/", 5).err().expect("watch from 5 must fail");
    assert!(
        matches!(
            err,
            StoreError::Expired {
                requested: 5,
                compacted: 6
            }
        ),
        "{err}"
    );
    let err = store
        .list(&ListRequest {
            prefix: "/k/".into(),
            revision: Some(3),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Expired { .. }), "{err}");
    let mut watch = store.watch("/k/", 6).unwrap();
    let event = watch.next().await.unwrap().unwrap();
    assert_eq!(event.revision, 7);
}

#[tokio::test]
async fn history_older_than_the_window_is_compacted_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let config = RedbStoreConfig {
        history_window: Duration::from_millis(100),
        compaction_interval: Duration::from_millis(50),
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
async fn the_store_reopens_with_its_keys_and_revision() {
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
