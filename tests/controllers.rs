//! The controllers with a real server and real node agents: ReplicaSets and Deployments make Wasm pods that run.

mod common;

use common::{NodeAgent, Server, endpoint_addresses, wait_until};
use serde_json::{Value, json};
use std::time::Duration;

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

fn get(server: &Server, path: &str) -> Value {
    http()
        .get(format!("{}{path}", server.url))
        .send()
        .and_then(|r| r.json())
        .unwrap_or(Value::Null)
}

fn send(server: &Server, method: &str, path: &str, body: Value) -> Value {
    let request = match method {
        "POST" => http().post(format!("{}{path}", server.url)),
        "PUT" => http().put(format!("{}{path}", server.url)),
        "PATCH" => http()
            .patch(format!("{}{path}", server.url))
            .header("content-type", "application/merge-patch+json"),
        "STRATEGIC" => http()
            .patch(format!("{}{path}", server.url))
            .header("content-type", "application/strategic-merge-patch+json"),
        _ => http().delete(format!("{}{path}", server.url)),
    };
    let response = request.json(&body).send().unwrap();
    let status = response.status();
    let value: Value = response.json().unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {path}: {status} {value}");
    value
}

const PODS: &str = "/api/v1/namespaces/default/pods";

/// The pods with this label selector that are not being deleted.
fn live_pods(server: &Server, selector: &str) -> Vec<Value> {
    let list = get(server, &format!("{PODS}?labelSelector={selector}"));
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn running(pods: &[Value]) -> usize {
    pods.iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .count()
}

fn template(app: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}},
           "spec": {"containers": [{"name": "web",
               "image": format!("file://{}", common::wasm_app("wasm32-wasip2", "hello_http").display()),
               "ports": [{"containerPort": 8080, "name": "http"}],
               "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}})
}

#[test]
fn a_replicaset_keeps_its_replicas_adopts_orphans_and_scales() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "rs-node");
    // An orphan that matches the selector, made before the ReplicaSet: it is adopted, not duplicated.
    let mut orphan = template("web");
    orphan["metadata"]["name"] = json!("orphan");
    orphan["apiVersion"] = json!("v1");
    orphan["kind"] = json!("Pod");
    send(&server, "POST", PODS, orphan);
    // Running (and so ranked last for deletion) before the ReplicaSet: if the controller's pod cache has not
    // seen it yet when the ReplicaSet arrives, it makes three and then removes a surplus new one, as
    // Kubernetes' would.
    common::wait_for(&server, "orphan", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template("web")}});
    send(
        &server,
        "POST",
        "/apis/apps/v1/namespaces/default/replicasets",
        rs,
    );
    let path = "/apis/apps/v1/namespaces/default/replicasets/web";
    let ready = wait_until(&server, path, "3 ready", |rs| {
        rs["status"]["readyReplicas"] == 3 && rs["status"]["availableReplicas"] == 3
    });
    assert_eq!(ready["status"]["replicas"], 3);
    assert_eq!(
        ready["status"]["observedGeneration"],
        ready["metadata"]["generation"]
    );
    let pods = live_pods(&server, "app=web");
    assert_eq!(pods.len(), 3, "{pods:?}");
    assert_eq!(running(&pods), 3);
    let uid = ready["metadata"]["uid"].clone();
    for pod in &pods {
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!((&owner["uid"], &owner["controller"]), (&uid, &json!(true)));
    }
    assert!(pods.iter().any(|p| p["metadata"]["name"] == "orphan"));

    // A deleted pod is replaced.
    let victim = pods[0]["metadata"]["name"].as_str().unwrap().to_owned();
    send(&server, "DELETE", &format!("{PODS}/{victim}"), json!({}));
    wait_until(&server, path, "3 ready again", |_| {
        let pods = live_pods(&server, "app=web");
        pods.len() == 3
            && running(&pods) == 3
            && pods
                .iter()
                .all(|p| p["metadata"]["name"] != victim.as_str())
    });

    // Scaling down through the scale subresource leaves one.
    send(
        &server,
        "PATCH",
        &format!("{path}/scale"),
        json!({"spec": {"replicas": 1}}),
    );
    let scaled = wait_until(&server, path, "1 replica", |rs| {
        rs["status"]["replicas"] == 1
    });
    assert_eq!(scaled["status"]["readyReplicas"], 1);
    assert_eq!(live_pods(&server, "app=web").len(), 1);

    // A pod relabelled out of the selector is released, and replaced.
    let kept = live_pods(&server, "app=web")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    send(
        &server,
        "PATCH",
        &format!("{PODS}/{kept}"),
        json!({"metadata": {"labels": {"app": "debug"}}}),
    );
    wait_until(&server, &format!("{PODS}/{kept}"), "released", |p| {
        p["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty())
    });
    wait_until(&server, path, "1 replica again", |_| {
        live_pods(&server, "app=web").len() == 1
    });
    let reasons = common::event_reasons(&server, "web");
    assert!(
        reasons.iter().any(|r| r == "SuccessfulCreate"),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r == "SuccessfulDelete"),
        "{reasons:?}"
    );
}

