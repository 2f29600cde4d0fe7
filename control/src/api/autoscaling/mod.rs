//! HorizontalPodAutoscaler (autoscaling/v2): its defaults and validation, ported from Kubernetes'
//! pkg/apis/autoscaling (v2 defaults, validation.go) with its messages.

pub mod v1;

use super::validation::{self, Cause};
use k8s_openapi::api::autoscaling::v2::{
    HPAScalingRules, HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget,
};

/// The longest stabilization window.
const MAX_STABILIZATION_WINDOW_SECONDS: i32 = 3600;
/// The longest policy period.
const MAX_PERIOD_SECONDS: i32 = 1800;

/// Kubernetes' default scale-up rules: no stabilization, the larger of +4 pods or +100% per 15 s.
fn default_scale_up() -> HPAScalingRules {
    serde_json::from_value(serde_json::json!({
        "stabilizationWindowSeconds": 0, "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]
    }))
    .unwrap_or_default()
}

/// Kubernetes' default scale-down rules: a 5-minute window, then down to any count (-100% per 15 s).
fn default_scale_down() -> HPAScalingRules {
    serde_json::from_value(serde_json::json!({
        "stabilizationWindowSeconds": 300, "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]
    }))
    .unwrap_or_default()
}

/// A behavior's rules with Kubernetes' defaults filled in where it has none (GenerateHPAScaleUpRules and
/// GenerateHPAScaleDownRules): (scale-up, scale-down).
pub fn rules_with_defaults(
    behavior: &HorizontalPodAutoscalerBehavior,
) -> (HPAScalingRules, HPAScalingRules) {
    let fill = |rules: Option<&HPAScalingRules>, defaults: HPAScalingRules| -> HPAScalingRules {
        let Some(rules) = rules else { return defaults };
        HPAScalingRules {
            stabilization_window_seconds: rules
                .stabilization_window_seconds
                .or(defaults.stabilization_window_seconds),
            select_policy: rules.select_policy.clone().or(defaults.select_policy),
            policies: rules.policies.clone().or(defaults.policies),
            tolerance: rules.tolerance.clone(),
        }
    };
    (
        fill(behavior.scale_up.as_ref(), default_scale_up()),
        fill(behavior.scale_down.as_ref(), default_scale_down()),
    )
}

