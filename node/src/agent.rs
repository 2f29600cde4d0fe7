//! The node agent: registers the Node, keeps its Lease and Ready condition fresh, and reconciles the pods bound
//! to it (field selector `spec.nodeName`) against the pod workers it runs.

use crate::data_dir::DataDir;
use crate::network::addresses::PodAddresses;
use crate::network::proxy::Proxy;
use crate::pod::admission::{admit, admit_under_memory_pressure};
use crate::pod::{Backoff, NodeContext, PodWorker};
use crate::runtime::Runtime;
use crate::streams::port_forward::PodAddressBook;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo, Pod,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmkube_core::events::{EventType, Recorder};
use wasmkube_core::resources::{Resources, allocatable, requests};

/// How often the Lease is renewed; the control plane declares a node lost after its grace period (10 s by
/// default) without one.
const LEASE_RENEWAL: Duration = Duration::from_secs(2);
/// The Ready condition is refreshed every this many renewals (every 10 s).
const STATUS_EVERY: u32 = 5;
/// The label that says a node runs WebAssembly.
pub const RUNTIME_LABEL: &str = "wasmkube.io/runtime";

/// The node agent's settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node's name.
    pub node_name: String,
    /// Where pod logs, volumes and the compilation cache live.
    pub data_dir: PathBuf,
    /// Where the directories of local persistent volumes live.
    pub local_path_root: PathBuf,
    /// The address other nodes reach this one at.
    pub address: String,
    /// Container restart delays.
    pub backoff: Backoff,
    /// The port of the log endpoint the apiserver reaches (0 picks a free one).
    pub port: u16,
    /// Instance slots of the pooling allocator (0: allocate on demand).
    pub instance_pool: u32,
    /// The most pods the node runs at once (its `pods` capacity).
    pub max_pods: u32,
    /// How fast the agent writes Events (a qps of 0: no limit).
    pub event_limit: wasmkube_core::events::RateLimit,
    /// Bytes all guests may hold together (none: the node's memory less a reserve).
    pub guest_memory: Option<usize>,
    /// The cluster CA (PEM), when known: the endpoint then serves TLS to the apiserver alone.
    pub cluster_ca: Option<String>,
    /// The apiserver's addresses, which pods may not connect to.
    pub apiserver_ips: Vec<std::net::IpAddr>,
    /// Whether the agent runs the Service proxy itself (false: a `wasmkube proxy` of the machine does).
    pub run_proxy: bool,
}

