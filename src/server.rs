//! `wasmkube server`: opens the store, makes sure the system namespaces exist, serves the API and writes a
//! kubeconfig for it.

use anyhow::Context;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmkube_control::api::resources;
use wasmkube_control::apiserver::error::ApiError;
use wasmkube_control::apiserver::objects::Query;
use wasmkube_control::apiserver::service_network::ServiceNetwork;
use wasmkube_control::apiserver::{ApiServer, Target};
use wasmkube_control::controllers::ControllersConfig;
use wasmkube_control::store::{RedbStore, RedbStoreConfig};

/// The control plane's settings.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerConfig {
    /// Where the store file and the kubeconfig live.
    #[arg(long, default_value_os_t = crate::default_data_dir())]
    pub data_dir: PathBuf,
    /// The address the API listens on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// How long, in seconds, watches and paged lists can reach back in history.
    #[arg(long, default_value_t = 300)]
    pub history_window_seconds: u64,
    /// The range Services' cluster IPs come from. The default, in 127.0.0.0/8, needs no setup on one machine:
    /// every node agent's proxy listens on the cluster IPs of all Services.
    #[arg(long, default_value = "127.43.0.0/16")]
    pub service_cluster_ip_range: ipnet::Ipv4Net,
    /// The ports NodePort Services get, as FIRST-LAST.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    pub service_node_port_range: std::ops::RangeInclusive<u16>,
    /// Do not run the scheduler in this process (run `wasmkube scheduler` elsewhere).
    #[arg(long)]
    pub no_scheduler: bool,
    /// Do not run the controllers in this process (run `wasmkube controller-manager` elsewhere).
    #[arg(long)]
    pub no_controllers: bool,
    /// Controller settings.
    #[command(flatten)]
    pub controllers: ControllerArgs,
}

/// Settings of the controllers, for `server` and `controller-manager`.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// The range pod addresses come from; each node gets a slice of it. The default, in 127.0.0.0/8, needs no
    /// setup on one machine; give nodes on several hosts a routed range such as 10.42.0.0/16.
    #[arg(long, default_value = "127.42.0.0/16")]
    pub cluster_cidr: ipnet::Ipv4Net,
    /// The prefix length of each node's slice of the cluster CIDR.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u8).range(8..=30))]
    pub node_cidr_mask_size: u8,
    /// Seconds a node's agent may be silent before the node is NotReady and its pods move elsewhere (agents
    /// renew their Lease every 2 seconds).
    #[arg(long, default_value_t = 10.0)]
    pub node_monitor_grace_period_seconds: f64,
    /// Seconds before a Job's pod is retried after a failure, doubling with each one (Kubernetes: 10).
    #[arg(long, default_value_t = 10.0)]
    pub job_backoff_seconds: f64,
    /// Seconds a node must be missing before the pods bound to it are deleted (Kubernetes: 40).
    #[arg(long, default_value_t = 40.0)]
    pub pod_gc_quarantine_seconds: f64,
}

impl ControllerArgs {
    /// The controllers' configuration.
    pub fn config(&self) -> anyhow::Result<ControllersConfig> {
        if self.node_cidr_mask_size < self.cluster_cidr.prefix_len() {
            anyhow::bail!(
                "--node-cidr-mask-size {} is wider than --cluster-cidr {}",
                self.node_cidr_mask_size,
                self.cluster_cidr
            );
        }
        if self.node_monitor_grace_period_seconds.is_nan()
            || self.node_monitor_grace_period_seconds < 1.0
        {
            anyhow::bail!("--node-monitor-grace-period-seconds must be at least 1");
        }
        Ok(ControllersConfig {
            cluster_cidr: self.cluster_cidr.trunc(),
            node_cidr_mask: self.node_cidr_mask_size,
            node_monitor_grace: Duration::from_secs_f64(self.node_monitor_grace_period_seconds),
            job_backoff: Duration::try_from_secs_f64(self.job_backoff_seconds)
                .map_err(|_| anyhow::anyhow!("--job-backoff-seconds must be a positive number"))?,
            pod_gc_quarantine: Duration::try_from_secs_f64(self.pod_gc_quarantine_seconds)
                .map_err(|_| {
                    anyhow::anyhow!("--pod-gc-quarantine-seconds must be a positive number")
                })?,
        })
    }
}

fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not a port range such as 30000-32767"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{p:?} is not a port number (1-65535)"))
    };
    let (first, last) = (port(first)?, port(last)?);
    if first > last {
        return Err(format!("the range {text:?} ends before it starts"));
    }
    Ok(first..=last)
}

const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Runs the control plane until Ctrl-C or SIGTERM.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let controllers = config.controllers.config()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let store_path = config.data_dir.join("store.redb");
    let store_config = RedbStoreConfig {
        history_window: Duration::from_secs(config.history_window_seconds),
        // Compact at least twice per window, and at most every 30 seconds.
        compaction_interval: Duration::from_millis(
            config.history_window_seconds.clamp(1, 60) * 500,
        ),
    };
    let store = RedbStore::open(&store_path, store_config)
        .with_context(|| format!("cannot open the store {}", store_path.display()))?;
    let service_network = ServiceNetwork {
        cluster_ip_range: config.service_cluster_ip_range.trunc(),
        node_ports: config.service_node_port_range.clone(),
    };
    let api = ApiServer::new(Arc::new(store), service_network);
    let watches = api.clone();
    create_system_namespaces(&api).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let kubeconfig = write_kubeconfig(&config.data_dir, &format!("http://{address}"))?;
    let client = kube::Client::try_from(kube::Config::new(format!("http://{address}").parse()?))?;
    let mut in_process = tokio::task::JoinSet::new();
    if !config.no_scheduler {
        in_process.spawn(wasmkube_control::scheduler::run(client.clone()));
    }
    if !config.no_controllers {
        in_process.spawn(wasmkube_control::controllers::run(client, controllers));
    }
    tracing::info!(%address, kubeconfig = %kubeconfig.display(), "control plane serving");
    println!("wasmkube control plane listening on http://{address}");
    println!(
        "kubeconfig: {}  (export KUBECONFIG={})",
        kubeconfig.display(),
        kubeconfig.display()
    );
    let shutdown = async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
        }
        tracing::info!("shutting down");
        in_process.abort_all();
        // Open watches would hold the graceful shutdown open.
        watches.close_watches();
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, api.router()).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(());
    });
    // Open watches would hold a graceful shutdown for up to their timeout: give them two seconds.
    tokio::select! {
        result = server => result.context("the API server failed")?,
        () = async { if stop_rx.await.is_ok() { tokio::time::sleep(Duration::from_secs(2)).await } else { std::future::pending().await } } => {},
    }
    Ok(())
}

async fn create_system_namespaces(api: &ApiServer) -> anyhow::Result<()> {
    let namespaces =
        resources::by_path("", "v1", "namespaces").context("namespaces are not served")?;
    let target = Target {
        resource: namespaces,
        namespace: None,
    };
    for name in SYSTEM_NAMESPACES {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match api.create(&target, object, &Query::default()).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(anyhow::anyhow!("cannot create namespace {name}: {e}")),
        }
    }
    Ok(())
}

fn write_kubeconfig(data_dir: &std::path::Path, server: &str) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("kubeconfig");
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "wasmkube", "cluster": {"server": server}}],
        "users": [{"name": "wasmkube-admin", "user": {}}],
        "contexts": [{"name": "wasmkube", "context": {"cluster": "wasmkube", "user": "wasmkube-admin", "namespace": "default"}}],
        "current-context": "wasmkube",
        "preferences": {},
    });
    let text = serde_yaml::to_string(&config)?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
