//! `wasmkube server --etcd-servers`: the control plane's state in a real etcd (Debian's etcd-server on
//! loopback ports), under kube-apiserver's keys; two servers on one etcd serving the same objects; a server
//! started before its etcd waiting for it; a store file of the old key layout moved to the new one.

mod common;
// Shared with the other suites; not every helper is used here.
#[allow(dead_code)]
#[path = "common/etcd.rs"]
mod etcd;

use base64::Engine;
use common::{Server, endpoint_addresses, free_port, kubectl, post};
use etcd::EtcdCluster;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The keys etcd holds under `prefix`, read through its JSON gateway.
fn etcd_keys(cluster: &EtcdCluster, prefix: &str) -> Vec<String> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let answer: Value = reqwest::blocking::Client::new()
        .post(format!("{}/v3/kv/range", cluster.endpoints()[0]))
        .json(&json!({"key": b64(prefix), "range_end": base64::engine::general_purpose::STANDARD.encode(&end), "keys_only": true}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    answer["kvs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| kv["key"].as_str())
        .map(|k| {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(k).unwrap()).unwrap()
        })
        .collect()
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

#[test]
fn a_server_on_etcd_keeps_objects_under_kube_apiservers_keys_with_etcds_revisions() {
    let cluster = EtcdCluster::start(1);
    let server = Server::start_with(&["--etcd-servers", &cluster.endpoints().join(",")]);
    let (ok, _, stderr) = kubectl(
        &server,
        None,
        &["create", "service", "clusterip", "web", "--tcp=80:8080"],
        None,
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = kubectl(
        &server,
        None,
        &["create", "configmap", "settings", "--from-literal=a=b"],
        None,
    );
    assert!(ok, "{stderr}");
    // The `kubernetes` Service and ours, where kube-apiserver keeps Services.
    assert_eq!(
        etcd_keys(&cluster, "/registry/services/specs/"),
        [
            "/registry/services/specs/default/kubernetes",
            "/registry/services/specs/default/web"
        ]
    );
    assert!(
        etcd_keys(&cluster, "/registry/configmaps/default/")
            .contains(&"/registry/configmaps/default/settings".to_owned())
    );
    assert!(
        etcd_keys(&cluster, "/registry/namespaces/")
            .contains(&"/registry/namespaces/kube-system".to_owned())
    );
    // resourceVersions are etcd's mod revisions.
    let served: Value = server
        .http()
        .get(format!("{}{CONFIGMAPS}/settings", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let answer: Value = reqwest::blocking::Client::new()
        .post(format!("{}/v3/kv/range", cluster.endpoints()[0]))
        .json(&json!({"key": b64("/registry/configmaps/default/settings")}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        served["metadata"]["resourceVersion"],
        answer["kvs"][0]["mod_revision"]
    );
}

#[test]
fn two_servers_on_one_etcd_serve_the_same_objects_and_conflicts() {
    let cluster = EtcdCluster::start(1);
    let servers = cluster.endpoints().join(",");
    let a = Server::start_with(&["--etcd-servers", &servers]);
    let b = Server::start_with(&["--etcd-servers", &servers]);
    let created: Value = a
        .http()
        .post(format!("{}{CONFIGMAPS}", a.url))
        .json(&configmap("shared"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let through_b: Value = b
        .http()
        .get(format!("{}{CONFIGMAPS}/shared", b.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(through_b["metadata"]["uid"], created["metadata"]["uid"]);
    // A watch on one server sees the other's writes.
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let watch = {
        let url = format!(
            "{}{CONFIGMAPS}?watch=true&resourceVersion={rv}&timeoutSeconds=5",
            b.url
        );
        std::thread::spawn(move || reqwest::blocking::get(url).unwrap().text().unwrap())
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut changed = created.clone();
    changed["data"]["k"] = "w".into();
    let updated = a
        .http()
        .put(format!("{}{CONFIGMAPS}/shared", a.url))
        .json(&changed)
        .send()
        .unwrap();
    assert_eq!(updated.status(), 200);
    let events = watch.join().unwrap();
    assert!(
        events.contains("\"type\":\"MODIFIED\"") && events.contains("\"k\":\"w\""),
        "{events}"
    );
    // An update through the other server with the old resourceVersion conflicts: the check is etcd's.
    let stale = b
        .http()
        .put(format!("{}{CONFIGMAPS}/shared", b.url))
        .json(&changed)
        .send()
        .unwrap();
    assert_eq!(stale.status(), 409);
    let status: Value = stale.json().unwrap();
    assert_eq!(
        status["message"],
        "Operation cannot be fulfilled on configmaps \"shared\": the object has been modified; please apply your changes to the latest version and try again"
    );
}

#[test]
fn a_server_started_before_its_etcd_says_so_and_serves_once_etcd_is_up() {
    let mut cluster = EtcdCluster::start(1);
    cluster.kill(0);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let port = free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .args(["server", "--insecure", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--etcd-servers", &cluster.endpoints()[0]])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        server.try_wait().unwrap().is_none(),
        "the server must wait for etcd, not exit"
    );
    let said = std::fs::read_to_string(&log).unwrap();
    let line = said
        .lines()
        .find(|l| l.contains("cannot reach etcd"))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(line.contains(&cluster.endpoints()[0]), "{line}");
    cluster.restart(0);
    let url = format!("http://127.0.0.1:{port}{CONFIGMAPS}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let created = loop {
        if let Ok(response) = reqwest::blocking::Client::new()
            .post(&url)
            .json(&configmap("late"))
            .send()
        {
            break response;
        }
        assert!(
            Instant::now() < deadline,
            "the server never served: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(created.status(), 201);
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn a_store_file_of_the_old_key_layout_is_moved_to_kube_apiservers() {
    let dir = tempfile::tempdir().unwrap();
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "old", "namespace": "default", "uid": "u1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"type": "ClusterIP", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}});
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use wasmkube_control::store::{Expect, RedbStore, RedbStoreConfig, Store};
        let store =
            RedbStore::open(&dir.path().join("store.redb"), RedbStoreConfig::default()).unwrap();
        store
            .put(
                "/registry/services/default/old".into(),
                serde_json::to_vec(&service).unwrap(),
                Expect::Absent,
            )
            .await
            .unwrap();
    });
    drop(runtime);
    let server = Server::start_in(dir.path(), &[]);
    let (ok, stdout, stderr) = kubectl(
        &server,
        None,
        &["get", "service", "old", "-o", "jsonpath={.metadata.uid}"],
        None,
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "u1");
}

#[test]
fn secure_servers_on_one_etcd_share_the_cluster_ca_and_the_admin_token() {
    let cluster = EtcdCluster::start(1);
    let servers = cluster.endpoints().join(",");
    let secure = [
        "--etcd-servers",
        &servers,
        "--authorization-mode",
        "Node,RBAC",
    ];
    let first = Server::start_with(&secure);
    let second = Server::start_with(&secure);
    for file in ["pki/ca.crt", "pki/ca.key", "pki/sa.key", "admin.token"] {
        assert_eq!(
            std::fs::read(first.data_dir.join(file)).unwrap(),
            std::fs::read(second.data_dir.join(file)).unwrap(),
            "{file} differs"
        );
    }
    // The first server's kubeconfig (its CA, its admin token) is good at the second.
    let (ok, stdout, stderr) = kubectl(
        &first,
        None,
        &[
            "--server",
            &second.url,
            "get",
            "namespace",
            "kube-system",
            "-o",
            "name",
        ],
        None,
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "namespace/kube-system");
    // A service account token one server signs, the other verifies.
    let (ok, token, stderr) = kubectl(&first, None, &["create", "token", "default"], None);
    assert!(ok, "{stderr}");
    let review = second
        .http()
        .post(format!("{}/apis/authentication.k8s.io/v1/tokenreviews", second.url))
        .json(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token.trim()}}))
        .send()
        .unwrap();
    let review: Value = review.json().unwrap();
    assert_eq!(review["status"]["authenticated"], true, "{review}");
    assert_eq!(
        review["status"]["user"]["username"],
        "system:serviceaccount:default:default"
    );
}

/// The `host:port` addresses the `kubernetes` Service's Endpoints list.
fn apiserver_endpoints(server: &Server) -> Vec<String> {
    let endpoints: Value = server
        .http()
        .get(format!(
            "{}/api/v1/namespaces/default/endpoints/kubernetes",
            server.url
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    endpoint_addresses(&endpoints)
}

fn wait_for_endpoints(server: &Server, wanted: &[String], within: Duration) {
    let mut wanted = wanted.to_vec();
    wanted.sort();
    let deadline = Instant::now() + within;
    loop {
        let seen = apiserver_endpoints(server);
        if seen == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "endpoints {seen:?}, wanted {wanted:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_kubernetes_service_lists_every_live_server_on_one_etcd() {
    let cluster = EtcdCluster::start(1);
    let servers = cluster.endpoints().join(",");
    let flags = ["--etcd-servers", servers.as_str()];
    let first = Server::start_with(&flags);
    let mut second = Server::start_with(&flags);
    let mut third = Server::start_with(&flags);
    let address = |s: &Server| s.url.trim_start_matches("http://").to_owned();
    wait_for_endpoints(
        &first,
        &[address(&first), address(&second), address(&third)],
        Duration::from_secs(15),
    );
    // A server stopped gracefully takes itself out at once.
    assert_eq!(second.terminate(Duration::from_secs(10)), Some(true));
    wait_for_endpoints(
        &first,
        &[address(&first), address(&third)],
        Duration::from_secs(3),
    );
    // One killed drops out once its Lease is 15 s old.
    third.kill();
    wait_for_endpoints(&first, &[address(&first)], Duration::from_secs(30));
}

/// Writes `value` at `key` in etcd, through its JSON gateway (as another writer of the etcd would).
fn etcd_put(cluster: &EtcdCluster, key: &str, value: &[u8]) {
    let engine = base64::engine::general_purpose::STANDARD;
    let answer = reqwest::blocking::Client::new()
        .post(format!("{}/v3/kv/put", cluster.endpoints()[0]))
        .json(&json!({"key": engine.encode(key), "value": engine.encode(value)}))
        .send()
        .unwrap();
    assert!(answer.status().is_success());
}

#[test]
fn objects_kube_apiserver_wrote_in_protobuf_are_read_and_encrypted_ones_refused_by_key() {
    let cluster = EtcdCluster::start(1);
    let server = Server::start_with(&["--etcd-servers", &cluster.endpoints().join(",")]);
    let url = format!("{}{CONFIGMAPS}/from-kubernetes", server.url);
    let created = server
        .http()
        .post(format!("{}{CONFIGMAPS}", server.url))
        .json(&configmap("from-kubernetes"))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    // The object in Kubernetes' protobuf, as kube-apiserver keeps it in etcd.
    let protobuf = server
        .http()
        .get(&url)
        .header("Accept", "application/vnd.kubernetes.protobuf")
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert!(protobuf.starts_with(b"k8s\0"));
    etcd_put(
        &cluster,
        "/registry/configmaps/default/from-kubernetes",
        &protobuf,
    );
    let read: Value = server.http().get(&url).send().unwrap().json().unwrap();
    assert_eq!(read["data"]["k"], "v", "{read}");
    assert_eq!(read["metadata"]["name"], "from-kubernetes");
    // An update writes it back as JSON.
    let mut changed = read.clone();
    changed["data"]["k"] = "w".into();
    let updated = server.http().put(&url).json(&changed).send().unwrap();
    assert_eq!(updated.status(), 200);
    // A value under kube-apiserver's encryption at rest is refused, saying so, and the rest stays served.
    etcd_put(
        &cluster,
        "/registry/configmaps/default/sealed",
        b"k8s:enc:aescbc:v1:key1:\x01\x02",
    );
    let sealed = server
        .http()
        .get(format!("{}{CONFIGMAPS}/sealed", server.url))
        .send()
        .unwrap();
    assert_eq!(sealed.status(), 500);
    let status: Value = sealed.json().unwrap();
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("encryption at rest"),
        "{status}"
    );
    let other: Value = server.http().get(&url).send().unwrap().json().unwrap();
    assert_eq!(other["data"]["k"], "w");
}

#[test]
fn without_etcd_quorum_requests_fail_with_503_or_504_in_time_and_work_again_after() {
    let mut cluster = EtcdCluster::start(3);
    let server = Server::start_with(&["--etcd-servers", &cluster.endpoints().join(",")]);
    let create = |name: &str| {
        server
            .http()
            .post(format!("{}{CONFIGMAPS}", server.url))
            .json(&configmap(name))
            .timeout(Duration::from_secs(30))
            .send()
            .unwrap()
    };
    let before: Value = create("before").json().unwrap();
    // A watch open across the outage delivers what is written after it.
    let watch = {
        let url = format!(
            "{}{CONFIGMAPS}?watch=true&resourceVersion={}&timeoutSeconds=90",
            server.url,
            before["metadata"]["resourceVersion"].as_str().unwrap()
        );
        std::thread::spawn(move || {
            use std::io::BufRead;
            let response = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()
                .unwrap()
                .get(url)
                .send()
                .unwrap();
            let mut seen = Vec::new();
            for line in std::io::BufReader::new(response).lines() {
                let Ok(line) = line else { break };
                let done = line.contains("\"name\":\"after\"");
                seen.push(line);
                if done {
                    break;
                }
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    cluster.kill(1);
    cluster.kill(2);
    let get = || {
        server
            .http()
            .get(format!("{}{CONFIGMAPS}/before", server.url))
            .timeout(Duration::from_secs(30))
            .send()
            .unwrap()
    };
    for what in ["a create", "a get"] {
        let sent = Instant::now();
        let response = if what == "a create" {
            create("during")
        } else {
            get()
        };
        // etcd's request timeout is 5 s; the consistent-read check and the write may each take it.
        assert!(
            sent.elapsed() < Duration::from_secs(12),
            "{what} took {:?}",
            sent.elapsed()
        );
        let code = response.status().as_u16();
        let status: Value = response.json().unwrap();
        assert!(code == 503 || code == 504, "{what}: {code} {status}");
        assert_eq!(status["kind"], "Status", "{what}: {status}");
    }
    cluster.restart(1);
    cluster.restart(2);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = create("after");
        if response.status() == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes never came back: {}",
            response.status()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let read: Value = server
        .http()
        .get(format!("{}{CONFIGMAPS}/before", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(read["data"]["k"], "v");
    let seen = watch.join().unwrap();
    assert!(
        seen.last()
            .is_some_and(|l| l.contains("\"name\":\"after\"")),
        "the watch did not resume: {seen:?}"
    );
    assert!(
        seen.iter().all(|l| !l.contains("\"type\":\"ERROR\"")),
        "{seen:?}"
    );
}

/// Posts `body` to `path` through each of `servers` in turn, all at once (one thread per body); returns the
/// answers' statuses and bodies in order.
fn post_at_once(servers: &[&Server], path: &str, bodies: Vec<Value>) -> Vec<(u16, Value)> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(bodies.len()));
    let threads: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let server = servers[i % servers.len()];
            let (client, url) = (server.http(), format!("{}{path}", server.url));
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let answer = client.post(url).json(&body).send().unwrap();
                (answer.status().as_u16(), answer.json::<Value>().unwrap())
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn servers_on_one_etcd_never_give_two_services_one_address_or_pass_a_quota_together() {
    let cluster = EtcdCluster::start(1);
    let etcd = cluster.endpoints().join(",");
    // Room for 13 Services: 127.43.0.2-14 (.1 is the `kubernetes` Service's) and 13 node ports.
    let flags = [
        "--etcd-servers",
        &etcd,
        "--service-cluster-ip-range",
        "127.43.0.0/28",
        "--service-node-port-range",
        "30000-30012",
    ];
    let (a, b) = (Server::start_with(&flags), Server::start_with(&flags));
    let services: Vec<Value> = (0..13)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("web-{i}")},
            "spec": {"type": "NodePort", "ports": [{"port": 80}]}})
        })
        .collect();
    let answers = post_at_once(&[&a, &b], "/api/v1/namespaces/default/services", services);
    let (mut ips, mut ports) = (Vec::new(), Vec::new());
    for (status, service) in &answers {
        assert_eq!(*status, 201, "{service}");
        ips.push(service["spec"]["clusterIP"].as_str().unwrap().to_owned());
        ports.push(service["spec"]["ports"][0]["nodePort"].as_i64().unwrap());
    }
    ips.sort();
    ips.dedup();
    ports.sort();
    ports.dedup();
    assert_eq!((ips.len(), ports.len()), (13, 13), "{ips:?} {ports:?}");
    // The range is full, whichever server is asked.
    let full = post_at_once(
        &[&b],
        "/api/v1/namespaces/default/services",
        vec![
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "one-more"},
            "spec": {"ports": [{"port": 80}]}}),
        ],
    )
    .remove(0)
    .1;
    assert_eq!(full["code"], 422, "{full}");
    assert!(
        full["message"]
            .as_str()
            .unwrap()
            .contains("failed to allocate a serviceIP: range is full"),
        "{full}"
    );

    // A quota of 4 pods holds when 12 are created at once through both servers.
    let quota = post(
        &a,
        "/api/v1/namespaces/default/resourcequotas",
        &json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "four"},
            "spec": {"hard": {"pods": "4"}}}),
    );
    assert_eq!(quota["kind"], "ResourceQuota", "{quota}");
    let pods: Vec<Value> = (0..12)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p-{i}")},
            "spec": {"containers": [{"name": "app", "image": "hello.wasm"}]}})
        })
        .collect();
    let answers = post_at_once(&[&a, &b], "/api/v1/namespaces/default/pods", pods);
    let created = answers.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(created, 4, "{answers:?}");
    for (status, body) in answers.iter().filter(|(status, _)| *status != 201) {
        assert_eq!(*status, 403, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("exceeded quota: four"),
            "{body}"
        );
    }
}
