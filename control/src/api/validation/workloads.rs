//! apps/v1 and batch/v1 kinds, as Kubernetes' `apps/validation` and `batch/validation` check them: selectors
//! against templates, replica counts, update strategies and their surge/unavailable numbers, Job and CronJob
//! enums and deadlines.

use super::{Cause, label_selector, labels, non_negative, one_of, positive, selector_is_empty};
use crate::api::selector::LabelSelector as Parsed;
use k8s_openapi::api::apps::v1::{DaemonSetSpec, DeploymentSpec, ReplicaSetSpec, StatefulSetSpec};
use k8s_openapi::api::batch::v1::{CronJobSpec, JobSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A workload's selector and pod template under `spec` (`spec`, or `spec.jobTemplate.spec`): a valid,
/// non-empty selector (when `selector_required`) that selects the template's labels, and a valid pod spec whose
/// restart policy is one of `restart_policies`.
pub fn selector_and_template(
    spec: &str,
    selector: Option<&LabelSelector>,
    selector_required: bool,
    template: &PodTemplateSpec,
    restart_policies: &[&str],
    causes: &mut Vec<Cause>,
) {
    let template_labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let selector_field = format!("{spec}.selector");
    let labels_field = format!("{spec}.template.metadata.labels");
    match selector {
        Some(selector) if !selector_is_empty(selector) => {
            let before = causes.len();
            label_selector(&selector_field, selector, causes);
            let valid = causes.len() == before;
            let parsed = serde_json::to_value(selector)
                .ok()
                .and_then(|v| Parsed::from_object(&v).ok());
            if valid && parsed.is_some_and(|p| !p.matches(&template_labels)) {
                causes.push(Cause::invalid(
                    labels_field.clone(),
                    &format!("{template_labels:?}"),
                    "`selector` does not match template `labels`",
                ));
            }
        }
        Some(_) => causes.push(Cause::invalid(
            selector_field,
            "",
            "empty selector is invalid for deployment",
        )),
        None if selector_required => causes.push(Cause::required(selector_field)),
        None => {}
    }
    causes.extend(labels(&labels_field, Some(&template_labels)));
    let spec_field = format!("{spec}.template.spec");
    match &template.spec {
        Some(pod) => {
            super::pod::pod_spec(&spec_field, pod, causes);
            if let Some(policy) = pod.restart_policy.as_deref()
                && !restart_policies.contains(&policy)
            {
                causes.push(Cause::not_supported(
                    format!("{spec_field}.restartPolicy"),
                    policy,
                    restart_policies,
                ));
            }
        }
        None => causes.push(Cause::required(spec_field)),
    }
}

const PERCENT: &str = "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  \
     or '93%', regex used for validation is '[0-9]+%')";

/// An int-or-percent of replicas (maxSurge, maxUnavailable): its value as a number or a percentage, or none
/// when invalid (the cause is recorded).
fn int_or_percent(
    field: &str,
    value: &IntOrString,
    causes: &mut Vec<Cause>,
) -> Option<(i64, bool)> {
    match value {
        IntOrString::Int(n) if *n < 0 => {
            causes.push(Cause::invalid_number(
                field,
                i64::from(*n),
                "must be greater than or equal to 0",
            ));
            None
        }
        IntOrString::Int(n) => Some((i64::from(*n), false)),
        IntOrString::String(text) => {
            match text
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            {
                Some(digits) => Some((digits.parse().unwrap_or(i64::MAX), true)),
                None => {
                    causes.push(Cause::invalid(field, text, PERCENT));
                    None
                }
            }
        }
    }
}

/// A PodDisruptionBudget's spec (policy validation): minAvailable or maxUnavailable (not both), each a
/// non-negative number or a percentage up to 100%, a valid selector, a known unhealthy pod eviction policy.
pub fn disruption_budget(spec: &PodDisruptionBudgetSpec, causes: &mut Vec<Cause>) {
    if spec.min_available.is_some() && spec.max_unavailable.is_some() {
        causes.push(Cause::invalid(
            "spec",
            "",
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for (field, value) in [
        ("spec.minAvailable", &spec.min_available),
        ("spec.maxUnavailable", &spec.max_unavailable),
    ] {
        if let Some(value) = value
            && let Some((n, true)) = int_or_percent(field, value, causes)
            && n > 100
        {
            causes.push(Cause::invalid(
                field,
                &format!("{n}%"),
                "must not be greater than 100%",
            ));
        }
    }
    if let Some(selector) = &spec.selector {
        super::label_selector("spec.selector", selector, causes);
    }
    super::one_of(
        "spec.unhealthyPodEvictionPolicy",
        spec.unhealthy_pod_eviction_policy.as_deref(),
        &["AlwaysAllow", "IfHealthyBudget"],
        causes,
    );
}

/// maxSurge and maxUnavailable of a rolling update: non-negative, unavailable at most 100%, not both 0.
fn surge_and_unavailable(
    at: &str,
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    causes: &mut Vec<Cause>,
) {
    let surge = max_surge.and_then(|v| int_or_percent(&format!("{at}.maxSurge"), v, causes));
    let unavailable_field = format!("{at}.maxUnavailable");
    let unavailable = max_unavailable.and_then(|v| int_or_percent(&unavailable_field, v, causes));
    if let Some((n, true)) = unavailable
        && n > 100
    {
        causes.push(Cause::invalid(
            unavailable_field.clone(),
            &format!("{n}%"),
            "must not be greater than 100%",
        ));
    }
    if surge.is_some_and(|(n, _)| n == 0) && unavailable.is_some_and(|(n, _)| n == 0) {
        causes.push(Cause::invalid_number(
            unavailable_field,
            0,
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

/// What every controller of long-running pods checks: its counts and its selector and template, whose pods
/// restart always and have no deadline.
fn long_running(spec: &LongRunning<'_>, causes: &mut Vec<Cause>) {
    for (field, value) in [
        ("spec.replicas", spec.replicas),
        ("spec.minReadySeconds", spec.min_ready_seconds),
        ("spec.revisionHistoryLimit", spec.revision_history_limit),
    ] {
        non_negative(field, value.map(i64::from), causes);
    }
    selector_and_template(
        "spec",
        Some(spec.selector),
        true,
        spec.template,
        &["Always"],
        causes,
    );
    no_active_deadline(spec.template, causes);
}

/// The fields `long_running` checks, as each kind has them.
struct LongRunning<'a> {
    replicas: Option<i32>,
    min_ready_seconds: Option<i32>,
    revision_history_limit: Option<i32>,
    selector: &'a LabelSelector,
    template: &'a PodTemplateSpec,
}

/// A Deployment's spec.
pub fn deployment(spec: &DeploymentSpec, causes: &mut Vec<Cause>) {
    long_running(
        &LongRunning {
            replicas: spec.replicas,
            min_ready_seconds: spec.min_ready_seconds,
            revision_history_limit: spec.revision_history_limit,
            selector: &spec.selector,
            template: &spec.template,
        },
        causes,
    );
    non_negative(
        "spec.progressDeadlineSeconds",
        spec.progress_deadline_seconds.map(i64::from),
        causes,
    );
    if let (Some(deadline), Some(ready)) = (spec.progress_deadline_seconds, spec.min_ready_seconds)
        && deadline <= ready
        && deadline >= 0
    {
        causes.push(Cause::invalid_number(
            "spec.progressDeadlineSeconds",
            i64::from(deadline),
            "must be greater than minReadySeconds",
        ));
    }
    if let Some(strategy) = &spec.strategy {
        match strategy.type_.as_deref() {
            Some("Recreate") if strategy.rolling_update.is_some() => causes.push(Cause::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            )),
            Some("Recreate") | None => {}
            Some("RollingUpdate") => {
                if let Some(rolling) = &strategy.rolling_update {
                    surge_and_unavailable(
                        "spec.strategy.rollingUpdate",
                        rolling.max_surge.as_ref(),
                        rolling.max_unavailable.as_ref(),
                        causes,
                    );
                }
            }
            Some(other) => causes.push(Cause::not_supported(
                "spec.strategy.type",
                other,
                &["Recreate", "RollingUpdate"],
            )),
        }
    }
}

/// Pods of a ReplicaSet-like controller run forever: a deadline would kill them.
fn no_active_deadline(template: &PodTemplateSpec, causes: &mut Vec<Cause>) {
    if template
        .spec
        .as_ref()
        .is_some_and(|s| s.active_deadline_seconds.is_some())
    {
        causes.push(Cause::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
}

/// A ReplicaSet's spec.
pub fn replica_set(spec: &ReplicaSetSpec, causes: &mut Vec<Cause>) {
    let template = spec.template.clone().unwrap_or_default();
    long_running(
        &LongRunning {
            replicas: spec.replicas,
            min_ready_seconds: spec.min_ready_seconds,
            revision_history_limit: None,
            selector: &spec.selector,
            template: &template,
        },
        causes,
    );
}

/// A ReplicationController's spec: a ReplicaSet's, with its selector a plain map of labels.
pub fn replication_controller(
    spec: &k8s_openapi::api::core::v1::ReplicationControllerSpec,
    causes: &mut Vec<Cause>,
) {
    let template = spec.template.clone().unwrap_or_default();
    let selector = LabelSelector {
        match_labels: spec.selector.clone(),
        ..Default::default()
    };
    long_running(
        &LongRunning {
            replicas: spec.replicas,
            min_ready_seconds: spec.min_ready_seconds,
            revision_history_limit: None,
            selector: &selector,
            template: &template,
        },
        causes,
    );
}

/// A DaemonSet's spec.
pub fn daemon_set(spec: &DaemonSetSpec, causes: &mut Vec<Cause>) {
    long_running(
        &LongRunning {
            replicas: None,
            min_ready_seconds: spec.min_ready_seconds,
            revision_history_limit: spec.revision_history_limit,
            selector: &spec.selector,
            template: &spec.template,
        },
        causes,
    );
    if let Some(strategy) = &spec.update_strategy {
        match strategy.type_.as_deref() {
            Some("RollingUpdate") => {
                if let Some(rolling) = &strategy.rolling_update {
                    surge_and_unavailable(
                        "spec.updateStrategy.rollingUpdate",
                        rolling.max_surge.as_ref(),
                        rolling.max_unavailable.as_ref(),
                        causes,
                    );
                }
            }
            Some("OnDelete") | None => {}
            Some(other) => causes.push(Cause::not_supported(
                "spec.updateStrategy.type",
                other,
                &["OnDelete", "RollingUpdate"],
            )),
        }
    }
}

/// A StatefulSet's spec.
pub fn stateful_set(spec: &StatefulSetSpec, causes: &mut Vec<Cause>) {
    // The pods get a volume per claim template: the template is valid with them (its mounts may name them).
    let mut template = spec.template.clone();
    if let Some(pod) = template.spec.as_mut() {
        let volumes = pod.volumes.get_or_insert_with(Vec::new);
        for claim in spec.volume_claim_templates.iter().flatten() {
            let name = claim.metadata.name.clone().unwrap_or_default();
            if !volumes.iter().any(|v| v.name == name) {
                volumes.push(k8s_openapi::api::core::v1::Volume {
                    persistent_volume_claim: Some(
                        k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                            claim_name: name.clone(),
                            read_only: None,
                        },
                    ),
                    name,
                    ..Default::default()
                });
            }
        }
    }
    long_running(
        &LongRunning {
            replicas: spec.replicas,
            min_ready_seconds: spec.min_ready_seconds,
            revision_history_limit: spec.revision_history_limit,
            selector: &spec.selector,
            template: &template,
        },
        causes,
    );
    one_of(
        "spec.podManagementPolicy",
        spec.pod_management_policy.as_deref(),
        &["OrderedReady", "Parallel"],
        causes,
    );
    if let Some(name) = spec.service_name.as_deref().filter(|n| !n.is_empty())
        && let Some(detail) = super::dns1123_label(name)
    {
        causes.push(Cause::invalid("spec.serviceName", name, &detail));
    }
    if let Some(policy) = &spec.persistent_volume_claim_retention_policy {
        for (field, value) in [
            ("whenDeleted", &policy.when_deleted),
            ("whenScaled", &policy.when_scaled),
        ] {
            one_of(
                &format!("spec.persistentVolumeClaimRetentionPolicy.{field}"),
                value.as_deref(),
                &["Retain", "Delete"],
                causes,
            );
        }
    }
    for (i, claim) in spec.volume_claim_templates.iter().flatten().enumerate() {
        let at = format!("spec.volumeClaimTemplates[{i}]");
        match claim.metadata.name.as_deref() {
            None | Some("") => causes.push(Cause::required(format!("{at}.metadata.name"))),
            Some(name) => {
                if let Some(detail) = super::dns1123_subdomain(name) {
                    causes.push(Cause::invalid(format!("{at}.metadata.name"), name, &detail));
                }
            }
        }
        super::storage::persistent_volume_claim(
            &format!("{at}.spec"),
            &claim.spec.clone().unwrap_or_default(),
            causes,
        );
    }
    if let Some(strategy) = &spec.update_strategy {
        match strategy.type_.as_deref() {
            Some("RollingUpdate") => {
                if let Some(rolling) = &strategy.rolling_update {
                    non_negative(
                        "spec.updateStrategy.rollingUpdate.partition",
                        rolling.partition.map(i64::from),
                        causes,
                    );
                    if let Some(value) = &rolling.max_unavailable
                        && let Some((0, _)) = int_or_percent(
                            "spec.updateStrategy.rollingUpdate.maxUnavailable",
                            value,
                            causes,
                        )
                    {
                        causes.push(Cause::invalid_number(
                            "spec.updateStrategy.rollingUpdate.maxUnavailable",
                            0,
                            "must be greater than 0",
                        ));
                    }
                }
            }
            Some("OnDelete") | None if strategy.rolling_update.is_some() => {
                causes.push(Cause::invalid(
                    "spec.updateStrategy.rollingUpdate",
                    "",
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
            Some("OnDelete") | None => {}
            Some(other) => causes.push(Cause::not_supported(
                "spec.updateStrategy.type",
                other,
                &["OnDelete", "RollingUpdate"],
            )),
        }
    }
    if let Some(policy) = &spec.persistent_volume_claim_retention_policy {
        for (name, value) in [
            ("whenDeleted", &policy.when_deleted),
            ("whenScaled", &policy.when_scaled),
        ] {
            one_of(
                &format!("spec.persistentVolumeClaimRetentionPolicy.{name}"),
                value.as_deref(),
                &["Delete", "Retain"],
                causes,
            );
        }
    }
}

/// A Job's spec.
pub fn job(spec: &JobSpec, causes: &mut Vec<Cause>) {
    job_spec("spec", spec, true, causes);
}

/// A Job's spec under `at`; a Job template (of a CronJob) has no selector yet.
fn job_spec(at: &str, spec: &JobSpec, selector_required: bool, causes: &mut Vec<Cause>) {
    selector_and_template(
        at,
        spec.selector.as_ref(),
        selector_required,
        &spec.template,
        &["Never", "OnFailure"],
        causes,
    );
    for (field, value) in [
        ("parallelism", spec.parallelism),
        ("completions", spec.completions),
        ("backoffLimit", spec.backoff_limit),
        ("ttlSecondsAfterFinished", spec.ttl_seconds_after_finished),
        ("backoffLimitPerIndex", spec.backoff_limit_per_index),
        ("maxFailedIndexes", spec.max_failed_indexes),
    ] {
        non_negative(&format!("{at}.{field}"), value.map(i64::from), causes);
    }
    positive(
        &format!("{at}.activeDeadlineSeconds"),
        spec.active_deadline_seconds,
        causes,
    );
    one_of(
        &format!("{at}.completionMode"),
        spec.completion_mode.as_deref(),
        &["Indexed", "NonIndexed"],
        causes,
    );
    one_of(
        &format!("{at}.podReplacementPolicy"),
        spec.pod_replacement_policy.as_deref(),
        &["Failed", "TerminatingOrFailed"],
        causes,
    );
    if spec.completion_mode.as_deref() == Some("Indexed") && spec.completions.is_none() {
        causes.push(Cause::required_because(
            format!("{at}.completions"),
            "when completion mode is Indexed",
        ));
    }
    if spec.backoff_limit_per_index.is_some() && spec.completion_mode.as_deref() != Some("Indexed")
    {
        causes.push(Cause::forbidden(
            format!("{at}.backoffLimitPerIndex"),
            "requires indexed completion mode",
        ));
    }
}

/// A CronJob's spec (the schedule and time zone are checked by the caller, which parses them).
pub fn cron_job(spec: &CronJobSpec, causes: &mut Vec<Cause>) {
    one_of(
        "spec.concurrencyPolicy",
        spec.concurrency_policy.as_deref(),
        &["Allow", "Forbid", "Replace"],
        causes,
    );
    non_negative(
        "spec.startingDeadlineSeconds",
        spec.starting_deadline_seconds,
        causes,
    );
    non_negative(
        "spec.successfulJobsHistoryLimit",
        spec.successful_jobs_history_limit.map(i64::from),
        causes,
    );
    non_negative(
        "spec.failedJobsHistoryLimit",
        spec.failed_jobs_history_limit.map(i64::from),
        causes,
    );
    match &spec.job_template.spec {
        Some(template) => job_spec("spec.jobTemplate.spec", template, false, causes),
        None => causes.push(Cause::required("spec.jobTemplate.spec")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment_causes(spec: serde_json::Value) -> Vec<String> {
        let spec: DeploymentSpec = serde_json::from_value(spec).unwrap();
        let mut causes = Vec::new();
        deployment(&spec, &mut causes);
        causes.iter().map(Cause::to_string).collect()
    }

    fn template() -> serde_json::Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "w.wasm"}]}})
    }

    #[test]
    fn a_selector_operator_kubernetes_does_not_know_is_invalid() {
        let causes = deployment_causes(json!({
            "selector": {"matchExpressions": [{"key": "app", "operator": "Bogus", "values": ["web"]}]},
            "template": template(),
        }));
        assert_eq!(
            causes,
            [
                "spec.selector.matchExpressions[0].operator: Invalid value: \"Bogus\": not a valid selector operator"
            ]
        );
    }

    #[test]
    fn rolling_update_numbers_follow_kubernetes_rules() {
        let causes = deployment_causes(json!({
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(),
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}},
        }));
        assert_eq!(
            causes,
            [
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"
            ]
        );
        let causes = deployment_causes(json!({
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(),
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "x%", "maxUnavailable": "150%"}},
        }));
        assert_eq!(causes.len(), 2, "{causes:?}");
        assert!(
            causes[1].ends_with("must not be greater than 100%"),
            "{causes:?}"
        );
    }
}