/// Creates a Deployment of the hello app whose pods carry `app: <name>`.
fn create_deployment(server: &Server, deployments: &str, name: &str, replicas: i64) {
    send(
        server,
        "POST",
        deployments,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": template(name)}}),
    );
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Whether the Deployment's status says its rollout is complete, as `kubectl rollout status` decides.
fn rolled_out(d: &Value, replicas: i64) -> bool {
    let status = &d["status"];
    status["observedGeneration"] == d["metadata"]["generation"]
        && status["updatedReplicas"] == replicas
        && status["replicas"] == replicas
        && status["availableReplicas"] == replicas
}

#[test]
fn a_deployment_spreads_rolls_within_surge_and_unavailability_and_rolls_back() {
    let server = Server::start();
    let nodes: Vec<NodeAgent> = (1..=3)
        .map(|i| NodeAgent::start(&server, &format!("node-{i}")))
        .collect();
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let path = format!("{deployments}/web");
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 10, "selector": {"matchLabels": {"app": "web"}}, "template": template("web"),
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}}});
    send(&server, "POST", deployments, deployment);
    let up = wait_until(&server, &path, "rolled out", |d| rolled_out(d, 10));
    assert_eq!(
        up["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let pods = live_pods(&server, "app=web");
    assert_eq!(running(&pods), 10);
    for node in &nodes {
        let on_node = pods
            .iter()
            .filter(|p| p["spec"]["nodeName"] == node.name.as_str())
            .count();
        assert!(
            on_node >= 3,
            "{} runs {on_node} of 10: not spread",
            node.name
        );
    }
    // Every replica serves on its own address.
    for pod in &pods {
        let url = format!("http://{}:8080/", pod["status"]["podIP"].as_str().unwrap());
        let body = http().get(&url).send().and_then(|r| r.text()).unwrap();
        assert_eq!(
            body,
            format!("hello from {}\n", pod["metadata"]["name"].as_str().unwrap())
        );
    }

    // A new template rolls out; sampled all along, the pods stay within maxSurge and maxUnavailable.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (url, done) = (server.url.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut most, mut fewest_ready, mut samples) = (0, usize::MAX, 0);
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let list: Value = http()
                    .get(format!("{url}{PODS}?labelSelector=app%3Dweb"))
                    .send()
                    .and_then(|r| r.json())
                    .unwrap_or(Value::Null);
                let live: Vec<&Value> = list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                    .collect();
                most = most.max(live.len());
                fewest_ready = fewest_ready.min(live.iter().filter(|p| is_ready(p)).count());
                samples += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (most, fewest_ready, samples)
        })
    };
    send(
        &server,
        "STRATEGIC",
        &path,
        json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "VERSION", "value": "2"}]}]}}}}),
    );
    let rolled = wait_until(&server, &path, "rolled out again", |d| {
        d["metadata"]["generation"] == 2 && rolled_out(d, 10)
    });
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (most, fewest_ready, samples) = sampler.join().unwrap();
    assert!(
        samples > 5,
        "too few samples ({samples}) to judge the rollout"
    );
    assert!(
        most <= 13,
        "{most} pods at once: more than replicas + maxSurge"
    );
    assert!(
        fewest_ready >= 8,
        "only {fewest_ready} ready at once: fewer than replicas - maxUnavailable"
    );
    assert_eq!(
        rolled["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let pods = live_pods(&server, "app=web");
    assert_eq!(pods.len(), 10);
    assert!(
        pods.iter()
            .all(|p| p["spec"]["containers"][0]["env"][1]["value"] == "2")
    );
    let sets = get(&server, "/apis/apps/v1/namespaces/default/replicasets");
    let sizes: Vec<(String, i64)> = sets["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rs| {
            (
                rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                rs["spec"]["replicas"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(
        sizes.contains(&("1".into(), 0)) && sizes.contains(&("2".into(), 10)),
        "{sizes:?}"
    );

    // Rolling back to revision 1's template reuses its ReplicaSet, as revision 3.
    let old_template = sets["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|rs| rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1")
        .map(|rs| rs["spec"]["template"].clone())
        .unwrap();
    let mut template = old_template.clone();
    template["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("pod-template-hash");
    let mut current = get(&server, &path);
    current["spec"]["template"] = template;
    send(&server, "PUT", &path, current);
    let back = wait_until(&server, &path, "rolled back", |d| {
        d["metadata"]["generation"] == 3 && rolled_out(d, 10)
    });
    assert_eq!(
        back["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let pods = live_pods(&server, "app=web");
    assert!(
        pods.iter()
            .all(|p| p["spec"]["containers"][0]["env"].as_array().unwrap().len() == 1)
    );
    assert!(
        pods.iter()
            .all(|p| p["metadata"]["labels"]["pod-template-hash"]
                == old_template["metadata"]["labels"]["pod-template-hash"])
    );
}

#[test]
fn a_recreate_deployment_stops_every_old_pod_before_starting_new_ones() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "node-r");
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let path = format!("{deployments}/db");
    send(
        &server,
        "POST",
        deployments,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "db"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "db"}}, "template": template("db"),
                 "strategy": {"type": "Recreate"}}}),
    );
    wait_until(&server, &path, "rolled out", |d| rolled_out(d, 3));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (url, done) = (server.url.clone(), done.clone());
        std::thread::spawn(move || {
            let mut mixed = false;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let list: Value = http()
                    .get(format!("{url}{PODS}?labelSelector=app%3Ddb"))
                    .send()
                    .and_then(|r| r.json())
                    .unwrap_or(Value::Null);
                let hashes: std::collections::BTreeSet<String> = list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["status"]["phase"] == "Running")
                    .filter_map(|p| {
                        p["metadata"]["labels"]["pod-template-hash"]
                            .as_str()
                            .map(str::to_owned)
                    })
                    .collect();
                mixed |= hashes.len() > 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            mixed
        })
    };
    send(
        &server,
        "PATCH",
        &path,
        json!({"spec": {"template": {"metadata": {"labels": {"app": "db", "v": "2"}}}}}),
    );
    wait_until(&server, &path, "recreated", |d| {
        d["metadata"]["generation"] == 2 && rolled_out(d, 3)
    });
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        !sampler.join().unwrap(),
        "old and new pods ran at the same time"
    );
    assert!(
        live_pods(&server, "app=db")
            .iter()
            .all(|p| p["metadata"]["labels"]["v"] == "2")
    );
}

