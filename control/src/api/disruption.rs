//! Pod disruption budgets, as Kubernetes' disruption controller and eviction API count them: how many of a
//! budget's pods must stay healthy, how many are, and so how many may be evicted now.

use super::selector::LabelSelector;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// How long an evicted pod counts as disrupted (not healthy) while its deletion has not shown yet.
pub const DISRUPTION_WINDOW_SECONDS: i64 = 120;

/// A budget's numbers, as its status reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// How many pods the budget expects (its pods, or its controllers' replicas).
    pub expected_pods: i32,
    /// How many must stay healthy.
    pub desired_healthy: i32,
    /// How many are healthy: ready, not being deleted, not evicted a moment ago.
    pub current_healthy: i32,
    /// How many may be evicted now.
    pub disruptions_allowed: i32,
}

/// Whether `pod` is one of `budget`'s: in its namespace and matched by its selector (a budget without a
/// selector has no pods; an empty one has every pod of its namespace).
pub fn selects(budget: &PodDisruptionBudget, pod: &Pod) -> bool {
    if budget.metadata.namespace != pod.metadata.namespace {
        return false;
    }
    let Some(selector) = budget.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    let Ok(selector) = serde_json::to_value(selector)
        .map_err(|e| e.to_string())
        .and_then(|s| LabelSelector::from_object(&s).map_err(|e| e.to_string()))
    else {
        return false;
    };
    selector.matches(pod.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
}

/// Whether the pod is Ready.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Whether the budget needs its pods' controllers' scale (maxUnavailable, or a percentage of minAvailable).
pub fn needs_scale(budget: &PodDisruptionBudget) -> bool {
    let spec = budget.spec.clone().unwrap_or_default();
    spec.max_unavailable.is_some() || matches!(spec.min_available, Some(IntOrString::String(_)))
}

/// `value` of `total` (an integer, or a percentage rounded up), as Kubernetes scales int-or-percent.
fn scaled(value: &IntOrString, total: i32) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(text) => {
            let percent: i64 = text
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {text:?}"))?;
            let value = (percent * i64::from(total) + 99) / 100;
            i32::try_from(value).map_err(|_| format!("{text} of {total} is out of range"))
        }
    }
}

/// The budget's numbers for its `pods`, with `scale` the replicas of their controllers (needed when
/// [`needs_scale`]), `disrupted` the pods evicted at the given times, and `now` in seconds.
pub fn count(
    budget: &PodDisruptionBudget,
    pods: &[&Pod],
    scale: Option<i32>,
    disrupted: &BTreeMap<String, i64>,
    now: i64,
) -> Result<Budget, String> {
    let spec = budget.spec.clone().unwrap_or_default();
    let (expected_pods, desired_healthy) = match (&spec.max_unavailable, &spec.min_available) {
        (Some(max_unavailable), _) => {
            let expected = scale.ok_or("the pods' controllers' scale is unknown")?;
            (expected, expected - scaled(max_unavailable, expected)?)
        }
        (None, Some(IntOrString::Int(min))) => {
            (i32::try_from(pods.len()).unwrap_or(i32::MAX), *min)
        }
        (None, Some(percent)) => {
            let expected = scale.ok_or("the pods' controllers' scale is unknown")?;
            (expected, scaled(percent, expected)?)
        }
        (None, None) => (i32::try_from(pods.len()).unwrap_or(i32::MAX), 1),
    };
    let recently_evicted = |pod: &Pod| {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        disrupted
            .get(name)
            .is_some_and(|at| now - at < DISRUPTION_WINDOW_SECONDS)
    };
    let current_healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !recently_evicted(p) && is_ready(p))
        .count();
    let current_healthy = i32::try_from(current_healthy).unwrap_or(i32::MAX);
    let desired_healthy = desired_healthy.max(0);
    Ok(Budget {
        expected_pods,
        desired_healthy,
        current_healthy,
        disruptions_allowed: (current_healthy - desired_healthy).max(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    fn budget(spec: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(json!({"metadata": {"name": "b", "namespace": "ns"}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn budgets_count_as_kubernetes_does() {
        let pods = [pod("a", true), pod("b", true), pod("c", false)];
        let pods: Vec<&Pod> = pods.iter().collect();
        let none = BTreeMap::new();
        let min = budget(json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}));
        assert!(selects(&min, pods[0]));
        assert_eq!(
            count(&min, &pods, None, &none, 0).unwrap(),
            Budget {
                expected_pods: 3,
                desired_healthy: 1,
                current_healthy: 2,
                disruptions_allowed: 1
            }
        );
        let max = budget(json!({"maxUnavailable": "50%", "selector": {}}));
        assert!(needs_scale(&max));
        assert_eq!(
            count(&max, &pods, Some(3), &none, 0)
                .unwrap()
                .desired_healthy,
            1
        );
        assert!(count(&max, &pods, None, &none, 0).is_err());
        let evicted = BTreeMap::from([("a".to_owned(), 100)]);
        assert_eq!(
            count(&min, &pods, None, &evicted, 150)
                .unwrap()
                .disruptions_allowed,
            0
        );
        assert_eq!(
            count(&min, &pods, None, &evicted, 400)
                .unwrap()
                .disruptions_allowed,
            1
        );
        let no_selector = budget(json!({"minAvailable": 1}));
        assert!(!selects(&no_selector, pods[0]));
    }
}
