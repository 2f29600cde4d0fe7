//! autoscaling/v1 HorizontalPodAutoscalers, served from the stored autoscaling/v2 objects, converted as
//! Kubernetes' pkg/apis/autoscaling/v1 conversion does: v1 holds one CPU utilization target; every other
//! metric, the current metrics, the conditions and the behavior travel in annotations that a v1 client keeps
//! and sends back.
//!
//! The conversion moves only the fields the versions write differently and leaves every other field where it
//! is, so fields neither version knows are still reported (or refused) by the v2 decoding after it.

use serde_json::{Map, Value, json};

/// The metrics other than the CPU utilization target, in v1's shape.
const METRIC_SPECS: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// Every current metric, in v1's shape.
const METRIC_STATUSES: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
/// The status conditions.
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
/// The scaling behavior.
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
/// The CPU utilization target of an autoscaler that names none.
const DEFAULT_CPU_UTILIZATION: i64 = 80;

/// The stored (v2) group version.
pub const STORED_API_VERSION: &str = "autoscaling/v2";
/// The served group version.
pub const API_VERSION: &str = "autoscaling/v1";

/// A stored autoscaling/v2 HorizontalPodAutoscaler as autoscaling/v1 shows it.
pub fn to_v1(mut hpa: Value) -> Value {
    let Some(object) = hpa.as_object_mut() else {
        return hpa;
    };
    object.insert("apiVersion".into(), API_VERSION.into());
    let mut annotations = Map::new();
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        let metrics = match spec.remove("metrics") {
            Some(Value::Array(metrics)) => metrics,
            _ => Vec::new(),
        };
        let mut others = Vec::new();
        let mut cpu_target = None;
        for metric in metrics {
            match cpu_utilization(&metric, "target") {
                Some(utilization) => {
                    cpu_target.get_or_insert(utilization);
                }
                None => others.push(metric_to_v1(metric, "target")),
            }
        }
        if let Some(utilization) = cpu_target {
            spec.insert("targetCPUUtilizationPercentage".into(), utilization);
        }
        if !others.is_empty() {
            annotations.insert(METRIC_SPECS.into(), Value::Array(others).to_string().into());
        }
        if let Some(behavior) = spec.remove("behavior").filter(|b| !b.is_null()) {
            annotations.insert(BEHAVIOR.into(), behavior.to_string().into());
        }
    }
    if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
        // v1 writes both counts even when zero.
        for count in ["currentReplicas", "desiredReplicas"] {
            status.entry(count).or_insert(0.into());
        }
        let current = match status.remove("currentMetrics") {
            Some(Value::Array(current)) => current,
            _ => Vec::new(),
        };
        if let Some(utilization) = current.iter().find_map(|m| cpu_utilization(m, "current")) {
            status.insert("currentCPUUtilizationPercentage".into(), utilization);
        }
        if !current.is_empty() {
            let current: Vec<Value> = current
                .into_iter()
                .map(|m| metric_to_v1(m, "current"))
                .collect();
            annotations.insert(
                METRIC_STATUSES.into(),
                Value::Array(current).to_string().into(),
            );
        }
        match status.remove("conditions") {
            Some(Value::Array(conditions)) if !conditions.is_empty() => {
                annotations.insert(
                    CONDITIONS.into(),
                    Value::Array(conditions).to_string().into(),
                );
            }
            _ => {}
        }
    }
    if !annotations.is_empty() {
        let metadata = object
            .entry("metadata")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(metadata) = metadata {
            let kept = metadata
                .entry("annotations")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            if let Some(kept) = kept {
                kept.extend(annotations);
            }
        }
    }
    hpa
}

