//! The scheduler inside `wasmkube server`, with real node agents: unbound pods are spread over the nodes that
//! fit them and run; pods that fit nowhere say why; anti-affinity keeps pods apart; a pod of a higher
//! PriorityClass preempts a lower one; freed room goes to the highest priority waiting; gated pods wait.

mod common;

use common::{NodeAgent, Server, create_pod, event_reasons, get_pod, post, wait_for, wasm_app};
use serde_json::{Value, json};

fn batch_pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"restartPolicy": "Never",
                    "containers": [{"name": "main", "image": format!("file://{}", wasm_app("wasm32-wasip1", "batch").display()),
                                    "resources": {"requests": {"cpu": "100m", "memory": "16Mi"}}}]}})
}

#[test]
fn unbound_pods_are_spread_over_the_nodes_and_run() {
    let server = Server::start();
    let _a = NodeAgent::start(&server, "n1");
    let _b = NodeAgent::start(&server, "n2");
    for i in 0..4 {
        create_pod(&server, batch_pod(&format!("p{i}")));
    }
    let mut nodes = Vec::new();
    for i in 0..4 {
        let done = wait_for(&server, &format!("p{i}"), "Succeeded", |p| {
            p["status"]["phase"] == "Succeeded"
        });
        nodes.push(done["spec"]["nodeName"].as_str().unwrap().to_owned());
    }
    assert!(
        nodes.contains(&"n1".to_owned()) && nodes.contains(&"n2".to_owned()),
        "all on one node: {nodes:?}"
    );
    let reasons = common::event_reasons(&server, "p0");
    assert!(reasons.iter().any(|r| r == "Scheduled"), "{reasons:?}");
    // kube-scheduler's metrics, at the apiserver's /metrics of the same process.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let metrics = loop {
        let text = server
            .http()
            .get(format!("{}/metrics", server.url))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        if text.contains("scheduler_pending_pods{queue=\"active\"} 0\n")
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let scheduled: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"} ",
            )
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(scheduled >= 4.0, "{metrics}");
    for line in [
        "scheduler_pending_pods{queue=\"active\"} 0\n",
        "scheduler_pending_pods{queue=\"unschedulable\"} 0\n",
        "# TYPE scheduler_scheduling_attempt_duration_seconds histogram",
        "# TYPE apiserver_request_duration_seconds histogram",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
}

#[test]
fn node_selectors_pick_the_node_and_pods_that_fit_nowhere_are_unschedulable() {
    let server = Server::start();
    let _a = NodeAgent::start(&server, "n1");
    let _b = NodeAgent::start(&server, "n2");
    let mut pinned = batch_pod("pinned");
    pinned["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "n2"});
    create_pod(&server, pinned);
    let done = wait_for(&server, "pinned", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(done["spec"]["nodeName"], "n2");

    let mut huge = batch_pod("huge");
    huge["spec"]["containers"][0]["resources"]["requests"]["memory"] = json!("100Ti");
    create_pod(&server, huge);
    let pending = wait_for(&server, "huge", "Unschedulable", |p| {
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
    });
    let condition = pending["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap()
        .clone();
    assert_eq!(
        condition["message"],
        "0/2 nodes are available: 2 Insufficient memory. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.."
    );
    assert_eq!(pending["status"]["phase"], "Pending");
    // The event is recorded right after the condition is written.
    let url = format!(
        "{}/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dhuge,reason%3DFailedScheduling",
        server.url
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut events: Value = Value::Null;
    while std::time::Instant::now() < deadline {
        events = reqwest::blocking::get(&url).unwrap().json().unwrap();
        if events["items"][0].is_object() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        events["items"][0]["message"],
        "0/2 nodes are available: 2 Insufficient memory. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.."
    );
}

#[test]
fn an_unschedulable_pod_is_placed_as_soon_as_a_node_changes_to_fit_it() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "plain");
    let mut picky = batch_pod("picky");
    picky["spec"]["nodeSelector"] = json!({"disk": "ssd"});
    create_pod(&server, picky);
    wait_for(&server, "picky", "Unschedulable", |p| {
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
    });
    // The periodic retry is 10 s away: a bind within 5 s comes from the node's change.
    let labelled = std::time::Instant::now();
    let response = reqwest::blocking::Client::new()
        .patch(format!("{}/api/v1/nodes/plain", server.url))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"metadata": {"labels": {"disk": "ssd"}}}"#)
        .send()
        .unwrap();
    assert!(response.status().is_success());
    let bound = wait_for(&server, "picky", "bound", |p| {
        p["spec"]["nodeName"] == "plain"
    });
    assert!(
        labelled.elapsed() < std::time::Duration::from_secs(5),
        "bound only after {:?}",
        labelled.elapsed()
    );
    assert_eq!(bound["spec"]["nodeName"], "plain");
}

/// A TCP echo pod that keeps running until deleted, scheduled by the scheduler.
fn long_running_pod(name: &str, cpu_milli: i64) -> Value {
    let mut pod = common::echo_pod(name, "");
    pod["spec"].as_object_mut().unwrap().remove("nodeName");
    pod["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": format!("{cpu_milli}m")}});
    pod
}

