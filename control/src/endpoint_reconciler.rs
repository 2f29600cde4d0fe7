//! The endpoint reconciler of servers that share a store, as kube-apiserver's `lease` reconciler: each server
//! renews a Lease of its own in `kube-system` (`apiserver-<address hash>`, labelled
//! `apiserver.kubernetes.io/identity: kube-apiserver`, its address in `spec.holderIdentity`) and writes the
//! `kubernetes` Service's Endpoints and EndpointSlices of `default` from every Lease renewed within its
//! duration, so pods reach every live apiserver and none that died; a server shutting down removes its own.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Resource};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

/// The label of every apiserver's Lease.
const IDENTITY: (&str, &str) = ("apiserver.kubernetes.io/identity", "kube-apiserver");
/// The Service, its port's name, and the manager of what this writes.
const SERVICE: &str = "kubernetes";
const PORT_NAME: &str = "https";
const MANAGER: &str = "kube-apiserver";
/// How long a server's renewal keeps it in the endpoints (Kubernetes' master lease TTL), and how often it
/// renews.
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RENEW_PERIOD: Duration = Duration::from_secs(5);

/// The Lease name of the server at `address`.
pub fn lease_name(address: SocketAddr) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(address.to_string().as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("apiserver-{hex}")
}

/// The addresses of the servers whose Leases were renewed within their duration at `now`.
fn live_addresses(leases: &[Lease], now: jiff::Timestamp) -> BTreeSet<SocketAddr> {
    leases
        .iter()
        .filter_map(|lease| {
            let spec = lease.spec.as_ref()?;
            let renewed = spec.renew_time.as_ref()?.0;
            let duration = i64::from(spec.lease_duration_seconds?);
            let until = renewed
                .checked_add(jiff::SignedDuration::from_secs(duration))
                .ok()?;
            (until > now).then(|| spec.holder_identity.as_deref()?.parse().ok())?
        })
        .collect()
}

