//! The arithmetic of Deployment rollouts, pure: pod-template-hash, maxSurge/maxUnavailable, how far the new
//! ReplicaSet grows and the old ones shrink in one step, and the Deployment's status and conditions. It follows
//! `pkg/controller/deployment` of Kubernetes, rule for rule.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label that ties a ReplicaSet and its pods to one template of a Deployment.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The annotation with a ReplicaSet's (and its Deployment's) revision.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas plus maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";

/// The pod-template-hash of a template: FNV-1a over its JSON (with the collision count), written with
/// Kubernetes' "safe" alphabet, so names never spell words or look like numbers.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(
        serde_json::to_string(template)
            .unwrap_or_default()
            .as_bytes(),
    );
    if let Some(count) = collision_count {
        feed(&count.to_le_bytes());
    }
    hash.to_string()
        .bytes()
        .map(|digit| char::from(ALPHABET[usize::from(digit) % ALPHABET.len()]))
        .collect()
}

/// A template without its pod-template-hash label, for comparing a ReplicaSet's template with its Deployment's.
pub fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut template = template.clone();
    if let Some(meta) = template.metadata.as_mut()
        && let Some(labels) = meta.labels.as_mut()
    {
        labels.remove(TEMPLATE_HASH_LABEL);
        if labels.is_empty() {
            meta.labels = None;
        }
    }
    template
}

/// Resolves an int-or-percent against `total`: percentages round up for surge and down for unavailability.
pub fn scaled_value(value: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match value {
        None => 0,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(text)) => {
            let percent: f64 = text.trim_end_matches('%').parse().unwrap_or(0.0);
            let exact = percent * f64::from(total) / 100.0;
            (if round_up {
                exact.ceil()
            } else {
                exact.floor()
            }) as i32
        }
    }
}

/// maxSurge and maxUnavailable as pod counts for a Deployment. Both zero would never progress, so
/// unavailability is then 1 (e.g. 10 replicas, 25%/25%: surge 3, unavailable 2).
pub fn surge_and_unavailable(deployment: &Deployment) -> (i32, i32) {
    let replicas = deployment.spec.replicas.unwrap_or(1);
    let rolling = deployment
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let surge = scaled_value(rolling.and_then(|r| r.max_surge.as_ref()), replicas, true);
    let unavailable = scaled_value(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
        false,
    );
    let unavailable = unavailable.min(replicas);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// A ReplicaSet's desired replicas.
pub fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(0)
}

/// A ReplicaSet's available replicas as far as a rollout may count on them: a ReplicaSet whose status is behind
/// its spec (just scaled down) will have at most `spec.replicas` left, whatever its status still says.
pub fn available_replicas(rs: &ReplicaSet) -> i32 {
    let status = rs.status.as_ref();
    let available = status.and_then(|s| s.available_replicas).unwrap_or(0);
    let observed = status.and_then(|s| s.observed_generation).unwrap_or(0);
    if observed < rs.metadata.generation.unwrap_or(0) {
        available.min(spec_replicas(rs))
    } else {
        available
    }
}

/// The new ReplicaSet's replicas for this step of a rolling update: grow into the room maxSurge leaves (10
/// replicas, surge 3, 12 pods in all: room for 1 more), never past the Deployment's replicas.
pub fn new_replicas_rolling(desired: i32, surge: i32, all_replicas: i32, new_replicas: i32) -> i32 {
    if new_replicas >= desired {
        return desired;
    }
    let max_total = desired + surge;
    if all_replicas >= max_total {
        return new_replicas;
    }
    new_replicas + (max_total - all_replicas).min(desired - new_replicas)
}

/// An old ReplicaSet as the scale-down arithmetic sees it, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldReplicaSet {
    /// Its name.
    pub name: String,
    /// spec.replicas.
    pub replicas: i32,
    /// Available replicas.
    pub available: i32,
}

/// How far the old ReplicaSets shrink in this step of a rolling update, as (name, new replicas) for those that
/// change. First the unhealthy pods go (they do not count toward availability), then healthy ones as far as
/// `desired - max_unavailable` stay available. Worked example: 10 replicas, unavailable 2, an old set of 10 all
/// available and a new set of 3 none available: 13 pods, at least 8 must stay available, 3 new ones are not:
/// 13 - 8 - 3 = 2 may go.
pub fn old_scale_down(
    olds: &[OldReplicaSet],
    desired: i32,
    max_unavailable: i32,
    new_replicas: i32,
    new_available: i32,
) -> Vec<(String, i32)> {
    let all: i32 = olds.iter().map(|o| o.replicas).sum::<i32>() + new_replicas;
    let min_available = desired - max_unavailable;
    let new_unavailable = new_replicas - new_available;
    let max_scaled_down = all - min_available - new_unavailable;
    if olds.iter().all(|o| o.replicas == 0) || max_scaled_down <= 0 {
        return Vec::new();
    }
    let mut scaled = olds.to_vec();
    let mut cleaned = 0;
    for old in &mut scaled {
        if cleaned >= max_scaled_down {
            break;
        }
        if old.replicas == 0 || old.replicas == old.available {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(old.replicas - old.available);
        old.replicas -= down;
        cleaned += down;
    }
    let available: i32 = scaled
        .iter()
        .map(|o| o.available.min(o.replicas))
        .sum::<i32>()
        + new_available;
    let mut budget = (available - min_available).max(0);
    for old in &mut scaled {
        if budget == 0 {
            break;
        }
        let down = old.replicas.min(budget);
        old.replicas -= down;
        budget -= down;
    }
    scaled
        .into_iter()
        .zip(olds)
        .filter(|(after, before)| after.replicas != before.replicas)
        .map(|(after, _)| (after.name, after.replicas))
        .collect()
}

/// What this sync did to the rollout, for the Progressing condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// It created the new ReplicaSet.
    Created,
    /// It found the new ReplicaSet already there.
    Found,
}

