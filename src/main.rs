//! `wasmkube`: the whole cluster in one binary. `server` runs the control plane; the other subcommands are a
//! kubectl-like client of it.

mod cli;
mod dashboard;
mod failover;
mod local_cluster;
mod port_forward;
mod rollout;
mod server;
mod shared_files;
mod tls_identity;
mod tokens;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use wasmkube_control::informers::Informers;
use wasmkube_node::join;

/// mimalloc rather than glibc's malloc: the apiserver and agents allocate and free many small objects per request
/// from every thread, where glibc spent ~20% of the server's CPU and kept freed memory per thread arena. Built with
/// arenas committed as they are used (`.cargo/config.toml`), so an idle agent stays small.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wasmkube",
    version,
    about = "A Kubernetes-style orchestrator whose containers are WebAssembly modules"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: cli::ClientArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster (a control plane and N node agents on this machine) and wait until it is Ready.
    Up(local_cluster::UpArgs),
    /// Stop a local cluster; with --purge also remove its data and kubeconfig context.
    Down(local_cluster::DownArgs),
    /// Run the control plane: the store and the Kubernetes API.
    Server(server::ServerConfig),
    /// Issue, list or revoke bearer tokens (bootstrap tokens for nodes, user tokens with --user).
    Token(tokens::TokenArgs),
    /// Print a one-time link that logs you in to the cluster's web dashboard.
    Dashboard,
    /// Run the scheduler on its own against an apiserver.
    Scheduler(server::SchedulerArgs),
    /// Run the controllers on their own against an apiserver.
    ControllerManager(server::ControllerManagerArgs),
    /// Run a node agent: register this node and run the pods bound to it as WebAssembly.
    Node(NodeArgs),
    /// Run the Service proxy of this machine on its own (for agents started with `--proxy false`).
    Proxy(ProxyArgs),
    /// Create or update objects from YAML or JSON files (multi-document), a directory of them, or `-` for stdin.
    Apply(cli::ApplyArgs),
    /// List objects or show some, as a table or as yaml/json/name.
    Get(cli::GetArgs),
    /// Show objects in detail, with their events.
    Describe(cli::DescribeArgs),
    /// Print a container's output (from its node, through the apiserver).
    Logs(cli::LogsArgs),
    /// Forward local ports to a pod (or a Service's or Deployment's pod) through the apiserver.
    PortForward(port_forward::PortForwardArgs),
    /// Delete objects by kind and name, by label, or as listed in files.
    Delete(cli::DeleteArgs),
    /// Set the replicas of a Deployment, ReplicaSet or StatefulSet.
    Scale(rollout::ScaleArgs),
    /// Follow, list, undo, restart, pause or resume a Deployment's rollout.
    Rollout(rollout::RolloutArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,hyper=warn,kube=warn,kube_client::client::builder=off".into()
            }),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log written to a file (`2> server.log`) stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    raise_open_files_limit();
    wasmkube_core::pki::use_ring();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match args.command {
            Command::Up(up) => local_cluster::up(up).await,
            Command::Down(down) => local_cluster::down(down).await,
            Command::Server(config) => server::run(config).await,
            Command::Token(token) => tokens::token(&args.client, token).await,
            Command::Dashboard => dashboard::dashboard(&args.client).await,
            Command::Scheduler(scheduler) => {
                let election = scheduler.election.election("kube-scheduler", true)?;
                scheduler.metrics.serve().await?;
                let (client, _) = cli::client_as(&args.client, "kube-scheduler").await?;
                server::run_component(
                    client,
                    election,
                    |client| {
                        let informers = Informers::new(client.clone());
                        wasmkube_control::scheduler::run(client, Arc::new(informers))
                    },
                    server::terminated(),
                )
                .await;
                Ok(())
            }
            Command::ControllerManager(controllers) => {
                let config = controllers.controllers.config()?;
                let election = controllers
                    .election
                    .election("kube-controller-manager", true)?;
                controllers.metrics.serve().await?;
                let (client, _) = cli::client_as(&args.client, "kube-controller-manager").await?;
                server::run_component(
                    client,
                    election,
                    move |client| {
                        let informers = Informers::new(client.clone());
                        wasmkube_control::controllers::run(
                            client,
                            config.clone(),
                            Arc::new(informers),
                        )
                    },
                    server::terminated(),
                )
                .await;
                Ok(())
            }
            Command::Node(node) => run_node(&args.client, node).await,
            Command::Proxy(proxy) => {
                let metrics = proxy.metrics.bind().await?;
                let (client, _) = cli::client_as(&args.client, "kube-proxy").await?;
                wasmkube_node::network::proxy::run_for_nodes(client, &proxy.node, metrics).await;
                Ok(())
            }
            Command::Apply(apply) => cli::apply(&args.client, apply).await,
            Command::Get(get) => cli::get(&args.client, get).await,
            Command::Describe(describe) => cli::describe(&args.client, describe).await,
            Command::Logs(logs) => cli::logs(&args.client, logs).await,
            Command::PortForward(forward) => {
                port_forward::port_forward(&args.client, forward).await
            }
            Command::Delete(delete) => cli::delete(&args.client, delete).await,
            Command::Scale(scale) => {
                let (client, namespace) = cli::client(&args.client).await?;
                rollout::scale(client, &namespace, scale).await
            }
            Command::Rollout(rollout) => {
                let (client, namespace) = cli::client(&args.client).await?;
                rollout::rollout(client, &namespace, rollout).await
            }
        }
    });
    // Tasks still running (watchers reconnecting to a server that is going away, say) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

