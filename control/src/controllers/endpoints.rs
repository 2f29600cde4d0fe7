//! The endpoints controller: for every Service with a selector, the addresses of its pods, as an Endpoints
//! object and an EndpointSlice (one per set of resolved ports): ready pods serve, others wait in
//! notReadyAddresses, a targetPort by name resolves to each pod's own container port of that name.

use super::controller_loop::ControllerLoop;
use super::ownership::controller_reference;
use super::{ControllerError, cached_in, retry_after};
use crate::cache::Cache;
use crate::informers::Informers;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

struct Context {
    client: kube::Client,
    pods: Cache<Pod>,
}

/// A Service port resolved against one pod: (name, port, protocol, appProtocol).
type ResolvedPort = (Option<String>, i32, String, Option<String>);

/// The Service's ports as one pod serves them; `None` if a named targetPort is not among its container ports.
fn resolve_ports(service: &Service, pod: &Pod) -> Option<Vec<ResolvedPort>> {
    let ports = service.spec.as_ref()?.ports.clone().unwrap_or_default();
    let container_ports: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .collect();
    ports
        .iter()
        .map(|p| {
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let number = match &p.target_port {
                None => p.port,
                Some(IntOrString::Int(n)) => *n,
                Some(IntOrString::String(name)) => container_ports
                    .iter()
                    .find(|c| c.name.as_deref() == Some(name.as_str()))
                    .map(|c| c.container_port)?,
            };
            Some((p.name.clone(), number, protocol, p.app_protocol.clone()))
        })
        .collect()
}

fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// A pod behind a Service.
struct Member<'a> {
    pod: &'a Pod,
    ready: bool,
    terminating: bool,
}

/// The pods a Service selects that have an address, grouped by how its ports resolve on them.
fn groups<'a>(
    service: &Service,
    pods: &'a [Arc<Pod>],
) -> BTreeMap<Vec<ResolvedPort>, Vec<Member<'a>>> {
    let spec = service.spec.as_ref();
    let publish_not_ready = spec.and_then(|s| s.publish_not_ready_addresses) == Some(true);
    let Some(selector) = spec
        .and_then(|s| s.selector.clone())
        .filter(|s| !s.is_empty())
    else {
        return BTreeMap::new();
    };
    let mut groups: BTreeMap<Vec<ResolvedPort>, Vec<Member>> = BTreeMap::new();
    for pod in pods {
        let labels = pod.labels();
        let selected = selector.iter().all(|(k, v)| labels.get(k) == Some(v));
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let addressed = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .is_some_and(|ip| !ip.is_empty());
        if !selected || !addressed || matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let Some(ports) = resolve_ports(service, pod) else {
            continue;
        };
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let ready = publish_not_ready || (super::pods::is_ready(pod) && !terminating);
        groups.entry(ports).or_default().push(Member {
            pod: pod.as_ref(),
            ready,
            terminating,
        });
    }
    for members in groups.values_mut() {
        members.sort_by_key(|m| pod_ip(m.pod));
    }
    groups
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