/// Agent failures.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The apiserver refused or could not be reached.
    #[error("apiserver request failed: {0}")]
    Api(#[from] kube::Error),
    /// The Node's podCIDR cannot be used.
    #[error(transparent)]
    Addresses(#[from] crate::network::addresses::AddressError),
    /// A pod worker panicked while holding the worker table.
    #[error("the pod worker table is poisoned")]
    Poisoned,
}

struct Agent {
    ctx: Arc<NodeContext>,
    workers: Mutex<HashMap<String, PodWorker>>,
    /// Uids of the pods evicted under memory pressure: never started again.
    evicted: Mutex<std::collections::HashSet<String>>,
    /// What the node offers pods, as registered.
    allocatable: Resources,
}

/// The node's `pods` capacity: `--max-pods`, but no more than its podCIDR has addresses for once it has one.
fn pod_capacity(config: &AgentConfig, pod_cidr: Option<&str>) -> u32 {
    pod_cidr.map_or(config.max_pods, |cidr| {
        config
            .max_pods
            .min(crate::network::addresses::pod_capacity(cidr))
    })
}

fn node_object(config: &AgentConfig, port: u16, pod_cidr: Option<&str>) -> Node {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = total_memory_bytes();
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity(cpus.to_string())),
        (
            "memory".to_owned(),
            Quantity(format!("{}Ki", memory / 1024)),
        ),
        (
            "pods".to_owned(),
            Quantity(pod_capacity(config, pod_cidr).to_string()),
        ),
        (
            "ephemeral-storage".to_owned(),
            Quantity(format!(
                "{}Ki",
                filesystem_bytes(&config.local_path_root) / 1024
            )),
        ),
    ]);
    let labels = BTreeMap::from([
        (
            "kubernetes.io/hostname".to_owned(),
            config.node_name.clone(),
        ),
        (
            "kubernetes.io/os".to_owned(),
            std::env::consts::OS.to_owned(),
        ),
        ("kubernetes.io/arch".to_owned(), "wasm32".to_owned()),
        (RUNTIME_LABEL.to_owned(), "wasmtime".to_owned()),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(labels),
            annotations: Some(local_path_annotation(config)),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: config.address.clone(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: config.node_name.clone(),
                },
            ]),
            conditions: Some(vec![ready_condition(), memory_condition(false)]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(port),
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: "wasm32".into(),
                container_runtime_version: "wasmtime://48".into(),
                kubelet_version: format!("v1.37.0-wasmkube.{}", env!("CARGO_PKG_VERSION")),
                kube_proxy_version: String::new(),
                operating_system: std::env::consts::OS.into(),
                os_image: "WebAssembly (WASI 0.1, 0.2)".into(),
                kernel_version: String::new(),
                boot_id: String::new(),
                machine_id: String::new(),
                system_uuid: String::new(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The Node's annotation naming its local volume root, for the local-path provisioner.
fn local_path_annotation(config: &AgentConfig) -> BTreeMap<String, String> {
    BTreeMap::from([(
        wasmkube_core::local_volumes::LOCAL_PATH_ROOT.to_owned(),
        config.local_path_root.display().to_string(),
    )])
}

/// The size of the file system holding `path` (the node's `ephemeral-storage`, which local volumes share).
fn filesystem_bytes(path: &std::path::Path) -> u64 {
    rustix::fs::statvfs(path).map_or(0, |fs| fs.f_blocks.saturating_mul(fs.f_frsize))
}

fn total_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text
                .lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(4 << 30, |kib| kib * 1024)
}

/// The kubelet's MemoryPressure condition: whether guests hold most of the node's memory budget.
fn memory_condition(under_pressure: bool) -> NodeCondition {
    let now = Time(jiff::Timestamp::now());
    let (status, reason, message) = if under_pressure {
        (
            "True",
            "KubeletHasInsufficientMemory",
            "guests hold more than 90% of the node's memory budget",
        )
    } else {
        (
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        )
    };
    NodeCondition {
        type_: "MemoryPressure".into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

fn ready_condition() -> NodeCondition {
    let now = Time(jiff::Timestamp::now());
    NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: Some("KubeletReady".into()),
        message: Some("wasmkube node agent is posting ready status".into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Creates the Node, or brings an existing one's status up to date. A Node registered again (someone deleted
/// it) asks for the podCIDR its pods already have addresses in.
async fn register(
    client: &kube::Client,
    config: &AgentConfig,
    port: u16,
    pod_cidr: Option<&str>,
) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node = node_object(config, port, pod_cidr);
    if let Some(cidr) = pod_cidr {
        let spec = node.spec.get_or_insert_with(Default::default);
        spec.pod_cidr = Some(cidr.to_owned());
        spec.pod_cidrs = Some(vec![cidr.to_owned()]);
    }
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let annotations =
                serde_json::json!({"metadata": {"annotations": local_path_annotation(config)}});
            nodes
                .patch(
                    &config.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&annotations),
                )
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    let status = serde_json::json!({"status": node.status});
    nodes
        .patch_status(
            &config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    Ok(())
}

/// Renews the Lease and the Ready heartbeat, forever; a Node someone deleted is registered again, as the
/// kubelet does.
async fn heartbeat(
    client: kube::Client,
    config: AgentConfig,
    port: u16,
    pod_cidr: Arc<std::sync::OnceLock<String>>,
    memory: Arc<crate::runtime::memory::NodeMemory>,
) {
    let node_name = config.node_name.clone();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client.clone());
    let mut beat = 0u32;
    loop {
        let now = MicroTime(jiff::Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(node_name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(node_name.clone()),
                lease_duration_seconds: Some(10),
                renew_time: Some(now),
                ..Default::default()
            }),
        };
        let patch = Patch::Merge(serde_json::to_value(&lease).unwrap_or_default());
        let renewed = match leases
            .patch(&node_name, &PatchParams::default(), &patch)
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 404 => leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ()),
            other => other.map(|_| ()),
        };
        if let Err(error) = renewed {
            tracing::warn!(node = %node_name, %error, "cannot renew the node lease");
        }
        if beat.is_multiple_of(STATUS_EVERY) {
            let conditions = [ready_condition(), memory_condition(memory.under_pressure())];
            let status = serde_json::json!({"status": {"conditions": conditions}});
            if let Err(error) = nodes
                .patch_status(
                    &node_name,
                    &PatchParams::default(),
                    &Patch::Strategic(&status),
                )
                .await
            {
                match error {
                    kube::Error::Api(e) if e.code == 404 => {
                        tracing::warn!(node = %node_name, "the Node was deleted: registering again");
                        let cidr = pod_cidr.get().map(String::as_str);
                        if let Err(error) = register(&client, &config, port, cidr).await {
                            tracing::warn!(node = %node_name, %error, "cannot register the node");
                        }
                    }
                    error => tracing::warn!(node = %node_name, %error, "cannot post node status"),
                }
            }
        }
        beat = beat.wrapping_add(1);
        tokio::time::sleep(LEASE_RENEWAL).await;
    }
}

