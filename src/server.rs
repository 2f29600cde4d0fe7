//! `wasmkube server`: opens the store, makes sure the system namespaces exist, serves the API and writes a
//! kubeconfig for it.

use anyhow::Context;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmkube_control::api::bootstrap_policy;
use wasmkube_control::api::pod_security::{self, Level};
use wasmkube_control::api::rbac::{MASTERS, User};
use wasmkube_control::api::resources;
use wasmkube_control::api::tokens::parse_token_file;
use wasmkube_control::apiserver::auth::{AuthConfig, AuthorizationMode};
use wasmkube_control::apiserver::error::ApiError;
use wasmkube_control::apiserver::service_network::ServiceNetwork;
use wasmkube_control::apiserver::{ApiServer, Target};
use wasmkube_control::controllers::ControllersConfig;
use wasmkube_control::endpoint_reconciler;
use wasmkube_control::leader_election::{ElectionConfig, run_while_leading};
use wasmkube_control::pki;
use wasmkube_control::store::{
    EtcdStore, EtcdStoreConfig, Expect, ListRequest, RedbStore, RedbStoreConfig, Store, StoreError,
    metered,
};

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
    /// Keep the cluster's state in etcd at these client URLs (`http://HOST:2379,...`), as kube-apiserver's
    /// flag, instead of the embedded store file in DATA_DIR; several servers may share one etcd.
    #[arg(long, value_delimiter = ',')]
    pub etcd_servers: Vec<String>,
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
    /// The authorizers, in order (default: Node,RBAC; AlwaysAllow lets every authenticated user do anything).
    #[arg(long, value_delimiter = ',')]
    pub authorization_mode: Option<Vec<AuthorizationMode>>,
    /// A file of bearer tokens, one `token,user,uid,"group1,group2"` line each.
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// Serve requests without credentials as system:anonymous (`true` or `false`; default: false, true with
    /// --insecure).
    #[arg(long)]
    pub anonymous_auth: Option<bool>,
    /// Serve plain HTTP to anyone, every request allowed: a development server on a loopback address (the
    /// default is HTTPS with a certificate of the cluster CA, made on first start in DATA_DIR/pki, and Node,RBAC
    /// authorization).
    #[arg(long, conflicts_with_all = ["authorization_mode", "tls_sans"])]
    pub insecure: bool,
    /// The Pod Security level (enforce, audit and warn) of namespaces without pod-security.kubernetes.io
    /// labels: privileged, baseline or restricted. Baseline refuses hostPath volumes, host ports and host
    /// namespaces; label a namespace `pod-security.kubernetes.io/enforce=privileged` to allow them there.
    #[arg(long, default_value = "baseline")]
    pub pod_security_default: Level,
    /// An AdmissionConfiguration file whose PodSecurity plugin sets the defaults and exemptions (namespaces,
    /// usernames), as Kubernetes' --admission-control-config-file; it replaces --pod-security-default.
    #[arg(long)]
    pub admission_control_config_file: Option<PathBuf>,
    /// More names (DNS names or IP addresses) for the serving certificate, e.g. the address nodes use.
    #[arg(long = "tls-san", value_delimiter = ',')]
    pub tls_sans: Vec<String>,
    /// Controller settings.
    #[command(flatten)]
    pub controllers: ControllerArgs,
    /// Leader election of the in-process scheduler and controllers.
    #[command(flatten)]
    pub election: ElectionArgs,
}

/// Leader election of the scheduler and the controller-manager, as Kubernetes' `--leader-elect*` flags: each
/// acts only while it holds its Lease, `kube-system/kube-scheduler` or `kube-system/kube-controller-manager`.
#[derive(clap::Args, Debug, Clone)]
pub struct ElectionArgs {
    /// Act only while holding the Lease (`true` or `false`; default: true, but false for a server on its own
    /// store file, the only one there can be).
    #[arg(long)]
    pub leader_elect: Option<bool>,
    /// How long a leader's renewal keeps the others out.
    #[arg(long, default_value = "15s", value_parser = flag_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long a leader goes on without renewing before it stops acting.
    #[arg(long, default_value = "10s", value_parser = flag_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// How often candidates try to take the Lease and the leader renews it.
    #[arg(long, default_value = "2s", value_parser = flag_duration)]
    pub leader_elect_retry_period: Duration,
}

