//! From the metrics' recommendation to the replicas the autoscaler sets, as kube-controller-manager normalizes
//! it: stabilization (the highest recommendation of the scale-down window, the lowest of the scale-up window),
//! the behavior's rate policies over the scale events of each policy's period, then minReplicas/maxReplicas.
//! An HPA without `behavior` gets Kubernetes' older rules: a 5-minute scale-down window and at most
//! max(2 x current, 4) replicas on the way up.

use crate::api::autoscaling::rules_with_defaults;
use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

/// One recommendation, or one change of scale, at a moment (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    /// Replicas recommended, or replicas added (removed) by a scale event.
    pub value: i32,
    /// When.
    pub at: i64,
}

/// What the autoscaler remembers of one HPA between its runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Its recent recommendations.
    pub recommendations: Vec<Timed>,
    /// Replicas it added, and when.
    pub scale_ups: Vec<Timed>,
    /// Replicas it removed, and when.
    pub scale_downs: Vec<Timed>,
}

/// Why the result is not what the metrics asked for (the ScalingLimited condition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Within every limit.
    None,
    /// Held at minReplicas.
    TooFewReplicas,
    /// Held at maxReplicas.
    TooManyReplicas,
    /// Held by the scale-up rate.
    ScaleUpLimit,
    /// Held by the scale-down rate.
    ScaleDownLimit,
}

/// The scale-down stabilization window of an HPA without behavior
/// (`--horizontal-pod-autoscaler-downscale-stabilization`).
const DOWNSCALE_STABILIZATION: i64 = 300;

/// The sum of the changes within `period` seconds before `now`.
fn changed_within(events: &[Timed], period: i32, now: i64) -> i32 {
    events
        .iter()
        .filter(|e| e.at > now - i64::from(period))
        .fold(0i32, |sum, e| sum.saturating_add(e.value))
}

/// The most replicas the scale-up rules allow now.
fn scale_up_limit(current: i32, events: &[Timed], rules: &HPAScalingRules, now: i64) -> i32 {
    let select = rules.select_policy.as_deref().unwrap_or("Max");
    if select == "Disabled" {
        return current;
    }
    let proposals = rules.policies.iter().flatten().map(|policy| {
        let start = current.saturating_sub(changed_within(events, policy.period_seconds, now));
        match policy.type_.as_str() {
            "Pods" => start.saturating_add(policy.value),
            _ => (f64::from(start) * (1.0 + f64::from(policy.value) / 100.0)).ceil() as i32,
        }
    });
    let limit = if select == "Min" {
        proposals.min()
    } else {
        proposals.max()
    };
    limit.unwrap_or(current).max(current)
}

/// The fewest replicas the scale-down rules allow now.
fn scale_down_limit(current: i32, events: &[Timed], rules: &HPAScalingRules, now: i64) -> i32 {
    let select = rules.select_policy.as_deref().unwrap_or("Max");
    if select == "Disabled" {
        return current;
    }
    let proposals = rules.policies.iter().flatten().map(|policy| {
        let start = current.saturating_add(changed_within(events, policy.period_seconds, now));
        match policy.type_.as_str() {
            "Pods" => start.saturating_sub(policy.value),
            _ => (f64::from(start) * (1.0 - f64::from(policy.value) / 100.0)) as i32,
        }
    });
    // "Max" selects the policy allowing the largest change: the fewest replicas.
    let limit = if select == "Min" {
        proposals.max()
    } else {
        proposals.min()
    };
    limit.unwrap_or(current).min(current)
}

/// Keeps `desired` as this run's recommendation and drops those older than `keep` seconds.
fn remember(history: &mut History, desired: i32, keep: i64, now: i64) {
    history.recommendations.retain(|r| r.at > now - keep);
    history.recommendations.push(Timed {
        value: desired,
        at: now,
    });
}

/// The replicas to set for `desired` (the metrics' recommendation), from `current`, within `min..=max`, with
/// the HPA's `behavior` (none: the older rules); updates the history's recommendations.
pub fn normalize(
    current: i32,
    desired: i32,
    (min, max): (i32, i32),
    behavior: Option<&HorizontalPodAutoscalerBehavior>,
    history: &mut History,
    now: i64,
) -> (i32, Limit) {
    let Some(behavior) = behavior else {
        // Stabilize: the highest recommendation of the last 5 minutes.
        let stabilized = history
            .recommendations
            .iter()
            .filter(|r| r.at > now - DOWNSCALE_STABILIZATION)
            .map(|r| r.value)
            .fold(desired, i32::max);
        remember(history, desired, DOWNSCALE_STABILIZATION, now);
        let up_limit = (current.saturating_mul(2)).max(4);
        let (ceiling, ceiling_reason) = if max > up_limit {
            (up_limit, Limit::ScaleUpLimit)
        } else {
            (max, Limit::TooManyReplicas)
        };
        return if stabilized < min {
            (min, Limit::TooFewReplicas)
        } else if stabilized > ceiling {
            (ceiling, ceiling_reason)
        } else {
            (stabilized, Limit::None)
        };
    };
    let (up, down) = rules_with_defaults(behavior);
    let up_window = i64::from(up.stabilization_window_seconds.unwrap_or(0));
    let down_window = i64::from(down.stabilization_window_seconds.unwrap_or(0));
    let mut up_recommendation = desired;
    let mut down_recommendation = desired;
    for r in &history.recommendations {
        if r.at > now - up_window {
            up_recommendation = up_recommendation.min(r.value);
        }
        if r.at > now - down_window {
            down_recommendation = down_recommendation.max(r.value);
        }
    }
    remember(history, desired, up_window.max(down_window), now);
    let stabilized = current.max(up_recommendation).min(down_recommendation);
    if stabilized > current {
        let limit = scale_up_limit(current, &history.scale_ups, &up, now);
        let (allowed, reason) = if max > limit {
            (limit, Limit::ScaleUpLimit)
        } else {
            (max, Limit::TooManyReplicas)
        };
        if stabilized > allowed {
            return (allowed, reason);
        }
    } else if stabilized < current {
        let limit = scale_down_limit(current, &history.scale_downs, &down, now);
        let (allowed, reason) = if min < limit {
            (limit, Limit::ScaleDownLimit)
        } else {
            (min, Limit::TooFewReplicas)
        };
        if stabilized < allowed {
            return (allowed, reason);
        }
    }
    (stabilized.clamp(min, max.max(min)), Limit::None)
}

