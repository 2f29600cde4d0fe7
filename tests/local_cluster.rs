//! `wasmkube up` and `down`: a named 3-node cluster with the hello Deployment behind a Service, stopped and
//! restarted with its objects intact, a second cluster beside it, and the errors a user can run into. Every
//! cluster lives in a temporary WASMKUBE_HOME and writes a temporary kubeconfig.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Held by each test that runs clusters: two `up`s at once would race for the same loopback slot.
static CLUSTERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A temporary home for clusters; stops (and purges) every cluster it made when dropped.
struct Home {
    dir: tempfile::TempDir,
    clusters: std::cell::RefCell<Vec<String>>,
}

impl Home {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            clusters: Default::default(),
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kube").join("config")
    }

    /// Runs the wasmkube CLI in the repository root (manifests' image paths are relative to it).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        if let ["up", "--name", name, ..] = args {
            self.clusters.borrow_mut().push(name.to_string());
        }
        let output = Command::new(env!("CARGO_BIN_EXE_wasmkube"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("WASMKUBE_HOME", self.dir.path())
            .env("KUBECONFIG", self.kubeconfig())
            .output()
            .expect("run wasmkube");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "wasmkube {args:?}: {out}{err}");
        out
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        for name in self.clusters.borrow().iter() {
            let _ = self.run(&["down", "--name", name]);
        }
    }
}

fn json(home: &Home, args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    serde_json::from_str(&home.ok(&full)).expect("json output")
}

fn hello_through(address: &str) -> Option<String> {
    reqwest::blocking::Client::new()
        .get(format!("http://{address}/"))
        .timeout(Duration::from_secs(5))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .ok()
}