/// An autoscaling/v1 HorizontalPodAutoscaler as it is stored (autoscaling/v2): the CPU target and the
/// annotations' metrics, conditions and behavior become fields again, and an autoscaler with no metric gets
/// v1's implicit 80% CPU utilization. An annotation that does not hold what it should is an error naming it.
pub fn from_v1(mut hpa: Value) -> Result<Value, String> {
    let Some(object) = hpa.as_object_mut() else {
        return Ok(hpa);
    };
    object.insert("apiVersion".into(), STORED_API_VERSION.into());
    let other_metrics = take_annotation(object, METRIC_SPECS)?;
    let current_metrics = take_annotation(object, METRIC_STATUSES)?;
    let conditions = take_annotation(object, CONDITIONS)?;
    let behavior = take_annotation(object, BEHAVIOR)?;
    drop_empty_annotations(object);

    let spec = object
        .entry("spec")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or("spec must be an object")?;
    let mut metrics = match other_metrics {
        None => Vec::new(),
        Some(Value::Array(metrics)) => metrics
            .into_iter()
            .map(|m| metric_from_v1(m, "target"))
            .collect(),
        Some(_) => return Err(format!("the annotation {METRIC_SPECS} must hold a list")),
    };
    if let Some(target) = spec
        .remove("targetCPUUtilizationPercentage")
        .filter(|t| !t.is_null())
    {
        metrics.push(cpu_metric("target", target));
    }
    if metrics.is_empty() {
        metrics.push(cpu_metric("target", DEFAULT_CPU_UTILIZATION.into()));
    }
    spec.insert("metrics".into(), Value::Array(metrics));
    if let Some(behavior) = behavior {
        spec.insert("behavior".into(), behavior);
    }

    let has_status = object.get("status").is_some_and(Value::is_object);
    if has_status || current_metrics.is_some() || conditions.is_some() {
        let status = object
            .entry("status")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or("status must be an object")?;
        let cpu_current = status.remove("currentCPUUtilizationPercentage");
        match current_metrics {
            Some(Value::Array(current)) => {
                let current = current
                    .into_iter()
                    .map(|m| metric_from_v1(m, "current"))
                    .collect();
                status.insert("currentMetrics".into(), Value::Array(current));
            }
            Some(_) => return Err(format!("the annotation {METRIC_STATUSES} must hold a list")),
            None => {
                if let Some(utilization) = cpu_current.filter(|c| !c.is_null()) {
                    status.insert(
                        "currentMetrics".into(),
                        json!([cpu_metric("current", utilization)]),
                    );
                }
            }
        }
        if let Some(conditions) = conditions {
            status.insert("conditions".into(), conditions);
        }
    }
    Ok(hpa)
}

/// Takes a round-trip annotation off the object, decoded.
fn take_annotation(object: &mut Map<String, Value>, key: &str) -> Result<Option<Value>, String> {
    let annotations = object
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut);
    match annotations.and_then(|a| a.remove(key)) {
        None => Ok(None),
        Some(Value::String(text)) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("the annotation {key} does not hold valid JSON: {e}")),
        Some(_) => Err(format!("the annotation {key} is not a string")),
    }
}

/// Removes `metadata.annotations` when the conversion left it empty.
fn drop_empty_annotations(object: &mut Map<String, Value>) {
    let metadata = object.get_mut("metadata").and_then(Value::as_object_mut);
    if let Some(metadata) = metadata.filter(|m| {
        m.get("annotations")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
    }) {
        metadata.remove("annotations");
    }
}

/// A v2 Resource metric of CPU with an average utilization under `part` (`target` or `current`).
fn cpu_metric(part: &str, utilization: Value) -> Value {
    let mut value = json!({"averageUtilization": utilization});
    if part == "target" {
        value["type"] = "Utilization".into();
    }
    json!({"type": "Resource", "resource": {"name": "cpu", part: value}})
}

/// The CPU utilization of a v2 Resource metric of CPU that has one under `part`.
fn cpu_utilization(metric: &Value, part: &str) -> Option<Value> {
    let resource = metric.get("resource")?;
    if metric.get("type")? != "Resource" || resource.get("name")? != "cpu" {
        return None;
    }
    resource
        .get(part)?
        .get("averageUtilization")
        .filter(|u| !u.is_null())
        .cloned()
}

/// The metric sources, by their field in a MetricSpec or MetricStatus.
const SOURCES: [&str; 5] = [
    "resource",
    "containerResource",
    "pods",
    "object",
    "external",
];

/// Where v2 keeps a field of a metric source that v1 writes flat in the source.
#[derive(Clone, Copy)]
enum At {
    /// In the source itself.
    Source,
    /// In its `metric` (the metric's name and selector).
    Metric,
    /// In its `target` (a MetricSpec) or `current` (a MetricStatus).
    Value,
}

