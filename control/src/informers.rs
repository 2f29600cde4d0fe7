//! The watches the controllers and the scheduler of one process share.

use crate::cache::Informer;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::runtime::watcher;
use std::sync::OnceLock;

/// The watches the components of one process share: one per kind, however many controllers (and the scheduler,
/// when it runs in the same process) follow it (kube-controller-manager's shared informer factory). With
/// 10,000 pods, the pods are held and decoded once rather than once per component.
pub struct Informers {
    client: kube::Client,
    pods: OnceLock<Informer<Pod>>,
    nodes: OnceLock<Informer<Node>>,
}

impl Informers {
    /// Informers that start watching a kind when a component first asks for it.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            pods: OnceLock::new(),
            nodes: OnceLock::new(),
        }
    }

    /// Every pod of the cluster.
    pub fn pods(&self) -> &Informer<Pod> {
        self.pods.get_or_init(|| {
            Informer::start(Api::all(self.client.clone()), watcher::Config::default())
        })
    }

    /// Every node of the cluster.
    pub fn nodes(&self) -> &Informer<Node> {
        self.nodes.get_or_init(|| {
            Informer::start(Api::all(self.client.clone()), watcher::Config::default())
        })
    }
}