/// Notes a change of scale from `from` to `to` at `now`, forgetting events older than any policy's period.
pub fn record_scale(history: &mut History, from: i32, to: i32, now: i64) {
    let keep = 1800;
    history.scale_ups.retain(|e| e.at > now - keep);
    history.scale_downs.retain(|e| e.at > now - keep);
    if to > from {
        history.scale_ups.push(Timed {
            value: to.saturating_sub(from),
            at: now,
        });
    } else if to < from {
        history.scale_downs.push(Timed {
            value: from.saturating_sub(to),
            at: now,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn behavior(json: serde_json::Value) -> HorizontalPodAutoscalerBehavior {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn default_behavior_doubles_or_adds_four_per_period_and_waits_five_minutes_to_scale_down() {
        let defaults = behavior(serde_json::json!({}));
        let mut history = History::default();
        // From 2, asking for 20: +100% gives 4, +4 pods gives 6; the larger wins.
        assert_eq!(
            normalize(2, 20, (1, 50), Some(&defaults), &mut history, 1000),
            (6, Limit::ScaleUpLimit)
        );
        record_scale(&mut history, 2, 6, 1000);
        // 10 s later the same period still counts those 4: from a start of 2 again.
        assert_eq!(
            normalize(6, 20, (1, 50), Some(&defaults), &mut history, 1010),
            (6, Limit::ScaleUpLimit)
        );
        // After the 15 s period: 6 doubles to 12.
        assert_eq!(
            normalize(6, 20, (1, 50), Some(&defaults), &mut history, 1016),
            (12, Limit::ScaleUpLimit)
        );
        // Load gone: the last 5 minutes asked for 20, so nothing goes down yet...
        assert_eq!(
            normalize(12, 1, (1, 50), Some(&defaults), &mut history, 1100),
            (12, Limit::None)
        );
        // ...until those recommendations are older than the window.
        assert_eq!(
            normalize(12, 1, (1, 50), Some(&defaults), &mut history, 1401),
            (1, Limit::None)
        );
    }

    #[test]
    fn policies_windows_and_bounds_as_written() {
        // No stabilization, at most one pod down per minute.
        let slow_down = behavior(
            serde_json::json!({"scaleDown": {"stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}),
        );
        let mut history = History::default();
        assert_eq!(
            normalize(5, 1, (1, 10), Some(&slow_down), &mut history, 0),
            (4, Limit::ScaleDownLimit)
        );
        record_scale(&mut history, 5, 4, 0);
        assert_eq!(
            normalize(4, 1, (1, 10), Some(&slow_down), &mut history, 30),
            (4, Limit::ScaleDownLimit)
        );
        // maxReplicas holds a scale-up the rules would allow.
        assert_eq!(
            normalize(4, 30, (1, 6), Some(&slow_down), &mut history, 30),
            (6, Limit::TooManyReplicas)
        );
        // Disabled scale-down keeps the count.
        let never_down = behavior(serde_json::json!({"scaleDown": {"selectPolicy": "Disabled"}}));
        assert_eq!(
            normalize(4, 1, (1, 6), Some(&never_down), &mut History::default(), 0),
            (4, Limit::ScaleDownLimit)
        );
    }

    #[test]
    fn without_behavior_the_older_rules_apply() {
        let mut history = History::default();
        // At most max(2 x 3, 4) = 6 on the way up.
        assert_eq!(
            normalize(3, 20, (1, 10), None, &mut history, 0),
            (6, Limit::ScaleUpLimit)
        );
        // The window's highest recommendation (20) still stands: up to maxReplicas, within max(2 x 6, 4).
        assert_eq!(
            normalize(6, 0, (2, 10), None, &mut history, 100),
            (10, Limit::TooManyReplicas)
        );
        // Down only once the higher recommendations are 5 minutes old; then minReplicas holds it.
        assert_eq!(
            normalize(6, 0, (2, 10), None, &mut history, 401),
            (2, Limit::TooFewReplicas)
        );
    }
}
