//! Benchmark of autoscaling and of what metrics cost, on one agent with the HTTP hello app:
//! (1) the hello app's requests/s (wrk, one pod) while nothing reads metrics, while metrics.k8s.io is read
//! every second (the apiserver then reads the agent's summary every 5 s), and while a Prometheus-like scraper
//! reads every second the apiserver's `/metrics` and the agent's `/metrics` and `/metrics/resource` (through
//! the apiserver's node proxy), in turn;
//! (2) an HPA (1 to 4 replicas, no scale-down window) on a 1-replica Deployment behind a Service: the time from
//! the start of HTTP load (wrk through the Service) to the autoscaler's decision and to a second replica
//! serving, and from the end of the load to one replica again; on CPU (50% of a 10m request) with Kubernetes'
//! 15 s sync period and with a 1 s one, and on the requests per second each pod answers (a Pods metric from
//! custom.metrics.k8s.io, 1,000/s per pod) with a 1 s one. Run with `cargo bench --bench autoscale` (needs
//! `wrk`: scripts/setup-test-tools).

mod common;

use common::{get, hello_image, spawn_node, start_server, wait_healthy};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

/// wrk's requests/s against `url` for `seconds`.
fn wrk_rate(url: &str, seconds: u64) -> f64 {
    let output = Command::new("wrk")
        .args(["-t2", "-c16", &format!("-d{seconds}s"), url])
        .output()
        .expect("run wrk (scripts/setup-test-tools installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in wrk's output:\n{text}"))
}

/// wrk in the background for at most `seconds`.
fn wrk_load(url: &str, seconds: u64) -> Child {
    Command::new("wrk")
        .args(["-t2", "-c16", &format!("-d{seconds}s"), url])
        .stdout(Stdio::null())
        .spawn()
        .expect("run wrk")
}