fn flag_duration(text: &str) -> Result<Duration, String> {
    crate::rollout::parse_duration(text).map_err(|e| e.to_string())
}

impl ElectionArgs {
    /// The election of the Lease `kube-system/NAME`, or none when leader election is off (`default`: whether
    /// it is on unless the flag says).
    pub fn election(&self, name: &str, default: bool) -> anyhow::Result<Option<ElectionConfig>> {
        if !self.leader_elect.unwrap_or(default) {
            return Ok(None);
        }
        if self.leader_elect_renew_deadline >= self.leader_elect_lease_duration {
            anyhow::bail!(
                "--leader-elect-renew-deadline must be shorter than --leader-elect-lease-duration"
            );
        }
        if self.leader_elect_retry_period.is_zero()
            || self.leader_elect_retry_period >= self.leader_elect_renew_deadline
        {
            anyhow::bail!(
                "--leader-elect-retry-period must be above 0 and shorter than --leader-elect-renew-deadline"
            );
        }
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "wasmkube".into());
        let mut config = ElectionConfig::new(name, &host);
        config.lease_duration = self.leader_elect_lease_duration;
        config.renew_deadline = self.leader_elect_renew_deadline;
        config.retry_period = self.leader_elect_retry_period;
        Ok(Some(config))
    }
}

/// Runs a component until `stop` completes: while it holds its Lease if `election` is given (released when
/// stopped), else at once.
pub async fn run_component<F, Fut>(
    client: kube::Client,
    election: Option<ElectionConfig>,
    component: F,
    stop: impl std::future::Future<Output = ()>,
) where
    F: Fn(kube::Client) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    match election {
        Some(election) => {
            let leading = client.clone();
            run_while_leading(client, election, move || component(leading.clone()), stop).await;
        }
        None => {
            tokio::select! {
                () = component(client) => {}
                () = stop => {}
            }
        }
    }
}

/// A client of this server's own API for a component running in its process (`component` names it, as its
/// user agent): each request goes straight to the API's routes as the server's loopback user, with no socket,
/// TLS or HTTP framing between them; authentication, authorization, admission and metrics are the same as for
/// any client.
fn in_process_client(
    routes: axum::Router,
    loopback_token: &str,
    component: &str,
) -> anyhow::Result<kube::Client> {
    let authorization = http::HeaderValue::from_str(&format!("Bearer {loopback_token}"))
        .context("the loopback token")?;
    let user_agent = http::HeaderValue::from_str(&crate::cli::user_agent(component))
        .context("the component's name")?;
    let service = tower::ServiceBuilder::new()
        .map_request(move |request: http::Request<kube::client::Body>| {
            let (mut parts, body) = request.into_parts();
            parts
                .headers
                .insert(http::header::AUTHORIZATION, authorization.clone());
            parts
                .headers
                .insert(http::header::USER_AGENT, user_agent.clone());
            http::Request::from_parts(parts, axum::body::Body::new(body))
        })
        .service(routes);
    Ok(kube::Client::new(service, "default"))
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
    }
}

/// `wasmkube scheduler`: its leader election and metrics.
#[derive(clap::Args, Debug, Clone)]
pub struct SchedulerArgs {
    /// Leader election.
    #[command(flatten)]
    pub election: ElectionArgs,
    /// Metrics.
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// Where a component on its own serves its `/metrics`.
#[derive(clap::Args, Debug, Clone)]
pub struct MetricsArgs {
    /// Where to serve `/metrics` (plain HTTP, as kube-proxy's flag), e.g. 127.0.0.1:10259; not served without it.
    #[arg(long)]
    pub metrics_bind_address: Option<std::net::SocketAddr>,
}

impl MetricsArgs {
    /// The listener for `/metrics`, if asked for; a busy address is an error.
    pub async fn bind(&self) -> anyhow::Result<Option<tokio::net::TcpListener>> {
        let Some(address) = self.metrics_bind_address else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot serve metrics on {address}"))?;
        Ok(Some(listener))
    }

