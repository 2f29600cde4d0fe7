//! Which pod the agent evicts when guests hold most of the node's memory budget, as the kubelet ranks pods
//! under memory pressure: BestEffort before Burstable before Guaranteed, and within a class the pod using the
//! most memory. Pure: the agent supplies its pods and their usage, and does the eviction.

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

/// A pod that may be evicted: its key, class and the memory its guests hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The pod's uid.
    pub uid: String,
    /// Its class.
    pub qos: QosClass,
    /// Bytes of linear memory its guests hold.
    pub usage: usize,
}

/// The pod to evict first: the lowest class, then the most memory; none if no pod holds any.
pub fn victim(candidates: &[Candidate]) -> Option<&Candidate> {
    candidates
        .iter()
        .filter(|c| c.usage > 0)
        .min_by_key(|c| (c.qos, std::cmp::Reverse(c.usage)))
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

    #[test]
    fn best_effort_pods_go_first_then_the_largest() {
        let candidate = |uid: &str, qos, usage| Candidate {
            uid: uid.into(),
            qos,
            usage,
        };
        let pods = [
            candidate("guaranteed-huge", QosClass::Guaranteed, 900),
            candidate("burstable", QosClass::Burstable, 500),
            candidate("best-effort-small", QosClass::BestEffort, 10),
            candidate("best-effort-big", QosClass::BestEffort, 20),
            candidate("best-effort-idle", QosClass::BestEffort, 0),
        ];
        assert_eq!(victim(&pods).unwrap().uid, "best-effort-big");
        assert_eq!(victim(&pods[..2]).unwrap().uid, "burstable");
        assert!(victim(&pods[4..]).is_none());
    }
}