fn exists(server: &Server, path: &str) -> bool {
    http()
        .get(format!("{}{path}", server.url))
        .send()
        .is_ok_and(|r| r.status() == 200)
}

fn names(server: &Server, path: &str) -> Vec<String> {
    get(server, path)["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn deletion_cascades_in_the_background_and_foreground_and_orphans_stay() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "gc-node");
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let replicasets = "/apis/apps/v1/namespaces/default/replicasets";
    for app in ["bg", "fg", "keep"] {
        send(
            &server,
            "POST",
            deployments,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": app},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": app}}, "template": template(app)}}),
        );
        wait_until(
            &server,
            &format!("{deployments}/{app}"),
            "rolled out",
            |d| rolled_out(d, 2),
        );
    }
    // Background (the default): the Deployment goes at once, its ReplicaSet and pods after it.
    send(&server, "DELETE", &format!("{deployments}/bg"), json!({}));
    assert!(!exists(&server, &format!("{deployments}/bg")));
    wait_until(&server, replicasets, "without bg's ReplicaSet", |_| {
        !names(&server, replicasets)
            .iter()
            .any(|n| n.starts_with("bg-"))
    });
    wait_until(&server, PODS, "without bg's pods", |_| {
        live_pods(&server, "app=bg").is_empty()
    });

    // Foreground: the Deployment stays, marked, until its dependents are gone.
    let marked = send(
        &server,
        "DELETE",
        &format!("{deployments}/fg"),
        json!({"propagationPolicy": "Foreground"}),
    );
    assert!(
        marked["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "foregroundDeletion"),
        "{marked}"
    );
    wait_until(&server, PODS, "fg deleted last", |_| {
        !exists(&server, &format!("{deployments}/fg"))
    });
    assert!(live_pods(&server, "app=fg").is_empty());
    assert!(
        !names(&server, replicasets)
            .iter()
            .any(|n| n.starts_with("fg-"))
    );

    // Orphan: the Deployment goes; its ReplicaSet stays, owned by nobody, and keeps its pods.
    send(
        &server,
        "DELETE",
        &format!("{deployments}/keep"),
        json!({"propagationPolicy": "Orphan"}),
    );
    wait_until(&server, PODS, "keep deleted", |_| {
        !exists(&server, &format!("{deployments}/keep"))
    });
    let kept = get(&server, &format!("{replicasets}?labelSelector=app%3Dkeep"));
    let rs = &kept["items"][0];
    assert!(
        rs["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty()),
        "{rs}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(running(&live_pods(&server, "app=keep")), 2);
}

#[test]
fn deleting_a_namespace_deletes_everything_in_it_then_the_namespace() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "ns-node");
    send(
        &server,
        "POST",
        "/api/v1/namespaces",
        json!({"metadata": {"name": "team"}}),
    );
    let deployments = "/apis/apps/v1/namespaces/team/deployments";
    create_deployment(&server, deployments, "app", 2);
    send(
        &server,
        "POST",
        "/api/v1/namespaces/team/configmaps",
        json!({"metadata": {"name": "settings"}, "data": {"a": "b"}}),
    );
    wait_until(&server, &format!("{deployments}/app"), "rolled out", |d| {
        rolled_out(d, 2)
    });
    let terminating = send(&server, "DELETE", "/api/v1/namespaces/team", json!({}));
    assert_eq!(terminating["status"]["phase"], "Terminating");
    wait_until(&server, "/api/v1/namespaces", "without team", |_| {
        !exists(&server, "/api/v1/namespaces/team")
    });
    assert!(names(&server, "/api/v1/namespaces/team/pods").is_empty());
    assert!(names(&server, "/api/v1/namespaces/team/configmaps").is_empty());
}

