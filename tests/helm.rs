//! Real helm 4 against a cluster: a chart's whole life (install, upgrade, history, rollback, test, uninstall),
//! each with `--wait`. helm keeps its releases in Secrets written in protobuf and applies the chart's objects
//! with server-side apply.

mod common;

use common::{NodeAgent, Server};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn helm_4() -> PathBuf {
    common::test_tool("helm-4/helm")
}

/// Runs helm with the server's kubeconfig; asserts success and returns stdout.
fn helm(server: &Server, args: &[&str]) -> String {
    let output = Command::new(helm_4())
        .args(args)
        .args(["--namespace", "apps"])
        .env("KUBECONFIG", server.kubeconfig())
        .env("HOME", &server.data_dir)
        .env("HELM_CACHE_HOME", server.data_dir.join("helm-cache"))
        .env("HELM_CONFIG_HOME", server.data_dir.join("helm-config"))
        .env("HELM_DATA_HOME", server.data_dir.join("helm-data"))
        .output()
        .expect("run helm");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "helm {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A chart with a ConfigMap holding `.Values.message`, a Deployment of the hello app and a test hook pod
/// that runs the batch app to completion.
fn chart(dir: &Path) -> PathBuf {
    let hello = common::wasm_app("wasm32-wasip2", "hello_http");
    let batch = common::wasm_app("wasm32-wasip2", "batch");
    let chart = dir.join("demo");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(chart.join("values.yaml"), "message: hello\nreplicas: 1\n").unwrap();
    std::fs::write(
        chart.join("templates/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n\
         data:\n  message: {{ .Values.message | quote }}\n\
         {{- if .Values.extra }}\n  extra: {{ .Values.extra | quote }}\n{{- end }}\n",
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/deployment.yaml"),
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{{{ .Release.Name }}}}-web\n\
             spec:\n  replicas: {{{{ .Values.replicas }}}}\n  selector:\n    matchLabels: {{app: web}}\n\
             \x20 template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n\
             \x20     - name: web\n        image: file://{}\n        ports: [{{containerPort: 8080}}]\n",
            hello.display()
        ),
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/test.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {{{{ .Release.Name }}}}-test\n  annotations:\n\
             \x20   helm.sh/hook: test\nspec:\n  restartPolicy: Never\n  containers:\n\
             \x20 - name: check\n    image: file://{}\n    args: [\"100\"]\n",
            batch.display()
        ),
    )
    .unwrap();
    chart
}

fn get(server: &Server, path: &str) -> (u16, Value) {
    let response = server
        .http()
        .get(format!("{}{path}", server.url))
        .send()
        .unwrap();
    let code = response.status().as_u16();
    (code, response.json().unwrap_or_default())
}

const CONFIG: &str = "/api/v1/namespaces/apps/configmaps/demo-config";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/apps/deployments/demo-web";

fn release_secrets(server: &Server) -> Vec<String> {
    let (_, list) = get(
        server,
        "/api/v1/namespaces/apps/secrets?labelSelector=owner%3Dhelm",
    );
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn helm_4_installs_upgrades_rolls_back_tests_and_uninstalls_a_chart() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "helm-node");
    common::post(
        &server,
        "/api/v1/namespaces",
        &json!({"metadata": {"name": "apps"}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let chart = chart(dir.path());
    let chart = chart.to_str().unwrap();

    let out = helm(
        &server,
        &["install", "demo", chart, "--wait", "--timeout", "90s"],
    );
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert_eq!(get(&server, CONFIG).1["data"]["message"], "hello");
    let (_, deployment) = get(&server, DEPLOYMENT);
    assert_eq!(
        deployment["status"]["readyReplicas"], 1,
        "--wait waited: {deployment}"
    );
    assert_eq!(release_secrets(&server), ["sh.helm.release.v1.demo.v1"]);

    let out = helm(
        &server,
        &[
            "upgrade",
            "demo",
            chart,
            "--set",
            "message=bye",
            "--set",
            "replicas=2",
            "--wait",
            "--timeout",
            "90s",
        ],
    );
    assert!(out.contains("REVISION: 2"), "{out}");
    // Server-side apply removes what the chart no longer renders.
    assert_eq!(get(&server, CONFIG).1["data"], json!({"message": "bye"}));
    assert_eq!(get(&server, DEPLOYMENT).1["status"]["readyReplicas"], 2);

    let history = helm(&server, &["history", "demo", "-o", "json"]);
    let history: Value = serde_json::from_str(&history).unwrap();
    let statuses: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["superseded", "deployed"], "{history}");

    let out = helm(
        &server,
        &["rollback", "demo", "1", "--wait", "--timeout", "90s"],
    );
    assert!(out.contains("Rollback was a success"), "{out}");
    assert_eq!(get(&server, CONFIG).1["data"]["message"], "hello");
    let (_, deployment) = get(&server, DEPLOYMENT);
    assert_eq!(deployment["spec"]["replicas"], 1, "{deployment}");

    let out = helm(&server, &["test", "demo", "--timeout", "90s"]);
    assert!(out.contains("Phase:") && out.contains("Succeeded"), "{out}");
    let (_, test_pod) = get(&server, "/api/v1/namespaces/apps/pods/demo-test");
    assert_eq!(test_pod["status"]["phase"], "Succeeded", "{test_pod}");

    let out = helm(
        &server,
        &["uninstall", "demo", "--wait", "--timeout", "90s"],
    );
    assert!(out.contains("uninstalled"), "{out}");
    assert_eq!(get(&server, CONFIG).0, 404);
    assert_eq!(get(&server, DEPLOYMENT).0, 404);
    assert!(release_secrets(&server).is_empty());
}
