//! CPU limits, as the Linux CFS quota enforces them: a container may run `limit × 100 ms` in every 100 ms
//! period, then waits for the next one. Guests are charged at each epoch tick (10 ms) they run through, and
//! paused by yielding to the executor with a sleep, so the other pods of the node use the time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::{Store, UpdateDeadline};

/// The accounting period.
pub const PERIOD: Duration = Duration::from_millis(100);

/// The run time a container may use per period, and what it used in the current one.
#[derive(Debug)]
pub struct Quota {
    quota: Duration,
    tick: Duration,
    period_start: Instant,
    used: Duration,
    last: Instant,
}

impl Quota {
    /// A quota of `millicores` (1000 = one CPU) with the engine's epoch `tick`.
    pub fn new(millicores: u64, tick: Duration, now: Instant) -> Self {
        let quota = PERIOD.mul_f64(millicores as f64 / 1000.0).max(tick);
        Self {
            quota,
            tick,
            period_start: now,
            used: Duration::ZERO,
            last: now,
        }
    }

    /// Charges the run time since the last charge (at most two ticks: a longer gap means the guest was waiting
    /// on I/O, not running) and returns how long the guest must pause, if its quota is spent.
    pub fn charge(&mut self, now: Instant) -> Option<Duration> {
        if now >= self.period_start + PERIOD {
            self.period_start = now;
            self.used = Duration::ZERO;
        }
        self.used += now.saturating_duration_since(self.last).min(self.tick * 2);
        self.last = now;
        if self.used < self.quota {
            return None;
        }
        let resume = self.period_start + PERIOD;
        self.period_start = resume;
        self.used = Duration::ZERO;
        self.last = resume;
        Some(resume.saturating_duration_since(now))
    }
}

/// Makes a Store yield to the other guests of its executor every `slice` epoch ticks (a guest's weight: more
/// ticks, a larger share), and at every tick pause it while its container's quota (if any) is spent.
pub fn govern<T: 'static>(store: &mut Store<T>, quota: Option<Arc<Mutex<Quota>>>, slice: u64) {
    let Some(quota) = quota else {
        store.epoch_deadline_async_yield_and_update(slice.max(1));
        return;
    };
    store.epoch_deadline_callback(move |_| {
        let pause = quota.lock().map_or(None, |mut q| q.charge(Instant::now()));
        Ok(match pause {
            Some(pause) => UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep(pause))),
            None => UpdateDeadline::Yield(1),
        })
    });
}

/// A container's CPU limit in millicores, from `resources.limits.cpu` ("500m", "0.5", "2").
pub fn millicores(text: &str) -> Option<u64> {
    let milli = wasmkube_core::quantity::Quantity::parse(text).ok()?.milli();
    u64::try_from(milli).ok().filter(|m| *m > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(10);

    #[test]
    fn a_half_cpu_runs_50_ms_then_waits_for_the_next_period() {
        let start = Instant::now();
        let mut quota = Quota::new(500, TICK, start);
        let at = |ms: u64| start + Duration::from_millis(ms);
        for ms in [10, 20, 30, 40] {
            assert_eq!(quota.charge(at(ms)), None, "at {ms} ms");
        }
        assert_eq!(quota.charge(at(50)), Some(Duration::from_millis(50)));
        // The next period starts at 100 ms.
        assert_eq!(quota.charge(at(110)), None);
    }

    #[test]
    fn waiting_on_io_is_not_charged_as_running() {
        let start = Instant::now();
        let mut quota = Quota::new(500, TICK, start);
        let at = |ms: u64| start + Duration::from_millis(ms);
        // 5 s idle counts as at most two ticks (20 ms), then three more ticks spend the 50 ms.
        assert_eq!(quota.charge(at(5000)), None);
        assert_eq!(quota.charge(at(5010)), None);
        assert_eq!(quota.charge(at(5020)), None);
        assert_eq!(quota.charge(at(5030)), Some(Duration::from_millis(70)));
    }

    #[test]
    fn limits_parse_as_kubernetes_quantities() {
        assert_eq!(millicores("500m"), Some(500));
        assert_eq!(millicores("0.25"), Some(250));
        assert_eq!(millicores("2"), Some(2000));
        assert_eq!(millicores("lots"), None);
        assert_eq!(millicores("0"), None);
    }
}
