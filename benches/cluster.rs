//! Benchmark of a 10,000-pod cluster on this machine: 100 Deployments × 100 replicas of the HTTP hello app over
//! 10 real node agents, with the control plane (`wasmkube server`: apiserver, scheduler, controllers) in one
//! process. Measured: the time from the first Deployment's `POST` to every Deployment available, the control
//! plane's CPU while it rolls out and while the cluster idles (30 s later), its resident memory before and after, the
//! agents' memory, the apiserver's latency as a client sees it meanwhile (p50/p99 of GETs made every 20 ms),
//! and every pod answering HTTP. `BENCH_DEPLOYMENTS` and `BENCH_REPLICAS` change the shape. Run with
//! `cargo bench --bench cluster`.

mod common;

use common::{
    Process, cpu_seconds, get, hello_image, resident_kib, running_pod_ips, spawn_node_with,
    start_server, wait_healthy,
};
use futures::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const AGENTS: usize = 10;
const IDLE_TIME: Duration = Duration::from_secs(10);
/// How long the cluster is left to settle after the rollout before its idle CPU is measured.
const SETTLE_TIME: Duration = Duration::from_secs(30);

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn deployment(image: &str, name: &str, replicas: usize) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "hello", "image": image, "ports": [{"containerPort": 8080}]}]}}}})
}

/// How many Deployments report all `replicas` available.
async fn available(client: &reqwest::Client, url: &str, replicas: usize) -> usize {
    let list = get(
        client,
        &format!("{url}/apis/apps/v1/namespaces/default/deployments"),
    )
    .await;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["status"]["availableReplicas"].as_u64() == Some(replicas as u64))
        .count()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let deployments = setting("BENCH_DEPLOYMENTS", 100);
    let replicas = setting("BENCH_REPLICAS", 100);
    let pods = deployments * replicas;
    let per_node = (pods / AGENTS + 1).max(100);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let image = hello_image();
    // Each node gets a /21 (2,045 addresses) and takes up to twice its share.
    let (url, server) = start_server(
        &dir.path().join("cluster"),
        &["--node-cidr-mask-size", "21"],
    );
    let server_pid = server.0.id();
    runtime.block_on(async {
        wait_healthy(&client, &url).await;
        let max_pods = (per_node * 2).to_string();
        let agents: Vec<Process> = (0..AGENTS)
            .map(|i| {
                spawn_node_with(&url, &format!("agent-{i}"), &dir.path().join(format!("agent-{i}")), &["--max-pods", &max_pods])
            })
            .collect();
        loop {
            let nodes = get(&client, &format!("{url}/api/v1/nodes")).await;
            let ready = nodes["items"].as_array().into_iter().flatten().filter(|n| n["spec"]["podCIDR"].is_string()).count();
            if ready == AGENTS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let deployments_url = format!("{url}/apis/apps/v1/namespaces/default/deployments");
        // One pod per agent first, so every agent has compiled the app, as in a cluster that already ran it.
        client.post(&deployments_url).json(&deployment(&image, "warm", AGENTS)).send().await.unwrap();
        while available(&client, &url, AGENTS).await < 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        client.delete(format!("{deployments_url}/warm")).send().await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_before = resident_kib(server_pid);
        let cpu_before = cpu_seconds(server_pid);

        let probing = Arc::new(AtomicBool::new(true));
        let probe = {
            let (client, url, probing) = (client.clone(), url.clone(), probing.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0usize;
                while probing.load(Ordering::Relaxed) {
                    let path = if i.is_multiple_of(2) {
                        format!("{url}/api/v1/nodes/agent-{}", i % AGENTS)
                    } else {
                        format!("{url}/api/v1/namespaces/default/configmaps/kube-root-ca.crt")
                    };
                    let sent = Instant::now();
                    let ok = client.get(&path).send().await.is_ok_and(|r| r.status().is_success());
                    if ok {
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                latencies
            })
        };

        let started = Instant::now();
        futures::stream::iter(0..deployments)
            .for_each_concurrent(8, |i| {
                let (client, url, image) = (&client, &deployments_url, &image);
                async move {
                    let response = client.post(url).json(&deployment(image, &format!("hello-{i:03}"), replicas)).send().await.unwrap();
                    assert!(response.status().is_success(), "{}", response.text().await.unwrap_or_default());
                }
            })
            .await;
        let deadline = Instant::now() + Duration::from_secs(1800);
        let mut last_print = Instant::now();
        loop {
            let done = available(&client, &url, replicas).await;
            if done == deployments {
                break;
            }
            assert!(Instant::now() < deadline, "only {done} of {deployments} Deployments became available");
            if last_print.elapsed() > Duration::from_secs(10) {
                println!("  {done}/{deployments} Deployments available after {:.0} s", started.elapsed().as_secs_f64());
                last_print = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let rolled_out = started.elapsed().as_secs_f64();
        let cpu_rollout = cpu_seconds(server_pid) - cpu_before;
        probing.store(false, Ordering::Relaxed);
        let mut latencies = probe.await.unwrap();
        latencies.sort_by(f64::total_cmp);

        tokio::time::sleep(SETTLE_TIME).await;
        let cpu_idle_start = cpu_seconds(server_pid);
        tokio::time::sleep(IDLE_TIME).await;
        let cpu_idle = (cpu_seconds(server_pid) - cpu_idle_start) / IDLE_TIME.as_secs_f64();
        let rss_after = resident_kib(server_pid);
        let agents_rss: u64 = agents.iter().map(|a| resident_kib(a.0.id())).sum();

        let list = get(&client, &format!("{url}/api/v1/namespaces/default/pods")).await;
        let addresses = running_pod_ips(&list);
        let running = addresses.len();
        let answered = futures::stream::iter(addresses)
            .map(|ip| {
                let client = &client;
                async move {
                    client.get(format!("http://{ip}:8080/")).send().await.is_ok_and(|r| r.status().is_success())
                }
            })
            .buffer_unordered(64)
            .filter(|ok| futures::future::ready(*ok))
            .count()
            .await;
        println!(
            "cluster: {deployments} Deployments x {replicas} replicas over {AGENTS} agents: all available in {rolled_out:.1} s ({:.0} pods/s); {running} Running, {answered} answered HTTP",
            pods as f64 / rolled_out
        );
        println!(
            "control plane: CPU {cpu_rollout:.1} s during the rollout ({:.0}% of a core), {:.1}% of a core idle with {pods} pods ({} s after); RSS {} MiB before, {} MiB after",
            100.0 * cpu_rollout / rolled_out,
            100.0 * cpu_idle,
            SETTLE_TIME.as_secs(),
            rss_before / 1024,
            rss_after / 1024
        );
        println!(
            "apiserver GET latency during the rollout ({} requests): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; agents' RSS {} MiB in all ({} KiB/pod)",
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0.0),
            agents_rss / 1024,
            agents_rss / pods.max(1) as u64
        );
        drop(agents);
    });
    drop(server);
}
