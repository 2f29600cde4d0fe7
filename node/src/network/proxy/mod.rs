//! Our kube-proxy, inside every node agent: a userspace load balancer listening on every Service's cluster IP
//! (and, for NodePorts, on the node's addresses), following Services and EndpointSlices through the apiserver
//! and reprogramming itself on every change, without a restart.
//!
//! Every agent listens on every cluster IP with SO_REUSEPORT, so several agents on one machine share the
//! addresses (the kernel spreads connections over them) and each agent on its own host serves them alone. A
//! machine with several agents can instead run one proxy of its own (`wasmkube proxy`, as kube-proxy; the
//! agents with `--proxy false`): an agent that is frozen then takes no share of new connections, which the
//! kernel would keep handing to its listeners. A TCP port with no endpoint is not listened on, so clients are
//! refused at once; an HTTP one answers 503.

pub mod balancer;
pub mod http;
pub mod table;
pub mod tcp;

use crate::metrics::ProxyStats;
use crate::network::services::ServiceView;
use balancer::Backends;
use futures::{FutureExt, Stream, StreamExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use table::{Behaviour, Frontend, Mode};

/// How long changes are gathered before the proxy is reprogrammed once for all of them.
const SETTLE: Duration = Duration::from_millis(20);
/// How often the proxy is checked against the view even without changes (retrying listeners that failed).
const RESYNC: Duration = Duration::from_secs(5);

/// A frontend being served: dropping it stops accepting (connections under way finish).
struct Running {
    behaviour: Behaviour,
    backends: Arc<Backends>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The frontends this node serves.
pub struct Proxy {
    node_ips: Vec<IpAddr>,
    running: HashMap<SocketAddr, Running>,
    client: http::UpstreamClient,
    /// Listen addresses that failed, so the failure is logged once.
    failed: HashMap<SocketAddr, String>,
    /// What each Service port served, for the node's metrics.
    stats: ProxyStats,
}

impl Proxy {
    /// A proxy serving NodePorts on `node_ips`, counting what it serves in `stats`.
    pub fn new(node_ips: Vec<IpAddr>, stats: ProxyStats) -> Self {
        Self {
            node_ips,
            running: HashMap::new(),
            client: http::upstream_client(),
            failed: HashMap::new(),
            stats,
        }
    }

    /// Brings the listeners and their endpoints in line with the view.
    pub fn sync(&mut self, view: &ServiceView) {
        let desired = table::frontends(&view.services(), &view.slices(), &self.node_ips);
        self.apply(desired);
    }

    fn apply(&mut self, desired: BTreeMap<SocketAddr, Frontend>) {
        let listened = |f: &Frontend| f.behaviour.mode == Mode::Http || !f.endpoints.is_empty();
        self.running.retain(|address, running| {
            desired
                .get(address)
                .is_some_and(|f| f.behaviour == running.behaviour && listened(f))
        });
        self.failed
            .retain(|address, _| desired.contains_key(address));
        let services: BTreeSet<&str> = desired
            .values()
            .map(|f| f.behaviour.service.as_str())
            .collect();
        self.stats.retain(&services);
        for (address, frontend) in desired {
            if !listened(&frontend) {
                continue;
            }
            if let Some(running) = self.running.get(&address) {
                if running.backends.addresses() != frontend.endpoints {
                    running.backends.update(&frontend.endpoints);
                    tracing::debug!(service = %frontend.behaviour.service, endpoints = frontend.endpoints.len(), "endpoints changed");
                }
                continue;
            }
            match listen(address) {
                Ok(listener) => {
                    self.failed.remove(&address);
                    let stats = self.stats.frontend(&frontend.behaviour.service);
                    let backends =
                        Backends::new(stats, frontend.behaviour.clone(), &frontend.endpoints);
                    let task = match frontend.behaviour.mode {
                        Mode::Tcp => tokio::spawn(tcp::serve(listener, backends.clone())),
                        Mode::Http => tokio::spawn(http::serve(
                            listener,
                            backends.clone(),
                            self.client.clone(),
                        )),
                    };
                    tracing::info!(service = %frontend.behaviour.service, %address, mode = ?frontend.behaviour.mode, endpoints = frontend.endpoints.len(), "serving");
                    self.running.insert(
                        address,
                        Running {
                            behaviour: frontend.behaviour,
                            backends,
                            task,
                        },
                    );
                }
                Err(error) => {
                    let error = error.to_string();
                    if self.failed.get(&address) != Some(&error) {
                        tracing::warn!(service = %frontend.behaviour.service, %address, %error, "cannot listen");
                        self.failed.insert(address, error);
                    }
                }
            }
        }
    }
}

/// The addresses a node serves NodePorts on, from its Node: its InternalIPs and its podCIDR's first address
/// (where its agent serves them too); none until it has a podCIDR.
pub fn node_port_addresses(node: &k8s_openapi::api::core::v1::Node) -> Vec<IpAddr> {
    let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) else {
        return Vec::new();
    };
    let first = crate::network::addresses::PodAddresses::new(cidr)
        .ok()
        .and_then(|a| a.node_address());
    crate::network::sandbox::internal_ips([node])
        .into_iter()
        .chain(first.map(IpAddr::from))
        .collect()
}

/// Runs a proxy of its own for the named nodes of this machine (`wasmkube proxy`) until the process ends:
/// cluster IPs, and NodePorts on those nodes' addresses once each has its podCIDR; with `metrics`, its
/// `/metrics` on that listener (kube-proxy's `--metrics-bind-address`).
pub fn run_for_nodes(
    client: kube::Client,
    nodes: &[String],
    metrics: Option<tokio::net::TcpListener>,
) -> wasmkube_core::EntryFuture<'_, ()> {
    Box::pin(proxy_for_nodes(client, nodes, metrics))
}

