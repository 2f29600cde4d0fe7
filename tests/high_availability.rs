//! Several `wasmkube server` processes on one real etcd, and what keeps working when one dies: node agents and
//! client commands given every server's URL (`--server A,B`) fail over to a live one.

mod common;
// The tests' etcd clusters; these tests do not restart members.
#[allow(dead_code)]
#[path = "common/etcd.rs"]
mod etcd;

use common::{NodeAgent, PODS, Server, echo_pod, get_pod, post, run_wasmkube};
use etcd::EtcdCluster;
use serde_json::Value;
use std::time::{Duration, Instant};

/// `count` servers on `cluster`, with the same address ranges (as servers of one cluster are configured).
fn servers_on(cluster: &EtcdCluster, count: usize) -> Vec<Server> {
    let etcd = cluster.endpoints().join(",");
    let slot = std::process::id() % 100;
    let cluster_cidr = format!("127.{}.0.0/17", 100 + slot);
    let service_range = format!("127.{}.128.0/17", 100 + slot);
    let node_ports = format!("{}-{}", 31000 + slot * 10, 31009 + slot * 10);
    let flags = [
        "--etcd-servers",
        &etcd,
        "--cluster-cidr",
        &cluster_cidr,
        "--service-cluster-ip-range",
        &service_range,
        "--service-node-port-range",
        &node_ports,
    ];
    (0..count).map(|_| Server::start_with(&flags)).collect()
}

fn running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
}

/// Waits up to `within` for `check` to hold of the pod `name` read through `server`.
fn wait_for_pod(server: &Server, name: &str, within: Duration, check: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + within;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some(pod) = get_pod(server, name) {
            if check(&pod) {
                return;
            }
            last = pod;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "pod {name} not as wanted within {within:?}: {}",
        last["status"]
    );
}

/// The node's Lease renew time, read through `server`.
fn lease_renewed(server: &Server, node: &str) -> String {
    let lease: Value = server
        .http()
        .get(format!(
            "{}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}",
            server.url
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    lease["spec"]["renewTime"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn an_agent_and_the_cli_given_every_server_go_on_through_another_when_one_is_killed() {
    let cluster = EtcdCluster::start(1);
    let mut servers = servers_on(&cluster, 2);
    let urls = format!("{},{}", servers[0].url, servers[1].url);
    let agent = NodeAgent::start_over(&[&servers[0], &servers[1]], "n1");
    post(&servers[0], PODS, &echo_pod("before", &agent.name));
    wait_for_pod(&servers[0], "before", Duration::from_secs(30), running);

    servers[0].kill();
    let survivor = &servers[1];
    // The agent's watches resume through the survivor: a pod bound afterwards runs, and the node's Lease is
    // renewed.
    let renewed = lease_renewed(survivor, &agent.name);
    post(survivor, PODS, &echo_pod("after", &agent.name));
    wait_for_pod(survivor, "after", Duration::from_secs(30), running);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lease_renewed(survivor, &agent.name) == renewed {
        assert!(
            Instant::now() < deadline,
            "the node's Lease was not renewed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The agent still reports on the pod that ran before: deleting it through the CLI (whose first server
    // is the dead one) ends it.
    let (ok, out, err) = run_wasmkube(&["--server", &urls, "get", "pods"]);
    assert!(ok, "{err}");
    assert!(out.contains("before") && out.contains("after"), "{out}");
    let (ok, _, err) = run_wasmkube(&["--server", &urls, "delete", "pod", "before"]);
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_pod(survivor, "before").is_some() {
        assert!(Instant::now() < deadline, "pod before was not deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
}
