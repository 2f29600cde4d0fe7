//! `kubectl exec` and `kubectl attach` against Wasm pods, through the apiserver to a real agent: kubectl 1.37
//! and the machine's kubectl (WebSocket v5), the official Python client (v4), kubectl 1.20 (SPDY/3.1), and the
//! errors a user sees.

mod common;

use common::{Killed, NodeAgent, Server, create_pod, wait_for, wasm_app};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kubectl_1_37() -> PathBuf {
    common::test_tool("kubectl-1.37/kubectl")
}

fn current_kubectl() -> PathBuf {
    PathBuf::from(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
}

/// Runs kubectl with the server's kubeconfig and `stdin` as its input: (exit code, stdout, stderr).
fn kubectl(
    binary: &Path,
    server: &Server,
    args: &[&str],
    stdin: Option<&str>,
) -> (i32, String, String) {
    let mut command = Command::new(binary);
    command
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(args)
        .env("HOME", &server.data_dir);
    let output = common::output_with_stdin(command, stdin);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn toolbox() -> String {
    format!("file://{}", wasm_app("wasm32-wasip1", "toolbox").display())
}

/// A pod running the toolbox's `repl` (a long-running command module) with a volume and an env var.
fn tools_pod(name: &str, node: &str, container: Value) -> Value {
    let mut container = container;
    container["name"] = json!("tools");
    container["image"] = json!(toolbox());
    container["command"] = json!(["repl"]);
    container["env"] = json!([{"name": "GREETING", "value": "hello from the spec"}]);
    container["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"nodeName": node, "containers": [container],
                    "volumes": [{"name": "data", "emptyDir": {}}]}})
}

fn running(server: &Server, name: &str) {
    wait_for(server, name, "Running", |p| {
        p["status"]["phase"] == "Running"
    });
}

/// What every exec client must see: output, stdin, exit codes, traps, the container's env and volumes.
fn exec_journey(binary: &Path, server: &Server) {
    let exec = |args: &[&str], stdin: Option<&str>| {
        let mut full = vec!["exec"];
        full.extend_from_slice(args);
        kubectl(binary, server, &full, stdin)
    };
    let (code, out, err) = exec(&["tools", "--", "echo", "hello", "world"], None);
    assert_eq!((code, out.as_str()), (0, "hello world\n"), "{err}");

    let (code, out, err) = exec(&["-i", "tools", "--", "cat"], Some("line one\nline two\n"));
    assert_eq!((code, out.as_str()), (0, "line one\nline two\n"), "{err}");

    let (code, out, err) = exec(&["tools", "--", "echo-err", "to", "stderr"], None);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(err.contains("to stderr"), "{err}");

    // The exit code reaches kubectl, which exits with it.
    let (code, _, err) = exec(&["tools", "--", "exit", "3"], None);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("command terminated with exit code 3"), "{err}");

    // A trap: its message on stderr, exit code 134 (as a process killed by SIGABRT).
    let (code, _, err) = exec(&["tools", "--", "trap"], None);
    assert_eq!(code, 134, "{err}");
    assert!(err.contains("wasm trap"), "{err}");

    // The container's world: its env, its volumes (shared with the running instance).
    let (code, out, err) = exec(&["tools", "--", "env"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(|l| l == "GREETING=hello from the spec"),
        "{out}"
    );
    let (code, _, err) = exec(&["tools", "--", "write", "/data/note", "kept"], None);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = exec(&["tools", "-c", "tools", "--", "read", "/data/note"], None);
    assert_eq!((code, out.as_str()), (0, "kept"), "{err}");
    // Nothing outside its volumes.
    let (code, _, err) = exec(&["tools", "--", "read", "/etc/passwd"], None);
    assert_eq!(code, 1, "{err}");

    let (code, _, err) = exec(&["tools", "-c", "nope", "--", "echo"], None);
    assert_ne!(code, 0);
    assert!(
        err.contains("container nope is not valid for pod tools"),
        "{err}"
    );
    let (code, _, err) = exec(&["missing", "--", "echo"], None);
    assert_ne!(code, 0);
    assert!(err.contains("pods \"missing\" not found"), "{err}");
}

