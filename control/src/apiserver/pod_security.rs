//! Pod Security admission (`api::pod_security` decides): a pod that breaks its namespace's enforced level is
//! refused with 403 in Kubernetes' words; breaches of the warn level come back as warnings, for pods and for
//! the pod templates of workloads (which are never refused, as in Kubernetes); breaches of the audit level are
//! logged. A namespace's pod-security labels must name real levels and versions.

use super::ApiServer;
use super::auth::REQUESTER;
use super::error::{ApiError, qualified_kind};
use super::objects::stored_object;
use crate::api::pod_security::{self, Level, LevelVersion, Policy, Violation, forbidden_detail};
use crate::api::rbac::User;
use crate::api::resources::{self, ResourceType};
use crate::api::validation::Cause;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Where a kind keeps its pod: the pod itself, or its template.
fn pod_of<'a>(resource: &ResourceType, object: &'a Value) -> Option<&'a Value> {
    if !resource.group.is_empty() || resource.kind != "Pod" {
        return match (resource.group, resource.kind) {
            ("apps", "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet")
            | ("batch", "Job") => Some(&object["spec"]["template"]),
            ("batch", "CronJob") => Some(&object["spec"]["jobTemplate"]["spec"]["template"]),
            _ => None,
        };
    }
    Some(object)
}

fn labels_of(object: &Value) -> BTreeMap<String, String> {
    BTreeMap::deserialize(&object["metadata"]["labels"]).unwrap_or_default()
}

impl ApiServer {
    /// Pod Security admission of an object about to be written (`old` for an update): refuses a pod that
    /// breaks the enforced level, and returns the warnings to send.
    pub(super) fn admit_pod_security(
        &self,
        resource: &ResourceType,
        object: &Value,
        old: Option<&Value>,
    ) -> Result<Vec<String>, ApiError> {
        if resource.group.is_empty() && resource.kind == "Namespace" {
            check_namespace_labels(resource, object)?;
            return self.existing_pods_against_new_level(object, old);
        }
        let Some(pod) = pod_of(resource, object) else {
            return Ok(Vec::new());
        };
        // An update that leaves the pod (or template) as it was changes nothing Pod Security looks at.
        if old
            .and_then(|old| pod_of(resource, old))
            .is_some_and(|before| {
                before["spec"] == pod["spec"] && before["metadata"] == pod["metadata"]
            })
        {
            return Ok(Vec::new());
        }
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
        let config = &self.pod_security;
        let user = REQUESTER.try_with(User::clone).ok();
        if config.exempt_namespaces.iter().any(|n| n == namespace)
            || user.is_some_and(|u| config.exempt_usernames.contains(&u.name))
        {
            return Ok(Vec::new());
        }
        let namespaces = resources::by_path("", "v1", "namespaces")
            .ok_or_else(|| ApiError::Internal("namespaces are not served".into()))?;
        let labels = match self.read(namespaces, None, namespace) {
            Ok(kv) => stored_object(&kv.value)
                .map(|ns| labels_of(&ns))
                .unwrap_or_default(),
            Err(ApiError::NotFound { .. }) => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        let (policy, errors) = Policy::of_namespace(&labels, &config.defaults);
        if !errors.is_empty() {
            tracing::warn!(namespace, errors = ?errors, "pod-security labels cannot be read: restricted");
        }
        let meta = ObjectMeta::deserialize(&pod["metadata"]).unwrap_or_default();
        let Ok(spec) = PodSpec::deserialize(&pod["spec"]) else {
            return Ok(Vec::new());
        };
        let is_pod = resource.group.is_empty();
        let evaluate = |level: LevelVersion| -> Vec<Violation> {
            if level.level == Level::Privileged {
                Vec::new()
            } else {
                pod_security::check(level, &meta, &spec)
            }
        };
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        if is_pod {
            let violations = evaluate(policy.enforce);
            if !violations.is_empty() {
                return Err(ApiError::Forbidden(format!(
                    "pods {name:?} is forbidden: violates PodSecurity {:?}: {}",
                    policy.enforce.to_string(),
                    forbidden_detail(&violations)
                )));
            }
        }
        let audited = evaluate(policy.audit);
        if !audited.is_empty() {
            tracing::info!(
                namespace,
                name,
                kind = resource.kind,
                policy = %policy.audit,
                violations = %forbidden_detail(&audited),
                "would violate PodSecurity (audit)"
            );
        }
        let warned = evaluate(policy.warn);
        Ok(if warned.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "would violate PodSecurity {:?}: {}",
                policy.warn.to_string(),
                forbidden_detail(&warned)
            )]
        })
    }
}

impl ApiServer {
    /// When a namespace's enforced level changes, the warnings Kubernetes gives about the pods already there
    /// that break it: one line, then one per set of violations (`web-1 (and 2 other pods): hostPath volumes`).
    /// The pods keep running: enforcement is on admission.
    fn existing_pods_against_new_level(
        &self,
        namespace: &Value,
        old: Option<&Value>,
    ) -> Result<Vec<String>, ApiError> {
        let Some(old) = old else {
            return Ok(Vec::new());
        };
        let defaults = &self.pod_security.defaults;
        let (new_policy, _) = Policy::of_namespace(&labels_of(namespace), defaults);
        let (old_policy, _) = Policy::of_namespace(&labels_of(old), defaults);
        let name = namespace["metadata"]["name"].as_str().unwrap_or_default();
        if new_policy.enforce == old_policy.enforce
            || new_policy.enforce.level == Level::Privileged
            || self
                .pod_security
                .exempt_namespaces
                .iter()
                .any(|n| n == name)
        {
            return Ok(Vec::new());
        }
        let pods: Vec<k8s_openapi::api::core::v1::Pod> = self.list_in("pods", name)?;
        // Pods with the same violations are reported together, in the order they were listed.
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for pod in &pods {
            let Some(spec) = &pod.spec else {
                continue;
            };
            let violations = pod_security::check(new_policy.enforce, &pod.metadata, spec);
            if violations.is_empty() {
                continue;
            }
            let reasons = violations
                .iter()
                .map(|v| v.reason)
                .collect::<Vec<_>>()
                .join(", ");
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            match groups.iter_mut().find(|(r, _)| *r == reasons) {
                Some((_, names)) => names.push(pod_name),
                None => groups.push((reasons, vec![pod_name])),
            }
        }
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let mut warnings = vec![format!(
            "existing pods in namespace {name:?} violate the new PodSecurity enforce level {:?}",
            new_policy.enforce.to_string()
        )];
        for (reasons, names) in groups {
            let who = match names.len() {
                1 => names[0].clone(),
                2 => format!("{} (and 1 other pod)", names[0]),
                n => format!("{} (and {} other pods)", names[0], n - 1),
            };
            warnings.push(format!("{who}: {reasons}"));
        }
        Ok(warnings)
    }
}

/// A namespace's pod-security labels must name a level (and a version) Kubernetes knows.
fn check_namespace_labels(resource: &ResourceType, object: &Value) -> Result<(), ApiError> {
    let causes: Vec<Cause> = pod_security::label_errors(&labels_of(object))
        .into_iter()
        .map(|(key, error)| {
            let value = object["metadata"]["labels"][&key]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Cause::invalid(format!("metadata.labels[{key}]"), &value, &error)
        })
        .collect();
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid {
        kind: qualified_kind(resource),
        name: object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        causes,
    })
}
