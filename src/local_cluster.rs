//! `wasmkube up` and `wasmkube down`: a whole cluster on this machine, the control plane and N node agents as
//! separate processes of this binary, each with its own data dir, log file and loopback addresses.
//!
//! A cluster is a record in `$WASMKUBE_HOME/clusters/NAME/cluster.json` (default home: `~/.wasmkube`). Its
//! slot, the lowest one no other cluster holds, gives it a /16 of loopback addresses of its own, so named
//! clusters run side by side with Kubernetes' default ports: the API on `127.S.255.254:6443`, node `i` on
//! `127.S.192.i` (agent endpoint on 10250, NodePorts 30000-32767), pods from `127.S.0.0/17` and Services from
//! `127.S.128.0/18`, where S is 100 + slot.
//!
//! With `--control-planes N` (N > 1) the control plane is highly available: N etcd members (the machine's
//! `etcd`, member `i` on `127.S.254.i:2379`), N servers on that etcd (server `i` on `127.S.255.(255-i):6443`),
//! and agents and the Service proxy given every server's URL.

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::config::{
    AuthInfo, Cluster, Context as KubeContext, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext, NamedExtension,
};
use kube::{Api, Client, Config};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The first loopback /16 clusters take (127.100.0.0/16 for slot 0).
const FIRST_OCTET: u8 = 100;
/// How many clusters can exist at once.
const SLOTS: u8 = 155;
/// How long `up` waits for the nodes to be Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// `up` arguments.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// The cluster's name (its kubeconfig context is `wasmkube-NAME`).
    #[arg(long, default_value = "wasmkube")]
    pub name: String,
    /// How many node agents to run (default: 3 for a new cluster, the cluster's own count on a restart).
    #[arg(long)]
    pub nodes: Option<u32>,
    /// Where the cluster keeps its store, node data and logs (default: its directory in $WASMKUBE_HOME).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// How many control planes (etcd member + server) to run: 1 keeps the store in a file; more make a
    /// highly available control plane on an etcd cluster (needs `etcd` installed; default: 1 for a new
    /// cluster, the cluster's own count on a restart).
    #[arg(long)]
    pub control_planes: Option<u32>,
}

/// `down` arguments.
#[derive(clap::Args, Debug)]
pub struct DownArgs {
    /// The cluster's name.
    #[arg(long, default_value = "wasmkube")]
    pub name: String,
    /// Also remove its data (objects, logs) and its kubeconfig context.
    #[arg(long)]
    pub purge: bool,
}

/// What `up` keeps about a cluster between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRecord {
    /// The cluster's name.
    pub name: String,
    /// Its slot: which loopback /16 it owns.
    pub slot: u8,
    /// How many node agents it runs.
    pub nodes: u32,
    /// How many control planes (servers, and etcd members when more than one) it runs.
    #[serde(default = "one")]
    pub control_planes: u32,
    /// Where its data lives.
    pub data_dir: PathBuf,
    /// The directory it was created in, where its processes run: relative image paths resolve against it.
    pub working_dir: PathBuf,
}

fn one() -> u32 {
    1
}

/// The prefix length of a cluster's pod range (the first half of its loopback /16).
const POD_RANGE_PREFIX: u8 = 17;

/// The most control planes `up` runs (etcd clusters are 1, 3, 5 or 7 members in practice).
const MAX_CONTROL_PLANES: u32 = 7;

impl ClusterRecord {
    fn octet(&self) -> u8 {
        FIRST_OCTET + self.slot
    }

    /// The (first) API's address.
    pub fn api_address(&self) -> String {
        self.server_address(1)
    }

    /// The address of server `i` (from 1).
    fn server_address(&self, i: u32) -> String {
        format!("127.{}.255.{}:6443", self.octet(), 255 - i.min(254))
    }

    /// Where the Service proxy serves its `/metrics` (kube-proxy's port).
    pub fn proxy_metrics_address(&self) -> String {
        format!("127.{}.255.1:10249", self.octet())
    }

    /// The (first) API's URL: the one kubeconfig names.
    pub fn api_url(&self) -> String {
        format!("https://{}", self.api_address())
    }

