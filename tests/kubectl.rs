//! Real kubectl against the apiserver: the machine's current kubectl and Debian's kubectl 1.20, with their
//! default flags.

mod common;

use common::{NodeAgent, Server};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn current_kubectl() -> PathBuf {
    PathBuf::from(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
}

fn kubectl_1_20() -> PathBuf {
    common::test_tool("kubectl-1.20/usr/bin/kubectl")
}

/// kubectl 1.37, which sends protobuf bodies.
fn kubectl_1_37() -> PathBuf {
    common::test_tool("kubectl-1.37/kubectl")
}

struct Kubectl<'a> {
    binary: PathBuf,
    server: &'a Server,
}

impl Kubectl<'_> {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut child = Command::new(&self.binary)
            .args(args)
            .env("KUBECONFIG", self.server.kubeconfig())
            .env("HOME", &self.server.data_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        let output = child.wait_with_output().expect("kubectl output");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args, None);
        assert!(ok, "kubectl {args:?} failed: {err}{out}");
        out
    }
}

/// The hello Deployment and Service (its image path is relative to the repository, where the agent runs).
fn manifests() -> String {
    common::wasm_app("wasm32-wasip2", "hello_http");
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests/hello-deployment.yaml")
        .display()
        .to_string()
}

fn post_json(server: &Server, path: &str, body: &Value) -> Value {
    let response = reqwest::blocking::Client::new()
        .post(format!("{}{path}", server.url))
        .json(body)
        .send()
        .expect("post");
    let status = response.status();
    let body: Value = response.json().expect("json");
    assert!(status.is_success(), "{path}: {body}");
    body
}

fn get_json(server: &Server, path: &str) -> Value {
    reqwest::blocking::get(format!("{}{path}", server.url))
        .expect("get")
        .json()
        .expect("json")
}

const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments/hello";

