//! Which pod the agent evicts when guests hold most of the node's memory budget, as the kubelet ranks pods
//! under memory pressure: BestEffort before Burstable before Guaranteed (`api::qos`), and within a class the
//! pod using the most memory. Pure: the agent supplies its pods and their usage, and does the eviction.

pub use wasmkube_core::qos::QosClass;

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