async fn reconcile(pod: Arc<Pod>, agent: Arc<Agent>) -> Result<Action, AgentError> {
    let uid = pod.uid().unwrap_or_default();
    let (name, namespace) = (pod.name_any(), pod.namespace().unwrap_or_default());
    if pod.metadata.deletion_timestamp.is_some() {
        let worker = agent.workers.lock().ok().and_then(|mut w| w.remove(&uid));
        if let Some(worker) = worker {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .unwrap_or(30)
                .max(0) as u64;
            worker.stop(Duration::from_secs(grace)).await;
            tracing::info!(pod = %name, namespace = %namespace, "stopped");
        }
        let pods: Api<Pod> = Api::namespaced(agent.ctx.client.clone(), &namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match pods.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        if let Ok(dir) = agent.ctx.data_dir.pod(&namespace, &name, &uid) {
            let _ = tokio::fs::remove_dir_all(dir.volumes()).await;
        }
        return Ok(Action::await_change());
    }
    if agent
        .evicted
        .lock()
        .map_err(|_| AgentError::Poisoned)?
        .contains(&uid)
    {
        return Ok(Action::await_change());
    }
    // A pod that already ran to its end (seen again after an agent restart) is never run twice.
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Ok(Action::await_change());
    }
    let rejected = {
        let mut workers = agent.workers.lock().map_err(|_| AgentError::Poisoned)?;
        if let Some(worker) = workers.get(&uid) {
            worker.observe(pod.status.clone());
            worker.observe_ephemeral(&pod);
            return Ok(Action::await_change());
        }
        let used = workers
            .values()
            .filter(|w| w.is_active())
            .fold(Resources::default(), |sum, w| sum + w.requests);
        // A pod already running (adopted after an agent restart) was admitted before.
        let admitted = if phase == Some("Running") {
            Ok(())
        } else {
            admit(requests(&pod), used, agent.allocatable).and_then(|()| {
                admit_under_memory_pressure(&pod, agent.ctx.runtime.memory().under_pressure())
            })
        };
        match admitted {
            Ok(()) => {
                tracing::info!(pod = %name, namespace = %namespace, "starting");
                workers.insert(uid, PodWorker::start(pod.clone(), agent.ctx.clone()));
                return Ok(Action::await_change());
            }
            Err(rejection) => rejection,
        }
    };
    tracing::warn!(pod = %name, namespace = %namespace, reason = %rejected.reason, "rejected");
    let status = serde_json::json!({"status": {
        "phase": "Failed", "reason": rejected.reason, "message": rejected.message,
        "startTime": jiff::Timestamp::now().to_string(),
    }});
    let pods: Api<Pod> = Api::namespaced(agent.ctx.client.clone(), &namespace);
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    agent.ctx.events.record(
        pod.as_ref(),
        EventType::Warning,
        &rejected.reason,
        &rejected.message,
    );
    Ok(Action::await_change())
}

