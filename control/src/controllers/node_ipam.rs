//! Node IPAM: gives every Node a podCIDR, a slice of the cluster's pod range, from which its agent hands out pod
//! addresses (kube-controller-manager's `--allocate-node-cidrs`).

use super::controller_loop::ControllerLoop;
use super::{ControllerError, ControllersConfig, retry_after};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::collections::HashMap;
use std::sync::Arc;

struct Context {
    client: kube::Client,
    config: ControllersConfig,
    nodes: Store<Node>,
    /// Ranges this controller assigned that the cache may not show yet: node name → (uid, range). One lock,
    /// held across choose-and-write, so two nodes never get the same range and a node never gets two.
    assigned: tokio::sync::Mutex<HashMap<String, (String, Ipv4Net)>>,
}

/// The first `mask`-sized slice of `cluster` not in `used`.
pub fn next_free_range(cluster: Ipv4Net, mask: u8, used: &[Ipv4Net]) -> Option<Ipv4Net> {
    cluster
        .subnets(mask)
        .ok()?
        .find(|range| !used.iter().any(|u| u.contains(range) || range.contains(u)))
}

fn pod_cidr(node: &Node) -> Option<Ipv4Net> {
    node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    if pod_cidr(&node).is_some() || node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let mut assigned = ctx.assigned.lock().await;
    let nodes = ctx.nodes.state();
    // Forget our own writes once the cache shows them (or the node is gone, or is another one by that name).
    assigned.retain(|name, (uid, _)| {
        nodes
            .iter()
            .find(|n| n.name_any() == *name)
            .is_some_and(|n| pod_cidr(n).is_none() && n.uid().as_ref() == Some(uid))
    });
    // Assigned already, the cache not showing it yet: a second range would be one taken for nothing (and, in a
    // range cut in few slices, the one another node needed).
    if assigned.contains_key(&node.name_any()) {
        return Ok(Action::await_change());
    }
    let used: Vec<Ipv4Net> = nodes
        .iter()
        .filter_map(|n| pod_cidr(n))
        .chain(assigned.values().map(|(_, range)| *range))
        .collect();
    let range = next_free_range(ctx.config.cluster_cidr, ctx.config.node_cidr_mask, &used)
        .ok_or_else(|| {
            ControllerError::Exhausted(format!(
                "no free /{} range left in the cluster CIDR {} for node {}",
                ctx.config.node_cidr_mask,
                ctx.config.cluster_cidr,
                node.name_any()
            ))
        })?;
    let patch = serde_json::json!({"spec": {"podCIDR": range.to_string(), "podCIDRs": [range.to_string()]}});
    Api::<Node>::all(ctx.client.clone())
        .patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    assigned.insert(node.name_any(), (node.uid().unwrap_or_default(), range));
    tracing::info!(node = %node.name_any(), pod_cidr = %range, "assigned podCIDR");
    Ok(Action::await_change())
}

fn error_policy(node: Arc<Node>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(node = %node.name_any(), %error, "cannot assign a podCIDR");
    retry_after(error)
}

/// Runs the controller until the process ends.
pub async fn run(client: kube::Client, config: ControllersConfig) {
    let controller = ControllerLoop::new(
        "node-ipam",
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
    );
    let ctx = Arc::new(Context {
        client,
        config,
        nodes: controller.store(),
        assigned: tokio::sync::Mutex::new(HashMap::new()),
    });
    controller.run(reconcile, error_policy, ctx).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_get_the_lowest_free_slice_of_the_cluster_range() {
        let cluster: Ipv4Net = "127.42.0.0/16".parse().unwrap();
        let used: Vec<Ipv4Net> = vec![
            "127.42.0.0/24".parse().unwrap(),
            "127.42.2.0/24".parse().unwrap(),
        ];
        assert_eq!(
            next_free_range(cluster, 24, &used).unwrap().to_string(),
            "127.42.1.0/24"
        );
        let small: Ipv4Net = "127.42.0.0/23".parse().unwrap();
        assert_eq!(
            next_free_range(small, 24, &used[..1]).unwrap().to_string(),
            "127.42.1.0/24"
        );
        let full: Vec<Ipv4Net> = vec!["127.42.0.0/23".parse().unwrap()];
        assert_eq!(next_free_range(small, 24, &full), None);
        assert_eq!(next_free_range(small, 8, &[]), None);
    }
}
