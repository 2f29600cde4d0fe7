//! Benchmark: (1) the scheduler's throughput placing 10,000 pods on 100 nodes, 30,000 on 5,000 (scheduler_perf's
//! SchedulingBasic shape), and 30,000 pods of 100 Services on 5,000 nodes in 10 zones (default spreading on).
//! Nodes are registered as objects, no agents; the scheduler runs as its own process once every pod is
//! pending. (2) end to end, the time from
//! creating a 100-replica Deployment of the HTTP hello app on 3 real node agents to all replicas Running,
//! available and answering on their pod addresses. Run with `cargo bench --bench scheduling`.

mod common;

use common::{Process, get, hello_image, spawn_wasmkube, start_server};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const REPLICAS: usize = 100;
const AGENTS: usize = 3;

async fn wait_healthy(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not come up");
}

async fn post(client: &reqwest::Client, url: &str, body: Value) {
    let response = client.post(url).json(&body).send().await.expect("post");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.text().await.unwrap_or_default()
    );
}

/// The size of the nodes and pods of a throughput run: allocatable cpu and memory of a node, requests of a pod.
struct Shape {
    node_cpu: &'static str,
    node_memory: &'static str,
    pod_cpu: &'static str,
    pod_memory: &'static str,
}

/// The first benchmark's shape: room for 110 pods a node.
const ROOMY: Shape = Shape {
    node_cpu: "32",
    node_memory: "64Gi",
    pod_cpu: "100m",
    pod_memory: "64Mi",
};

/// scheduler_perf's node and pod templates: 4 cpu / 32Gi nodes (40 pods of 100m each), 500Mi pods.
const SCHEDULER_PERF: Shape = Shape {
    node_cpu: "4",
    node_memory: "32Gi",
    pod_cpu: "100m",
    pod_memory: "500Mi",
};

