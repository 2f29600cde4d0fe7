//! ClusterIP and NodePort allocation for Services, as kube-apiserver's service storage does it: an empty
//! `clusterIP` gets a free address of the service range, an explicit one must be in the range and free, and it
//! never changes once set; NodePort Services get a free port of the node-port range for every port without one.
//! What is taken is read from the Services themselves, so deleting a Service frees its addresses.

use crate::api::validation::Cause;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

/// The ranges Services get their addresses and node ports from.
#[derive(Debug, Clone)]
pub struct ServiceNetwork {
    /// `--service-cluster-ip-range`.
    pub cluster_ip_range: Ipv4Net,
    /// `--service-node-port-range`.
    pub node_ports: RangeInclusive<u16>,
}

/// What the other Services already hold.
#[derive(Debug, Default)]
pub struct Taken {
    /// Cluster IPs.
    pub ips: HashSet<Ipv4Addr>,
    /// Node ports.
    pub node_ports: HashSet<u16>,
}

impl Taken {
    /// Adds what one Service holds.
    pub fn add(&mut self, service: &Service) {
        let Some(spec) = &service.spec else { return };
        for ip in cluster_ips(spec) {
            if let Ok(ip) = ip.parse() {
                self.ips.insert(ip);
            }
        }
        for port in spec.ports.iter().flatten() {
            if let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok()) {
                self.node_ports.insert(node_port);
            }
        }
    }
}

fn cluster_ips(spec: &ServiceSpec) -> Vec<String> {
    match (&spec.cluster_ip, &spec.cluster_ips) {
        (_, Some(ips)) if !ips.is_empty() => ips.clone(),
        (Some(ip), _) if !ip.is_empty() => vec![ip.clone()],
        _ => Vec::new(),
    }
}

fn uses_node_ports(spec: &ServiceSpec) -> bool {
    matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"))
}

/// A random number for picking free addresses (Kubernetes picks at random too, so a freed address is not
/// reused at once).
fn random() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

impl ServiceNetwork {
    /// Fills in the Service's cluster IP, IP families and node ports, keeping what `old` (the stored version of
    /// an update) already has; errors name the fields as Kubernetes does.
    pub fn allocate(
        &self,
        service: &mut Service,
        old: Option<&Service>,
        taken: &Taken,
    ) -> Result<(), Vec<Cause>> {
        let Some(spec) = service.spec.as_mut() else {
            return Ok(());
        };
        let old_spec = old.and_then(|o| o.spec.as_ref());
        let mut causes = Vec::new();
        if spec.type_.as_deref() == Some("ExternalName") {
            spec.cluster_ip = None;
            spec.cluster_ips = None;
        } else {
            self.allocate_cluster_ip(spec, old_spec, taken, &mut causes);
        }
        self.allocate_node_ports(spec, old_spec, taken, &mut causes);
        if causes.is_empty() {
            Ok(())
        } else {
            Err(causes)
        }
    }

