//! Pod addresses: every pod on a node gets an IP of its own from the node's podCIDR, so two pods can both listen
//! on port 8080. The first host address is kept for the node itself, as a CNI bridge would.

use ipnet::Ipv4Net;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

/// Why a pod got no address.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// Every address of the range is taken.
    #[error("no free pod address left in {0}")]
    Exhausted(Ipv4Net),
    /// The node's podCIDR is not an IPv4 range.
    #[error("the podCIDR {0:?} is not an IPv4 range (a.b.c.d/n)")]
    BadRange(String),
}

/// The addresses of one node's pods, by pod uid.
#[derive(Debug)]
pub struct PodAddresses {
    range: Ipv4Net,
    taken: Mutex<HashMap<String, Ipv4Addr>>,
}

impl PodAddresses {
    /// Addresses from a podCIDR such as `127.42.3.0/24`.
    pub fn new(pod_cidr: &str) -> Result<Self, AddressError> {
        let range: Ipv4Net = pod_cidr
            .parse()
            .map_err(|_| AddressError::BadRange(pod_cidr.to_owned()))?;
        Ok(Self {
            range: range.trunc(),
            taken: Mutex::new(HashMap::new()),
        })
    }

    /// The range pods get their addresses from.
    pub fn range(&self) -> Ipv4Net {
        self.range
    }

    /// The pod's address: the one it has already (from its status, after an agent restart) if that is still
    /// free, otherwise the lowest free one.
    pub fn assign(&self, uid: &str, previous: Option<&str>) -> Result<IpAddr, AddressError> {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = taken.get(uid) {
            return Ok(IpAddr::V4(*ip));
        }
        let in_use = |ip: &Ipv4Addr| taken.values().any(|t| t == ip);
        let usable =
            |ip: &Ipv4Addr| self.range.contains(ip) && self.host_addresses().any(|h| h == *ip);
        let ip = previous
            .and_then(|p| p.parse::<Ipv4Addr>().ok())
            .filter(|ip| usable(ip) && !in_use(ip))
            .or_else(|| self.host_addresses().find(|ip| !in_use(ip)))
            .ok_or(AddressError::Exhausted(self.range))?;
        taken.insert(uid.to_owned(), ip);
        Ok(IpAddr::V4(ip))
    }

    /// The address a pod has, if it runs here.
    pub fn of(&self, uid: &str) -> Option<IpAddr> {
        let taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        taken.get(uid).map(|ip| IpAddr::V4(*ip))
    }

    /// Gives a pod's address back.
    pub fn release(&self, uid: &str) {
        self.taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    /// The node's own address in the range (its first host address), where it serves NodePorts too.
    pub fn node_address(&self) -> Option<Ipv4Addr> {
        self.range.hosts().next()
    }

    /// The addresses pods may get: the range's hosts but the first (the node's own).
    fn host_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.range.hosts().skip(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_distinct_addresses_after_the_nodes_own() {
        let addresses = PodAddresses::new("127.42.3.0/24").unwrap();
        assert_eq!(
            addresses.assign("a", None).unwrap().to_string(),
            "127.42.3.2"
        );
        assert_eq!(
            addresses.assign("b", None).unwrap().to_string(),
            "127.42.3.3"
        );
        assert_eq!(
            addresses.assign("a", None).unwrap().to_string(),
            "127.42.3.2"
        );
        addresses.release("a");
        assert_eq!(
            addresses.assign("c", None).unwrap().to_string(),
            "127.42.3.2"
        );
    }

    #[test]
    fn a_restarted_agent_keeps_a_pods_address_when_it_is_free() {
        let addresses = PodAddresses::new("127.42.3.0/24").unwrap();
        assert_eq!(
            addresses
                .assign("a", Some("127.42.3.9"))
                .unwrap()
                .to_string(),
            "127.42.3.9"
        );
        // Taken, outside the range, or the node's own: a fresh one instead.
        assert_eq!(
            addresses
                .assign("b", Some("127.42.3.9"))
                .unwrap()
                .to_string(),
            "127.42.3.2"
        );
        assert_eq!(
            addresses.assign("c", Some("10.0.0.9")).unwrap().to_string(),
            "127.42.3.3"
        );
        assert_eq!(
            addresses
                .assign("d", Some("127.42.3.1"))
                .unwrap()
                .to_string(),
            "127.42.3.4"
        );
    }

    #[test]
    fn a_full_range_is_reported_and_bad_ranges_are_refused() {
        let addresses = PodAddresses::new("127.42.3.0/30").unwrap();
        addresses.assign("a", None).unwrap();
        assert!(matches!(
            addresses.assign("b", None),
            Err(AddressError::Exhausted(_))
        ));
        assert!(matches!(
            PodAddresses::new("fd00::/64"),
            Err(AddressError::BadRange(_))
        ));
    }
}
