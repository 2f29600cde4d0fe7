//! Pod addresses: every pod on a node gets an IP of its own from the node's podCIDR, so two pods can both listen
//! on port 8080. The first host address is kept for the node itself, as a CNI bridge would.

use ipnet::Ipv4Net;
use std::collections::{HashMap, HashSet};
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
    taken: Mutex<Taken>,
}

/// Who holds which address, both ways, and where the search for a free one starts: every address below
/// `first_free` is taken, so an assignment costs what the run of taken addresses after it does, not the node's
/// pod count.
#[derive(Debug, Default)]
struct Taken {
    by_uid: HashMap<String, Ipv4Addr>,
    uids: HashSet<Ipv4Addr>,
    first_free: u32,
}

impl PodAddresses {
    /// Addresses from a podCIDR such as `127.42.3.0/24`.
    pub fn new(pod_cidr: &str) -> Result<Self, AddressError> {
        let range = parse_range(pod_cidr)?;
        Ok(Self {
            range,
            taken: Mutex::new(Taken::default()),
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
        if let Some(ip) = taken.by_uid.get(uid) {
            return Ok(IpAddr::V4(*ip));
        }
        let (first, last) = host_bounds(self.range);
        let is_pod_address = |ip: Ipv4Addr| (first..=last).contains(&u32::from(ip));
        let ip = match previous
            .and_then(|p| p.parse::<Ipv4Addr>().ok())
            .filter(|ip| is_pod_address(*ip) && !taken.uids.contains(ip))
        {
            Some(ip) => ip,
            None => {
                let from = taken.first_free.max(first);
                let free = (from..=last)
                    .map(Ipv4Addr::from)
                    .find(|ip| !taken.uids.contains(ip))
                    .ok_or(AddressError::Exhausted(self.range))?;
                taken.first_free = u32::from(free);
                free
            }
        };
        taken.by_uid.insert(uid.to_owned(), ip);
        taken.uids.insert(ip);
        Ok(IpAddr::V4(ip))
    }

    /// The address a pod has, if it runs here.
    pub fn of(&self, uid: &str) -> Option<IpAddr> {
        let taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        taken.by_uid.get(uid).map(|ip| IpAddr::V4(*ip))
    }

    /// Gives a pod's address back.
    pub fn release(&self, uid: &str) {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = taken.by_uid.remove(uid) {
            taken.uids.remove(&ip);
            taken.first_free = taken.first_free.min(u32::from(ip));
        }
    }

    /// The node's own address in the range (its first host address), where it serves NodePorts too.
    pub fn node_address(&self) -> Option<Ipv4Addr> {
        self.range.hosts().next()
    }
}

fn parse_range(pod_cidr: &str) -> Result<Ipv4Net, AddressError> {
    pod_cidr
        .parse::<Ipv4Net>()
        .map(|range| range.trunc())
        .map_err(|_| AddressError::BadRange(pod_cidr.to_owned()))
}

/// The first and last address pods may get, as numbers: the range's hosts but the first (the node's own). An
/// empty span (first > last) when the range has no room for a pod.
fn host_bounds(range: Ipv4Net) -> (u32, u32) {
    let network = u32::from(range.network());
    let broadcast = u32::from(range.broadcast());
    match range.prefix_len() {
        32 => (network.saturating_add(1), network),
        31 => (network.saturating_add(1), broadcast),
        _ => (network.saturating_add(2), broadcast.saturating_sub(1)),
    }
}

/// How many pods a podCIDR has addresses for (its hosts but the node's own); 0 for a range that is not one.
pub fn pod_capacity(pod_cidr: &str) -> u32 {
    parse_range(pod_cidr).map_or(0, |range| {
        let (first, last) = host_bounds(range);
        let count = (u64::from(last) + 1).saturating_sub(u64::from(first));
        u32::try_from(count).unwrap_or(u32::MAX)
    })
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

    #[test]
    fn a_range_holds_its_hosts_but_the_nodes_own_address() {
        assert_eq!(pod_capacity("127.42.3.0/24"), 253);
        assert_eq!(pod_capacity("127.42.0.0/19"), 8189);
        assert_eq!(pod_capacity("127.42.3.0/30"), 1);
        assert_eq!(pod_capacity("127.42.3.0/31"), 1);
        assert_eq!(pod_capacity("127.42.3.0/32"), 0);
        assert_eq!(pod_capacity("fd00::/64"), 0);
        // As many pods as the range holds get addresses, all distinct; the next is refused.
        let addresses = PodAddresses::new("127.42.3.0/26").unwrap();
        let ips: HashSet<IpAddr> = (0..pod_capacity("127.42.3.0/26"))
            .map(|i| addresses.assign(&i.to_string(), None).unwrap())
            .collect();
        assert_eq!(ips.len(), 61);
        assert!(addresses.assign("one more", None).is_err());
        // A released address in the middle is the next one given.
        addresses.release("30");
        assert_eq!(
            addresses.assign("again", None).unwrap().to_string(),
            "127.42.3.32"
        );
    }
}
