//! The node's memory as its guests take it: every growth of every guest's linear memory is charged to one
//! budget (the node's memory less a reserve for the agent and the system), so guests without memory limits
//! cannot together take the node down: a growth past the budget is refused and its guest ends OOMKilled, as
//! the kernel's OOM killer would end a container, but before the host runs out. Past 90% of the budget the
//! node reports MemoryPressure, as the kubelet does, so the scheduler sends it no more BestEffort pods.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The share of the budget past which the node reports MemoryPressure.
const PRESSURE_PERCENT: usize = 90;

/// The guests' memory budget of one node and what is taken of it.
#[derive(Debug)]
pub struct NodeMemory {
    budget: usize,
    used: AtomicUsize,
}

impl NodeMemory {
    /// A budget of `budget` bytes, none taken.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            used: AtomicUsize::new(0),
        }
    }

    /// Takes `bytes` from the budget; false (nothing taken) if they are not left.
    pub fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes)
                    .filter(|total| *total <= self.budget)
            })
            .is_ok()
    }

    /// Returns `bytes` taken before.
    pub fn give_back(&self, bytes: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// Bytes taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// Whether guests hold more than 90% of the budget.
    pub fn under_pressure(&self) -> bool {
        self.used().saturating_mul(100) > self.budget.saturating_mul(PRESSURE_PERCENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_past_the_budget_is_refused_and_pressure_shows_at_90_percent() {
        let memory = NodeMemory::new(1000);
        assert!(memory.try_take(600));
        assert!(!memory.under_pressure());
        assert!(!memory.try_take(500), "1,100 of 1,000 bytes");
        assert_eq!(memory.used(), 600);
        assert!(memory.try_take(350));
        assert!(memory.under_pressure());
        memory.give_back(950);
        assert_eq!(memory.used(), 0);
        assert!(!memory.try_take(usize::MAX), "no overflow");
    }
}
