//! What the proxy should serve, computed from Services and EndpointSlices alone: one frontend per address a
//! Service port is reached at (its cluster IP, and every node address for a NodePort), with the ready endpoints
//! behind it.

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The annotation that picks the proxy mode of every port of a Service (`http` or `tcp`), over `appProtocol`.
pub const MODE_ANNOTATION: &str = "wasmkube.io/proxy-mode";
/// The annotation that picks the balancing of a Service: `round-robin` (default) or `least-requests`.
pub const BALANCE_ANNOTATION: &str = "wasmkube.io/load-balancer";
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Kubernetes' default ClientIP affinity timeout: three hours.
const DEFAULT_AFFINITY: Duration = Duration::from_secs(10800);

/// How connections are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// L4: each connection goes to one endpoint.
    Tcp,
    /// L7: each HTTP/1.1 request is balanced on its own.
    Http,
}

/// How an endpoint is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// In turn.
    RoundRobin,
    /// The one with the fewest requests (or connections) in flight.
    LeastRequests,
}

/// How a frontend behaves, apart from its endpoints; a change of it restarts the frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    /// `namespace/name:port`, for logs and errors.
    pub service: String,
    /// L4 or L7.
    pub mode: Mode,
    /// Endpoint choice.
    pub balance: Balance,
    /// ClientIP session affinity, with its timeout.
    pub affinity: Option<Duration>,
}

/// One address the proxy listens on, and where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// How.
    pub behaviour: Behaviour,
    /// The ready endpoints (or, if none is ready, the serving ones that are terminating).
    pub endpoints: Vec<SocketAddr>,
}

/// Every frontend of the cluster's Services, by listen address. `node_ips` are the addresses NodePorts are
/// served on.
pub fn frontends(
    services: &[impl AsRef<Service>],
    slices: &[impl AsRef<EndpointSlice>],
    node_ips: &[IpAddr],
) -> BTreeMap<SocketAddr, Frontend> {
    let mut slices_by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices.iter().map(AsRef::as_ref) {
        if let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) {
            slices_by_service
                .entry((slice.namespace().unwrap_or_default(), service.clone()))
                .or_default()
                .push(slice);
        }
    }
    let mut frontends = BTreeMap::new();
    for service in services.iter().map(AsRef::as_ref) {
        let Some(spec) = &service.spec else { continue };
        let namespace = service.namespace().unwrap_or_default();
        let cluster_ip = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let Some(cluster_ip) = cluster_ip else {
            // Headless and ExternalName Services are not proxied.
            continue;
        };
        let slices = slices_by_service
            .get(&(namespace.clone(), service.name_any()))
            .map_or(&[][..], Vec::as_slice);
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let behaviour = Behaviour {
                service: format!("{namespace}/{}:{}", service.name_any(), port_label(port)),
                mode: mode(service, port),
                balance: balance(service),
                affinity: affinity(service),
            };
            let endpoints = endpoints_of(slices, port.name.as_deref().unwrap_or_default());
            let mut listen = vec![SocketAddr::new(cluster_ip, port.port as u16)];
            if let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok()) {
                listen.extend(node_ips.iter().map(|ip| SocketAddr::new(*ip, node_port)));
            }
            for address in listen {
                frontends.insert(
                    address,
                    Frontend {
                        listen: address,
                        behaviour: behaviour.clone(),
                        endpoints: endpoints.clone(),
                    },
                );
            }
        }
    }
    frontends
}

fn port_label(port: &ServicePort) -> String {
    match port.name.as_deref() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => port.port.to_string(),
    }
}

fn mode(service: &Service, port: &ServicePort) -> Mode {
    let annotated = service
        .annotations()
        .get(MODE_ANNOTATION)
        .map(String::as_str);
    match annotated.or(port.app_protocol.as_deref()) {
        Some("http" | "HTTP" | "kubernetes.io/http") => Mode::Http,
        _ => Mode::Tcp,
    }
}

fn balance(service: &Service) -> Balance {
    match service
        .annotations()
        .get(BALANCE_ANNOTATION)
        .map(String::as_str)
    {
        Some("least-requests") => Balance::LeastRequests,
        _ => Balance::RoundRobin,
    }
}

fn affinity(service: &Service) -> Option<Duration> {
    let spec = service.spec.as_ref()?;
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return None;
    }
    let seconds = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        .and_then(|s| u64::try_from(s).ok());
    Some(seconds.map_or(DEFAULT_AFFINITY, Duration::from_secs))
}

