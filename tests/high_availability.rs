//! Several `wasmkube server` processes on one real etcd, and what keeps working when one dies: node agents and
//! client commands given every server's URL (`--server A,B`) fail over to a live one.

mod common;
// The tests' etcd clusters; these tests do not restart members.
#[allow(dead_code)]
#[path = "common/etcd.rs"]
mod etcd;

use common::{NodeAgent, PODS, Server, echo_pod, get_pod, kubectl, post, run_wasmkube};
use etcd::EtcdCluster;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The address slot of `cluster`'s servers: the same for every server of one cluster, another for each
/// cluster of this test process (tests run side by side; pods of two clusters must not share addresses).
fn slot_of(cluster: &EtcdCluster) -> u32 {
    static CLUSTERS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let key = cluster.endpoints().join(",");
    let mut clusters = CLUSTERS.lock().unwrap_or_else(|e| e.into_inner());
    let index = match clusters.iter().position(|k| *k == key) {
        Some(index) => index,
        None => {
            clusters.push(key);
            clusters.len() - 1
        }
    };
    // 7 and 100 share no factor: a hundred clusters get a hundred slots.
    (std::process::id() + index as u32 * 7) % 100
}

/// `count` servers on `cluster`, with the same address ranges (as servers of one cluster are configured).
fn servers_on(cluster: &EtcdCluster, count: usize) -> Vec<Server> {
    servers_with(cluster, count, &[])
}

