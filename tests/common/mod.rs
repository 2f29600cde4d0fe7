//! A real `wasmkube server` process on a free loopback port, with its own data dir, for tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running control plane; killed when dropped.
pub struct Server {
    pub url: String,
    pub data_dir: PathBuf,
    /// The flags it was started with (but `--listen`), for a restart.
    args: Vec<String>,
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

/// `127.0.0.1:PORT` of `http(s)://127.0.0.1:PORT`.
fn address_of(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, address)| address)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Server {
    /// Starts a server with a fresh data dir.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server that only serves the API (no scheduler, no controllers acting on what a test writes).
    pub fn api_only() -> Self {
        Self::start_with(&["--no-scheduler", "--no-controllers"])
    }

    /// Starts a server with a fresh data dir and extra flags.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Self::start_in(dir.path(), extra);
        server._dir = Some(dir);
        server
    }

    /// Starts a server on an existing data dir with extra flags.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Self {
        // Servers of one test process run side by side: each gets pod addresses, cluster IPs and node ports of
        // its own.
        static SERVERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let slot = (std::process::id() + n * 7) % 200;
        let cluster_cidr = format!("127.{}.0.0/17", 50 + slot);
        let service_range = format!("127.{}.128.0/17", 50 + slot);
        let node_ports = format!("{}-{}", 30000 + slot * 10, 30009 + slot * 10);
        let mut args = defaults_not_in(
            extra,
            &[
                ("--cluster-cidr", &cluster_cidr),
                ("--service-cluster-ip-range", &service_range),
                ("--service-node-port-range", &node_ports),
            ],
        );
        args.extend(extra.iter().map(|a| a.to_string()));
        // Tests that do not name an authorization mode get a development server: plain HTTP, open to all.
        let secure = extra.contains(&"--authorization-mode");
        if !secure {
            args.push("--insecure".into());
        }
        // Another test may take the free port before this server binds it: then try another.
        let scheme = if secure { "https" } else { "http" };
        for _ in 0..5 {
            let url = format!("{scheme}://127.0.0.1:{}", free_port());
            if let Some(server) = Self::spawn(data_dir, &url, &args) {
                return server;
            }
        }
        panic!("wasmkube server did not start in {}", data_dir.display());
    }

    fn spawn(data_dir: &Path, url: &str, args: &[String]) -> Option<Self> {
        let _ = std::fs::remove_file(data_dir.join("kubeconfig"));
        let child = Command::new(env!("CARGO_BIN_EXE_wasmkube"))
            .args(["server", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", address_of(url)])
            .args(args)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(data_dir.join("server.log"))
                    .expect("a server log file"),
            )
            .spawn()
            .expect("start wasmkube server");
        let mut server = Self {
            url: url.to_owned(),
            data_dir: data_dir.to_path_buf(),
            args: args.to_vec(),
            child,
            _dir: None,
        };
        if server.wait_ready() {
            return Some(server);
        }
        server.kill();
        None
    }

    /// Starts the server again (after `kill`) on the same data dir, address and flags.
    pub fn restart(&mut self) {
        let dir = self._dir.take();
        let mut again = Self::spawn(&self.data_dir, &self.url, &self.args)
            .unwrap_or_else(|| panic!("wasmkube server did not restart on {}", self.url));
        again._dir = dir;
        *self = again;
    }

    /// Waits until the server listens and has written its kubeconfig; false if it exited first.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        let address = address_of(&self.url).to_owned();
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if std::net::TcpStream::connect(&address).is_ok()
                && self.data_dir.join("kubeconfig").exists()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// The admin's bearer token (the server makes it on first start).
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .expect("the server's admin token")
            .trim()
            .to_owned()
    }

    /// The cluster CA's certificate file, when the server serves TLS.
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir.join("pki/ca.crt")
    }

    /// An HTTP client that trusts the server and sends `token` (none: anonymous).
    pub fn http_as(&self, token: Option<&str>) -> reqwest::blocking::Client {
        let mut builder = reqwest::blocking::Client::builder();
        if let Ok(pem) = std::fs::read(self.ca_file()) {
            builder =
                builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("the CA"));
        }
        if let Some(token) = token {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().expect("a header value"),
            );
            builder = builder.default_headers(headers);
        }
        builder.build().expect("an HTTP client")
    }

    /// An HTTP client that trusts the server and authenticates as its admin.
    pub fn http(&self) -> reqwest::blocking::Client {
        self.http_as(Some(&self.admin_token()))
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self, limit: Duration) -> Option<bool> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// The flags of `defaults` that `extra` does not set itself.
fn defaults_not_in(extra: &[&str], defaults: &[(&str, &str)]) -> Vec<String> {
    defaults
        .iter()
        .filter(|(flag, _)| !extra.contains(flag))
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect()
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            print_log_tail("server", &self.data_dir.join("server.log"));
        }
    }
}