fn error_policy(_pod: Arc<Pod>, error: &AgentError, _agent: Arc<Agent>) -> Action {
    tracing::warn!(%error, "pod reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

/// Follows the Node objects: every node's InternalIP is kept from pods (the sandbox), and with `routes`, every
/// other node's podCIDR is routed through it.
async fn follow_nodes(
    client: kube::Client,
    node_name: String,
    guard: Arc<crate::network::sandbox::Infrastructure>,
    routes: bool,
) {
    use kube::runtime::WatchStreamExt;
    let (store, writer) = kube::runtime::reflector::store();
    let mut changes = kube::runtime::reflector::reflector(
        writer,
        watcher(Api::<Node>::all(client), watcher::Config::default()),
    )
    .default_backoff()
    .boxed();
    let mut installed = std::collections::BTreeMap::new();
    while changes.next().await.is_some() {
        let nodes = store.state();
        guard.set_nodes(nodes.iter().map(|n| n.as_ref()));
        if routes {
            let wanted = crate::network::routes::desired(&node_name, &nodes);
            if wanted != installed {
                installed = crate::network::routes::apply(&installed, &wanted).await;
            }
        }
    }
}

/// Runs the node agent until the process ends.
pub fn run(
    client: kube::Client,
    config: AgentConfig,
) -> wasmkube_core::EntryFuture<'static, anyhow::Result<()>> {
    Box::pin(run_agent(client, config))
}

async fn run_agent(client: kube::Client, config: AgentConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    let local_volumes = crate::pod::claims::LocalVolumes::new(&config.local_path_root)?;
    // The canonical root is what the Node announces and what volume paths are checked against.
    let config = AgentConfig {
        local_path_root: local_volumes.root().to_path_buf(),
        ..config
    };
    tokio::spawn(crate::pod::claims::remove_deleted(
        client.clone(),
        local_volumes.clone(),
    ));
    let data_dir = DataDir::new(&config.data_dir);
    // Guests may take the node's memory but a reserve for the agent and the system (a tenth, at least
    // 100 MiB, as the kubelet's default eviction threshold).
    let total = usize::try_from(total_memory_bytes()).unwrap_or(usize::MAX);
    let budget = config
        .guest_memory
        .unwrap_or_else(|| total.saturating_sub((total / 10).max(100 << 20)));
    let runtime = Arc::new(
        Runtime::new(&data_dir.compile_cache(), config.instance_pool)?.with_memory_budget(budget),
    );
    let listener = tokio::net::TcpListener::bind((config.address.as_str(), config.port)).await?;
    let port = listener.local_addr()?.port();
    let pod_addresses = PodAddressBook::default();
    let containers = crate::streams::running::RunningContainers::default();
    let proxy_stats = crate::metrics::ProxyStats::default();
    let endpoint = crate::logs::log_server::router(data_dir.clone())
        // As a kubelet's: what `nodes/NAME/proxy/healthz` reaches.
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .merge(crate::streams::port_forward::router(pod_addresses.clone()))
        .merge(crate::stats::router(crate::stats::Sources {
            node_name: config.node_name.clone(),
            containers: containers.clone(),
        }))
        .merge(crate::metrics::router(crate::metrics::Sources {
            containers: Some(containers.clone()),
            proxy: proxy_stats.clone(),
        }))
        .merge(crate::streams::exec::router(
            crate::streams::exec::Sessions {
                containers: containers.clone(),
                runtime: runtime.clone(),
            },
        ));
    let tls = match &config.cluster_ca {
        Some(ca) => Some(crate::endpoint_tls::server_config(ca, &config.address)?),
        None => None,
    };
    tokio::spawn(async move {
        let served = match tls {
            Some(tls) => match listener.into_std() {
                Ok(listener) => match axum_server::from_tcp_rustls(
                    listener,
                    axum_server::tls_rustls::RustlsConfig::from_config(tls),
                ) {
                    Ok(server) => server.serve(endpoint.into_make_service()).await,
                    Err(error) => Err(error),
                },
                Err(error) => Err(error),
            },
            None => axum::serve(listener, endpoint).await,
        };
        if let Err(error) = served {
            tracing::error!(%error, "the agent endpoint (logs, port-forward, exec, attach) failed");
        }
    });
    // The control plane may not be up yet (or be restarting): keep trying rather than give up.
    let mut attempt = 0u32;
    loop {
        let error = match register(&client, &config, port, None).await {
            Ok(()) => break,
            // Deleted between its create and its status write: register it again.
            Err(AgentError::Api(kube::Error::Api(status))) if status.code == 404 => {
                AgentError::Api(kube::Error::Api(status))
            }
            // The apiserver answered and refused otherwise: trying again will not help.
            Err(AgentError::Api(kube::Error::Api(status))) => {
                return Err(anyhow::anyhow!(
                    "cannot register node {}: {}",
                    config.node_name,
                    status.message
                ));
            }
            Err(error) => error,
        };
        attempt += 1;
        if attempt == 1 || attempt.is_multiple_of(10) {
            tracing::warn!(node = %config.node_name, %error, "cannot register the node yet; retrying");
        }
        // Quick at first (a control plane started beside this agent is up in milliseconds), then every 500 ms.
        let delay = 25u64.saturating_mul(1 << attempt.min(5)).min(500);
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    tracing::info!(node = %config.node_name, port, "registered");
    let known_pod_cidr = Arc::new(std::sync::OnceLock::new());
    tokio::spawn(heartbeat(
        client.clone(),
        config.clone(),
        port,
        known_pod_cidr.clone(),
        runtime.memory(),
    ));
    let pod_cidr = wait_for_pod_cidr(&client, &config.node_name).await?;
    let _ = known_pod_cidr.set(pod_cidr.clone());
    if pod_capacity(&config, Some(&pod_cidr)) < config.max_pods {
        tracing::warn!(
            node = %config.node_name, pod_cidr = %pod_cidr, max_pods = config.max_pods,
            pods = pod_capacity(&config, Some(&pod_cidr)),
            "the podCIDR has fewer addresses than --max-pods: the node takes as many pods as it has addresses"
        );
        register(&client, &config, port, Some(&pod_cidr)).await?;
    }
    let addresses = Arc::new(PodAddresses::new(&pod_cidr)?);
    // Set once per process: the podCIDR is fixed for the Node's life.
    let _ = pod_addresses.set(addresses.clone());
    tracing::info!(node = %config.node_name, pod_cidr = %addresses.range(), "pod addresses");
    let routes = crate::network::routes::needs_routes(&addresses.range());
    if routes {
        crate::network::routes::make_local(&addresses.range())
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot give pods their addresses (needs CAP_NET_ADMIN): {e}")
            })?;
    }
    let own = config.address.parse().ok();
    let (services, service_changes) = crate::network::services::watch(&client);
    let service_addresses = services.clone();
    let infrastructure = Arc::new(crate::network::sandbox::Infrastructure::new(
        config.apiserver_ips.iter().copied().chain(own),
        Some(addresses.range().into()),
        Box::new(move |ip| service_addresses.is_service_address(ip)),
    ));
    tokio::spawn(follow_nodes(
        client.clone(),
        config.node_name.clone(),
        infrastructure.clone(),
        routes,
    ));
    if config.run_proxy {
        let mut node_ips: Vec<std::net::IpAddr> = config.address.parse().into_iter().collect();
        node_ips.extend(addresses.node_address().map(std::net::IpAddr::from));
        tokio::spawn(crate::network::proxy::run(
            Proxy::new(node_ips, proxy_stats),
            services.clone(),
            service_changes,
        ));
    } else {
        tokio::spawn(service_changes.for_each(|()| async {}));
    }
    let ctx = Arc::new(NodeContext {
        client: client.clone(),
        runtime,
        node_name: config.node_name.clone(),
        address: config.address.clone(),
        images: crate::pod::images::Images::new(data_dir.images()),
        data_dir,
        backoff: config.backoff.clone(),
        addresses,
        services,
        events: Recorder::limited(client.clone(), "kubelet", Some(config.event_limit))
            .on_host(config.node_name.clone()),
        infrastructure: infrastructure.clone(),
        containers,
        token_refreshes: Default::default(),
        local_volumes,
    });
    let agent = Arc::new(Agent {
        ctx,
        workers: Mutex::new(HashMap::new()),
        evicted: Mutex::default(),
        allocatable: allocatable(&node_object(&config, port, Some(&pod_cidr))),
    });
    tokio::spawn(evict_under_pressure(agent.clone()));
    let pods: Api<Pod> = Api::all(client);
    let selector =
        watcher::Config::default().fields(&format!("spec.nodeName={}", config.node_name));
    let (cache, events) = wasmkube_core::cache::reflect(pods, selector);
    tokio::spawn(sweep_removed_pods(cache.clone(), agent.clone()));
    let controller = Controller::for_stream(
        kube::runtime::WatchStreamExt::applied_objects(events),
        cache.store().clone(),
    );
    controller
        .run(reconcile, error_policy, agent)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile");
            }
        })
        .await;
    Ok(())
}