#[test]
fn a_services_endpoints_and_slices_follow_its_ready_pods() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "ep-node");
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    create_deployment(&server, deployments, "web", 3);
    send(
        &server,
        "POST",
        "/api/v1/namespaces/default/services",
        json!({"metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http", "appProtocol": "http"}]}}),
    );
    let endpoints_path = "/api/v1/namespaces/default/endpoints/web";
    let endpoints = wait_until(&server, endpoints_path, "3 addresses", |e| {
        endpoint_addresses(e).len() == 3
    });
    let mut expected: Vec<String> = live_pods(&server, "app=web")
        .iter()
        .map(|p| format!("{}:8080", p["status"]["podIP"].as_str().unwrap()))
        .collect();
    expected.sort();
    assert_eq!(endpoint_addresses(&endpoints), expected);
    assert_eq!(endpoints["subsets"][0]["ports"][0]["appProtocol"], "http");
    // The slice is written after the Endpoints object.
    let slices = wait_until(
        &server,
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dweb",
        "a slice of 3 endpoints",
        |s| s["items"][0]["endpoints"].as_array().map(Vec::len) == Some(3),
    );
    let slice = &slices["items"][0];
    assert_eq!(slice["ports"][0]["port"], 8080);
    assert!(
        slice["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["conditions"]["ready"] == true)
    );

    send(
        &server,
        "PATCH",
        &format!("{deployments}/web/scale"),
        json!({"spec": {"replicas": 1}}),
    );
    wait_until(&server, endpoints_path, "1 address", |e| {
        endpoint_addresses(e).len() == 1
    });

    send(
        &server,
        "DELETE",
        "/api/v1/namespaces/default/services/web",
        json!({}),
    );
    wait_until(&server, endpoints_path, "gone with its Service", |e| {
        e["kind"] == "Status"
    });
    wait_until(
        &server,
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dweb",
        "no slices",
        |l| l["items"].as_array().is_some_and(|i| i.is_empty()),
    );
}

fn node_condition(node: &Value) -> String {
    common::ready_status(node)
}

fn has_unreachable_taint(node: &Value) -> bool {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute")
}

#[test]
fn a_lost_node_is_tainted_and_its_pods_replaced_then_it_recovers_and_a_deleted_node_loses_its_pods()
{
    // Twice the agents' 2 s Lease renewal: with a grace of one renewal, a busy machine (the whole suite at
    // once) made the live nodes look silent now and then, so the pods did not spread.
    let server = Server::start_with(&[
        "--node-monitor-grace-period-seconds",
        "4",
        "--pod-gc-quarantine-seconds",
        "1",
    ]);
    let mut lost = NodeAgent::start(&server, "lost");
    let _live = NodeAgent::start(&server, "live");
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    create_deployment(&server, deployments, "web", 4);
    wait_until(&server, &format!("{deployments}/web"), "rolled out", |d| {
        rolled_out(d, 4)
    });
    let on_lost = live_pods(&server, "app=web")
        .iter()
        .filter(|p| p["spec"]["nodeName"] == "lost")
        .count();
    assert!(on_lost > 0, "the scheduler spread the pods");

    lost.kill();
    let node = wait_until(&server, "/api/v1/nodes/lost", "unreachable", |n| {
        node_condition(n) == "Unknown" && has_unreachable_taint(n)
    });
    assert_eq!(
        node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()["reason"],
        "NodeStatusUnknown"
    );
    wait_until(
        &server,
        &format!("{deployments}/web"),
        "4 running on the live node",
        |_| {
            let pods = live_pods(&server, "app=web");
            pods.len() == 4
                && pods
                    .iter()
                    .all(|p| p["spec"]["nodeName"] == "live" && p["status"]["phase"] == "Running")
        },
    );
    assert!(
        common::event_reasons(&server, "lost")
            .iter()
            .any(|r| r == "NodeNotReady")
    );

    // The agent comes back: Ready again, untainted, and the pods evicted from it are gone for good.
    lost.restart(&server);
    wait_until(&server, "/api/v1/nodes/lost", "reachable", |n| {
        node_condition(n) == "True" && !has_unreachable_taint(n)
    });
    wait_until(
        &server,
        PODS,
        "no pods left on the recovered node",
        |list| {
            list["items"]
                .as_array()
                .is_some_and(|items| items.iter().all(|p| p["spec"]["nodeName"] != "lost"))
        },
    );

    // A deleted node's pods are deleted with it.
    send(
        &server,
        "POST",
        PODS,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pinned"},
        "spec": {"nodeName": "lost", "containers": template("pinned")["spec"]["containers"].clone()}}),
    );
    lost.kill();
    send(&server, "DELETE", "/api/v1/nodes/lost", json!({}));
    wait_until(
        &server,
        &format!("{PODS}/pinned"),
        "deleted with its node",
        |p| p["kind"] == "Status",
    );
}

