//! The eviction subresource: a pod's deletion that keeps its disruption budget, as `kubectl drain` asks for
//! it. One eviction spends one of the budget's allowed disruptions (recorded in the budget's status until the
//! disruption controller sees the pod gone); none left is a 429 the client retries.

use super::*;
use crate::api::disruption;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

/// Kubernetes' words for an eviction the budget forbids.
const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

impl ApiServer {
    /// POST pods/{name}/eviction: deletes the pod if its disruption budget allows (with the Eviction's
    /// deleteOptions), answering a Success Status; a 429 when the budget allows no disruption now.
    pub async fn evict(
        &self,
        target: &Target,
        name: &str,
        eviction: Value,
        query: &Query,
    ) -> Result<Value, ApiError> {
        if let Some(named) = eviction["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            && named != name
        {
            return Err(ApiError::BadRequest(
                "name in URL does not match name in Eviction object".into(),
            ));
        }
        let deletion = Deletion::new(&eviction["deleteOptions"], query)?;
        let success = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
        for _attempt in 0..8 {
            let current = self.read(target.resource, target.namespace.as_deref(), name)?;
            let pod: Pod = decode_stored(&current.value)?;
            if !self.spend_disruption(&pod, deletion.dry_run).await? {
                continue;
            }
            self.delete(target, name, &deletion).await?;
            return Ok(success);
        }
        Err(ApiError::Conflict {
            resource: "poddisruptionbudgets.policy".into(),
            name: name.to_owned(),
            detail: "the disruption budget kept changing while the pod was evicted".into(),
        })
    }

    /// Spends one disruption of `pod`'s budget, if it needs one and has one: `Ok(true)` when the pod may go,
    /// `Ok(false)` when the budget changed meanwhile (try again), an error when it may not go.
    async fn spend_disruption(&self, pod: &Pod, dry_run: bool) -> Result<bool, ApiError> {
        // A pod that has finished, has not started, or is going anyway disrupts nothing more.
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed" | "Pending"))
            || pod.metadata.deletion_timestamp.is_some()
        {
            return Ok(true);
        }
        let budgets_resource = resources::by_path("policy", "v1", "poddisruptionbudgets")
            .ok_or_else(|| ApiError::Internal("poddisruptionbudgets are not served".into()))?;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let budgets: Vec<PodDisruptionBudget> = self.list_of(budgets_resource, Some(namespace))?;
        let mut selecting: Vec<PodDisruptionBudget> = budgets
            .into_iter()
            .filter(|b| disruption::selects(b, pod))
            .collect();
        let budget = match selecting.len() {
            0 => return Ok(true),
            1 => selecting.remove(0),
            _ => {
                return Err(ApiError::Internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
                        .into(),
                ));
            }
        };
        let budget_name = budget.metadata.name.clone().unwrap_or_default();
        let status = budget.status.clone().unwrap_or_default();
        let (allowed, current_healthy, desired_healthy) = (
            status.disruptions_allowed.unwrap_or(0),
            status.current_healthy.unwrap_or(0),
            status.desired_healthy.unwrap_or(0),
        );
        let policy = budget
            .spec
            .as_ref()
            .and_then(|s| s.unhealthy_pod_eviction_policy.as_deref())
            .unwrap_or("IfHealthyBudget");
        if !disruption::is_ready(pod)
            && (policy == "AlwaysAllow"
                || (current_healthy >= desired_healthy && desired_healthy > 0))
        {
            // An unready pod does not count as healthy: taking it away spends nothing.
            return Ok(true);
        }
        if status.observed_generation.unwrap_or(0) < budget.metadata.generation.unwrap_or(0) {
            return Err(ApiError::TooManyRequests {
                message: VIOLATION.into(),
                cause: format!(
                    "The disruption budget {budget_name} is still being processed by the server."
                ),
            });
        }
        if allowed < 0 {
            return Err(ApiError::Forbidden(format!(
                "poddisruptionbudgets.policy {budget_name:?} is forbidden: pdb disruptions allowed is negative"
            )));
        }
        if allowed == 0 {
            return Err(ApiError::TooManyRequests {
                message: VIOLATION.into(),
                cause: format!(
                    "The disruption budget {budget_name} needs {} healthy pods and has {} currently",
                    desired_healthy, current_healthy
                ),
            });
        }
        if dry_run {
            return Ok(true);
        }
        // Record the disruption for the controller, compare-and-swap on the budget as read.
        let current = self.read(budgets_resource, Some(namespace), &budget_name)?;
        let mut stored_budget = stored_object(&current.value)?;
        let seen = PodDisruptionBudget::deserialize(&stored_budget)
            .map_err(|e| ApiError::Internal(format!("stored budget {budget_name}: {e}")))?;
        if seen.status.unwrap_or_default().disruptions_allowed != Some(allowed) {
            return Ok(false);
        }
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        stored_budget["status"]["disruptionsAllowed"] = (allowed - 1).into();
        stored_budget["status"]["disruptedPods"][pod_name] = now().into();
        match self
            .store
            .put(
                current.key,
                stored(&stored_budget)?,
                Expect::Revision(current.mod_revision),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(crate::store::StoreError::Conflict { .. }) => Ok(false),
            Err(other) => Err(other.into()),
        }
    }
}