/// v2's defaults: minReplicas 1, a CPU utilization target of 80% when no metric is given, and a given
/// behavior's missing rules.
pub fn defaults(spec: &mut HorizontalPodAutoscalerSpec) {
    spec.min_replicas.get_or_insert(1);
    if spec.metrics.as_ref().is_none_or(Vec::is_empty) {
        spec.metrics = serde_json::from_value(serde_json::json!([{"type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]))
        .ok();
    }
    if let Some(behavior) = &mut spec.behavior {
        let (up, down) = rules_with_defaults(behavior);
        behavior.scale_up = Some(up);
        behavior.scale_down = Some(down);
    }
}

/// validateHorizontalPodAutoscalerSpec.
pub fn validate(spec: &HorizontalPodAutoscalerSpec, causes: &mut Vec<Cause>) {
    if let Some(min) = spec.min_replicas
        && min < 1
    {
        causes.push(Cause::invalid_number(
            "spec.minReplicas",
            i64::from(min),
            "must be greater than or equal to 1",
        ));
    }
    if spec.max_replicas < 1 {
        causes.push(Cause::invalid_number(
            "spec.maxReplicas",
            i64::from(spec.max_replicas),
            "must be greater than 0",
        ));
    }
    if spec.min_replicas.is_some_and(|min| spec.max_replicas < min) {
        causes.push(Cause::invalid_number(
            "spec.maxReplicas",
            i64::from(spec.max_replicas),
            "must be greater than or equal to `minReplicas`",
        ));
    }
    let target = &spec.scale_target_ref;
    for (field, value) in [
        ("spec.scaleTargetRef.kind", &target.kind),
        ("spec.scaleTargetRef.name", &target.name),
    ] {
        if value.is_empty() {
            causes.push(Cause::required(field));
        } else if let Some(detail) = validation::path_segment_name(value) {
            causes.push(Cause::invalid(field, value, &detail));
        }
    }
    for (i, metric) in spec.metrics.iter().flatten().enumerate() {
        metric_spec(&format!("spec.metrics[{i}]"), metric, causes);
    }
    if let Some(behavior) = &spec.behavior {
        for (field, rules) in [
            ("spec.behavior.scaleUp", &behavior.scale_up),
            ("spec.behavior.scaleDown", &behavior.scale_down),
        ] {
            if let Some(rules) = rules {
                scaling_rules(field, rules, causes);
            }
        }
    }
}

const METRIC_SOURCE_TYPES: [&str; 5] = [
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];

fn metric_spec(field: &str, metric: &MetricSpec, causes: &mut Vec<Cause>) {
    if metric.type_.is_empty() {
        causes.push(Cause::required_because(
            format!("{field}.type"),
            "must specify a metric source type",
        ));
        return;
    }
    if !METRIC_SOURCE_TYPES.contains(&metric.type_.as_str()) {
        causes.push(Cause::not_supported(
            format!("{field}.type"),
            &metric.type_,
            &METRIC_SOURCE_TYPES,
        ));
        return;
    }
    let populated = match metric.type_.as_str() {
        "Resource" => metric.resource.is_some(),
        "ContainerResource" => metric.container_resource.is_some(),
        "Pods" => metric.pods.is_some(),
        "Object" => metric.object.is_some(),
        _ => metric.external.is_some(),
    };
    let child = match metric.type_.as_str() {
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        "Pods" => "pods",
        "Object" => "object",
        _ => "external",
    };
    if !populated {
        causes.push(Cause::required_because(
            format!("{field}.{child}"),
            "must populate information for the given metric source",
        ));
        return;
    }
    if let Some(resource) = &metric.resource {
        let field = format!("{field}.resource");
        if resource.name.is_empty() {
            causes.push(Cause::required_because(
                format!("{field}.name"),
                "must specify a resource name",
            ));
        }
        metric_target(&format!("{field}.target"), &resource.target, causes);
        let target = &resource.target;
        if target.average_utilization.is_none() && target.average_value.is_none() {
            causes.push(Cause::required_because(
                format!("{field}.target.averageUtilization"),
                "must set either a target raw value or a target utilization",
            ));
        }
        if target.average_utilization.is_some() && target.average_value.is_some() {
            causes.push(Cause::forbidden(
                format!("{field}.target.averageValue"),
                "may not set both a target raw value and a target utilization",
            ));
        }
    }
}

fn metric_target(field: &str, target: &MetricTarget, causes: &mut Vec<Cause>) {
    if target.type_.is_empty() {
        causes.push(Cause::required_because(
            format!("{field}.type"),
            "must specify a metric target type",
        ));
    } else if !["Utilization", "Value", "AverageValue"].contains(&target.type_.as_str()) {
        causes.push(Cause::invalid(
            format!("{field}.type"),
            &target.type_,
            "must be either Utilization, Value, or AverageValue",
        ));
    }
    for (name, value) in [
        ("value", &target.value),
        ("averageValue", &target.average_value),
    ] {
        if let Some(quantity) = value
            && wasmkube_core::quantity::milli_of(&quantity.0) <= 0
        {
            causes.push(Cause::invalid(
                format!("{field}.{name}"),
                &quantity.0,
                "must be positive",
            ));
        }
    }
    if let Some(utilization) = target.average_utilization
        && utilization < 1
    {
        causes.push(Cause::invalid_number(
            format!("{field}.averageUtilization"),
            i64::from(utilization),
            "must be greater than 0",
        ));
    }
}

fn scaling_rules(field: &str, rules: &HPAScalingRules, causes: &mut Vec<Cause>) {
    if let Some(window) = rules.stabilization_window_seconds {
        if window < 0 {
            causes.push(Cause::invalid_number(
                format!("{field}.stabilizationWindowSeconds"),
                i64::from(window),
                "must be greater than or equal to zero",
            ));
        } else if window > MAX_STABILIZATION_WINDOW_SECONDS {
            causes.push(Cause::invalid_number(
                format!("{field}.stabilizationWindowSeconds"),
                i64::from(window),
                "must be less than or equal to 3600",
            ));
        }
    }
    validation::one_of(
        &format!("{field}.selectPolicy"),
        rules.select_policy.as_deref(),
        &["Disabled", "Max", "Min"],
        causes,
    );
    let policies = rules.policies.as_deref().unwrap_or_default();
    if policies.is_empty() {
        causes.push(Cause::required_because(
            format!("{field}.policies"),
            "must specify at least one Policy",
        ));
    }
    for (i, policy) in policies.iter().enumerate() {
        let field = format!("{field}.policies[{i}]");
        validation::one_of(
            &format!("{field}.type"),
            Some(policy.type_.as_str()),
            &["Percent", "Pods"],
            causes,
        );
        if policy.value <= 0 {
            causes.push(Cause::invalid_number(
                format!("{field}.value"),
                i64::from(policy.value),
                "must be greater than zero",
            ));
        }
        if policy.period_seconds <= 0 {
            causes.push(Cause::invalid_number(
                format!("{field}.periodSeconds"),
                i64::from(policy.period_seconds),
                "must be greater than zero",
            ));
        } else if policy.period_seconds > MAX_PERIOD_SECONDS {
            causes.push(Cause::invalid_number(
                format!("{field}.periodSeconds"),
                i64::from(policy.period_seconds),
                "must be less than or equal to 1800",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> HorizontalPodAutoscalerSpec {
        serde_json::from_value(json).unwrap()
    }

    fn messages(spec: &HorizontalPodAutoscalerSpec) -> Vec<String> {
        let mut causes = Vec::new();
        validate(spec, &mut causes);
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_fill_min_replicas_a_cpu_target_and_a_partial_behavior() {
        let mut s = spec(
            serde_json::json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "maxReplicas": 5, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}),
        );
        defaults(&mut s);
        assert_eq!(s.min_replicas, Some(1));
        let metric = &s.metrics.as_ref().unwrap()[0];
        assert_eq!(
            metric.resource.as_ref().unwrap().target.average_utilization,
            Some(80)
        );
        let behavior = s.behavior.as_ref().unwrap();
        let down = behavior.scale_down.as_ref().unwrap();
        assert_eq!(down.stabilization_window_seconds, Some(0));
        assert_eq!(down.policies.as_ref().unwrap()[0].type_, "Percent");
        assert_eq!(
            behavior
                .scale_up
                .as_ref()
                .unwrap()
                .policies
                .as_ref()
                .unwrap()
                .len(),
            2
        );
        assert!(messages(&s).is_empty(), "{:?}", messages(&s));
    }

    #[test]
    fn bad_specs_get_kubernetes_messages() {
        let s = spec(
            serde_json::json!({"scaleTargetRef": {"kind": "", "name": "a/b"},
            "minReplicas": 0, "maxReplicas": 0,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 0}}},
                        {"type": "Magic"}],
            "behavior": {"scaleUp": {"stabilizationWindowSeconds": 4000, "policies": [{"type": "Pods", "value": 0, "periodSeconds": 2000}]}}}),
        );
        let got = messages(&s);
        for expected in [
            "spec.minReplicas: Invalid value: 0: must be greater than or equal to 1",
            "spec.maxReplicas: Invalid value: 0: must be greater than 0",
            "spec.scaleTargetRef.kind: Required value",
            "spec.scaleTargetRef.name: Invalid value: \"a/b\": may not contain '/'",
            "spec.metrics[0].resource.target.averageUtilization: Invalid value: 0: must be greater than 0",
            "spec.metrics[1].type: Unsupported value: \"Magic\": supported values: \"ContainerResource\", \"External\", \"Object\", \"Pods\", \"Resource\"",
            "spec.behavior.scaleUp.stabilizationWindowSeconds: Invalid value: 4000: must be less than or equal to 3600",
            "spec.behavior.scaleUp.policies[0].value: Invalid value: 0: must be greater than zero",
            "spec.behavior.scaleUp.policies[0].periodSeconds: Invalid value: 2000: must be less than or equal to 1800",
        ] {
            assert!(
                got.iter().any(|g| g == expected),
                "{expected}\nnot in {got:#?}"
            );
        }
    }
}