    fn allocate_cluster_ip(
        &self,
        spec: &mut ServiceSpec,
        old: Option<&ServiceSpec>,
        taken: &Taken,
        causes: &mut Vec<Cause>,
    ) {
        let old_ip = old.and_then(|o| cluster_ips(o).into_iter().next());
        let wanted = cluster_ips(spec).into_iter().next();
        let ip = match (wanted, old_ip) {
            // An update that leaves the address out keeps the old one (as `kubectl apply` of a manifest without it).
            (None, Some(old)) => old,
            (Some(new), Some(old)) if new != old => {
                causes.push(Cause::invalid(
                    "spec.clusterIPs[0]",
                    &new,
                    "may not change once set",
                ));
                return;
            }
            (Some(same), Some(_)) => same,
            (Some(new), None) if new == "None" => new,
            (Some(new), None) => match self.check_requested_ip(&new, taken) {
                Ok(ip) => ip.to_string(),
                Err(cause) => {
                    causes.push(cause);
                    return;
                }
            },
            (None, None) => match self.free_ip(taken) {
                Some(ip) => ip.to_string(),
                None => {
                    causes.push(Cause::invalid(
                        "spec.clusterIPs",
                        "",
                        &format!(
                            "failed to allocate a serviceIP: range is full ({})",
                            self.cluster_ip_range
                        ),
                    ));
                    return;
                }
            },
        };
        if ip == "None" && uses_node_ports(spec) {
            causes.push(Cause::invalid(
                "spec.clusterIPs[0]",
                "None",
                &format!(
                    "may not be set to 'None' for {} services",
                    spec.type_.as_deref().unwrap_or_default()
                ),
            ));
            return;
        }
        spec.cluster_ip = Some(ip.clone());
        spec.cluster_ips = Some(vec![ip]);
        match spec.ip_families.as_deref() {
            None | Some([]) => spec.ip_families = Some(vec!["IPv4".to_owned()]),
            Some([first, ..]) if first == "IPv6" => causes.push(Cause::invalid(
                "spec.ipFamilies[0]",
                first,
                "not configured on this cluster",
            )),
            Some(_) => {}
        }
        spec.ip_family_policy
            .get_or_insert_with(|| "SingleStack".to_owned());
    }

    fn check_requested_ip(&self, text: &str, taken: &Taken) -> Result<Ipv4Addr, Cause> {
        let field = "spec.clusterIPs[0]";
        let ip: Ipv4Addr = text.parse().map_err(|_| {
            Cause::invalid(
                field,
                text,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )
        })?;
        let range = self.cluster_ip_range;
        if !range.contains(&ip) || ip == range.network() || ip == range.broadcast() {
            return Err(Cause::invalid(
                field,
                text,
                &format!(
                    "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}"
                ),
            ));
        }
        if taken.ips.contains(&ip) {
            return Err(Cause::invalid(
                field,
                text,
                &format!("failed to allocate IP {ip}: provided IP is already allocated"),
            ));
        }
        Ok(ip)
    }

    /// A free address at random, never the network, broadcast or first address (the first is kept for a
    /// `kubernetes` Service, as Kubernetes does).
    fn free_ip(&self, taken: &Taken) -> Option<Ipv4Addr> {
        let range = self.cluster_ip_range;
        let first = u32::from(range.network()) + 2;
        let last = u32::from(range.broadcast()).checked_sub(1)?;
        let size = u64::from(last.checked_sub(first)?) + 1;
        let start = random() % size;
        (0..size)
            .map(|i| Ipv4Addr::from(first + ((start + i) % size) as u32))
            .find(|ip| !taken.ips.contains(ip))
    }