/// Lines of a component's log a failing test prints, so a failure in CI shows what the cluster did.
const LOG_TAIL_LINES: usize = 80;

/// Prints the end of a log to the test's output (shown when the test fails).
fn print_log_tail(component: &str, path: &Path) {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    eprintln!(
        "--- the last {} lines of {component}'s log ({}) ---\n{}",
        tail.len(),
        path.display(),
        tail.join("\n")
    );
}

/// Runs the wasmkube CLI against a server; returns (success, stdout, stderr).
pub fn wasmkube(server: &Server, args: &[&str]) -> (bool, String, String) {
    let kubeconfig = server.kubeconfig();
    let mut full = vec!["--kubeconfig", kubeconfig.to_str().expect("a UTF-8 path")];
    full.extend(args);
    run_wasmkube(&full)
}

/// Runs the wasmkube CLI with `args`; returns (success, stdout, stderr).
pub fn run_wasmkube(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .args(args)
        .output()
        .expect("run wasmkube");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A running `wasmkube node` agent; killed when dropped.
pub struct NodeAgent {
    pub name: String,
    pub data_dir: PathBuf,
    token: Option<String>,
    /// Extra `wasmkube node` flags, kept for restarts.
    extra: Vec<String>,
    /// The `--server` URLs, when more than the one server's.
    urls: Option<String>,
    child: Child,
    _dir: tempfile::TempDir,
}

fn spawn_agent(
    server: &Server,
    urls: &str,
    name: &str,
    data_dir: &Path,
    token: Option<&str>,
    extra: &[String],
) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmkube"));
    if server.url.starts_with("https") {
        command.arg("--certificate-authority").arg(server.ca_file());
    }
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    command
        .args([
            "--server",
            urls,
            "node",
            "--name",
            name,
            "--port",
            "0",
            "--crash-backoff-seconds",
            "0.5",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data_dir.join("agent.log")).expect("agent log"))
        .spawn()
        .expect("start wasmkube node")
}

impl NodeAgent {
    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts an agent for `server` with a short crash backoff, and waits for its Node to be Ready.
    pub fn start(server: &Server, name: &str) -> Self {
        Self::start_as(server, name, None)
    }

    /// Starts an agent authenticating with `token` (none: anonymous).
    pub fn start_as(server: &Server, name: &str, token: Option<&str>) -> Self {
        Self::start_full(server, name, token, &[])
    }

    /// Starts an agent with extra `wasmkube node` flags.
    pub fn start_with(server: &Server, name: &str, extra: &[&str]) -> Self {
        Self::start_full(server, name, None, extra)
    }

    /// Starts an agent given every server's URL (`--server A,B,...`); waits for it through the first.
    pub fn start_over(servers: &[&Server], name: &str) -> Self {
        let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
        Self::start_full_over(servers[0], Some(urls.join(",")), name, None, &[])
    }

    fn start_full(server: &Server, name: &str, token: Option<&str>, extra: &[&str]) -> Self {
        Self::start_full_over(server, None, name, token, extra)
    }

    fn start_full_over(
        server: &Server,
        urls: Option<String>,
        name: &str,
        token: Option<&str>,
        extra: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let url = urls.as_deref().unwrap_or(&server.url);
        let child = spawn_agent(server, url, name, dir.path(), token, &extra);
        let agent = Self {
            name: name.to_owned(),
            data_dir: dir.path().to_path_buf(),
            token: token.map(str::to_owned),
            extra,
            urls,
            child,
            _dir: dir,
        };
        agent.wait_registered(server, None);
        agent
    }