/// The same user journey, for any kubectl. `asks_strict_validation`: the kubectl sends fieldValidation=Strict
/// (1.27+); older ones get the server's default, which keeps the object and warns.
fn kubectl_journey(binary: PathBuf, asks_strict_validation: bool) {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "kubectl-node");
    let kubectl = Kubectl {
        binary,
        server: &server,
    };

    let out = kubectl.ok(&["apply", "-f", &manifests()]);
    assert!(out.contains("deployment.apps/hello created"), "{out}");
    assert!(out.contains("service/hello created"), "{out}");

    let out = kubectl.ok(&["get", "deployments"]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{out}"
    );
    assert_eq!(lines[1][0], "hello", "{out}");
    let out = kubectl.ok(&["get", "svc", "-o", "wide"]);
    assert!(out.lines().next().unwrap().contains("SELECTOR"), "{out}");
    assert!(out.contains("80/TCP"), "{out}");

    // Re-apply with a change: a strategic merge patch keeps what others wrote.
    let text = std::fs::read_to_string(manifests()).unwrap();
    let changed = text.replace("replicas: 3", "replicas: 4");
    let (ok, out, err) = kubectl.run(&["apply", "-f", "-"], Some(&changed));
    assert!(ok, "{err}");
    assert!(out.contains("deployment.apps/hello configured"), "{out}");
    assert!(out.contains("service/hello unchanged"), "{out}");
    assert_eq!(
        kubectl.ok(&["get", "deploy", "hello", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );

    let out = kubectl.ok(&["scale", "deployment", "hello", "--replicas=2"]);
    assert!(out.contains("scaled"), "{out}");
    assert_eq!(get_json(&server, DEPLOY)["spec"]["replicas"], 2);

    let out = kubectl.ok(&["rollout", "status", "deployment/hello", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    // As in Kubernetes, a scale-down has rolled out before the extra pods are gone: they go soon after.
    let scaled_down = |out: &str| {
        out.lines().nth(1).is_some_and(|l| {
            l.split_whitespace().collect::<Vec<_>>()[..4] == ["hello", "2/2", "2", "2"]
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = kubectl.ok(&["get", "deployments"]);
    while !scaled_down(&out) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        out = kubectl.ok(&["get", "deployments"]);
    }
    assert!(scaled_down(&out), "{out}");

    let out = kubectl.ok(&["describe", "deployment", "hello"]);
    assert!(out.contains("Name:") && out.contains("hello"), "{out}");
    assert!(out.contains("Replicas:"), "{out}");
    assert!(out.contains("ScalingReplicaSet"), "{out}");

    // Unknown fields are refused (or warned about) with the server's message, without --validate=false.
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\ndataa:\n  x: y\n";
    let (ok, _, err) = kubectl.run(&["apply", "-f", "-"], Some(bad));
    assert_eq!(ok, !asks_strict_validation, "{err}");
    assert!(
        err.contains("unknown field") && err.contains("dataa"),
        "{err}"
    );

    // get -w prints changes as they happen.
    let mut watch = Command::new(&kubectl.binary)
        .args(["get", "configmaps", "-w"])
        .env("KUBECONFIG", server.kubeconfig())
        .env("HOME", &server.data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    post_json(
        &server,
        "/api/v1/namespaces/default/configmaps",
        &json!({"metadata": {"name": "seen-by-watch"}, "data": {"a": "b"}}),
    );
    let stdout = watch.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("seen-by-watch"))
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let line = reader
        .join()
        .unwrap()
        .expect("the watch printed the new configmap");
    assert!(line.split_whitespace().nth(1) == Some("1"), "{line}");

    // A changed template rolls out as revision 2; undo brings revision 1's template back as revision 3.
    let template_env = |d: &Value| d["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    let before = template_env(&get_json(&server, DEPLOY));
    kubectl.ok(&["set", "env", "deployment/hello", "GREETING=new"]);
    let out = kubectl.ok(&["rollout", "status", "deployment/hello", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let out = kubectl.ok(&["rollout", "history", "deployment/hello"]);
    assert!(
        out.contains("REVISION") && out.lines().any(|l| l.starts_with('2')),
        "{out}"
    );
    let out = kubectl.ok(&["rollout", "undo", "deployment/hello"]);
    assert!(out.contains("rolled back"), "{out}");
    let out = kubectl.ok(&["rollout", "status", "deployment/hello", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let deployment = get_json(&server, DEPLOY);
    assert_eq!(template_env(&deployment), before);
    assert_eq!(
        deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    // pause, resume and restart (kubectl 1.20 has all three).
    assert!(
        kubectl
            .ok(&["rollout", "pause", "deployment/hello"])
            .contains("paused")
    );
    assert_eq!(get_json(&server, DEPLOY)["spec"]["paused"], true);
    assert!(
        kubectl
            .ok(&["rollout", "resume", "deployment/hello"])
            .contains("resumed")
    );
    assert!(
        kubectl
            .ok(&["rollout", "restart", "deployment/hello"])
            .contains("restarted")
    );
    let out = kubectl.ok(&["rollout", "status", "deployment/hello", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(
        get_json(&server, DEPLOY)["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "4"
    );

    let out = kubectl.ok(&["delete", "-f", &manifests()]);
    assert!(out.contains("deployment.apps \"hello\" deleted"), "{out}");
    let (ok, _, err) = kubectl.run(&["get", "deployment", "hello"], None);
    assert!(!ok);
    assert!(
        err.contains("deployments.apps \"hello\" not found"),
        "{err}"
    );
}

#[test]
fn the_current_kubectl_applies_gets_watches_scales_describes_rolls_out_and_deletes() {
    kubectl_journey(current_kubectl(), true);
}

#[test]
fn kubectl_1_20_applies_gets_watches_scales_describes_rolls_out_and_deletes() {
    kubectl_journey(kubectl_1_20(), false);
}

#[test]
fn kubectl_1_37_applies_gets_watches_scales_describes_rolls_out_and_deletes() {
    kubectl_journey(kubectl_1_37(), true);
}

/// `kubectl create` of each kind sends the object as protobuf (kubectl >= 1.30): each is stored as sent,
/// zero values and all.
#[test]
fn kubectl_1_37_creates_objects_of_every_kind_in_protobuf() {
    let server = Server::api_only();
    let kubectl = Kubectl {
        binary: kubectl_1_37(),
        server: &server,
    };
    let created = [
        vec!["create", "namespace", "demo"],
        vec![
            "-n",
            "demo",
            "create",
            "deployment",
            "web",
            "--image=hello.wasm",
            "--replicas=0",
            "--port=8080",
        ],
        vec![
            "-n",
            "demo",
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=fast",
            "--from-literal=empty=",
        ],
        vec![
            "-n",
            "demo",
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=password=s3cr3t",
        ],
        vec![
            "-n",
            "demo",
            "create",
            "job",
            "once",
            "--image=batch.wasm",
            "--",
            "batch",
            "10",
        ],
        vec![
            "-n",
            "demo",
            "create",
            "cronjob",
            "nightly",
            "--image=batch.wasm",
            "--schedule=0 3 * * *",
        ],
        vec![
            "-n",
            "demo",
            "create",
            "role",
            "reader",
            "--verb=get,list",
            "--resource=pods",
        ],
        vec![
            "-n",
            "demo",
            "create",
            "rolebinding",
            "bob-reads",
            "--role=reader",
            "--user=bob",
        ],
        vec![
            "-n",
            "demo",
            "create",
            "service",
            "clusterip",
            "web",
            "--tcp=80:8080",
        ],
    ];
    for args in &created {
        let out = kubectl.ok(args);
        assert!(out.contains("created"), "{args:?}: {out}");
    }
    assert_eq!(
        get_json(&server, "/api/v1/namespaces/demo")["status"]["phase"],
        "Active"
    );
    let deployment = get_json(&server, "/apis/apps/v1/namespaces/demo/deployments/web");
    assert_eq!(deployment["spec"]["replicas"], 0, "{deployment}");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "hello.wasm");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
        "25%"
    );
    assert!(
        deployment["metadata"]["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{deployment}"
    );
    let config = get_json(&server, "/api/v1/namespaces/demo/configmaps/settings");
    assert_eq!(config["data"], json!({"mode": "fast", "empty": ""}));
    let secret = get_json(&server, "/api/v1/namespaces/demo/secrets/creds");
    assert_eq!(secret["data"]["password"], "czNjcjN0", "{secret}");
    let job = get_json(&server, "/apis/batch/v1/namespaces/demo/jobs/once");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(["batch", "10"])
    );
    let cron = get_json(&server, "/apis/batch/v1/namespaces/demo/cronjobs/nightly");
    assert_eq!(cron["spec"]["schedule"], "0 3 * * *");
    let role = get_json(
        &server,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/demo/roles/reader",
    );
    assert_eq!(role["rules"][0]["verbs"], json!(["get", "list"]));
    let binding = get_json(
        &server,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/demo/rolebindings/bob-reads",
    );
    assert_eq!(binding["subjects"][0]["name"], "bob");
    assert_eq!(binding["roleRef"]["name"], "reader");
    let service = get_json(&server, "/api/v1/namespaces/demo/services/web");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080, "{service}");
    assert!(service["spec"]["clusterIP"].is_string(), "{service}");

    // Replacing what kubectl printed brings the object back as it was written.
    let out = kubectl.ok(&[
        "-n",
        "demo",
        "create",
        "configmap",
        "settings",
        "--from-literal=mode=slow",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let (ok, _, err) = kubectl.run(&["replace", "-f", "-"], Some(&out));
    assert!(ok, "{err}");
    let config = get_json(&server, "/api/v1/namespaces/demo/configmaps/settings");
    assert_eq!(config["data"], json!({"mode": "slow"}));

    // A name kubectl does not check reaches the server's validation through protobuf.
    let (ok, _, err) = kubectl.run(&["create", "namespace", "Not_Valid"], None);
    assert!(!ok);
    assert!(err.contains("Invalid value: \"Not_Valid\""), "{err}");
}

/// `kubectl apply --server-side`: field ownership in managedFields, removal of fields no longer applied,
/// conflicts with other managers (Kubernetes' message) and `--force-conflicts`.
#[test]
fn kubectl_1_37_server_side_apply_tracks_owners_removes_fields_and_reports_conflicts() {
    let server = Server::api_only();
    let kubectl = Kubectl {
        binary: kubectl_1_37(),
        server: &server,
    };
    let config = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\n  labels: {team: a, tier: web}\n\
                  data:\n  a: \"1\"\n  b: \"2\"\n";
    let apply = |args: &[&str], manifest: &str| {
        kubectl.run(
            &[&["apply", "--server-side", "-f", "-"], args].concat(),
            Some(manifest),
        )
    };
    let (ok, out, err) = apply(&[], config);
    assert!(ok && out.contains("serverside-applied"), "{out}{err}");
    let shown = kubectl.ok(&[
        "get",
        "configmap",
        "owned",
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    let entry = &shown["metadata"]["managedFields"][0];
    assert_eq!(
        (&entry["manager"], &entry["operation"]),
        (&json!("kubectl"), &json!("Apply"))
    );
    assert_eq!(
        entry["fieldsV1"],
        json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:team": {}, "f:tier": {}}}})
    );
    let hidden = kubectl.ok(&["get", "configmap", "owned", "-o", "json"]);
    assert!(
        !hidden.contains("managedFields"),
        "kubectl hides them by default: {hidden}"
    );

    // Another manager changes a field the applier owns: the next apply of the old value conflicts.
    kubectl.ok(&[
        "patch",
        "configmap",
        "owned",
        "-p",
        r#"{"data":{"a":"changed"}}"#,
    ]);
    let (ok, _, err) = apply(&[], config);
    assert!(!ok);
    assert!(
        err.contains(
            r#"Apply failed with 1 conflict: conflict with "kubectl-patch" using v1: .data.a"#
        ),
        "{err}"
    );
    assert_eq!(
        get_json(&server, "/api/v1/namespaces/default/configmaps/owned")["data"]["a"],
        "changed"
    );
    let (ok, _, err) = apply(&["--force-conflicts"], config);
    assert!(ok, "{err}");
    let object = get_json(&server, "/api/v1/namespaces/default/configmaps/owned");
    assert_eq!(object["data"]["a"], "1");
    let managers: Vec<&str> = object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(
        managers,
        ["kubectl"],
        "the patch's only field was taken: {object}"
    );

    // Fields left out of the next apply are removed; a label someone else set stays.
    kubectl.ok(&["label", "configmap", "owned", "extra=kept"]);
    let smaller = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\n  labels: {team: a}\ndata:\n  a: \"1\"\n";
    let (ok, _, err) = apply(&[], smaller);
    assert!(ok, "{err}");
    let object = get_json(&server, "/api/v1/namespaces/default/configmaps/owned");
    assert_eq!(object["data"], json!({"a": "1"}));
    assert_eq!(
        object["metadata"]["labels"],
        json!({"team": "a", "extra": "kept"})
    );

    // An apply needs a field manager; force is for applies only.
    let response = reqwest::blocking::Client::new()
        .patch(format!(
            "{}/api/v1/namespaces/default/configmaps/owned",
            server.url
        ))
        .header("content-type", "application/apply-patch+yaml")
        .body(smaller)
        .send()
        .unwrap();
    assert_eq!(response.status(), 422);
    let status: Value = response.json().unwrap();
    assert_eq!(
        status["details"]["causes"][0]["field"], "fieldManager",
        "{status}"
    );
}

#[test]
fn kubectl_applies_and_lists_rbac_objects() {
    let server = Server::api_only();
    let kubectl = Kubectl {
        binary: current_kubectl(),
        server: &server,
    };
    let rbac = r#"
apiVersion: v1
kind: Namespace
metadata: {name: dev}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: dev}
rules:
- apiGroups: [""]
  resources: [pods, pods/log]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-reads, namespace: dev}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-reader}
rules: [{apiGroups: [""], resources: [nodes], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: ops-reads}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-reader}
subjects: [{kind: Group, name: ops, apiGroup: rbac.authorization.k8s.io}]
"#;
    let (ok, out, err) = kubectl.run(&["apply", "-f", "-"], Some(rbac));
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("rolebinding.rbac.authorization.k8s.io/alice-reads created"),
        "{out}"
    );
    let bindings = kubectl.ok(&["get", "rolebindings", "-n", "dev"]);
    assert!(
        bindings.contains("alice-reads") && bindings.contains("Role/pod-reader"),
        "{bindings}"
    );
    let cluster = kubectl.ok(&["get", "clusterrolebindings"]);
    assert!(cluster.contains("ClusterRole/node-reader"), "{cluster}");
    let role = get_json(
        &server,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/dev/roles/pod-reader",
    );
    assert_eq!(role["rules"][0]["resources"], json!(["pods", "pods/log"]));
    assert_eq!(role["rules"][0]["verbs"], json!(["get", "list"]));
}

/// `kubectl drain` evicts a node's pods through policy/v1 Eviction, which keeps PodDisruptionBudgets: a
/// budget that allows no disruption holds the drain (429s until its timeout), one that allows it lets the
/// pods go and their replacements start elsewhere.
#[test]
fn kubectl_1_37_drain_respects_pod_disruption_budgets() {
    let server = Server::start();
    let _first = NodeAgent::start(&server, "drain-a");
    let _second = NodeAgent::start(&server, "drain-b");
    let kubectl = Kubectl {
        binary: kubectl_1_37(),
        server: &server,
    };
    let hello = common::wasm_app("wasm32-wasip2", "hello_http");
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 3\n\
         \x20 selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n\
         \x20   spec:\n      containers: [{{name: web, image: \"file://{}\", ports: [{{containerPort: 8080}}]}}]\n\
         ---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: web}}\n\
         spec: {{minAvailable: 3, selector: {{matchLabels: {{app: web}}}}}}\n",
        hello.display()
    );
    let (ok, out, err) = kubectl.run(&["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "{out}{err}");
    let budget = common::wait_until(
        &server,
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/web",
        "counted",
        |b| b["status"]["currentHealthy"] == 3,
    );
    assert_eq!(
        (
            &budget["status"]["desiredHealthy"],
            &budget["status"]["disruptionsAllowed"]
        ),
        (&json!(3), &json!(0)),
        "{budget}"
    );
    let out = kubectl.ok(&["get", "pdb"]);
    assert!(
        out.contains("MIN AVAILABLE") && out.lines().nth(1).is_some_and(|l| l.starts_with("web")),
        "{out}"
    );
    let pods = get_json(
        &server,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
    );
    let node = pods["items"][0]["spec"]["nodeName"]
        .as_str()
        .unwrap()
        .to_owned();

    // No disruption allowed: the drain cordons the node, is refused and gives up at its timeout.
    let (ok, _, err) = kubectl.run(&["drain", &node, "--timeout=4s"], None);
    assert!(!ok);
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{err}"
    );
    assert_eq!(
        get_json(&server, &format!("/api/v1/nodes/{node}"))["spec"]["unschedulable"],
        true
    );
    let still = get_json(
        &server,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
    );
    assert_eq!(still["items"].as_array().unwrap().len(), 3);

    // One disruption at a time allowed: the drain evicts the node's pods one after the other.
    kubectl.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":2}}"#,
    ]);
    let out = kubectl.ok(&["drain", &node, "--timeout=90s"]);
    assert!(out.contains("drained"), "{out}");
    let moved = common::wait_until(
        &server,
        "/apis/apps/v1/namespaces/default/deployments/web",
        "3 ready again",
        |d| d["status"]["readyReplicas"] == 3,
    );
    assert_eq!(moved["status"]["replicas"], 3);
    let pods = get_json(
        &server,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
    );
    assert!(
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["spec"]["nodeName"] != node.as_str()),
        "{pods}"
    );
}

/// `kubectl get --sort-by` on any field: the server's Tables carry whole objects when asked
/// (`includeObject=Object`), only metadata by default, nothing for `None`.
#[test]
fn kubectl_sorts_tables_by_any_field_of_the_objects() {
    let server = Server::api_only();
    let kubectl = Kubectl {
        binary: kubectl_1_37(),
        server: &server,
    };
    for (name, rank) in [("first", "3"), ("second", "1"), ("third", "2")] {
        kubectl.ok(&[
            "create",
            "configmap",
            name,
            &format!("--from-literal=rank={rank}"),
        ]);
    }
    // The table's rows, sorted by kubectl on the objects the server put in them.
    let out = kubectl.ok(&["get", "configmaps", "--sort-by=.data.rank"]);
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["second", "third", "first"], "{out}");
    let table = |include: &str| {
        let response = reqwest::blocking::Client::new()
            .get(format!(
                "{}/api/v1/namespaces/default/configmaps?includeObject={include}",
                server.url
            ))
            .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
            .send()
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().unwrap(),
        )
    };
    let (_, full) = table("Object");
    assert_eq!(full["rows"][0]["object"]["data"]["rank"], "3", "{full}");
    let (_, metadata) = table("Metadata");
    assert_eq!(
        metadata["rows"][0]["object"]["kind"],
        "PartialObjectMetadata"
    );
    let (_, none) = table("None");
    assert!(none["rows"][0].get("object").is_none(), "{none}");
    let (code, status) = table("Everything");
    assert_eq!(
        (code, &status["reason"]),
        (400, &json!("BadRequest")),
        "{status}"
    );
}

#[test]
fn kubectl_explain_reads_kubernetes_schemas_from_openapi_v3() {
    let server = Server::api_only();
    for binary in [kubectl_1_37(), current_kubectl()] {
        let kubectl = Kubectl {
            binary: binary.clone(),
            server: &server,
        };
        let out = kubectl.ok(&["explain", "pods.spec.containers.image"]);
        for expected in ["KIND:", "Pod", "image", "<string>", "Container image name"] {
            assert!(out.contains(expected), "{binary:?}: {expected} in {out}");
        }
        let out = kubectl.ok(&["explain", "deployment.spec", "--recursive"]);
        for expected in ["replicas", "strategy", "rollingUpdate", "maxSurge"] {
            assert!(out.contains(expected), "{binary:?}: {expected} in {out}");
        }
        let out = kubectl.ok(&["explain", "cronjobs.spec.jobTemplate.spec.backoffLimit"]);
        assert!(out.contains("<integer>"), "{binary:?}: {out}");
        let (ok, _, err) = kubectl.run(&["explain", "pods.spec.nope"], None);
        assert!(!ok);
        assert!(err.contains("nope"), "{binary:?}: {err}");
    }

    // kubectl computes client-side apply patches from these schemas: lists keep merging by their keys, and an
    // item removed from the manifest goes.
    let kubectl = Kubectl {
        binary: kubectl_1_37(),
        server: &server,
    };
    let manifest = |env: &str, image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: envs}}\nspec:\n  selector: {{matchLabels: {{app: envs}}}}\n  \
             template:\n    metadata: {{labels: {{app: envs}}}}\n    spec:\n      containers:\n      - name: app\n        \
             image: {image}\n        env: [{env}]\n      - name: side\n        image: side.wasm\n"
        )
    };
    for (env, image) in [
        ("{name: A, value: a}, {name: B, value: b}", "app.wasm"),
        ("{name: A, value: a2}", "app2.wasm"),
    ] {
        let (ok, out, err) = kubectl.run(&["apply", "-f", "-"], Some(&manifest(env, image)));
        assert!(ok, "{out}{err}");
    }
    let stored: Value =
        serde_json::from_str(&kubectl.ok(&["get", "deployment", "envs", "-o", "json"])).unwrap();
    let containers = &stored["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        containers[0]["env"],
        json!([{"name": "A", "value": "a2"}]),
        "{containers}"
    );
    assert_eq!(containers[0]["image"], "app2.wasm");
    assert_eq!(containers[1]["name"], "side");
}

#[test]
fn get_cs_and_cluster_info_dump_work_and_replication_controllers_are_served() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "dump-node");
    let kubectl = Kubectl {
        binary: kubectl_1_37(),
        server: &server,
    };
    let out = kubectl.ok(&["get", "componentstatuses"]);
    for expected in [
        "NAME",
        "STATUS",
        "scheduler",
        "controller-manager",
        "etcd-0",
        "Healthy",
    ] {
        assert!(out.contains(expected), "{expected} in {out}");
    }
    assert!(!out.contains("Unhealthy"), "{out}");
    let out = kubectl.ok(&["get", "cs", "etcd-0", "-o", "json"]);
    let etcd: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(etcd["conditions"][0]["status"], "True");
    // Computed on each read: nothing to watch (Kubernetes' 405), rather than a list where events belong.
    let watch = server
        .http()
        .get(format!(
            "{}/api/v1/componentstatuses?watch=true",
            server.url
        ))
        .send()
        .unwrap();
    assert_eq!(watch.status(), 405);

    // A ReplicationController is stored with Kubernetes' defaults (its selector from its template's
    // labels), listed with kubectl's columns, and refused when invalid.
    let rc = "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: legacy}\nspec:\n  replicas: 2\n  \
              template:\n    metadata: {labels: {app: legacy}}\n    spec:\n      containers: [{name: app, image: app.wasm}]\n";
    let (ok, out, err) = kubectl.run(&["apply", "-f", "-"], Some(rc));
    assert!(ok, "{out}{err}");
    let stored: Value =
        serde_json::from_str(&kubectl.ok(&["get", "rc", "legacy", "-o", "json"])).unwrap();
    assert_eq!(stored["spec"]["selector"], json!({"app": "legacy"}));
    let out = kubectl.ok(&["get", "replicationcontrollers"]);
    assert!(out.contains("DESIRED") && out.contains("legacy"), "{out}");
    let bad = "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: bad}\nspec:\n  selector: {app: a}\n  \
               template:\n    metadata: {labels: {app: b}}\n    spec:\n      containers: [{name: app, image: app.wasm}]\n";
    let (ok, _, err) = kubectl.run(&["apply", "-f", "-"], Some(bad));
    assert!(!ok);
    assert!(err.contains("spec.template.metadata.labels"), "{err}");

    // cluster-info dump lists every namespace's objects and pod logs without an error.
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().display().to_string();
    let (ok, out, err) = kubectl.run(
        &[
            "cluster-info",
            "dump",
            "--all-namespaces",
            "--output-directory",
            &out_dir,
        ],
        None,
    );
    assert!(ok, "{out}{err}");
    assert!(dir.path().join("nodes.json").exists());
    assert!(
        dir.path()
            .join("default/replication-controllers.json")
            .exists()
    );
}

#[test]
fn kubectl_apply_prune_removes_what_the_manifest_no_longer_has() {
    // kubectl's default prune list holds claims, volumes and Ingresses: every kind of it must be served.
    let server = Server::api_only();
    let manifest = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: kept, labels: {app: demo}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, labels: {app: demo}}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, labels: {app: demo}}
spec:
  rules:
  - host: hello.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: hello, port: {number: 80}}}}]}
