//! The Wasm sandbox's network, as a pod sees it: it cannot connect to the apiserver, a node agent or the host's
//! loopback (by wasi:sockets or by an outgoing wasi:http request), but a Service that points there is the
//! way through. (Its files and limits: tests/node_agent.rs and node/tests/runtime.rs.)

mod common;

use common::{NodeAgent, Server, create_pod, post, wait_for, wasm_app};
use serde_json::{Value, json};

fn log(server: &Server, pod: &str) -> String {
    server
        .http()
        .get(format!(
            "{}/api/v1/namespaces/default/pods/{pod}/log",
            server.url
        ))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default()
}

/// Runs `http-get TARGET 1 PATH` in a pod to its end; returns its output.
fn get_from_pod(server: &Server, name: &str, target: &str, path: &str) -> String {
    create_pod(
        server,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"restartPolicy": "Never", "containers": [{"name": "get",
                   "image": format!("file://{}", wasm_app("wasm32-wasip2", "http-get").display()),
                   "args": [target, "1", path]}]}}),
    );
    wait_for(server, name, "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    log(server, name)
}

#[test]
fn a_pod_cannot_reach_the_apiserver_or_agents_except_through_a_service() {
    let server = Server::start();
    let agent = NodeAgent::start(&server, "sandbox-node");
    let api = server.url.trim_start_matches("http://").to_owned();
    let api_port: u16 = api.rsplit(':').next().unwrap().parse().unwrap();
    let node: Value = server
        .http()
        .get(format!("{}/api/v1/nodes/{}", server.url, agent.name))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let agent_port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_i64()
        .unwrap();

    // By wasi:sockets: refused before any packet leaves.
    for (pod, target) in [
        ("to-api", api.clone()),
        ("to-agent", format!("127.0.0.1:{agent_port}")),
        ("to-localhost", format!("localhost:{api_port}")),
    ] {
        let out = get_from_pod(&server, pod, &target, "/version");
        assert!(
            out.contains("error: cannot connect to") && out.contains("done: 0 ok, 1 failed"),
            "{pod}: {out}"
        );
    }

    // A Service without a selector whose endpoint is the apiserver: its cluster IP is the way through.
    post(
        &server,
        "/api/v1/namespaces/default/services",
        &json!({"metadata": {"name": "control-plane"},
                "spec": {"ports": [{"name": "api", "port": 80, "targetPort": api_port}]}}),
    );
    post(
        &server,
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        &json!({"metadata": {"name": "control-plane-1", "labels": {"kubernetes.io/service-name": "control-plane"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
                "ports": [{"name": "api", "port": api_port, "protocol": "TCP"}]}),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut attempt = 0;
    loop {
        let out = get_from_pod(
            &server,
            &format!("via-service-{attempt}"),
            "control-plane:80",
            "/version",
        );
        if out.contains("done: 1 ok") {
            assert!(out.contains("gitVersion"), "{out}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the Service never let the pod through: {out}"
        );
        attempt += 1;
    }

    // An HTTP component's outgoing wasi:http request to the apiserver is refused the same way.
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
    let client = reqwest::blocking::Client::new();
    let fetched = |to: &str| {
        client
            .get(format!("http://{fetcher_ip}:8080/fetch?to={to}"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default()
    };
    let refused = fetched(&api);
    assert!(
        refused.starts_with("fetch failed") && refused.contains("DestinationIpProhibited"),
        "{refused}"
    );
    let through = fetched("control-plane");
    assert!(through.starts_with("fetched 404"), "{through}");
}

/// Regression (issue 13): a host service bound to 0.0.0.0 answered a pod on any 127.x address but 127.0.0.1,
/// and then on the addresses of the node's podCIDR (local addresses too).
#[test]
fn a_pod_cannot_reach_host_services_through_other_loopback_or_link_local_addresses() {
    let server = Server::start();
    let _agent = NodeAgent::start(&server, "sandbox-loopback");
    let host_service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = host_service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::Write;
        for stream in host_service.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret");
        }
    });
    let node = common::wait_until(
        &server,
        "/api/v1/nodes/sandbox-loopback",
        "given a podCIDR",
        |n| n["spec"]["podCIDR"].is_string(),
    );
    let cidr = node["spec"]["podCIDR"].as_str().unwrap_or_default();
    let prefix = cidr.rsplit_once('.').map_or("", |(p, _)| p).to_owned();
    for (pod, target) in [
        ("to-127-0-0-2", format!("127.0.0.2:{port}")),
        ("to-127-9-9-9", format!("127.9.9.9:{port}")),
        ("to-metadata", "169.254.169.254:80".to_owned()),
        ("to-a-free-pod-address", format!("{prefix}.250:{port}")),
        ("to-the-node-pod-address", format!("{prefix}.1:{port}")),
    ] {
        let out = get_from_pod(&server, pod, &target, "/");
        assert!(
            out.contains("error: cannot connect to") && out.contains("done: 0 ok, 1 failed"),
            "{pod}: {out}"
        );
        assert!(!out.contains("secret"), "{pod}: {out}");
    }
}
