//! Benchmark: wasmkube's apiserver (HTTP, Kubernetes pods) on each store — its redb file, a one-member etcd
//! and a three-member etcd (`--etcd-servers`) — against Debian's etcd itself (its HTTP/JSON gateway, values of
//! a stored pod's size), in the same run on the same machine: create and get throughput and latency at 1, 16
//! and 64 concurrent clients, and watch fan-out to 100 watchers. Then recovery times of two servers on a
//! three-member etcd: a watch moving to the other server when its own is killed, leader takeover after a
//! SIGKILL and after a graceful stop, and writes through the apiserver while the etcd leader is killed.
//! Run with `cargo bench --bench api_vs_etcd`.

mod common;
// The tests' etcd clusters; the benchmark does not restart members.
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
        let response = client
            .post(format!("{}/api/v1/namespaces/default/pods", self.url))
            .json(&pod(&format!("p-{n}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.bytes().await.unwrap();
    }

    async fn get(&self, client: &reqwest::Client, n: usize) {
        let response = client
            .get(format!("{}/api/v1/namespaces/default/pods/p-{n}", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }

    async fn watch(&self, client: &reqwest::Client) -> reqwest::Response {
        let rv: Value = client
            .get(format!("{}/api/v1/namespaces/watched/pods", self.url))
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
                "{}/api/v1/namespaces/watched/pods?watch=1&resourceVersion={rv}",
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

/// A pod as a user would create it: one container, the rest defaulted by the apiserver.
fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "hello.wasm", "ports": [{"containerPort": 8080}]}]}})
}