#[test]
fn kubectl_execs_commands_in_a_wasm_pod_with_its_env_volumes_and_exit_codes() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "exec-node");
    create_pod(&server, tools_pod("tools", "exec-node", json!({})));
    running(&server, "tools");
    exec_journey(&kubectl_1_37(), &server);
    exec_journey(&current_kubectl(), &server);

    // Not every container can run a command, and a finished pod runs none.
    let hello = format!(
        "file://{}",
        wasm_app("wasm32-wasip2", "hello_http").display()
    );
    create_pod(
        &server,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
               "spec": {"nodeName": "exec-node", "containers": [{"name": "web", "image": hello,
                        "ports": [{"containerPort": 8080}]}]}}),
    );
    create_pod(
        &server,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "done"},
               "spec": {"nodeName": "exec-node", "restartPolicy": "Never",
                        "containers": [{"name": "done", "image": toolbox(), "command": ["exit", "0"]}]}}),
    );
    running(&server, "web");
    wait_for(&server, "done", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    let binary = kubectl_1_37();
    let (code, _, err) = kubectl(&binary, &server, &["exec", "web", "--", "ls"], None);
    assert_ne!(code, 0);
    assert!(err.contains("wasi:http component"), "{err}");
    let (code, _, err) = kubectl(&binary, &server, &["exec", "done", "--", "ls"], None);
    assert_ne!(code, 0);
    assert!(
        err.contains("cannot exec into a container in a completed pod; current phase is Succeeded"),
        "{err}"
    );
}

#[test]
fn kubectl_1_20_execs_over_spdy() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "spdy-node");
    create_pod(&server, tools_pod("tools", "spdy-node", json!({})));
    running(&server, "tools");
    exec_journey(&common::test_tool("kubectl-1.20/usr/bin/kubectl"), &server);
}

#[test]
fn the_official_python_client_execs_with_v4_and_reads_the_exit_code() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "py-exec-node");
    create_pod(&server, tools_pod("tools", "py-exec-node", json!({})));
    running(&server, "tools");
    let script = r#"
from kubernetes import client, config
from kubernetes.stream import stream
config.load_kube_config()
core = client.CoreV1Api()
out = stream(core.connect_get_namespaced_pod_exec, "tools", "default",
             command=["echo", "from", "python"], stderr=True, stdin=False, stdout=True, tty=False)
print("output:", out.strip())
resp = stream(core.connect_get_namespaced_pod_exec, "tools", "default", command=["cat"],
              stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
resp.write_stdin("typed in\n")
resp.update(timeout=2)
print("cat:", resp.read_stdout(timeout=5).strip())
resp.close()
resp = stream(core.connect_get_namespaced_pod_exec, "tools", "default", command=["exit", "5"],
              stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
resp.run_forever(timeout=10)
print("returncode:", resp.returncode)
"#;
    let output = Command::new("python3")
        .args(["-c", script])
        .env("KUBECONFIG", server.kubeconfig())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    for expected in ["output: from python", "cat: typed in", "returncode: 5"] {
        assert!(stdout.contains(expected), "{expected} in {stdout}{stderr}");
    }
}

/// Reads a child's stdout lines until one satisfies `done`, within 20 s; returns what it read.
fn read_until(child: &mut std::process::Child, done: impl Fn(&str) -> bool) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut read = String::new();
    while let Ok(line) = seen.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        read.push_str(&line);
        read.push('\n');
        if done(&line) {
            return read;
        }
    }
    panic!("never saw the expected line; read: {read}");
}

