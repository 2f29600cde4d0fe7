//! One frontend's endpoints and how the next one is chosen: round robin or least requests, ClientIP affinity,
//! and passive health (outlier detection): an endpoint that cannot be reached is taken out until a connection
//! to it succeeds again, and one that takes what it is sent but answers nothing for a while (a frozen process:
//! the kernel still accepts its connections) is left out until it answers again or for a few seconds.

use super::table::{Balance, Behaviour};
use crate::metrics::FrontendStats;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

/// How often an endpoint that is out is tried again.
const RECHECK: Duration = Duration::from_millis(500);
/// How long a health check's connection attempt may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an endpoint may leave the work it was sent (a request, a client's first bytes) without any answer
/// before it counts as stalled.
const STALL: Duration = Duration::from_secs(1);
/// How long a stalled endpoint is left out unless it answers before, times the number of times in a row it
/// stalled (Envoy's base ejection time), up to [`MAX_EJECTION`].
const STALL_EJECTION: Duration = Duration::from_secs(10);
/// The longest an endpoint is left out for stalling.
const MAX_EJECTION: Duration = Duration::from_secs(300);

/// Milliseconds since this process first asked, plus one (0 is "never"), for times kept in atomics.
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// One endpoint and what the proxy knows of it.
#[derive(Debug)]
pub struct Endpoint {
    /// Where it listens.
    pub address: SocketAddr,
    /// The frontend it serves, for logs.
    service: Arc<str>,
    /// The same, as the authority of request URIs.
    authority: ::http::uri::Authority,
    /// Requests (HTTP) or connections (TCP) in flight.
    in_flight: AtomicUsize,
    /// Whether it is out after a failure.
    down: AtomicBool,
    /// Work sent to it and not answered yet: requests without response headers, connections whose client
    /// spoke and that have not answered.
    awaiting: AtomicUsize,
    /// Since when `awaiting` is above zero (see [`now_ms`]).
    awaiting_since_ms: AtomicU64,
    /// When it last answered (see [`now_ms`]).
    answered_ms: AtomicU64,
    /// Until when it is left out as stalled (see [`now_ms`]; 0: it is not).
    stalled_until_ms: AtomicU64,
    /// How many times in a row it stalled without answering in between.
    stalls: AtomicU32,
}

impl Endpoint {
    /// Whether it may take new work at `now`: not out after a failure, and not stalled. An endpoint that has
    /// had work waiting for [`STALL`] without answering anything meanwhile becomes stalled here, when new
    /// work is placed (no timer per request).
    fn healthy(&self, now: u64) -> bool {
        if self.down.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.stalled_until_ms.load(Ordering::Relaxed);
        if until > now {
            return false;
        }
        let waiting = self.awaiting.load(Ordering::Relaxed) > 0;
        let since = self
            .awaiting_since_ms
            .load(Ordering::Relaxed)
            .max(self.answered_ms.load(Ordering::Relaxed));
        if !waiting || now.saturating_sub(since) < millis(STALL) {
            return true;
        }
        self.stall(now, until);
        false
    }

    /// Leaves the endpoint out for its next ejection time, unless another caller did so since `seen` (the
    /// stall deadline it read).
    fn stall(&self, now: u64, seen: u64) {
        let stalls = self.stalls.load(Ordering::Relaxed).saturating_add(1);
        let ejection = STALL_EJECTION.saturating_mul(stalls).min(MAX_EJECTION);
        let next = now.saturating_add(millis(ejection));
        if self
            .stalled_until_ms
            .compare_exchange(seen, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.stalls.store(stalls, Ordering::Relaxed);
            tracing::info!(service = %self.service, endpoint = %self.address, seconds = ejection.as_secs(), "endpoint out: it answers nothing");
        }
    }

    fn answered(&self) {
        self.answered_ms.store(now_ms(), Ordering::Relaxed);
        self.stalled_until_ms.store(0, Ordering::Relaxed);
        self.stalls.store(0, Ordering::Relaxed);
    }
}

/// A chosen endpoint; counts as in flight until dropped.
#[derive(Debug)]
pub struct Lease {
    endpoint: Arc<Endpoint>,
}

impl Lease {
    /// The endpoint's address.
    pub fn address(&self) -> SocketAddr {
        self.endpoint.address
    }

    /// The endpoint's address as a URI authority.
    pub fn authority(&self) -> &::http::uri::Authority {
        &self.endpoint.authority
    }

