//! Storage with real agents: a StatefulSet of the key-value app keeps every replica's data in its own claim
//! (the built-in local-path provisioner) across pod deletion, scaling down and up, and agent restarts; reclaim
//! policies remove or keep a volume's directory; claims nothing can serve say why and make nothing.

mod common;

use common::{NodeAgent, Server, event_reasons, get_json, get_pod, kubectl, wait_for, wait_until};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const CLAIMS: &str = "/api/v1/namespaces/default/persistentvolumeclaims";
const VOLUMES: &str = "/api/v1/persistentvolumes";

fn running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && common::ready_status(pod) == "True"
}

/// The kv app of a running pod at `path`: (status, body), retried while the pod's server is not up yet.
fn kv(pod: &Value, method: reqwest::Method, path: &str, body: &str) -> (u16, String) {
    let url = format!(
        "http://{}:8080{path}",
        pod["status"]["podIP"].as_str().unwrap()
    );
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client
            .request(method.clone(), &url)
            .body(body.to_owned())
            .timeout(Duration::from_secs(5))
            .send()
        {
            Ok(response) => {
                let status = response.status().as_u16();
                return (status, response.text().unwrap_or_default());
            }
            Err(error) if Instant::now() > deadline => panic!("{url}: {error}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Creates a pod using `claim` bound by hand to n1 (no scheduler), and waits until its container waits in
/// ContainerCreating with a message that has `words`.
fn refused_on_n1(server: &Server, name: &str, claim: &str, words: &str) {
    let mut pod = pod_with_claim(name, claim);
    pod["spec"]["nodeName"] = json!("n1");
    common::create_pod(server, pod);
    let refused = wait_for(server, name, "refused its volume", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(words))
    });
    assert_eq!(
        refused["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ContainerCreating"
    );
}

/// Waits for an Event with `reason` about the object `name`.
fn wait_event(server: &Server, name: &str, reason: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !event_reasons(server, name).iter().any(|r| r == reason) {
        assert!(Instant::now() < deadline, "no {reason} event about {name}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the scheduler marks the pod Unschedulable, returning it.
fn unschedulable(server: &Server, name: &str) -> Value {
    wait_for(server, name, "unschedulable", |p| {
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["reason"] == "Unschedulable")
    })
}

/// Waits for a running pod of that name other than `old` (a replacement), returning it.
fn replacement(server: &Server, name: &str, old: &Value) -> Value {
    wait_for(server, name, "replaced and running", |p| {
        p["metadata"]["uid"] != old["metadata"]["uid"] && running(p)
    })
}

fn claim(server: &Server, name: &str) -> Value {
    get_json(server, &format!("{CLAIMS}/{name}"))
}

/// The directory of a claim's volume on its node.
fn volume_dir(server: &Server, claim_name: &str) -> std::path::PathBuf {
    let volume = claim(server, claim_name)["spec"]["volumeName"]
        .as_str()
        .expect("bound")
        .to_owned();
    let pv = get_json(server, &format!("{VOLUMES}/{volume}"));
    pv["spec"]["local"]["path"].as_str().unwrap().into()
}

/// Runs kubectl as the admin, asserting it succeeds.
fn kubectl_ok(server: &Server, args: &[&str]) {
    let (ok, out, err) = kubectl(server, None, args, None);
    assert!(ok, "kubectl {args:?}: {out}{err}");
}

fn apply_kv(server: &Server, replicas: u32) {
    common::wasm_app("wasm32-wasip2", "kv_http");
    let manifest = std::fs::read_to_string("manifests/kv-statefulset.yaml")
        .unwrap()
        .replace("replicas: 3", &format!("replicas: {replicas}"));
    let (ok, out, err) = kubectl(server, None, &["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "{out}{err}");
}

#[test]
fn a_stateful_sets_replicas_keep_their_data_across_deletion_scaling_and_agent_restarts() {
    let server = Server::start();
    let mut agents = [
        NodeAgent::start(&server, "n1"),
        NodeAgent::start(&server, "n2"),
    ];
    apply_kv(&server, 3);
    let pods: Vec<Value> = ["kv-0", "kv-1", "kv-2"]
        .iter()
        .map(|name| wait_for(&server, name, "running", running))
        .collect();

    // Each replica has its claim, bound to a volume the provisioner made on the replica's node.
    let (ok, table, _) = kubectl(&server, None, &["get", "pvc"], None);
    assert!(ok);
    for name in ["data-kv-0", "data-kv-1", "data-kv-2"] {
        let line = table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default();
        assert!(
            line.contains("Bound")
                && line.contains("64Mi")
                && line.contains("RWO")
                && line.contains("local-path"),
            "{table}"
        );
    }
    let (_, classes, _) = kubectl(&server, None, &["get", "storageclass"], None);
    assert!(classes.contains("local-path (default)"), "{classes}");
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let node = pod["spec"]["nodeName"].as_str().unwrap();
        let claim_name = format!("data-{name}");
        let volume = claim(&server, &claim_name)["spec"]["volumeName"].clone();
        let pv = get_json(&server, &format!("{VOLUMES}/{}", volume.as_str().unwrap()));
        assert_eq!(
            pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
            json!([node])
        );
        assert_eq!(
            pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
            "wasmkube.io/local-path"
        );
        let agent = agents.iter().find(|a| a.name == node).unwrap();
        let dir = volume_dir(&server, &claim_name);
        assert!(
            dir.starts_with(agent.data_dir.canonicalize().unwrap().join("storage")),
            "{}",
            dir.display()
        );
    }

    // A value written through kv-1 is read back from its replacement (same node: the volume is pinned).
    assert_eq!(
        kv(&pods[1], reqwest::Method::PUT, "/greeting", "remember me").0,
        201
    );
    // Not --wait: kubectl waits for the name to go, and the StatefulSet may make the new kv-1 before kubectl lists
    // (a Wasm pod stops in milliseconds), so kubectl would wait on the replacement.
    kubectl_ok(&server, &["delete", "pod", "kv-1", "--wait=false"]);
    let kv1 = replacement(&server, "kv-1", &pods[1]);
    assert_eq!(kv1["spec"]["nodeName"], pods[1]["spec"]["nodeName"]);
    assert_eq!(
        kv(&kv1, reqwest::Method::GET, "/greeting", ""),
        (200, "remember me".into())
    );

    // Scaled to 1, the claims of ordinals 1 and 2 stay (retention Retain); scaled to 3 again, they read their data.
    assert_eq!(kv(&pods[2], reqwest::Method::PUT, "/ordinal", "two").0, 201);
    kubectl_ok(&server, &["scale", "statefulset", "kv", "--replicas=1"]);
    wait_until(
        &server,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dkv",
        "one pod",
        |list| {
            list["items"]
                .as_array()
                .is_some_and(|items| items.len() == 1)
        },
    );
    assert_eq!(claim(&server, "data-kv-2")["status"]["phase"], "Bound");
    kubectl_ok(&server, &["scale", "statefulset", "kv", "--replicas=3"]);
    let kv1 = replacement(&server, "kv-1", &kv1);
    assert_eq!(
        kv(&kv1, reqwest::Method::GET, "/greeting", ""),
        (200, "remember me".into())
    );
    let kv2 = replacement(&server, "kv-2", &pods[2]);
    assert_eq!(
        kv(&kv2, reqwest::Method::GET, "/ordinal", ""),
        (200, "two".into())
    );

    // A rolling update replaces every pod, highest ordinal first; each new pod has its predecessor's data.
    let patch = r#"{"spec":{"template":{"metadata":{"annotations":{"version":"2"}}}}}"#;
    kubectl_ok(&server, &["patch", "statefulset", "kv", "-p", patch]);
    kubectl_ok(
        &server,
        &["rollout", "status", "statefulset/kv", "--timeout=60s"],
    );
    let kv1 = get_pod(&server, "kv-1").unwrap();
    assert_eq!(kv1["metadata"]["annotations"]["version"], "2");
    assert_eq!(
        kv(&kv1, reqwest::Method::GET, "/greeting", ""),
        (200, "remember me".into())
    );
    let kv2 = get_pod(&server, "kv-2").unwrap();
    assert_eq!(
        kv(&kv2, reqwest::Method::GET, "/ordinal", ""),
        (200, "two".into())
    );

    // The agent of kv-0's node restarts: kv-0 runs again with what it had.
    let kv0 = get_pod(&server, "kv-0").unwrap();
    assert_eq!(kv(&kv0, reqwest::Method::PUT, "/counter", "41").0, 201);
    let node = kv0["spec"]["nodeName"].as_str().unwrap().to_owned();
    let agent = agents.iter_mut().find(|a| a.name == node).unwrap();
    agent.restart(&server);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pod = get_pod(&server, "kv-0").unwrap();
        if running(&pod) && kv(&pod, reqwest::Method::GET, "/counter", "") == (200, "41".into()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kv-0 lost its data across the agent restart: {pod}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, listing) = kv(
        &get_pod(&server, "kv-0").unwrap(),
        reqwest::Method::GET,
        "/",
        "",
    );
    assert_eq!(listing, "kv-0: counter\n");
}

fn pod_with_claim(name: &str, claim: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "kv",
            "image": format!("file://{}", common::wasm_app("wasm32-wasip2", "kv_http").display()),
            "ports": [{"containerPort": 8080}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
          "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}})
}

fn claim_of(name: &str, class: Option<&str>, modes: &[&str], size: &str) -> Value {
    let mut claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"accessModes": modes, "resources": {"requests": {"storage": size}}}});
    if let Some(class) = class {
        claim["spec"]["storageClassName"] = json!(class);
    }
    claim
}

fn delete(server: &Server, path: &str) {
    let response = server
        .http()
        .delete(format!("{}{path}", server.url))
        .send()
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().unwrap()
    );
}

fn gone(server: &Server, path: &str) -> bool {
    server
        .http()
        .get(format!("{}{path}", server.url))
        .send()
        .unwrap()
        .status()
        == 404
}

fn wait_gone(server: &Server, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !gone(server, path) {
        assert!(Instant::now() < deadline, "{path} was never deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_path(path: &Path, exists: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while path.exists() != exists {
        assert!(
            Instant::now() < deadline,
            "{} exists: {}",
            path.display(),
            path.exists()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn deleting_a_claim_removes_or_keeps_its_volume_by_reclaim_policy() {
    let server = Server::start();
    let _agent = NodeAgent::start(&server, "n1");
    common::post(
        &server,
        "/apis/storage.k8s.io/v1/storageclasses",
        &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "keep"},
            "provisioner": "wasmkube.io/local-path", "reclaimPolicy": "Retain",
            "volumeBindingMode": "WaitForFirstConsumer"}),
    );
    common::post(
        &server,
        CLAIMS,
        &claim_of("scratch", None, &["ReadWriteOnce"], "1Mi"),
    );
    common::post(
        &server,
        CLAIMS,
        &claim_of("kept", Some("keep"), &["ReadWriteOncePod"], "1Mi"),
    );
    assert_eq!(
        claim(&server, "scratch")["metadata"]["finalizers"],
        json!(["kubernetes.io/pvc-protection"])
    );
    assert_eq!(
        claim(&server, "scratch")["spec"]["storageClassName"],
        "local-path",
        "the default class"
    );
    common::create_pod(&server, pod_with_claim("uses-scratch", "scratch"));
    common::create_pod(&server, pod_with_claim("uses-kept", "kept"));
    let scratch_pod = wait_for(&server, "uses-scratch", "running", running);
    let kept_pod = wait_for(&server, "uses-kept", "running", running);
    assert_eq!(kv(&scratch_pod, reqwest::Method::PUT, "/a", "1").0, 201);
    assert_eq!(kv(&kept_pod, reqwest::Method::PUT, "/b", "2").0, 201);
    let scratch_dir = volume_dir(&server, "scratch");
    let kept_dir = volume_dir(&server, "kept");
    assert_eq!(std::fs::read_to_string(scratch_dir.join("a")).unwrap(), "1");
    let kept_volume = claim(&server, "kept")["spec"]["volumeName"]
        .as_str()
        .unwrap()
        .to_owned();
    let volume = get_json(&server, &format!("{VOLUMES}/{kept_volume}"));
    assert_eq!(
        volume["metadata"]["finalizers"],
        json!(["kubernetes.io/pv-protection"])
    );

    // Mounted read-only, the same claim shows its data and refuses writes.
    let mut reader = pod_with_claim("reader", "scratch");
    reader["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"] = json!(true);
    common::create_pod(&server, reader);
    let reader = wait_for(&server, "reader", "running", running);
    assert_eq!(
        kv(&reader, reqwest::Method::GET, "/a", ""),
        (200, "1".into())
    );
    let (status, body) = kv(&reader, reqwest::Method::PUT, "/a", "overwritten");
    assert_eq!(status, 500, "{body}");
    assert_eq!(std::fs::read_to_string(scratch_dir.join("a")).unwrap(), "1");
    delete(&server, "/api/v1/namespaces/default/pods/reader");

    // A claim in use is kept (Terminating) until its pod is gone.
    delete(&server, &format!("{CLAIMS}/scratch"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!claim(&server, "scratch")["metadata"]["deletionTimestamp"].is_null());
    assert_eq!(
        kv(&scratch_pod, reqwest::Method::GET, "/a", ""),
        (200, "1".into())
    );
    delete(&server, "/api/v1/namespaces/default/pods/uses-scratch");
    wait_gone(&server, &format!("{CLAIMS}/scratch"));
    // Reclaim policy Delete: the volume goes, and its node's agent removes the directory.
    wait_path(&scratch_dir, false);

    // Retain: the volume stays Released, with its data.
    delete(&server, "/api/v1/namespaces/default/pods/uses-kept");
    delete(&server, &format!("{CLAIMS}/kept"));
    wait_gone(&server, &format!("{CLAIMS}/kept"));
    wait_until(
        &server,
        &format!("{VOLUMES}/{kept_volume}"),
        "Released",
        |v| v["status"]["phase"] == "Released",
    );
    assert_eq!(std::fs::read_to_string(kept_dir.join("b")).unwrap(), "2");
}

#[test]
fn claims_that_cannot_be_served_say_why_and_nothing_is_made() {
    let server = Server::start();
    let agent = NodeAgent::start(&server, "n1");
    let root = agent.data_dir.join("storage");

    // Refused at the API, with Kubernetes' words.
    for (path, body, expected) in [
        (
            CLAIMS,
            claim_of("negative", None, &["ReadWriteOnce"], "-1Gi"),
            "spec.resources[storage]: Invalid value: \"-1Gi\": must be greater than zero",
        ),
        (
            CLAIMS,
            claim_of("modes", None, &["ReadWriteOncePod", "ReadWriteMany"], "1Gi"),
            "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes",
        ),
        (
            VOLUMES,
            json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "up"},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                         "hostPath": {"path": "/data/../../etc"}}}),
            "spec.hostPath.path: Invalid value: \"/data/../../etc\": must not contain '..'",
        ),
    ] {
        let response = server
            .http()
            .post(format!("{}{path}", server.url))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(response.status(), 422);
        let status: Value = response.json().unwrap();
        assert!(
            status["message"].as_str().unwrap().contains(expected),
            "{status}"
        );
    }

    // No volume and no class: Pending, saying so.
    common::post(
        &server,
        CLAIMS,
        &claim_of("nothing", Some(""), &["ReadWriteOnce"], "1Gi"),
    );
    wait_event(&server, "nothing", "FailedBinding");
    assert_eq!(claim(&server, "nothing")["status"]["phase"], "Pending");

    // More than the node has: its pod is unschedulable, as Kubernetes words it.
    common::post(
        &server,
        CLAIMS,
        &claim_of("huge", None, &["ReadWriteOnce"], "100Pi"),
    );
    common::create_pod(&server, pod_with_claim("uses-huge", "huge"));
    let pending = unschedulable(&server, "uses-huge");
    let message = pending["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.starts_with("0/1 nodes are available: 1 node(s) did not have enough free storage."),
        "{message}"
    );

    // An access mode a node directory cannot give: its pod stays Pending, saying why; the provisioner, asked
    // for it on a node (the annotation the scheduler would set), says why too and makes nothing.
    let mut shared = claim_of("shared", None, &["ReadWriteMany"], "1Gi");
    shared["metadata"]["annotations"] = json!({"volume.kubernetes.io/selected-node": "n1"});
    common::post(&server, CLAIMS, &shared);
    common::create_pod(&server, pod_with_claim("uses-shared", "shared"));
    let pending = unschedulable(&server, "uses-shared");
    assert_eq!(
        pending["status"]["conditions"][0]["message"],
        "0/1 nodes are available: persistentvolumeclaim \"shared\" cannot be provisioned: wasmkube.io/local-path \
         supports only the ReadWriteOnce and ReadWriteOncePod access modes, not ReadWriteMany. preemption: 0/1 \
         nodes are available: 1 Preemption is not helpful for scheduling.."
    );
    wait_event(&server, "shared", "ProvisioningFailed");
    let events = get_json(
        &server,
        "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dshared,reason%3DProvisioningFailed",
    );
    assert_eq!(
        events["items"][0]["message"],
        "failed to provision volume with StorageClass \"local-path\": wasmkube.io/local-path supports only the \
         ReadWriteOnce and ReadWriteOncePod access modes, not ReadWriteMany"
    );

    // A volume an admin points outside the node's root is never mounted, and nothing is made there.
    common::post(
        &server,
        VOLUMES,
        &json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "outside"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                     "hostPath": {"path": agent.data_dir.join("elsewhere").display().to_string(),
                                  "type": "DirectoryOrCreate"}}}),
    );
    common::post(
        &server,
        CLAIMS,
        &claim_of("outside", Some("manual"), &["ReadWriteOnce"], "1Gi"),
    );
    common::create_pod(&server, pod_with_claim("uses-outside", "outside"));
    wait_event(&server, "uses-outside", "FailedMount");
    let waiting = get_pod(&server, "uses-outside").unwrap();
    let state = &waiting["status"]["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(state["reason"], "ContainerCreating");
    assert!(
        state["message"]
            .as_str()
            .unwrap()
            .contains("is outside this node's local volume root"),
        "{state}"
    );
    assert!(!agent.data_dir.join("elsewhere").exists());

    // A pod bound by hand (no scheduler) to a claim that does not exist, or is not bound, waits in
    // ContainerCreating; the missing claim is a FailedMount Event at once.
    refused_on_n1(
        &server,
        "no-claim",
        "absent",
        "persistentvolumeclaim \"absent\" not found",
    );
    wait_event(&server, "no-claim", "FailedMount");
    let mut unbound = pod_with_claim("unbound-claim", "nothing");
    unbound["spec"]["nodeName"] = json!("n1");
    common::create_pod(&server, unbound);
    std::thread::sleep(Duration::from_secs(1));
    let waiting = get_pod(&server, "unbound-claim").unwrap();
    assert_eq!(
        waiting["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ContainerCreating"
    );

    // A pod bound by hand to a node its volume's node affinity leaves out is refused there too.
    let root_path = root.canonicalize().unwrap().join("static");
    std::fs::create_dir_all(&root_path).unwrap();
    common::post(
        &server,
        VOLUMES,
        &json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pinned"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "pinned",
                     "local": {"path": root_path.display().to_string()},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}}}),
    );
    common::post(
        &server,
        CLAIMS,
        &claim_of("pinned", Some("pinned"), &["ReadWriteOnce"], "1Gi"),
    );
    refused_on_n1(
        &server,
        "by-hand",
        "pinned",
        "its node affinity does not allow node \"n1\"",
    );
    std::fs::remove_dir(&root_path).unwrap();
    let volumes = get_json(&server, VOLUMES);
    let names: Vec<&str> = volumes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["outside", "pinned"], "no volume was provisioned");
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
}

#[test]
fn a_stateful_sets_retention_policy_deletes_claims_when_it_scales_down_or_goes() {
    let server = Server::start();
    let _agent = NodeAgent::start(&server, "n1");
    common::wasm_app("wasm32-wasip2", "kv_http");
    let manifest = std::fs::read_to_string("manifests/kv-statefulset.yaml")
        .unwrap()
        .replace("replicas: 3", "replicas: 2\n  persistentVolumeClaimRetentionPolicy:\n    whenDeleted: Delete\n    whenScaled: Delete");
    let (ok, out, err) = kubectl(&server, None, &["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "{out}{err}");
    wait_for(&server, "kv-1", "running", running);
    let second = volume_dir(&server, "data-kv-1");
    kubectl_ok(&server, &["scale", "statefulset", "kv", "--replicas=1"]);
    wait_gone(&server, &format!("{CLAIMS}/data-kv-1"));
    wait_path(&second, false);
    assert_eq!(claim(&server, "data-kv-0")["status"]["phase"], "Bound");
    let first = volume_dir(&server, "data-kv-0");
    kubectl_ok(&server, &["delete", "statefulset", "kv"]);
    wait_gone(&server, &format!("{CLAIMS}/data-kv-0"));
    wait_path(&first, false);
}
