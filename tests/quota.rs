//! ResourceQuota and LimitRange admission through the apiserver: defaults filled in, bounds and quotas refused
//! with Kubernetes' 403 messages, and quota usage kept in status as pods come and go.

mod common;

use common::{PODS, Server, post};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn try_create(server: &Server, pod: &Value) -> (u16, Value) {
    let response = reqwest::blocking::Client::new()
        .post(format!("{}{PODS}", server.url))
        .json(pod)
        .send()
        .unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

fn pod(name: &str, resources: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "app", "image": "app.wasm", "resources": resources}]}})
}

fn quota_used(server: &Server, name: &str) -> Value {
    let url = format!(
        "{}/api/v1/namespaces/default/resourcequotas/{name}",
        server.url
    );
    reqwest::blocking::get(url)
        .unwrap()
        .json::<Value>()
        .unwrap()["status"]["used"]
        .clone()
}

fn wait_for_used(server: &Server, name: &str, wanted: Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let used = quota_used(server, name);
        if used == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "quota {name} used {used}, wanted {wanted}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn limit_ranges_default_and_bound_containers() {
    let server = Server::start();
    post(
        &server,
        "/api/v1/namespaces/default/limitranges",
        &json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "defaults"},
                "spec": {"limits": [{"type": "Container",
                    "default": {"cpu": "500m", "memory": "128Mi"},
                    "defaultRequest": {"cpu": "100m"},
                    "max": {"cpu": "1"}}]}}),
    );
    let created = post(&server, PODS, &pod("plain", json!({})));
    let resources = &created["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources["limits"],
        json!({"cpu": "500m", "memory": "128Mi"})
    );
    assert_eq!(
        resources["requests"],
        json!({"cpu": "100m", "memory": "128Mi"})
    );
    // The class follows the defaults (requests below limits): Burstable, not BestEffort.
    assert_eq!(created["status"]["qosClass"], "Burstable");

    let (code, status) = try_create(&server, &pod("greedy", json!({"limits": {"cpu": "2"}})));
    assert_eq!(code, 403, "{status}");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "pods \"greedy\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
    );

    // Validation runs after mutating admission: a request above the default limit LimitRanger fills in
    // makes the pod invalid, as in Kubernetes.
    let (code, status) = try_create(&server, &pod("eager", json!({"requests": {"cpu": "700m"}})));
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "Pod \"eager\" is invalid: spec.containers[0].resources.requests: Invalid value: \"700m\": must be less than or equal to cpu limit of 500m"
    );
}

#[test]
fn quotas_cap_a_namespace_and_report_their_usage() {
    let server = Server::start();
    post(
        &server,
        "/api/v1/namespaces/default/resourcequotas",
        &json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute"},
                "spec": {"hard": {"pods": "2", "requests.cpu": "1", "requests.memory": "1Gi"}}}),
    );
    wait_for_used(
        &server,
        "compute",
        json!({"pods": "0", "requests.cpu": "0", "requests.memory": "0"}),
    );
    let asking =
        |name: &str, cpu: &str| pod(name, json!({"requests": {"cpu": cpu, "memory": "256Mi"}}));
    post(&server, PODS, &asking("first", "600m"));
    let (code, status) = try_create(&server, &asking("second", "600m"));
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "pods \"second\" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"
    );
    wait_for_used(
        &server,
        "compute",
        json!({"pods": "1", "requests.cpu": "600m", "requests.memory": "256Mi"}),
    );
    // kubectl shows the same refusal.
    let output = std::process::Command::new("kubectl")
        .args(["run", "third", "--image=app.wasm", "--restart=Never"])
        .args(["--overrides", r#"{"spec":{"containers":[{"name":"third","image":"app.wasm","resources":{"requests":{"cpu":"900m","memory":"1Mi"}}}]}}"#])
        .env("KUBECONFIG", server.kubeconfig())
        .output()
        .expect("kubectl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("exceeded quota: compute"), "{stderr}");

    // Once the first pod is gone its share is free again.
    let deleted = reqwest::blocking::Client::new()
        .delete(format!("{}{PODS}/first?gracePeriodSeconds=0", server.url))
        .send()
        .unwrap();
    assert!(deleted.status().is_success());
    wait_for_used(
        &server,
        "compute",
        json!({"pods": "0", "requests.cpu": "0", "requests.memory": "0"}),
    );
    post(&server, PODS, &asking("second", "600m"));

    // A quota on limits needs every container to set them.
    post(
        &server,
        "/api/v1/namespaces/default/resourcequotas",
        &json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "limits"},
                "spec": {"hard": {"limits.memory": "1Gi"}}}),
    );
    let (code, status) = try_create(&server, &asking("unlimited", "100m"));
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "pods \"unlimited\" is forbidden: failed quota: limits: must specify limits.memory for: app"
    );
}
