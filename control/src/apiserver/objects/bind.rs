//! The binding subresource: the scheduler places a pod on a node.

use super::*;

impl ApiServer {
    /// POST pods/{name}/binding: assigns an unbound pod to a node.
    pub async fn bind(
        &self,
        target: &Target,
        name: &str,
        binding: Value,
    ) -> Result<Value, ApiError> {
        let node = binding["target"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Invalid {
                kind: "Binding".into(),
                name: name.to_owned(),
                causes: vec![crate::api::validation::Cause::required("target.name")],
            })?;
        let current = self.read(target.resource, target.namespace.as_deref(), name)?;
        let mut pod = served(&current.value, current.mod_revision)?;
        if let Some(bound) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::Conflict {
                resource: "pods".into(),
                name: name.to_owned(),
                detail: format!("pod {name} is already assigned to node {bound:?}"),
            });
        }
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            return Err(ApiError::Conflict {
                resource: "pods".into(),
                name: name.to_owned(),
                detail: format!("pod {name} is being deleted, cannot be assigned to a host"),
            });
        }
        if pod["spec"]["schedulingGates"]
            .as_array()
            .is_some_and(|gates| !gates.is_empty())
        {
            return Err(ApiError::Conflict {
                resource: "pods".into(),
                name: name.to_owned(),
                detail: format!("pod {name} has non-empty .spec.schedulingGates"),
            });
        }
        pod["spec"]["nodeName"] = node.into();
        let conditions = pod["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conditions: Vec<Value> = conditions
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()}));
        pod["status"]["conditions"] = Value::Array(conditions);
        let revision = self
            .store
            .put(
                current.key,
                stored(&pod)?,
                Expect::Revision(current.mod_revision),
            )
            .await
            .map_err(|e| ApiError::from_store(e, target.resource, name))?;
        tracing::debug!(pod = name, revision, "bound");
        Ok(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        )
    }
}
