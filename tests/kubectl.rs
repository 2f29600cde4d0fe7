//! Real kubectl against the apiserver: the machine's current kubectl and Debian's kubectl 1.20, with their
//! default flags.

mod common;

use common::Server;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn current_kubectl() -> PathBuf {
    PathBuf::from(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
}

fn kubectl_1_20() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/kubectl-1.20/usr/bin/kubectl");
    assert!(
        path.exists(),
        "kubectl 1.20 is missing at {}: run scripts/setup-test-tools",
        path.display()
    );
    path
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

/// The hello Deployment and Service: objects kubectl can create and delete with no node or controller.
fn manifests() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests/hello-deployment.yaml")
        .display()
        .to_string()
}

async fn put_json(server: &Server, path: &str, body: &Value) -> Value {
    let response = reqwest::Client::new()
        .put(format!("{}{path}", server.url))
        .json(body)
        .send()
        .await
        .expect("put");
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert!(status.is_success(), "{path}: {body}");
    body
}

async fn post_json(server: &Server, path: &str, body: &Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.url))
        .json(body)
        .send()
        .await
        .expect("post");
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert!(status.is_success(), "{path}: {body}");
    body
}

async fn get_json(server: &Server, path: &str) -> Value {
    reqwest::get(format!("{}{path}", server.url))
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments/hello";

/// The same user journey, for any kubectl. `asks_strict_validation`: the kubectl sends fieldValidation=Strict
/// (1.27+); older ones get the server's default, which keeps the object and warns.
async fn kubectl_journey(binary: PathBuf, asks_strict_validation: bool) {
    let server = Server::start();
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
    assert_eq!(&lines[1][..4], ["hello", "0/3", "0", "0"], "{out}");
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
    assert_eq!(get_json(&server, DEPLOY).await["spec"]["replicas"], 2);

    let out = kubectl.ok(&["describe", "deployment", "hello"]);
    assert!(out.contains("Name:") && out.contains("hello"), "{out}");
    assert!(out.contains("Replicas:"), "{out}");
    assert!(out.contains("Events:"), "{out}");

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
    )
    .await;
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

    // rollout status follows the Deployment's status as the controller writes it.
    let mut deployment = get_json(&server, DEPLOY).await;
    let generation = deployment["metadata"]["generation"].clone();
    deployment["status"] = json!({"observedGeneration": generation, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                       {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]});
    put_json(&server, &format!("{DEPLOY}/status"), &deployment).await;
    let out = kubectl.ok(&["rollout", "status", "deployment/hello", "--timeout=20s"]);
    assert!(out.contains("successfully rolled out"), "{out}");

    // rollout undo goes back to the template of the previous revision's ReplicaSet.
    let deployment = get_json(&server, DEPLOY).await;
    let uid = deployment["metadata"]["uid"].as_str().unwrap().to_owned();
    for (revision, greeting) in [("1", "old"), ("2", "new")] {
        let mut template = deployment["spec"]["template"].clone();
        template["metadata"]["labels"]["pod-template-hash"] = format!("h{revision}").into();
        template["spec"]["containers"][0]["env"] = json!([{"name": "GREETING", "value": greeting}]);
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": format!("hello-h{revision}"), "labels": {"app": "hello", "pod-template-hash": format!("h{revision}")},
                         "annotations": {"deployment.kubernetes.io/revision": revision},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "hello", "uid": uid, "controller": true}]},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "hello", "pod-template-hash": format!("h{revision}")}}, "template": template}});
        post_json(&server, "/apis/apps/v1/namespaces/default/replicasets", &rs).await;
    }
    let mut deployment = get_json(&server, DEPLOY).await;
    deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "2".into();
    deployment["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "GREETING", "value": "new"}]);
    put_json(&server, DEPLOY, &deployment).await;
    let out = kubectl.ok(&["rollout", "undo", "deployment/hello"]);
    assert!(out.contains("rolled back"), "{out}");
    let deployment = get_json(&server, DEPLOY).await;
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
        "old"
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

#[tokio::test(flavor = "multi_thread")]
async fn the_current_kubectl_applies_gets_watches_scales_describes_rolls_out_and_deletes() {
    kubectl_journey(current_kubectl(), true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_1_20_applies_gets_watches_scales_describes_rolls_out_and_deletes() {
    kubectl_journey(kubectl_1_20(), false).await;
}