    /// Starts serving the process's component metrics, if asked; a busy address is an error.
    pub async fn serve(&self) -> anyhow::Result<()> {
        let Some(listener) = self.bind().await? else {
            return Ok(());
        };
        tokio::spawn(async move {
            if let Err(error) =
                axum::serve(listener, wasmkube_control::component_metrics::router()).await
            {
                tracing::error!(%error, "the metrics endpoint failed");
            }
        });
        Ok(())
    }
}

/// `wasmkube controller-manager`: the controllers' settings and their leader election.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerManagerArgs {
    /// Controller settings.
    #[command(flatten)]
    pub controllers: ControllerArgs,
    /// Leader election.
    #[command(flatten)]
    pub election: ElectionArgs,
    /// Metrics.
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// Settings of the controllers, for `server` and `controller-manager`.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// The range pod addresses come from; each node gets a slice of it. The default, in 127.0.0.0/8, needs no
    /// setup on one machine; give nodes on several hosts a routed range such as 10.42.0.0/16.
    #[arg(long, default_value = "127.42.0.0/16")]
    pub cluster_cidr: ipnet::Ipv4Net,
    /// The prefix length of each node's slice of the cluster CIDR (kube-controller-manager's flag). The default,
    /// /22, gives a node 1,021 pod addresses, room for the agent's default `--max-pods` (1,000), and a /16
    /// cluster CIDR room for 64 nodes.
    #[arg(long, default_value_t = 22, value_parser = clap::value_parser!(u8).range(8..=30))]
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
    /// Seconds between two looks of each HorizontalPodAutoscaler at its metrics (kube-controller-manager's
    /// `--horizontal-pod-autoscaler-sync-period`, 15 s).
    #[arg(long, default_value_t = 15.0)]
    pub horizontal_pod_autoscaler_sync_period_seconds: f64,
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
            signer: None,
            hpa_sync_period: Duration::try_from_secs_f64(
                self.horizontal_pod_autoscaler_sync_period_seconds,
            )
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--horizontal-pod-autoscaler-sync-period-seconds must be a positive number"
                )
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

