//! The scheduler's view of what each node already runs, kept current from the pod watch (not recomputed per
//! pod): requested resources, owners and host ports of the pods bound to every node, plus the pods this
//! scheduler placed whose binding the watch has not shown yet ("assumed"), as kube-scheduler's cache does.

use super::plugins::{self, Resources};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::watcher::Event;
use std::collections::{HashMap, HashSet};

/// What the scheduler needs to know of one placed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Its node.
    pub node: String,
    /// What it requests.
    pub requests: Resources,
    /// Its controller's uid, for spreading.
    pub owner: Option<String>,
    /// The host ports it takes.
    pub host_ports: Vec<i32>,
    /// Placed by this scheduler, not yet seen bound.
    pub assumed: bool,
}

/// One node's load.
#[derive(Debug, Clone, Default)]
pub struct NodeLoad {
    /// The sum of its pods' requests.
    pub requested: Resources,
    /// How many of its pods each owner has.
    pub owners: HashMap<String, usize>,
    /// Host ports in use.
    pub host_ports: HashSet<i32>,
}

/// Every placed pod by uid, and each node's load.
#[derive(Debug, Default)]
pub struct Cache {
    pods: HashMap<String, Placed>,
    nodes: HashMap<String, NodeLoad>,
    relisted: Option<HashSet<String>>,
}

/// What a pod holds on its node, if it is bound and not finished.
pub fn placed(pod: &Pod) -> Option<Placed> {
    let node = pod
        .spec
        .as_ref()?
        .node_name
        .clone()
        .filter(|n| !n.is_empty())?;
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    (!finished).then(|| Placed {
        node,
        requests: plugins::requests(pod),
        owner: plugins::owner(pod).map(str::to_owned),
        host_ports: plugins::host_ports(pod),
        assumed: false,
    })
}

impl Cache {
    /// One node's load (empty for a node without pods).
    pub fn load(&self, node: &str) -> NodeLoad {
        self.nodes.get(node).cloned().unwrap_or_default()
    }

    /// Takes one event of the pod watch.
    pub fn apply(&mut self, event: &Event<Pod>) {
        match event {
            Event::Init => self.relisted = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let (Some(seen), Some(uid)) = (self.relisted.as_mut(), pod.uid()) {
                    seen.insert(uid);
                }
                self.update(pod);
            }
            Event::InitDone => {
                // Pods that vanished while the watch was down; assumed ones stay until their binding answers.
                let seen = self.relisted.take().unwrap_or_default();
                let gone: Vec<String> = self
                    .pods
                    .iter()
                    .filter(|(uid, p)| !p.assumed && !seen.contains(*uid))
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in gone {
                    self.remove(&uid);
                }
            }
            Event::Apply(pod) => self.update(pod),
            Event::Delete(pod) => {
                if let Some(uid) = pod.uid() {
                    self.remove(&uid);
                }
            }
        }
    }

    fn update(&mut self, pod: &Pod) {
        let Some(uid) = pod.uid() else { return };
        match placed(pod) {
            Some(placed) => self.insert(uid, placed),
            // Not bound (yet): an assumption of ours stands until its binding is seen or fails.
            None if self.pods.get(&uid).is_some_and(|p| p.assumed) && !pod_finished(pod) => {}
            None => self.remove(&uid),
        }
    }

    /// Places a pod on a node before the watch shows its binding.
    pub fn assume(&mut self, uid: &str, placed: Placed) {
        self.insert(
            uid.to_owned(),
            Placed {
                assumed: true,
                ..placed
            },
        );
    }

    /// Drops an assumption whose binding failed.
    pub fn forget(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|p| p.assumed) {
            self.remove(uid);
        }
    }

    fn insert(&mut self, uid: String, placed: Placed) {
        self.remove(&uid);
        let load = self.nodes.entry(placed.node.clone()).or_default();
        load.requested = load.requested + placed.requests;
        if let Some(owner) = &placed.owner {
            *load.owners.entry(owner.clone()).or_default() += 1;
        }
        load.host_ports.extend(placed.host_ports.iter().copied());
        self.pods.insert(uid, placed);
    }

    fn remove(&mut self, uid: &str) {
        let Some(placed) = self.pods.remove(uid) else {
            return;
        };
        let Some(load) = self.nodes.get_mut(&placed.node) else {
            return;
        };
        load.requested = load.requested - placed.requests;
        if let Some(owner) = &placed.owner
            && let Some(count) = load.owners.get_mut(owner)
        {
            *count -= 1;
            if *count == 0 {
                load.owners.remove(owner);
            }
        }
        for port in &placed.host_ports {
            load.host_ports.remove(port);
        }
    }
}

fn pod_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, node: Option<&str>, phase: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": uid, "uid": uid,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}},
                     "ports": [{"containerPort": 80, "hostPort": 8080}]}]},
            "status": {"phase": phase}})).unwrap()
    }

    #[test]
    fn loads_follow_bindings_assumptions_and_finished_pods() {
        let mut cache = Cache::default();
        cache.apply(&Event::Apply(pod("a", Some("n1"), "Running")));
        let load = cache.load("n1");
        assert_eq!((load.requested.cpu_milli, load.requested.pods), (100, 1));
        assert_eq!(load.owners["rs"], 1);
        assert!(load.host_ports.contains(&8080));

        // An assumed pod counts at once and survives status updates that do not show the binding yet.
        cache.assume("b", placed(&pod("b", Some("n1"), "Pending")).unwrap());
        cache.apply(&Event::Apply(pod("b", None, "Pending")));
        assert_eq!(cache.load("n1").requested.pods, 2);
        cache.apply(&Event::Apply(pod("b", Some("n1"), "Running")));
        assert_eq!(
            cache.load("n1").requested.pods,
            2,
            "seen bound: counted once"
        );

        cache.apply(&Event::Apply(pod("a", Some("n1"), "Succeeded")));
        cache.forget("b");
        assert_eq!(
            cache.load("n1").requested.pods,
            1,
            "b was confirmed, so forget leaves it"
        );
        cache.apply(&Event::Delete(pod("b", Some("n1"), "Running")));
        let load = cache.load("n1");
        assert_eq!(load.requested.pods, 0);
        assert!(load.owners.is_empty() && load.host_ports.is_empty());
    }
}
