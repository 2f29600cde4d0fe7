//! The network half of the Wasm sandbox: a guest may connect to pods, Services and the world, but not to the
//! cluster's machinery: the apiserver, any node's own addresses (where agents' endpoints and other host
//! services listen) and the host's loopback. A Service whose endpoints are such an address is the way to
//! allow it: its cluster IP is not one of them, and the proxy (not the guest) makes the connection.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::RwLock;

/// The addresses guests may not connect to.
#[derive(Debug)]
pub struct Infrastructure {
    /// The apiserver's addresses, this node's and the host's loopback.
    fixed: HashSet<IpAddr>,
    /// Every node's InternalIP, kept current from the Node objects.
    nodes: RwLock<HashSet<IpAddr>>,
}

impl Infrastructure {
    /// The fixed addresses: the apiserver's and this node's; the loopback and unspecified addresses are added.
    pub fn new(fixed: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut fixed: HashSet<IpAddr> = fixed.into_iter().collect();
        fixed.extend([
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ]);
        Self {
            fixed,
            nodes: RwLock::default(),
        }
    }

    /// Replaces the nodes' addresses.
    pub fn set_nodes(&self, addresses: impl IntoIterator<Item = IpAddr>) {
        if let Ok(mut nodes) = self.nodes.write() {
            *nodes = addresses.into_iter().collect();
        }
    }

    /// Whether a guest may connect to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        !self.fixed.contains(&ip) && self.nodes.read().is_ok_and(|nodes| !nodes.contains(&ip))
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
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_reach_pods_services_and_the_world_but_not_the_machinery() {
        let api: IpAddr = "10.0.0.1".parse().unwrap();
        let guard = Infrastructure::new([api]);
        guard.set_nodes(["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()]);
        for denied in [
            "10.0.0.1",
            "10.0.0.3",
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "::ffff:10.0.0.2",
        ] {
            assert!(!guard.allows(denied.parse().unwrap()), "{denied}");
        }
        for allowed in ["10.42.1.5", "127.42.0.7", "127.43.0.10", "93.184.216.34"] {
            assert!(guard.allows(allowed.parse().unwrap()), "{allowed}");
        }
        guard.set_nodes([]);
        assert!(guard.allows("10.0.0.3".parse().unwrap()));
    }
}