fn taint_keys(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{}:{}",
                t["key"].as_str().unwrap_or(""),
                t["effect"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Regression (issue 13): a node under memory pressure kept taking pods. Its conditions and its cordon now
/// taint it as Kubernetes' TaintNodesByCondition does, and the scheduler keeps BestEffort pods away until the
/// pressure is gone.
#[test]
fn memory_pressure_and_cordons_taint_the_node_and_keep_new_pods_away_until_relieved() {
    let server = Server::start();
    let node = "/api/v1/nodes/pressed";
    send(
        &server,
        "POST",
        "/api/v1/nodes",
        json!({"metadata": {"name": "pressed"}}),
    );
    let conditions = |pressure: &str| {
        json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady"},
            {"type": "MemoryPressure", "status": pressure, "reason": "KubeletHasInsufficientMemory"}],
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}}})
    };
    send(
        &server,
        "PATCH",
        &format!("{node}/status"),
        conditions("True"),
    );
    wait_until(&server, node, "tainted by memory pressure", |n| {
        taint_keys(n) == ["node.kubernetes.io/memory-pressure:NoSchedule"]
    });
    send(
        &server,
        "POST",
        PODS,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "best-effort"},
               "spec": {"containers": template("best-effort")["spec"]["containers"].clone()}}),
    );
    let pending = wait_until(
        &server,
        &format!("{PODS}/best-effort"),
        "unschedulable",
        |p| p["status"]["conditions"][0]["reason"] == "Unschedulable",
    );
    assert!(
        pending["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("untolerated taint {node.kubernetes.io/memory-pressure: }"),
        "{}",
        pending["status"]
    );
    send(
        &server,
        "PATCH",
        node,
        json!({"spec": {"unschedulable": true}}),
    );
    wait_until(&server, node, "cordoned", |n| {
        taint_keys(n).contains(&"node.kubernetes.io/unschedulable:NoSchedule".to_owned())
    });
    send(
        &server,
        "PATCH",
        &format!("{node}/status"),
        conditions("False"),
    );
    send(
        &server,
        "PATCH",
        node,
        json!({"spec": {"unschedulable": false}}),
    );
    wait_until(&server, node, "untainted", |n| taint_keys(n).is_empty());
    wait_until(&server, &format!("{PODS}/best-effort"), "scheduled", |p| {
        p["spec"]["nodeName"] == "pressed"
    });
}

#[test]
fn a_daemonset_runs_one_pod_per_node_follows_a_joining_node_and_rolls_a_new_template() {
    let server = Server::start();
    let _a = NodeAgent::start(&server, "ds-a");
    let _b = NodeAgent::start(&server, "ds-b");
    let daemonsets = "/apis/apps/v1/namespaces/default/daemonsets";
    send(
        &server,
        "POST",
        daemonsets,
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": template("agent")}}),
    );
    let path = format!("{daemonsets}/agent");
    let on_nodes = |server: &Server| -> Vec<String> {
        let mut nodes: Vec<String> = live_pods(server, "app=agent")
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_owned))
            .collect();
        nodes.sort();
        nodes
    };
    wait_until(&server, &path, "on both nodes", |ds| {
        ds["status"]["numberReady"] == 2 && ds["status"]["desiredNumberScheduled"] == 2
    });
    assert_eq!(on_nodes(&server), ["ds-a", "ds-b"]);

    let _c = NodeAgent::start(&server, "ds-c");
    wait_until(&server, &path, "on the new node too", |ds| {
        ds["status"]["numberReady"] == 3
    });
    assert_eq!(on_nodes(&server), ["ds-a", "ds-b", "ds-c"]);

    send(
        &server,
        "PATCH",
        &path,
        json!({"spec": {"template": {"metadata": {"labels": {"app": "agent", "v": "2"}}}}}),
    );
    let rolled = wait_until(&server, &path, "rolled", |ds| {
        ds["status"]["updatedNumberScheduled"] == 3
            && ds["status"]["numberAvailable"] == 3
            && ds["status"]["observedGeneration"] == ds["metadata"]["generation"]
    });
    assert_eq!(rolled["status"]["numberMisscheduled"], 0);
    wait_until(&server, &path, "only new pods", |_| {
        let pods = live_pods(&server, "app=agent");
        pods.len() == 3 && pods.iter().all(|p| p["metadata"]["labels"]["v"] == "2")
    });
    assert_eq!(on_nodes(&server), ["ds-a", "ds-b", "ds-c"]);
    assert_rolled_out(
        &server,
        "daemonset/agent",
        "daemon set \"agent\" successfully rolled out",
    );
}

/// Both `wasmkube rollout status` and the machine's kubectl agree that the rollout is done.
fn assert_rolled_out(server: &Server, target: &str, message: &str) {
    let (ok, out, err) =
        common::wasmkube(server, &["rollout", "status", target, "--timeout", "30s"]);
    assert!(ok, "{err}");
    assert!(out.trim_end().ends_with(message), "{out}");
    let kubectl =
        std::process::Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
            .args(["rollout", "status", target, "--timeout=30s"])
            .env("KUBECONFIG", server.kubeconfig())
            .env("HOME", &server.data_dir)
            .output()
            .expect("run kubectl");
    let out = String::from_utf8_lossy(&kubectl.stdout);
    assert!(
        kubectl.status.success(),
        "kubectl: {}{out}",
        String::from_utf8_lossy(&kubectl.stderr)
    );
    assert!(out.trim_end().ends_with(message), "kubectl: {out}");
}

