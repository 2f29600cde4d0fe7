//! Where the apiserver reaches a pod's node agent, for the subresources a node serves (log, portforward, exec,
//! attach), as Kubernetes' apiserver reaches a kubelet: the Node's InternalIP and its kubelet endpoint port; and
//! which of the pod's containers a request names.

use super::ApiServer;
use super::error::ApiError;
use super::objects::served;
use crate::api::resources;
use serde_json::Value;

impl ApiServer {
    /// The node a pod is bound to and the base URL of that node's agent (`https://ADDRESS:PORT`).
    pub(super) fn agent_of(&self, pod: &Value, name: &str) -> Result<(String, String), ApiError> {
        let node_name = pod["spec"]["nodeName"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::BadRequest(format!("pod {name} does not have a host assigned"))
            })?;
        let nodes = resources::by_path("", "v1", "nodes")
            .ok_or_else(|| ApiError::Internal("nodes are not served".into()))?;
        let kv = self.read(nodes, None, node_name)?;
        let node = served(&kv.value, kv.mod_revision)?;
        let base = agent_base(&node, self.agent_scheme).ok_or_else(|| {
            ApiError::Unavailable(format!(
                "node {node_name} reports no address and port for its agent"
            ))
        })?;
        Ok((node_name.to_owned(), base))
    }
}

/// The container a request names (`requested`; none or empty: the pod's only container), among the pod's
/// containers, init containers and, with `ephemeral`, its ephemeral containers.
pub(super) fn container_of(
    pod: &Value,
    pod_name: &str,
    requested: Option<&str>,
    ephemeral: bool,
) -> Result<String, ApiError> {
    let names = |field: &str| -> Vec<&str> {
        pod["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect()
    };
    let containers = names("containers");
    let mut others = names("initContainers");
    if ephemeral {
        others.extend(names("ephemeralContainers"));
    }
    match (requested.filter(|c| !c.is_empty()), containers.as_slice()) {
        (Some(c), _) if containers.contains(&c) || others.contains(&c) => Ok(c.to_owned()),
        (Some(c), _) => Err(ApiError::BadRequest(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        (None, [only]) => Ok((*only).to_owned()),
        (None, many) => Err(ApiError::BadRequest(format!(
            "a container name must be specified for pod {pod_name}, choose one of: [{}]",
            many.join(" ")
        ))),
    }
}

/// `SCHEME://ADDRESS:PORT` of a Node's agent, from its status.
pub(super) fn agent_base(node: &Value, scheme: &str) -> Option<String> {
    let address = node["status"]["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_i64()
        .filter(|p| *p > 0)?;
    Some(format!("{scheme}://{address}:{port}"))
}