/// The store: etcd with --etcd-servers (waiting for it, with a line per failed attempt), else the redb file
/// in the data dir.
async fn open_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    let history_window = Duration::from_secs(config.history_window_seconds);
    // Compact at least twice per window, and at most every 30 seconds.
    let compaction_interval =
        Duration::from_millis(config.history_window_seconds.clamp(1, 60) * 500);
    if config.etcd_servers.is_empty() {
        let path = config.data_dir.join("store.redb");
        let store = RedbStore::open(
            &path,
            RedbStoreConfig {
                history_window,
                compaction_interval,
                ..RedbStoreConfig::default()
            },
        )
        .with_context(|| format!("cannot open the store {}", path.display()))?;
        move_legacy_keys(&store).await?;
        return Ok(metered(Arc::new(store)));
    }
    let mut etcd = EtcdStoreConfig::new(config.etcd_servers.clone());
    etcd.history_window = history_window;
    etcd.compaction_interval = compaction_interval;
    loop {
        match EtcdStore::connect(etcd.clone()).await {
            Ok(store) => return Ok(metered(Arc::new(store))),
            Err(error) => {
                tracing::error!(servers = %config.etcd_servers.join(","), %error, "cannot reach etcd; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Where store files written before the server kept kube-apiserver's key layout had the four resources it
/// stores elsewhere: (old prefix, new prefix, path segments after the old prefix).
const LEGACY_KEYS: [(&str, &str, usize); 4] = [
    ("/registry/services/", "/registry/services/specs/", 2),
    ("/registry/endpoints/", "/registry/services/endpoints/", 2),
    ("/registry/nodes/", "/registry/minions/", 1),
    (
        "/registry/replicationcontrollers/",
        "/registry/controllers/",
        2,
    ),
];

/// Moves the objects of a store file written with the old key layout to kube-apiserver's (once: a key of the
/// new layout under an old prefix, such as `/registry/services/specs/...`, has more segments and stays).
async fn move_legacy_keys(store: &RedbStore) -> anyhow::Result<()> {
    for (old, new, segments) in LEGACY_KEYS {
        let listed = store.list(&ListRequest {
            prefix: old.to_owned(),
            ..Default::default()
        })?;
        for kv in listed.items {
            let rest = &kv.key[old.len()..];
            if rest.split('/').count() != segments {
                continue;
            }
            match store
                .put(format!("{new}{rest}"), kv.value, Expect::Absent)
                .await
            {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e).context("cannot move a key to the new layout"),
            }
            store
                .delete(kv.key, Expect::Revision(kv.mod_revision))
                .await
                .context("cannot move a key to the new layout")?;
        }
    }
    Ok(())
}

const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Runs the control plane until Ctrl-C or SIGTERM.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let mut controllers = config.controllers.config()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let store = open_store(&config).await?;
    let shares_store = !config.etcd_servers.is_empty();
    if shares_store {
        crate::shared_files::adopt(&*store, &config.data_dir).await?;
    }
    let service_network = ServiceNetwork {
        cluster_ip_range: config.service_cluster_ip_range.trunc(),
        node_ports: config.service_node_port_range.clone(),
    };
    let admin_token = read_or_create_token(&config.data_dir.join("admin.token"))?;
    let loopback_token = new_token();
    let auth = auth_config(&config, &admin_token, &loopback_token)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let tls = if !config.insecure {
        Some(serving_tls(&config, address)?)
    } else {
        None
    };
    let ca_pem = tls.as_ref().map(|(ca, _)| ca.cert_pem().to_owned());
    let pod_security = match &config.admission_control_config_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "cannot read --admission-control-config-file {}",
                    path.display()
                )
            })?;
            pod_security::Config::from_admission_configuration(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => pod_security::Config::uniform(config.pod_security_default),
    };
    let pki_dir = config.data_dir.join("pki");
    let token_key = pki::service_account_key(&pki_dir)
        .context("cannot make the service account signing key")?;
    let token_signer = wasmkube_control::api::service_account_tokens::Signer::new(
        &token_key,
        &pki::public_key_pem(&token_key).context("the service account signing key")?,
    )
    .context("the service account signing key")?;
    if shares_store {
        crate::shared_files::publish(&*store, &config.data_dir).await?;
    }
    let mut api = ApiServer::new(store, service_network)
        .with_auth(auth)
        .with_pod_security(pod_security)
        .with_token_signer(token_signer)
        .with_in_process(wasmkube_control::apiserver::InProcess {
            scheduler: !config.no_scheduler,
            controller_manager: !config.no_controllers,
        });
    if let Some((ca, _)) = &tls {
        let identity = ca
            .issue_client(pki::APISERVER_CLIENT, &[MASTERS])
            .context("cannot issue the apiserver's client certificate")?;
        api = api
            .with_ca_certificate(ca.cert_pem())
            .with_agent_client(&identity)
            .map_err(|e| anyhow::anyhow!("cannot set up the client of node agents: {e}"))?;
        controllers.signer = Some(ca.clone());
    }
    let watches = api.clone();
    create_system_namespaces(&api).await?;
    create_bootstrap_policy(&api).await?;
    publish_apiserver(&api, &config, address).await?;
    if let Some(ca) = ca_pem.as_deref() {
        publish_root_ca(&api, ca).await?;
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{address}");
    let kubeconfig = write_kubeconfig(&config.data_dir, &url, &admin_token, ca_pem.as_deref())?;
    let in_process_router = api.clone().router();
    let client_as =
        |component: &str| in_process_client(in_process_router.clone(), &loopback_token, component);
    // One watch per kind for the scheduler and the controllers alike, started by the first that asks.
    let informers = Arc::new(wasmkube_control::informers::Informers::new(client_as(
        "kube-controller-manager",
    )?));
    let mut in_process = tokio::task::JoinSet::new();
    // Set at shutdown: the components stop and give up their Leases.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stopping = stopping.clone();
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }
    };
    // One server on its own store file is the only one: its components need no election.
    let elect_by_default = shares_store;
    if !config.no_scheduler {
        let election = config
            .election
            .election("kube-scheduler", elect_by_default)?;
        in_process.spawn(run_component(
            client_as("kube-scheduler")?,
            election,
            {
                let informers = informers.clone();
                move |client| wasmkube_control::scheduler::run(client, informers.clone())
            },
            stopped(),
        ));
    }
    if !config.no_controllers {
        let election = config
            .election
            .election("kube-controller-manager", elect_by_default)?;
        in_process.spawn(run_component(
            client_as("kube-controller-manager")?,
            election,
            move |client| {
                wasmkube_control::controllers::run(client, controllers.clone(), informers.clone())
            },
            stopped(),
        ));
    }
    // Servers sharing a store keep the `kubernetes` Service's endpoints listing each live one.
    let presence = if shares_store {
        let client = client_as("kube-apiserver")?;
        let advertised = SocketAddr::new(advertised_ip(&config, address), address.port());
        let renewing = tokio::spawn(endpoint_reconciler::run(client.clone(), advertised));
        Some((client, advertised, renewing))
    } else {
        None
    };
    tracing::info!(%address, kubeconfig = %kubeconfig.display(), "control plane serving");
    println!("wasmkube control plane listening on {url}");
    println!(
        "kubeconfig: {}  (export KUBECONFIG={})",
        kubeconfig.display(),
        kubeconfig.display()
    );
    if let Some(ca) = ca_pem.as_deref() {
        let join = crate::tokens::create_join_token(&api, ca)
            .await
            .context("cannot make a join token")?;
        let host = config
            .tls_sans
            .first()
            .cloned()
            .unwrap_or_else(|| address.ip().to_string());
        println!(
            "join a node (token valid 24h; more with `wasmkube token create --print-join-command`):\n  \
             wasmkube node --server https://{host}:{} --token {join} --name NODE",
            address.port()
        );
    }
    let shutdown = async move {
        terminated().await;
        tracing::info!("shutting down");
        stopping_tx.send_replace(true);
        let released = async { while in_process.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), released).await;
        in_process.abort_all();
        if let Some((client, advertised, renewing)) = &presence {
            renewing.abort();
            let withdrawn = endpoint_reconciler::withdraw(client, *advertised);
            let _ = tokio::time::timeout(Duration::from_secs(2), withdrawn).await;
        }
        // Open watches would hold the graceful shutdown open.
        watches.close_watches();
    };
    // Open watches would hold a graceful shutdown for up to their timeout: give them two seconds.
    let grace = Duration::from_secs(2);
    match tls {
        Some((_, tls)) => {
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                stopper.graceful_shutdown(Some(grace));
            });
            let acceptor = crate::tls_identity::IdentifyingAcceptor::new(
                axum_server::tls_rustls::RustlsAcceptor::new(
                    axum_server::tls_rustls::RustlsConfig::from_config(tls),
                ),
            );
            axum_server::from_tcp(listener.into_std()?)?
                .acceptor(acceptor)
                .handle(handle)
                .serve(api.router().into_make_service())
                .await
                .context("the API server failed")?;
        }
        None => {
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let server = axum::serve(listener, api.router()).with_graceful_shutdown(async move {
                shutdown.await;
                let _ = stop_tx.send(());
            });
            tokio::select! {
                result = server => result.context("the API server failed")?,
                () = async { if stop_rx.await.is_ok() { tokio::time::sleep(grace).await } else { std::future::pending().await } } => {},
            }
        }
    }
    Ok(())
}