"#;
    let first_only = manifest.split("---").next().unwrap();
    for binary in [current_kubectl(), kubectl_1_37()] {
        let kubectl = Kubectl {
            binary,
            server: &server,
        };
        let (ok, out, err) = kubectl.run(
            &["apply", "--prune", "-l", "app=demo", "-f", "-"],
            Some(manifest),
        );
        assert!(ok, "{out}{err}");
        assert!(out.contains("ingress.networking.k8s.io/web"), "{out}");
        let table = kubectl.ok(&["get", "ingress"]);
        assert!(
            table.contains("hello.example.com") && table.contains("80"),
            "{table}"
        );
        let (ok, out, err) = kubectl.run(
            &["apply", "--prune", "-l", "app=demo", "-f", "-"],
            Some(first_only),
        );
        assert!(ok, "{out}{err}");
        assert!(out.contains("persistentvolumeclaim/data pruned"), "{out}");
        assert!(
            out.contains("ingress.networking.k8s.io/web pruned"),
            "{out}"
        );
        assert!(out.contains("configmap/kept unchanged"), "{out}");
    }
    let kubectl = Kubectl {
        binary: kubectl_1_37(),
        server: &server,
    };
    let (ok, _, err) = kubectl.run(
        &["apply", "-f", "-"],
        Some(&manifest.replace("pathType: Prefix", "pathType: Regex")),
    );
    assert!(!ok);
    assert!(
        err.contains("spec.rules[0].http.paths[0].pathType: Unsupported value: \"Regex\""),
        "{err}"
    );
}

