//! `wasmkube port-forward` and the `pods/{name}/portforward` subresource, with a real agent and Wasm pods: to a
//! pod, a Service (its targetPort) and a Deployment; TCP both ways; kubectl's port-forward over SPDY (1.20) and
//! SPDY tunnelled in a WebSocket (1.37, the machine's); the official Python client's port-forward; and the
//! errors a user sees.

mod common;

use common::{Killed, NodeAgent, Server, create_pod, echo_pod, post, wait_for, wasm_app, wasmkube};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn hello_pod(name: &str, node: &str) -> Value {
    let image = format!(
        "file://{}",
        wasm_app("wasm32-wasip2", "hello_http").display()
    );
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "hello"}},
           "spec": {"nodeName": node, "containers": [{"name": "hello", "image": image,
               "ports": [{"name": "http", "containerPort": 8080}],
               "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}})
}

/// A running `wasmkube port-forward`, its local port (from "Forwarding from 127.0.0.1:N -> R") and its stderr.
struct Forward {
    process: Killed,
    local: u16,
}

impl Forward {
    fn start(server: &Server, args: &[&str]) -> Self {
        Self::start_with(Path::new(env!("CARGO_BIN_EXE_wasmkube")), server, args)
    }

    /// Starts `binary port-forward ARGS` (wasmkube or a kubectl) with the server's kubeconfig.
    fn start_with(binary: &Path, server: &Server, args: &[&str]) -> Self {
        let mut child = Command::new(binary)
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .arg("port-forward")
            .args(args)
            .env("HOME", &server.data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wasmkube port-forward");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the first line");
        let Some(local) = line
            .strip_prefix("Forwarding from 127.0.0.1:")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|port| port.parse().ok())
        else {
            let mut stderr = String::new();
            let _ = child
                .stderr
                .take()
                .map(|mut e| e.read_to_string(&mut stderr));
            panic!("unexpected first line {line:?}; stderr: {stderr}");
        };
        // Keep draining "Handling connection for N" so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in stdout.lines() {});
        Self {
            process: Killed(child),
            local,
        }
    }

    fn get(&self, path: &str) -> String {
        reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{}{path}", self.local))
            .timeout(Duration::from_secs(10))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("GET {path} through port {}: {e}", self.local))
    }

    /// Stops the process and returns what it printed on stderr.
    fn stop(mut self) -> String {
        let _ = self.process.0.kill();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.process.0.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        stderr
    }
}