/// `count` servers on `cluster` as [`servers_on`] starts them, with `extra` flags, one after the other (the
/// first holds the leader Leases it finds free).
fn servers_with(cluster: &EtcdCluster, count: usize, extra: &[&str]) -> Vec<Server> {
    let etcd = cluster.endpoints().join(",");
    let slot = slot_of(cluster);
    let cluster_cidr = format!("127.{}.0.0/17", 100 + slot);
    let service_range = format!("127.{}.128.0/17", 100 + slot);
    let node_ports = format!("{}-{}", 31000 + slot * 10, 31009 + slot * 10);
    let flags: Vec<&str> = [
        "--etcd-servers",
        &etcd,
        "--cluster-cidr",
        &cluster_cidr,
        "--service-cluster-ip-range",
        &service_range,
        "--service-node-port-range",
        &node_ports,
    ]
    .iter()
    .chain(extra)
    .copied()
    .collect::<Vec<_>>();
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

/// What a write load got: every acknowledged (201) ConfigMap's name and when, and every failure.
#[derive(Default)]
struct Load {
    acknowledged: Vec<(String, Instant)>,
    failures: Vec<String>,
}

/// Creates ConfigMaps from `writers` threads until `stop` is set, writer `t` starting at `urls[t % n]` and
/// moving to the next URL when one cannot be reached (as a failing-over client does).
fn write_load(
    urls: &[String],
    writers: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Load> {
    let threads: Vec<_> = (0..writers)
        .map(|t| {
            let (urls, stop) = (urls.to_vec(), stop.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(15))
                    .build()
                    .unwrap();
                let mut load = Load::default();
                let mut at = t % urls.len();
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("w{t}-{i}");
                    let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": name}, "data": {"k": "v"}});
                    match client
                        .post(format!("{}{CONFIGMAPS}", urls[at]))
                        .json(&body)
                        .send()
                    {
                        Ok(answer) if answer.status() == 201 => {
                            load.acknowledged.push((name, Instant::now()));
                        }
                        Ok(answer) => load.failures.push(format!("{name}: {}", answer.status())),
                        Err(error) => {
                            load.failures.push(format!("{name}: {error}"));
                            at = (at + 1) % urls.len();
                        }
                    }
                }
                load
            })
        })
        .collect();
    std::thread::spawn(move || {
        let mut all = Load::default();
        for thread in threads {
            let load = thread.join().unwrap();
            all.acknowledged.extend(load.acknowledged);
            all.failures.extend(load.failures);
        }
        all
    })
}

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// The names of the default namespace's ConfigMaps, read through `server`.
fn configmap_names(server: &Server) -> std::collections::HashSet<String> {
    let list: Value = server
        .http()
        .get(format!("{}{CONFIGMAPS}", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// Runs a write load through `urls`, does `fault` after a second, goes on for `after` more; returns the load
/// and when the fault was done.
fn load_across(urls: &[String], after: Duration, fault: impl FnOnce()) -> (Load, Instant) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = write_load(urls, 8, &stop);
    std::thread::sleep(Duration::from_secs(1));
    fault();
    let at = Instant::now();
    std::thread::sleep(after);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    (load.join().unwrap(), at)
}

/// Asserts every acknowledged write is there, and writes went on after the fault (from `settle` after it).
fn assert_kept_and_went_on(
    load: &Load,
    fault: Instant,
    settle: Duration,
    names: &std::collections::HashSet<String>,
) {
    let lost: Vec<&String> = load
        .acknowledged
        .iter()
        .map(|(name, _)| name)
        .filter(|name| !names.contains(*name))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let later = load
        .acknowledged
        .iter()
        .filter(|(_, at)| *at > fault + settle)
        .count();
    assert!(
        later > 20,
        "only {later} writes acknowledged after the fault; failures: {:?}",
        load.failures
    );
    eprintln!(
        "{} writes acknowledged ({later} after the fault settled), {} failed",
        load.acknowledged.len(),
        load.failures.len()
    );
}

#[test]
fn every_write_a_killed_server_acknowledged_is_read_through_the_other() {
    let cluster = EtcdCluster::start(3);
    let mut servers = servers_on(&cluster, 2);
    let urls = [servers[0].url.clone(), servers[1].url.clone()];
    let (load, killed) = load_across(&urls, Duration::from_secs(3), || servers[0].kill());
    let names = configmap_names(&servers[1]);
    assert_kept_and_went_on(&load, killed, Duration::from_millis(500), &names);
}

#[test]
fn writes_through_the_apiserver_go_on_and_are_kept_when_the_etcd_leader_is_killed() {
    let mut cluster = EtcdCluster::start(3);
    let servers = servers_on(&cluster, 1);
    let leader = cluster.leader();
    let urls = [servers[0].url.clone()];
    let (load, killed) = load_across(&urls, Duration::from_secs(5), || cluster.kill(leader));
    let names = configmap_names(&servers[0]);
    // A new leader is elected within the election timeout (1 s here) and the server's clients move on.
    assert_kept_and_went_on(&load, killed, Duration::from_secs(3), &names);
}

/// The hello app's Deployment: `replicas` pods answering "hello from NAME" on port 8080.
fn hello_deployment(replicas: u32) -> Value {
    let image = format!(
        "file://{}",
        common::wasm_app("wasm32-wasip2", "hello_http").display()
    );
    serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hello"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "hello"}},
            "template": {"metadata": {"labels": {"app": "hello"}}, "spec": {"containers": [{
                "name": "hello", "image": image, "ports": [{"containerPort": 8080}],
                "env": [{"name": "VERSION", "value": "1"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}}})
}

/// The hello pods read through `server`.
fn hello_pods(server: &Server) -> Vec<Value> {
    let list: Value = server
        .http()
        .get(format!("{}{PODS}?labelSelector=app%3Dhello", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn ready(pod: &Value) -> bool {
    common::ready_status(pod) == "True" && pod["metadata"]["deletionTimestamp"].is_null()
}

/// Waits up to `within` for `count` Ready hello pods; returns them.
fn wait_for_ready_pods(server: &Server, count: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let pods: Vec<Value> = hello_pods(server).into_iter().filter(ready).collect();
        if pods.len() == count {
            return pods;
        }
        if Instant::now() > deadline {
            let waiting: Vec<Value> = hello_pods(server)
                .into_iter()
                .filter(|p| !ready(p))
                .map(|p| serde_json::json!({"name": p["metadata"]["name"], "node": p["spec"]["nodeName"], "status": p["status"]}))
                .collect();
            panic!(
                "{} of {count} hello pods Ready; waiting: {waiting:#?}",
                pods.len()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn pods_keep_serving_while_every_control_plane_process_is_killed_and_restarted_at_once() {
    let mut cluster = EtcdCluster::start(3);
    let mut servers = servers_on(&cluster, 2);
    let agent = NodeAgent::start_over(&[&servers[0], &servers[1]], "n1");
    post(
        &servers[0],
        "/apis/apps/v1/namespaces/default/deployments",
        &hello_deployment(3),
    );
    let pods = wait_for_ready_pods(&servers[0], 3, Duration::from_secs(60));
    let addresses: Vec<(String, String)> = pods
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_owned(),
                format!("http://{}:8080/", p["status"]["podIP"].as_str().unwrap()),
            )
        })
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (addresses, stop) = (addresses.clone(), stop.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            let (mut answered, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (name, url) in &addresses {
                    match client.get(url).send().and_then(|r| r.text()) {
                        Ok(text) if text.trim() == format!("hello from {name}") => answered += 1,
                        other => failed.push(format!("{name}: {other:?}")),
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (answered, failed)
        })
    };
    let renewed = lease_renewed(&servers[0], &agent.name);
    for server in &mut servers {
        server.kill();
    }
    for member in 0..3 {
        cluster.kill(member);
    }
    std::thread::sleep(Duration::from_secs(2));
    for member in 0..3 {
        cluster.restart(member);
    }
    for server in &mut servers {
        server.restart();
    }
    // The agent reports again (its Lease renewed), and nothing was replaced or restarted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lease_renewed(&servers[1], &agent.name) == renewed {
        assert!(Instant::now() < deadline, "the agent never came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answered, failed) = sampler.join().unwrap();
    assert!(failed.is_empty(), "pods failed to answer: {failed:?}");
    assert!(answered > 30, "only {answered} answers");
    let after = wait_for_ready_pods(&servers[1], 3, Duration::from_secs(30));
    let uids = |pods: &[Value]| {
        let mut uids: Vec<String> = pods
            .iter()
            .map(|p| p["metadata"]["uid"].as_str().unwrap().to_owned())
            .collect();
        uids.sort();
        uids
    };
    assert_eq!(uids(&after), uids(&pods));
    for pod in &after {
        assert_eq!(
            pod["status"]["containerStatuses"][0]["restartCount"], 0,
            "{pod}"
        );
    }
}

fn lease_holder(server: &Server, name: &str) -> Option<(String, i64)> {
    let lease: Value = server
        .http()
        .get(format!(
            "{}/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}",
            server.url
        ))
        .send()
        .ok()?
        .json()
        .ok()?;
    // A released Lease has an empty holder: nobody holds it.
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())?
        .to_owned();
    Some((
        holder,
        lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0),
    ))
}

fn wait_for_holder(
    server: &Server,
    name: &str,
    not: Option<&str>,
    within: Duration,
) -> (String, i64) {
    let deadline = Instant::now() + within;
    loop {
        if let Some((holder, transitions)) = lease_holder(server, name)
            && Some(holder.as_str()) != not
        {
            return (holder, transitions);
        }
        assert!(
            Instant::now() < deadline,
            "no new holder of {name} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Who holds the scheduler's and the controller-manager's Leases.
struct Leaders {
    scheduler: String,
    controllers: String,
    /// The controller-manager Lease's leaseTransitions.
    transitions: i64,
}

/// The holders of both Leases, once held (read through `server`).
fn leaders(server: &Server) -> Leaders {
    let within = Duration::from_secs(10);
    let (scheduler, _) = wait_for_holder(server, "kube-scheduler", None, within);
    let (controllers, transitions) =
        wait_for_holder(server, "kube-controller-manager", None, within);
    Leaders {
        scheduler,
        controllers,
        transitions,
    }
}

/// Waits until others than `before` hold both Leases; the controller-manager's changed hands once.
fn wait_for_new_leaders(server: &Server, before: &Leaders) {
    let within = Duration::from_secs(10);
    let (taken, after) = wait_for_holder(
        server,
        "kube-controller-manager",
        Some(&before.controllers),
        within,
    );
    assert_ne!(taken, before.controllers);
    assert_eq!(after, before.transitions + 1);
    wait_for_holder(server, "kube-scheduler", Some(&before.scheduler), within);
}

#[test]
fn a_standby_server_takes_the_scheduler_and_controller_leases_when_the_leader_dies() {
    let cluster = EtcdCluster::start(1);
    let servers = cluster.endpoints().join(",");
    let flags: Vec<&str> = ["--etcd-servers", &servers]
        .into_iter()
        .chain(QUICK_ELECTION)
        .collect();
    let mut first = Server::start_with(&flags);
    let before = leaders(&first);
    let standby = Server::start_with(&flags);
    // The standby waits: the leader keeps renewing.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        lease_holder(&standby, "kube-scheduler").unwrap().0,
        before.scheduler
    );
    assert_eq!(
        lease_holder(&standby, "kube-controller-manager").unwrap().0,
        before.controllers
    );
    first.kill();
    let died = Instant::now();
    wait_for_new_leaders(&standby, &before);
    // Taken within the lease's duration (3 s) and a few retry periods, not before it expired.
    let took = died.elapsed();
    assert!(took < Duration::from_secs(8), "took {took:?}");
    // The new leader's controllers act: a Deployment gets its ReplicaSet.
    let (ok, _, stderr) = kubectl(
        &standby,
        None,
        &["create", "deployment", "web", "--image=hello.wasm"],
        None,
    );
    assert!(ok, "{stderr}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, stdout, _) = kubectl(
            &standby,
            None,
            &["get", "rs", "-l", "app=web", "-o", "name"],
            None,
        );
        if !stdout.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ReplicaSet: the standby's controllers are not acting"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Leader election in seconds rather than Kubernetes' 15/10/2 s defaults, for tests that kill leaders.
const QUICK_ELECTION: [&str; 6] = [
    "--leader-elect-lease-duration",
    "3s",
    "--leader-elect-renew-deadline",
    "2s",
    "--leader-elect-retry-period",
    "300ms",
];

#[test]
fn a_rolling_update_of_30_replicas_completes_within_its_bounds_when_the_leaders_are_killed() {
    let cluster = EtcdCluster::start(1);
    let mut servers = servers_with(&cluster, 1, &QUICK_ELECTION);
    let before = leaders(&servers[0]);
    servers.extend(servers_with(&cluster, 1, &QUICK_ELECTION));
    let agent = NodeAgent::start_over(&[&servers[0], &servers[1]], "n1");
    post(
        &servers[0],
        "/apis/apps/v1/namespaces/default/deployments",
        &hello_deployment(30),
    );
    wait_for_ready_pods(&servers[1], 30, Duration::from_secs(90));

    // Kubernetes' defaults for 30 replicas: maxSurge 25% (8, rounded up), maxUnavailable 25% (7, down).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let monitor = {
        let (stop, survivor) = (stop.clone(), servers[1].url.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut outside = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let list: Value = client
                    .get(format!("{survivor}{PODS}?labelSelector=app%3Dhello"))
                    .send()
                    .and_then(|r| r.json())
                    .unwrap_or_default();
                let pods: Vec<&Value> = list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                    .collect();
                let ready = pods.iter().filter(|p| ready(p)).count();
                if pods.len() > 38 || ready < 23 {
                    outside.push((pods.len(), ready));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            outside
        })
    };
    let updated = servers[1]
        .http()
        .patch(format!(
            "{}/apis/apps/v1/namespaces/default/deployments/hello",
            servers[1].url
        ))
        .header("Content-Type", "application/json-patch+json")
        .body(r#"[{"op": "replace", "path": "/spec/template/spec/containers/0/env/0/value", "value": "2"}]"#)
        .send()
        .unwrap();
    assert_eq!(updated.status(), 200);
    std::thread::sleep(Duration::from_millis(300));
    servers[0].kill();

    let survivor = &servers[1];
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status: Value = survivor
            .http()
            .get(format!(
                "{}/apis/apps/v1/namespaces/default/deployments/hello",
                survivor.url
            ))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let status = &status["status"];
        if status["observedGeneration"] == 2
            && [
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
            ]
            .iter()
            .all(|field| status[field] == 30)
        {
            break;
        }
        if Instant::now() > deadline {
            let waiting: Vec<Value> = hello_pods(survivor)
                .into_iter()
                .filter(|p| !ready(p) && p["metadata"]["deletionTimestamp"].is_null())
                .map(|p| p["metadata"]["name"].clone())
                .collect();
            let log = std::fs::read_to_string(agent.data_dir.join("agent.log")).unwrap_or_default();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    waiting
                        .iter()
                        .any(|w| l.contains(w.as_str().unwrap_or("-")))
                        || l.contains("WARN")
                        || l.contains("ERROR")
                })
                .collect();
            panic!(
                "the rollout did not complete: {status}; pods not Ready: {waiting:?}\n{}",
                lines.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let outside = monitor.join().unwrap();
    assert!(
        outside.is_empty(),
        "(pods, ready) outside maxSurge 8 / maxUnavailable 7: {outside:?}"
    );
    wait_for_new_leaders(survivor, &before);
    let pods = hello_pods(survivor);
    assert!(
        pods.iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .all(|p| p["spec"]["containers"][0]["env"][0]["value"] == "2"),
        "old pods left"
    );
}

/// The hello app as a StatefulSet `db` of `replicas` pods.
fn hello_statefulset(replicas: u32) -> Value {
    let mut set = hello_deployment(replicas);
    set["kind"] = "StatefulSet".into();
    set["metadata"]["name"] = "db".into();
    set["spec"]["serviceName"] = "db".into();
    set["spec"]["selector"] = serde_json::json!({"matchLabels": {"app": "db"}});
    set["spec"]["template"]["metadata"]["labels"] = serde_json::json!({"app": "db"});
    set
}

fn pods_labelled(server: &Server, app: &str) -> Vec<Value> {
    let list: Value = server
        .http()
        .get(format!("{}{PODS}?labelSelector=app%3D{app}", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn node_ready(server: &Server, node: &str) -> String {
    common::ready_status(&common::get_json(server, &format!("/api/v1/nodes/{node}")))
}

/// Waits up to 60 s for `check` to hold.
fn wait_until_true(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_node_cut_off_has_its_pods_replaced_but_never_runs_a_statefulset_ordinal_twice() {
    let cluster = EtcdCluster::start(1);
    let servers = servers_with(&cluster, 2, &["--node-monitor-grace-period-seconds", "4"]);
    let agents = [
        NodeAgent::start_over(&[&servers[0], &servers[1]], "n1"),
        NodeAgent::start_over(&[&servers[0], &servers[1]], "n2"),
    ];
    let api = &servers[1];
    post(
        api,
        "/apis/apps/v1/namespaces/default/deployments",
        &hello_deployment(2),
    );
    post(
        api,
        "/apis/apps/v1/namespaces/default/statefulsets",
        &hello_statefulset(2),
    );
    wait_until_true("web and db Ready", || {
        pods_labelled(api, "hello")
            .iter()
            .filter(|p| ready(p))
            .count()
            == 2
            && pods_labelled(api, "db").iter().filter(|p| ready(p)).count() == 2
    });
    let db0 = get_pod(api, "db-0").unwrap();
    let cut = db0["spec"]["nodeName"].as_str().unwrap().to_owned();
    let agent = agents.iter().find(|a| a.name == cut).unwrap();

    // Every 100 ms, every address db-0 ever had is asked who it is: never two answer as db-0 at once.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (stop, url) = (stop.clone(), api.url.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_millis(300))
                .build()
                .unwrap();
            let (mut addresses, mut uids) = (
                std::collections::BTreeSet::new(),
                std::collections::BTreeSet::new(),
            );
            let mut twice = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(pod) = client
                    .get(format!("{url}{PODS}/db-0"))
                    .send()
                    .and_then(|r| r.json::<Value>())
                {
                    if let Some(ip) = pod["status"]["podIP"].as_str() {
                        addresses.insert(ip.to_owned());
                    }
                    if let Some(uid) = pod["metadata"]["uid"].as_str() {
                        uids.insert(uid.to_owned());
                    }
                }
                let answering: Vec<&String> = addresses
                    .iter()
                    .filter(|ip| {
                        client
                            .get(format!("http://{ip}:8080/"))
                            .send()
                            .and_then(|r| r.text())
                            .is_ok_and(|t| t.trim() == "hello from db-0")
                    })
                    .collect();
                if answering.len() > 1 {
                    twice.push(format!("{answering:?}"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (uids, twice)
        })
    };

    agent.signal("STOP");
    wait_until_true("the cut-off node NotReady", || {
        node_ready(api, &cut) != "True"
    });
    // Its Deployment pods are evicted and replaced on the other node; db-0 is evicted but, its agent not
    // having confirmed that it stopped, is not replaced.
    wait_until_true("web running twice elsewhere", || {
        let pods = pods_labelled(api, "hello");
        pods.iter()
            .filter(|p| ready(p) && p["spec"]["nodeName"] != cut.as_str())
            .count()
            == 2
    });
    wait_until_true("db-0 evicted", || {
        get_pod(api, "db-0").is_some_and(|p| !p["metadata"]["deletionTimestamp"].is_null())
    });
    std::thread::sleep(Duration::from_secs(3));
    let held = get_pod(api, "db-0").unwrap();
    assert_eq!(
        held["metadata"]["uid"], db0["metadata"]["uid"],
        "db-0 replaced while its node was cut off"
    );

    // Healed: the agent stops the old db-0 and confirms; only then does a new db-0 start.
    agent.signal("CONT");
    wait_until_true("a new db-0 Ready", || {
        get_pod(api, "db-0")
            .is_some_and(|p| p["metadata"]["uid"] != db0["metadata"]["uid"] && ready(&p))
    });
    wait_until_true("the node Ready again", || node_ready(api, &cut) == "True");
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (uids, twice) = sampler.join().unwrap();
    assert!(
        twice.is_empty(),
        "db-0 answered at two addresses at once: {twice:?}"
    );
    assert_eq!(uids.len(), 2, "{uids:?}");
    assert_eq!(
        pods_labelled(api, "db").iter().filter(|p| ready(p)).count(),
        2
    );
}

#[test]
fn a_leader_stopped_gracefully_hands_its_leases_over_before_they_would_expire() {
    let cluster = EtcdCluster::start(1);
    // Leases of 15 s (Kubernetes' default), retried every 300 ms.
    let flags = ["--leader-elect-retry-period", "300ms"];
    let mut servers = servers_with(&cluster, 1, &flags);
    let before = leaders(&servers[0]);
    servers.extend(servers_with(&cluster, 1, &flags));
    let stopped = Instant::now();
    assert_eq!(servers[0].terminate(Duration::from_secs(10)), Some(true));
    wait_for_new_leaders(&servers[1], &before);
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