/// The replicas the Service reaches over `tries` requests, waiting for at least `wanted` of them.
fn replicas_behind(address: &str, wanted: usize) -> std::collections::BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < wanted {
        assert!(
            Instant::now() < deadline,
            "only reached {seen:?} through {address}"
        );
        match hello_through(address) {
            Some(body) => {
                seen.insert(body.trim().to_owned());
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    seen
}

/// Whether anything answers HTTPS at `url` (any status: the cluster's CA is not what this asks about).
fn api_answers(url: &str) -> bool {
    reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("an HTTP client")
        .get(format!("{url}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .is_ok()
}

/// The API URL of a cluster `up` wrote into the kubeconfig (its slot, and so its addresses, depend on the
/// clusters already running on the machine).
fn api_url(home: &Home, cluster: &str) -> String {
    let text = std::fs::read_to_string(home.kubeconfig()).expect("a kubeconfig");
    let config: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    config["clusters"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|c| c["name"].as_str() == Some(&format!("wasmkube-{cluster}")))
        .and_then(|c| c["cluster"]["server"].as_str())
        .expect("the cluster in the kubeconfig")
        .to_owned()
}

/// The cluster's /16 prefix (`127.S`), from its API URL `https://127.S.255.254:6443`.
fn prefix(url: &str) -> String {
    let host = url.trim_start_matches("https://");
    host.split('.').take(2).collect::<Vec<_>>().join(".")
}

fn current_context(kubeconfig: &Path) -> Option<String> {
    let text = std::fs::read_to_string(kubeconfig).ok()?;
    let config: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    config["current-context"].as_str().map(str::to_owned)
}

#[test]
fn up_runs_a_named_cluster_that_down_stops_and_up_restarts_with_its_objects() {
    // The apps the manifests name.
    common::wasm_app("wasm32-wasip2", "hello_http");
    let _one_at_a_time = CLUSTERS.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::new();

    let out = home.ok(&["up", "--name", "dev", "--nodes", "3"]);
    assert!(
        out.contains("3 nodes Ready: dev-node-1, dev-node-2, dev-node-3"),
        "{out}"
    );
    assert_eq!(
        current_context(&home.kubeconfig()).as_deref(),
        Some("wasmkube-dev")
    );
    let url = api_url(&home, "dev");
    let dev = prefix(&url);
    // Real kubectl uses the context `up` wrote.
    let nodes = Command::new("kubectl")
        .args(["get", "nodes", "-o", "wide"])
        .env("KUBECONFIG", home.kubeconfig())
        .output()
        .expect("kubectl");
    let nodes = String::from_utf8_lossy(&nodes.stdout);
    for i in 1..=3 {
        assert!(
            nodes.contains(&format!("dev-node-{i}")) && nodes.contains(&format!("{dev}.192.{i}")),
            "{nodes}"
        );
    }
    assert_eq!(nodes.matches(" Ready ").count(), 3, "{nodes}");

    home.ok(&["apply", "-f", "manifests/hello-deployment.yaml"]);
    home.ok(&["rollout", "status", "deployment/hello", "--timeout", "60s"]);
    let service = json(&home, &["get", "service", "hello"]);
    let address = format!("{}:80", service["spec"]["clusterIP"].as_str().unwrap());
    let replicas = replicas_behind(&address, 3);
    let pods = json(&home, &["get", "pods", "-l", "app=hello"]);
    let spread: std::collections::BTreeSet<&str> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    assert!(spread.len() >= 2, "replicas on {spread:?}");
    // The Service proxy counts what it carried, at the address `up` printed.
    let proxy_metrics = out
        .lines()
        .find_map(|l| l.strip_prefix("Metrics: "))
        .and_then(|l| l.rsplit(" at ").next())
        .unwrap_or_else(|| panic!("no metrics address in {out}"))
        .to_owned();
    let text = reqwest::blocking::get(&proxy_metrics)
        .and_then(|r| r.text())
        .unwrap_or_default();
    assert!(
        text.contains(
            "wasmkube_proxy_requests_total{service=\"default/hello:http\",code_class=\"2xx\"}"
        ),
        "{proxy_metrics}: {text}"
    );

    // Running already: nothing to do.
    let again = home.ok(&["up", "--name", "dev"]);
    assert!(again.contains("already running"), "{again}");
    let (ok, _, err) = home.run(&["up", "--name", "dev", "--nodes", "5"]);
    assert!(!ok);
    assert!(err.contains("has 3 nodes, not 5"), "{err}");

    home.ok(&["down", "--name", "dev"]);
    assert!(!api_answers(&url), "the API still answers after down");
    assert!(
        hello_through(&address).is_none(),
        "the Service still answers after down"
    );

    // Up again: the same objects, the same pods (adopted by their restarted agents) behind the Service.
    let out = home.ok(&["up", "--name", "dev"]);
    assert!(out.contains("Starting cluster \"dev\""), "{out}");
    assert_eq!(replicas_behind(&address, 3), replicas);

    // A second cluster beside it, with addresses of its own; kubectl's context follows the latest `up`.
    let out = home.ok(&["up", "--name", "edge", "--nodes", "1"]);
    assert!(out.contains("1 nodes Ready: edge-node-1"), "{out}");
    let edge = api_url(&home, "edge");
    assert_ne!(edge, url);
    assert!(api_answers(&edge));
    assert!(api_answers(&url));
    assert_eq!(
        current_context(&home.kubeconfig()).as_deref(),
        Some("wasmkube-edge")
    );
    let edge_pods = json(&home, &["get", "pods"]);
    assert_eq!(edge_pods["items"].as_array().map(Vec::len), Some(0));

    // Purge: processes, data and kubeconfig entries go; the other cluster stays.
    home.ok(&["down", "--name", "edge", "--purge"]);
    assert!(!api_answers(&edge));
    assert!(!home.dir.path().join("clusters/edge").exists());
    let config = std::fs::read_to_string(home.kubeconfig()).unwrap();
    assert!(
        !config.contains("wasmkube-edge") && config.contains("wasmkube-dev"),
        "{config}"
    );
    assert_eq!(replicas_behind(&address, 3), replicas);
}

#[test]
fn up_and_down_refuse_bad_input_with_one_line() {
    let home = Home::new();
    for (args, message) in [
        (
            vec!["down", "--name", "nope"],
            "no cluster named \"nope\" (clusters: none)",
        ),
        (
            vec!["up", "--name", "Bad/Name"],
            "invalid cluster name \"Bad/Name\"",
        ),
        (
            vec!["up", "--name", "x", "--nodes", "0"],
            "--nodes must be from 1 to 254, not 0",
        ),
        (
            vec!["up", "--name", "x", "--control-planes", "0"],
            "--control-planes must be from 1 to 7, not 0",
        ),
    ] {
        let (ok, _, err) = home.run(&args);
        assert!(!ok, "{args:?}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

/// The pids of a cluster's running processes, by the pid files `up` keeps.
fn cluster_pids(home: &Home, cluster: &str) -> Vec<(String, u32)> {
    let run = home.dir.path().join("clusters").join(cluster).join("run");
    std::fs::read_dir(&run)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid = std::fs::read_to_string(entry.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let name = entry
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".pid")
                .to_owned();
            Some((name, pid))
        })
        .collect()
}

/// Whether a process runs (a zombie, exited but not reaped by its adoptive parent, does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn up_with_three_control_planes_keeps_the_cluster_working_when_a_server_dies() {
    common::wasm_app("wasm32-wasip2", "hello_http");
    let _one_at_a_time = CLUSTERS.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::new();
    let out = home.ok(&[
        "up",
        "--name",
        "ha",
        "--control-planes",
        "3",
        "--nodes",
        "2",
    ]);
    assert!(out.contains("etcd cluster of 3 members healthy"), "{out}");
    assert!(out.contains("2 nodes Ready: ha-node-1, ha-node-2"), "{out}");
    let pids = cluster_pids(&home, "ha");
    let mut names: Vec<&str> = pids.iter().map(|(name, _)| name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "etcd-1",
            "etcd-2",
            "etcd-3",
            "ha-node-1",
            "ha-node-2",
            "proxy",
            "server-1",
            "server-2",
            "server-3"
        ]
    );
    // The `kubernetes` Service lists every server.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let endpoints = json(&home, &["get", "endpoints", "kubernetes"]);
        if common::endpoint_addresses(&endpoints).len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{endpoints}");
        std::thread::sleep(Duration::from_millis(200));
    }
    home.ok(&["apply", "-f", "manifests/hello-deployment.yaml"]);
    home.ok(&["rollout", "status", "deployment/hello", "--timeout", "60s"]);
    let service = json(&home, &["get", "service", "hello"]);
    let address = format!("{}:80", service["spec"]["clusterIP"].as_str().unwrap());
    replicas_behind(&address, 3);

    // The first server (the kubeconfig's `server`) dies: the CLI, the agents, the proxy and the control
    // loops go on through the others.
    let first = pids.iter().find(|(name, _)| name == "server-1").unwrap().1;
    Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    assert!(hello_through(&address).is_some());
    let nodes = json(&home, &["get", "nodes"]);
    assert_eq!(nodes["items"].as_array().map(Vec::len), Some(2), "{nodes}");
    home.ok(&["scale", "deployment", "hello", "--replicas", "5"]);
    assert_eq!(replicas_behind(&address, 5).len(), 5);

    // Down stops every process, etcd members included.
    home.ok(&["down", "--name", "ha", "--purge"]);
    let left: Vec<&(String, u32)> = pids.iter().filter(|(_, pid)| alive(*pid)).collect();
    assert!(left.is_empty(), "still running after down: {left:?}");
}

/// What one new connection to `address` got within `limit`: true if the hello app answered.
fn answered_within(address: &str, limit: Duration) -> bool {
    reqwest::blocking::Client::builder()
        .timeout(limit)
        .build()
        .expect("an HTTP client")
        .get(format!("http://{address}/"))
        .send()
        .and_then(|r| r.error_for_status())
        .is_ok()
}

/// Sends rounds of one new connection to each address for `period`; returns the failures per address with
/// when they happened (seconds from the start).
fn failures_over(addresses: &[&str], period: Duration) -> Vec<Vec<f64>> {
    let start = Instant::now();
    let mut failed = vec![Vec::new(); addresses.len()];
    while start.elapsed() < period {
        for (i, address) in addresses.iter().enumerate() {
            if !answered_within(address, Duration::from_secs(2)) {
                failed[i].push(start.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    failed
}

/// Regression (issue 13): with one of two agents frozen (SIGSTOP), Service traffic stalled: the kernel kept
/// handing new connections to the frozen agent's shared listeners, and proxies kept sending requests to its
/// pods, which the kernel still accepted. Now one proxy serves the machine and leaves out endpoints that answer
/// nothing (HTTP and TCP Services alike), until the frozen node's pods are marked not ready.
#[test]
fn a_frozen_agent_does_not_black_hole_service_traffic() {
    common::wasm_app("wasm32-wasip2", "hello_http");
    let _one_at_a_time = CLUSTERS.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::new();
    home.ok(&["up", "--name", "cold", "--nodes", "2"]);
    home.ok(&["apply", "-f", "manifests/hello-deployment.yaml"]);
    let tcp_service = home.dir.path().join("hello-tcp.yaml");
    std::fs::write(
        &tcp_service,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: hello-tcp\nspec:\n  selector:\n    app: hello\n  \
         ports:\n    - port: 81\n      targetPort: http\n",
    )
    .unwrap();
    home.ok(&["apply", "-f", &tcp_service.display().to_string()]);
    home.ok(&["rollout", "status", "deployment/hello", "--timeout", "60s"]);
    let address = |service: &str, port: u16| {
        let service = json(&home, &["get", "service", service]);
        format!("{}:{port}", service["spec"]["clusterIP"].as_str().unwrap())
    };
    let (http, tcp) = (address("hello", 80), address("hello-tcp", 81));
    replicas_behind(&http, 3);
    replicas_behind(&tcp, 3);
    let pods = json(&home, &["get", "pods", "-l", "app=hello"]);
    let frozen = pods["items"][0]["spec"]["nodeName"]
        .as_str()
        .unwrap()
        .to_owned();
    let pid_file = home
        .dir
        .path()
        .join(format!("clusters/cold/run/{frozen}.pid"));
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    let signal = |name: &str| {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{name} {pid}");
    };
    signal("STOP");
    let failed = failures_over(&[&http, &tcp], Duration::from_secs(20));
    signal("CONT");
    for (service, failures) in ["http", "tcp"].iter().zip(&failed) {
        // A connection goes to each frozen pod before it counts as stalled; none are handed to a frozen
        // listener (before: every other new connection, for as long as the agent stayed frozen).
        assert!(
            failures.len() <= 3,
            "{service}: failures at {failures:?} (seconds)"
        );
    }
}