/// How often the agent checks whether guests hold most of the node's memory budget.
const EVICTION_CHECK: Duration = Duration::from_secs(1);

/// Evicts pods while guests hold most of the node's memory budget (MemoryPressure), one at a time, in the
/// kubelet's order: BestEffort first, then Burstable, then Guaranteed, the largest user of memory first.
async fn evict_under_pressure(agent: Arc<Agent>) {
    loop {
        tokio::time::sleep(EVICTION_CHECK).await;
        if !agent.ctx.runtime.memory().under_pressure() {
            continue;
        }
        let victim = {
            let Ok(workers) = agent.workers.lock() else {
                return;
            };
            let candidates: Vec<crate::pod::eviction::Candidate> = workers
                .iter()
                .filter(|(_, w)| w.is_active())
                .map(|(uid, w)| crate::pod::eviction::Candidate {
                    uid: uid.clone(),
                    qos: w.qos,
                    usage: w.memory_usage(),
                })
                .collect();
            crate::pod::eviction::victim(&candidates).cloned()
        };
        if let Some(victim) = victim
            && let Err(error) = evict(&agent, &victim).await
        {
            tracing::warn!(%error, "cannot evict a pod under memory pressure");
        }
    }
}

/// Stops a pod for good and marks it Failed with reason Evicted, as the kubelet does.
async fn evict(agent: &Agent, victim: &crate::pod::eviction::Candidate) -> Result<(), AgentError> {
    agent
        .evicted
        .lock()
        .map_err(|_| AgentError::Poisoned)?
        .insert(victim.uid.clone());
    let worker = agent
        .workers
        .lock()
        .map_err(|_| AgentError::Poisoned)?
        .remove(&victim.uid);
    let Some(worker) = worker else {
        return Ok(());
    };
    let pod = worker.pod.clone();
    worker.stop(Duration::ZERO).await;
    let message = format!(
        "The node was low on resource: memory. The pod ({} class) held {} MiB.",
        victim.qos.name(),
        victim.usage >> 20
    );
    let (name, namespace) = (pod.name_any(), pod.namespace().unwrap_or_default());
    tracing::warn!(pod = %name, namespace = %namespace, qos = victim.qos.name(), bytes = victim.usage, "evicted under memory pressure");
    let status =
        serde_json::json!({"status": {"phase": "Failed", "reason": "Evicted", "message": message}});
    let pods: Api<Pod> = Api::namespaced(agent.ctx.client.clone(), &namespace);
    match pods
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    agent
        .ctx
        .events
        .record(pod.as_ref(), EventType::Warning, "Evicted", &message);
    Ok(())
}

