//! The sockets bound on this machine (its network namespace), as the kernel lists them in `/proc/net`: whether a
//! socket is bound to one exact address and port, as a pod's listener is, rather than to the wildcard address,
//! as a host service is.

use procfs::net::TcpState;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a socket found bound is remembered, so a guest opening many connections reads the tables once.
const REMEMBERED: Duration = Duration::from_secs(2);

/// The transport of a connection or datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A TCP connection: a listening socket answers it.
    Tcp,
    /// A UDP datagram: a bound socket receives it.
    Udp,
}

/// Looks up bound sockets, remembering those found for a short while.
#[derive(Debug, Default)]
pub struct LocalSockets {
    found: Mutex<HashMap<(SocketAddr, Transport), Instant>>,
}

impl LocalSockets {
    /// Whether a socket of this machine is bound to exactly `address` (a TCP one listening). A table that
    /// cannot be read counts as not bound.
    pub fn bound_exactly(&self, address: SocketAddr, transport: Transport) -> bool {
        let key = (address, transport);
        let now = Instant::now();
        let fresh = |at: &Instant| now.duration_since(*at) < REMEMBERED;
        let known = self
            .found
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied();
        if known.as_ref().is_some_and(fresh) {
            return true;
        }
        // The tables are read without the lock: guests connecting at once do not queue behind one read.
        let bound = match transport {
            Transport::Tcp => tcp_listening(address),
            Transport::Udp => udp_bound(address),
        };
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        found.retain(|_, at| fresh(at));
        if bound {
            found.insert(key, now);
        }
        bound
    }
}

/// The same address, as the kernel lists it: IPv4-mapped IPv6 addresses appear as IPv4 in the v6 tables too.
fn same(listed: SocketAddr, address: SocketAddr) -> bool {
    listed.port() == address.port() && listed.ip().to_canonical() == address.ip().to_canonical()
}

fn tcp_listening(address: SocketAddr) -> bool {
    let tables = [procfs::net::tcp(), procfs::net::tcp6()];
    tables
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| entry.state == TcpState::Listen && same(entry.local_address, address))
}

fn udp_bound(address: SocketAddr) -> bool {
    let tables = [procfs::net::udp(), procfs::net::udp6()];
    tables
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| same(entry.local_address, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_bound_to_the_address_counts_and_a_wildcard_one_does_not() {
        let sockets = LocalSockets::default();
        let wildcard = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = wildcard.local_addr().unwrap().port();
        let on_loopback: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(!sockets.bound_exactly(on_loopback, Transport::Tcp));
        let exact = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
        let exact = exact.local_addr().unwrap();
        assert!(sockets.bound_exactly(exact, Transport::Tcp));
        assert!(!sockets.bound_exactly(exact, Transport::Udp));
        let datagrams = std::net::UdpSocket::bind("127.0.0.3:0").unwrap();
        assert!(sockets.bound_exactly(datagrams.local_addr().unwrap(), Transport::Udp));
    }
}
