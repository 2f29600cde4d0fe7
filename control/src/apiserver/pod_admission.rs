//! Pod creation against the namespace's LimitRanges and ResourceQuotas (`api/quota.rs` decides): defaults are
//! filled in, and a pod that breaks a bound or would take the namespace past a quota is refused with 403
//! Forbidden in Kubernetes' words. Creations of pods in namespaces with a quota are serialized in one
//! apiserver, so two pods never both take the last of it; elsewhere they stay concurrent (the store batches
//! their commits).

use super::ApiServer;
use super::error::ApiError;
use super::objects::prefix;
use crate::api::quota::{apply_limit_ranges, check_quota};
use crate::api::resources::{self, ResourceType};
use crate::store::ListRequest;
use k8s_openapi::api::core::v1::{LimitRange, Pod, ResourceQuota};
use serde::de::DeserializeOwned;
use serde_json::Value;

impl ApiServer {
    /// For a pod's creation in a namespace with a ResourceQuota: holds off other such creations until this
    /// one is stored.
    pub(super) async fn lock_pod_admission(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
    ) -> Result<Option<tokio::sync::MutexGuard<'_, ()>>, ApiError> {
        let is_pod = resource.kind == "Pod" && resource.group.is_empty();
        let Some(namespace) = namespace.filter(|_| is_pod) else {
            return Ok(None);
        };
        let quotas: Vec<Value> = self.list_in("resourcequotas", namespace)?;
        Ok(if quotas.is_empty() {
            None
        } else {
            Some(self.pod_admission.lock().await)
        })
    }

    /// The core objects of type `plural` in a namespace.
    pub(super) fn list_in<T: DeserializeOwned>(
        &self,
        plural: &str,
        namespace: &str,
    ) -> Result<Vec<T>, ApiError> {
        let resource = resources::by_path("", "v1", plural)
            .ok_or_else(|| ApiError::Internal(format!("{plural} are not served")))?;
        self.list_of(resource, Some(namespace))
    }

    /// The objects of a resource type, in one namespace or all.
    pub(super) fn list_of<T: DeserializeOwned>(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
    ) -> Result<Vec<T>, ApiError> {
        let page = self.store.list(&ListRequest {
            prefix: prefix(resource, namespace),
            ..Default::default()
        })?;
        page.items
            .iter()
            .map(|kv| {
                serde_json::from_slice(&kv.value).map_err(|e| {
                    ApiError::Internal(format!("stored {} are corrupt: {e}", resource.plural))
                })
            })
            .collect()
    }

    /// Applies LimitRange defaults to a new pod and checks it against bounds and quotas.
    pub(super) fn admit_pod_resources(
        &self,
        resource: &ResourceType,
        object: &mut Value,
    ) -> Result<(), ApiError> {
        if resource.kind != "Pod" || !resource.group.is_empty() {
            return Ok(());
        }
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let ranges: Vec<LimitRange> = self.list_in("limitranges", &namespace)?;
        let quotas: Vec<ResourceQuota> = self.list_in("resourcequotas", &namespace)?;
        // Nothing to fill in or check (the common case): leave the object as it is.
        let has_limits = ["containers", "initContainers"].iter().any(|field| {
            object["spec"][field]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["resources"]["limits"].is_object())
        });
        if ranges.is_empty() && quotas.is_empty() && !has_limits {
            return Ok(());
        }
        let mut pod: Pod = serde_json::from_value(object.clone())
            .map_err(|e| ApiError::Internal(format!("admitted Pod is malformed: {e}")))?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let forbidden =
            |message: String| ApiError::Forbidden(format!("pods {name:?} is forbidden: {message}"));
        apply_limit_ranges(&mut pod, &ranges).map_err(forbidden)?;
        // The class follows the requests and limits the LimitRanges filled in, as Kubernetes computes it after
        // its mutating admission.
        let class = crate::api::qos::QosClass::of(&pod.spec.clone().unwrap_or_default());
        pod.status.get_or_insert_with(Default::default).qos_class = Some(class.name().to_owned());
        if !quotas.is_empty() {
            let others: Vec<Pod> = self.list_in("pods", &namespace)?;
            for quota in &quotas {
                check_quota(quota, &pod, &others).map_err(forbidden)?;
            }
        }
        *object = serde_json::to_value(&pod)
            .map_err(|e| ApiError::Internal(format!("cannot encode the pod: {e}")))?;
        Ok(())
    }
}