/// Waits until the control plane has given this Node its podCIDR, the range its pods' addresses come from.
async fn wait_for_pod_cidr(client: &kube::Client, node_name: &str) -> Result<String, AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        // A Node deleted meanwhile is registered again by the heartbeat: keep waiting.
        let node = nodes.get_opt(node_name).await?;
        if let Some(cidr) = node.and_then(|n| n.spec?.pod_cidr) {
            return Ok(cidr);
        }
        // Every 5 s: 50 polls of 100 ms.
        if attempt.is_multiple_of(50) {
            tracing::warn!(node = %node_name, "waiting for the control plane to assign a podCIDR");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many sweeps pass between looks at the pods' directories on disk (a look reads every one of them).
const DIRECTORY_SWEEP_EVERY: u32 = 30;

/// Stops the workers of pods that vanished from the API without a graceful deletion (force deletes), every 2 s;
/// once a minute (and first), removes the files of pods that no longer exist.
async fn sweep_removed_pods(store: wasmkube_core::cache::Cache<Pod>, agent: Arc<Agent>) {
    let mut sweep = 0u32;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if store.ready().await.is_err() {
            continue;
        }
        let gone: Vec<PodWorker> = match agent.workers.lock() {
            Ok(mut workers) => {
                // Looked up under the workers' lock: a worker is made after its pod is in the cache, so a pod
                // made while we look cannot pass for gone (its worker stopped, its address given to another pod
                // while it still served on it: seen at 10,000 pods as two pods with one address).
                let uids: Vec<String> = workers
                    .iter()
                    .filter(|(uid, worker)| {
                        let pod = &worker.pod;
                        let key = ObjectRef::<Pod>::new(&pod.name_any())
                            .within(pod.namespace().as_deref().unwrap_or_default());
                        store
                            .get(&key)
                            .is_none_or(|now| now.uid().as_ref() != Some(*uid))
                    })
                    .map(|(uid, _)| uid.clone())
                    .collect();
                uids.into_iter()
                    .filter_map(|uid| workers.remove(&uid))
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        for worker in gone {
            worker.stop(Duration::from_secs(1)).await;
        }
        if sweep.is_multiple_of(DIRECTORY_SWEEP_EVERY) {
            let present = store.state().iter().filter_map(|p| p.uid()).collect();
            remove_dirs_of_deleted_pods(&agent.ctx.data_dir, &present).await;
        }
        sweep = sweep.wrapping_add(1);
    }
}

/// Removes the logs and volumes of pods that no longer exist (deleted while the agent was away, or forced).
async fn remove_dirs_of_deleted_pods(
    data_dir: &DataDir,
    present: &std::collections::HashSet<String>,
) {
    for (dir, uid) in data_dir.pod_dirs().await {
        if !present.contains(&uid)
            && let Err(error) = tokio::fs::remove_dir_all(dir.path()).await
        {
            tracing::warn!(%error, dir = %dir.path().display(), "cannot remove a deleted pod's files");
        }
    }
}