#[test]
fn port_forward_reaches_a_pod_a_service_and_a_deployment() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "pf-node");
    create_pod(&server, hello_pod("hello-a", "pf-node"));
    create_pod(&server, echo_pod("echo", "pf-node"));
    for name in ["hello-a", "echo"] {
        wait_for(&server, name, "Running", |p| {
            p["status"]["phase"] == "Running"
        });
    }

    // A pod's port, local port picked; several connections, one after the other and at once.
    let forward = Forward::start(&server, &["pod/hello-a", ":8080"]);
    for _ in 0..3 {
        assert_eq!(forward.get("/").trim(), "hello from hello-a");
    }
    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| forward.get("/"))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        together.iter().all(|b| b.trim() == "hello from hello-a"),
        "{together:?}"
    );
    assert_eq!(forward.get("/healthz").trim(), "ok");
    forward.stop();

    // By port name, with a chosen local port.
    let local = common::free_port().to_string();
    let forward = Forward::start(&server, &["hello-a", &format!("{local}:http")]);
    assert_eq!(forward.local.to_string(), local);
    assert_eq!(forward.get("/").trim(), "hello from hello-a");
    forward.stop();

    // A Service port forwards to its targetPort (a name) on one of its pods.
    post(
        &server,
        "/api/v1/namespaces/default/services",
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"},
                "spec": {"selector": {"app": "hello"},
                         "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}}),
    );
    let forward = Forward::start(&server, &["svc/hello", ":80"]);
    assert_eq!(forward.get("/").trim(), "hello from hello-a");
    forward.stop();
    let (ok, _, err) = wasmkube(&server, &["port-forward", "svc/hello", "8081:8080"]);
    assert!(!ok);
    assert!(
        err.contains("service hello does not have a service port 8080"),
        "{err}"
    );

    // A Deployment's running pod.
    let image = format!(
        "file://{}",
        wasm_app("wasm32-wasip2", "hello_http").display()
    );
    post(
        &server,
        "/apis/apps/v1/namespaces/default/deployments",
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}},
                                      "spec": {"containers": [{"name": "web", "image": image,
                                          "ports": [{"containerPort": 8080}]}]}}}}),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let forward = loop {
        let running = reqwest::blocking::get(format!(
            "{}/api/v1/namespaces/default/pods?labelSelector=app%3Dweb&fieldSelector=status.phase%3DRunning",
            server.url
        ))
        .and_then(|r| r.json::<Value>())
        .map(|list| list["items"].as_array().is_some_and(|i| !i.is_empty()))
        .unwrap_or(false);
        if running {
            break Forward::start(&server, &["deploy/web", ":8080"]);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the Deployment's pod never ran"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(forward.get("/").starts_with("hello from"));
    forward.stop();

    // Raw TCP both ways: the echo server's greeting, then an echoed line.
    let forward = Forward::start(&server, &["pod/echo", ":7000"]);
    let stream = TcpStream::connect(("127.0.0.1", forward.local)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    assert_eq!(greeting.trim(), "echo from echo");
    (&stream).write_all(b"through the apiserver\n").unwrap();
    let mut echoed = String::new();
    reader.read_line(&mut echoed).unwrap();
    assert_eq!(echoed, "through the apiserver\n");
    drop((stream, reader));
    // Each closed connection ends its stream with a close handshake: nothing to report.
    std::thread::sleep(Duration::from_millis(300));
    let stderr = forward.stop();
    assert!(!stderr.contains("error"), "{stderr}");

    // A port nothing listens on: the connection closes and the error says why.
    let forward = Forward::start(&server, &["pod/hello-a", ":9999"]);
    let mut stream = TcpStream::connect(("127.0.0.1", forward.local)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0);
    std::thread::sleep(Duration::from_millis(200));
    let stderr = forward.stop();
    assert!(
        stderr.contains("error forwarding port 9999 to pod default/hello-a")
            && stderr.contains("Connection refused"),
        "{stderr}"
    );
}

#[test]
fn port_forward_errors_are_clear() {
    let server = Server::start();
    let (ok, _, err) = wasmkube(&server, &["port-forward", "pod/nope", "8080:80"]);
    assert!(!ok);
    assert!(err.contains("pods \"nope\" not found"), "{err}");

    // Bound to a node that never came: Pending.
    create_pod(&server, hello_pod("waiting", "no-such-node"));
    let (ok, _, err) = wasmkube(&server, &["port-forward", "pod/waiting", "8080:80"]);
    assert!(!ok);
    assert!(
        err.contains("unable to forward port because pod is not running. Current status=Pending"),
        "{err}"
    );
    for (args, message) in [
        (["pod/waiting", "8080:"], "the remote port is missing"),
        (["pod/waiting", "x:80"], "invalid local port \"x\""),
        (["cronjob/x", "80"], "cannot port-forward to a \"cronjob\""),
        (["pod/waiting", "80:0"], "the remote port cannot be 0"),
    ] {
        let mut full = vec!["port-forward"];
        full.extend(args);
        let (ok, _, err) = wasmkube(&server, &full);
        assert!(!ok, "{args:?}");
        assert!(err.contains(message), "{args:?}: {err}");
    }

    // The subresource itself, without an upgrade: a 400 Status.
    let response = reqwest::blocking::get(format!(
        "{}/api/v1/namespaces/default/pods/waiting/portforward?ports=80",
        server.url
    ))
    .unwrap();
    assert_eq!(response.status(), 400);
    let status: Value = response.json().unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["message"], "Upgrade request required");
}

#[test]
fn the_official_python_client_forwards_to_a_pod() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "py-node");
    create_pod(&server, echo_pod("echo", "py-node"));
    wait_for(&server, "echo", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    let script = r#"
import os
from kubernetes import client, config
from kubernetes.stream import portforward
config.load_kube_config(config_file=os.environ["KUBECONFIG"])
core = client.CoreV1Api()
pf = portforward(core.connect_get_namespaced_pod_portforward, "echo", "default", ports="7000")
sock = pf.socket(7000)
sock.settimeout(10)
data = b""
while not data.endswith(b"\n"):
    data += sock.recv(1024)
assert data == b"echo from echo\n", data
sock.sendall(b"from python\n")
data = b""
while not data.endswith(b"\n"):
    data += sock.recv(1024)
assert data == b"from python\n", data
sock.close()
print("python port-forward: ok")
"#;
    common::python(
        &server,
        &["-c".as_ref(), script.as_ref()],
        "python port-forward: ok",
    );
}

#[test]
fn kubectl_port_forward_speaks_spdy_and_spdy_over_websocket() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "kpf-node");
    create_pod(&server, hello_pod("hello-k", "kpf-node"));
    create_pod(&server, echo_pod("echo", "kpf-node"));
    for name in ["hello-k", "echo"] {
        wait_for(&server, name, "Running", |p| {
            p["status"]["phase"] == "Running"
        });
    }
    let current = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    for binary in [
        common::test_tool("kubectl-1.20/usr/bin/kubectl"),
        common::test_tool("kubectl-1.37/kubectl"),
        current.into(),
    ] {
        let forward = Forward::start_with(&binary, &server, &["pod/hello-k", ":8080"]);
        for _ in 0..3 {
            assert_eq!(forward.get("/").trim(), "hello from hello-k", "{binary:?}");
        }
        let together: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| forward.get("/"))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            together.iter().all(|b| b.trim() == "hello from hello-k"),
            "{together:?}"
        );
        let stderr = forward.stop();
        assert!(!stderr.contains("error"), "{binary:?}: {stderr}");

        // TCP both ways: the echo pod greets, then echoes.
        let forward = Forward::start_with(&binary, &server, &["pod/echo", ":7000"]);
        let mut connection = TcpStream::connect(("127.0.0.1", forward.local)).unwrap();
        connection
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(connection.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "echo from echo\n", "{binary:?}");
        connection.write_all(b"ping over kubectl\n").unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "ping over kubectl\n", "{binary:?}");
        drop(connection);

        // A port nothing listens on: the connection is closed and kubectl says why.
        let forward_closed = Forward::start_with(&binary, &server, &["pod/echo", ":7999"]);
        let mut refused = TcpStream::connect(("127.0.0.1", forward_closed.local)).unwrap();
        refused
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut nothing = Vec::new();
        let _ = refused.read_to_end(&mut nothing);
        assert!(nothing.is_empty());
        let stderr = forward_closed.stop();
        assert!(
            stderr.contains("error forwarding port 7999 to pod default/echo"),
            "{binary:?}: {stderr}"
        );
        forward.stop();
    }
}
