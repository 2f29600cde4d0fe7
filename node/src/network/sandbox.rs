//! The network half of the Wasm sandbox: a guest may connect to pods, Services and the world, but not to the
//! cluster's machinery: the apiserver, any node's own addresses (where agents' endpoints and other host
//! services listen), the host's loopback range (127.0.0.0/8 and ::1: a host service bound to 0.0.0.0 answers
//! on every one of those addresses) other than this cluster's pod and Service addresses, link-local addresses
//! and the cloud metadata address 169.254.169.254. A pod address on this machine is a local address too, so a
//! host service bound to 0.0.0.0 answers there as well: such an address is reached only on a port where a
//! socket is bound to that very address (a pod's own listener; host services bind the wildcard). A Service
//! whose endpoints are such an address is the way to allow it: its cluster IP is not one of them, and the
//! proxy (not the guest) makes the connection.

use crate::network::local_sockets::{LocalSockets, Transport};
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::RwLock;

/// Whether an address is one of this cluster's Service addresses (from the agent's Service view).
pub type IsServiceAddress = Box<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// The addresses guests may not connect to.
pub struct Infrastructure {
    /// The apiserver's addresses and this node's.
    fixed: HashSet<IpAddr>,
    /// Every node's InternalIP, kept current from the Node objects.
    nodes: RwLock<HashSet<IpAddr>>,
    /// Every node's podCIDRs: the pod addresses a guest may reach even inside the loopback range.
    pod_networks: RwLock<Vec<IpNet>>,
    /// This node's podCIDR: local addresses even outside the loopback range.
    own_pod_network: Option<IpNet>,
    /// The Service addresses a guest may reach even inside the loopback range.
    is_service: IsServiceAddress,
    /// The sockets bound on this machine, for pod addresses that are local.
    sockets: LocalSockets,
}

impl std::fmt::Debug for Infrastructure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Infrastructure")
            .field("fixed", &self.fixed)
            .field("nodes", &self.nodes)
            .field("pod_networks", &self.pod_networks)
            .finish_non_exhaustive()
    }
}

impl Infrastructure {
    /// The fixed addresses (the apiserver's and this node's), this node's podCIDR, and how to tell a Service
    /// address.
    pub fn new(
        fixed: impl IntoIterator<Item = IpAddr>,
        own_pod_network: Option<IpNet>,
        is_service: IsServiceAddress,
    ) -> Self {
        Self {
            fixed: fixed.into_iter().map(|ip| ip.to_canonical()).collect(),
            nodes: RwLock::default(),
            pod_networks: RwLock::default(),
            own_pod_network,
            is_service,
            sockets: LocalSockets::default(),
        }
    }

    /// Replaces the nodes' addresses and pod networks, from the Node objects.
    pub fn set_nodes<'a>(
        &self,
        nodes: impl IntoIterator<Item = &'a k8s_openapi::api::core::v1::Node>,
    ) {
        let nodes: Vec<&k8s_openapi::api::core::v1::Node> = nodes.into_iter().collect();
        if let Ok(mut addresses) = self.nodes.write() {
            *addresses = internal_ips(nodes.iter().copied()).into_iter().collect();
        }
        if let Ok(mut networks) = self.pod_networks.write() {
            *networks = pod_networks(nodes.iter().copied());
        }
    }

    /// Whether a guest may connect (or send datagrams) to `address` over `transport`.
    pub fn allows(&self, address: SocketAddr, transport: Transport) -> bool {
        let ip = address.ip().to_canonical();
        if ip.is_unspecified()
            || self.fixed.contains(&ip)
            || self.nodes.read().map_or(true, |nodes| nodes.contains(&ip))
            || is_link_local(ip)
        {
            return false;
        }
        let local = ip.is_loopback() || self.own_pod_network.is_some_and(|n| n.contains(&ip));
        if !local || (self.is_service)(ip) {
            return true;
        }
        let pod = self
            .pod_networks
            .read()
            .is_ok_and(|networks| networks.iter().any(|n| n.contains(&ip)));
        pod && self
            .sockets
            .bound_exactly(SocketAddr::new(ip, address.port()), transport)
    }
}

/// 169.254.0.0/16 (with the metadata address 169.254.169.254) and fe80::/10.
fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The InternalIPs of Node objects.
pub fn internal_ips<'a>(
    nodes: impl IntoIterator<Item = &'a k8s_openapi::api::core::v1::Node>,
) -> Vec<IpAddr> {
    nodes
        .into_iter()
        .filter_map(|n| n.status.as_ref()?.addresses.as_ref())
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect()
}

