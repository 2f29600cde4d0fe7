//! `wasmkube port-forward`: local ports forwarded to a pod's ports through the apiserver, as `kubectl
//! port-forward` does. Each local connection opens its own `pods/{name}/portforward` stream (kube-rs speaks the
//! `v4.channel.k8s.io` WebSocket subprotocol to the apiserver, which relays it to the pod's node agent).

use crate::cli::{self, ClientArgs};
use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ListParams;
use kube::core::Selector;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use tokio::net::{TcpListener, TcpStream};

/// `port-forward` arguments.
#[derive(clap::Args, Debug)]
pub struct PortForwardArgs {
    /// What to forward to: pod/NAME (or just NAME), svc/NAME or deploy/NAME (one of its running pods).
    pub target: String,
    /// [LOCAL:]REMOTE pairs; REMOTE may be a port name; an empty or 0 LOCAL picks a free port.
    #[arg(required = true)]
    pub ports: Vec<String>,
    /// Local addresses to listen on, comma-separated (`localhost` means 127.0.0.1).
    #[arg(long, default_value = "127.0.0.1", value_delimiter = ',')]
    pub address: Vec<String>,
}

/// One `[LOCAL:]REMOTE` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// The local port (0: any free one).
    pub local: u16,
    /// The remote port: a number or a port name.
    pub remote: IntOrString,
}

fn port_number(text: &str, what: &str) -> anyhow::Result<u16> {
    text.parse::<u16>()
        .map_err(|_| anyhow!("invalid {what} port {text:?}: must be a number from 0 to 65535"))
}

/// Parses `8080:80`, `80`, `:80` or `8080:http`.
pub fn parse_mapping(text: &str) -> anyhow::Result<PortMapping> {
    let (local, remote) = match text.split_once(':') {
        Some((local, remote)) => (local, remote),
        None => (text, text),
    };
    if remote.is_empty() {
        bail!("invalid port mapping {text:?}: the remote port is missing");
    }
    let remote = match remote.parse::<u16>() {
        Ok(0) => bail!("invalid port mapping {text:?}: the remote port cannot be 0"),
        Ok(port) => IntOrString::Int(i32::from(port)),
        Err(_)
            if remote
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            IntOrString::String(remote.to_owned())
        }
        Err(_) => {
            bail!("invalid port mapping {text:?}: {remote:?} is neither a port nor a port name")
        }
    };
    let local = match (local, &remote) {
        ("", _) => 0,
        (name, IntOrString::String(remote_name)) if name == remote_name => bail!(
            "invalid port mapping {text:?}: a port name needs a local port number ({text:?} → 8080:{name})"
        ),
        (number, _) => port_number(number, "local")?,
    };
    Ok(PortMapping { local, remote })
}

/// The pod port a remote port means: a number as is, a name looked up in the pod's container ports.
pub fn pod_port(pod: &Pod, remote: &IntOrString) -> anyhow::Result<u16> {
    match remote {
        IntOrString::Int(port) => u16::try_from(*port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| anyhow!("invalid port {port}")),
        IntOrString::String(name) => pod
            .spec
            .iter()
            .flat_map(|spec| &spec.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| {
                anyhow!(
                    "pod {} does not have a named port {name:?}",
                    pod.metadata.name.as_deref().unwrap_or_default()
                )
            }),
    }
}