/// Samples a StatefulSet's pods until `done`: returns every sample as (ordinal, ready) pairs.
fn sample_ordinals(
    url: String,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<Vec<(i64, bool)>>> {
    std::thread::spawn(move || {
        let mut samples = Vec::new();
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let list: Value = http()
                .get(format!("{url}{PODS}?labelSelector=app%3Ddb"))
                .send()
                .and_then(|r| r.json())
                .unwrap_or(Value::Null);
            let mut sample: Vec<(i64, bool)> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let ordinal = p["metadata"]["name"]
                        .as_str()?
                        .strip_prefix("db-")?
                        .parse()
                        .ok()?;
                    Some((ordinal, is_ready(p)))
                })
                .collect();
            sample.sort();
            samples.push(sample);
            std::thread::sleep(Duration::from_millis(10));
        }
        samples
    })
}

#[test]
fn a_statefulset_starts_in_order_stops_from_the_top_and_updates_from_the_top() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "sts-node");
    let sets = "/apis/apps/v1/namespaces/default/statefulsets";
    let path = format!("{sets}/db");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_ordinals(server.url.clone(), done.clone());
    send(
        &server,
        "POST",
        sets,
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": template("db")}}),
    );
    let up = wait_until(&server, &path, "3 ready", |s| {
        s["status"]["readyReplicas"] == 3
    });
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let samples = sampler.join().unwrap();
    for sample in &samples {
        for (ordinal, _) in sample.iter().filter(|(o, _)| *o > 0) {
            assert!(
                sample.contains(&(ordinal - 1, true)),
                "db-{ordinal} existed before db-{} was ready: {sample:?}",
                ordinal - 1
            );
        }
    }
    let pod = get(&server, &format!("{PODS}/db-1"));
    assert_eq!(
        (
            pod["spec"]["hostname"].as_str(),
            pod["spec"]["subdomain"].as_str()
        ),
        (Some("db-1"), Some("db"))
    );
    let first_revision = up["status"]["updateRevision"].as_str().unwrap().to_owned();
    assert_eq!(up["status"]["currentRevision"], first_revision.as_str());

    // A new template replaces the pods from the highest ordinal down; the names stay.
    send(
        &server,
        "PATCH",
        &path,
        json!({"spec": {"template": {"metadata": {"labels": {"app": "db", "v": "2"}}}}}),
    );
    let updated = wait_until(&server, &path, "updated", |s| {
        s["status"]["observedGeneration"] == s["metadata"]["generation"]
            && s["status"]["updatedReplicas"] == 3
            && s["status"]["readyReplicas"] == 3
            && s["status"]["currentRevision"] == s["status"]["updateRevision"]
    });
    assert_ne!(updated["status"]["updateRevision"], first_revision.as_str());
    // The apiserver defaults partition to 0, as Kubernetes does, so kubectl reports a partitioned rollout.
    assert_rolled_out(
        &server,
        "statefulset/db",
        "partitioned roll out complete: 3 new pods have been updated...",
    );
    let mut names: Vec<String> = live_pods(&server, "app=db")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);

    // Scaling down removes the highest ordinals, one after the other.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_ordinals(server.url.clone(), done.clone());
    send(
        &server,
        "PATCH",
        &format!("{path}/scale"),
        json!({"spec": {"replicas": 1}}),
    );
    wait_until(&server, &path, "1 replica", |s| {
        s["status"]["replicas"] == 1 && live_pods(&server, "app=db").len() == 1
    });
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for sample in sampler.join().unwrap() {
        let ordinals: Vec<i64> = sample.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            ordinals,
            (0..ordinals.len() as i64).collect::<Vec<_>>(),
            "not a prefix: {sample:?}"
        );
    }
    assert_eq!(live_pods(&server, "app=db")[0]["metadata"]["name"], "db-0");
}

#[test]
fn the_scheduler_and_controllers_also_run_as_their_own_processes() {
    let server = Server::start_with(&["--no-scheduler", "--no-controllers"]);
    let spawn = |args: &[&str]| {
        common::Killed(
            std::process::Command::new(env!("CARGO_BIN_EXE_wasmkube"))
                .args(["--server", &server.url])
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start wasmkube"),
        )
    };
    let (scheduler_metrics, controller_metrics) = (
        format!("127.0.0.1:{}", common::free_port()),
        format!("127.0.0.1:{}", common::free_port()),
    );
    // 127.250/16 is outside the ranges the test servers use.
    let _processes = [
        spawn(&["scheduler", "--metrics-bind-address", &scheduler_metrics]),
        spawn(&[
            "controller-manager",
            "--cluster-cidr",
            "127.250.0.0/16",
            "--metrics-bind-address",
            &controller_metrics,
        ]),
    ];
    let _node = NodeAgent::start(&server, "apart");
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    create_deployment(&server, deployments, "web", 2);
    wait_until(&server, &format!("{deployments}/web"), "rolled out", |d| {
        rolled_out(d, 2)
    });
    let pods = live_pods(&server, "app=web");
    assert!(pods.iter().all(|p| p["spec"]["nodeName"] == "apart"));
    assert!(pods.iter().all(|p| {
        p["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .starts_with("127.250.")
    }));
    // Each serves its own metrics where asked, as kube-scheduler and kube-controller-manager do.
    for (address, series) in [
        (
            &scheduler_metrics,
            "scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"} ",
        ),
        (
            &controller_metrics,
            "# TYPE controller_runtime_reconcile counter",
        ),
    ] {
        let text = reqwest::blocking::get(format!("http://{address}/metrics"))
            .and_then(|r| r.text())
            .unwrap_or_default();
        assert!(
            text.contains(series) && text.ends_with("# EOF\n"),
            "{series} in {text}"
        );
    }
}