    fn allocate_node_ports(
        &self,
        spec: &mut ServiceSpec,
        old: Option<&ServiceSpec>,
        taken: &Taken,
        causes: &mut Vec<Cause>,
    ) {
        let wants_node_ports = uses_node_ports(spec);
        let old_node_port = |port: &ServicePort| {
            old.filter(|o| uses_node_ports(o))
                .and_then(|o| {
                    o.ports.iter().flatten().find(|p| {
                        p.port == port.port && p.protocol == port.protocol && p.node_port.is_some()
                    })
                })
                .and_then(|p| p.node_port)
        };
        let mut own: HashSet<u16> = HashSet::new();
        for (i, port) in spec.ports.iter_mut().flatten().enumerate() {
            let field = format!("spec.ports[{i}].nodePort");
            if !wants_node_ports {
                // Leaving NodePort gives the ports back; a ClusterIP Service asking for one is refused
                // (0 is Go's "unset", as protobuf clients send it).
                let requested = port.node_port.filter(|p| *p != 0);
                if requested.is_some() && old_node_port(port) != requested {
                    causes.push(Cause::forbidden(
                        field,
                        &format!(
                            "may not be used when `type` is '{}'",
                            spec.type_.as_deref().unwrap_or("ClusterIP")
                        ),
                    ));
                }
                port.node_port = None;
                continue;
            }
            let previous = old_node_port(port);
            let number = match port.node_port.filter(|p| *p != 0).or(previous) {
                Some(n) if Some(n) == previous => u16::try_from(n).ok(),
                Some(n) => match self.check_requested_port(n, taken, &own) {
                    Ok(n) => Some(n),
                    Err(detail) => {
                        causes.push(Cause::invalid_number(field, i64::from(n), &detail));
                        continue;
                    }
                },
                None => self.free_node_port(taken, &own),
            };
            let Some(number) = number else {
                causes.push(Cause::invalid(
                    field,
                    "",
                    &format!(
                        "failed to allocate a nodePort: range is full ({}-{})",
                        self.node_ports.start(),
                        self.node_ports.end()
                    ),
                ));
                continue;
            };
            own.insert(number);
            port.node_port = Some(i32::from(number));
        }
        // A Service that stops being reachable from outside drops the policy it had for that (Kubernetes'
        // dropTypeDependentFields); one that sets it anyway is refused by validation.
        if !wants_node_ports
            && let Some(old) = old.filter(|o| uses_node_ports(o))
            && spec.external_traffic_policy == old.external_traffic_policy
        {
            spec.external_traffic_policy = None;
        }
    }

    fn check_requested_port(
        &self,
        number: i32,
        taken: &Taken,
        own: &HashSet<u16>,
    ) -> Result<u16, String> {
        let (start, end) = (self.node_ports.start(), self.node_ports.end());
        let port = u16::try_from(number)
            .ok()
            .filter(|p| self.node_ports.contains(p))
            .ok_or_else(|| {
                format!(
                    "provided port is not in the valid range. The range of valid ports is {start}-{end}"
                )
            })?;
        // One Service may use a node port for TCP and UDP of the same port; two Services may not share one.
        if taken.node_ports.contains(&port) && !own.contains(&port) {
            return Err("provided port is already allocated".to_owned());
        }
        Ok(port)
    }