async fn post(client: &reqwest::Client, url: &str, path: &str, body: Value) -> Value {
    let response = client
        .post(format!("{url}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "POST {path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Waits until the Deployment satisfies `check`; the time it took.
async fn until(client: &reqwest::Client, url: &str, check: impl Fn(&Value) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let deployment = get(client, &format!("{url}{DEPLOYMENTS}/hello")).await;
        if check(&deployment) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "never: {deployment}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One cluster with the hello Deployment, its Service and an HPA on `metric`; the times of a scale out and
/// back.
async fn scale_out_and_back(sync_seconds: &str, label: &str, metric: Value) {
    let dir = tempfile::tempdir().unwrap();
    let (url, _server) = start_server(
        dir.path(),
        &[
            "--horizontal-pod-autoscaler-sync-period-seconds",
            sync_seconds,
        ],
    );
    let client = reqwest::Client::new();
    wait_healthy(&client, &url).await;
    let _agent = spawn_node(&url, "n1", &dir.path().join("node"));
    post(&client, &url, DEPLOYMENTS, json!({"metadata": {"name": "hello"}, "spec": {"replicas": 1,
        "selector": {"matchLabels": {"app": "hello"}},
        "template": {"metadata": {"labels": {"app": "hello"}}, "spec": {"containers": [{"name": "hello",
            "image": hello_image(), "ports": [{"containerPort": 8080}],
            "resources": {"requests": {"cpu": "10m"}}}]}}}}))
    .await;
    let service = post(
        &client,
        &url,
        "/api/v1/namespaces/default/services",
        json!({"metadata": {"name": "hello"},
        "spec": {"selector": {"app": "hello"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .await;
    post(&client, &url, "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers", json!({
        "metadata": {"name": "hello"}, "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hello"},
        "minReplicas": 1, "maxReplicas": 4,
        "metrics": [metric],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}))
    .await;
    until(&client, &url, |d| d["status"]["availableReplicas"] == 1).await;
    // Idle for two sync periods, so the autoscaler has read metrics before the load.
    let sync: f64 = sync_seconds.parse().unwrap_or(15.0);
    tokio::time::sleep(Duration::from_secs_f64(2.0 * sync + 1.0)).await;
    let target = format!("http://{}/", service["spec"]["clusterIP"].as_str().unwrap());
    let mut load = wrk_load(&target, 300);
    let decided = until(&client, &url, |d| d["spec"]["replicas"].as_i64() > Some(1)).await;
    let serving = decided
        + until(&client, &url, |d| {
            d["status"]["availableReplicas"].as_i64() > Some(1)
        })
        .await;
    let replicas =
        get(&client, &format!("{url}{DEPLOYMENTS}/hello")).await["spec"]["replicas"].clone();
    let _ = load.kill();
    let _ = load.wait();
    let back = until(&client, &url, |d| d["spec"]["replicas"] == 1).await;
    println!(
        "autoscale on {label} (sync period {sync_seconds} s): load start -> scaled to {replicas} in {:.1} s, a second replica serving after {:.1} s; load end -> 1 replica in {:.1} s",
        decided.as_secs_f64(),
        serving.as_secs_f64(),
        back.as_secs_f64()
    );
}

/// Reads `paths` of the server at `url` every second, for ever.
fn read_every_second(
    client: &reqwest::Client,
    url: &str,
    paths: &'static [&'static str],
) -> tokio::task::JoinHandle<()> {
    let (client, url) = (client.clone(), url.to_owned());
    tokio::spawn(async move {
        loop {
            for path in paths {
                let response = client.get(format!("{url}{path}")).send().await;
                let ok = match response {
                    Ok(response) => {
                        response.status().is_success() && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                assert!(ok, "GET {path} failed");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// The hello app's requests/s with nothing reading metrics, with metrics.k8s.io read every second, and with
/// Prometheus' scrapes every second: a fresh cluster for each round, since the apiserver goes on reading the
/// nodes for 10 minutes after the last metrics.k8s.io request.
async fn metrics_cost() {
    let (mut quiet, mut read, mut scraped) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (url, _server) = start_server(dir.path(), &[]);
        let client = reqwest::Client::new();
        wait_healthy(&client, &url).await;
        let _agent = spawn_node(&url, "n1", &dir.path().join("node"));
        post(&client, &url, "/api/v1/namespaces/default/pods", json!({"metadata": {"name": "hello"},
            "spec": {"nodeName": "n1", "containers": [{"name": "hello", "image": hello_image(), "ports": [{"containerPort": 8080}]}]}}))
        .await;
        let ip = loop {
            let pod = get(
                &client,
                &format!("{url}/api/v1/namespaces/default/pods/hello"),
            )
            .await;
            if pod["status"]["phase"] == "Running" {
                break pod["status"]["podIP"].as_str().unwrap().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let target = format!("http://{ip}:8080/");
        let rate = |target: String| tokio::task::spawn_blocking(move || wrk_rate(&target, 8));
        wrk_rate(&target, 2);
        quiet.push(rate(target.clone()).await.unwrap());
        let scraper = read_every_second(
            &client,
            &url,
            &[
                "/metrics",
                "/api/v1/nodes/n1/proxy/metrics",
                "/api/v1/nodes/n1/proxy/metrics/resource",
            ],
        );
        scraped.push(rate(target.clone()).await.unwrap());
        scraper.abort();
        let reader = read_every_second(
            &client,
            &url,
            &["/apis/metrics.k8s.io/v1beta1/namespaces/default/pods"],
        );
        read.push(rate(target).await.unwrap());
        reader.abort();
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let rounded = |v: &[f64]| v.iter().map(|r| r.round()).collect::<Vec<_>>();
    println!(
        "metrics cost: hello app, one pod, wrk -t2 -c16, 8 s each, in turn: nothing reading {:?} requests/s, Prometheus scraping every second {:?} requests/s (ratio {:.2}), metrics.k8s.io read every second {:?} requests/s (ratio {:.2})",
        rounded(&quiet),
        rounded(&scraped),
        mean(&scraped) / mean(&quiet),
        rounded(&read),
        mean(&read) / mean(&quiet)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        metrics_cost().await;
        let cpu = json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}});
        let requests = json!({"type": "Pods", "pods": {"metric": {"name": "http_requests_per_second"},
            "target": {"type": "AverageValue", "averageValue": "1k"}}});
        scale_out_and_back("15", "CPU", cpu.clone()).await;
        scale_out_and_back("1", "CPU", cpu).await;
        scale_out_and_back("1", "requests/s", requests).await;
    });
}