    /// Kills the agent and starts it again on the same data dir; waits until it registered anew.
    pub fn restart(&mut self, server: &Server) {
        let before = self.registered_port(server);
        self.kill();
        self.child = spawn_agent(
            server,
            self.urls.as_deref().unwrap_or(&server.url),
            &self.name,
            &self.data_dir,
            self.token.as_deref(),
            &self.extra,
        );
        self.wait_registered(server, before);
    }

    /// The log port the Node reports, if it is Ready.
    fn registered_port(&self, server: &Server) -> Option<i64> {
        let url = format!("{}/api/v1/nodes/{}", server.url, self.name);
        let node = server
            .http()
            .get(&url)
            .send()
            .and_then(|r| r.json::<serde_json::Value>())
            .ok()?;
        let ready = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready
            .then(|| node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_i64())
            .flatten()
    }

    /// Waits for a Ready node whose agent listens on another port than `previous` (a new process).
    fn wait_registered(&self, server: &Server, previous: Option<i64>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(port) = self.registered_port(server)
                && Some(port) != previous
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.data_dir.join("agent.log")).unwrap_or_default();
        panic!("node {} did not become Ready; agent log:\n{log}", self.name);
    }

    /// Kills the agent at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends the agent a signal (`STOP` freezes it, `CONT` thaws it).
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal}");
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            print_log_tail(
                &format!("node {}", self.name),
                &self.data_dir.join("agent.log"),
            );
        }
    }
}

/// The path of a built example app, building wasm-apps/ once per test process.
/// A client binary that scripts/setup-test-tools installs under `.tools` (`kubectl-1.37/kubectl`).
pub fn test_tool(path: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".tools")
        .join(path);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-test-tools",
        path.display()
    );
    path
}

pub fn wasm_app(target: &str, name: &str) -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    BUILD.call_once(|| {
        let status = Command::new(root.join("scripts/build-wasm-apps"))
            .status()
            .expect("build wasm-apps");
        assert!(status.success(), "scripts/build-wasm-apps failed");
    });
    root.join(format!("target/wasm-apps/{target}/release/{name}.wasm"))
}

/// The pods of the default namespace.
pub const PODS: &str = "/api/v1/namespaces/default/pods";

