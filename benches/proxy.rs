//! Benchmark of the Service proxy against haproxy, in one run on one machine: requests/s and p50/p99 of the HTTP
//! hello app (a) straight to one pod, (b) through our proxy (the Service's cluster IP) to 3 pods, (c) through
//! haproxy (Debian's package, `mode http`, round robin, connection reuse) to the same 3 pods; load from wrk with
//! keep-alive connections. Then raw TCP throughput to a native sink, direct and through the proxy (TCP mode).
//! Run with `cargo bench --bench proxy` (needs `wrk` and `haproxy`: scripts/setup-test-tools installs them).

mod common;

use common::{Process, free_port, get, hello_image, spawn_wasmkube, start_server};
use serde_json::json;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 32;
const LOAD_SECONDS: u64 = 10;
const TCP_BYTES: usize = 2 << 30;

/// What wrk measured.
struct Measured {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn milliseconds(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        _ => f64::NAN,
    }
}

fn wrk(url: &str, seconds: u64) -> Measured {
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .expect("run wrk (scripts/setup-test-tools installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        !text.contains("Non-2xx"),
        "wrk saw failed requests at {url}:\n{text}"
    );
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|rest| rest.trim().to_owned())
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk's output:\n{text}"))
    };
    Measured {
        requests_per_second: field("Requests/sec:").parse().unwrap_or(f64::NAN),
        p50_ms: milliseconds(&field("50%")),
        p99_ms: milliseconds(&field("99%")),
    }
}

/// A native TCP sink: reads and drops everything, on a port of its own.
fn sink() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 256 * 1024];
                while matches!(stream.read(&mut buffer), Ok(n) if n > 0) {}
                let _ = stream.write_all(b"done");
            });
        }
    });
    port
}

/// Seconds to push TCP_BYTES through one connection and see the sink finish.
fn push(address: &str) -> f64 {
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let chunk = vec![7u8; 256 * 1024];
    let started = Instant::now();
    let mut sent = 0;
    while sent < TCP_BYTES {
        stream.write_all(&chunk).unwrap();
        sent += chunk.len();
    }
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"done");
    started.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let image = hello_image();
    let dir = tempfile::tempdir().unwrap();
    let (url, _server) = start_server(dir.path(), &[]);
    let node_dir = dir.path().join("node").display().to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let sink_port = sink();
    let (cluster_ip, sink_ip, pod_ips, _agent) = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get(format!("{url}/healthz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let agent = spawn_wasmkube(&["--server", &url, "node", "--name", "bench", "--port", "0", "--data-dir", &node_dir]);
        // Pods bound to a node that is not registered yet would be collected as orphans.
        while !get(&client, &format!("{url}/api/v1/nodes/bench")).await["spec"]["podCIDR"].is_string() {
            assert!(Instant::now() < deadline, "the node did not register");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let post = |path: &str, body: serde_json::Value| {
            let request = client.post(format!("{url}{path}")).json(&body).send();
            async move {
                let response = request.await.unwrap();
                assert!(response.status().is_success(), "{}", response.text().await.unwrap());
                response.json::<serde_json::Value>().await.unwrap()
            }
        };
        for i in 0..3 {
            post("/api/v1/namespaces/default/pods", json!({"metadata": {"name": format!("hello-{i}"), "labels": {"app": "hello"}},
                "spec": {"nodeName": "bench", "containers": [{"name": "hello", "image": image,
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}})).await;
        }
        let hello = post("/api/v1/namespaces/default/services", json!({"metadata": {"name": "hello"},
            "spec": {"selector": {"app": "hello"}, "ports": [{"name": "http", "port": 80, "targetPort": "http", "appProtocol": "http"}]}})).await;
        // A Service without a selector, its endpoint the native sink: raw TCP through the proxy.
        let sink = post("/api/v1/namespaces/default/services", json!({"metadata": {"name": "sink"},
            "spec": {"ports": [{"port": 9000}]}})).await;
        post("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", json!({"metadata": {"name": "sink-1",
            "labels": {"kubernetes.io/service-name": "sink"}}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"port": sink_port}]})).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let pod_ips = loop {
            let pods = get(&client, &format!("{url}/api/v1/namespaces/default/pods?labelSelector=app%3Dhello")).await;
            let ips = common::running_pod_ips(&pods);
            if ips.len() == 3 {
                break ips;
            }
            assert!(Instant::now() < deadline, "the hello pods did not start: {}", pods["items"]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let address = |service: &serde_json::Value| service["spec"]["clusterIP"].as_str().unwrap().to_owned();
        (address(&hello), address(&sink), pod_ips, agent)
    });
    // Wait until the proxy serves all three replicas.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reached: std::collections::BTreeSet<String> = (0..12)
            .filter_map(|_| {
                reqwest::blocking::get(format!("http://{cluster_ip}/"))
                    .and_then(|r| r.text())
                    .ok()
            })
            .collect();
        if reached.len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy never reached 3 replicas: {reached:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let haproxy_port = free_port();
    let servers: String = pod_ips
        .iter()
        .enumerate()
        .map(|(i, ip)| format!("  server pod{i} {ip}:8080\n"))
        .collect();
    let config = format!(
        "global\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\n  http-reuse always\nfrontend web\n  bind 127.0.0.1:{haproxy_port}\n  default_backend pods\nbackend pods\n  balance roundrobin\n{servers}"
    );
    let config_path = dir.path().join("haproxy.cfg");
    std::fs::write(&config_path, config).unwrap();
    let _haproxy = Process(
        Command::new("haproxy")
            .arg("-f")
            .arg(&config_path)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy (scripts/setup-test-tools installs it)"),
    );
    let haproxy_url = format!("http://127.0.0.1:{haproxy_port}/");
    let deadline = Instant::now() + Duration::from_secs(10);
    while reqwest::blocking::get(&haproxy_url).is_err() {
        assert!(Instant::now() < deadline, "haproxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let targets = [
        ("direct to one pod", format!("http://{}:8080/", pod_ips[0])),
        ("wasmkube proxy, 3 pods", format!("http://{cluster_ip}/")),
        ("haproxy, 3 pods", haproxy_url),
    ];
    let mut results = Vec::new();
    for (name, target) in &targets {
        wrk(target, 2);
        let measured = wrk(target, LOAD_SECONDS);
        println!(
            "http: {name}: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms ({CONNECTIONS} keep-alive connections, wrk -t2, {LOAD_SECONDS} s)",
            measured.requests_per_second, measured.p50_ms, measured.p99_ms
        );
        results.push(measured);
    }
    let (ours, theirs) = (&results[1], &results[2]);
    println!(
        "http: wasmkube proxy / haproxy: {:.2}x requests/s, {:.2}x p99",
        ours.requests_per_second / theirs.requests_per_second,
        ours.p99_ms / theirs.p99_ms
    );

    let direct = push(&format!("127.0.0.1:{sink_port}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect((sink_ip.as_str(), 9000)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the proxy never listened for the sink"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let proxied = push(&format!("{sink_ip}:9000"));
    let gib = TCP_BYTES as f64 / f64::from(1u32 << 30);
    println!(
        "tcp: {gib:.0} GiB over one connection: direct {:.2} GiB/s, through the proxy {:.2} GiB/s ({:.2}x)",
        gib / direct,
        gib / proxied,
        direct / proxied
    );
}
