//! The cluster's Services as this node sees them (watched through the apiserver): what the proxy serves, the
//! `<NAME>_SERVICE_HOST` variables pods start with, and the Service names pods look up.

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::net::IpAddr;
use std::time::Duration;
use wasmkube_core::cache::{self, Cache};

/// The cluster's domain, as Kubernetes' default `cluster.local`.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Read access to the watched Services and EndpointSlices; cheap to clone.
#[derive(Clone)]
pub struct ServiceView {
    services: Cache<Service>,
    slices: Cache<EndpointSlice>,
}

/// Starts watching Services and EndpointSlices; the stream yields once per change and must be polled for the
/// view to stay current.
pub fn watch(client: &kube::Client) -> (ServiceView, impl Stream<Item = ()> + Send + use<>) {
    let (services, service_events) = cache::reflect(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let (slices, slice_events) = cache::reflect(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
    );
    let changes = futures::stream::select(
        service_events.map(|event| event.map(|_| ())),
        slice_events.map(|event| event.map(|_| ())),
    )
    .map(|event| {
        if let Err(error) = event {
            tracing::warn!(%error, "watching Services and EndpointSlices");
        }
    });
    (ServiceView { services, slices }, changes)
}

impl ServiceView {
    /// Waits until both watches have listed everything once (or the time is up); false if they have not.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            let _ = self.services.ready().await;
            let _ = self.slices.ready().await;
        })
        .await
        .is_ok()
    }

    /// Whether both watches have listed everything once.
    pub fn is_ready(&self) -> bool {
        self.services.is_ready() && self.slices.is_ready()
    }

    /// Whether `ip` is a Service's cluster IP.
    pub fn is_service_address(&self, ip: IpAddr) -> bool {
        self.services.state().iter().any(|service| {
            let spec = service.spec.as_ref();
            spec.and_then(|s| s.cluster_ips.as_ref())
                .into_iter()
                .flatten()
                .chain(spec.and_then(|s| s.cluster_ip.as_ref()))
                .any(|text| text.parse::<IpAddr>().is_ok_and(|own| own == ip))
        })
    }

    /// Every Service.
    pub fn services(&self) -> Vec<std::sync::Arc<Service>> {
        self.services.state()
    }

    /// Every EndpointSlice.
    pub fn slices(&self) -> Vec<std::sync::Arc<EndpointSlice>> {
        self.slices.state()
    }

    /// The environment variables Kubernetes gives a pod of `namespace` for the Services that exist when it
    /// starts (`enableServiceLinks`).
    pub fn environment(&self, namespace: &str) -> Vec<(String, String)> {
        let services: Vec<_> = self
            .services
            .state()
            .into_iter()
            .filter(|s| s.namespace().as_deref() == Some(namespace))
            .collect();
        service_environment(&services)
    }

    /// The addresses of a Service name as a pod of `namespace` looks it up: `svc`, `svc.ns`, `svc.ns.svc` or
    /// `svc.ns.svc.cluster.local` (a trailing dot allowed). A Service's cluster IP; for a headless Service, its
    /// ready endpoints. None if the name is no Service's.
    pub fn resolve(&self, name: &str, namespace: &str) -> Option<Vec<IpAddr>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let labels: Vec<&str> = name.split('.').collect();
        let suffix_ok = match labels.len() {
            1 | 2 => true,
            3 => labels[2] == "svc",
            n => labels[2] == "svc" && labels[3..].join(".") == CLUSTER_DOMAIN && n == 5,
        };
        if !suffix_ok {
            return None;
        }
        let service_namespace = labels.get(1).copied().unwrap_or(namespace);
        let service = self.services.state().into_iter().find(|s| {
            s.name_any() == labels[0] && s.namespace().as_deref() == Some(service_namespace)
        })?;
        let cluster_ip = service.spec.as_ref()?.cluster_ip.as_deref()?;
        if let Ok(ip) = cluster_ip.parse::<IpAddr>() {
            return Some(vec![ip]);
        }
        let ready = self
            .slices
            .state()
            .into_iter()
            .filter(|slice| {
                slice.namespace().as_deref() == Some(service_namespace)
                    && slice
                        .labels()
                        .get(crate::network::proxy::table::SERVICE_NAME_LABEL)
                        .map(String::as_str)
                        == Some(labels[0])
            })
            .flat_map(|slice| slice.endpoints.clone().unwrap_or_default())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .flat_map(|e| e.addresses)
            .filter_map(|a| a.parse().ok())
            .collect();
        Some(ready)
    }
}

