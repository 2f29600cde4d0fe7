//! NodePorts: a pod that asks for host ports goes only where they are free.

use super::Reason;
use k8s_openapi::api::core::v1::Pod;
use std::collections::HashMap;

/// The host ports a pod's containers take.
pub fn host_ports(pod: &Pod) -> Vec<i32> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| p.host_port.filter(|h| *h > 0))
        .collect()
}

/// The host ports the pod asks for are free on the node (`in_use`: each port and how many pods hold it).
pub fn host_ports_free(wanted: &[i32], in_use: &HashMap<i32, usize>) -> Result<(), Reason> {
    if wanted.iter().any(|p| in_use.contains_key(p)) {
        return Err("node(s) didn't have free ports for the requested pod ports".into());
    }
    Ok(())
}
