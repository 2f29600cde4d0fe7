//! What the benchmarks share: free ports and child processes that die with the benchmark.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::Child;

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process, killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GETs a JSON document.
pub async fn get(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client
        .get(url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// The addresses of the Running pods of a pod list.
pub fn running_pod_ips(list: &serde_json::Value) -> Vec<String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"]["phase"] == "Running")
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_owned))
        .collect()
}

/// Builds wasm-apps/ and returns the file:// image of the HTTP hello app.
pub fn hello_image() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        std::process::Command::new(root.join("scripts/build-wasm-apps"))
            .status()
            .expect("build wasm-apps")
            .success()
    );
    format!(
        "file://{}",
        root.join("target/wasm-apps/wasm32-wasip2/release/hello_http.wasm")
            .display()
    )
}

/// Starts `wasmkube ARGS`. Its output is discarded, or kept in `$BENCH_LOG_DIR/N-COMMAND.log` when that is set
/// (with `RUST_LOG`, where a benchmark's time goes).
pub fn spawn_wasmkube(args: &[&str]) -> Process {
    static SPAWNED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let stderr = match std::env::var_os("BENCH_LOG_DIR") {
        Some(dir) => {
            let n = SPAWNED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let command = args
                .iter()
                .find(|a| !a.starts_with('-') && !a.contains(':'))
                .unwrap_or(&"wasmkube");
            let path = std::path::Path::new(&dir).join(format!("{n}-{command}.log"));
            std::process::Stdio::from(std::fs::File::create(path).expect("a log file"))
        }
        None => std::process::Stdio::null(),
    };
    Process(
        std::process::Command::new(env!("CARGO_BIN_EXE_wasmkube"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start wasmkube"),
    )
}

/// Starts a development `wasmkube server --insecure` (plain HTTP, open) on a free port with its data in `dir`,
/// plus `extra` flags; returns its URL.
pub fn start_server(dir: &std::path::Path, extra: &[&str]) -> (String, Process) {
    let port = free_port();
    let data = dir.join("server").display().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "server",
        "--insecure",
        "--data-dir",
        &data,
        "--listen",
        &listen,
    ];
    args.extend_from_slice(extra);
    (format!("http://{listen}"), spawn_wasmkube(&args))
}

/// Waits (up to 30 s) until the server at `url` answers `/healthz`.
pub async fn wait_healthy(client: &reqwest::Client, url: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while client.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Starts a node agent `name` for the server at `url`, its data in `dir`.
pub fn spawn_node(url: &str, name: &str, dir: &std::path::Path) -> Process {
    spawn_node_with(url, name, dir, &[])
}

/// [`spawn_node`] with more `wasmkube node` flags.
pub fn spawn_node_with(url: &str, name: &str, dir: &std::path::Path, extra: &[&str]) -> Process {
    let data = dir.display().to_string();
    let mut args = vec![
        "--server",
        url,
        "node",
        "--name",
        name,
        "--port",
        "0",
        "--data-dir",
        &data,
    ];
    args.extend_from_slice(extra);
    spawn_wasmkube(&args)
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) in parentheses: utime and stime are 14 and 15.
            let after = stat.rsplit_once(')')?.1.to_owned();
            let fields: Vec<&str> = after.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    ticks as f64 / 100.0
}

/// Resident memory of a process, in KiB.
pub fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// A development server and one agent, `bench`, that takes `pods` pods (a /18 per node: room for 16,381 pod
/// addresses), once the node has its podCIDR; returns the server's URL, the server and the agent.
pub fn one_node_cluster(
    dir: &std::path::Path,
    runtime: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    pods: usize,
) -> (String, Process, Process) {
    let (url, server) = start_server(dir, &["--node-cidr-mask-size", "18"]);
    runtime.block_on(wait_healthy(client, &url));
    let max_pods = (pods + 1).to_string();
    let agent = spawn_node_with(&url, "bench", &dir.join("node"), &["--max-pods", &max_pods]);
    runtime.block_on(async {
        let node = format!("{url}/api/v1/nodes/bench");
        while !get(client, &node).await["spec"]["podCIDR"].is_string() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    (url, server, agent)
}