struct Etcd {
    url: String,
    /// The bytes of a value: a pod as wasmkube stores it.
    value: String,
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

impl Target for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn create(&self, client: &reqwest::Client, n: usize) {
        let body = json!({"key": b64(&format!("/registry/pods/default/p-{n}")), "value": b64(&self.value)});
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
        let body = json!({"key": b64(&format!("/registry/pods/default/p-{n}"))});
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
        let body = json!({"create_request": {"key": b64("/registry/pods/watched/"), "range_end": b64("/registry/pods/watched0")}});
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
async fn start_wasmkube(
    name: &'static str,
    dir: &std::path::Path,
    extra: &[&str],
) -> (Arc<Wasmkube>, Process) {
    let api_port = free_port();
    let process = Process(
        Command::new(env!("CARGO_BIN_EXE_wasmkube"))
            .args(["server", "--insecure", "--no-scheduler", "--data-dir"])
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
    let client = reqwest::Client::new();
    let answers = |url: String| {
        let client = client.clone();
        async move {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers(format!("{}/healthz", wasmkube.url)).await {
        assert!(Instant::now() < deadline, "{name} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = client
        .post(format!("{}/api/v1/namespaces", wasmkube.url))
        .json(&json!({"metadata": {"name": "watched"}}))
        .send()
        .await;
    // Pods need their namespace's `default` ServiceAccount, which a controller makes.
    for namespace in ["default", "watched"] {
        let url = format!(
            "{}/api/v1/namespaces/{namespace}/serviceaccounts/default",
            wasmkube.url
        );
        while !answers(url.clone()).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
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
    let mut stored_pod = String::new();
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
        let (wasmkube, _process) = runtime.block_on(start_wasmkube(name, dir.path(), &extra));
        runtime.block_on(async {
            run(wasmkube.clone(), &mut results).await;
            if stored_pod.is_empty() {
                stored_pod = reqwest::Client::new()
                    .get(format!(
                        "{}/api/v1/namespaces/default/pods/p-0",
                        wasmkube.url
                    ))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
            }
            let events = fan_out(
                wasmkube.clone(),
                |i| pod(&format!("w-{i}")),
                format!("{}/api/v1/namespaces/watched/pods", wasmkube.url),
            )
            .await;
            fan_outs.push((name, events));
        });
    }
    let raw = etcd::EtcdCluster::start(1);
    let etcd = Arc::new(Etcd {
        url: raw.endpoints()[0].clone(),
        value: stored_pod.clone(),
    });
    runtime.block_on(async {
        run(etcd.clone(), &mut results).await;
        let events = fan_out(
            etcd.clone(),
            move |i| json!({"key": b64(&format!("/registry/pods/watched/w-{i}")), "value": b64(&stored_pod)}),
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
    println!();
    println!("recovery, two servers on a three-member etcd (seconds, or counts)");
    for (what, value) in recovery(&runtime, dir.path()) {
        println!("{what:<62} {value:>8.3}");
    }
}

/// Who holds `kube-system/NAME`, read through `url`.
async fn lease_holder(client: &reqwest::Client, url: &str, name: &str) -> Option<String> {
    let lease: Value = client
        .get(format!(
            "{url}/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}"
        ))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

/// Waits until someone other than `not` holds the controller-manager's Lease; returns the holder.
async fn wait_for_leader(client: &reqwest::Client, url: &str, not: Option<&str>) -> String {
    loop {
        if let Some(holder) = lease_holder(client, url, "kube-controller-manager").await
            && Some(holder.as_str()) != not
        {
            return holder;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates ConfigMaps through `url` from `writers` tasks until `until`; returns the instants of every
/// acknowledged write and the count of failed ones.
async fn writes_until(
    url: &str,
    writers: usize,
    until: Instant,
    tag: &str,
) -> (Vec<Instant>, usize) {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (url, tag) = (url.to_owned(), tag.to_owned());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let (mut acknowledged, mut failed) = (Vec::new(), 0);
                for i in 0.. {
                    if Instant::now() >= until {
                        break;
                    }
                    let body =
                        json!({"metadata": {"name": format!("{tag}-{w}-{i}")}, "data": {"k": "v"}});
                    match client
                        .post(format!("{url}/api/v1/namespaces/default/configmaps"))
                        .json(&body)
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 201 => acknowledged.push(Instant::now()),
                        _ => failed += 1,
                    }
                }
                (acknowledged, failed)
            })
        })
        .collect();
    let (mut acknowledged, mut failed) = (Vec::new(), 0);
    for task in tasks {
        let (a, f) = task.await.unwrap();
        acknowledged.extend(a);
        failed += f;
    }
    acknowledged.sort();
    (acknowledged, failed)
}

/// The longest time without an acknowledged write from `from` on.
fn longest_gap(acknowledged: &[Instant], from: Instant) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for at in acknowledged.iter().filter(|at| **at >= from) {
        longest = longest.max(*at - last);
        last = *at;
    }
    longest
}

/// Recovery times of two (then three) servers on a three-member etcd, with Kubernetes' leader election
/// defaults (15 s leases, 2 s retries). Returns (what, seconds) lines.
fn recovery(runtime: &tokio::runtime::Runtime, dir: &std::path::Path) -> Vec<(&'static str, f64)> {
    let mut cluster = etcd::EtcdCluster::start(3);
    let servers = cluster.endpoints().join(",");
    let flags = ["--etcd-servers", servers.as_str()];
    let mut times = Vec::new();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let (first, mut first_process) = start_wasmkube("ha-1", dir, &flags).await;
        let leader = wait_for_leader(&client, &first.url, None).await;
        let (second, second_process) = start_wasmkube("ha-2", dir, &flags).await;
        // A watch through the first server; a writer through the second.
        let list: Value = common::get(
            &client,
            &format!("{}/api/v1/namespaces/default/configmaps", first.url),
        )
        .await;
        let mut rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        let writing = {
            let url = second.url.clone();
            tokio::spawn(async move {
                writes_until(&url, 1, Instant::now() + Duration::from_secs(4), "seen").await
            })
        };
        let mut watch_url = first.url.clone();
        let mut killed_at = None;
        let mut resumed = None;
        let deadline = Instant::now() + Duration::from_secs(4);
        let mut seen = 0usize;
        while Instant::now() < deadline && resumed.is_none() {
            let response = client
                .get(format!(
                    "{watch_url}/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=5&resourceVersion={rv}"
                ))
                .send()
                .await;
            let Ok(response) = response else {
                // The watch's server is gone: a failing-over client resumes through the other.
                watch_url = second.url.clone();
                continue;
            };
            let mut stream = response.bytes_stream();
            let mut buffer = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buffer.extend_from_slice(&chunk);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                        continue;
                    };
                    if let Some(v) = event["object"]["metadata"]["resourceVersion"].as_str() {
                        rv = v.to_owned();
                    }
                    seen += 1;
                    if killed_at.is_some() && watch_url == second.url && resumed.is_none() {
                        resumed = killed_at.map(|at: Instant| at.elapsed());
                    }
                    if seen == 20 && killed_at.is_none() {
                        let _ = first_process.0.kill();
                        killed_at = Some(Instant::now());
                    }
                }
                if resumed.is_some() {
                    break;
                }
            }
            if killed_at.is_some() {
                watch_url = second.url.clone();
            }
        }
        writing.await.unwrap();
        if let Some(resumed) = resumed {
            times.push((
                "watch resumed through the other server after SIGKILL",
                resumed.as_secs_f64(),
            ));
        }
        let killed_at = killed_at.unwrap_or_else(Instant::now);
        let taken_by = wait_for_leader(&client, &second.url, Some(&leader)).await;
        times.push((
            "leader Lease taken after the leader's SIGKILL (15 s lease)",
            killed_at.elapsed().as_secs_f64(),
        ));
        drop(first_process);

        // A graceful stop hands the Lease over.
        let (third, _third_process) = start_wasmkube("ha-3", dir, &flags).await;
        let mut second_process = second_process;
        let stopped = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &second_process.0.id().to_string()])
            .status();
        wait_for_leader(&client, &third.url, Some(&taken_by)).await;
        times.push((
            "leader Lease taken after the leader's graceful stop",
            stopped.elapsed().as_secs_f64(),
        ));
        let _ = second_process.0.wait();

        // The etcd leader killed under 8 writers through the apiserver.
        let leader = cluster.leader();
        let started = Instant::now();
        let url = third.url.clone();
        let load = tokio::spawn(async move {
            writes_until(&url, 8, started + Duration::from_secs(6), "load").await
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let killed = Instant::now();
        cluster.kill(leader);
        let (acknowledged, failed) = load.await.unwrap();
        times.push((
            "longest write pause, etcd leader SIGKILLed under 8 writers",
            longest_gap(&acknowledged, killed).as_secs_f64(),
        ));
        times.push((
            "  writes acknowledged / failed in those 6 s",
            acknowledged.len() as f64,
        ));
        times.push(("  (failed)", failed as f64));
    });
    times
}