    /// Every server's URL, comma-separated (`--server` of the agents and the proxy).
    fn api_urls(&self) -> String {
        (1..=self.control_planes)
            .map(|i| format!("https://{}", self.server_address(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn highly_available(&self) -> bool {
        self.control_planes > 1
    }

    /// The process name of server `i`.
    fn server_name(&self, i: u32) -> String {
        if self.highly_available() {
            format!("server-{i}")
        } else {
            "server".to_owned()
        }
    }

    /// The data dir of server `i` (the cluster's files live in the first's, `server/`).
    fn server_data_dir(&self, i: u32) -> PathBuf {
        if self.highly_available() {
            self.data_dir.join(self.server_name(i))
        } else {
            self.server_dir()
        }
    }

    /// The process name of etcd member `i`.
    fn etcd_name(i: u32) -> String {
        format!("etcd-{i}")
    }

    /// Where etcd member `i` serves clients and its peers.
    fn etcd_urls(&self, i: u32) -> (String, String) {
        let host = format!("127.{}.254.{}", self.octet(), i.min(254));
        (format!("http://{host}:2379"), format!("http://{host}:2380"))
    }

    /// The range pod addresses come from.
    pub fn cluster_cidr(&self) -> String {
        format!("127.{}.0.0/{POD_RANGE_PREFIX}", self.octet())
    }

    /// The prefix length of each node's podCIDR: the cluster range cut into as many equal slices as the next power
    /// of two of its node count (at least two), so a node of a small cluster has thousands of pod addresses.
    pub fn node_cidr_mask_size(&self) -> u8 {
        let slices = self.nodes.max(2).next_power_of_two();
        POD_RANGE_PREFIX + u8::try_from(slices.trailing_zeros()).unwrap_or(u8::MAX)
    }

    /// How many pods each node takes: every address of its podCIDR but its own.
    pub fn max_pods(&self) -> u32 {
        let mask = u32::from(self.node_cidr_mask_size()).min(30);
        (1u32 << (32 - mask)) - 3
    }

    /// The range Service cluster IPs come from.
    pub fn service_range(&self) -> String {
        format!("127.{}.128.0/18", self.octet())
    }

    /// The name of node `i` (from 1).
    pub fn node_name(&self, i: u32) -> String {
        format!("{}-node-{i}", self.name)
    }

    /// The address of node `i` (from 1).
    pub fn node_address(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::new(127, self.octet(), 192, u8::try_from(i).unwrap_or(u8::MAX))
    }

    /// The kubeconfig context (and cluster and user entry) name.
    pub fn context(&self) -> String {
        format!("wasmkube-{}", self.name)
    }

    fn server_dir(&self) -> PathBuf {
        self.data_dir.join("server")
    }

    fn node_dir(&self, i: u32) -> PathBuf {
        self.data_dir.join("nodes").join(self.node_name(i))
    }

    fn ca_file(&self) -> PathBuf {
        self.server_dir().join("pki/ca.crt")
    }

    fn tokens_file(&self) -> PathBuf {
        self.server_dir().join("tokens.csv")
    }

    fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    fn pid_file(&self, process: &str) -> PathBuf {
        self.data_dir.join("run").join(format!("{process}.pid"))
    }

    /// The processes of the cluster in the order they stop: the nodes and the machine's Service proxy, the
    /// servers, then the etcd members.
    fn stages(&self) -> [Vec<String>; 3] {
        let etcd = if self.highly_available() {
            (1..=self.control_planes).map(Self::etcd_name).collect()
        } else {
            Vec::new()
        };
        [
            (1..=self.nodes)
                .map(|i| self.node_name(i))
                .chain(std::iter::once(PROXY.to_owned()))
                .collect(),
            (1..=self.control_planes)
                .map(|i| self.server_name(i))
                .collect(),
            etcd,
        ]
    }

    /// Every process of the cluster.
    fn processes(&self) -> Vec<String> {
        self.stages().concat()
    }
}

/// The lowest slot none of `taken` holds and `usable` accepts.
pub fn free_slot(taken: &[u8], usable: impl Fn(u8) -> bool) -> Option<u8> {
    (0..SLOTS).find(|slot| !taken.contains(slot) && usable(*slot))
}

/// A cluster name must be usable in node names, kubeconfig entries and directories.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !valid {
        bail!(
            "invalid cluster name {name:?}: use at most 40 lowercase letters, digits and '-', starting and ending with a letter or digit"
        );
    }
    Ok(())
}

fn home() -> PathBuf {
    std::env::var_os("WASMKUBE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(crate::default_data_dir)
}

fn record_dir(name: &str) -> PathBuf {
    home().join("clusters").join(name)
}

fn record_path(name: &str) -> PathBuf {
    record_dir(name).join("cluster.json")
}

fn read_record(name: &str) -> anyhow::Result<Option<ClusterRecord>> {
    let path = record_path(name);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is corrupt", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn all_records() -> Vec<ClusterRecord> {
    let Ok(entries) = std::fs::read_dir(home().join("clusters")) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| read_record(&e.file_name().to_string_lossy()).ok().flatten())
        .collect()
}

fn write_record(record: &ClusterRecord) -> anyhow::Result<()> {
    let path = record_path(&record.name);
    std::fs::create_dir_all(record_dir(&record.name))?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, serde_json::to_vec_pretty(record)?)?;
    std::fs::rename(&temporary, &path).with_context(|| format!("cannot write {}", path.display()))
}

/// The pid of one of the cluster's processes, if it is still running (and is still that process: its command
/// line names the cluster's data dir).
fn running_pid(record: &ClusterRecord, process: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(record.pid_file(process))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    let dir = record.data_dir.to_string_lossy();
    cmdline.contains(dir.as_ref()).then_some(pid)
}

/// Starts one of the cluster's processes: this binary with `args`, or `program` when given.
fn spawn(
    record: &ClusterRecord,
    process: &str,
    program: Option<&Path>,
    args: &[String],
    token: Option<&str>,
) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let log_path = record.logs_dir().join(format!("{process}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let program = match program {
        Some(program) => program.to_owned(),
        None => std::env::current_exe().context("cannot find this executable")?,
    };
    let mut command = Command::new(program);
    // In the environment, not the command line: other users can read command lines.
    match token {
        Some(token) => command.env("WASMKUBE_TOKEN", token),
        None => command.env_remove("WASMKUBE_TOKEN"),
    };
    let child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .current_dir(&record.working_dir)
        // Its own process group: the cluster outlives the terminal `up` ran in.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start the {process} process"))?;
    std::fs::write(record.pid_file(process), child.id().to_string())?;
    Ok(())
}

fn server_args(record: &ClusterRecord, i: u32) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "server".into(),
        "--data-dir".into(),
        record.server_data_dir(i).display().to_string(),
        "--listen".into(),
        record.server_address(i),
        "--cluster-cidr".into(),
        record.cluster_cidr(),
        "--node-cidr-mask-size".into(),
        record.node_cidr_mask_size().to_string(),
        "--service-cluster-ip-range".into(),
        record.service_range(),
        "--token-auth-file".into(),
        record.tokens_file().display().to_string(),
    ];
    if record.highly_available() {
        let members: Vec<String> = (1..=record.control_planes)
            .map(|m| record.etcd_urls(m).0)
            .collect();
        args.extend(["--etcd-servers".into(), members.join(",")]);
    }
    args
}

