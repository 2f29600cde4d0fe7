//! Pod priority, as Kubernetes' scheduling API and its Priority admission plugin define it: the system
//! PriorityClasses, the bound on user-defined values, and the priority a new pod gets from its class.

use k8s_openapi::api::scheduling::v1::PriorityClass;

/// The highest value a user-defined PriorityClass may have (Kubernetes' HighestUserDefinablePriority).
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i32 = 1_000_000_000;

/// Names with this prefix are the system's own classes.
pub const SYSTEM_PRIORITY_CLASS_PREFIX: &str = "system-";

/// The system's PriorityClasses: name, value and description, as Kubernetes creates them at start.
pub const SYSTEM_PRIORITY_CLASSES: [(&str, i32, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The system's PriorityClass objects.
pub fn system_priority_classes() -> Vec<PriorityClass> {
    SYSTEM_PRIORITY_CLASSES
        .iter()
        .map(|(name, value, description)| PriorityClass {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some((*name).to_owned()),
                ..Default::default()
            },
            value: Some(*value),
            description: Some((*description).to_owned()),
            global_default: Some(false),
            preemption_policy: Some("PreemptLowerPriority".to_owned()),
        })
        .collect()
}

/// Whether a class is one of the system's, exactly as the system defines it (else why not).
pub fn is_known_system_class(name: &str, value: i32, global_default: bool) -> Result<(), String> {
    match SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _, _)| *n == name) {
        None => Err(format!("{name:?} is not a known system priority class")),
        Some((_, known, _)) if *known != value || global_default => Err(format!(
            "value of {name} PriorityClass must be {known} and globalDefault must be false"
        )),
        Some(_) => Ok(()),
    }
}

/// What a new pod's priority is: its class's (or the global default's), with the class's preemption policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPriority {
    /// The class name to record in `spec.priorityClassName` (empty without one).
    pub class_name: String,
    /// `spec.priority`.
    pub value: i32,
    /// `spec.preemptionPolicy`.
    pub preemption_policy: String,
}

/// Resolves a new pod's priority from its `priorityClassName` against the cluster's classes, refusing a pod that
/// names a missing class or sets a priority or preemption policy other than its class's (the messages follow
/// `pods "NAME" is forbidden: `).
pub fn resolve_pod_priority(
    class_name: Option<&str>,
    priority: Option<i32>,
    preemption_policy: Option<&str>,
    classes: &[PriorityClass],
) -> Result<PodPriority, String> {
    let class = match class_name.filter(|n| !n.is_empty()) {
        Some(name) => Some(
            classes
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(name))
                .ok_or_else(|| format!("no PriorityClass with name {name} was found"))?,
        ),
        // With several global defaults (written before the check), the lowest value wins, as in Kubernetes.
        None => classes
            .iter()
            .filter(|c| c.global_default == Some(true))
            .min_by_key(|c| c.value.unwrap_or(0)),
    };
    let value = class.and_then(|c| c.value).unwrap_or(0);
    if let Some(given) = priority
        && given != value
    {
        return Err(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission \
             controller computed {value} from the given PriorityClass name"
        ));
    }
    let computed = class
        .and_then(|c| c.preemption_policy.clone())
        .unwrap_or_else(|| "PreemptLowerPriority".to_owned());
    if let Some(given) = preemption_policy
        && class.is_some_and(|c| c.preemption_policy.is_some())
        && given != computed
    {
        return Err(format!(
            "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority \
             admission controller computed {computed} from the given PriorityClass name"
        ));
    }
    Ok(PodPriority {
        class_name: class
            .and_then(|c| c.metadata.name.clone())
            .unwrap_or_default(),
        value,
        preemption_policy: preemption_policy.map_or(computed, str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, value: i32, default: bool, policy: Option<&str>) -> PriorityClass {
        PriorityClass {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            value: Some(value),
            global_default: Some(default),
            preemption_policy: policy.map(str::to_owned),
            description: None,
        }
    }

    #[test]
    fn a_pod_takes_its_class_or_the_global_default() {
        let classes = [
            class("high", 1000, false, Some("PreemptLowerPriority")),
            class("batch", -10, true, Some("Never")),
        ];
        let high = resolve_pod_priority(Some("high"), None, None, &classes).unwrap();
        assert_eq!(
            (high.value, high.preemption_policy.as_str()),
            (1000, "PreemptLowerPriority")
        );
        let default = resolve_pod_priority(None, None, None, &classes).unwrap();
        assert_eq!(
            (
                default.class_name.as_str(),
                default.value,
                default.preemption_policy.as_str()
            ),
            ("batch", -10, "Never")
        );
        let none = resolve_pod_priority(None, Some(0), None, &[]).unwrap();
        assert_eq!((none.class_name.as_str(), none.value), ("", 0));
    }

    #[test]
    fn a_pod_may_not_name_a_missing_class_or_set_another_priority() {
        let classes = [class("high", 1000, false, Some("PreemptLowerPriority"))];
        assert_eq!(
            resolve_pod_priority(Some("urgent"), None, None, &classes).unwrap_err(),
            "no PriorityClass with name urgent was found"
        );
        assert_eq!(
            resolve_pod_priority(Some("high"), Some(5), None, &classes).unwrap_err(),
            "the integer value of priority (5) must not be provided in pod spec; priority admission controller \
             computed 1000 from the given PriorityClass name"
        );
        assert!(
            resolve_pod_priority(Some("high"), None, Some("Never"), &classes)
                .unwrap_err()
                .starts_with("the string value of PreemptionPolicy (Never) must not be provided")
        );
    }

    #[test]
    fn system_class_names_are_reserved() {
        assert!(is_known_system_class("system-node-critical", 2_000_001_000, false).is_ok());
        assert!(is_known_system_class("system-node-critical", 5, false).is_err());
        assert!(is_known_system_class("system-mine", 5, false).is_err());
    }
}