/// The cluster CA and a fresh serving certificate for the address, localhost and `--tls-san`.
fn serving_tls(
    config: &ServerConfig,
    address: SocketAddr,
) -> anyhow::Result<(Arc<pki::ClusterCa>, Arc<rustls::ServerConfig>)> {
    let ca = pki::ClusterCa::load_or_create(&config.data_dir.join("pki"))
        .context("cannot set up the cluster CA")?;
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if address.ip().is_unspecified() {
        if let Ok(host) = nix::unistd::gethostname() {
            names.push(host.to_string_lossy().into_owned());
        }
    } else {
        names.push(address.ip().to_string());
    }
    names.extend(config.tls_sans.iter().cloned());
    // Pods reach the API as the `kubernetes` Service, by its names and address.
    names.extend(
        [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(str::to_owned),
    );
    names.extend(kubernetes_service_ip(config).map(|ip| ip.to_string()));
    names.dedup();
    let issued = ca
        .issue_server("wasmkube-apiserver", &names)
        .context("cannot issue the serving certificate")?;
    let tls = pki::server_config(&issued, ca.cert_pem()).context("cannot set up TLS")?;
    Ok((Arc::new(ca), tls))
}

/// The authenticators and authorizers of the flags: the token file's users, the admin of the kubeconfig and
/// the in-process components (both `system:masters`).
fn auth_config(
    config: &ServerConfig,
    admin_token: &str,
    loopback_token: &str,
) -> anyhow::Result<AuthConfig> {
    let modes = match (&config.authorization_mode, config.insecure) {
        (Some(modes), _) => modes.clone(),
        (None, true) => vec![AuthorizationMode::AlwaysAllow],
        (None, false) => vec![AuthorizationMode::Node, AuthorizationMode::Rbac],
    };
    let open = modes == [AuthorizationMode::AlwaysAllow];
    if modes.contains(&AuthorizationMode::AlwaysAllow) && !open {
        anyhow::bail!("--authorization-mode AlwaysAllow cannot be combined with other modes");
    }
    let anonymous = config.anonymous_auth.unwrap_or(config.insecure);
    if open && anonymous && !config.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve the API on {} to anyone without credentials: drop --insecure and \
             --anonymous-auth (or listen on a loopback address)",
            config.listen
        );
    }
    let mut tokens = match &config.token_auth_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --token-auth-file {}", path.display()))?;
            parse_token_file(&text).with_context(|| format!("{}", path.display()))?
        }
        None => Default::default(),
    };
    let master = |name: &str| User {
        name: name.into(),
        groups: vec![MASTERS.into()],
    };
    tokens.insert(admin_token.to_owned(), master("admin"));
    tokens.insert(loopback_token.to_owned(), master("system:apiserver"));
    Ok(AuthConfig {
        tokens,
        anonymous,
        modes,
    })
}