/// The Deployment's status for its ReplicaSets (`new` is among `all`), with Available and Progressing
/// conditions as Kubernetes writes them.
pub fn status(
    deployment: &Deployment,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    step: Step,
    now: jiff::Timestamp,
) -> DeploymentStatus {
    let desired = deployment.spec.replicas.unwrap_or(1);
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| all.iter().map(|rs| f(rs)).sum::<i32>();
    let counted = |rs: &ReplicaSet| rs.status.as_ref().map_or(0, |s| s.replicas);
    let ready = |rs: &ReplicaSet| {
        rs.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    };
    let available = |rs: &ReplicaSet| {
        rs.status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0)
    };
    let previous = deployment.status.as_ref();
    let mut next = DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: Some(sum(&counted)),
        updated_replicas: Some(new.map_or(0, counted)),
        ready_replicas: Some(sum(&ready)),
        available_replicas: Some(sum(&available)),
        unavailable_replicas: Some((desired - sum(&available)).max(0)),
        collision_count: previous.and_then(|p| p.collision_count),
        terminating_replicas: None,
        conditions: None,
    };
    let (_, max_unavailable) = surge_and_unavailable(deployment);
    let mut conditions: Vec<DeploymentCondition> = previous
        .and_then(|p| p.conditions.clone())
        .unwrap_or_default();
    let minimum = next.available_replicas.unwrap_or(0) >= desired - max_unavailable;
    set_condition(
        &mut conditions,
        "Available",
        if minimum { "True" } else { "False" },
        if minimum {
            (
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        } else {
            (
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        },
        now,
        false,
    );
    let name = new
        .map(|rs| rs.metadata.name.clone().unwrap_or_default())
        .unwrap_or_default();
    let complete = next.updated_replicas == Some(desired)
        && next.replicas == Some(desired)
        && next.available_replicas == Some(desired);
    let paused = deployment.spec.paused == Some(true);
    let moved = previous.is_none_or(|p| {
        p.updated_replicas < next.updated_replicas
            || p.ready_replicas < next.ready_replicas
            || p.available_replicas < next.available_replicas
            || p.replicas.unwrap_or(0) - p.updated_replicas.unwrap_or(0)
                > next.replicas.unwrap_or(0) - next.updated_replicas.unwrap_or(0)
    });
    let progressing = conditions
        .iter()
        .find(|c| c.type_.as_deref() == Some("Progressing"))
        .cloned();
    let deadline = i64::from(deployment.spec.progress_deadline_seconds.unwrap_or(600));
    if complete && new.is_some() {
        let message = format!("ReplicaSet \"{name}\" has successfully progressed.");
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            ("NewReplicaSetAvailable", &message),
            now,
            false,
        );
    } else if paused {
        set_condition(
            &mut conditions,
            "Progressing",
            "Unknown",
            ("DeploymentPaused", "Deployment is paused"),
            now,
            false,
        );
    } else if step == Step::Created {
        let message = format!("Created new replica set \"{name}\"");
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            ("NewReplicaSetCreated", &message),
            now,
            false,
        );
    } else if moved
        || progressing.as_ref().is_none_or(|c| {
            matches!(
                c.reason.as_deref(),
                Some("NewReplicaSetAvailable" | "DeploymentPaused")
            )
        })
    {
        let message = format!("ReplicaSet \"{name}\" is progressing.");
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            ("ReplicaSetUpdated", &message),
            now,
            true,
        );
    } else if progressing.as_ref().is_some_and(|c| {
        c.status.as_deref() == Some("True")
            && c.last_update_time
                .as_ref()
                .is_some_and(|t| now.as_second() - t.0.as_second() > deadline)
    }) {
        let message = format!("ReplicaSet \"{name}\" has timed out progressing.");
        set_condition(
            &mut conditions,
            "Progressing",
            "False",
            ("ProgressDeadlineExceeded", &message),
            now,
            false,
        );
    }
    next.conditions = Some(conditions);
    next
}

/// When the Progressing condition would time out, if the rollout is still under way.
pub fn progress_deadline(deployment: &Deployment) -> Option<jiff::Timestamp> {
    let condition = deployment
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| {
            c.type_.as_deref() == Some("Progressing") && c.status.as_deref() == Some("True")
        })?;
    if condition.reason.as_deref() == Some("NewReplicaSetAvailable") {
        return None;
    }
    let seconds = i64::from(deployment.spec.progress_deadline_seconds.unwrap_or(600));
    let updated = condition.last_update_time.as_ref()?.0;
    updated
        .checked_add(jiff::SignedDuration::from_secs(seconds))
        .ok()
}