#[test]
fn kubectl_attach_joins_the_running_container_stdin_and_output() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "attach-node");
    create_pod(
        &server,
        tools_pod(
            "repl",
            "attach-node",
            json!({"stdin": true, "stdinOnce": true}),
        ),
    );
    running(&server, "repl");

    // Attached with stdin: what the client types reaches the running instance, and with stdinOnce its stdin
    // ends when the client's does.
    let mut child = Command::new(kubectl_1_37())
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(["attach", "-i", "repl"])
        .env("HOME", &server.data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl attach");
    let mut stdin = child.stdin.take().expect("stdin");
    // The attach is under way once output flows; type only then (earlier lines would precede it).
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"first\nsecond\n").expect("type");
    drop(stdin);
    let mut child = Killed(child);
    let read = read_until(&mut child.0, |l| l == "stdin closed");
    assert!(read.contains("echo: first\necho: second\n"), "{read}");

    // Attached without stdin: the output from now on.
    let mut child = Killed(
        Command::new(current_kubectl())
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .args(["attach", "repl"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl attach"),
    );
    let read = read_until(&mut child.0, |l| l.starts_with("tick "));
    assert!(!read.contains("echo: first"), "only new output: {read}");
}

#[test]
fn exec_needs_the_create_verb_and_garbage_frames_leave_the_agent_serving() {
    // A secured server (HTTPS, RBAC), whose node authenticates with a token of its own.
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "node-token,system:node:guard-node,n1,system:nodes\n",
    )
    .unwrap();
    let server = Server::start_with(&[
        "--authorization-mode",
        "Node,RBAC",
        "--token-auth-file",
        tokens.to_str().unwrap(),
    ]);
    let _node = NodeAgent::start_as(&server, "guard-node", Some("node-token"));
    create_pod(&server, tools_pod("tools", "guard-node", json!({})));
    running(&server, "tools");
    // An account bound to `view` may read the pod but not exec into it.
    let (ok, _, err) = common::kubectl(
        &server,
        None,
        &[
            "create",
            "rolebinding",
            "default-views",
            "--clusterrole=view",
            "--serviceaccount=default:default",
        ],
        None,
    );
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let token = loop {
        // The default ServiceAccount is made by a controller, soon after the start.
        let (ok, out, err) = common::kubectl(&server, None, &["create", "token", "default"], None);
        if ok {
            break out.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "{err}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let viewer = server.http_as(Some(&token));
    let pod = format!("{}/api/v1/namespaces/default/pods/tools", server.url);
    assert_eq!(viewer.get(&pod).send().unwrap().status(), 200);
    let refused = viewer
        .get(format!("{pod}/exec?command=ls&stdout=true"))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 403);
    let status: Value = refused.json().unwrap();
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot create resource \"pods/exec\""),
        "{status}"
    );

    // Raw WebSocket frames of every shape, then a well-formed exec still works.
    let script = r#"
import os, websocket
url = os.environ["SERVER"].replace("https", "wss") + "/api/v1/namespaces/default/pods/tools/exec?command=cat&stdin=true&stdout=true"
ws = websocket.create_connection(url, header=["Authorization: Bearer " + os.environ["TOKEN"]],
                                 subprotocols=["v5.channel.k8s.io"], sslopt={"ca_certs": os.environ["CA"]})
for frame in [b"", b"\x07junk", b"\xff", b"\xff\x09", b"\x04{not json", b"\x00" + os.urandom(70000)]:
    ws.send_binary(frame)
ws.send("text frames are ignored")
ws.send_binary(b"\xff\x00")
while True:
    data = ws.recv()
    if isinstance(data, bytes) and data[:1] == b"\x03":
        print("status:", data[1:].decode())
        break
ws.close()

# SPDY: an upgrade, then garbage (a version-2 control frame, then random bytes): the agent ends the session.
import socket, ssl, urllib.parse
url = urllib.parse.urlparse(os.environ["SERVER"])
context = ssl.create_default_context(cafile=os.environ["CA"])
raw = context.wrap_socket(socket.create_connection((url.hostname, url.port)), server_hostname=url.hostname)
raw.sendall(("POST /api/v1/namespaces/default/pods/tools/exec?command=cat&stdin=true&stdout=true HTTP/1.1\r\n"
             "Host: %s\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
             "X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
             % (url.netloc, os.environ["TOKEN"])).encode())
head = b""
while b"\r\n\r\n" not in head:
    head += raw.recv(1)
print("spdy upgrade:", head.split(b"\r\n")[0].decode())
raw.sendall(b"\x80\x02\x00\x01\x00\x00\x00\x0a" + os.urandom(4096))
raw.settimeout(10)
while raw.recv(65536):
    pass
print("spdy session closed")
"#;
    let output = Command::new("python3")
        .args(["-c", script])
        .env("SERVER", &server.url)
        .env("TOKEN", server.admin_token())
        .env("CA", server.ca_file())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("\"status\":\"Success\""),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains("spdy upgrade: HTTP/1.1 101") && stdout.contains("spdy session closed"),
        "{stdout}{stderr}"
    );
    let (code, out, err) = kubectl(
        &kubectl_1_37(),
        &server,
        &["exec", "tools", "--", "echo", "still", "serving"],
        None,
    );
    assert_eq!((code, out.as_str()), (0, "still serving\n"), "{err}");
}

