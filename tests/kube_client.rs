//! kube-rs, the Rust client our own components use, against the apiserver: typed CRUD, list and the watcher
//! runtime (streaming lists and plain list+watch).

mod common;

use common::Server;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config};
use std::collections::BTreeMap;
use std::time::Duration;

fn client(server: &Server) -> Client {
    Client::try_from(Config::new(server.url.parse().unwrap())).unwrap()
}

fn configmap(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
        ..Default::default()
    }
}

#[tokio::test]
async fn kube_rs_creates_lists_patches_and_reads_typed_objects() {
    let server = Server::api_only();
    let configmaps: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    configmaps
        .create(&PostParams::default(), &configmap("one"))
        .await
        .unwrap();
    configmaps
        .create(&PostParams::default(), &configmap("two"))
        .await
        .unwrap();
    let list = configmaps
        .list(&ListParams::default().limit(1))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.continue_.is_some());
    let patched = configmaps
        .patch(
            "two",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"k": "w"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["k"], "w");
    let error = configmaps.get("three").await.unwrap_err();
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 404 && s.reason == "NotFound"),
        "{error:?}"
    );
    let applied: Api<Deployment> = Api::namespaced(client(&server), "default");
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "hello.wasm"}]}}}
    }))
    .unwrap();
    let created = applied
        .patch(
            "web",
            &PatchParams::apply("test"),
            &Patch::Apply(&deployment),
        )
        .await
        .unwrap();
    assert_eq!(created.spec.replicas, Some(1));
}

async fn watcher_sees_initial_state_and_changes(config: watcher::Config) {
    let server = Server::api_only();
    let configmaps: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    configmaps
        .create(&PostParams::default(), &configmap("before"))
        .await
        .unwrap();
    let mut events = watcher::watcher(configmaps.clone(), config).boxed();
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Event::Init => {}
            Event::InitApply(cm) => initial.push(cm.metadata.name.unwrap()),
            Event::InitDone => break,
            other => panic!("unexpected {other:?} before InitDone"),
        }
    }
    assert_eq!(initial, ["before"]);
    configmaps
        .create(&PostParams::default(), &configmap("after"))
        .await
        .unwrap();
    configmaps
        .delete("before", &Default::default())
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Event::Apply(cm) => seen.push(format!("apply {}", cm.metadata.name.unwrap())),
            Event::Delete(cm) => seen.push(format!("delete {}", cm.metadata.name.unwrap())),
            _ => {}
        }
    }
    assert_eq!(seen, ["apply after", "delete before"]);
}

#[tokio::test]
async fn the_kube_rs_watcher_follows_objects_with_list_then_watch() {
    watcher_sees_initial_state_and_changes(watcher::Config::default()).await;
}

#[tokio::test]
async fn the_kube_rs_watcher_follows_objects_with_streaming_lists() {
    watcher_sees_initial_state_and_changes(watcher::Config::default().streaming_lists()).await;
}

/// Collects names from a subscription until `wanted` are all seen (or 10 s pass).
async fn names_until(
    changes: &mut (impl futures::Stream<Item = std::sync::Arc<ConfigMap>> + Unpin),
    wanted: &[&str],
) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !wanted.iter().all(|w| seen.iter().any(|s| s == w)) {
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Ok(Some(object)) => seen.push(object.metadata.name.clone().unwrap_or_default()),
            _ => break,
        }
    }
    seen
}

#[tokio::test]
async fn one_shared_informer_feeds_every_subscriber_even_one_that_joins_late() {
    let server = Server::api_only();
    let configmaps: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    for name in ["one", "two"] {
        configmaps
            .create(&PostParams::default(), &configmap(name))
            .await
            .unwrap();
    }
    let informer =
        wasmkube_control::cache::Informer::start(configmaps.clone(), watcher::Config::default());
    let mut early = Box::pin(informer.subscribe());
    let (cache, late) = informer.follow();
    let mut late = Box::pin(late);
    cache.ready().await.unwrap();
    // Both see what existed before; the late one gets it from the cache.
    assert!(names_until(&mut early, &["one", "two"]).await.len() >= 2);
    let mut joined = Box::pin(informer.subscribe());
    assert!(names_until(&mut joined, &["one", "two"]).await.len() >= 2);
    // A change and a deletion reach every subscriber; the cache follows.
    configmaps
        .create(&PostParams::default(), &configmap("three"))
        .await
        .unwrap();
    configmaps.delete("one", &Default::default()).await.unwrap();
    for subscriber in [&mut early, &mut joined] {
        let seen = names_until(subscriber, &["three", "one"]).await;
        assert!(
            seen.contains(&"three".to_owned()) && seen.contains(&"one".to_owned()),
            "{seen:?}"
        );
    }
    let seen = names_until(&mut late, &["one", "two", "three"]).await;
    assert!(seen.contains(&"three".to_owned()), "{seen:?}");
    let mut cached: Vec<String> = cache
        .state()
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    cached.sort();
    assert_eq!(cached, ["three", "two"]);
    // Dropped, the informer stops watching: its subscribers end.
    drop(informer);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while early.next().await.is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "a subscriber of a dropped informer did not end"
    );
}

#[tokio::test]
async fn an_informer_hands_its_subscribers_the_cached_object_itself_not_a_copy() {
    let server = Server::api_only();
    let configmaps: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    let informer =
        wasmkube_control::cache::Informer::start(configmaps.clone(), watcher::Config::default());
    let (cache, changes) = informer.follow();
    let mut changes = Box::pin(changes);
    cache.ready().await.unwrap();
    configmaps
        .create(&PostParams::default(), &configmap("shared"))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match changes.next().await {
                Some(object) if object.metadata.name.as_deref() == Some("shared") => break object,
                Some(_) => {}
                None => panic!("the subscription ended"),
            }
        }
    })
    .await
    .expect("the subscriber never saw the new ConfigMap");
    let cached = cache
        .get(&ObjectRef::new("shared").within("default"))
        .expect("the ConfigMap is cached");
    // With 10,000 pods a second copy per subscriber-held object was ~12 KiB a pod.
    assert!(
        std::sync::Arc::ptr_eq(&seen, &cached),
        "the subscriber got a copy of the cached object"
    );
}