/// A new random bearer token.
pub fn new_token() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// The token in `path`, made (readable by the owner only) when there is none.
pub fn read_or_create_token(path: &std::path::Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let token = new_token();
    write_private(path, token.as_bytes())?;
    Ok(token)
}

/// Writes a file only its owner may read: it holds credentials.
pub fn write_private(path: &std::path::Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Creates the default ClusterRoles and ClusterRoleBindings, the system PriorityClasses and the `local-path`
/// StorageClass that are missing (changed ones are kept).
async fn create_bootstrap_policy(api: &ApiServer) -> anyhow::Result<()> {
    let rbac = |plural| {
        resources::by_path("rbac.authorization.k8s.io", "v1", plural)
            .with_context(|| format!("{plural} are not served"))
    };
    let roles = bootstrap_policy::cluster_roles()
        .into_iter()
        .map(serde_json::to_value);
    let bindings = bootstrap_policy::cluster_role_bindings()
        .into_iter()
        .map(serde_json::to_value);
    let priority_classes = wasmkube_control::api::priority::system_priority_classes()
        .into_iter()
        .map(serde_json::to_value);
    for (resource, objects) in [
        (rbac("clusterroles")?, roles.collect::<Result<Vec<_>, _>>()?),
        (
            rbac("clusterrolebindings")?,
            bindings.collect::<Result<Vec<_>, _>>()?,
        ),
        (
            resources::by_path("scheduling.k8s.io", "v1", "priorityclasses")
                .context("priorityclasses are not served")?,
            priority_classes.collect::<Result<Vec<_>, _>>()?,
        ),
        (
            resources::by_path("storage.k8s.io", "v1", "storageclasses")
                .context("storageclasses are not served")?,
            vec![serde_json::to_value(
                wasmkube_control::api::storage::local_path_class(),
            )?],
        ),
    ] {
        let plural = resource.plural;
        let target = Target {
            resource,
            namespace: None,
            conversion: None,
        };
        for object in objects {
            match api.create_by(&target, object, "kube-apiserver").await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(anyhow::anyhow!("cannot create the default {plural}: {e}")),
            }
        }
    }
    Ok(())
}

/// The first address of the Service range, which the `kubernetes` Service takes, as in Kubernetes.
fn kubernetes_service_ip(config: &ServerConfig) -> Option<std::net::Ipv4Addr> {
    config.service_cluster_ip_range.trunc().hosts().next()
}

