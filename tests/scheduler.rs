//! The scheduler inside `wasmkube server`, with real node agents: unbound pods are spread over the nodes that
//! fit them and run; pods that fit nowhere say why.

mod common;

use common::{NodeAgent, Server, create_pod, wait_for, wasm_app};
use serde_json::{Value, json};

fn batch_pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"restartPolicy": "Never",
                    "containers": [{"name": "main", "image": format!("file://{}", wasm_app("wasm32-wasip1", "batch").display()),
                                    "resources": {"requests": {"cpu": "100m", "memory": "16Mi"}}}]}})
}

#[test]
fn unbound_pods_are_spread_over_the_nodes_and_run() {
    let server = Server::start();
    let _a = NodeAgent::start(&server, "n1");
    let _b = NodeAgent::start(&server, "n2");
    for i in 0..4 {
        create_pod(&server, batch_pod(&format!("p{i}")));
    }
    let mut nodes = Vec::new();
    for i in 0..4 {
        let done = wait_for(&server, &format!("p{i}"), "Succeeded", |p| {
            p["status"]["phase"] == "Succeeded"
        });
        nodes.push(done["spec"]["nodeName"].as_str().unwrap().to_owned());
    }
    assert!(
        nodes.contains(&"n1".to_owned()) && nodes.contains(&"n2".to_owned()),
        "all on one node: {nodes:?}"
    );
    let reasons = common::event_reasons(&server, "p0");
    assert!(reasons.iter().any(|r| r == "Scheduled"), "{reasons:?}");
}

#[test]
fn node_selectors_pick_the_node_and_pods_that_fit_nowhere_are_unschedulable() {
    let server = Server::start();
    let _a = NodeAgent::start(&server, "n1");
    let _b = NodeAgent::start(&server, "n2");
    let mut pinned = batch_pod("pinned");
    pinned["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "n2"});
    create_pod(&server, pinned);
    let done = wait_for(&server, "pinned", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(done["spec"]["nodeName"], "n2");

    let mut huge = batch_pod("huge");
    huge["spec"]["containers"][0]["resources"]["requests"]["memory"] = json!("100Ti");
    create_pod(&server, huge);
    let pending = wait_for(&server, "huge", "Unschedulable", |p| {
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
    });
    let condition = pending["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap()
        .clone();
    assert_eq!(
        condition["message"],
        "0/2 nodes are available: 2 Insufficient memory."
    );
    assert_eq!(pending["status"]["phase"], "Pending");
    // The event is recorded right after the condition is written.
    let url = format!(
        "{}/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dhuge,reason%3DFailedScheduling",
        server.url
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut events: Value = Value::Null;
    while std::time::Instant::now() < deadline {
        events = reqwest::blocking::get(&url).unwrap().json().unwrap();
        if events["items"][0].is_object() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        events["items"][0]["message"],
        "0/2 nodes are available: 2 Insufficient memory."
    );
}

#[test]
fn an_unschedulable_pod_is_placed_as_soon_as_a_node_changes_to_fit_it() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "plain");
    let mut picky = batch_pod("picky");
    picky["spec"]["nodeSelector"] = json!({"disk": "ssd"});
    create_pod(&server, picky);
    wait_for(&server, "picky", "Unschedulable", |p| {
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
    });
    // The periodic retry is 10 s away: a bind within 5 s comes from the node's change.
    let labelled = std::time::Instant::now();
    let response = reqwest::blocking::Client::new()
        .patch(format!("{}/api/v1/nodes/plain", server.url))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"metadata": {"labels": {"disk": "ssd"}}}"#)
        .send()
        .unwrap();
    assert!(response.status().is_success());
    let bound = wait_for(&server, "picky", "bound", |p| {
        p["spec"]["nodeName"] == "plain"
    });
    assert!(
        labelled.elapsed() < std::time::Duration::from_secs(5),
        "bound only after {:?}",
        labelled.elapsed()
    );
    assert_eq!(bound["spec"]["nodeName"], "plain");
}