/// `wasmkube node` arguments.
#[derive(clap::Args)]
struct NodeArgs {
    /// The Node's name.
    #[arg(long)]
    name: String,
    /// Where pod logs, volumes and compiled modules live.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where the directories of local persistent volumes live (k3s' local-path root); a volume is mounted
    /// only from under it. Default: `storage` in the data dir.
    #[arg(long)]
    local_path_root: Option<PathBuf>,
    /// The address other nodes reach this one at.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// The port of the log endpoint the apiserver reaches (0 picks a free one).
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// The first CrashLoopBackOff delay in seconds (doubling up to 300).
    #[arg(long, default_value_t = 10.0)]
    crash_backoff_seconds: f64,
    /// Wasm instances kept ready in wasmtime's pooling allocator (0: allocate each on demand).
    #[arg(long, default_value_t = 1000)]
    instance_pool: u32,
    /// The memory all guests of the node may hold together, as a quantity (`2Gi`); past 90% of it the node
    /// reports MemoryPressure and evicts pods (BestEffort first). Default: the node's memory less a tenth.
    #[arg(long, value_parser = parse_bytes)]
    guest_memory: Option<usize>,
    /// Whether the agent serves Services itself; `false` when the machine runs `wasmkube proxy`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    proxy: bool,
    /// The most pods the node runs at once (the kubelet's flag): its `pods` capacity, and never more than its
    /// podCIDR has addresses for. A Wasm pod costs the agent ~75 KiB and its instances share the node's guest
    /// memory budget, so the default is a large constant (the kubelet's is 110) that the default podCIDR (/22)
    /// holds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    max_pods: u32,
    /// Events the agent writes per second at most, after a burst of `--event-burst` (the kubelet's flags and
    /// defaults); 0 for no limit. Events beyond 1,000 waiting are dropped, as the kubelet's are.
    #[arg(long, default_value_t = 50.0, value_parser = parse_event_qps)]
    event_qps: f64,
    /// Events the agent may write at once before `--event-qps` applies.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    event_burst: u32,
}

/// An events-per-second rate: a finite number, 0 or more.
fn parse_event_qps(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(qps) if qps.is_finite() && qps >= 0.0 => Ok(qps),
        _ => Err(format!(
            "{value:?} is not a rate of 0 or more events per second"
        )),
    }
}

/// `wasmkube proxy` arguments.
#[derive(clap::Args)]
struct ProxyArgs {
    /// A node of this machine whose addresses serve NodePorts (repeat for each; cluster IPs are served
    /// regardless).
    #[arg(long)]
    node: Vec<String>,
    /// Where to serve the proxy's `/metrics` (kube-proxy's flag).
    #[command(flatten)]
    metrics: server::MetricsArgs,
}

/// Raises the limit on open files (the soft one to the hard one, both to the kernel's ceiling when privileged):
/// an agent holds a listener and connections per pod, a server a connection per watch (the soft default, 1024,
/// caps both).
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(error) => return tracing::warn!(%error, "cannot read the open files limit"),
    };
    // With the privilege to (root, CAP_SYS_RESOURCE), the hard limit goes up to the kernel's ceiling too.
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    if ceiling > hard && setrlimit(Resource::RLIMIT_NOFILE, ceiling, ceiling).is_ok() {
        return;
    }
    if soft < hard
        && let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(%error, soft, hard, "cannot raise the open files limit");
    }
}

