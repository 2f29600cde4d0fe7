//! What one run of a container uses, as the kubelet reads a container's cgroup: the CPU time its guests have
//! run (the time spent polling them: a guest runs only inside a poll) and the bytes of linear memory they hold
//! now. An HTTP component's requests each run in an instance of their own; they are charged to the same run.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The CPU time and memory of one run of a container.
#[derive(Debug)]
pub struct Usage {
    started: jiff::Timestamp,
    cpu_nanos: AtomicU64,
    memory: AtomicUsize,
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            started: jiff::Timestamp::now(),
            cpu_nanos: AtomicU64::new(0),
            memory: AtomicUsize::new(0),
        }
    }
}

impl Usage {
    /// When the run started.
    pub fn started(&self) -> jiff::Timestamp {
        self.started
    }

    /// CPU time its guests have run so far.
    pub fn cpu(&self) -> Duration {
        Duration::from_nanos(self.cpu_nanos.load(Ordering::Relaxed))
    }

    /// Bytes of linear memory its guests hold now.
    pub fn memory(&self) -> usize {
        self.memory.load(Ordering::Relaxed)
    }

    pub(crate) fn add_cpu(&self, time: Duration) {
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        self.cpu_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn grow_memory(&self, bytes: usize) {
        self.memory.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn shrink_memory(&self, bytes: usize) {
        self.memory.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// A guest's future whose time in `poll` is charged to a run's [`Usage`].
pub struct Charged<F> {
    inner: Pin<Box<F>>,
    usage: Arc<Usage>,
}

impl<F: Future> Charged<F> {
    /// `inner`, charging its polls to `usage`.
    pub fn new(inner: F, usage: Arc<Usage>) -> Self {
        Self {
            inner: Box::pin(inner),
            usage,
        }
    }
}

impl<F: Future> Future for Charged<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let began = Instant::now();
        let polled = self.inner.as_mut().poll(cx);
        self.usage.add_cpu(began.elapsed());
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn time_spent_polling_is_charged_and_time_waiting_is_not() {
        let usage = Arc::new(Usage::default());
        let guest = async {
            // Busy for 30 ms, then waiting 200 ms without running.
            let until = Instant::now() + Duration::from_millis(30);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        Charged::new(guest, usage.clone()).await;
        let cpu = usage.cpu();
        assert!(cpu >= Duration::from_millis(30), "{cpu:?}");
        assert!(cpu < Duration::from_millis(150), "{cpu:?}");
    }
}