    fn free_node_port(&self, taken: &Taken, own: &HashSet<u16>) -> Option<u16> {
        let (start, end) = (*self.node_ports.start(), *self.node_ports.end());
        let size = u64::from(end.checked_sub(start)?) + 1;
        let offset = random() % size;
        (0..size)
            .map(|i| start + ((offset + i) % size) as u16)
            .find(|p| !taken.node_ports.contains(p) && !own.contains(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> ServiceNetwork {
        ServiceNetwork {
            cluster_ip_range: "10.96.0.0/29".parse().unwrap(),
            node_ports: 30000..=30002,
        }
    }

    fn service(type_: &str, cluster_ip: Option<&str>, node_port: Option<i32>) -> Service {
        Service {
            spec: Some(ServiceSpec {
                type_: Some(type_.to_owned()),
                cluster_ip: cluster_ip.map(str::to_owned),
                ports: Some(vec![ServicePort {
                    port: 80,
                    protocol: Some("TCP".into()),
                    node_port,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ip_of(service: &Service) -> String {
        service.spec.as_ref().unwrap().cluster_ip.clone().unwrap()
    }

    fn node_port_of(service: &Service) -> Option<i32> {
        service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port
    }

    #[test]
    fn empty_cluster_ips_get_free_addresses_until_the_range_is_full() {
        // 10.96.0.0/29: .0 network, .1 kept for `kubernetes`, .7 broadcast: .2 to .6 are handed out.
        let net = network();
        let mut taken = Taken::default();
        let mut seen = Vec::new();
        for _ in 0..5 {
            let mut svc = service("ClusterIP", None, None);
            net.allocate(&mut svc, None, &taken).unwrap();
            taken.add(&svc);
            seen.push(ip_of(&svc));
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "10.96.0.2",
                "10.96.0.3",
                "10.96.0.4",
                "10.96.0.5",
                "10.96.0.6"
            ]
        );
        let causes = net
            .allocate(&mut service("ClusterIP", None, None), None, &taken)
            .unwrap_err();
        assert!(causes[0].message.contains("range is full"), "{causes:?}");
    }

    #[test]
    fn requested_cluster_ips_must_be_valid_in_range_and_free() {
        let net = network();
        let mut taken = Taken::default();
        let mut svc = service("ClusterIP", Some("10.96.0.3"), None);
        net.allocate(&mut svc, None, &taken).unwrap();
        assert_eq!(ip_of(&svc), "10.96.0.3");
        taken.add(&svc);
        for (ip, expected) in [
            ("10.96.0.3", "provided IP is already allocated"),
            ("10.1.0.3", "is not in the valid range"),
            ("not-an-ip", "must be a valid IP address"),
        ] {
            let causes = net
                .allocate(&mut service("ClusterIP", Some(ip), None), None, &taken)
                .unwrap_err();
            assert!(causes[0].message.contains(expected), "{causes:?}");
            assert_eq!(causes[0].field, "spec.clusterIPs[0]");
        }
    }

    #[test]
    fn an_update_keeps_the_cluster_ip_and_refuses_to_change_it() {
        let net = network();
        let mut old = service("ClusterIP", None, None);
        net.allocate(&mut old, None, &Taken::default()).unwrap();
        let mut update = service("ClusterIP", None, None);
        net.allocate(&mut update, Some(&old), &Taken::default())
            .unwrap();
        assert_eq!(ip_of(&update), ip_of(&old));
        let other = if ip_of(&old) == "10.96.0.2" {
            "10.96.0.3"
        } else {
            "10.96.0.2"
        };
        let causes = net
            .allocate(
                &mut service("ClusterIP", Some(other), None),
                Some(&old),
                &Taken::default(),
            )
            .unwrap_err();
        assert!(
            causes[0].message.contains("may not change once set"),
            "{causes:?}"
        );
    }

    #[test]
    fn headless_services_get_no_address_and_cannot_be_node_ports() {
        let net = network();
        let mut svc = service("ClusterIP", Some("None"), None);
        net.allocate(&mut svc, None, &Taken::default()).unwrap();
        assert_eq!(ip_of(&svc), "None");
        assert!(
            net.allocate(
                &mut service("NodePort", Some("None"), None),
                None,
                &Taken::default()
            )
            .is_err()
        );
    }

    #[test]
    fn node_ports_are_allocated_kept_checked_and_released() {
        let net = network();
        let mut taken = Taken::default();
        let mut first = service("NodePort", None, None);
        net.allocate(&mut first, None, &taken).unwrap();
        let port = node_port_of(&first).unwrap();
        assert!((30000..=30002).contains(&port));
        // An update without the node port keeps it.
        let mut update = service("NodePort", None, None);
        net.allocate(&mut update, Some(&first), &taken).unwrap();
        assert_eq!(node_port_of(&update), Some(port));
        taken.add(&first);
        let causes = net
            .allocate(&mut service("NodePort", None, Some(port)), None, &taken)
            .unwrap_err();
        assert_eq!(
            causes[0].to_string(),
            format!(
                "spec.ports[0].nodePort: Invalid value: {port}: provided port is already allocated"
            )
        );
        let causes = net
            .allocate(&mut service("NodePort", None, Some(80)), None, &taken)
            .unwrap_err();
        assert!(
            causes[0]
                .message
                .ends_with("The range of valid ports is 30000-30002"),
            "{causes:?}"
        );
        // Back to ClusterIP: the node port goes.
        let mut back = service("ClusterIP", None, Some(port));
        net.allocate(&mut back, Some(&first), &taken).unwrap();
        assert_eq!(node_port_of(&back), None);
        // A ClusterIP Service may not ask for one.
        assert!(
            net.allocate(
                &mut service("ClusterIP", None, Some(30001)),
                None,
                &Taken::default()
            )
            .is_err()
        );
    }
}