/// A Service port (by number or name) mapped to what its pods listen on: its targetPort, or the port itself.
pub fn service_target(service: &Service, remote: &IntOrString) -> anyhow::Result<IntOrString> {
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let port = service
        .spec
        .iter()
        .flat_map(|spec| spec.ports.iter().flatten())
        .find(|p| match remote {
            IntOrString::Int(number) => p.port == *number,
            IntOrString::String(port_name) => p.name.as_deref() == Some(port_name),
        })
        .ok_or_else(|| {
            let shown = match remote {
                IntOrString::Int(n) => n.to_string(),
                IntOrString::String(s) => s.clone(),
            };
            anyhow!("service {name} does not have a service port {shown}")
        })?;
    Ok(port
        .target_port
        .clone()
        .unwrap_or(IntOrString::Int(port.port)))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The pod to forward to among a selector's pods: a ready running one first, then any running one, oldest
/// name first so repeated runs agree.
pub fn choose_pod(mut pods: Vec<Pod>) -> Option<Pod> {
    pods.retain(|p| p.metadata.deletion_timestamp.is_none() && phase(p) == "Running");
    pods.sort_by_key(|p| (!is_ready(p), p.metadata.name.clone()));
    pods.into_iter().next()
}

/// The pod a target names, and the remote ports of the mappings as that pod's ports.
async fn resolve(
    client: &Client,
    namespace: &str,
    target: &str,
    mappings: &[PortMapping],
) -> anyhow::Result<(Pod, Vec<u16>)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let (kind, name) = target.split_once('/').unwrap_or(("pod", target));
    let selected = |labels: Selector, what: String| {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels_from(&labels))
                .await
                .map_err(cli::api_error)?;
            choose_pod(list.items).ok_or_else(|| anyhow!("no running pod found for {what}"))
        }
    };
    let (pod, remotes) = match kind {
        "pod" | "pods" | "po" => {
            let pod = pods.get(name).await.map_err(cli::api_error)?;
            let remotes: Vec<IntOrString> = mappings.iter().map(|m| m.remote.clone()).collect();
            (pod, remotes)
        }
        "svc" | "service" | "services" => {
            let services: Api<Service> = Api::namespaced(client.clone(), namespace);
            let service = services.get(name).await.map_err(cli::api_error)?;
            let selector: BTreeMap<String, String> = service
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    anyhow!("service {name} has no selector: it has no pods to forward to")
                })?;
            let remotes = mappings
                .iter()
                .map(|m| service_target(&service, &m.remote))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let pod = selected(selector.into_iter().collect(), format!("service {name}")).await?;
            (pod, remotes)
        }
        "deploy" | "deployment" | "deployments" => {
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            let deployment = deployments.get(name).await.map_err(cli::api_error)?;
            let selector = Selector::try_from(deployment.spec.selector)
                .map_err(|e| anyhow!("deployment {name} has an unusable selector: {e}"))?;
            let pod = selected(selector, format!("deployment {name}")).await?;
            let remotes = mappings.iter().map(|m| m.remote.clone()).collect();
            (pod, remotes)
        }
        other => bail!("cannot port-forward to a {other:?}: use pod/NAME, svc/NAME or deploy/NAME"),
    };
    if phase(&pod) != "Running" {
        bail!(
            "unable to forward port because pod is not running. Current status={}",
            phase(&pod)
        );
    }
    let ports = remotes
        .iter()
        .map(|remote| pod_port(&pod, remote))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((pod, ports))
}