/// The Endpoints object the Service should have.
pub fn desired_endpoints(service: &Service, pods: &[Arc<Pod>]) -> Endpoints {
    let subsets: Vec<EndpointSubset> = groups(service, pods)
        .into_iter()
        .map(|(ports, members)| {
            let address = |pod: &Pod| EndpointAddress {
                ip: pod_ip(pod),
                node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                target_ref: Some(pod_reference(pod)),
                hostname: None,
            };
            let ready: Vec<EndpointAddress> = members
                .iter()
                .filter(|m| m.ready)
                .map(|m| address(m.pod))
                .collect();
            let waiting: Vec<EndpointAddress> = members
                .iter()
                .filter(|m| !m.ready)
                .map(|m| address(m.pod))
                .collect();
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!waiting.is_empty()).then_some(waiting),
                ports: Some(
                    ports
                        .into_iter()
                        .map(|(name, port, protocol, app_protocol)| EndpointPort {
                            name,
                            port,
                            protocol: Some(protocol),
                            app_protocol,
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: service.metadata.labels.clone(),
            owner_references: Some(vec![controller_reference(service)]),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

/// The EndpointSlices the Service should have, one per set of resolved ports, named `<service>-<n>`.
pub fn desired_slices(service: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSlice> {
    let name = service.name_any();
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let mut groups: Vec<(Vec<ResolvedPort>, Vec<Member>)> =
        groups(service, pods).into_iter().collect();
    if groups.is_empty() {
        // A Service with no endpoints still has its (empty) slice with its ports, as Kubernetes keeps one.
        let ports = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default();
        let unresolved = ports
            .into_iter()
            .map(|p| {
                (
                    p.name,
                    p.port,
                    p.protocol.unwrap_or_else(|| "TCP".into()),
                    p.app_protocol,
                )
            })
            .collect();
        groups.push((unresolved, Vec::new()));
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(i, (ports, members))| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{name}-{i}")),
                namespace: service.metadata.namespace.clone(),
                labels: Some(labels.clone()),
                owner_references: Some(vec![controller_reference(service)]),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(
                members
                    .into_iter()
                    .map(
                        |Member {
                             pod,
                             ready,
                             terminating,
                         }| Endpoint {
                            addresses: vec![pod_ip(pod)],
                            conditions: Some(EndpointConditions {
                                ready: Some(ready),
                                serving: Some(ready || (terminating && super::pods::is_ready(pod))),
                                terminating: Some(terminating),
                            }),
                            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                            target_ref: Some(pod_reference(pod)),
                            ..Default::default()
                        },
                    )
                    .collect(),
            ),
            ports: Some(
                ports
                    .into_iter()
                    .map(|(name, port, protocol, app_protocol)| SlicePort {
                        // An unnamed Service port is named "" in slices (kubectl's describe needs the field).
                        name: Some(name.unwrap_or_default()),
                        port: Some(port),
                        protocol: Some(protocol),
                        app_protocol,
                    })
                    .collect(),
            ),
        })
        .collect()
}

/// Creates `desired` or replaces what is there if it differs in what this controller manages.
async fn put<K>(
    api: &Api<K>,
    mut desired: K,
    same: impl Fn(&K, &K) -> bool,
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    match api.get_opt(&name).await? {
        None => api
            .create(&PostParams::default(), &desired)
            .await
            .map(|_| ()),
        Some(current) if same(&current, &desired) => Ok(()),
        Some(current) => {
            desired.meta_mut().resource_version = current.meta().resource_version.clone();
            api.replace(&name, &PostParams::default(), &desired)
                .await
                .map(|_| ())
        }
    }
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let selects = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty());
    if service.metadata.deletion_timestamp.is_some() || !selects {
        return Ok(Action::await_change());
    }
    let namespace = service.namespace().unwrap_or_default();
    let pods = cached_in(&ctx.pods, &namespace).await?;
    let endpoints: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &namespace);
    put(&endpoints, desired_endpoints(&service, &pods), |a, b| {
        a.subsets == b.subsets && a.metadata.labels == b.metadata.labels
    })
    .await?;
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &namespace);
    let wanted = desired_slices(&service, &pods);
    for slice in &wanted {
        put(&slices, slice.clone(), |a, b| {
            a.endpoints == b.endpoints
                && a.ports == b.ports
                && a.metadata.labels == b.metadata.labels
        })
        .await?;
    }
    let selector = format!(
        "{SERVICE_NAME_LABEL}={},{MANAGED_BY_LABEL}={MANAGED_BY}",
        service.name_any()
    );
    for extra in slices
        .list(&ListParams::default().labels(&selector))
        .await?
    {
        if !wanted
            .iter()
            .any(|w| w.metadata.name == extra.metadata.name)
        {
            match slices
                .delete(&extra.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    // Someone else may edit or delete what this controller owns: look again now and then.
    Ok(Action::requeue(Duration::from_secs(30)))
}

fn error_policy(service: Arc<Service>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(service = %service.name_any(), namespace = ?service.namespace(), %error, "endpoints sync failed");
    retry_after(error)
}

/// Runs the controller until the process ends.
pub async fn run(client: kube::Client, informers: &Informers) {
    let (pods, pod_changes) = informers.pods().follow();
    let controller = ControllerLoop::new(
        "endpoints",
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    let ctx = Arc::new(Context { client, pods });
    // A pod's change concerns every Service of its namespace: the ones that select it now, and the ones that
    // selected it before its labels changed.
    let controller = controller.watches_shared_stream(pod_changes, move |pod: Arc<Pod>| {
        let namespace = pod.namespace();
        services
            .state()
            .iter()
            .filter(|s| s.namespace() == namespace)
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect::<Vec<_>>()
    });
    controller.run(reconcile, error_policy, ctx).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i32) -> Arc<Pod> {
        Arc::new(serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        })).unwrap())
    }

    fn service() -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "svc"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http", "appProtocol": "http"}]}
        })).unwrap()
    }

    #[test]
    fn ready_pods_serve_others_wait_and_named_ports_resolve_per_pod() {
        let pods = vec![
            pod("a", "127.42.1.2", true, "http", 8080),
            pod("b", "127.42.1.3", false, "http", 8080),
            pod("c", "127.42.2.2", true, "http", 9090),
            pod("d", "127.42.2.3", true, "metrics", 9100),
        ];
        let endpoints = desired_endpoints(&service(), &pods);
        let subsets = endpoints.subsets.unwrap();
        assert_eq!(
            subsets.len(),
            2,
            "two port mappings: 8080 and 9090; d has no port named http"
        );
        let on_8080 = subsets
            .iter()
            .find(|s| s.ports.as_ref().unwrap()[0].port == 8080)
            .unwrap();
        assert_eq!(on_8080.addresses.as_ref().unwrap()[0].ip, "127.42.1.2");
        assert_eq!(
            on_8080.not_ready_addresses.as_ref().unwrap()[0].ip,
            "127.42.1.3"
        );
        assert_eq!(
            on_8080.ports.as_ref().unwrap()[0].app_protocol.as_deref(),
            Some("http")
        );
        let slices = desired_slices(&service(), &pods);
        assert_eq!(slices.len(), 2);
        assert_eq!(
            slices[0].metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL],
            "web"
        );
        let endpoints: Vec<_> = slices
            .iter()
            .flat_map(|s| s.endpoints.clone().unwrap())
            .collect();
        assert_eq!(endpoints.len(), 3);
        assert!(endpoints.iter().any(|e| e.addresses[0] == "127.42.1.3"
            && e.conditions.as_ref().unwrap().ready == Some(false)));
    }

    #[test]
    fn a_service_without_pods_keeps_one_empty_slice_with_its_ports() {
        let slices = desired_slices(&service(), &[]);
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0].endpoints, Some(Vec::new()));
        assert_eq!(slices[0].ports.as_ref().unwrap()[0].port, Some(80));
        assert_eq!(desired_endpoints(&service(), &[]).subsets, None);
    }

    /// Regression (issue 14): kubectl 1.37's `describe svc` panicked on a slice port without a name.
    #[test]
    fn an_unnamed_service_port_is_named_empty_in_slices() {
        let mut unnamed = service();
        let spec = unnamed.spec.as_mut().unwrap();
        spec.ports = Some(vec![serde_json::from_value(json!({"port": 80})).unwrap()]);
        let slices = desired_slices(&unnamed, &[]);
        let port = &slices[0].ports.as_ref().unwrap()[0];
        assert_eq!(port.name.as_deref(), Some(""));
        assert_eq!(serde_json::to_value(port).unwrap()["name"], "");
    }
}
