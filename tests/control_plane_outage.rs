//! A control plane that goes away and comes back, with a real agent and a Wasm pod: the pod keeps serving
//! meanwhile, nothing is evicted when the control plane returns after longer than the node grace period, and the
//! agent catches up (new pods run, deletions reach it).

mod common;

use common::{NodeAgent, Server, create_pod, get_pod, wait_for, wasm_app, wasmkube};
use serde_json::json;
use std::time::{Duration, Instant};

fn hello(pod: &serde_json::Value) -> String {
    let ip = pod["status"]["podIP"].as_str().expect("podIP");
    reqwest::blocking::Client::new()
        .get(format!("http://{ip}:8080/"))
        .timeout(Duration::from_secs(5))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_else(|e| panic!("GET {ip}:8080: {e}"))
}

fn hello_pod(name: &str) -> serde_json::Value {
    let image = format!(
        "file://{}",
        wasm_app("wasm32-wasip2", "hello_http").display()
    );
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"nodeName": "edge", "containers": [{"name": "hello", "image": image,
               "ports": [{"containerPort": 8080}],
               "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}})
}

#[test]
fn pods_outlive_a_control_plane_outage_longer_than_the_grace_period() {
    let mut server = Server::start_with(&["--node-monitor-grace-period-seconds", "2"]);
    let _node = NodeAgent::start(&server, "edge");
    create_pod(&server, hello_pod("before"));
    let before = wait_for(&server, "before", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    let uid = before["metadata"]["uid"].clone();

    server.kill();
    // Twice the grace period with no control plane: the pod keeps serving.
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(4) {
        assert_eq!(hello(&before).trim(), "hello from before");
        std::thread::sleep(Duration::from_millis(500));
    }

    server.restart();
    // The returning control plane gives the agent a grace period of its own: the node stays Ready and the pod
    // is neither evicted nor restarted.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(5) {
        let pod = get_pod(&server, "before").expect("the pod survives the outage");
        assert_eq!(pod["metadata"]["uid"], uid);
        assert!(
            pod["metadata"]["deletionTimestamp"].is_null(),
            "evicted: {pod}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let (ok, nodes, err) = wasmkube(&server, &["get", "nodes"]);
    assert!(ok, "{err}");
    assert!(
        nodes.contains("edge") && nodes.contains(" Ready"),
        "{nodes}"
    );
    assert_eq!(hello(&before).trim(), "hello from before");

    // The agent follows the API again: a new pod runs, a deletion stops the old one.
    create_pod(&server, hello_pod("after"));
    let after = wait_for(&server, "after", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    assert_eq!(hello(&after).trim(), "hello from after");
    let (ok, _, err) = wasmkube(&server, &["delete", "pod", "before"]);
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_pod(&server, "before").is_some() {
        assert!(
            Instant::now() < deadline,
            "the deleted pod was never removed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