/// A pod's view of Service names: names without a namespace are in the pod's.
#[derive(Clone)]
pub struct PodNames {
    /// The cluster's Services.
    pub view: ServiceView,
    /// The pod's namespace.
    pub namespace: String,
}

impl std::fmt::Debug for PodNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PodNames({})", self.namespace)
    }
}

impl crate::runtime::NameLookup for PodNames {
    fn lookup(&self, name: &str) -> Option<Vec<IpAddr>> {
        self.view.resolve(name, &self.namespace)
    }
}

/// Kubernetes' service links for a set of Services of one namespace: `<NAME>_SERVICE_HOST`,
/// `<NAME>_SERVICE_PORT`, `<NAME>_SERVICE_PORT_<PORT_NAME>` and the Docker-link style `<NAME>_PORT*`.
pub fn service_environment(services: &[impl AsRef<Service>]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let mut services: Vec<&Service> = services.iter().map(AsRef::as_ref).collect();
    services.sort_by_key(|s| s.name_any());
    for service in services {
        let Some(spec) = &service.spec else { continue };
        let Some(host) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| ip.parse::<IpAddr>().is_ok())
        else {
            continue;
        };
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let prefix = service.name_any().to_uppercase().replace('-', "_");
        env.push((format!("{prefix}_SERVICE_HOST"), host.to_owned()));
        env.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for port in ports {
            if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                env.push((
                    format!(
                        "{prefix}_SERVICE_PORT_{}",
                        name.to_uppercase().replace('-', "_")
                    ),
                    port.port.to_string(),
                ));
            }
        }
        let protocol = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".to_owned())
        };
        env.push((
            format!("{prefix}_PORT"),
            format!("{}://{host}:{}", protocol(first).to_lowercase(), first.port),
        ));
        for port in ports {
            let proto = protocol(port);
            let base = format!("{prefix}_PORT_{}_{}", port.port, proto.to_uppercase());
            env.push((
                base.clone(),
                format!("{}://{host}:{}", proto.to_lowercase(), port.port),
            ));
            env.push((format!("{base}_PROTO"), proto.to_lowercase()));
            env.push((format!("{base}_PORT"), port.port.to_string()));
            env.push((format!("{base}_ADDR"), host.to_owned()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn service_links_are_the_kubernetes_variables() {
        let service = Service {
            metadata: ObjectMeta {
                name: Some("redis-primary".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.0.0.11".into()),
                ports: Some(vec![ServicePort {
                    name: Some("redis".into()),
                    port: 6379,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let env: std::collections::BTreeMap<String, String> =
            service_environment(&[std::sync::Arc::new(service)])
                .into_iter()
                .collect();
        // Kubernetes' documented example for a Service "redis-primary" on 10.0.0.11:6379.
        for (name, value) in [
            ("REDIS_PRIMARY_SERVICE_HOST", "10.0.0.11"),
            ("REDIS_PRIMARY_SERVICE_PORT", "6379"),
            ("REDIS_PRIMARY_SERVICE_PORT_REDIS", "6379"),
            ("REDIS_PRIMARY_PORT", "tcp://10.0.0.11:6379"),
            ("REDIS_PRIMARY_PORT_6379_TCP", "tcp://10.0.0.11:6379"),
            ("REDIS_PRIMARY_PORT_6379_TCP_PROTO", "tcp"),
            ("REDIS_PRIMARY_PORT_6379_TCP_PORT", "6379"),
            ("REDIS_PRIMARY_PORT_6379_TCP_ADDR", "10.0.0.11"),
        ] {
            assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
        }
        assert_eq!(env.len(), 8);
    }
}