/// The Endpoints of `addresses`: one subset per port (servers on one host listen on different ports).
fn endpoints(addresses: &BTreeSet<SocketAddr>) -> Endpoints {
    let mut by_port: BTreeMap<u16, Vec<EndpointAddress>> = BTreeMap::new();
    for address in addresses {
        by_port
            .entry(address.port())
            .or_default()
            .push(EndpointAddress {
                ip: address.ip().to_string(),
                ..EndpointAddress::default()
            });
    }
    Endpoints {
        metadata: ObjectMeta {
            name: Some(SERVICE.into()),
            labels: Some(BTreeMap::from([(
                "endpointslice.kubernetes.io/skip-mirror".to_owned(),
                "true".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        subsets: Some(
            by_port
                .into_iter()
                .map(|(port, addresses)| EndpointSubset {
                    addresses: Some(addresses),
                    ports: Some(vec![EndpointPort {
                        name: Some(PORT_NAME.into()),
                        port: i32::from(port),
                        protocol: Some("TCP".into()),
                        ..EndpointPort::default()
                    }]),
                    ..EndpointSubset::default()
                })
                .collect(),
        ),
    }
}

/// The EndpointSlices of `addresses`, one per port: `kubernetes` for the lowest, `kubernetes-PORT` for others.
fn slices(addresses: &BTreeSet<SocketAddr>) -> Vec<EndpointSlice> {
    let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for address in addresses {
        by_port
            .entry(address.port())
            .or_default()
            .push(address.ip().to_string());
    }
    by_port
        .into_iter()
        .enumerate()
        .map(|(i, (port, ips))| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(if i == 0 {
                    SERVICE.to_owned()
                } else {
                    format!("{SERVICE}-{port}")
                }),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/service-name".to_owned(),
                    SERVICE.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            address_type: if ips.iter().any(|ip| ip.contains(':')) {
                "IPv6".into()
            } else {
                "IPv4".into()
            },
            endpoints: Some(
                ips.into_iter()
                    .map(|ip| Endpoint {
                        addresses: vec![ip],
                        conditions: Some(EndpointConditions {
                            ready: Some(true),
                            ..EndpointConditions::default()
                        }),
                        ..Endpoint::default()
                    })
                    .collect(),
            ),
            ports: Some(vec![SlicePort {
                name: Some(PORT_NAME.into()),
                port: Some(i32::from(port)),
                protocol: Some("TCP".into()),
                ..SlicePort::default()
            }]),
        })
        .collect()
}

/// Creates `object`, or replaces the stored one when it differs (compare-and-swap on what was read).
async fn put<K>(
    api: &Api<K>,
    mut object: K,
    same: impl Fn(&K, &K) -> bool,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    };
    match api.get_opt(&name).await? {
        None => api.create(&params, &object).await.map(drop),
        Some(stored) if same(&stored, &object) => Ok(()),
        Some(stored) => {
            object.meta_mut().resource_version = stored.meta().resource_version.clone();
            api.replace(&name, &params, &object).await.map(drop)
        }
    }
}

/// Renews this server's Lease (`address`), then writes the endpoints of every live server.
async fn reconcile(
    client: &kube::Client,
    address: SocketAddr,
    renew: bool,
) -> Result<(), kube::Error> {
    let leases = Api::<Lease>::namespaced(client.clone(), "kube-system");
    let own = Lease {
        metadata: ObjectMeta {
            name: Some(lease_name(address)),
            labels: Some(BTreeMap::from([(
                IDENTITY.0.to_owned(),
                IDENTITY.1.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(address.to_string()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    if renew {
        put(&leases, own, |_, _| false).await?;
    } else {
        match leases
            .delete(&lease_name(address), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let selector = format!("{}={}", IDENTITY.0, IDENTITY.1);
    let all = leases
        .list(&ListParams::default().labels(&selector))
        .await?;
    let mut live = live_addresses(&all.items, jiff::Timestamp::now());
    if !renew {
        live.remove(&address);
    }
    if live.is_empty() {
        return Ok(());
    }
    let endpoints_api = Api::<Endpoints>::namespaced(client.clone(), "default");
    put(&endpoints_api, endpoints(&live), |a, b| {
        a.subsets == b.subsets
    })
    .await?;
    let slices_api = Api::<EndpointSlice>::namespaced(client.clone(), "default");
    let wanted = slices(&live);
    let names: BTreeSet<String> = wanted
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    for slice in wanted {
        put(&slices_api, slice, |a, b| {
            a.endpoints == b.endpoints && a.ports == b.ports
        })
        .await?;
    }
    // Slices of ports no live server listens on any more.
    let listed = slices_api
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={SERVICE}")))
        .await?;
    for stale in listed.items {
        let name = stale.metadata.name.unwrap_or_default();
        if !names.contains(&name) && name.starts_with(SERVICE) {
            let _ = slices_api.delete(&name, &DeleteParams::default()).await;
        }
    }
    Ok(())
}

/// How soon a write that lost to another server's is tried again.
const CONFLICT_RETRY: Duration = Duration::from_millis(100);

/// Keeps this server (listening at `address`) in the `kubernetes` Service's endpoints, renewing its Lease,
/// until the task is dropped.
pub fn run(client: kube::Client, address: SocketAddr) -> wasmkube_core::EntryFuture<'static, ()> {
    Box::pin(keep_listed(client, address))
}

async fn keep_listed(client: kube::Client, address: SocketAddr) {
    loop {
        let pause = match reconcile(&client, address, true).await {
            Ok(()) => RENEW_PERIOD,
            // Another server wrote the endpoints meanwhile: read them again soon.
            Err(kube::Error::Api(e)) if e.code == 409 => CONFLICT_RETRY,
            Err(error) => {
                tracing::warn!(%error, "cannot keep the apiserver endpoints");
                RENEW_PERIOD
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// Takes this server out of the endpoints and deletes its Lease (at shutdown, while it still serves).
pub fn withdraw(client: &kube::Client, address: SocketAddr) -> wasmkube_core::EntryFuture<'_, ()> {
    Box::pin(take_out(client, address))
}

async fn take_out(client: &kube::Client, address: SocketAddr) {
    if let Err(error) = reconcile(client, address, false).await {
        tracing::warn!(%error, "cannot take this apiserver out of the endpoints");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(address: &str, renewed: jiff::Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(address.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn only_servers_renewed_within_the_duration_are_endpoints_grouped_by_port() {
        let now = jiff::Timestamp::from_second(1_000).unwrap();
        let ago = |s| now.checked_sub(jiff::SignedDuration::from_secs(s)).unwrap();
        let leases = [
            lease("10.0.0.1:6443", ago(1)),
            lease("10.0.0.2:6443", ago(14)),
            lease("10.0.0.3:6443", ago(16)),
            lease("127.0.0.1:7000", ago(2)),
            lease("not an address", ago(1)),
        ];
        let live = live_addresses(&leases, now);
        let expected: BTreeSet<SocketAddr> = ["10.0.0.1:6443", "10.0.0.2:6443", "127.0.0.1:7000"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(live, expected);
        let subsets = endpoints(&live).subsets.unwrap();
        assert_eq!(subsets.len(), 2);
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 2);
        let slices = slices(&live);
        let names: Vec<_> = slices
            .iter()
            .filter_map(|s| s.metadata.name.as_deref())
            .collect();
        assert_eq!(names, ["kubernetes", "kubernetes-7000"]);
        assert_eq!(
            lease_name("10.0.0.1:6443".parse().unwrap()).len(),
            "apiserver-".len() + 16
        );
    }
}