#[test]
fn kubectl_debug_runs_a_tool_beside_the_app_with_its_files_and_address() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "debug-node");
    create_pod(&server, tools_pod("tools", "debug-node", json!({})));
    running(&server, "tools");
    let binary = kubectl_1_37();
    let (code, _, err) = kubectl(
        &binary,
        &server,
        &[
            "exec",
            "tools",
            "--",
            "write",
            "/data/note",
            "left by the app",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");

    // An ephemeral container targeting the app sees its volumes. kubectl debug takes only image references:
    // the toolbox is pulled from a registry.
    let dir = tempfile::tempdir().unwrap();
    let (_registry, address) = common::registry(dir.path(), None);
    let image = format!("{address}/tools/toolbox:v1");
    common::push_wasm(
        &wasm_app("wasm32-wasip1", "toolbox"),
        &image,
        oci_client::secrets::RegistryAuth::Anonymous,
    );
    let (code, out, err) = kubectl(
        &binary,
        &server,
        &[
            "debug",
            "tools",
            "--image",
            &image,
            "--target",
            "tools",
            "--container",
            "dbg",
            "--",
            "read",
            "/data/note",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    let pod = wait_for(&server, "tools", "debugged", |p| {
        p["status"]["ephemeralContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    });
    assert_eq!(pod["spec"]["ephemeralContainers"][0]["name"], "dbg");
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
    let (code, out, err) = kubectl(&binary, &server, &["logs", "tools", "-c", "dbg"], None);
    assert_eq!((code, out.as_str()), (0, "left by the app\n"), "{err}");

    // Interactive: kubectl attaches to the new container.
    let mut child = Killed(
        Command::new(&binary)
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .args([
                "debug",
                "-i",
                "tools",
                "--image",
                &image,
                "--container",
                "shell",
                "--",
                "repl",
            ])
            .env("HOME", &server.data_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl debug -i"),
    );
    let mut stdin = child.0.stdin.take().expect("stdin");
    stdin.write_all(b"typed into the debugger\n").expect("type");
    let read = read_until(&mut child.0, |l| l == "echo: typed into the debugger");
    assert!(read.contains("echo: typed into the debugger"), "{read}");
    drop(stdin);

    // What Kubernetes refuses: removing or changing one, ports on one, setting them at creation.
    let url = format!(
        "{}/api/v1/namespaces/default/pods/tools/ephemeralcontainers",
        server.url
    );
    let patch = |body: Value| {
        server
            .http()
            .patch(&url)
            .header("Content-Type", "application/merge-patch+json")
            .json(&body)
            .send()
            .unwrap()
    };
    let removed = patch(json!({"spec": {"ephemeralContainers": []}}));
    assert_eq!(removed.status(), 422);
    let status: Value = removed.json().unwrap();
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("existing ephemeral containers \"dbg\" may not be removed"),
        "{status}"
    );
    let mut listed = server
        .http()
        .get(&url)
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap()["spec"]["ephemeralContainers"]
        .clone();
    listed
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "web", "image": image, "ports": [{"containerPort": 80}]}));
    let with_ports = patch(json!({"spec": {"ephemeralContainers": listed}}));
    assert_eq!(with_ports.status(), 422);
    let status: Value = with_ports.json().unwrap();
    assert!(
        status["message"].as_str().unwrap_or_default().contains(
            "spec.ephemeralContainers[2].ports: Forbidden: cannot be set for an Ephemeral Container"
        ),
        "{status}"
    );
    let mut born_with = tools_pod("born", "debug-node", json!({}));
    born_with["spec"]["ephemeralContainers"] = json!([{"name": "dbg", "image": image}]);
    let refused = server
        .http()
        .post(format!("{}{}", server.url, common::PODS))
        .json(&born_with)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 422);
    assert!(
        refused
            .text()
            .unwrap()
            .contains("spec.ephemeralContainers: Forbidden: cannot be set on create")
    );
}