fn listen_address(text: &str) -> anyhow::Result<IpAddr> {
    if text == "localhost" {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    text.parse()
        .map_err(|_| anyhow!("invalid listen address {text:?}: must be an IP address or localhost"))
}

/// `wasmkube port-forward TARGET [LOCAL:]REMOTE...`: listens until interrupted.
pub async fn port_forward(client: &ClientArgs, args: PortForwardArgs) -> anyhow::Result<()> {
    let mappings = args
        .ports
        .iter()
        .map(|p| parse_mapping(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let addresses = args
        .address
        .iter()
        .map(|a| listen_address(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (client, namespace) = cli::client(client).await?;
    let (pod, ports) = resolve(&client, &namespace, &args.target, &mappings).await?;
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let mut serving = tokio::task::JoinSet::new();
    for (mapping, remote) in mappings.iter().zip(ports) {
        let mut local = mapping.local;
        for address in &addresses {
            let listener = TcpListener::bind(SocketAddr::new(*address, local))
                .await
                .with_context(|| format!("unable to listen on port {local} of {address}"))?;
            // A picked port is kept for the other addresses, as kubectl does.
            local = listener.local_addr()?.port();
            println!("Forwarding from {address}:{local} -> {remote}");
            serving.spawn(accept(listener, pods.clone(), pod_name.clone(), remote));
        }
    }
    match serving.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(error)) => Err(anyhow!("a listener stopped: {error}")),
        None => Ok(()),
    }
}

async fn accept(
    listener: TcpListener,
    pods: Api<Pod>,
    pod_name: String,
    remote: u16,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?.port();
    loop {
        let (connection, _) = listener.accept().await?;
        println!("Handling connection for {local}");
        let (pods, pod_name) = (pods.clone(), pod_name.clone());
        tokio::spawn(async move {
            if let Err(error) = forward(connection, &pods, &pod_name, remote).await {
                eprintln!("error: an error occurred forwarding {local} -> {remote}: {error:#}");
            }
        });
    }
}

async fn forward(
    mut connection: TcpStream,
    pods: &Api<Pod>,
    pod_name: &str,
    remote: u16,
) -> anyhow::Result<()> {
    let mut forwarder = pods
        .portforward(pod_name, &[remote])
        .await
        .map_err(cli::api_error)?;
    let mut upstream = forwarder
        .take_stream(remote)
        .ok_or_else(|| anyhow!("no stream for port {remote}"))?;
    let error = forwarder
        .take_error(remote)
        .ok_or_else(|| anyhow!("no error channel for port {remote}"))?;
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut connection, &mut upstream) => {
            copied?;
        }
        Some(message) = error => bail!("{message}"),
    }
    drop(upstream);
    forwarder.join().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use kube::api::ObjectMeta;
    use serde_json::json;

    #[test]
    fn mappings_take_kubectls_forms() {
        let int = |p| IntOrString::Int(p);
        assert_eq!(
            parse_mapping("8080:80").unwrap(),
            PortMapping {
                local: 8080,
                remote: int(80)
            }
        );
        assert_eq!(parse_mapping("80").unwrap().local, 80);
        assert_eq!(parse_mapping(":80").unwrap().local, 0);
        assert_eq!(
            parse_mapping("9000:http").unwrap().remote,
            IntOrString::String("http".into())
        );
        for bad in ["8080:", "x:80", "8080:0", "70000:80", "http", "1:a b"] {
            assert!(parse_mapping(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn service_ports_map_to_their_target_ports() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "hello"},
            "spec": {"ports": [
                {"name": "web", "port": 80, "targetPort": "http"},
                {"port": 81, "targetPort": 8081},
                {"port": 82}
            ]}
        }))
        .unwrap();
        let target = |r| service_target(&service, &r).unwrap();
        assert_eq!(
            target(IntOrString::Int(80)),
            IntOrString::String("http".into())
        );
        assert_eq!(
            target(IntOrString::String("web".into())),
            IntOrString::String("http".into())
        );
        assert_eq!(target(IntOrString::Int(81)), IntOrString::Int(8081));
        assert_eq!(target(IntOrString::Int(82)), IntOrString::Int(82));
        let missing = service_target(&service, &IntOrString::Int(8080)).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "service hello does not have a service port 8080"
        );
    }

    fn pod(name: &str, phase: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: serde_json::from_value(json!({"containers": [
                {"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}
            ]}))
            .ok(),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_ready_running_pod_is_chosen_first() {
        let chosen = |pods| choose_pod(pods).and_then(|p: Pod| p.metadata.name);
        assert_eq!(
            chosen(vec![
                pod("a", "Pending", false),
                pod("b", "Running", false),
                pod("c", "Running", true),
            ]),
            Some("c".into())
        );
        assert_eq!(
            chosen(vec![pod("b", "Running", false), pod("a", "Running", false)]),
            Some("a".into())
        );
        assert_eq!(chosen(vec![pod("a", "Succeeded", false)]), None);
    }

    #[test]
    fn named_ports_are_looked_up_in_the_pod() {
        let running = pod("a", "Running", true);
        assert_eq!(
            pod_port(&running, &IntOrString::String("http".into())).unwrap(),
            8080
        );
        assert_eq!(pod_port(&running, &IntOrString::Int(80)).unwrap(), 80);
        assert!(pod_port(&running, &IntOrString::String("grpc".into())).is_err());
    }
}
