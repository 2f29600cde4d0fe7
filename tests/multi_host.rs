//! Three hosts in network namespaces, made by the test with `ip netns` and veth pairs on a bridge: the control
//! plane on one, a node agent on each of the other two, joined with a join token alone. Pod addresses work
//! across hosts (host-gw routes), Service traffic from one host reaches the pods of both, and a node host cut
//! off is replaced and comes back when restored. Needs root (CAP_NET_ADMIN), as `.ci/run` has.

mod common;

use common::wasm_app;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// The namespaces and processes of one test; all removed when dropped.
struct Lab {
    prefix: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

const HOSTS: [(&str, &str); 3] = [
    ("cp", "10.99.0.1"),
    ("n1", "10.99.0.2"),
    ("n2", "10.99.0.3"),
];

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

fn must(args: &[&str]) {
    let output = ip(args);
    assert!(
        output.status.success(),
        "ip {}: {} (this test needs root: CAP_NET_ADMIN)",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Lab {
    fn new() -> Self {
        let prefix = format!("wk{}", std::process::id() % 100_000);
        let lab = Self {
            prefix,
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        };
        let switch = lab.ns("sw");
        must(&["netns", "add", &switch]);
        must(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        must(&["-n", &switch, "link", "set", "br0", "up"]);
        for (host, address) in HOSTS {
            let ns = lab.ns(host);
            must(&["netns", "add", &ns]);
            let port = format!("p{host}");
            must(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            must(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
            must(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
            must(&["-n", &ns, "link", "set", "eth0", "up"]);
            must(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A command run on `host`.
    fn on(&self, host: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(host), program]);
        command
    }

    /// Starts wasmkube on `host` with its output in `log`.
    fn spawn(&mut self, host: &str, args: &[&str], log: &str) {
        let out = std::fs::File::create(self.path(log)).unwrap();
        let child = self
            .on(host, env!("CARGO_BIN_EXE_wasmkube"))
            .args(args)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// The admin's CLI, on the control plane host.
    fn admin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut command = self.on("cp", env!("CARGO_BIN_EXE_wasmkube"));
        command
            .arg("--kubeconfig")
            .arg(self.path("cp/kubeconfig"))
            .args(args);
        let output = common::output_with_stdin(command, stdin);
        assert!(
            output.status.success(),
            "wasmkube {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.admin(&all, None)).unwrap()
    }

    /// `curl` on `host`: the body, or none.
    fn curl(&self, host: &str, url: &str) -> Option<String> {
        let output = self
            .on(host, "curl")
            .args(["-s", "--max-time", "2", url])
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for host in ["cp", "n1", "n2", "sw"] {
            let _ = ip(&["netns", "del", &self.ns(host)]);
        }
    }
}

fn wait_until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ready_nodes(lab: &Lab) -> Vec<String> {
    lab.json(&["get", "nodes"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// (pod name, node, pod IP) of the running hello pods.
fn hello_pods(lab: &Lab) -> Vec<(String, String, String)> {
    lab.json(&["get", "pods", "-l", "app=hello"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                text(&p["metadata"]["name"]),
                text(&p["spec"]["nodeName"]),
                text(&p["status"]["podIP"]),
            )
        })
        .collect()
}

fn hello_manifest(image: &Path) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: hello}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: hello}}}}
  template:
    metadata: {{labels: {{app: hello}}}}
    spec:
      containers:
      - name: hello
        image: file://{}
        ports: [{{containerPort: 8080}}]
        env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: hello}}
spec:
  selector: {{app: hello}}
  ports: [{{port: 80, targetPort: 8080, appProtocol: http}}]
"#,
        image.display()
    )
}

#[test]
fn pods_and_services_span_hosts_and_a_cut_off_host_is_replaced_then_returns() {
    let image = wasm_app("wasm32-wasip2", "hello_http");
    let mut lab = Lab::new();
    let server_dir = lab.path("cp").display().to_string();
    lab.spawn(
        "cp",
        &[
            "server",
            "--data-dir",
            &server_dir,
            "--listen",
            "10.99.0.1:6443",
            "--cluster-cidr",
            "10.42.0.0/16",
            "--node-monitor-grace-period-seconds",
            "3",
        ],
        "server.log",
    );
    // The server prints a join command; the nodes need nothing else.
    let join = wait_until("the join token", Duration::from_secs(20), || {
        lab.log("server.log")
            .split_whitespace()
            .find(|w| w.starts_with("wk1:"))
            .map(str::to_owned)
    });
    for (host, address) in &HOSTS[1..] {
        let data = lab.path(host).display().to_string();
        lab.spawn(
            host,
            &[
                "--server",
                "https://10.99.0.1:6443",
                "--token",
                &join,
                "node",
                "--name",
                host,
                "--address",
                address,
                "--data-dir",
                &data,
            ],
            &format!("{host}.log"),
        );
    }
    wait_until("both nodes Ready", Duration::from_secs(30), || {
        (ready_nodes(&lab).len() == 2).then_some(())
    });

    lab.admin(&["apply", "-f", "-"], Some(&hello_manifest(&image)));
    let pods = wait_until(
        "a ready hello pod on each node",
        Duration::from_secs(60),
        || {
            let pods = hello_pods(&lab);
            let mut nodes: Vec<&str> = pods.iter().map(|(_, node, _)| node.as_str()).collect();
            nodes.sort();
            (nodes == ["n1", "n2"]
                && lab
                    .curl("n1", &format!("http://{}:8080/", pods[0].2))
                    .is_some())
            .then_some(pods.clone())
        },
    );
    // A pod on n2 answers at its own address from n1: the address crosses hosts.
    let (remote_name, _, remote_ip) = pods.iter().find(|(_, node, _)| node == "n2").unwrap();
    let body = wait_until("n2's pod from n1", Duration::from_secs(20), || {
        lab.curl("n1", &format!("http://{remote_ip}:8080/"))
    });
    assert_eq!(
        body.trim(),
        format!("hello from {remote_name}"),
        "{}",
        lab.log("n1.log")
    );

    // The Service, from n1's proxy, spreads over the pods of both hosts.
    let service = lab.json(&["get", "service", "hello"]);
    let cluster_ip = service["spec"]["clusterIP"].as_str().unwrap().to_owned();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        if let Some(body) = lab.curl("n1", &format!("http://{cluster_ip}/")) {
            seen.insert(body.trim().to_owned());
        }
    }
    let expected: std::collections::BTreeSet<String> = pods
        .iter()
        .map(|(name, _, _)| format!("hello from {name}"))
        .collect();
    assert_eq!(seen, expected, "n1 log:\n{}", lab.log("n1.log"));
    // Logs of n2's pod come through the apiserver from n2's agent (the command fails if they cannot).
    lab.admin(&["logs", remote_name], None);

    // n2 cut off: it goes NotReady, its pod is replaced on n1, and the Service keeps answering from n1.
    must(&["-n", &lab.ns("n2"), "link", "set", "eth0", "down"]);
    wait_until("n2 NotReady", Duration::from_secs(30), || {
        (ready_nodes(&lab) == ["n1"]).then_some(())
    });
    wait_until("both hello pods on n1", Duration::from_secs(60), || {
        let pods = hello_pods(&lab);
        (pods.len() == 2 && pods.iter().all(|(_, node, _)| node == "n1")).then_some(())
    });
    let answered = wait_until(
        "the Service answering from n1 alone",
        Duration::from_secs(30),
        || {
            let bodies: Vec<String> = (0..10)
                .filter_map(|_| lab.curl("n1", &format!("http://{cluster_ip}/")))
                .collect();
            (bodies.len() == 10).then_some(bodies)
        },
    );
    assert!(
        answered.iter().all(|b| b.starts_with("hello from hello-")),
        "{answered:?}"
    );

    // Restored: n2 is Ready again.
    must(&["-n", &lab.ns("n2"), "link", "set", "eth0", "up"]);
    wait_until("n2 Ready again", Duration::from_secs(30), || {
        (ready_nodes(&lab).len() == 2).then_some(())
    });
}