/// A TCP echo pod (wasm-apps tcp-echo on port 7000, greeting "echo from NAME"), labelled app=echo.
pub fn echo_pod(name: &str, node: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "echo"}},
           "spec": {"nodeName": node, "containers": [{
               "name": "echo",
               "image": format!("file://{}", wasm_app("wasm32-wasip2", "tcp-echo").display()),
               "args": ["7000"],
               "ports": [{"containerPort": 7000}],
               "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}})
}

/// Creates an object through the API path of its collection, asserting 201; returns it as stored.
pub fn post(server: &Server, path: &str, body: &serde_json::Value) -> serde_json::Value {
    let response = server
        .http()
        .post(format!("{}{path}", server.url))
        .json(body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().unwrap());
    response.json().unwrap()
}

/// Creates a pod in the default namespace, asserting 201.
pub fn create_pod(server: &Server, pod: serde_json::Value) {
    post(server, PODS, &pod);
}

/// Runs python3 with `args` and the server's kubeconfig in KUBECONFIG; asserts success and that stdout has
/// `expected`.
pub fn python(server: &Server, args: &[&std::ffi::OsStr], expected: &str) {
    let output = Command::new("python3")
        .args(args)
        .env("KUBECONFIG", server.kubeconfig())
        .output()
        .expect("python3 runs (scripts/setup-test-tools installs the kubernetes package)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(expected), "{stdout}{stderr}");
}

/// The JSON document at an API path.
pub fn get_json(server: &Server, path: &str) -> serde_json::Value {
    server
        .http()
        .get(format!("{}{path}", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// A pod of the default namespace, if it exists.
pub fn get_pod(server: &Server, name: &str) -> Option<serde_json::Value> {
    let response = server
        .http()
        .get(format!("{}{PODS}/{name}", server.url))
        .send()
        .unwrap();
    (response.status() == 200).then(|| response.json().unwrap())
}

/// Waits until the object at `path` satisfies `check`, returning it; fails with the last state seen.
pub fn wait_until(
    server: &Server,
    path: &str,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        if let Ok(response) = server.http().get(format!("{}{path}", server.url)).send() {
            last = response.json().unwrap_or_default();
            if check(&last) {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{path} never became {what}: {last}");
}

/// Waits until the pod satisfies `check`, returning it; fails with the last state seen.
pub fn wait_for(
    server: &Server,
    name: &str,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        if let Some(pod) = get_pod(server, name) {
            if check(&pod) {
                return pod;
            }
            last = pod;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("pod {name} never became {what}: {}", last["status"]);
}

/// The reasons of the Events about an object of the default namespace.
pub fn event_reasons(server: &Server, name: &str) -> Vec<String> {
    let url = format!(
        "{}/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D{name}",
        server.url
    );
    let events: serde_json::Value = server
        .http()
        .get(url)
        .send()
        .and_then(|r| r.json())
        .unwrap_or_default();
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until the Events about an object of the default namespace include every one of `reasons`.
pub fn wait_for_events(server: &Server, name: &str, reasons: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = event_reasons(server, name);
        if reasons.iter().all(|r| seen.iter().any(|s| s == r)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "events of {name}: wanted {reasons:?}, have {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process, killed when dropped (also when a test fails).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// kubectl with the server's kubeconfig, as the admin or with `--token`; (success, stdout, stderr).
pub fn kubectl(
    server: &Server,
    token: Option<&str>,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    let mut command = Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()));
    command.arg("--kubeconfig").arg(server.kubeconfig());
    if let Some(token) = token {
        command.arg(format!("--token={token}"));
    }
    command.args(args);
    let output = output_with_stdin(command, stdin);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs a command with `stdin` as its input (none: an empty one), capturing its output.
pub fn output_with_stdin(mut command: Command, stdin: Option<&str>) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the command");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// The status of an object's Ready condition ("True", "False", "Unknown"; empty without one): a pod's or a
/// node's.
pub fn ready_status(object: &serde_json::Value) -> String {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Debian's docker-registry on a free port, storing in `dir`; with `user` (name, password) it asks for basic
/// auth (an htpasswd file with a bcrypt hash).
pub fn registry(dir: &std::path::Path, user: Option<(&str, &str)>) -> (Killed, String) {
    let port = free_port();
    let config = dir.join("registry.yml");
    let mut text = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.join("storage").display()
    );
    if let Some((name, password)) = user {
        let htpasswd = dir.join("htpasswd");
        let hash = bcrypt::hash(password, 5).unwrap();
        std::fs::write(&htpasswd, format!("{name}:{hash}\n")).unwrap();
        text.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: wasmkube-test\n    path: {}\n",
            htpasswd.display()
        ));
    }
    std::fs::write(&config, text).unwrap();
    let process = Killed(
        std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/setup-test-tools installs it)"),
    );
    let address = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    // 200, or 401 when it wants credentials: either way it serves.
    while !reqwest::blocking::get(format!("http://{address}/v2/"))
        .is_ok_and(|r| r.status() == 200 || r.status() == 401)
    {
        assert!(Instant::now() < deadline, "the registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (process, address)
}

/// Pushes the Wasm binary at `path` to `image` (on a plain-HTTP registry) as an OCI Wasm artifact.
pub fn push_wasm(path: &Path, image: &str, auth: oci_client::secrets::RegistryAuth) {
    let bytes = std::fs::read(path).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
        wasmkube_core::pki::use_ring();
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let layer = ImageLayer::new(
            bytes,
            oci_client::manifest::WASM_LAYER_MEDIA_TYPE.into(),
            None,
        );
        let config = Config::new(
            b"{}".to_vec(),
            oci_client::manifest::WASM_CONFIG_MEDIA_TYPE.into(),
            None,
        );
        client
            .push(&image.parse().unwrap(), &[layer], config, &auth, None)
            .await
            .expect("push the Wasm artifact");
    });
}

/// The ready addresses an Endpoints object lists, as `ip:port`, sorted.
pub fn endpoint_addresses(endpoints: &serde_json::Value) -> Vec<String> {
    let mut found: Vec<String> = endpoints["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|subset| {
            let port = subset["ports"][0]["port"].as_i64().unwrap_or_default();
            subset["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |a| format!("{}:{port}", a["ip"].as_str().unwrap_or_default()))
        })
        .collect();
    found.sort();
    found
}