async fn proxy_for_nodes(
    client: kube::Client,
    nodes: &[String],
    metrics: Option<tokio::net::TcpListener>,
) {
    let stats = ProxyStats::default();
    if let Some(listener) = metrics {
        let router = crate::metrics::router(crate::metrics::Sources {
            containers: None,
            proxy: stats.clone(),
        });
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "the proxy's metrics endpoint failed");
            }
        });
    }
    let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let mut node_ips = Vec::new();
    for name in nodes {
        let mut waited = 0u32;
        loop {
            let addresses = match api.get_opt(name).await {
                Ok(found) => found.as_ref().map(node_port_addresses).unwrap_or_default(),
                Err(error) => {
                    tracing::warn!(node = %name, %error, "cannot read the node");
                    Vec::new()
                }
            };
            if !addresses.is_empty() {
                node_ips.extend(addresses);
                break;
            }
            if waited.is_multiple_of(25) {
                tracing::info!(node = %name, "waiting for the node to register and get a podCIDR");
            }
            waited += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tracing::info!(nodes = ?nodes, addresses = ?node_ips, "proxy serving");
    let (services, changes) = crate::network::services::watch(&client);
    run(Proxy::new(node_ips, stats), services, changes).await;
}

/// A listener that other agents on this machine may share.
fn listen(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

/// Runs the proxy until the process ends: reprograms it after every change of the view.
pub async fn run(mut proxy: Proxy, view: ServiceView, changes: impl Stream<Item = ()> + Send) {
    let mut changes = std::pin::pin!(changes);
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            change = changes.next() => {
                if change.is_none() {
                    return;
                }
                tokio::time::sleep(SETTLE).await;
                // Take every change that came in meanwhile.
                while let Some(Some(())) = changes.next().now_or_never() {}
            }
            _ = resync.tick() => {}
        }
        // Until both watches have listed once, the view would drop Services that exist.
        if view.is_ready() {
            proxy.sync(&view);
        }
    }
}
