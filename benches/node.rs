//! Benchmark of one node agent with pods of the HTTP hello app bound to it directly: (1) pod start: 1,000 pods
//! created 16 at a time, from each `POST` to the first watch event that shows it Running (p50/p99), pods/s and the
//! server's and the agent's CPU per pod;
//! (2) density: more pods up to 10,000 idle ones on the node (`BENCH_IDLE_PODS` for another number): the time
//! until all run, the agent's resident memory per pod, its CPU while they idle, and every pod answering HTTP;
//! (3), measured first, requests/s and latency of one pod (keep-alive clients) and the agent's memory after them.
//! Run with `cargo bench --bench node`.

mod common;

use common::{cpu_seconds, get, hello_image, one_node_cluster, resident_kib};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const START_PODS: usize = 1000;
const CLIENTS: usize = 32;
const LOAD_TIME: Duration = Duration::from_secs(5);
const IDLE_TIME: Duration = Duration::from_secs(10);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Creates pods `range` (named hello-NNNNN), `concurrency` at a time, noting when each POST was sent and how long
/// it took to be answered.
async fn create_pods(
    client: &reqwest::Client,
    url: &str,
    body: &(dyn Fn(String) -> Value + Sync),
    range: std::ops::Range<usize>,
    concurrency: usize,
    created: &Mutex<HashMap<String, (Instant, Duration)>>,
) {
    futures::stream::iter(range)
        .for_each_concurrent(concurrency, |i| {
            let name = format!("hello-{i:05}");
            let request = client
                .post(format!("{url}/api/v1/namespaces/default/pods"))
                .json(&body(name.clone()));
            async move {
                let sent = Instant::now();
                let response = request.send().await.unwrap();
                assert!(
                    response.status().is_success(),
                    "{}",
                    response.text().await.unwrap_or_default()
                );
                created.lock().unwrap().insert(name, (sent, sent.elapsed()));
            }
        })
        .await;
}

/// Waits until the watch has seen `count` pods named hello-* Running.
async fn wait_running(running: &Mutex<HashMap<String, Instant>>, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while running
        .lock()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("hello-"))
        .count()
        < count
    {
        assert!(Instant::now() < deadline, "not every pod ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let idle_pods: usize = std::env::var("BENCH_IDLE_PODS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
        .max(START_PODS);
    let image = hello_image();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let (url, server, agent) = one_node_cluster(dir.path(), &runtime, &client, idle_pods);
    let pid = agent.0.id();
    runtime.block_on(async {
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
        // (3) HTTP through the agent to one pod, keep-alive clients: the agent's memory after ~10^5 requests.
        let fresh = resident_kib(pid);
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
            "http: hello app, one pod, {CLIENTS} keep-alive clients for {}s: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms; agent RSS {:.1} MiB before, {:.1} MiB after",
            LOAD_TIME.as_secs(), latencies.len() as f64 / LOAD_TIME.as_secs_f64(), percentile(&latencies, 0.5), percentile(&latencies, 0.99),
            fresh as f64 / 1024.0, resident_kib(pid) as f64 / 1024.0
        );
        let idle_before = resident_kib(pid);

        // A watch notes the first time it shows each pod Running.
        let created: Arc<Mutex<HashMap<String, (Instant, Duration)>>> = Arc::default();
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
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;

        // (1) Pod start: 1,000 pods, 16 at a time.
        let cpu_before = (cpu_seconds(server.0.id()), cpu_seconds(pid));
        let started = Instant::now();
        create_pods(&client, &url, &pod, 0..START_PODS, 16, &created).await;
        wait_running(&running, START_PODS).await;
        let all_running = started.elapsed().as_secs_f64();
        let cpu_ms_per_pod = |pid: u32, before: f64| (cpu_seconds(pid) - before) * 1000.0 / START_PODS as f64;
        let (server_cpu, agent_cpu) = (cpu_ms_per_pod(server.0.id(), cpu_before.0), cpu_ms_per_pod(pid, cpu_before.1));
        let (mut latencies, mut posts): (Vec<f64>, Vec<f64>) = {
            let (created, running) = (created.lock().unwrap(), running.lock().unwrap());
            created.iter().map(|(name, (at, post))| (running[name].duration_since(*at).as_secs_f64() * 1000.0, post.as_secs_f64() * 1000.0)).unzip()
        };
        latencies.sort_by(f64::total_cmp);
        posts.sort_by(f64::total_cmp);
        println!(
            "pod start: {START_PODS} pods on one node, 16 created at a time, create -> Running p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (the POST itself p50 {:.1} ms, p99 {:.1} ms); all Running after {all_running:.2} s ({:.0} pods/s); CPU per pod: server {server_cpu:.2} ms, agent {agent_cpu:.2} ms",
            percentile(&latencies, 0.5), percentile(&latencies, 0.99), latencies.last().copied().unwrap_or(0.0),
            percentile(&posts, 0.5), percentile(&posts, 0.99),
            START_PODS as f64 / all_running
        );

        // (2) Density: up to `idle_pods` on the node, then they idle.
        let started = Instant::now();
        create_pods(&client, &url, &pod, START_PODS..idle_pods, 16, &created).await;
        wait_running(&running, idle_pods).await;
        let more = started.elapsed().as_secs_f64();
        watcher.abort();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_after = resident_kib(pid);
        let (agent_cpu, server_cpu) = (cpu_seconds(pid), cpu_seconds(server.0.id()));
        tokio::time::sleep(IDLE_TIME).await;
        let agent_idle = (cpu_seconds(pid) - agent_cpu) / IDLE_TIME.as_secs_f64() * 100.0;
        let server_idle = (cpu_seconds(server.0.id()) - server_cpu) / IDLE_TIME.as_secs_f64() * 100.0;
        println!(
            "density: {} more pods Running in {more:.1} s ({:.0} pods/s); agent RSS {:.1} MiB with 1 pod, {:.1} MiB with {} pods: {:.1} KiB per idle HTTP pod; CPU while they idle: agent {agent_idle:.1}%, server {server_idle:.1}% of a core (server RSS {:.1} MiB)",
            idle_pods - START_PODS, (idle_pods - START_PODS) as f64 / more,
            idle_before as f64 / 1024.0, idle_after as f64 / 1024.0, idle_pods + 1,
            (idle_after.saturating_sub(idle_before)) as f64 / idle_pods as f64,
            resident_kib(server.0.id()) as f64 / 1024.0
        );
        let list = get(&client, &format!("{url}/api/v1/namespaces/default/pods?labelSelector=app%3Dhello")).await;
        let targets: Vec<String> = list["items"].as_array().unwrap().iter()
            .map(|p| format!("http://{}:8080/", p["status"]["podIP"].as_str().unwrap_or_default()))
            .collect();
        let asked = Instant::now();
        let answered = futures::stream::iter(targets.iter())
            .map(|target| {
                let client = client.clone();
                async move { client.get(target).send().await.is_ok_and(|r| r.status().is_success()) }
            })
            .buffer_unordered(64)
            .filter(|ok| futures::future::ready(*ok))
            .count()
            .await;
        println!(
            "every pod: {answered} of {} pods answered HTTP in {:.1} s",
            targets.len(), asked.elapsed().as_secs_f64()
        );

    });
    drop(agent);
}
