//! A pod's Quality of Service class, as Kubernetes computes it from its containers' requests and limits: the
//! apiserver records it in `status.qosClass`, and node agents evict by it under memory pressure.

use k8s_openapi::api::core::v1::PodSpec;

/// A pod's Quality of Service class, from its containers' requests and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QosClass {
    /// No container asks for or limits CPU or memory: evicted first.
    BestEffort,
    /// Anything between.
    Burstable,
    /// Every container limits CPU and memory, and requests what it limits: evicted last.
    Guaranteed,
}

impl QosClass {
    /// The class of a pod spec, as Kubernetes' `GetPodQOS` computes it.
    pub fn of(spec: &PodSpec) -> Self {
        let containers: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .collect();
        let mut any = false;
        let mut guaranteed = !containers.is_empty();
        for container in containers {
            let resources = container.resources.clone().unwrap_or_default();
            let requests = resources.requests.unwrap_or_default();
            let limits = resources.limits.unwrap_or_default();
            any |= ["cpu", "memory"]
                .iter()
                .any(|r| requests.contains_key(*r) || limits.contains_key(*r));
            for resource in ["cpu", "memory"] {
                let limit = limits.get(resource);
                let request = requests.get(resource).or(limit);
                if limit.is_none() || request != limit {
                    guaranteed = false;
                }
            }
        }
        match (any, guaranteed) {
            (false, _) => Self::BestEffort,
            (true, true) => Self::Guaranteed,
            (true, false) => Self::Burstable,
        }
    }

    /// Kubernetes' name of the class.
    pub fn name(self) -> &'static str {
        match self {
            Self::BestEffort => "BestEffort",
            Self::Burstable => "Burstable",
            Self::Guaranteed => "Guaranteed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(resources: serde_json::Value) -> PodSpec {
        serde_json::from_value(json!({"containers": [{"name": "a", "resources": resources}]}))
            .unwrap()
    }

    #[test]
    fn the_class_follows_requests_and_limits_as_in_kubernetes() {
        assert_eq!(QosClass::of(&spec(json!({}))), QosClass::BestEffort);
        assert_eq!(
            QosClass::of(&spec(json!({"requests": {"memory": "64Mi"}}))),
            QosClass::Burstable
        );
        assert_eq!(
            QosClass::of(&spec(json!({"limits": {"cpu": "1", "memory": "64Mi"}}))),
            QosClass::Guaranteed
        );
        assert_eq!(
            QosClass::of(&spec(
                json!({"limits": {"cpu": "1", "memory": "64Mi"}, "requests": {"cpu": "500m"}})
            )),
            QosClass::Burstable
        );
    }
}
