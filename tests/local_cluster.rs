//! `wasmkube up` and `down`: a named 3-node cluster with the hello Deployment behind a Service, stopped and
//! restarted with its objects intact, a second cluster beside it, and the errors a user can run into. Every
//! cluster lives in a temporary WASMKUBE_HOME and writes a temporary kubeconfig.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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

fn current_context(kubeconfig: &Path) -> Option<String> {
    let text = std::fs::read_to_string(kubeconfig).ok()?;
    let config: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    config["current-context"].as_str().map(str::to_owned)
}

#[test]
fn up_runs_a_named_cluster_that_down_stops_and_up_restarts_with_its_objects() {
    // The apps the manifests name.
    common::wasm_app("wasm32-wasip2", "hello_http");
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
    // Real kubectl uses the context `up` wrote.
    let nodes = Command::new("kubectl")
        .args(["get", "nodes", "-o", "wide"])
        .env("KUBECONFIG", home.kubeconfig())
        .output()
        .expect("kubectl");
    let nodes = String::from_utf8_lossy(&nodes.stdout);
    for i in 1..=3 {
        assert!(
            nodes.contains(&format!("dev-node-{i}")) && nodes.contains(&format!("127.100.192.{i}")),
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

    // Running already: nothing to do.
    let again = home.ok(&["up", "--name", "dev"]);
    assert!(again.contains("already running"), "{again}");
    let (ok, _, err) = home.run(&["up", "--name", "dev", "--nodes", "5"]);
    assert!(!ok);
    assert!(err.contains("has 3 nodes, not 5"), "{err}");

    let url = "https://127.100.255.254:6443";
    home.ok(&["down", "--name", "dev"]);
    assert!(!api_answers(url), "the API still answers after down");
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
    assert!(api_answers("https://127.101.255.254:6443"));
    assert!(api_answers(url));
    assert_eq!(
        current_context(&home.kubeconfig()).as_deref(),
        Some("wasmkube-edge")
    );
    let edge_pods = json(&home, &["get", "pods"]);
    assert_eq!(edge_pods["items"].as_array().map(Vec::len), Some(0));

    // Purge: processes, data and kubeconfig entries go; the other cluster stays.
    home.ok(&["down", "--name", "edge", "--purge"]);
    assert!(!api_answers("https://127.101.255.254:6443"));
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
    ] {
        let (ok, _, err) = home.run(&args);
        assert!(!ok, "{args:?}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