fn parse_bytes(text: &str) -> Result<usize, String> {
    let quantity =
        wasmkube_control::api::quantity::Quantity::parse(text).map_err(|e| e.to_string())?;
    usize::try_from(quantity.value())
        .ok()
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("{text:?} is not a positive amount of memory"))
}

async fn run_node(client_args: &cli::ClientArgs, args: NodeArgs) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| default_data_dir().join("nodes").join(&args.name));
    // wasmtime's compilation cache needs an absolute path; a relative --data-dir is the user's working dir's.
    let data_dir = std::path::absolute(&data_dir)
        .with_context(|| format!("invalid data dir {}", data_dir.display()))?;
    let join_token = client_args
        .token
        .as_deref()
        .filter(|t| join::is_join_token(t));
    let apiserver_ips = apiserver_ips(client_args).await?;
    let layout = wasmkube_node::data_dir::DataDir::new(&data_dir);
    let joined = layout.node_certificate().exists();
    let servers = cli::server_urls(client_args)?;
    let client = match (servers.is_empty(), join_token.is_some() || joined) {
        (false, true) => {
            let mut config = join_any(&servers, join_token, &args.name, &data_dir).await?;
            cli::identify(&mut config, "kubelet");
            failover::client(cli::each_server(config, &servers))?
        }
        (true, true) => anyhow::bail!("joining a cluster needs --server https://HOST:PORT"),
        (_, false) => cli::client_as(client_args, "kubelet").await?.0,
    };
    let ca_file = match &client_args.certificate_authority {
        Some(path) => Some(path.clone()),
        None => Some(layout.cluster_ca()).filter(|p| p.exists()),
    };
    let cluster_ca = match ca_file {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => None,
    };
    let initial = std::time::Duration::from_secs_f64(args.crash_backoff_seconds.max(0.0));
    let local_path_root = match args.local_path_root {
        Some(root) => std::path::absolute(&root)
            .with_context(|| format!("invalid local path root {}", root.display()))?,
        None => wasmkube_node::data_dir::DataDir::new(&data_dir).local_volumes(),
    };
    let config = wasmkube_node::agent::AgentConfig {
        node_name: args.name,
        data_dir,
        local_path_root,
        address: args.address,
        backoff: wasmkube_node::pod::Backoff {
            initial,
            max: std::time::Duration::from_secs(300).max(initial),
        },
        port: args.port,
        instance_pool: args.instance_pool,
        max_pods: args.max_pods,
        event_limit: wasmkube_core::events::RateLimit {
            qps: args.event_qps,
            burst: args.event_burst,
        },
        guest_memory: args.guest_memory,
        cluster_ca,
        apiserver_ips,
        run_proxy: args.proxy,
    };
    wasmkube_node::agent::run(client, config).await
}

/// The addresses of the apiserver the agent talks to (its URL's host, resolved).
async fn apiserver_ips(client_args: &cli::ClientArgs) -> anyhow::Result<Vec<std::net::IpAddr>> {
    let mut urls = cli::server_urls(client_args)?;
    if urls.is_empty() {
        urls.push(cli::config(client_args).await?.cluster_url);
    }
    let mut ips = Vec::new();
    for url in urls {
        let host = url.host().unwrap_or_default().trim_matches(['[', ']']);
        let port = url.port_u16().unwrap_or(443);
        if let Ok(found) = tokio::net::lookup_host((host, port)).await {
            ips.extend(found.map(|a| a.ip()));
        }
    }
    Ok(ips)
}

/// The agent's credentials from the first of `servers` that answers (its kept ones need no server).
async fn join_any(
    servers: &[http::Uri],
    join_token: Option<&str>,
    node: &str,
    data_dir: &std::path::Path,
) -> anyhow::Result<kube::Config> {
    let mut failure = None;
    for server in servers {
        match join::node_credentials(server, join_token, node, data_dir).await {
            Ok(config) => return Ok(config),
            Err(error) => {
                tracing::warn!(%server, %error, "cannot join through this apiserver");
                failure = Some(error);
            }
        }
    }
    Err(failure.map_or_else(|| anyhow::anyhow!("no apiserver to join"), Into::into))
}

/// Where a path argument points, for the data dir default.
fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME").map_or_else(
        || PathBuf::from(".wasmkube"),
        |home| PathBuf::from(home).join(".wasmkube"),
    )
}
