//! NodeResourcesFit and NodeResourcesBalancedAllocation: whether a pod's requests fit what a node has left,
//! and how the node scores once they are placed (least allocated; cpu and memory in balance).

use super::{MAX_NODE_SCORE, Reason};
pub use wasmkube_core::resources::{Resources, allocatable, nonzero_requests, requests};

/// The pod's requests fit what is left of the node.
pub fn fits(request: Resources, free: Resources) -> Result<(), Reason> {
    if request.pods > free.pods {
        return Err("Too many pods".into());
    }
    if request.cpu_milli > free.cpu_milli {
        return Err("Insufficient cpu".into());
    }
    if request.memory > free.memory {
        return Err("Insufficient memory".into());
    }
    Ok(())
}

/// LeastAllocated: the share of cpu and of memory left after placing the pod, 0–100 each, averaged.
/// `requested` already includes the pod (counted with [`nonzero_requests`]).
pub fn least_allocated(requested: Resources, allocatable: Resources) -> i64 {
    let left = |requested: i64, capacity: i64| {
        if capacity == 0 || requested > capacity {
            0
        } else {
            (capacity - requested) * MAX_NODE_SCORE / capacity
        }
    };
    (left(requested.cpu_milli, allocatable.cpu_milli) + left(requested.memory, allocatable.memory))
        / 2
}

/// BalancedAllocation: 100 when the node's cpu and memory would be equally used after placing the pod, less
/// by their difference (100 × (1 − |cpu share − memory share| / 2)). `requested` includes the pod's actual
/// requests.
pub fn balanced_allocation(requested: Resources, allocatable: Resources) -> i64 {
    let share = |requested: i64, capacity: i64| {
        (capacity > 0).then(|| (requested as f64 / capacity as f64).min(1.0))
    };
    let shares: Vec<f64> = [
        share(requested.cpu_milli, allocatable.cpu_milli),
        share(requested.memory, allocatable.memory),
    ]
    .into_iter()
    .flatten()
    .collect();
    let deviation = match shares.as_slice() {
        [a, b] => ((a - b) / 2.0).abs(),
        _ => 0.0,
    };
    ((1.0 - deviation) * MAX_NODE_SCORE as f64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: i64 = 1 << 30;

    #[test]
    fn requests_that_do_not_fit_say_which_resource() {
        let free = Resources {
            cpu_milli: 1000,
            memory: GI,
            pods: 10,
        };
        let ask = |cpu_milli, memory, pods| {
            fits(
                Resources {
                    cpu_milli,
                    memory,
                    pods,
                },
                free,
            )
        };
        assert!(ask(500, 1 << 20, 1).is_ok());
        assert_eq!(ask(2000, 0, 1).unwrap_err(), "Insufficient cpu");
        assert_eq!(ask(0, 2 * GI, 1).unwrap_err(), "Insufficient memory");
        assert_eq!(ask(0, 0, 11).unwrap_err(), "Too many pods");
    }

    #[test]
    fn least_allocated_and_balanced_scores_in_worked_numbers() {
        let node = Resources {
            cpu_milli: 4000,
            memory: 8 * GI,
            pods: 110,
        };
        // cpu 1000/4000 used → 75 left; memory 6/8 used → 25 left; average 50.
        let used = Resources {
            cpu_milli: 1000,
            memory: 6 * GI,
            pods: 3,
        };
        assert_eq!(least_allocated(used, node), 50);
        // shares 0.25 and 0.75: deviation 0.25 → 75.
        assert_eq!(balanced_allocation(used, node), 75);
        // More asked than the node has: no score for that resource.
        let over = Resources {
            cpu_milli: 5000,
            memory: 0,
            pods: 1,
        };
        assert_eq!(least_allocated(over, node), 50);
        assert_eq!(balanced_allocation(Resources::default(), node), 100);
    }
}
