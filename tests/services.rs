//! Services through the node agents' proxies, with real agents and Wasm pods: cluster IPs and NodePorts on every
//! node, L7 balancing across replicas on two nodes, scaling and deletion under load, TCP mode, Service names
//! (wasi:sockets lookups and outgoing wasi:http requests) and environment variables inside pods.

mod common;

use common::{
    NodeAgent, Server, create_pod, echo_pod, get_pod, post, wait_for, wasm_app, wasmkube,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

fn get(server: &Server, path: &str) -> Value {
    reqwest::blocking::get(format!("{}{path}", server.url))
        .unwrap()
        .json()
        .unwrap()
}

fn hello_deployment(replicas: u32) -> Value {
    let image = format!(
        "file://{}",
        wasm_app("wasm32-wasip2", "hello_http").display()
    );
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hello"},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "hello"}},
                    "template": {"metadata": {"labels": {"app": "hello"}},
                                 "spec": {"containers": [{"name": "hello", "image": image,
                                     "ports": [{"name": "http", "containerPort": 8080}],
                                     "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                                        "periodSeconds": 1},
                                     "env": [{"name": "POD_NAME",
                                              "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}}})
}

fn hello_service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"},
           "spec": {"type": "NodePort", "selector": {"app": "hello"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "appProtocol": "http"}]}})
}

/// The pod each of `count` GETs through one keep-alive client reached, and how many failed.
fn tally(
    client: &reqwest::blocking::Client,
    url: &str,
    count: u32,
) -> (BTreeMap<String, u32>, u32) {
    let mut reached = BTreeMap::new();
    let mut failed = 0;
    for _ in 0..count {
        match client
            .get(url)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
        {
            Ok(body) => {
                let pod = body.trim().trim_start_matches("hello from ").to_owned();
                *reached.entry(pod).or_insert(0) += 1;
            }
            Err(_) => failed += 1,
        }
    }
    (reached, failed)
}

/// Every replica got its even share of `total` within ±25%.
fn assert_even(reached: &BTreeMap<String, u32>, replicas: u32, total: u32) {
    assert_eq!(
        reached.len() as u32,
        replicas,
        "replicas reached: {reached:?}"
    );
    let even = f64::from(total) / f64::from(replicas);
    for (pod, count) in reached {
        let share = f64::from(*count);
        assert!(
            (share - even).abs() <= even * 0.25,
            "{pod} got {count} of {total} requests (even: {even}): {reached:?}"
        );
    }
}

/// Waits until `replicas` replicas answer and no request fails: every node's proxy (each takes a share of new
/// connections) has the Service and its endpoints.
fn wait_for_replicas(client: &reqwest::blocking::Client, url: &str, replicas: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (BTreeMap::new(), 0);
    while Instant::now() < deadline {
        let (reached, failed) = tally(client, url, (3 * replicas as u32).max(20));
        if reached.len() == replicas && failed == 0 {
            return;
        }
        last = (reached, failed);
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("requests to {url} never reached {replicas} replicas without failures: {last:?}");
}

fn rolled_out(server: &Server) {
    let (ok, out, err) = wasmkube(
        server,
        &["rollout", "status", "deployment/hello", "--timeout", "60s"],
    );
    assert!(ok, "{out}{err}");
}

fn pod_log(server: &Server, name: &str) -> String {
    reqwest::blocking::get(format!(
        "{}/api/v1/namespaces/default/pods/{name}/log",
        server.url
    ))
    .and_then(|r| r.text())
    .unwrap()
}

/// The first host address of a node's podCIDR: the node's own address, where NodePorts are served too.
fn node_gateway(server: &Server, node: &str) -> String {
    let node = get(server, &format!("/api/v1/nodes/{node}"));
    let range: ipnet::Ipv4Net = node["spec"]["podCIDR"].as_str().unwrap().parse().unwrap();
    range.hosts().next().unwrap().to_string()
}

/// A server, two agents (`PREFIX-1`, `PREFIX-2`) and the hello Deployment (3 replicas) rolled out behind its
/// NodePort Service; returns the Service.
fn hello_on_two_nodes(prefix: &str) -> (Server, [NodeAgent; 2], Value) {
    let server = Server::start();
    let nodes = [
        NodeAgent::start(&server, &format!("{prefix}-1")),
        NodeAgent::start(&server, &format!("{prefix}-2")),
    ];
    post(
        &server,
        "/apis/apps/v1/namespaces/default/deployments",
        &hello_deployment(3),
    );
    let service = post(
        &server,
        "/api/v1/namespaces/default/services",
        &hello_service(),
    );
    rolled_out(&server);
    (server, nodes, service)
}

#[test]
fn a_service_balances_requests_over_replicas_on_two_nodes_from_clients_and_pods() {
    let (server, _nodes, service) = hello_on_two_nodes("svc-node");
    let cluster_ip = service["spec"]["clusterIP"].as_str().unwrap().to_owned();
    let node_port = service["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    let pods = get(
        &server,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dhello",
    );
    let nodes: std::collections::BTreeSet<&str> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    assert_eq!(nodes.len(), 2, "the replicas run on both nodes: {nodes:?}");

    // 600 requests over one keep-alive connection: each request is balanced on its own.
    let client = reqwest::blocking::Client::new();
    let url = format!("http://{cluster_ip}/");
    wait_for_replicas(&client, &url, 3);
    let (reached, failed) = tally(&client, &url, 600);
    assert_eq!(failed, 0);
    assert_even(&reached, 3, 600);

    // The NodePort answers on every node's address.
    for node in ["svc-node-1", "svc-node-2"] {
        let gateway = node_gateway(&server, node);
        let body = client
            .get(format!("http://{gateway}:{node_port}/"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("NodePort {node_port} on {node} ({gateway}): {e}"));
        assert!(body.starts_with("hello from hello-"), "{body}");
    }

    // From a Wasm pod, by the Service's name: the same even spread.
    create_pod(
        &server,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "load"},
               "spec": {"restartPolicy": "Never", "containers": [{"name": "load",
                   "image": format!("file://{}", wasm_app("wasm32-wasip2", "http-get").display()),
                   "args": ["hello:80", "600"]}]}}),
    );
    wait_for(&server, "load", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    let log = pod_log(&server, "load");
    assert!(log.contains("done: 600 ok, 0 failed"), "{log}");
    let mut from_pod = BTreeMap::new();
    for line in log.lines().filter_map(|l| l.strip_prefix("hello from ")) {
        *from_pod.entry(line.to_owned()).or_insert(0) += 1;
    }
    assert_even(&from_pod, 3, 600);

    // The fully qualified name resolves too, and pods get the Service's variables.
    create_pod(
        &server,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fqdn"},
               "spec": {"restartPolicy": "Never", "containers": [{"name": "load",
                   "image": format!("file://{}", wasm_app("wasm32-wasip2", "http-get").display()),
                   "args": ["hello.default.svc.cluster.local:80", "3"]}]}}),
    );
    create_pod(
        &server,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "env"},
               "spec": {"restartPolicy": "Never", "containers": [{"name": "env",
                   "image": format!("file://{}", wasm_app("wasm32-wasip1", "batch").display()),
                   "args": ["1"], "env": [{"name": "PRINT_ENV", "value": "HELLO_"}]}]}}),
    );
    for pod in ["fqdn", "env"] {
        wait_for(&server, pod, "Succeeded", |p| {
            p["status"]["phase"] == "Succeeded"
        });
    }
    let log = pod_log(&server, "fqdn");
    assert!(log.contains("done: 3 ok, 0 failed"), "{log}");

    // An HTTP component's outgoing wasi:http request to the Service's name reaches a replica.
    create_pod(
        &server,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fetcher"},
               "spec": {"containers": [{"name": "fetcher",
                   "image": format!("file://{}", wasm_app("wasm32-wasip2", "hello_http").display()),
                   "ports": [{"containerPort": 8080}]}]}}),
    );
    let fetcher = wait_for(&server, "fetcher", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    let fetcher_ip = fetcher["status"]["podIP"].as_str().unwrap();
    for name in ["hello", "hello.default.svc.cluster.local"] {
        let body = client
            .get(format!("http://{fetcher_ip}:8080/fetch?to={name}"))
            .send()
            .and_then(|r| r.text())
            .unwrap();
        assert!(
            body.starts_with("fetched 200: hello from hello-"),
            "{name}: {body}"
        );
    }
    let log = pod_log(&server, "env");
    for expected in [
        format!("HELLO_SERVICE_HOST={cluster_ip}"),
        "HELLO_SERVICE_PORT=80".to_owned(),
        "HELLO_SERVICE_PORT_HTTP=80".to_owned(),
        format!("HELLO_PORT=tcp://{cluster_ip}:80"),
    ] {
        assert!(log.lines().any(|l| l == expected), "{expected} in {log}");
    }
}