fn etcd_args(record: &ClusterRecord, i: u32) -> Vec<String> {
    let (client, peer) = record.etcd_urls(i);
    let members: Vec<String> = (1..=record.control_planes)
        .map(|m| format!("{}={}", ClusterRecord::etcd_name(m), record.etcd_urls(m).1))
        .collect();
    [
        ("--name", ClusterRecord::etcd_name(i)),
        (
            "--data-dir",
            record
                .data_dir
                .join(ClusterRecord::etcd_name(i))
                .display()
                .to_string(),
        ),
        ("--listen-client-urls", client.clone()),
        ("--advertise-client-urls", client),
        ("--listen-peer-urls", peer.clone()),
        ("--initial-advertise-peer-urls", peer),
        ("--initial-cluster", members.join(",")),
        ("--initial-cluster-token", record.context()),
        ("--initial-cluster-state", "new".to_owned()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect()
}

/// The machine's etcd, for a highly available control plane.
fn etcd_program() -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("etcd"))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            anyhow!("--control-planes above 1 needs etcd on PATH (Debian: apt install etcd-server)")
        })
}

/// Whether the etcd member at `client_url` answers `/health` as healthy.
async fn etcd_healthy(client_url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = client_url.trim_start_matches("http://");
    let Ok(Ok(mut stream)) = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(address),
    )
    .await
    else {
        return false;
    };
    let request = format!("GET /health HTTP/1.0\r\nHost: {address}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = String::new();
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut answer));
    matches!(read.await, Ok(Ok(_))) && answer.contains("\"health\":\"true\"")
}

