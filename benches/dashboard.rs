//! The dashboard's first paint: a headless Chromium (Debian's, through chromedriver) opens a login link of a
//! cluster whose one node runs N pods (`BENCH_DASHBOARD_PODS`, 1,000 by default) and the time until the pods
//! view shows a row for every pod is read in the page (`performance.now()`, from the start of the navigation).
//! The server is a development one (`--insecure`, plain HTTP/1.1), so the page's requests are not helped by
//! HTTP/2.

#[path = "../tests/common/browser.rs"]
mod browser;
mod common;

use common::{get, hello_image, one_node_cluster, resident_kib};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Pod creations in flight at once.
const CREATORS: usize = 16;
/// How often the page is asked whether every row is there.
const POLL: Duration = Duration::from_millis(10);
/// Runs of the page, each in a fresh browser.
const RUNS: usize = 3;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let pods: usize = std::env::var("BENCH_DASHBOARD_PODS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000);
    let image = hello_image();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let (url, server, _agent) = one_node_cluster(dir.path(), &runtime, &client, pods);
    let started = Instant::now();
    runtime.block_on(async {
        let names: Vec<String> = (0..pods).map(|i| format!("hello-{i:05}")).collect();
        for batch in names.chunks(CREATORS) {
            let created = batch.iter().map(|name| {
                let pod = json!({"metadata": {"name": name, "labels": {"app": "hello"}},
                    "spec": {"nodeName": "bench", "containers": [{"name": "hello", "image": image,
                             "ports": [{"containerPort": 8080}]}]}});
                client
                    .post(format!("{url}/api/v1/namespaces/default/pods"))
                    .json(&pod)
                    .send()
            });
            for response in futures::future::join_all(created).await {
                assert!(response.unwrap().status().is_success());
            }
        }
        loop {
            let list = get(&client, &format!("{url}/api/v1/namespaces/default/pods")).await;
            let running = list["items"].as_array().map_or(0, |items| {
                items
                    .iter()
                    .filter(|p| p["status"]["phase"] == "Running")
                    .count()
            });
            if running == pods {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    println!(
        "dashboard: {pods} pods Running on one node in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let server_rss = resident_kib(server.0.id());
    let mut paints = Vec::new();
    for _ in 0..RUNS {
        let code: Value = runtime.block_on(async {
            client
                .post(format!("{url}/ui/login-codes"))
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        let browser = browser::Browser::start();
        browser.goto(&format!(
            "{url}/ui/#code={}",
            code["code"].as_str().unwrap()
        ));
        let deadline = Instant::now() + Duration::from_secs(60);
        let painted = loop {
            let at = browser.script(&format!(
                "return document.querySelectorAll('#pods tr[data-status=\"Running\"]').length === {pods} \
                 ? performance.now() : null"
            ));
            if let Some(ms) = at.as_f64() {
                break ms;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {pods} Running pods"
            );
            std::thread::sleep(POLL);
        };
        paints.push(painted);
    }
    paints.sort_by(f64::total_cmp);
    println!(
        "dashboard: login link -> {pods} Running pods drawn (headless Chromium, {RUNS} fresh browsers): best {:.0} ms, median {:.0} ms, worst {:.0} ms; server RSS {:.1} MiB",
        paints[0],
        paints[RUNS / 2],
        paints[RUNS - 1],
        server_rss as f64 / 1024.0
    );
}