#[test]
fn client_ip_affinity_least_requests_and_headless_services() {
    let (server, _nodes, _) = hello_on_two_nodes("aff-node");
    let service = |name: &str, spec: Value, annotations: Value| {
        let mut spec = spec;
        spec["selector"] = json!({"app": "hello"});
        post(
            &server,
            "/api/v1/namespaces/default/services",
            &json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "annotations": annotations}, "spec": spec}),
        )
    };
    let http_port = json!([{"port": 80, "targetPort": "http", "appProtocol": "http"}]);
    let sticky = service(
        "sticky",
        json!({"sessionAffinity": "ClientIP", "ports": http_port}),
        json!({}),
    );
    let least = service(
        "least",
        json!({"ports": http_port}),
        json!({"wasmkube.io/load-balancer": "least-requests"}),
    );
    let headless = service(
        "headless",
        json!({"clusterIP": "None", "ports": [{"port": 8080}]}),
        json!({}),
    );

    // A new connection per request, so both nodes' proxies answer (SO_REUSEPORT spreads connections): the
    // client still reaches one replica.
    let fresh = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let sticky_url = format!("http://{}/", sticky["spec"]["clusterIP"].as_str().unwrap());
    wait_for_replicas(&fresh, &sticky_url, 1);
    let (reached, failed) = tally(&fresh, &sticky_url, 60);
    assert_eq!(failed, 0);
    assert_eq!(reached.len(), 1, "ClientIP affinity: {reached:?}");

    // Least requests still spreads an idle service's sequential requests (ties go round robin).
    let least_url = format!("http://{}/", least["spec"]["clusterIP"].as_str().unwrap());
    let client = reqwest::blocking::Client::new();
    wait_for_replicas(&client, &least_url, 3);
    let (reached, failed) = tally(&client, &least_url, 300);
    assert_eq!(failed, 0);
    assert_even(&reached, 3, 300);

    // Headless: no cluster IP and no proxy, but endpoints (the pods themselves).
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let slices = get(
            &server,
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dheadless",
        );
        let ready: usize = slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .count();
        if ready == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "headless endpoints: {slices}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn replicas_come_and_go_under_load_without_a_failed_request() {
    let (server, _nodes, service) = hello_on_two_nodes("load-node");
    let url = format!("http://{}/", service["spec"]["clusterIP"].as_str().unwrap());
    let client = reqwest::blocking::Client::new();
    wait_for_replicas(&client, &url, 3);

    // Load from a client of its own while a replica is deleted and replaced.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failures) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let load = {
        let (stop, sent, failures, url) =
            (stop.clone(), sent.clone(), failures.clone(), url.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                sent.fetch_add(1, Ordering::SeqCst);
                match client.get(&url).send().and_then(|r| r.error_for_status()) {
                    Ok(_) => {}
                    Err(e) => {
                        failures.fetch_add(1, Ordering::SeqCst);
                        errors.push(e.to_string());
                    }
                }
            }
            errors
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let pods = get(
        &server,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dhello",
    );
    let victim = pods["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, out, err) = wasmkube(&server, &["delete", "pod", &victim]);
    assert!(ok, "{out}{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_pod(&server, &victim).is_some() {
        assert!(Instant::now() < deadline, "{victim} was never removed");
        std::thread::sleep(Duration::from_millis(50));
    }
    rolled_out(&server);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let errors = load.join().unwrap();
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent > 100, "only {sent} requests were sent");
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "{sent} sent: {errors:?}"
    );

    // Scaling to 6: the new replicas get their share within seconds.
    let (ok, out, err) = wasmkube(&server, &["scale", "deployment/hello", "--replicas", "6"]);
    assert!(ok, "{out}{err}");
    rolled_out(&server);
    wait_for_replicas(&client, &url, 6);
    let (reached, failed) = tally(&client, &url, 600);
    assert_eq!(failed, 0);
    assert_even(&reached, 6, 600);
}