/// A source's fields in a MetricSpec: (v1's name, where v2 keeps it, v2's name); a MetricStatus has the same
/// ones ([`v1_name`]).
fn spec_fields(source: &str) -> &'static [(&'static str, At, &'static str)] {
    match source {
        "resource" | "containerResource" => &[
            ("name", At::Source, "name"),
            ("container", At::Source, "container"),
            ("targetAverageUtilization", At::Value, "averageUtilization"),
            ("targetAverageValue", At::Value, "averageValue"),
        ],
        "pods" => &[
            ("metricName", At::Metric, "name"),
            ("selector", At::Metric, "selector"),
            ("targetAverageValue", At::Value, "averageValue"),
        ],
        "object" => &[
            ("target", At::Source, "describedObject"),
            ("metricName", At::Metric, "name"),
            ("selector", At::Metric, "selector"),
            ("targetValue", At::Value, "value"),
            ("averageValue", At::Value, "averageValue"),
        ],
        _ => &[
            ("metricName", At::Metric, "name"),
            ("metricSelector", At::Metric, "selector"),
            ("targetValue", At::Value, "value"),
            ("targetAverageValue", At::Value, "averageValue"),
        ],
    }
}

/// v1's name of a field of a MetricSpec (`value` = `target`) or MetricStatus (`current`): a status writes
/// `current...` where a spec writes `target...`.
fn v1_name(spec_name: &str, at: At, value: &str) -> String {
    match spec_name.strip_prefix("target") {
        Some(rest) if matches!(at, At::Value) && value == "current" => format!("current{rest}"),
        _ => spec_name.to_owned(),
    }
}

/// A v2 MetricSpec (`value` = `target`) or MetricStatus (`current`) in v1's shape, as autoscaling/v2beta1
/// wrote them.
fn metric_to_v1(metric: Value, value: &str) -> Value {
    let mut out = Map::new();
    if let Some(kind) = metric.get("type") {
        out.insert("type".into(), kind.clone());
    }
    for source in SOURCES {
        let Some(part) = metric.get(source).filter(|p| p.is_object()) else {
            continue;
        };
        let mut v1 = Map::new();
        for &(spec_name, at, v2_name) in spec_fields(source) {
            let holder = match at {
                At::Source => Some(part),
                At::Metric => part.get("metric"),
                At::Value => part.get(value),
            };
            if let Some(field) = holder.and_then(|h| h.get(v2_name)).filter(|f| !f.is_null()) {
                v1.insert(v1_name(spec_name, at, value), field.clone());
            }
        }
        out.insert(source.into(), Value::Object(v1));
    }
    Value::Object(out)
}

