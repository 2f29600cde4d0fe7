//! Pod creation against the namespace's LimitRanges and ResourceQuotas (`api/quota.rs` decides; the
//! LimitRanger and ResourceQuota admission plugins call these): defaults are filled in, and a pod that breaks a
//! bound or would take the namespace past a quota is refused with 403 Forbidden in Kubernetes' words.

use super::ApiServer;
use super::error::ApiError;
use super::objects::{decode_stored, prefix};
use crate::api::priority::resolve_pod_priority;
use crate::api::quota::{apply_limit_ranges, check_quota};
use crate::api::resources::{self, ResourceType};
use crate::store::ListRequest;
use k8s_openapi::api::core::v1::{LimitRange, Pod, ResourceQuota};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

impl ApiServer {
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
            .map(|kv| decode_stored(&kv.value))
            .collect()
    }

    /// LimitRanger: fills in a new pod's LimitRange defaults (and requests from limits) and checks it against
    /// their bounds; the pod's QoS class follows what was filled in, as Kubernetes computes it after its
    /// mutating admission.
    pub(super) fn apply_pod_limit_ranges(&self, object: &mut Value) -> Result<(), ApiError> {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let ranges: Vec<LimitRange> = self.list_in("limitranges", &namespace)?;
        // A request left unset takes its limit even without LimitRanges; with neither, nothing changes (the
        // common case: the object stays as it is).
        let has_limits = ["containers", "initContainers"].iter().any(|field| {
            object["spec"][field]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["resources"]["limits"].is_object())
        });
        if ranges.is_empty() && !has_limits {
            return Ok(());
        }
        let mut pod = typed_pod(object)?;
        apply_limit_ranges(&mut pod, &ranges)
            .map_err(|m| forbidden(pod.metadata.name.as_deref(), m))?;
        let class = crate::api::qos::QosClass::of(&pod.spec.clone().unwrap_or_default());
        pod.status.get_or_insert_with(Default::default).qos_class = Some(class.name().to_owned());
        *object = serde_json::to_value(&pod)
            .map_err(|e| ApiError::Internal(format!("cannot encode the pod: {e}")))?;
        Ok(())
    }

    /// ResourceQuota: refuses a new pod that would take its namespace past a quota.
    pub(super) fn check_pod_quota(&self, object: &Value) -> Result<(), ApiError> {
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
        let quotas: Vec<ResourceQuota> = self.list_in("resourcequotas", namespace)?;
        if quotas.is_empty() {
            return Ok(());
        }
        let pod = typed_pod(object)?;
        let others: Vec<Pod> = self.list_in("pods", namespace)?;
        for quota in &quotas {
            check_quota(quota, &pod, &others)
                .map_err(|m| forbidden(pod.metadata.name.as_deref(), m))?;
        }
        Ok(())
    }
}

impl ApiServer {
    /// Priority admission: sets a new pod's `priorityClassName`, `priority` and `preemptionPolicy` from its
    /// class, refusing a missing class or a priority of its own.
    pub(super) fn admit_pod_priority(&self, object: &mut Value) -> Result<(), ApiError> {
        let classes: Vec<PriorityClass> = self.priority_classes()?;
        let spec = &object["spec"];
        let resolved = resolve_pod_priority(
            spec["priorityClassName"].as_str(),
            spec["priority"]
                .as_i64()
                .and_then(|p| i32::try_from(p).ok()),
            spec["preemptionPolicy"].as_str(),
            &classes,
        )
        .map_err(|message| forbidden(object["metadata"]["name"].as_str(), message))?;
        if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
            if !resolved.class_name.is_empty() {
                spec.insert("priorityClassName".into(), resolved.class_name.into());
            }
            spec.insert("priority".into(), resolved.value.into());
            spec.insert("preemptionPolicy".into(), resolved.preemption_policy.into());
        }
        Ok(())
    }

    /// DefaultStorageClass: a new claim without a class (nor the beta annotation) gets the default one's
    /// name; with no default class it stays without.
    pub(super) fn admit_default_storage_class(&self, object: &mut Value) -> Result<(), ApiError> {
        let has_class = !object["spec"]["storageClassName"].is_null()
            || !object["metadata"]["annotations"][crate::api::storage::BETA_CLASS].is_null();
        if has_class {
            return Ok(());
        }
        let resource = resources::by_path("storage.k8s.io", "v1", "storageclasses")
            .ok_or_else(|| ApiError::Internal("storageclasses are not served".into()))?;
        let classes: Vec<k8s_openapi::api::storage::v1::StorageClass> =
            self.list_of(resource, None)?;
        if let Some(name) =
            crate::api::storage::default_class(&classes).and_then(|c| c.metadata.name.clone())
            && let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
        {
            spec.insert("storageClassName".into(), name.into());
        }
        Ok(())
    }

    fn priority_classes(&self) -> Result<Vec<PriorityClass>, ApiError> {
        let resource = resources::by_path("scheduling.k8s.io", "v1", "priorityclasses")
            .ok_or_else(|| ApiError::Internal("priorityclasses are not served".into()))?;
        self.list_of(resource, None)
    }

    /// At most one PriorityClass is the global default: another one may not become it.
    pub(super) fn check_one_global_default(
        &self,
        write: &super::admission::Write<'_>,
        object: &Value,
    ) -> Result<(), ApiError> {
        let name = object["metadata"]["name"].as_str().unwrap_or(write.name);
        let other = self
            .priority_classes()?
            .into_iter()
            .find(|c| c.global_default == Some(true) && c.metadata.name.as_deref() != Some(name));
        match other {
            Some(default) => Err(ApiError::Forbidden(format!(
                "priorityclasses.scheduling.k8s.io {name:?} is forbidden: PriorityClass {} is already marked as \
                 default. Only one default can exist",
                default.metadata.name.unwrap_or_default()
            ))),
            None => Ok(()),
        }
    }
}

fn typed_pod(object: &Value) -> Result<Pod, ApiError> {
    Pod::deserialize(object)
        .map_err(|e| ApiError::Internal(format!("admitted Pod is malformed: {e}")))
}

/// Kubernetes' 403 for a pod refused by LimitRanger, Priority or ResourceQuota.
fn forbidden(name: Option<&str>, message: String) -> ApiError {
    let name = name.unwrap_or_default();
    ApiError::Forbidden(format!("pods {name:?} is forbidden: {message}"))
}