fn allocatable_cpu_milli(server: &Server, node: &str) -> i64 {
    let node = common::get_json(server, &format!("/api/v1/nodes/{node}"));
    let cpu = node["status"]["allocatable"]["cpu"]
        .as_str()
        .unwrap()
        .to_owned();
    match cpu.strip_suffix('m') {
        Some(milli) => milli.parse().unwrap(),
        None => cpu.parse::<i64>().unwrap() * 1000,
    }
}

#[test]
fn a_pod_of_a_higher_priority_class_preempts_a_lower_one_and_runs() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "n1");
    let cpu = allocatable_cpu_milli(&server, "n1");
    let class = post(
        &server,
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        &json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000}),
    );
    assert_eq!(class["preemptionPolicy"], "PreemptLowerPriority");

    // Each asks for 60% of the node's cpu: the two cannot run together.
    create_pod(&server, long_running_pod("low", cpu * 6 / 10));
    let low = wait_for(&server, "low", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    assert_eq!(low["spec"]["priority"], 0);
    let mut high = long_running_pod("high", cpu * 6 / 10);
    high["spec"]["priorityClassName"] = json!("high");
    create_pod(&server, high);

    let high = wait_for(&server, "high", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    assert_eq!(high["spec"]["priority"], 1000);
    assert_eq!(high["spec"]["nodeName"], "n1");
    assert_eq!(high["status"]["nominatedNodeName"], "n1");
    assert!(
        get_pod(&server, "low").is_none(),
        "the lower pod was deleted"
    );
    assert!(
        event_reasons(&server, "low")
            .iter()
            .any(|r| r == "Preempted")
    );

    // A pod of the same priority preempts nothing: it waits, saying why.
    let mut peer = long_running_pod("peer", cpu * 6 / 10);
    peer["spec"]["priorityClassName"] = json!("high");
    create_pod(&server, peer);
    let waiting = wait_for(&server, "peer", "Unschedulable", |p| {
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["reason"] == "Unschedulable")
    });
    let message = waiting["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap()["message"]
        .clone();
    assert_eq!(
        message,
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.."
    );
}

#[test]
fn priority_classes_are_checked_as_kubernetes_checks_them() {
    let server = Server::start();
    let http = server.http();
    let classes = format!("{}/apis/scheduling.k8s.io/v1/priorityclasses", server.url);
    let create = |body: Value| {
        let response = http.post(&classes).json(&body).send().unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().unwrap(),
        )
    };
    let (code, status) = create(json!({"metadata": {"name": "too-high"}, "value": 1_000_000_001}));
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "Forbidden: maximum allowed value of a user defined priority is 1000000000"
    );
    let (code, _) = create(json!({"metadata": {"name": "system-mine"}, "value": 5}));
    assert_eq!(code, 422);
    assert_eq!(
        create(json!({"metadata": {"name": "default"}, "value": 10, "globalDefault": true})).0,
        201
    );
    let (code, status) =
        create(json!({"metadata": {"name": "other"}, "value": 20, "globalDefault": true}));
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        "priorityclasses.scheduling.k8s.io \"other\" is forbidden: PriorityClass default is already marked as default. Only one default can exist"
    );
    let system = http
        .delete(format!("{classes}/system-node-critical"))
        .send()
        .unwrap();
    assert_eq!(system.status(), 403);

    // A pod without a class gets the global default; one naming a missing class is refused.
    let pod = post(&server, common::PODS, &long_running_pod("plain", 10));
    assert_eq!(
        (
            pod["spec"]["priorityClassName"].as_str(),
            pod["spec"]["priority"].as_i64()
        ),
        (Some("default"), Some(10))
    );
    let mut missing = long_running_pod("missing", 10);
    missing["spec"]["priorityClassName"] = json!("nope");
    let response = http
        .post(format!("{}{}", server.url, common::PODS))
        .json(&missing)
        .send()
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().unwrap()["message"],
        "pods \"missing\" is forbidden: no PriorityClass with name nope was found"
    );
    let mut critical = long_running_pod("critical", 10);
    critical["spec"]["priorityClassName"] = json!("system-node-critical");
    critical["spec"]["priority"] = json!(7);
    let response = http
        .post(format!("{}{}", server.url, common::PODS))
        .json(&critical)
        .send()
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[test]
fn required_anti_affinity_puts_each_replica_on_its_own_node() {
    let server = Server::start();
    let _a = NodeAgent::start(&server, "n1");
    let _b = NodeAgent::start(&server, "n2");
    let apart = |name: &str| {
        let mut pod = long_running_pod(name, 10);
        pod["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "echo"}}, "topologyKey": "kubernetes.io/hostname"}]}});
        pod
    };
    for name in ["e1", "e2", "e3"] {
        create_pod(&server, apart(name));
    }
    let mut nodes = Vec::new();
    let mut waiting = Vec::new();
    for name in ["e1", "e2", "e3"] {
        let pod = wait_for(&server, name, "placed or refused", |p| {
            p["spec"]["nodeName"].is_string()
                || p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["reason"] == "Unschedulable")
        });
        match pod["spec"]["nodeName"].as_str() {
            Some(node) => nodes.push(node.to_owned()),
            None => waiting.push(pod),
        }
    }
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2"]);
    assert_eq!(waiting.len(), 1);
    let message = &waiting[0]["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap()["message"];
    assert_eq!(
        message,
        "0/2 nodes are available: 2 node(s) didn't satisfy existing pods anti-affinity rules. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.."
    );

    // A replica of a higher priority class preempts one of them: anti-affinity is resolved by removing pods.
    post(
        &server,
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        &json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000}),
    );
    let mut urgent = apart("urgent");
    urgent["spec"]["priorityClassName"] = json!("high");
    create_pod(&server, urgent);
    let urgent = wait_for(&server, "urgent", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    let node = urgent["spec"]["nodeName"].as_str().unwrap();
    assert_eq!(urgent["status"]["nominatedNodeName"], node);
    let staying: Vec<&str> = ["e1", "e2", "e3"]
        .into_iter()
        .filter(|name| {
            get_pod(&server, name).is_some_and(|p| {
                p["spec"]["nodeName"] == node && p["metadata"]["deletionTimestamp"].is_null()
            })
        })
        .collect();
    assert!(staying.is_empty(), "{staying:?} still run on {node}");
}