/// The podCIDRs of Node objects.
fn pod_networks<'a>(
    nodes: impl IntoIterator<Item = &'a k8s_openapi::api::core::v1::Node>,
) -> Vec<IpNet> {
    nodes
        .into_iter()
        .filter_map(|n| n.spec.as_ref())
        .flat_map(|spec| {
            spec.pod_cidrs
                .iter()
                .flatten()
                .chain(spec.pod_cidr.iter())
                .filter_map(|cidr| cidr.parse::<IpNet>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};

    fn node(address: &str, pod_cidr: &str) -> Node {
        Node {
            spec: Some(NodeSpec {
                pod_cidr: Some(pod_cidr.into()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: address.into(),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn guard() -> Infrastructure {
        let service: IpAddr = "127.43.0.10".parse().unwrap();
        Infrastructure::new(
            ["10.0.0.1".parse().unwrap()],
            Some("127.42.0.0/24".parse().unwrap()),
            Box::new(move |ip| ip == service),
        )
    }

    /// Whether a guest may open a TCP connection to `ip` on a port where something listens on that very
    /// address.
    fn allows(guard: &Infrastructure, ip: &str) -> bool {
        let ip: IpAddr = ip.parse().unwrap();
        let listener = std::net::TcpListener::bind((ip.to_canonical(), 0)).ok();
        let port = listener
            .as_ref()
            .map_or(80, |l| l.local_addr().unwrap().port());
        guard.allows(SocketAddr::new(ip, port), Transport::Tcp)
    }

    #[test]
    fn guests_reach_pods_services_and_the_world_but_not_the_machinery() {
        let guard = guard();
        guard.set_nodes(&[
            node("10.0.0.2", "127.42.0.0/24"),
            node("10.0.0.3", "10.42.1.0/24"),
        ]);
        for denied in [
            "10.0.0.1",
            "10.0.0.3",
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "::",
            "::ffff:10.0.0.2",
            "::ffff:127.0.0.1",
        ] {
            assert!(!allows(&guard, denied), "{denied}");
        }
        for allowed in ["10.42.1.5", "127.42.0.7", "127.43.0.10", "93.184.216.34"] {
            assert!(allows(&guard, allowed), "{allowed}");
        }
        guard.set_nodes(&[]);
        assert!(allows(&guard, "10.0.0.3"));
        assert!(!allows(&guard, "127.42.0.7"));
    }

    #[test]
    fn a_local_pod_address_is_reached_only_where_a_socket_is_bound_to_it() {
        // A host service bound to 0.0.0.0 answers on a pod's loopback address too.
        let guard = guard();
        guard.set_nodes(&[node("10.0.0.2", "127.42.0.0/24")]);
        let host_service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = host_service.local_addr().unwrap().port();
        let pod: IpAddr = "127.42.0.9".parse().unwrap();
        assert!(!guard.allows(SocketAddr::new(pod, port), Transport::Tcp));
        let own = std::net::TcpListener::bind((pod, 0)).unwrap();
        let own_port = own.local_addr().unwrap().port();
        assert!(guard.allows(SocketAddr::new(pod, own_port), Transport::Tcp));
        assert!(!guard.allows(SocketAddr::new(pod, own_port), Transport::Udp));
        let datagrams = std::net::UdpSocket::bind((pod, 0)).unwrap();
        let udp_port = datagrams.local_addr().unwrap().port();
        assert!(guard.allows(SocketAddr::new(pod, udp_port), Transport::Udp));
    }

    #[test]
    fn loopback_addresses_that_are_no_pod_or_service_are_refused() {
        // A host service bound to 0.0.0.0 answers on every 127.x address.
        let guard = guard();
        guard.set_nodes(&[node("10.0.0.2", "127.42.0.0/24")]);
        for denied in ["127.0.0.2", "127.1.2.3", "127.43.0.11", "127.255.255.254"] {
            assert!(!allows(&guard, denied), "{denied}");
        }
    }

    #[test]
    fn link_local_and_the_metadata_address_are_refused() {
        let guard = guard();
        for denied in ["169.254.169.254", "169.254.0.1", "fe80::1"] {
            assert!(!allows(&guard, denied), "{denied}");
        }
    }
}