#[test]
fn an_autoscaler_made_by_kubectl_autoscale_scales_a_busy_deployment_up_and_back_down() {
    let server = Server::start_with(&["--horizontal-pod-autoscaler-sync-period-seconds", "1"]);
    let _agent = NodeAgent::start(&server, "n1");
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let hpas = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers";
    // Each replica spins at its 200m limit: 200% of its 100m request.
    let hog = format!(
        "file://{}",
        common::wasm_app("wasm32-wasip1", "cpu-hog").display()
    );
    send(
        &server,
        "POST",
        deployments,
        json!({"metadata": {"name": "busy"}, "spec": {"replicas": 1,
        "selector": {"matchLabels": {"app": "busy"}},
        "template": {"metadata": {"labels": {"app": "busy"}}, "spec": {"containers": [{"name": "spin",
            "image": hog, "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}}}]}}}}),
    );
    let kubectl = common::test_tool("kubectl-1.37/kubectl");
    let mut command = std::process::Command::new(kubectl);
    command.arg("--kubeconfig").arg(server.kubeconfig()).args([
        "autoscale",
        "deployment",
        "busy",
        "--cpu=50%",
        "--min=1",
        "--max=3",
    ]);
    let output = common::output_with_stdin(command, None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 200% against 50% asks for 4; maxReplicas holds it at 3.
    wait_until(
        &server,
        &format!("{deployments}/busy"),
        "scaled to 3",
        |d| d["spec"]["replicas"] == 3,
    );
    let hpa = wait_until(&server, &format!("{hpas}/busy"), "reporting", |h| {
        h["status"]["desiredReplicas"] == 3 && h["status"]["currentMetrics"].is_array()
    });
    let condition = |h: &Value, kind: &str| -> Value {
        h["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == kind).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        condition(&hpa, "ScalingActive")["reason"],
        "ValidMetricFound"
    );
    assert!(hpa["status"]["lastScaleTime"].is_string(), "{hpa}");
    let events = get(
        &server,
        "/api/v1/namespaces/default/events?fieldSelector=reason%3DSuccessfulRescale",
    );
    assert_eq!(
        events["items"][0]["message"],
        "New size: 3; reason: cpu resource utilization (percentage of request) above target"
    );
    let (ok, table, err) = common::kubectl(&server, None, &["get", "hpa", "busy"], None);
    assert!(ok, "{err}");
    assert!(
        table.contains("Deployment/busy") && table.contains("/50%"),
        "{table}"
    );
    // Each controller's reconciles are counted and timed at the apiserver's /metrics (controller-runtime's names).
    let metrics = server
        .http()
        .get(format!("{}/metrics", server.url))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    for line in [
        "controller_runtime_reconcile_total{controller=\"horizontal-pod-autoscaler\",result=\"success\"} ",
        "controller_runtime_reconcile_total{controller=\"deployment\",result=\"success\"} ",
        "controller_runtime_reconcile_time_seconds_bucket{le=\"0.005\",controller=\"replicaset\"} ",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    // A target far above the use, with no scale-down window: back to minReplicas.
    send(
        &server,
        "PATCH",
        &format!("{hpas}/busy"),
        json!({"spec": {
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 1000}}}],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}),
    );
    wait_until(
        &server,
        &format!("{deployments}/busy"),
        "scaled back to 1",
        |d| d["spec"]["replicas"] == 1,
    );
    // Bad input is refused with Kubernetes' words.
    let response = http()
        .post(format!("{}{hpas}", server.url))
        .json(&json!({"metadata": {"name": "bad"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "busy"},
            "minReplicas": 5, "maxReplicas": 2}}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 422);
    let status: Value = response.json().unwrap();
    assert!(
        status["message"].as_str().unwrap_or_default().contains(
            "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"
        ),
        "{status}"
    );
}

/// The hello app (one replica requesting 10m of CPU) behind a Service; once the Service answers, its URL.
fn hello_behind_a_service(server: &Server) -> String {
    let mut hello = template("hello");
    hello["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "10m"}});
    send(
        server,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        json!({"metadata": {"name": "hello"}, "spec": {"replicas": 1,
        "selector": {"matchLabels": {"app": "hello"}}, "template": hello}}),
    );
    let service = send(
        server,
        "POST",
        "/api/v1/namespaces/default/services",
        json!({
        "metadata": {"name": "hello"}, "spec": {"selector": {"app": "hello"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    );
    let url = format!("http://{}/", service["spec"]["clusterIP"].as_str().unwrap());
    wait_until(
        server,
        "/apis/apps/v1/namespaces/default/deployments/hello",
        "available",
        |d| d["status"]["availableReplicas"] == 1,
    );
    // The node's proxy serves the Service once it has seen the ready endpoint (as kube-proxy, a moment after).
    let client = reqwest::blocking::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !client
        .get(&url)
        .send()
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the Service never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    url
}

/// Clients calling a URL in a loop, each pausing between requests, until stopped.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<std::thread::JoinHandle<(u64, u64, Vec<String>)>>,
}

impl Load {
    fn start(url: &str, clients: usize, pause: std::time::Duration) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = (0..clients)
            .map(|_| {
                let (url, stop) = (url.to_owned(), stop.clone());
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    let (mut answered, mut failed, mut errors) = (0u64, 0u64, Vec::new());
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        match client.get(&url).send() {
                            Ok(response) if response.status().is_success() => answered += 1,
                            outcome => {
                                failed += 1;
                                if errors.len() < 3 {
                                    errors.push(match outcome {
                                        Ok(response) => {
                                            format!("{}: {:?}", response.status(), response.text())
                                        }
                                        Err(error) => format!("{error:?}"),
                                    });
                                }
                            }
                        }
                        std::thread::sleep(pause);
                    }
                    (answered, failed, errors)
                })
            })
            .collect();
        Self { stop, clients }
    }

    /// Stops the clients; asserts every request was answered.
    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut answered, mut failed, mut errors) = (0, 0, Vec::new());
        for client in self.clients {
            let (a, f, e) = client.join().unwrap();
            (answered, failed) = (answered + a, failed + f);
            errors.extend(e);
        }
        assert!(
            answered > 0 && failed == 0,
            "{answered} answered, {failed} failed: {errors:#?}"
        );
    }
}

fn autoscale_hello(server: &Server, metric: Value) {
    send(
        server,
        "POST",
        "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers",
        json!({
        "metadata": {"name": "hello"}, "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hello"},
        "minReplicas": 1, "maxReplicas": 4, "metrics": [metric],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}),
    );
}

#[test]
fn the_hello_app_scales_out_under_http_load_and_back_when_it_ends() {
    let server = Server::start_with(&["--horizontal-pod-autoscaler-sync-period-seconds", "1"]);
    let _agent = NodeAgent::start(&server, "n1");
    let hello = "/apis/apps/v1/namespaces/default/deployments/hello";
    autoscale_hello(
        &server,
        json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}),
    );
    let url = hello_behind_a_service(&server);
    // Load through the Service until the autoscaler adds replicas; every request is answered.
    let load = Load::start(&url, 4, std::time::Duration::ZERO);
    let scaled = wait_until(&server, hello, "scaled out", |d| {
        d["spec"]["replicas"].as_i64() > Some(1)
    });
    wait_until(&server, hello, "serving with more replicas", |d| {
        d["status"]["availableReplicas"].as_i64() > Some(1)
    });
    load.stop();
    assert!(scaled["spec"]["replicas"].as_i64() <= Some(4), "{scaled}");
    // Load gone: back to one replica.
    wait_until(&server, hello, "scaled back to 1", |d| {
        d["spec"]["replicas"] == 1
    });
}

#[test]
fn the_hello_app_scales_on_the_http_requests_per_second_of_its_pods_and_back() {
    let server = Server::start_with(&["--horizontal-pod-autoscaler-sync-period-seconds", "1"]);
    let _agent = NodeAgent::start(&server, "n1");
    let hello = "/apis/apps/v1/namespaces/default/deployments/hello";
    let metrics = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods";
    // The metric is listed in discovery; another one is not served.
    let discovery = common::get_json(&server, "/apis/custom.metrics.k8s.io/v1beta2");
    assert_eq!(
        discovery["resources"][0]["name"], "pods/http_requests_per_second",
        "{discovery}"
    );
    let unknown = server
        .http()
        .get(format!("{}{metrics}/*/cpu_seconds", server.url))
        .send()
        .unwrap();
    assert_eq!(unknown.status(), 404);
    // 2 requests per second per pod is the target.
    autoscale_hello(
        &server,
        json!({"type": "Pods", "pods": {"metric": {"name": "http_requests_per_second"},
                                         "target": {"type": "AverageValue", "averageValue": "2"}}}),
    );
    let url = hello_behind_a_service(&server);
    // Up to 80 requests per second (4 clients, each pausing 50 ms; at least 8 on a busy machine): 4 replicas,
    // the most allowed.
    let load = Load::start(&url, 4, std::time::Duration::from_millis(50));
    let measured = wait_until(
        &server,
        &format!("{metrics}/*/http_requests_per_second?labelSelector=app%3Dhello"),
        "measuring the pod's requests",
        |list| {
            list["items"][0]["value"]
                .as_str()
                .is_some_and(|v| v.trim_end_matches('m').parse::<f64>().unwrap_or(0.0) > 0.0)
        },
    );
    assert_eq!(
        measured["items"][0]["describedObject"]["kind"], "Pod",
        "{measured}"
    );
    let hpa = wait_until(
        &server,
        "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/hello",
        "asking for 4 replicas from its pods metric",
        |h| {
            h["status"]["desiredReplicas"] == 4
                && h["status"]["currentMetrics"][0]["type"] == "Pods"
        },
    );
    wait_until(&server, hello, "scaled to 4", |d| {
        d["spec"]["replicas"] == 4
    });
    assert_eq!(
        hpa["status"]["currentMetrics"][0]["pods"]["metric"]["name"], "http_requests_per_second",
        "{hpa}"
    );
    load.stop();
    // No requests: back to one replica.
    wait_until(&server, hello, "scaled back to 1", |d| {
        d["spec"]["replicas"] == 1
    });
}