/// A v1 MetricSpec (`value` = `target`) or MetricStatus (`current`) as v2 writes it; a target gets the type
/// its values say, as Kubernetes decides it.
fn metric_from_v1(metric: Value, value: &str) -> Value {
    let mut out = Map::new();
    if let Some(kind) = metric.get("type") {
        out.insert("type".into(), kind.clone());
    }
    for source in SOURCES {
        let Some(part) = metric.get(source).filter(|p| p.is_object()) else {
            continue;
        };
        let (mut v2, mut described, mut measured) = (Map::new(), Map::new(), Map::new());
        for &(spec_name, at, v2_name) in spec_fields(source) {
            let Some(field) = part
                .get(v1_name(spec_name, at, value))
                .filter(|f| !f.is_null())
            else {
                continue;
            };
            let holder = match at {
                At::Source => &mut v2,
                At::Metric => &mut described,
                At::Value => &mut measured,
            };
            holder.insert(v2_name.into(), field.clone());
        }
        if value == "target" {
            let has = |field: &str| measured.contains_key(field);
            let kind = match source {
                "resource" | "containerResource" if has("averageUtilization") => "Utilization",
                "object" if !has("averageValue") => "Value",
                "external" if has("value") => "Value",
                _ => "AverageValue",
            };
            measured.insert("type".into(), kind.into());
        }
        if !matches!(source, "resource" | "containerResource") {
            v2.insert("metric".into(), Value::Object(described));
        }
        v2.insert(value.into(), Value::Object(measured));
        out.insert(source.into(), Value::Object(v2));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default", "annotations": {"team": "a"}},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 10,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Pods", "pods": {"metric": {"name": "http_requests_per_second"}, "target": {"type": "AverageValue", "averageValue": "20"}}},
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
            },
            "status": {
                "currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 75, "averageValue": "75m"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "http_requests_per_second"}, "current": {"averageValue": "31"}}},
                ],
                "conditions": [{"type": "AbleToScale", "status": "True", "reason": "SucceededRescale"}],
            },
        })
    }

    #[test]
    fn v1_shows_the_cpu_target_and_keeps_the_rest_in_annotations() {
        let v1 = to_v1(stored());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(v1["spec"]["maxReplicas"], 10);
        assert!(v1["spec"].get("metrics").is_none());
        assert!(v1["spec"].get("behavior").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 75);
        assert!(v1["status"].get("conditions").is_none());
        let annotations = &v1["metadata"]["annotations"];
        assert_eq!(annotations["team"], "a");
        let others: Value =
            serde_json::from_str(annotations[METRIC_SPECS].as_str().unwrap()).unwrap();
        assert_eq!(
            others,
            json!([{"type": "Pods", "pods": {"metricName": "http_requests_per_second", "targetAverageValue": "20"}}])
        );
        let current: Value =
            serde_json::from_str(annotations[METRIC_STATUSES].as_str().unwrap()).unwrap();
        assert_eq!(
            current[0],
            json!({"type": "Resource", "resource": {"name": "cpu", "currentAverageUtilization": 75, "currentAverageValue": "75m"}})
        );
        assert!(
            annotations[CONDITIONS]
                .as_str()
                .unwrap()
                .contains("AbleToScale")
        );
        assert_eq!(
            annotations[BEHAVIOR],
            r#"{"scaleDown":{"stabilizationWindowSeconds":60}}"#
        );
    }

    #[test]
    fn what_v1_shows_converts_back_to_the_same_stored_object() {
        let back = from_v1(to_v1(stored())).unwrap();
        let mut expected = stored();
        // v1 lists the CPU target after the metrics its annotation kept, as Kubernetes does.
        let metrics = expected["spec"]["metrics"].as_array_mut().unwrap();
        metrics.rotate_left(1);
        assert_eq!(back, expected);
    }

    #[test]
    fn a_v1_autoscaler_without_a_target_gets_80_percent_cpu() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 4}});
        let stored = from_v1(v1).unwrap();
        assert_eq!(stored["apiVersion"], "autoscaling/v2");
        assert_eq!(
            stored["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}])
        );
        assert!(stored.get("status").is_none());
    }

    #[test]
    fn v1_targets_become_v2_targets_of_the_type_their_values_say() {
        let v1 = json!({"spec": {"targetCPUUtilizationPercentage": 30}, "metadata": {"annotations": {
            METRIC_SPECS: r#"[{"type":"Object","object":{"target":{"kind":"Service","name":"web"},"metricName":"hits","targetValue":"5"}},
                              {"type":"External","external":{"metricName":"queue","targetAverageValue":"2"}},
                              {"type":"Resource","resource":{"name":"memory","targetAverageValue":"64Mi"}}]"#}}});
        let stored = from_v1(v1).unwrap();
        assert!(stored["metadata"].get("annotations").is_none());
        let metrics = &stored["spec"]["metrics"];
        assert_eq!(
            metrics[0]["object"],
            json!({"describedObject": {"kind": "Service", "name": "web"}, "metric": {"name": "hits"}, "target": {"type": "Value", "value": "5"}})
        );
        assert_eq!(
            metrics[1]["external"],
            json!({"metric": {"name": "queue"}, "target": {"type": "AverageValue", "averageValue": "2"}})
        );
        assert_eq!(
            metrics[2]["resource"],
            json!({"name": "memory", "target": {"type": "AverageValue", "averageValue": "64Mi"}})
        );
        assert_eq!(metrics[3]["resource"]["target"]["averageUtilization"], 30);
    }

    #[test]
    fn a_broken_annotation_is_an_error_that_names_it() {
        let v1 = json!({"metadata": {"annotations": {METRIC_SPECS: "[{"}}});
        let error = from_v1(v1).unwrap_err();
        assert!(error.contains(METRIC_SPECS), "{error}");
        let v1 = json!({"metadata": {"annotations": {CONDITIONS: 7}}});
        assert!(from_v1(v1).unwrap_err().contains("not a string"));
    }

    #[test]
    fn fields_neither_version_knows_stay_where_they_are() {
        let v1 = json!({"spec": {"maxReplicas": 2, "maxReplicaz": 3}});
        assert_eq!(from_v1(v1).unwrap()["spec"]["maxReplicaz"], 3);
    }
}