    /// Work was sent to the endpoint: it awaits an answer until [`Awaiting::answered`], or until the guard is
    /// dropped (failed, or given up by the client: after [`STALL`] without any answer from the endpoint,
    /// that stalls it).
    pub fn awaiting(&self) -> Awaiting {
        let now = now_ms();
        if self.endpoint.awaiting.fetch_add(1, Ordering::Relaxed) == 0 {
            self.endpoint
                .awaiting_since_ms
                .store(now, Ordering::Relaxed);
        }
        Awaiting {
            endpoint: self.endpoint.clone(),
            since: now,
            answered: false,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Work an endpoint has not answered yet; see [`Lease::awaiting`].
#[derive(Debug)]
pub struct Awaiting {
    endpoint: Arc<Endpoint>,
    since: u64,
    answered: bool,
}

impl Awaiting {
    /// The endpoint answered (response headers, or bytes back): it is no longer stalled.
    pub fn answered(mut self) {
        self.answered = true;
        self.endpoint.answered();
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        self.endpoint.awaiting.fetch_sub(1, Ordering::Relaxed);
        let now = now_ms();
        let unanswered = self.endpoint.answered_ms.load(Ordering::Relaxed) < self.since;
        if !self.answered && unanswered && now.saturating_sub(self.since) >= millis(STALL) {
            let seen = self.endpoint.stalled_until_ms.load(Ordering::Relaxed);
            if seen <= now {
                self.endpoint.stall(now, seen);
            }
        }
    }
}

/// Which of `count` endpoints a client's address maps to: the same on every node (std's SipHash with fixed
/// keys).
fn client_slot(client: IpAddr, count: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    client.hash(&mut hasher);
    (hasher.finish() % count as u64) as usize
}

/// The endpoints of one frontend.
#[derive(Debug)]
pub struct Backends {
    /// What it served, for the node's metrics.
    stats: Arc<FrontendStats>,
    behaviour: Behaviour,
    /// The frontend's name, shared with its endpoints for their logs.
    service: Arc<str>,
    endpoints: RwLock<Arc<Vec<Arc<Endpoint>>>>,
    next: AtomicUsize,
    affinity: Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>,
}

impl Backends {
    /// Backends with the given endpoints, counting what they serve in `stats`.
    pub fn new(
        stats: Arc<FrontendStats>,
        behaviour: Behaviour,
        addresses: &[SocketAddr],
    ) -> Arc<Self> {
        let backends = Arc::new(Self {
            stats,
            service: behaviour.service.as_str().into(),
            behaviour,
            endpoints: RwLock::new(Arc::new(Vec::new())),
            next: AtomicUsize::new(0),
            affinity: Mutex::new(HashMap::new()),
        });
        backends.update(addresses);
        backends
    }

    /// How the frontend behaves.
    pub fn behaviour(&self) -> &Behaviour {
        &self.behaviour
    }

    /// What the frontend served, for the node's metrics.
    pub fn stats(&self) -> &FrontendStats {
        &self.stats
    }

    fn snapshot(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The endpoint addresses now in use.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.snapshot().iter().map(|e| e.address).collect()
    }

    /// Replaces the endpoints (kept in address order, the same on every node), keeping what is known of those
    /// that stay. Requests already sent to a removed
    /// endpoint finish there (they hold their own connection).
    pub fn update(&self, addresses: &[SocketAddr]) {
        let current = self.snapshot();
        let mut addresses = addresses.to_vec();
        addresses.sort();
        addresses.dedup();
        let endpoints: Vec<Arc<Endpoint>> = addresses
            .iter()
            .map(|address| {
                current
                    .iter()
                    .find(|e| e.address == *address)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(Endpoint {
                            address: *address,
                            service: self.service.clone(),
                            authority: ::http::uri::Authority::try_from(address.to_string())
                                .unwrap_or_else(|_| ::http::uri::Authority::from_static("invalid")),
                            in_flight: AtomicUsize::new(0),
                            down: AtomicBool::new(false),
                            awaiting: AtomicUsize::new(0),
                            awaiting_since_ms: AtomicU64::new(0),
                            answered_ms: AtomicU64::new(0),
                            stalled_until_ms: AtomicU64::new(0),
                            stalls: AtomicU32::new(0),
                        })
                    })
            })
            .collect();
        *self.endpoints.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(endpoints);
    }

    /// Chooses an endpoint for a client, skipping those already `tried`; endpoints that are out (failed or
    /// stalled) are used only when no other is left.
    pub fn pick(&self, client: IpAddr, tried: &[SocketAddr]) -> Option<Lease> {
        let endpoints = self.snapshot();
        let untried = |e: &&Arc<Endpoint>| !tried.contains(&e.address);
        let now = now_ms();
        let any_up = endpoints.iter().filter(untried).any(|e| e.healthy(now));
        // Without allocating on the hot path: the candidates are the untried endpoints, healthy ones if any.
        let candidates = || {
            endpoints
                .iter()
                .filter(untried)
                .filter(move |e| !any_up || e.healthy(now))
        };
        let count = candidates().count();
        if count == 0 {
            return None;
        }
        let chosen = match self.sticky(client) {
            Some(address) => candidates().find(|e| e.address == address),
            None => None,
        }
        .or_else(|| match self.behaviour.affinity {
            // A new client's endpoint follows from its address, so every node's proxy (each with its own
            // affinity table) sends it to the same one.
            Some(_) => candidates().nth(client_slot(client, count)),
            None => self.choose(candidates, count),
        })?;
        if let Some(timeout) = self.behaviour.affinity {
            let mut table = self.affinity.lock().unwrap_or_else(|e| e.into_inner());
            table.insert(client, (chosen.address, Instant::now() + timeout));
        }
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            endpoint: chosen.clone(),
        })
    }

    /// The endpoint a client is pinned to by ClientIP affinity, if any.
    fn sticky(&self, client: IpAddr) -> Option<SocketAddr> {
        self.behaviour.affinity?;
        let mut table = self.affinity.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        table.retain(|_, (_, until)| *until > now);
        table.get(&client).map(|(address, _)| *address)
    }

    fn choose<'a, I>(&self, candidates: impl Fn() -> I, count: usize) -> Option<&'a Arc<Endpoint>>
    where
        I: Iterator<Item = &'a Arc<Endpoint>>,
    {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let mut in_turn = candidates().skip(turn).chain(candidates().take(turn));
        match self.behaviour.balance {
            Balance::RoundRobin => in_turn.next(),
            // The fewest in flight; ties go round robin, so an idle service still spreads its requests.
            Balance::LeastRequests => in_turn.min_by_key(|e| e.in_flight.load(Ordering::Relaxed)),
        }
    }

    /// Takes an endpoint out after a failed connection, and puts it back once a connection to it succeeds.
    pub fn mark_down(self: &Arc<Self>, address: SocketAddr) {
        let Some(endpoint) = self
            .snapshot()
            .iter()
            .find(|e| e.address == address)
            .cloned()
        else {
            return;
        };
        if endpoint.down.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::info!(service = %self.behaviour.service, endpoint = %address, "endpoint out after a failed connection");
        let watched: Weak<Endpoint> = Arc::downgrade(&endpoint);
        let service = self.behaviour.service.clone();
        drop(endpoint);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RECHECK).await;
                // Stop checking once the endpoint is no longer part of the service.
                let Some(endpoint) = watched.upgrade() else {
                    return;
                };
                let answered = tokio::time::timeout(
                    CHECK_TIMEOUT,
                    tokio::net::TcpStream::connect(endpoint.address),
                )
                .await;
                if matches!(answered, Ok(Ok(_))) {
                    endpoint.down.store(false, Ordering::Relaxed);
                    tracing::info!(%service, endpoint = %endpoint.address, "endpoint back");
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::proxy::table::Mode;

    fn behaviour(balance: Balance, affinity: Option<Duration>) -> Behaviour {
        Behaviour {
            service: "default/web:80".into(),
            mode: Mode::Http,
            balance,
            affinity,
        }
    }

    fn addresses(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([127, 42, 0, i], 8080)))
            .collect()
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn round_robin_takes_every_endpoint_in_turn() {
        let backends = Backends::new(
            Arc::default(),
            behaviour(Balance::RoundRobin, None),
            &addresses(3),
        );
        let picked: Vec<SocketAddr> = (0..6)
            .map(|_| backends.pick(CLIENT, &[]).unwrap().address())
            .collect();
        assert_eq!(picked[..3], addresses(3)[..]);
        assert_eq!(picked[3..], addresses(3)[..]);
    }

    #[test]
    fn least_requests_avoids_the_busy_endpoint() {
        let backends = Backends::new(
            Arc::default(),
            behaviour(Balance::LeastRequests, None),
            &addresses(2),
        );
        let busy = backends.pick(CLIENT, &[]).unwrap();
        for _ in 0..4 {
            let lease = backends.pick(CLIENT, &[]).unwrap();
            assert_ne!(lease.address(), busy.address());
        }
    }

    #[test]
    fn tried_endpoints_are_skipped_and_none_is_left_after_all() {
        let backends = Backends::new(
            Arc::default(),
            behaviour(Balance::RoundRobin, None),
            &addresses(2),
        );
        let all = addresses(2);
        assert_eq!(backends.pick(CLIENT, &all[..1]).unwrap().address(), all[1]);
        assert!(backends.pick(CLIENT, &all).is_none());
    }

    #[test]
    fn client_ip_affinity_keeps_a_client_on_one_endpoint() {
        let backends = Backends::new(
            Arc::default(),
            behaviour(Balance::RoundRobin, Some(Duration::from_secs(60))),
            &addresses(3),
        );
        let first = backends.pick(CLIENT, &[]).unwrap().address();
        for _ in 0..5 {
            assert_eq!(backends.pick(CLIENT, &[]).unwrap().address(), first);
        }
        // Another node's proxy, with its own table, sends the client to the same endpoint; clients spread.
        let elsewhere = Backends::new(
            Arc::default(),
            behaviour(Balance::RoundRobin, Some(Duration::from_secs(60))),
            &addresses(3).into_iter().rev().collect::<Vec<_>>(),
        );
        assert_eq!(elsewhere.pick(CLIENT, &[]).unwrap().address(), first);
        let spread: std::collections::BTreeSet<SocketAddr> = (1..=30u8)
            .map(|i| {
                let client = IpAddr::from([127, 0, 0, i]);
                backends.pick(client, &[]).unwrap().address()
            })
            .collect();
        assert_eq!(spread.len(), 3);
    }

    #[test]
    fn an_endpoint_that_answers_nothing_is_left_out_until_it_answers() {
        let backends = Backends::new(
            Arc::default(),
            behaviour(Balance::RoundRobin, None),
            &addresses(2),
        );
        let [frozen, alive] = [0, 1].map(|i| addresses(2)[i]);
        let lease = backends.pick(CLIENT, &[]).unwrap();
        assert_eq!(lease.address(), frozen);
        let waiting = lease.awaiting();
        // Waiting less than STALL is no stall.
        assert_eq!(backends.pick(CLIENT, &[]).unwrap().address(), alive);
        assert_eq!(backends.pick(CLIENT, &[]).unwrap().address(), frozen);
        std::thread::sleep(STALL + Duration::from_millis(50));
        for _ in 0..4 {
            assert_eq!(backends.pick(CLIENT, &[]).unwrap().address(), alive);
        }
        // Still used when nothing else is left.
        assert_eq!(backends.pick(CLIENT, &[alive]).unwrap().address(), frozen);
        // An answer puts it back.
        waiting.answered();
        let picked: Vec<SocketAddr> = (0..4)
            .map(|_| backends.pick(CLIENT, &[]).unwrap().address())
            .collect();
        assert!(picked.contains(&frozen), "{picked:?}");
    }

    #[test]
    fn work_given_up_unanswered_after_the_stall_time_stalls_the_endpoint() {
        // A client that times out drops its request before anyone placed new work.
        let backends = Backends::new(
            Arc::default(),
            behaviour(Balance::RoundRobin, None),
            &addresses(2),
        );
        let lease = backends.pick(CLIENT, &[]).unwrap();
        let frozen = lease.address();
        let quick = lease.awaiting();
        drop(quick);
        assert!((0..2).any(|_| backends.pick(CLIENT, &[]).unwrap().address() == frozen));
        let slow = lease.awaiting();
        std::thread::sleep(STALL + Duration::from_millis(50));
        drop(slow);
        for _ in 0..4 {
            assert_ne!(backends.pick(CLIENT, &[]).unwrap().address(), frozen);
        }
    }

    #[tokio::test]
    async fn an_endpoint_that_failed_is_out_until_it_answers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let alive = listener.local_addr().unwrap();
        let dead = SocketAddr::from(([127, 0, 0, 1], {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        }));
        let backends = Backends::new(
            Arc::default(),
            behaviour(Balance::RoundRobin, None),
            &[alive, dead],
        );
        backends.mark_down(dead);
        for _ in 0..4 {
            assert_eq!(backends.pick(CLIENT, &[]).unwrap().address(), alive);
        }
        // Only the failed one left untried: it is still used rather than refusing the client.
        assert_eq!(backends.pick(CLIENT, &[alive]).unwrap().address(), dead);
        // It comes back once it accepts connections again.
        backends.mark_down(alive);
        let _revived = tokio::net::TcpListener::bind(dead).await.unwrap();
        tokio::time::sleep(RECHECK * 3).await;
        assert!(
            (0..4).any(|_| backends.pick(CLIENT, &[]).unwrap().address() == dead),
            "the endpoint came back"
        );
        drop(listener);
    }
}