/// Sets a condition: the transition time moves only when the status changes; the update time moves when
/// anything changed, or with `touch` (progress was made) even if nothing did.
fn set_condition(
    conditions: &mut Vec<DeploymentCondition>,
    kind: &str,
    status: &str,
    (reason, message): (&str, &str),
    now: jiff::Timestamp,
    touch: bool,
) {
    let existing = conditions
        .iter()
        .position(|c| c.type_.as_deref() == Some(kind));
    let previous = existing.map(|i| conditions[i].clone());
    let unchanged = previous.as_ref().is_some_and(|p| {
        p.status.as_deref() == Some(status)
            && p.reason.as_deref() == Some(reason)
            && p.message.as_deref() == Some(message)
    });
    if unchanged && !touch {
        return;
    }
    let transition = previous
        .as_ref()
        .filter(|p| p.status.as_deref() == Some(status))
        .and_then(|p| p.last_transition_time.clone())
        .unwrap_or(Time(now));
    let condition = DeploymentCondition {
        type_: Some(kind.to_owned()),
        status: Some(status.to_owned()),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(transition),
    };
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old(name: &str, replicas: i32, available: i32) -> OldReplicaSet {
        OldReplicaSet {
            name: name.into(),
            replicas,
            available,
        }
    }

    #[test]
    fn percentages_round_up_for_surge_and_down_for_unavailability() {
        let pct = IntOrString::String("25%".into());
        assert_eq!(scaled_value(Some(&pct), 10, true), 3);
        assert_eq!(scaled_value(Some(&pct), 10, false), 2);
        assert_eq!(scaled_value(Some(&IntOrString::Int(4)), 10, false), 4);
        assert_eq!(scaled_value(None, 10, true), 0);
    }

    #[test]
    fn the_new_set_grows_into_the_room_surge_leaves() {
        // 10 replicas, surge 3: from 10 old pods the new set may start 3.
        assert_eq!(new_replicas_rolling(10, 3, 10, 0), 3);
        // 12 pods in all: room for one more.
        assert_eq!(new_replicas_rolling(10, 3, 12, 2), 3);
        // No room: stays.
        assert_eq!(new_replicas_rolling(10, 3, 13, 3), 3);
        // Never past the Deployment's replicas; shrinks back to them.
        assert_eq!(new_replicas_rolling(10, 3, 10, 9), 10);
        assert_eq!(new_replicas_rolling(10, 3, 14, 12), 10);
    }

    #[test]
    fn old_sets_shrink_only_as_far_as_availability_allows() {
        // 10 replicas, unavailable 2; old 10/10 available, new 3 with none available:
        // 13 pods, 8 must stay available, 3 new not available -> 2 old may go.
        assert_eq!(
            old_scale_down(&[old("a", 10, 10)], 10, 2, 3, 0),
            vec![("a".into(), 8)]
        );
        // Once the 3 new pods are available, 3 more old ones may go: 8 + 3 = 11 available, 11 - 8 = 3.
        assert_eq!(
            old_scale_down(&[old("a", 8, 8)], 10, 2, 3, 3),
            vec![("a".into(), 5)]
        );
        // Unhealthy old pods go first, even when nothing healthy may: old 10 with 6 available, new 3 none
        // available: 13 - 8 - 3 = 2 unhealthy go, and 6 available < 8 so no healthy one does.
        assert_eq!(
            old_scale_down(&[old("a", 10, 6)], 10, 2, 3, 0),
            vec![("a".into(), 8)]
        );
        // 2 + 8 old and 3 new, all available: 13 available, 8 must stay, 5 go, the oldest set first.
        assert_eq!(
            old_scale_down(&[old("a", 2, 2), old("b", 8, 8)], 10, 2, 3, 3),
            vec![("a".into(), 0), ("b".into(), 5)]
        );
        assert!(old_scale_down(&[old("a", 0, 0)], 10, 2, 10, 10).is_empty());
    }

    #[test]
    fn both_zero_would_never_progress_so_unavailability_becomes_one() {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d"},
            "spec": {"replicas": 10, "selector": {}, "template": {},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}
        }))
        .unwrap();
        assert_eq!(surge_and_unavailable(&deployment), (0, 1));
    }

    #[test]
    fn the_template_hash_is_stable_and_changes_with_the_template_or_collisions() {
        let a: PodTemplateSpec =
            serde_json::from_value(serde_json::json!({"metadata": {"labels": {"app": "a"}}}))
                .unwrap();
        let b: PodTemplateSpec =
            serde_json::from_value(serde_json::json!({"metadata": {"labels": {"app": "b"}}}))
                .unwrap();
        assert_eq!(template_hash(&a, None), template_hash(&a, None));
        assert_ne!(template_hash(&a, None), template_hash(&b, None));
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
        assert!(
            template_hash(&a, None)
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
        );
    }
}