/// The address pods are sent to for the API: the listening one, or (listening everywhere) the first
/// `--tls-san` that is an address, or loopback.
fn advertised_ip(config: &ServerConfig, address: SocketAddr) -> std::net::IpAddr {
    if !address.ip().is_unspecified() {
        return address.ip();
    }
    config
        .tls_sans
        .iter()
        .find_map(|san| san.parse().ok())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// The `kubernetes` Service of the default namespace and its endpoints, the apiserver's address: pods reach
/// the API through it (their sandbox keeps them from the apiserver's own address).
async fn publish_apiserver(
    api: &ApiServer,
    config: &ServerConfig,
    address: SocketAddr,
) -> anyhow::Result<()> {
    const NAME: &str = "kubernetes";
    const MANAGER: &str = "kube-apiserver";
    let ip = advertised_ip(config, address).to_string();
    let port = address.port();
    let cluster_ip = kubernetes_service_ip(config).context("the Service range has no address")?;
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip.to_string(), "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}});
    let endpoints = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": NAME, "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]});
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": NAME, "labels": {"kubernetes.io/service-name": NAME}},
        "addressType": if ip.contains(':') { "IPv6" } else { "IPv4" },
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]});
    let manager = wasmkube_control::apiserver::objects::Query {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    for (group, plural, object, keep) in [
        ("", "services", service, true),
        ("", "endpoints", endpoints, false),
        ("discovery.k8s.io", "endpointslices", slice, false),
    ] {
        let target = Target {
            resource: resources::by_path(group, "v1", plural)
                .with_context(|| format!("{plural} are not served"))?,
            namespace: Some("default".into()),
            conversion: None,
        };
        match api.create_by(&target, object.clone(), MANAGER).await {
            Ok(_) => {}
            // The Service stays as it is; its endpoints follow this server's address.
            Err(ApiError::AlreadyExists { .. }) if keep => {}
            Err(ApiError::AlreadyExists { .. }) => {
                api.update(&target, NAME, object, None, &manager)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot update the {NAME} {plural}: {e}"))?;
            }
            Err(e) => return Err(anyhow::anyhow!("cannot create the {NAME} {plural}: {e}")),
        }
    }
    Ok(())
}

/// The cluster CA's ConfigMap of `default`, there before any pod mounts it (the root CA publisher controller
/// keeps it, and those of the other namespaces, current).
async fn publish_root_ca(api: &ApiServer, ca_pem: &str) -> anyhow::Result<()> {
    let target = Target {
        resource: resources::by_path("", "v1", "configmaps")
            .context("configmaps are not served")?,
        namespace: Some("default".into()),
        conversion: None,
    };
    let map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"},
                     "data": {"ca.crt": ca_pem}});
    match api.create_by(&target, map, "kube-apiserver").await {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("cannot publish the cluster CA: {e}")),
    }
}

async fn create_system_namespaces(api: &ApiServer) -> anyhow::Result<()> {
    let namespaces =
        resources::by_path("", "v1", "namespaces").context("namespaces are not served")?;
    let target = Target {
        resource: namespaces,
        namespace: None,
        conversion: None,
    };
    for name in SYSTEM_NAMESPACES {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match api.create_by(&target, object, "kube-apiserver").await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(anyhow::anyhow!("cannot create namespace {name}: {e}")),
        }
    }
    Ok(())
}

fn write_kubeconfig(
    data_dir: &std::path::Path,
    server: &str,
    token: &str,
    ca_pem: Option<&str>,
) -> anyhow::Result<PathBuf> {
    use base64::Engine;
    let mut cluster = json!({"server": server});
    if let Some(ca) = ca_pem {
        cluster["certificate-authority-data"] =
            base64::engine::general_purpose::STANDARD.encode(ca).into();
    }
    let path = data_dir.join("kubeconfig");
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "wasmkube", "cluster": cluster}],
        "users": [{"name": "wasmkube-admin", "user": {"token": token}}],
        "contexts": [{"name": "wasmkube", "context": {"cluster": "wasmkube", "user": "wasmkube-admin", "namespace": "default"}}],
        "current-context": "wasmkube",
        "preferences": {},
    });
    let text = serde_yaml::to_string(&config)?;
    write_private(&path, text.as_bytes())?;
    Ok(path)
}
