//! Benchmark of one node agent: (1) from creating 1,000 pods bound to the node to each one Running (p50/p99),
//! (2) the agent's resident memory per idle HTTP pod at 1,000 pods, (3) requests/s and latency of the HTTP hello
//! app through the agent (one pod, keep-alive clients). Run with `cargo bench --bench node`.

mod common;

use common::{get, hello_image, spawn_node, start_server, wait_healthy};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PODS: usize = 1000;
const CLIENTS: usize = 32;
const LOAD_TIME: Duration = Duration::from_secs(5);

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let image = hello_image();
    let dir = tempfile::tempdir().unwrap();
    // A /20 per node: room for 1,000 pod addresses on one node.
    let (url, _server) = start_server(dir.path(), &["--node-cidr-mask-size", "20"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    runtime.block_on(wait_healthy(&client, &url));
    let agent = spawn_node(&url, "bench", &dir.path().join("node"));
    let pid = agent.0.id();
    runtime.block_on(async {
        while !get(&client, &format!("{url}/api/v1/nodes/bench")).await["spec"]["podCIDR"].is_string() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pod = |name: String| json!({"metadata": {"name": name, "labels": {"app": "hello"}}, "spec": {"nodeName": "bench", "containers": [{"name": "hello",
            "image": image, "ports": [{"containerPort": 8080}], "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}});
        // One pod first: compiles the app once (cached on disk after), as a node that ran it before.
        client.post(format!("{url}/api/v1/namespaces/default/pods")).json(&pod("warm".into())).send().await.unwrap();
        loop {
            if get(&client, &format!("{url}/api/v1/namespaces/default/pods/warm")).await["status"]["phase"] == "Running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let idle_before = resident_kib(pid);

        // (1) 1,000 pods: creation time per pod, then the first time a watch shows it Running.
        let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let running: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let watch_url = format!("{url}/api/v1/namespaces/default/pods?watch=1&labelSelector=app%3Dhello");
        let watcher = {
            let (client, running) = (client.clone(), running.clone());
            tokio::spawn(async move {
                let response = client.get(watch_url).send().await.unwrap();
                let mut lines = response.bytes_stream();
                let mut buffer = Vec::new();
                while let Some(Ok(chunk)) = lines.next().await {
                    buffer.extend_from_slice(&chunk);
                    while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buffer.drain(..=end).collect();
                        let Ok(event) = serde_json::from_slice::<Value>(&line) else { continue };
                        if event["object"]["status"]["phase"] == "Running" {
                            let name = event["object"]["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                            running.lock().unwrap().entry(name).or_insert_with(Instant::now);
                        }
                    }
                    if running.lock().unwrap().len() > PODS {
                        break;
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        futures::stream::iter(0..PODS)
            .for_each_concurrent(16, |i| {
                let (client, created, url) = (client.clone(), created.clone(), url.clone());
                let body = pod(format!("hello-{i:04}"));
                async move {
                    let name = format!("hello-{i:04}");
                    created.lock().unwrap().insert(name, Instant::now());
                    let response = client.post(format!("{url}/api/v1/namespaces/default/pods")).json(&body).send().await.unwrap();
                    assert!(response.status().is_success());
                }
            })
            .await;
        let deadline = Instant::now() + Duration::from_secs(300);
        while running.lock().unwrap().keys().filter(|k| k.starts_with("hello-")).count() < PODS {
            assert!(Instant::now() < deadline, "not every pod ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let all_running = started.elapsed().as_secs_f64();
        watcher.abort();
        let created = created.lock().unwrap().clone();
        let running = running.lock().unwrap().clone();
        let mut latencies: Vec<f64> = created
            .iter()
            .map(|(name, at)| running[name].duration_since(*at).as_secs_f64() * 1000.0)
            .collect();
        latencies.sort_by(f64::total_cmp);
        println!(
            "pod start: {PODS} pods on one node, create -> Running p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; all Running after {all_running:.2} s",
            percentile(&latencies, 0.5), percentile(&latencies, 0.99), latencies.last().copied().unwrap_or(0.0)
        );

        // (2) Memory: let the agent settle, then its resident size over the 1,000 idle HTTP pods.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_after = resident_kib(pid);
        println!(
            "memory: agent RSS {:.1} MiB with 1 pod, {:.1} MiB with {} pods: {:.1} KiB per idle HTTP pod",
            idle_before as f64 / 1024.0, idle_after as f64 / 1024.0, PODS + 1,
            (idle_after.saturating_sub(idle_before)) as f64 / PODS as f64
        );

        // (3) HTTP through the agent to one pod, keep-alive clients.
        let warm = get(&client, &format!("{url}/api/v1/namespaces/default/pods/warm")).await;
        let target = format!("http://{}:8080/", warm["status"]["podIP"].as_str().unwrap());
        let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
        let until = Instant::now() + LOAD_TIME;
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (target, latencies) = (target.clone(), latencies.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut mine = Vec::new();
                    while Instant::now() < until {
                        let sent = Instant::now();
                        let response = client.get(&target).send().await.unwrap();
                        assert!(response.status().is_success());
                        response.bytes().await.unwrap();
                        mine.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                    latencies.lock().unwrap().extend(mine);
                })
            })
            .collect();
        for worker in workers {
            worker.await.unwrap();
        }
        let mut latencies = latencies.lock().unwrap().clone();
        latencies.sort_by(f64::total_cmp);
        println!(
            "http: hello app, one pod, {CLIENTS} keep-alive clients for {}s: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms",
            LOAD_TIME.as_secs(), latencies.len() as f64 / LOAD_TIME.as_secs_f64(), percentile(&latencies, 0.5), percentile(&latencies, 0.99)
        );
    });
    drop(agent);
}