/// Connects through the Service, returns the greeting and checks the echo.
fn echo_through(address: &str) -> std::io::Result<String> {
    let stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut greeting = String::new();
    reader.read_line(&mut greeting)?;
    (&stream).write_all(b"ping\n")?;
    let mut echo = String::new();
    reader.read_line(&mut echo)?;
    assert_eq!(echo, "ping\n");
    Ok(greeting.trim().to_owned())
}

#[test]
fn tcp_services_spread_connections_and_refuse_at_once_without_endpoints() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "echo-node");
    let service = post(
        &server,
        "/api/v1/namespaces/default/services",
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
                "spec": {"selector": {"app": "echo"}, "ports": [{"port": 7000}]}}),
    );
    let address = format!("{}:7000", service["spec"]["clusterIP"].as_str().unwrap());
    // No endpoint yet: the connection is refused, not left hanging.
    let started = Instant::now();
    let refused = std::net::TcpStream::connect(&address).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(started.elapsed() < Duration::from_secs(1));

    create_pod(&server, echo_pod("echo-a", "echo-node"));
    create_pod(&server, echo_pod("echo-b", "echo-node"));
    for name in ["echo-a", "echo-b"] {
        wait_for(&server, name, "Running", |p| {
            p["status"]["phase"] == "Running"
        });
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut greetings = std::collections::BTreeSet::new();
    while greetings.len() < 2 {
        assert!(Instant::now() < deadline, "only reached {greetings:?}");
        if let Ok(greeting) = echo_through(&address) {
            greetings.insert(greeting);
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(
        greetings.into_iter().collect::<Vec<_>>(),
        ["echo from echo-a", "echo from echo-b"]
    );

    // Both pods gone: refused again within a second or so.
    for name in ["echo-a", "echo-b"] {
        let (ok, out, err) = wasmkube(&server, &["delete", "pod", name]);
        assert!(ok, "{out}{err}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match std::net::TcpStream::connect(&address) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            other => panic!("still connecting to {address} after its pods went: {other:?}"),
        }
    }
}

#[test]
fn an_http_service_without_ready_endpoints_answers_503_at_once() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "empty-node");
    let service = post(
        &server,
        "/api/v1/namespaces/default/services",
        &hello_service(),
    );
    let url = format!("http://{}/", service["spec"]["clusterIP"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let response = loop {
        match reqwest::blocking::get(&url) {
            Ok(response) => break response,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the proxy never listened on {url}: {e}"),
        }
    };
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.text().unwrap(),
        "no endpoints available for service \"default/hello:http\"\n"
    );
}

/// GETs `url` until it answered 200 `times`; returns how many 503s (no endpoint yet) came before.
fn answer_through(url: &str, times: u32) -> u32 {
    let client = reqwest::blocking::Client::new();
    let (mut unavailable, mut answered) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered < times {
        assert!(
            Instant::now() < deadline,
            "the hello app never answered {times} times through {url}"
        );
        match client.get(url).send().map(|r| r.status().as_u16()) {
            Ok(200) => answered += 1,
            Ok(503) => unavailable += 1,
            Ok(other) => panic!("{url} answered {other}"),
            // The proxy listens once it has seen the Service.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    unavailable
}

/// The hello app as one replica without a probe (every request it answers comes through its Service), and
/// its Service's cluster IP URL.
fn lone_hello(server: &Server) -> String {
    let service = post(
        server,
        "/api/v1/namespaces/default/services",
        &hello_service(),
    );
    let mut deployment = hello_deployment(1);
    let container = &mut deployment["spec"]["template"]["spec"]["containers"][0];
    container.as_object_mut().unwrap().remove("readinessProbe");
    post(
        server,
        "/apis/apps/v1/namespaces/default/deployments",
        &deployment,
    );
    format!("http://{}/", service["spec"]["clusterIP"].as_str().unwrap())
}

/// The value of the sample `series` (name and labels, as the exposition writes them) in a metrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

#[test]
fn the_agent_counts_each_pods_and_each_services_requests_in_its_metrics() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "metrics-node");
    let url = lone_hello(&server);
    let answered = 20;
    let unavailable = answer_through(&url, answered);
    let pods = get(
        &server,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dhello",
    );
    let pod = pods["items"][0]["metadata"]["name"].as_str().unwrap();

    // Through the apiserver's node proxy, as Prometheus' kubernetes_sd scrapes a kubelet.
    let response = reqwest::blocking::get(format!(
        "{}/api/v1/nodes/metrics-node/proxy/metrics",
        server.url
    ))
    .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().unwrap();
    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(value("kubelet_running_pods"), 1.0);
    assert_eq!(
        value("kubelet_running_containers{container_state=\"running\"}"),
        1.0
    );
    let of_pod = format!("namespace=\"default\",pod=\"{pod}\",container=\"hello\"");
    assert_eq!(
        value(&format!(
            "wasmkube_pod_http_requests_total{{{of_pod},code_class=\"2xx\"}}"
        )),
        f64::from(answered)
    );
    assert_eq!(
        value(&format!(
            "wasmkube_pod_http_request_duration_seconds_count{{{of_pod}}}"
        )),
        f64::from(answered)
    );
    assert!(
        value(&format!(
            "wasmkube_pod_http_request_duration_seconds_sum{{{of_pod}}}"
        )) > 0.0
    );
    let service = "service=\"default/hello:http\"";
    assert_eq!(
        value(&format!(
            "wasmkube_proxy_requests_total{{{service},code_class=\"2xx\"}}"
        )),
        f64::from(answered)
    );
    if unavailable > 0 {
        assert_eq!(
            value(&format!(
                "wasmkube_proxy_requests_total{{{service},code_class=\"5xx\"}}"
            )),
            f64::from(unavailable)
        );
    }
    assert_eq!(
        value(&format!(
            "wasmkube_proxy_request_duration_seconds_bucket{{le=\"+Inf\",{service}}}"
        )),
        f64::from(answered + unavailable)
    );
    assert_eq!(
        value(&format!("wasmkube_proxy_retries_total{{{service}}}")),
        0.0
    );
    // kubectl reaches the same endpoint.
    let (ok, out, err) = common::kubectl(
        &server,
        None,
        &["get", "--raw", "/api/v1/nodes/metrics-node/proxy/metrics"],
        None,
    );
    assert!(ok && out.contains("kubelet_running_pods 1"), "{out}{err}");
}

#[test]
fn the_machines_own_proxy_serves_its_metrics_where_asked_and_refuses_a_busy_address() {
    let server = Server::start();
    let _node = NodeAgent::start_with(&server, "own-proxy-node", &["--proxy", "false"]);
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let proxy = |address: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wasmkube"))
            .args(["--server", &server.url, "proxy", "--node", "own-proxy-node"])
            .args(["--metrics-bind-address", address])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let _proxy = common::Killed(proxy(&metrics));
    let url = lone_hello(&server);
    let unavailable = answer_through(&url, 10);
    let text = reqwest::blocking::get(format!("http://{metrics}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let service = "service=\"default/hello:http\"";
    assert_eq!(
        sample(
            &text,
            &format!("wasmkube_proxy_requests_total{{{service},code_class=\"2xx\"}}")
        ),
        Some(10.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("wasmkube_proxy_request_duration_seconds_count{{{service}}}")
        ),
        Some(f64::from(10 + unavailable)),
        "{text}"
    );
    assert!(!text.contains("kubelet_running_pods"), "{text}");

    // An address already taken: one line and a non-zero exit, at once.
    let output = proxy(&metrics).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("cannot serve metrics on {metrics}")),
        "{stderr}"
    );
}

/// The `kubernetes` Service of the default namespace is the API's address inside the cluster: the first
/// address of the Service range, port 443, whose endpoints are the apiserver, served with a certificate
/// that names it.
#[test]
fn the_kubernetes_service_leads_to_the_apiserver() {
    // A secured server (HTTPS), whose node authenticates with a token of its own.
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "node-token,system:node:api-node,n1,system:nodes\n").unwrap();
    let server = Server::start_with(&[
        "--authorization-mode",
        "Node,RBAC",
        "--token-auth-file",
        tokens.to_str().unwrap(),
    ]);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let _node = NodeAgent::start_as(&server, "api-node", Some("node-token"));
    let service = common::wait_until(
        &server,
        "/api/v1/namespaces/default/services/kubernetes",
        "there",
        |s| s["spec"]["clusterIP"].is_string(),
    );
    let cluster_ip = service["spec"]["clusterIP"].as_str().unwrap().to_owned();
    assert!(
        cluster_ip.ends_with(".128.1"),
        "the range's first address: {service}"
    );
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
    let port = server
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    let endpoints = common::wait_until(
        &server,
        "/api/v1/namespaces/default/endpoints/kubernetes",
        "the apiserver",
        |e| e["subsets"][0]["ports"][0]["port"] == port,
    );
    assert_eq!(endpoints["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");

    // Through the node's Service proxy, with the cluster CA and the Service's own name and address.
    let deadline = Instant::now() + Duration::from_secs(20);
    let version = loop {
        match server
            .http()
            .get(format!("https://{cluster_ip}:443/version"))
            .send()
        {
            Ok(response) if response.status() == 200 => break response.json::<Value>().unwrap(),
            other if Instant::now() > deadline => {
                panic!("no answer through the Service: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert!(version["gitVersion"].is_string(), "{version}");
}

/// The proxy subresources, directly and through `kubectl proxy`: to a pod's port, to a ready endpoint of a
/// Service, to a node's agent; never to an address outside the pod network.
#[test]
fn proxy_subresources_reach_pods_services_and_nodes() {
    let (server, _nodes, _) = hello_on_two_nodes("proxy-node");
    let pods = get(
        &server,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dhello",
    );
    let pod = pods["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = server.http();
    let fetch = |path: &str| {
        let response = http.get(format!("{}{path}", server.url)).send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    let base = "/api/v1/namespaces/default";
    assert_eq!(
        fetch(&format!("{base}/pods/{pod}:8080/proxy/")),
        (200, format!("hello from {pod}\n"))
    );
    assert_eq!(
        fetch(&format!("{base}/pods/{pod}:http/proxy/healthz")),
        (200, "ok\n".to_owned())
    );
    let (status, body) = fetch(&format!("{base}/services/hello:http/proxy/"));
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("hello from hello-"), "{body}");
    assert_eq!(
        fetch("/api/v1/nodes/proxy-node-1/proxy/healthz"),
        (200, "ok".to_owned())
    );

    // kubectl proxy serves the same paths without credentials.
    let mut proxy = common::Killed(
        std::process::Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .args(["proxy", "--port=0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl proxy"),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(proxy.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let local = line.trim().rsplit(':').next().unwrap().to_owned();
    let body = reqwest::blocking::get(format!(
        "http://127.0.0.1:{local}{base}/services/hello/proxy/"
    ))
    .and_then(|r| r.text())
    .unwrap();
    assert!(body.starts_with("hello from hello-"), "{line}: {body}");

    // A selector-less Service whose hand-written endpoints point at the apiserver: refused.
    post(
        &server,
        &format!("{base}/services"),
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sneaky"},
                "spec": {"ports": [{"name": "web", "port": 80}]}}),
    );
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    post(
        &server,
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "sneaky-1", "labels": {"kubernetes.io/service-name": "sneaky"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
                "ports": [{"name": "web", "port": port}]}),
    );
    let (status, body) = fetch(&format!("{base}/services/sneaky:web/proxy/api"));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no endpoints available"), "{body}");
}