/// Waits until every etcd member is healthy (a quorum elected a leader).
async fn wait_for_etcd(record: &ClusterRecord) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    for i in 1..=record.control_planes {
        let name = ClusterRecord::etcd_name(i);
        while !etcd_healthy(&record.etcd_urls(i).0).await {
            if running_pid(record, &name).is_none() {
                bail!(
                    "etcd member {name} exited:\n{}",
                    tail(&record.logs_dir().join(format!("{name}.log")))
                );
            }
            if Instant::now() > deadline {
                bail!("etcd member {name} was not healthy within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Gives each server of a highly available control plane the cluster's CA, service account key and admin
/// token from `server/`, so all start alike (they also agree through etcd; see shared_files).
fn share_cluster_files(record: &ClusterRecord) -> anyhow::Result<()> {
    wasmkube_control::pki::service_account_key(&record.server_dir().join("pki"))
        .context("cannot make the service account signing key")?;
    for i in 1..=record.control_planes {
        for file in ["pki/ca.crt", "pki/ca.key", "pki/sa.key", "admin.token"] {
            let from = record.server_dir().join(file);
            let to = record.server_data_dir(i).join(file);
            if to.exists() {
                continue;
            }
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let contents =
                std::fs::read(&from).with_context(|| format!("cannot read {}", from.display()))?;
            crate::server::write_private(&to, &contents)?;
        }
    }
    Ok(())
}

/// The cluster's credentials, made on its first start: the admin's token (which the server reads from its
/// data dir), and in the server's token file a token per node and one for the Service proxy.
struct Credentials {
    ca_pem: String,
    admin: String,
    nodes: Vec<String>,
    proxy: String,
}

fn credentials(record: &ClusterRecord) -> anyhow::Result<Credentials> {
    use wasmkube_control::api::bootstrap_policy::PROXY_USER;
    let ca = wasmkube_control::pki::ClusterCa::load_or_create(&record.server_dir().join("pki"))
        .context("cannot set up the cluster CA")?;
    let admin = crate::server::read_or_create_token(&record.server_dir().join("admin.token"))?;
    let path = record.tokens_file();
    let known = match std::fs::read_to_string(&path) {
        Ok(text) => wasmkube_control::api::tokens::parse_token_file(&text)
            .with_context(|| format!("{}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let token_of = |user: &str| {
        known
            .iter()
            .find(|(_, known)| known.name == user)
            .map(|(token, _)| token.clone())
            .unwrap_or_else(crate::server::new_token)
    };
    let nodes: Vec<String> = (1..=record.nodes)
        .map(|i| token_of(&format!("system:node:{}", record.node_name(i))))
        .collect();
    let proxy = token_of(PROXY_USER);
    let mut lines: String = nodes
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let node = record.node_name(i as u32 + 1);
            format!("{token},system:node:{node},{node},system:nodes\n")
        })
        .collect();
    lines.push_str(&format!("{proxy},{PROXY_USER},{PROXY_USER}\n"));
    crate::server::write_private(&path, lines.as_bytes())?;
    Ok(Credentials {
        ca_pem: ca.cert_pem().to_owned(),
        admin,
        nodes,
        proxy,
    })
}

/// The process name of the cluster's Service proxy.
const PROXY: &str = "proxy";

/// The Service proxy serves the cluster IPs for every node of the machine (the agents do not), so a frozen
/// agent takes no share of new connections.
fn proxy_args(record: &ClusterRecord) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--server".into(),
        record.api_urls(),
        "--certificate-authority".into(),
        record.ca_file().display().to_string(),
        PROXY.into(),
        "--metrics-bind-address".into(),
        record.proxy_metrics_address(),
    ];
    for i in 1..=record.nodes {
        args.extend(["--node".into(), record.node_name(i)]);
    }
    args
}

fn node_args(record: &ClusterRecord, i: u32) -> Vec<String> {
    vec![
        "--server".into(),
        record.api_urls(),
        "--certificate-authority".into(),
        record.ca_file().display().to_string(),
        "node".into(),
        "--name".into(),
        record.node_name(i),
        "--data-dir".into(),
        record.node_dir(i).display().to_string(),
        "--address".into(),
        record.node_address(i).to_string(),
        "--port".into(),
        "10250".into(),
        "--proxy".into(),
        "false".into(),
        "--max-pods".into(),
        record.max_pods().to_string(),
    ]
}

fn step(started: Instant, text: &str) {
    println!(" ✓ {text} ({:.2}s)", started.elapsed().as_secs_f64());
    let _ = std::io::stdout().flush();
}

/// The record `up` works on: the existing one (checked against the arguments) or a new one in a free slot.
fn plan(args: &UpArgs) -> anyhow::Result<(ClusterRecord, bool)> {
    if let Some(existing) = read_record(&args.name)? {
        if let Some(nodes) = args.nodes.filter(|n| *n != existing.nodes) {
            bail!(
                "cluster {:?} has {} nodes, not {nodes}: run `wasmkube down --name {} --purge` first to change that",
                existing.name,
                existing.nodes,
                existing.name
            );
        }
        if let Some(count) = args
            .control_planes
            .filter(|n| *n != existing.control_planes)
        {
            bail!(
                "cluster {:?} has {} control planes, not {count}: run `wasmkube down --name {} --purge` first to change that",
                existing.name,
                existing.control_planes,
                existing.name
            );
        }
        if let Some(dir) = args.data_dir.as_ref().filter(|d| **d != existing.data_dir) {
            bail!(
                "cluster {:?} keeps its data in {}, not {}",
                existing.name,
                existing.data_dir.display(),
                dir.display()
            );
        }
        return Ok((existing, false));
    }
    let nodes = args.nodes.unwrap_or(3);
    if !(1..=254).contains(&nodes) {
        bail!("--nodes must be from 1 to 254, not {nodes}");
    }
    let control_planes = args.control_planes.unwrap_or(1);
    if !(1..=MAX_CONTROL_PLANES).contains(&control_planes) {
        bail!("--control-planes must be from 1 to {MAX_CONTROL_PLANES}, not {control_planes}");
    }
    if control_planes > 1 {
        etcd_program()?;
    }
    let taken: Vec<u8> = all_records().iter().map(|r| r.slot).collect();
    // A slot whose API address is in use belongs to a cluster of another home (or another program).
    let api_free = |slot: u8| {
        let probe = ClusterRecord {
            name: String::new(),
            slot,
            nodes: 0,
            control_planes: 1,
            data_dir: PathBuf::new(),
            working_dir: PathBuf::new(),
        };
        std::net::TcpListener::bind(probe.api_address()).is_ok()
    };
    let slot = free_slot(&taken, api_free)
        .ok_or_else(|| anyhow!("no free cluster slot: {SLOTS} clusters exist already"))?;
    let data_dir = match &args.data_dir {
        Some(dir) => std::path::absolute(dir)?,
        None => record_dir(&args.name),
    };
    Ok((
        ClusterRecord {
            name: args.name.clone(),
            slot,
            nodes,
            control_planes,
            data_dir,
            working_dir: std::env::current_dir().context("cannot read the working directory")?,
        },
        true,
    ))
}

/// `wasmkube up`: creates or restarts a cluster and returns once every node is Ready.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let started = Instant::now();
    let started_at = jiff::Timestamp::now();
    let (record, new) = plan(&args)?;
    let running: Vec<String> = record
        .processes()
        .into_iter()
        .filter(|p| running_pid(&record, p).is_some())
        .collect();
    if running.len() == record.processes().len() {
        println!(
            "Cluster {:?} is already running (API {}, {} nodes)",
            record.name,
            record.api_urls().replace(',', ", "),
            record.nodes
        );
        return set_context(&record);
    }
    println!(
        "{} cluster {:?} ({} nodes, data in {}) ...",
        if new { "Creating" } else { "Starting" },
        record.name,
        record.nodes,
        record.data_dir.display()
    );
    for dir in [
        record.server_dir(),
        record.logs_dir(),
        record.data_dir.join("run"),
    ] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_record(&record)?;
    let credentials = credentials(&record)?;
    if record.highly_available() {
        let etcd = etcd_program()?;
        for i in 1..=record.control_planes {
            let name = ClusterRecord::etcd_name(i);
            if !running.contains(&name) {
                spawn(&record, &name, Some(&etcd), &etcd_args(&record, i), None)?;
            }
        }
        wait_for_etcd(&record).await?;
        step(
            started,
            &format!("etcd cluster of {} members healthy", record.control_planes),
        );
        share_cluster_files(&record)?;
    }
    for i in 1..=record.control_planes {
        let name = record.server_name(i);
        if !running.contains(&name) {
            spawn(&record, &name, None, &server_args(&record, i), None)?;
        }
    }
    for (i, token) in (1..=record.nodes).zip(&credentials.nodes) {
        if !running.contains(&record.node_name(i)) {
            spawn(
                &record,
                &record.node_name(i),
                None,
                &node_args(&record, i),
                Some(token),
            )?;
        }
    }
    let mut config = Config::new(record.api_url().parse()?);
    config.auth_info.token = Some(credentials.admin.clone().into());
    config.root_cert = Some(wasmkube_control::pki::certificates_der(&credentials.ca_pem));
    let configs = record
        .api_urls()
        .split(',')
        .map(|url| {
            let mut one = config.clone();
            one.cluster_url = url.parse()?;
            Ok(one)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let client = crate::failover::client(configs)?;
    wait_for_api(&client, &record).await?;
    step(
        started,
        &format!(
            "Control plane serving {}",
            record.api_urls().replace(',', ", ")
        ),
    );
    wait_for_nodes(&client, &record, started_at).await?;
    // After the nodes: it serves NodePorts on their addresses, which it reads from their Nodes.
    if !running.iter().any(|p| p == PROXY) {
        spawn(
            &record,
            PROXY,
            None,
            &proxy_args(&record),
            Some(&credentials.proxy),
        )?;
    }
    step(
        started,
        &format!(
            "{} nodes Ready: {}",
            record.nodes,
            (1..=record.nodes)
                .map(|i| record.node_name(i))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    set_context(&record)?;
    println!(
        "Cluster {:?} is up in {:.2}s; kubectl context {:?}. Logs: {}",
        record.name,
        started.elapsed().as_secs_f64(),
        record.context(),
        record.logs_dir().display()
    );
    let api = record.api_urls();
    let first_api = api.split(',').next().unwrap_or_default();
    println!("Dashboard: {first_api}/ui/ (`wasmkube dashboard` prints a one-time login link)");
    println!(
        "Metrics: {first_api}/metrics, each node's through {first_api}/api/v1/nodes/NODE/proxy/metrics, the Service proxy's at http://{}/metrics",
        record.proxy_metrics_address()
    );
    Ok(())
}

/// The last lines of a log, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

async fn wait_for_api(client: &Client, record: &ClusterRecord) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if client.apiserver_version().await.is_ok() {
            return Ok(());
        }
        for name in record.stages()[1].iter().chain(&record.stages()[2]) {
            if running_pid(record, name).is_none() {
                bail!(
                    "the control plane's {name} exited:\n{}",
                    tail(&record.logs_dir().join(format!("{name}.log")))
                );
            }
        }
        if Instant::now() > deadline {
            bail!("the control plane did not answer within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a node's agent renewed its Lease at or after `since` (microseconds, as Leases keep them), so a
/// restarted cluster's old status does not count for a live agent.
pub fn renewed_since(lease: &Lease, since: jiff::Timestamp) -> bool {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.renew_time.as_ref())
        .is_some_and(|t| t.0 >= since)
}

async fn wait_for_nodes(
    client: &Client,
    record: &ClusterRecord,
    since: jiff::Timestamp,
) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let ready: Vec<String> = match nodes.list(&Default::default()).await {
            Ok(list) => list
                .items
                .iter()
                .filter(|n| is_ready(n))
                .filter_map(|n| n.metadata.name.clone())
                .collect(),
            Err(_) => Vec::new(),
        };
        let renewed: Vec<String> = match leases.list(&Default::default()).await {
            Ok(list) => list
                .items
                .iter()
                .filter(|l| renewed_since(l, since))
                .filter_map(|l| l.metadata.name.clone())
                .collect(),
            Err(_) => Vec::new(),
        };
        let ready: Vec<String> = ready.into_iter().filter(|n| renewed.contains(n)).collect();
        let waiting: Vec<u32> = (1..=record.nodes)
            .filter(|i| !ready.contains(&record.node_name(*i)))
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        for i in &waiting {
            let name = record.node_name(*i);
            if running_pid(record, &name).is_none() {
                bail!(
                    "node {name} exited:\n{}",
                    tail(&record.logs_dir().join(format!("{name}.log")))
                );
            }
        }
        if Instant::now() > deadline {
            bail!("nodes {waiting:?} were not Ready within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The kubeconfig `up` and `down` edit: the first file of $KUBECONFIG, else ~/.kube/config.
fn kubeconfig_path() -> PathBuf {
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .and_then(|v| std::env::split_paths(&v).next())
        .filter(|p| !p.as_os_str().is_empty())
    {
        return first;
    }
    crate::default_data_dir()
        .parent()
        .map_or_else(|| PathBuf::from(".kube"), |home| home.join(".kube"))
        .join("config")
}

fn read_kubeconfig(path: &Path) -> anyhow::Result<Kubeconfig> {
    if !path.exists() {
        return Ok(Kubeconfig::default());
    }
    Kubeconfig::read_from(path)
        .with_context(|| format!("cannot read kubeconfig {}", path.display()))
}

fn write_kubeconfig(path: &Path, config: &Kubeconfig) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut document = serde_json::to_value(config)?;
    strip_nulls(&mut document);
    if let Some(object) = document.as_object_mut() {
        object.insert("apiVersion".into(), "v1".into());
        object.insert("kind".into(), "Config".into());
    }
    let temporary = path.with_extension("wasmkube.tmp");
    crate::server::write_private(&temporary, serde_yaml::to_string(&document)?.as_bytes())?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot write kubeconfig {}", path.display()))
}

/// Drops `null` fields (kube-rs writes unset options as null; kubectl never does).
fn strip_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// The kubeconfig with the cluster's entries removed.
pub fn without_cluster(mut config: Kubeconfig, context: &str) -> Kubeconfig {
    config.clusters.retain(|c| c.name != context);
    config.contexts.retain(|c| c.name != context);
    config.auth_infos.retain(|a| a.name != context);
    if config.current_context.as_deref() == Some(context) {
        config.current_context = None;
    }
    config
}

/// How a kubeconfig reaches a cluster: its URL, the CA it trusts and the admin's token.
pub struct Access<'a> {
    /// Every API URL, comma-separated: the first is the entry's `server`, all are listed in the
    /// `wasmkube.io/servers` extension when there are several.
    pub servers: &'a str,
    /// The cluster CA, PEM.
    pub ca_pem: &'a str,
    /// The admin's bearer token.
    pub token: &'a str,
}

/// The kubeconfig with the cluster's entries (replacing older ones: the cluster, its admin's token and the
/// context joining them) and it as the current context.
pub fn with_cluster(config: Kubeconfig, context: &str, access: &Access<'_>) -> Kubeconfig {
    use base64::Engine;
    let mut config = without_cluster(config, context);
    config.auth_infos.push(NamedAuthInfo {
        name: context.to_owned(),
        auth_info: Some(AuthInfo {
            token: Some(access.token.to_owned().into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let servers: Vec<&str> = access.servers.split(',').collect();
    let extensions = (servers.len() > 1).then(|| {
        vec![NamedExtension {
            name: crate::cli::SERVERS_EXTENSION.to_owned(),
            extension: serde_json::json!({ "servers": servers }),
        }]
    });
    config.clusters.push(NamedCluster {
        name: context.to_owned(),
        cluster: Some(Cluster {
            server: servers.first().map(|s| (*s).to_owned()),
            certificate_authority_data: Some(
                base64::engine::general_purpose::STANDARD.encode(access.ca_pem),
            ),
            extensions,
            ..Default::default()
        }),
        ..Default::default()
    });
    config.contexts.push(NamedContext {
        name: context.to_owned(),
        context: Some(KubeContext {
            cluster: context.to_owned(),
            user: Some(context.to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    });
    config.current_context = Some(context.to_owned());
    config
}

fn set_context(record: &ClusterRecord) -> anyhow::Result<()> {
    let path = kubeconfig_path();
    let admin = crate::server::read_or_create_token(&record.server_dir().join("admin.token"))?;
    let ca_pem = std::fs::read_to_string(record.ca_file())
        .with_context(|| format!("cannot read {}", record.ca_file().display()))?;
    let config = with_cluster(
        read_kubeconfig(&path)?,
        &record.context(),
        &Access {
            servers: &record.api_urls(),
            ca_pem: &ca_pem,
            token: &admin,
        },
    );
    write_kubeconfig(&path, &config)?;
    println!(
        "kubectl context {:?} set in {}",
        record.context(),
        path.display()
    );
    Ok(())
}

fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

/// Stops `processes` of the cluster (SIGTERM, then SIGKILL after 10 s); returns how many were running.
async fn stop(record: &ClusterRecord, processes: &[String]) -> usize {
    let pids: Vec<(&String, i32)> = processes
        .iter()
        .filter_map(|p| running_pid(record, p).map(|pid| (p, pid)))
        .collect();
    for (_, pid) in &pids {
        signal(*pid, nix::sys::signal::Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|(p, _)| running_pid(record, p).is_some()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (process, pid) in &pids {
        if running_pid(record, process).is_some() {
            signal(*pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    pids.len()
}

/// `wasmkube down`: stops a cluster's processes (SIGTERM, then SIGKILL after 10 s) and with `--purge` removes
/// its data and kubeconfig entries.
pub async fn down(args: DownArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let record = read_record(&args.name)?.ok_or_else(|| {
        let known: Vec<String> = all_records().into_iter().map(|r| r.name).collect();
        anyhow!(
            "no cluster named {:?} (clusters: {})",
            args.name,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )
    })?;
    // Nodes first, so the control plane does not see them go silent and act on it; etcd last, so the
    // servers can still write as they leave.
    let [agents, servers, etcd] = record.stages();
    let mut stopped = stop(&record, &agents).await + stop(&record, &servers).await;
    // One member at a time: a member stopping while its peers run hands leadership on at once, where
    // members stopping together wait out the hand-over.
    for member in etcd {
        stopped += stop(&record, &[member]).await;
    }
    for process in record.processes() {
        let _ = std::fs::remove_file(record.pid_file(&process));
    }
    println!("Stopped cluster {:?} ({stopped} processes)", record.name);
    if args.purge {
        let path = kubeconfig_path();
        if path.exists() {
            let config = without_cluster(read_kubeconfig(&path)?, &record.context());
            write_kubeconfig(&path, &config)?;
        }
        for dir in [record.data_dir.clone(), record_dir(&record.name)] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", dir.display()));
                }
            }
        }
        println!(
            "Removed its data and kubectl context {:?}",
            record.context()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(slot: u8) -> ClusterRecord {
        ClusterRecord {
            name: "dev".into(),
            slot,
            nodes: 3,
            control_planes: 1,
            data_dir: "/tmp/dev".into(),
            working_dir: "/tmp".into(),
        }
    }

    #[test]
    fn each_slot_has_addresses_of_its_own() {
        let first = record(0);
        assert_eq!(first.api_url(), "https://127.100.255.254:6443");
        assert_eq!(first.cluster_cidr(), "127.100.0.0/17");
        assert_eq!(first.service_range(), "127.100.128.0/18");
        assert_eq!(first.node_address(2).to_string(), "127.100.192.2");
        assert_eq!(first.node_name(2), "dev-node-2");
        let other = record(7);
        assert_eq!(other.api_url(), "https://127.107.255.254:6443");
        // Three nodes share the pod range in quarters: 8,189 pods each.
        assert_eq!(first.node_cidr_mask_size(), 19);
        assert_eq!(first.max_pods(), 8189);
        assert_eq!(
            first.processes(),
            ["dev-node-1", "dev-node-2", "dev-node-3", "proxy", "server"]
        );
    }

    #[test]
    fn the_more_nodes_the_smaller_each_ones_slice_of_the_pod_range() {
        let sized = |nodes| {
            let record = ClusterRecord { nodes, ..record(0) };
            (record.node_cidr_mask_size(), record.max_pods())
        };
        assert_eq!(sized(1), (18, 16381));
        assert_eq!(sized(2), (18, 16381));
        assert_eq!(sized(4), (19, 8189));
        assert_eq!(sized(10), (21, 2045));
        assert_eq!(sized(128), (24, 253));
        assert_eq!(sized(254), (25, 125));
    }

    #[test]
    fn a_highly_available_cluster_has_a_server_and_an_etcd_member_per_control_plane() {
        let ha = ClusterRecord {
            control_planes: 3,
            nodes: 1,
            ..record(1)
        };
        assert_eq!(
            ha.api_urls(),
            "https://127.101.255.254:6443,https://127.101.255.253:6443,https://127.101.255.252:6443"
        );
        assert_eq!(
            ha.stages(),
            [
                vec!["dev-node-1", "proxy"],
                vec!["server-1", "server-2", "server-3"],
                vec!["etcd-1", "etcd-2", "etcd-3"]
            ]
        );
        assert_eq!(
            ha.etcd_urls(2),
            (
                "http://127.101.254.2:2379".to_owned(),
                "http://127.101.254.2:2380".to_owned()
            )
        );
        let args = server_args(&ha, 2);
        assert!(args.windows(2).any(|w| w
            == [
                "--etcd-servers",
                "http://127.101.254.1:2379,http://127.101.254.2:2379,http://127.101.254.3:2379"
            ]));
        assert!(
            args.windows(2)
                .any(|w| w == ["--listen", "127.101.255.253:6443"])
        );
        assert!(etcd_args(&ha, 3).windows(2).any(|w| w
            == [
                "--initial-cluster",
                "etcd-1=http://127.101.254.1:2380,etcd-2=http://127.101.254.2:2380,etcd-3=http://127.101.254.3:2380"
            ]));
    }

    #[test]
    fn new_clusters_take_the_lowest_free_slot() {
        let any = |_| true;
        assert_eq!(free_slot(&[], any), Some(0));
        assert_eq!(free_slot(&[0, 2], any), Some(1));
        assert_eq!(free_slot(&[0, 2], |slot| slot != 1), Some(3));
        assert_eq!(free_slot(&(0..SLOTS).collect::<Vec<_>>(), any), None);
    }

    #[test]
    fn names_must_fit_node_names_and_directories() {
        for good in ["wasmkube", "dev-2", "a"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Dev", "a/b", "-a", "a-", "..", &"x".repeat(41)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kubeconfig_entries_are_replaced_and_removed_leaving_others() {
        let access = |servers| Access {
            servers,
            ca_pem: "CA",
            token: "t",
        };
        let mine = with_cluster(
            Kubeconfig::default(),
            "other",
            &access("https://127.0.0.1:1"),
        );
        let url = "https://127.100.255.254:6443";
        let both = with_cluster(mine, "wasmkube-dev", &access(url));
        let again = with_cluster(both, "wasmkube-dev", &access(url));
        assert_eq!(again.clusters.len(), 2);
        assert_eq!(again.auth_infos.len(), 2);
        assert_eq!(again.current_context.as_deref(), Some("wasmkube-dev"));
        let removed = without_cluster(again, "wasmkube-dev");
        assert_eq!(removed.contexts.len(), 1);
        assert_eq!(removed.contexts[0].name, "other");
        assert_eq!(removed.auth_infos[0].name, "other");
        assert_eq!(removed.current_context, None);
    }
}
