//! Acknowledged writes survive `kill -9` of the server: the store commits (fsync) before the API answers.

mod common;

use common::Server;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_write_survives_a_kill_9_and_nothing_is_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let payload = "x".repeat(2000);
    let writers: Vec<_> = (0..16)
        .map(|writer| {
            let url = format!("{}{CMS}", server.url);
            let acknowledged = acknowledged.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for i in 0.. {
                    let name = format!("w{writer}-{i}");
                    let body = json!({"metadata": {"name": name}, "data": {"payload": payload}});
                    match client.post(&url).json(&body).send().await {
                        Ok(response) if response.status() == 201 => {
                            acknowledged.lock().unwrap().insert(name);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    // Let writes flow, then kill the server in the middle of them.
    while acknowledged.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let server = Server::start_in(dir.path(), &[]);
    let list: Value = reqwest::get(format!("{}{CMS}", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = list["items"].as_array().unwrap();
    let stored: BTreeSet<String> = items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes lost after kill -9: {lost:?}"
    );
    for item in items {
        assert_eq!(
            item["data"]["payload"].as_str().map(str::len),
            Some(2000),
            "a half-written object: {item}"
        );
    }
    // Writes after the restart continue the revision sequence.
    let newest: u64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}{CMS}", server.url))
        .json(&json!({"metadata": {"name": "after"}}))
        .send()
        .await
        .unwrap();
    let created: Value = response.json().await.unwrap();
    let revision: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(revision, newest + 1);
}
