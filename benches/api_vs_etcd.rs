//! Benchmark: wasmkube's apiserver (HTTP, Kubernetes objects) on each store — its redb file, a one-member etcd
//! and a three-member etcd (`--etcd-servers`) — against Debian's etcd itself (its HTTP/JSON gateway), in the
//! same run on the same machine: create and get throughput and latency at 1, 16 and 64 concurrent clients,
//! and watch fan-out to 100 watchers. Run with `cargo bench --bench api_vs_etcd`.

mod common;
// The tests' etcd clusters; the benchmark does not kill or restart members.
#[allow(dead_code)]
#[path = "../tests/common/etcd.rs"]
mod etcd;

use base64::Engine;
use common::{Process, free_port};
use futures::StreamExt;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: [usize; 3] = [1, 16, 64];
const WATCHERS: usize = 100;
const WATCHED_WRITES: usize = 500;

fn wait_for(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if reqwest::blocking::get(url).is_ok_and(|r| r.status().is_success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{url} did not come up");
}

/// One system under test: how to write, read and watch a key through its HTTP API.
trait Target: Send + Sync {
    fn name(&self) -> &'static str;
    fn create(&self, client: &reqwest::Client, n: usize) -> impl Future<Output = ()> + Send;
    fn get(&self, client: &reqwest::Client, n: usize) -> impl Future<Output = ()> + Send;
    fn watch(&self, client: &reqwest::Client) -> impl Future<Output = reqwest::Response> + Send;
    fn count_events(&self, line: &Value) -> usize;
}

struct Wasmkube {
    name: &'static str,
    url: String,
}

impl Target for Wasmkube {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn create(&self, client: &reqwest::Client, n: usize) {
        let body =
            json!({"metadata": {"name": format!("cm-{n}")}, "data": {"payload": "x".repeat(256)}});
        let response = client
            .post(format!("{}/api/v1/namespaces/default/configmaps", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.bytes().await.unwrap();
    }

    async fn get(&self, client: &reqwest::Client, n: usize) {
        let response = client
            .get(format!(
                "{}/api/v1/namespaces/default/configmaps/cm-{n}",
                self.url
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }

    async fn watch(&self, client: &reqwest::Client) -> reqwest::Response {
        let rv: Value = client
            .get(format!("{}/api/v1/namespaces/watched/configmaps", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rv = rv["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        client
            .get(format!(
                "{}/api/v1/namespaces/watched/configmaps?watch=1&resourceVersion={rv}",
                self.url
            ))
            .send()
            .await
            .unwrap()
    }

    fn count_events(&self, line: &Value) -> usize {
        usize::from(line["type"] == "ADDED")
    }
}

struct Etcd {
    url: String,
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

impl Target for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn create(&self, client: &reqwest::Client, n: usize) {
        // The same bytes a configmap of this size takes, written as one key.
        let value =
            json!({"metadata": {"name": format!("cm-{n}")}, "data": {"payload": "x".repeat(256)}})
                .to_string();
        let body = json!({"key": b64(&format!("/registry/configmaps/default/cm-{n}")), "value": b64(&value)});
        let response = client
            .post(format!("{}/v3/kv/put", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }

    async fn get(&self, client: &reqwest::Client, n: usize) {
        let body = json!({"key": b64(&format!("/registry/configmaps/default/cm-{n}"))});
        let response = client
            .post(format!("{}/v3/kv/range", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }

    async fn watch(&self, client: &reqwest::Client) -> reqwest::Response {
        let body = json!({"create_request": {"key": b64("/registry/configmaps/watched/"), "range_end": b64("/registry/configmaps/watched0")}});
        client
            .post(format!("{}/v3/watch", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    fn count_events(&self, line: &Value) -> usize {
        line["result"]["events"].as_array().map_or(0, Vec::len)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

/// Runs `ops` operations split over `clients` concurrent clients; returns (ops/s, p50 ms, p99 ms).
async fn measure<T: Target + 'static>(
    target: Arc<T>,
    clients: usize,
    ops: usize,
    offset: usize,
    create: bool,
) -> (f64, f64, f64) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let target = target.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut latencies = Vec::with_capacity(ops / clients);
                for i in (c..ops).step_by(clients) {
                    let begun = Instant::now();
                    if create {
                        target.create(&client, offset + i).await;
                    } else {
                        target.get(&client, offset + i).await;
                    }
                    latencies.push(begun.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(ops);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    (
        ops as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    )
}

/// 100 watchers on one prefix; returns events delivered per second across all of them.
async fn fan_out<T: Target + 'static>(
    target: Arc<T>,
    write: impl Fn(usize) -> Value + Send + Sync + 'static,
    writer_url: String,
) -> f64 {
    let client = reqwest::Client::new();
    let mut streams = Vec::new();
    for _ in 0..WATCHERS {
        streams.push(target.watch(&client).await);
    }
    let started = Instant::now();
    let readers: Vec<_> = streams
        .into_iter()
        .map(|response| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut stream = response.bytes_stream();
                let (mut buffer, mut seen) = (Vec::new(), 0);
                while seen < WATCHED_WRITES {
                    let chunk = stream.next().await.expect("watch open").unwrap();
                    buffer.extend_from_slice(&chunk);
                    while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buffer.drain(..=end).collect();
                        if let Ok(value) = serde_json::from_slice::<Value>(&line) {
                            seen += target.count_events(&value);
                        }
                    }
                }
            })
        })
        .collect();
    let writer = reqwest::Client::new();
    let writes: Vec<_> = (0..WATCHED_WRITES)
        .map(|i| {
            let (writer, body, url) = (writer.clone(), write(i), writer_url.clone());
            async move {
                writer
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
            }
        })
        .collect();
    futures::stream::iter(writes)
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    for reader in readers {
        reader.await.unwrap();
    }
    (WATCHERS * WATCHED_WRITES) as f64 / started.elapsed().as_secs_f64()
}

async fn run<T: Target + 'static>(target: Arc<T>, results: &mut Vec<(String, f64, f64, f64)>) {
    let mut offset = 0;
    for clients in CLIENTS {
        let ops = 1000 * clients.min(8);
        let (rate, p50, p99) = measure(target.clone(), clients, ops, offset, true).await;
        results.push((
            format!("{} create c={clients}", target.name()),
            rate,
            p50,
            p99,
        ));
        let (rate, p50, p99) = measure(target.clone(), clients, ops, offset, false).await;
        results.push((
            format!("{} get    c={clients}", target.name()),
            rate,
            p50,
            p99,
        ));
        offset += ops;
    }
}

/// A wasmkube server with `extra` flags, and the namespace the fan-out watches.
fn start_wasmkube(
    name: &'static str,
    dir: &std::path::Path,
    extra: &[&str],
    runtime: &tokio::runtime::Runtime,
) -> (Arc<Wasmkube>, Process) {
    let api_port = free_port();
    let process = Process(
        Command::new(env!("CARGO_BIN_EXE_wasmkube"))
            .args(["server", "--insecure", "--data-dir"])
            .arg(dir.join(name.replace('/', "-")))
            .args(["--listen", &format!("127.0.0.1:{api_port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wasmkube"),
    );
    let wasmkube = Arc::new(Wasmkube {
        name,
        url: format!("http://127.0.0.1:{api_port}"),
    });
    wait_for(&format!("{}/healthz", wasmkube.url));
    runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/api/v1/namespaces", wasmkube.url))
            .json(&json!({"metadata": {"name": "watched"}}))
            .send()
            .await
            .unwrap();
    });
    (wasmkube, process)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    let mut fan_outs = Vec::new();
    // Each system runs alone: an idle etcd member still takes CPU (heartbeats) from the one measured.
    for (name, members) in [
        ("wasmkube/redb", 0),
        ("wasmkube/etcd1", 1),
        ("wasmkube/etcd3", 3),
    ] {
        let cluster = (members > 0).then(|| etcd::EtcdCluster::start(members));
        let servers = cluster.as_ref().map(|c| c.endpoints().join(","));
        let extra: Vec<&str> = match &servers {
            Some(servers) => vec!["--etcd-servers", servers],
            None => Vec::new(),
        };
        let (wasmkube, _process) = start_wasmkube(name, dir.path(), &extra, &runtime);
        runtime.block_on(async {
            run(wasmkube.clone(), &mut results).await;
            let events = fan_out(
                wasmkube.clone(),
                |i| json!({"metadata": {"name": format!("w-{i}")}, "data": {"payload": "x".repeat(256)}}),
                format!("{}/api/v1/namespaces/watched/configmaps", wasmkube.url),
            )
            .await;
            fan_outs.push((name, events));
        });
    }
    let raw = etcd::EtcdCluster::start(1);
    let etcd = Arc::new(Etcd {
        url: raw.endpoints()[0].clone(),
    });
    runtime.block_on(async {
        run(etcd.clone(), &mut results).await;
        let events = fan_out(
            etcd.clone(),
            |i| json!({"key": b64(&format!("/registry/configmaps/watched/w-{i}")), "value": b64(&"x".repeat(300))}),
            format!("{}/v3/kv/put", etcd.url),
        )
        .await;
        fan_outs.push(("etcd", events));
    });
    drop(raw);

    println!(
        "{:<30} {:>10} {:>9} {:>9}",
        "benchmark", "ops/s", "p50 ms", "p99 ms"
    );
    for (name, rate, p50, p99) in &results {
        println!("{name:<30} {rate:>10.0} {p50:>9.2} {p99:>9.2}");
    }
    println!();
    println!("ratios to etcd itself (throughput: higher is better; latency: lower is better)");
    let per_target = results.len() / 4;
    let theirs = &results[3 * per_target..];
    for ours in results[..3 * per_target].chunks(per_target) {
        for (ours, theirs) in ours.iter().zip(theirs) {
            println!(
                "{:<30} ops/s {:>5.2}x   p50 {:>5.2}x   p99 {:>5.2}x",
                ours.0,
                ours.1 / theirs.1,
                ours.2 / theirs.2,
                ours.3 / theirs.3
            );
        }
    }
    println!();
    let etcd_events = fan_outs.last().map_or(1.0, |(_, e)| *e);
    for (name, events) in &fan_outs {
        println!(
            "watch fan-out, {WATCHERS} watchers x {WATCHED_WRITES} writes: {name:<16} {events:>9.0} events/s, {:.2}x etcd",
            events / etcd_events
        );
    }
}