#[test]
fn kubectl_1_20_autoscale_makes_an_autoscaling_v1_autoscaler_that_v2_clients_see_whole() {
    let server = Server::start();
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let v1 = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers";
    let v2 = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers";
    post_json(
        &server,
        deployments,
        &json!({"metadata": {"name": "web"}, "spec": {"replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "hello.wasm"}]}}}}),
    );
    // Discovery offers v1 beside the preferred v2.
    let group = get_json(&server, "/apis/autoscaling");
    assert_eq!(group["preferredVersion"]["version"], "v2", "{group}");
    assert_eq!(
        group["versions"][1]["groupVersion"], "autoscaling/v1",
        "{group}"
    );
    let listed = get_json(&server, "/apis/autoscaling/v1");
    assert_eq!(listed["resources"][0]["name"], "horizontalpodautoscalers");

    // kubectl 1.20 writes autoscaling/v1, with the CPU target as v1's one field.
    let old = Kubectl {
        binary: kubectl_1_20(),
        server: &server,
    };
    let out = old.ok(&[
        "autoscale",
        "deployment",
        "web",
        "--cpu-percent=60",
        "--min=2",
        "--max=5",
    ]);
    assert!(
        out.contains("horizontalpodautoscaler.autoscaling/web autoscaled"),
        "{out}"
    );
    let stored = get_json(&server, &format!("{v2}/web"));
    assert_eq!(stored["apiVersion"], "autoscaling/v2");
    assert_eq!(
        stored["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}])
    );
    assert_eq!(stored["spec"]["minReplicas"], 2);

    // What only v2 can say (a Pods metric, a behavior) travels through v1 in annotations.
    let client = reqwest::blocking::Client::new();
    let patched = client
        .patch(format!("{}{v2}/web", server.url))
        .header("Content-Type", "application/merge-patch+json")
        .body(
            json!({"spec": {"metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
                {"type": "Pods", "pods": {"metric": {"name": "http_requests_per_second"}, "target": {"type": "AverageValue", "averageValue": "20"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}}}})
            .to_string(),
        )
        .send()
        .expect("patch");
    assert!(
        patched.status().is_success(),
        "{}",
        patched.text().unwrap_or_default()
    );
    let shown: Value = serde_json::from_str(&old.ok(&[
        "get",
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(shown["apiVersion"], "autoscaling/v1", "{shown}");
    assert_eq!(
        shown["spec"]["targetCPUUtilizationPercentage"], 60,
        "{shown}"
    );
    assert!(shown["spec"].get("metrics").is_none(), "{shown}");
    let annotations = &shown["metadata"]["annotations"];
    assert!(
        annotations["autoscaling.alpha.kubernetes.io/metrics"]
            .as_str()
            .is_some_and(|m| m.contains(r#""metricName":"http_requests_per_second""#)),
        "{shown}"
    );
    assert!(
        annotations["autoscaling.alpha.kubernetes.io/behavior"].is_string(),
        "{shown}"
    );
    // kubectl 1.37 reads it too.
    let new = Kubectl {
        binary: kubectl_1_37(),
        server: &server,
    };
    let yaml = new.ok(&[
        "get",
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "-o",
        "yaml",
    ]);
    assert!(
        yaml.contains("apiVersion: autoscaling/v1")
            && yaml.contains("targetCPUUtilizationPercentage: 60"),
        "{yaml}"
    );

    // In protobuf too, as Kubernetes' autoscaling/v1 message.
    let encoded = client
        .get(format!("{}{v1}/web", server.url))
        .header("Accept", "application/vnd.kubernetes.protobuf")
        .send()
        .and_then(|r| r.bytes())
        .expect("protobuf");
    assert!(encoded.starts_with(b"k8s\0"), "{encoded:?}");
    assert!(
        encoded.windows(14).any(|w| w == b"autoscaling/v1"),
        "{encoded:?}"
    );

    // A v1 client that sends back what it read keeps what it could not see; its own change lands.
    let mut edited = shown.clone();
    edited["spec"]["maxReplicas"] = json!(7);
    let replaced = client
        .put(format!("{}{v1}/web", server.url))
        .json(&edited)
        .send()
        .expect("put");
    assert!(
        replaced.status().is_success(),
        "{}",
        replaced.text().unwrap_or_default()
    );
    let merged = client
        .patch(format!("{}{v1}/web", server.url))
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"spec": {"targetCPUUtilizationPercentage": 70}}"#)
        .send()
        .expect("patch")
        .json::<Value>()
        .expect("json");
    assert_eq!(merged["apiVersion"], "autoscaling/v1", "{merged}");
    assert_eq!(
        merged["spec"]["targetCPUUtilizationPercentage"], 70,
        "{merged}"
    );
    let stored = get_json(&server, &format!("{v2}/web"));
    assert_eq!(stored["spec"]["maxReplicas"], 7, "{stored}");
    assert!(stored["metadata"].get("annotations").is_none(), "{stored}");
    assert_eq!(
        stored["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        30
    );
    let metrics = stored["spec"]["metrics"].as_array().expect("metrics");
    assert_eq!(metrics.len(), 2, "{stored}");
    assert_eq!(
        metrics[0]["pods"]["target"]["averageValue"], "20",
        "{stored}"
    );
    assert_eq!(
        metrics[1]["resource"]["target"]["averageUtilization"], 70,
        "{stored}"
    );

    // Lists and watches of v1 are v1 too.
    let list = get_json(&server, v1);
    assert_eq!(list["kind"], "HorizontalPodAutoscalerList");
    assert_eq!(list["apiVersion"], "autoscaling/v1");
    assert_eq!(
        list["items"][0]["spec"]["targetCPUUtilizationPercentage"],
        70
    );
    let mut watch = client
        .get(format!("{}{v1}?watch=true&timeoutSeconds=1", server.url))
        .send()
        .expect("watch");
    let mut events = String::new();
    std::io::Read::read_to_string(&mut watch, &mut events).expect("watch events");
    let event: Value = serde_json::from_str(events.lines().next().unwrap_or("{}")).unwrap();
    assert_eq!(event["type"], "ADDED", "{events}");
    assert_eq!(event["object"]["apiVersion"], "autoscaling/v1", "{events}");
    assert_eq!(
        event["object"]["spec"]["targetCPUUtilizationPercentage"], 70,
        "{events}"
    );

    // kubectl 1.20's describe, which falls back to autoscaling/v1 when v2beta2 is not served (as on Kubernetes
    // since 1.26).
    let described = old.ok(&["describe", "hpa", "web"]);
    assert!(
        described.contains("Reference:") && described.contains("Target CPU utilization:   70%"),
        "{described}"
    );

    // A body of another version, or a broken round-trip annotation, is refused with the reason.
    let refused = client
        .post(format!("{}{v1}", server.url))
        .json(&json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "other"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 2}}))
        .send()
        .expect("post");
    assert_eq!(refused.status(), 400);
    let status: Value = refused.json().expect("status");
    assert_eq!(
        status["message"],
        "the API version in the data (autoscaling/v2) does not match the expected API version (autoscaling/v1)"
    );
    let refused = client
        .post(format!("{}{v1}", server.url))
        .json(&json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "other", "annotations": {"autoscaling.alpha.kubernetes.io/metrics": "[{"}},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 2}}))
        .send()
        .expect("post");
    assert_eq!(refused.status(), 400);
    let status: Value = refused.json().expect("status");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("autoscaling.alpha.kubernetes.io/metrics")),
        "{status}"
    );
    // v1's validation is v2's, on the converted object.
    let (ok, _, err) = old.run(
        &[
            "autoscale",
            "deployment",
            "web",
            "--name=zero",
            "--cpu-percent=0",
            "--max=3",
        ],
        None,
    );
    assert!(!ok);
    assert!(err.contains("must be greater than 0"), "{err}");
}
