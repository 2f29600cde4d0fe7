//! The controller-manager: level-triggered reconcile loops over the API. Each controller is a small reconcile
//! function run by kube-runtime's Controller (watch → deduplicating queue → reconcile → retry), talking to the
//! rest of the cluster only through the apiserver.

pub mod node_ipam;

use futures::{Stream, StreamExt};
use ipnet::Ipv4Net;
use kube::runtime::controller::Action;
use std::time::Duration;

/// The controllers' settings.
#[derive(Debug, Clone)]
pub struct ControllersConfig {
    /// The range every pod address comes from; each node gets a slice of it as its podCIDR.
    pub cluster_cidr: Ipv4Net,
    /// The prefix length of each node's podCIDR (24: 254 addresses a node).
    pub node_cidr_mask: u8,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        Self {
            cluster_cidr: Ipv4Net::new(std::net::Ipv4Addr::new(127, 42, 0, 0), 16)
                .unwrap_or_default(),
            node_cidr_mask: 24,
        }
    }
}

/// Why one reconcile failed; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The apiserver refused or could not be reached.
    #[error("apiserver request failed: {0}")]
    Api(#[from] kube::Error),
    /// The cache has not synced yet.
    #[error("the cache is not ready yet")]
    NotReady,
    /// A resource (addresses, names) ran out.
    #[error("{0}")]
    Exhausted(String),
}

/// Runs every controller until the process ends.
pub async fn run(client: kube::Client, config: ControllersConfig) {
    tracing::info!("controllers running");
    node_ipam::run(client, config).await;
}

/// How soon a failed reconcile is tried again: conflicts (someone else wrote first) at once, others after a
/// pause.
fn retry_after(error: &ControllerError) -> Action {
    match error {
        ControllerError::Api(kube::Error::Api(e)) if e.code == 409 => {
            Action::requeue(Duration::from_millis(50))
        }
        _ => Action::requeue(Duration::from_secs(1)),
    }
}

/// Drives a controller's output, logging what failed (the retry is already queued by its error policy).
async fn drive<T, E: std::fmt::Display>(
    name: &'static str,
    results: impl Stream<Item = Result<T, E>>,
) {
    results
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(controller = name, %error, "reconcile failed");
            }
        })
        .await;
}