/// One throughput run: `nodes` Nodes (objects only, in 10 zones, 110 pods each), `pods` pending pods, then the
/// scheduler as a process of its own; pods bound per second. With `services`, the pods belong to that many
/// Services, so default spreading (per node and per zone) scores every decision.
async fn scheduler_throughput(
    client: &reqwest::Client,
    dir: &Path,
    (nodes, pods, services): (usize, usize, usize),
    shape: &Shape,
) {
    let (url, _server) = start_server(
        &dir.join(format!("throughput-{nodes}-{pods}-{services}")),
        &["--no-scheduler", "--no-controllers"],
    );
    wait_healthy(client, &url).await;
    let url = &url;
    futures::stream::iter(0..nodes)
        .for_each_concurrent(32, |i| async move {
            let name = format!("node-{i:05}");
            post(client, &format!("{url}/api/v1/nodes"), json!({"metadata": {"name": name,
                "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": format!("zone-{}", i % 10)}},
            "status": {"allocatable": {"cpu": shape.node_cpu, "memory": shape.node_memory, "pods": "110"},
                       "capacity": {"cpu": shape.node_cpu, "memory": shape.node_memory, "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}})).await;
        })
        .await;
    for i in 0..services {
        post(
            client,
            &format!("{url}/api/v1/namespaces/default/services"),
            json!({"metadata": {"name": format!("web-{i}")},
            "spec": {"selector": {"app": format!("web-{i}")}, "ports": [{"port": 80}]}}),
        )
        .await;
    }
    let created = Instant::now();
    let pods_url = format!("{url}/api/v1/namespaces/default/pods");
    let pods_url = &pods_url;
    futures::stream::iter(0..pods)
        .for_each_concurrent(64, |i| async move {
            let labels = if services > 0 { json!({"app": format!("web-{}", i % services)}) } else { json!({}) };
            post(client, pods_url, json!({"metadata": {"name": format!("pod-{i:05}"), "labels": labels},
                "spec": {"containers": [{"name": "c", "image": "app.wasm", "resources": {"requests": {"cpu": shape.pod_cpu, "memory": shape.pod_memory}}}]}})).await;
        })
        .await;
    println!(
        "created {nodes} nodes and {pods} pending pods ({services} Services) in {:.1} s",
        created.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let _scheduler = spawn_wasmkube(&["--server", url, "scheduler"]);
    loop {
        let pending = get(
            client,
            &format!("{url}/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3D&limit=1"),
        )
        .await;
        if pending["items"]
            .as_array()
            .is_some_and(|items| items.is_empty())
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "the scheduler did not finish in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let all = get(client, &format!("{url}/api/v1/namespaces/default/pods")).await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_zone: BTreeMap<(String, usize), usize> = BTreeMap::new();
    for pod in all["items"].as_array().into_iter().flatten() {
        let node = pod["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let index: usize = node.trim_start_matches("node-").parse().unwrap_or(0);
        let app = pod["metadata"]["labels"]["app"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *per_zone.entry((app, index % 10)).or_default() += 1;
        *per_node.entry(node).or_default() += 1;
    }
    let (min, max) = (
        per_node.values().min().copied().unwrap_or(0),
        per_node.values().max().copied().unwrap_or(0),
    );
    let skew = if services > 0 {
        let per_app: BTreeMap<&str, (usize, usize)> =
            per_zone
                .iter()
                .fold(BTreeMap::new(), |mut m, ((app, _), n)| {
                    let e = m.entry(app.as_str()).or_insert((usize::MAX, 0));
                    *e = (e.0.min(*n), e.1.max(*n));
                    m
                });
        let worst = per_app.values().map(|(lo, hi)| hi - lo).max().unwrap_or(0);
        format!("; worst zone skew of one Service {worst}")
    } else {
        String::new()
    };
    println!(
        "scheduler: {pods} pods on {nodes} nodes in {elapsed:.1} s (process start and its first list included) = {:.0} pods/s; {} nodes used, pods per node {min}..{max}{skew}",
        pods as f64 / elapsed,
        per_node.len()
    );
}

/// A 100-replica Deployment on 3 real agents: from create to every replica available and answering.
async fn deployment_end_to_end(client: &reqwest::Client, dir: &Path) {
    let image = hello_image();
    let (url, _server) = start_server(&dir.join("e2e"), &[]);
    wait_healthy(client, &url).await;
    let _agents: Vec<Process> = (0..AGENTS)
        .map(|i| {
            let node_dir = dir.join(format!("agent-{i}"));
            spawn_wasmkube(&[
                "--server",
                &url,
                "node",
                "--name",
                &format!("agent-{i}"),
                "--port",
                "0",
                "--data-dir",
                &node_dir.display().to_string(),
            ])
        })
        .collect();
    loop {
        let nodes = get(client, &format!("{url}/api/v1/nodes")).await;
        let ready = nodes["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["spec"]["podCIDR"].is_string())
            .count();
        if ready == AGENTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm the agents' compilation caches with one pod each, as a cluster that already ran the app would be.
    let deployments = format!("{url}/apis/apps/v1/namespaces/default/deployments");
    let deployment = |name: &str, replicas: usize| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "hello", "image": image, "ports": [{"containerPort": 8080}],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}}})
    };
    post(client, &deployments, deployment("warm", AGENTS)).await;
    wait_available(client, &format!("{deployments}/warm"), AGENTS).await;
    let started = Instant::now();
    post(client, &deployments, deployment("hello", REPLICAS)).await;
    wait_available(client, &format!("{deployments}/hello"), REPLICAS).await;
    let available = started.elapsed().as_secs_f64();
    let pods = get(
        client,
        &format!("{url}/api/v1/namespaces/default/pods?labelSelector=app%3Dhello"),
    )
    .await;
    let addresses: Vec<String> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_owned))
        .collect();
    let answered = futures::stream::iter(addresses)
        .map(|ip| async move {
            client
                .get(format!("http://{ip}:8080/"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .buffer_unordered(32)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    let serving = started.elapsed().as_secs_f64();
    assert_eq!(answered, REPLICAS, "every replica answers");
    println!(
        "deployment: {REPLICAS} replicas on {AGENTS} agents available in {available:.2} s, all answering HTTP after {serving:.2} s"
    );
}

async fn wait_available(client: &reqwest::Client, url: &str, replicas: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let d = get(client, url).await;
        if d["status"]["availableReplicas"].as_u64() == Some(replicas as u64)
            && d["status"]["updatedReplicas"].as_u64() == Some(replicas as u64)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} not available: {}",
            d["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    runtime.block_on(async {
        deployment_end_to_end(&client, dir.path()).await;
        scheduler_throughput(&client, dir.path(), (100, 10_000, 0), &ROOMY).await;
        scheduler_throughput(&client, dir.path(), (5_000, 30_000, 0), &SCHEDULER_PERF).await;
        scheduler_throughput(&client, dir.path(), (5_000, 30_000, 100), &SCHEDULER_PERF).await;
    });
}
