//! Pod addresses across hosts, as flannel's host-gw backend does: the node's own podCIDR is made local (any
//! address in it can be bound, with no interface per pod), and every other node's podCIDR is routed through
//! that node's InternalIP. Nothing is done for podCIDRs in 127.0.0.0/8 (one machine: loopback is already
//! local everywhere). Needs CAP_NET_ADMIN; the routes are set with iproute2's `ip`.

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Whether pods of this range need routes (ranges outside loopback).
pub fn needs_routes(pod_cidr: &Ipv4Net) -> bool {
    !pod_cidr.addr().is_loopback()
}

/// The routes this node needs to reach the other nodes' pods: each podCIDR through its node's InternalIP.
pub fn desired(own_node: &str, nodes: &[impl AsRef<Node>]) -> BTreeMap<Ipv4Net, IpAddr> {
    nodes
        .iter()
        .map(AsRef::as_ref)
        .filter(|n| n.metadata.name.as_deref() != Some(own_node))
        .filter_map(|n| {
            let cidr: Ipv4Net = n.spec.as_ref()?.pod_cidr.as_ref()?.parse().ok()?;
            let via = n
                .status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .parse()
                .ok()?;
            needs_routes(&cidr).then_some((cidr.trunc(), via))
        })
        .collect()
}

/// Route changes failed.
#[derive(Debug, thiserror::Error)]
#[error("`ip {command}` failed: {reason}")]
pub struct RouteError {
    command: String,
    reason: String,
}

async fn ip(args: &[&str]) -> Result<(), RouteError> {
    let failed = |reason: String| RouteError {
        command: args.join(" "),
        reason,
    };
    let output = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}

/// Makes this node's podCIDR local, so its pods can bind their addresses.
pub async fn make_local(pod_cidr: &Ipv4Net) -> Result<(), RouteError> {
    ip(&[
        "route",
        "replace",
        "local",
        &pod_cidr.to_string(),
        "dev",
        "lo",
    ])
    .await
}

/// Brings the routing table from `installed` to `wanted`; returns what is installed afterwards.
pub async fn apply(
    installed: &BTreeMap<Ipv4Net, IpAddr>,
    wanted: &BTreeMap<Ipv4Net, IpAddr>,
) -> BTreeMap<Ipv4Net, IpAddr> {
    let mut now = installed.clone();
    for (cidr, via) in wanted {
        if installed.get(cidr) == Some(via) {
            continue;
        }
        match ip(&[
            "route",
            "replace",
            &cidr.to_string(),
            "via",
            &via.to_string(),
        ])
        .await
        {
            Ok(()) => {
                tracing::info!(pod_cidr = %cidr, via = %via, "route to another node's pods");
                now.insert(*cidr, *via);
            }
            Err(error) => tracing::warn!(%error, "cannot route to another node's pods"),
        }
    }
    for cidr in installed.keys().filter(|c| !wanted.contains_key(c)) {
        match ip(&["route", "del", &cidr.to_string()]).await {
            Ok(()) => {
                now.remove(cidr);
            }
            Err(error) => tracing::warn!(%error, "cannot remove a route of a node that is gone"),
        }
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cidr: Option<&str>, ip: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]}}))
        .unwrap()
    }

    #[test]
    fn every_other_nodes_pods_are_routed_through_that_node() {
        let nodes = [
            node("a", Some("10.42.0.0/24"), "10.99.0.2"),
            node("b", Some("10.42.1.0/24"), "10.99.0.3"),
            node("c", None, "10.99.0.4"),
            node("d", Some("127.42.3.0/24"), "127.0.0.1"),
        ];
        let routes = desired("a", &nodes.map(std::sync::Arc::new));
        assert_eq!(
            routes.into_iter().collect::<Vec<_>>(),
            vec![(
                "10.42.1.0/24".parse().unwrap(),
                "10.99.0.3".parse().unwrap()
            )]
        );
        assert!(needs_routes(&"10.42.0.0/24".parse().unwrap()));
        assert!(!needs_routes(&"127.42.0.0/24".parse().unwrap()));
    }
}