/// The addresses of a Service port's endpoints: the ready ones; if none is ready, the ones still serving while
/// they terminate (as kube-proxy does).
fn endpoints_of(slices: &[&EndpointSlice], port_name: &str) -> Vec<SocketAddr> {
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in slices {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok());
        let Some(port) = port else { continue };
        for endpoint in slice.endpoints.iter().flatten() {
            let conditions = endpoint.conditions.as_ref();
            let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(is_ready);
            let target = if is_ready {
                &mut ready
            } else if serving {
                &mut terminating
            } else {
                continue;
            };
            target.extend(
                endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                    .map(|ip| SocketAddr::new(ip, port)),
            );
        }
    }
    let mut chosen = if ready.is_empty() { terminating } else { ready };
    chosen.sort();
    chosen.dedup();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::sync::Arc;

    fn service(type_: &str, app_protocol: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                cluster_ip: Some("127.43.0.10".into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    node_port: (type_ == "NodePort").then_some(30080),
                    app_protocol: app_protocol.map(str::to_owned),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn endpoint(ip: &str, ready: bool, serving: bool) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(!ready),
            }),
            ..Default::default()
        }
    }

    fn slice(endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                namespace: Some("default".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_owned(), "web".to_owned())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(endpoints),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                ..Default::default()
            }]),
        }
    }

    #[test]
    fn a_cluster_ip_port_is_served_with_its_ready_endpoints_only() {
        let slices = [slice(vec![
            endpoint("127.42.0.2", true, true),
            endpoint("127.42.0.3", false, false),
            endpoint("127.42.1.2", true, true),
        ])];
        let table = frontends(
            &[Arc::new(service("ClusterIP", None))],
            &slices.map(Arc::new),
            &[],
        );
        let frontend = &table[&"127.43.0.10:80".parse().unwrap()];
        assert_eq!(frontend.behaviour.mode, Mode::Tcp);
        assert_eq!(frontend.behaviour.service, "default/web:http");
        assert_eq!(
            frontend.endpoints,
            [
                "127.42.0.2:8080".parse().unwrap(),
                "127.42.1.2:8080".parse().unwrap()
            ]
        );
    }

    #[test]
    fn terminating_endpoints_serve_only_when_nothing_is_ready() {
        let slices = [slice(vec![endpoint("127.42.0.2", false, true)])];
        let table = frontends(
            &[Arc::new(service("ClusterIP", None))],
            &slices.map(Arc::new),
            &[],
        );
        assert_eq!(
            table[&"127.43.0.10:80".parse().unwrap()].endpoints,
            ["127.42.0.2:8080".parse().unwrap()]
        );
    }

    #[test]
    fn node_ports_listen_on_every_node_address_and_app_protocol_http_means_l7() {
        let nodes: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "127.42.0.1".parse().unwrap()];
        let table = frontends(
            &[Arc::new(service("NodePort", Some("http")))],
            &[Arc::new(slice(vec![]))],
            &nodes,
        );
        let listen: Vec<String> = table.keys().map(ToString::to_string).collect();
        assert_eq!(
            listen,
            ["127.0.0.1:30080", "127.42.0.1:30080", "127.43.0.10:80"]
        );
        assert!(table.values().all(|f| f.behaviour.mode == Mode::Http));
        assert!(table.values().all(|f| f.endpoints.is_empty()));
    }

    #[test]
    fn headless_services_are_not_proxied() {
        let mut headless = service("ClusterIP", None);
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        assert!(frontends(&[Arc::new(headless)], &[Arc::new(slice(vec![]))], &[]).is_empty());
    }

    #[test]
    fn annotations_choose_the_mode_and_balancing_and_client_ip_affinity_defaults_to_three_hours() {
        let mut svc = service("ClusterIP", Some("http"));
        svc.metadata.annotations = Some(
            [
                (MODE_ANNOTATION.to_owned(), "tcp".to_owned()),
                (BALANCE_ANNOTATION.to_owned(), "least-requests".to_owned()),
            ]
            .into(),
        );
        svc.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        let table = frontends(&[Arc::new(svc)], &[Arc::new(slice(vec![]))], &[]);
        let behaviour = &table[&"127.43.0.10:80".parse().unwrap()].behaviour;
        assert_eq!(behaviour.mode, Mode::Tcp);
        assert_eq!(behaviour.balance, Balance::LeastRequests);
        assert_eq!(behaviour.affinity, Some(Duration::from_secs(10800)));
    }
}