/// Whether the pod waits with PodScheduled=False for `reason`.
fn waits_for(pod: &Value, reason: &str) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "PodScheduled" && c["status"] == "False" && c["reason"] == reason)
}

fn merge_patch(server: &Server, name: &str, patch: Value) -> reqwest::blocking::Response {
    server
        .http()
        .patch(format!("{}{}/{name}", server.url, common::PODS))
        .header("content-type", "application/merge-patch+json")
        .body(patch.to_string())
        .send()
        .unwrap()
}

#[test]
fn a_gated_pod_is_not_scheduled_until_its_last_gate_is_removed() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "n1");
    let mut gated = batch_pod("gated");
    gated["spec"]["schedulingGates"] =
        json!([{"name": "example.com/quota"}, {"name": "example.com/arch"}]);
    let created = post(&server, common::PODS, &gated);
    let condition = created["status"]["conditions"][0].clone();
    assert_eq!(condition["type"], "PodScheduled");
    assert_eq!(condition["reason"], "SchedulingGated");
    assert_eq!(
        condition["message"],
        "Scheduling is blocked due to non-empty scheduling gates"
    );
    // kubectl's STATUS column.
    let table: Value = server
        .http()
        .get(format!("{}{}/gated", server.url, common::PODS))
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(table["rows"][0]["cells"][2], "SchedulingGated");

    // Gates are only ever removed; a gated pod is neither bound nor created bound.
    let added = merge_patch(
        &server,
        "gated",
        json!({"spec": {"schedulingGates": [{"name": "example.com/quota"}, {"name": "example.com/arch"}, {"name": "x"}]}}),
    );
    assert_eq!(added.status(), 422);
    let status: Value = added.json().unwrap();
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "Forbidden: only deletion is allowed, but found new scheduling gate 'x'"
    );
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.schedulingGates[2].name"
    );
    let binding = server
        .http()
        .post(format!("{}{}/gated/binding", server.url, common::PODS))
        .json(&json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "gated"}, "target": {"kind": "Node", "name": "n1"}}))
        .send()
        .unwrap();
    assert_eq!(binding.status(), 409);
    let mut bound = batch_pod("bound");
    bound["spec"]["nodeName"] = json!("n1");
    bound["spec"]["schedulingGates"] = json!([{"name": "example.com/quota"}]);
    let refused = server
        .http()
        .post(format!("{}{}", server.url, common::PODS))
        .json(&bound)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 422);
    assert!(refused.text().unwrap().contains(
        "spec.nodeName: Forbidden: cannot be set until all schedulingGates have been cleared"
    ));

    // While gated, where it may run can still narrow.
    let narrowed = merge_patch(
        &server,
        "gated",
        json!({"spec": {"schedulingGates": [{"name": "example.com/arch"}], "nodeSelector": {"kubernetes.io/hostname": "n1"}}}),
    );
    assert!(
        narrowed.status().is_success(),
        "{}",
        narrowed.text().unwrap()
    );
    // A pod created after the change is placed and finishes: the scheduler has seen the change by then.
    create_pod(&server, batch_pod("after"));
    wait_for(&server, "after", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    let still = get_pod(&server, "gated").unwrap();
    assert!(still["spec"]["nodeName"].is_null(), "{still}");
    assert!(waits_for(&still, "SchedulingGated"), "{}", still["status"]);

    let released = merge_patch(&server, "gated", json!({"spec": {"schedulingGates": null}}));
    assert!(
        released.status().is_success(),
        "{}",
        released.text().unwrap()
    );
    let done = wait_for(&server, "gated", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(done["spec"]["nodeName"], "n1");
    let reasons = event_reasons(&server, "gated");
    assert!(
        !reasons.iter().any(|r| r == "FailedScheduling"),
        "{reasons:?}"
    );
}

#[test]
fn pods_waiting_together_are_placed_highest_priority_first() {
    let server = Server::start_with(&["--no-scheduler"]);
    let _node = NodeAgent::start(&server, "n1");
    let cpu = allocatable_cpu_milli(&server, "n1");
    post(
        &server,
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        &json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "patient"},
                "value": 1000, "preemptionPolicy": "Never"}),
    );
    // Each asks for 60% of the node's cpu: only one fits. Created while no scheduler runs, the three of the
    // default priority first (and first by name), so the scheduler finds all four waiting at once.
    for name in ["a-low", "b-low", "c-low"] {
        create_pod(&server, long_running_pod(name, cpu * 6 / 10));
    }
    let mut high = long_running_pod("z-high", cpu * 6 / 10);
    high["spec"]["priorityClassName"] = json!("patient");
    create_pod(&server, high);
    let _scheduler = common::Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_wasmkube"))
            .args(["--server", &server.url, "scheduler"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start wasmkube scheduler"),
    );
    let placed = wait_for(&server, "z-high", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    assert_eq!(placed["spec"]["nodeName"], "n1");
    assert_eq!(placed["spec"]["priority"], 1000);
    for name in ["a-low", "b-low", "c-low"] {
        let low = wait_for(&server, name, "Unschedulable", |p| {
            waits_for(p, "Unschedulable")
        });
        assert!(low["spec"]["nodeName"].is_null(), "{name} took the room");
    }
}
