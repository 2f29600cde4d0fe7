//! Issue 13's findings, each as a regression test run the way an attacker or a careless client would: a user
//! with `edit` in one namespace, huge numbers, deletes of system namespaces, impersonation headers, dry runs in
//! DELETE bodies, Pod Security.

mod common;

use common::{NodeAgent, PODS, Server, kubectl, post};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const TOKENS: &str = "alice-token,alice,1001\n";

/// A secured server (Node,RBAC) where alice has `edit` in namespace `team` only.
fn server_with_an_editor(dir: &Path, extra: &[&str]) -> Server {
    let tokens = dir.join("tokens.csv");
    std::fs::write(&tokens, TOKENS).unwrap();
    let tokens = tokens.display().to_string();
    let mut args = vec![
        "--authorization-mode",
        "Node,RBAC",
        "--token-auth-file",
        &tokens,
    ];
    args.extend_from_slice(extra);
    let server = Server::start_with(&args);
    post(
        &server,
        "/api/v1/namespaces",
        &json!({"metadata": {"name": "team"}}),
    );
    post(
        &server,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings",
        &json!({"metadata": {"name": "alice-edit"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]}),
    );
    server
}

fn pod(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

fn host_path_pod(name: &str) -> Value {
    pod(
        name,
        json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}],
               "containers": [{"name": "app", "image": "app.wasm",
                               "volumeMounts": [{"name": "root", "mountPath": "/host"}]}]}),
    )
}

#[test]
fn an_editor_cannot_mount_the_host_and_pod_security_speaks_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_an_editor(dir.path(), &[]);
    let alice = server.http_as(Some("alice-token"));
    let url = format!("{}/api/v1/namespaces/team/pods", server.url);

    let refused = alice
        .post(&url)
        .json(&host_path_pod("steal"))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 403);
    let status: Value = refused.json().unwrap();
    assert_eq!(
        status["message"],
        "pods \"steal\" is forbidden: violates PodSecurity \"baseline:latest\": hostPath volumes (volume \"root\")"
    );

    // kubectl shows the same words.
    let manifest = serde_json::to_string(&host_path_pod("steal2")).unwrap();
    let (ok, _, stderr) = kubectl(
        &server,
        Some("alice-token"),
        &["apply", "-n", "team", "-f", "-"],
        Some(&manifest),
    );
    assert!(!ok);
    assert!(
        stderr.contains("violates PodSecurity \"baseline:latest\": hostPath volumes"),
        "{stderr}"
    );

    // A Deployment is not refused, but warned about, as Kubernetes does for pod templates.
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": "app.wasm",
                                                       "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}}});
    let warned = alice
        .post(format!(
            "{}/apis/apps/v1/namespaces/team/deployments",
            server.url
        ))
        .json(&deployment)
        .send()
        .unwrap();
    assert_eq!(warned.status(), 201);
    let warning = warned.headers()["warning"].to_str().unwrap().to_owned();
    assert!(
        warning.contains("would violate PodSecurity \\\"baseline:latest\\\": hostPort (container \\\"app\\\" uses hostPort 8080)"),
        "{warning}"
    );

    // Only who may label the namespace privileged may allow it; alice (edit) may not change namespaces.
    let label =
        json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}});
    let patch = |client: &reqwest::blocking::Client| {
        client
            .patch(format!("{}/api/v1/namespaces/team", server.url))
            .header("content-type", "application/merge-patch+json")
            .json(&label)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(patch(&alice), 403);
    assert_eq!(patch(&server.http()), 200);
    let allowed = alice
        .post(&url)
        .json(&host_path_pod("now-allowed"))
        .send()
        .unwrap();
    assert_eq!(allowed.status(), 201, "{}", allowed.text().unwrap());

    // Back to baseline: the admin is warned about the pod already there, which keeps running.
    let relabel = server
        .http()
        .patch(format!("{}/api/v1/namespaces/team", server.url))
        .header("content-type", "application/merge-patch+json")
        .json(&json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}))
        .send()
        .unwrap();
    assert_eq!(relabel.status(), 200);
    let warnings: Vec<String> = relabel
        .headers()
        .get_all("warning")
        .iter()
        .map(|w| w.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        warnings[0],
        "299 - \"existing pods in namespace \\\"team\\\" violate the new PodSecurity enforce level \\\"baseline:latest\\\"\""
    );
    assert!(
        warnings.contains(&"299 - \"now-allowed: hostPath volumes\"".to_owned()),
        "{warnings:?}"
    );
    // The Deployment's pod, if its ReplicaSet made one while the namespace was privileged, has a host port.
    assert!(
        warnings[1..].iter().all(|w| w.contains("now-allowed")
            || w.starts_with("299 - \"web-") && w.ends_with(": hostPort\"")),
        "{warnings:?}"
    );
    assert_eq!(
        alice
            .get(format!("{url}/now-allowed"))
            .send()
            .unwrap()
            .status(),
        200
    );

    // A level Kubernetes does not know is refused on the namespace.
    let bad = server
        .http()
        .patch(format!("{}/api/v1/namespaces/team", server.url))
        .header("content-type", "application/merge-patch+json")
        .json(&json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "lenient"}}}))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 422);
    let status: Value = bad.json().unwrap();
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "metadata.labels[pod-security.kubernetes.io/enforce]"
    );
}

#[test]
fn restricted_namespaces_and_an_admission_configuration_file_set_the_level() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("admission.yaml");
    std::fs::write(
        &config,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: PodSecurity\n  \
         configuration:\n    apiVersion: pod-security.admission.config.k8s.io/v1\n    kind: PodSecurityConfiguration\n    \
         defaults: {enforce: restricted}\n    exemptions: {namespaces: [tools]}\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let server =
        Server::start_with(&["--no-scheduler", "--admission-control-config-file", &config]);
    let plain = pod(
        "plain",
        json!({"containers": [{"name": "app", "image": "app.wasm"}]}),
    );
    let refused = server
        .http()
        .post(format!("{}{PODS}", server.url))
        .json(&plain)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 403);
    let message = refused.json::<Value>().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains(
            "violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"
        ),
        "{message}"
    );
    post(
        &server,
        "/api/v1/namespaces",
        &json!({"metadata": {"name": "tools"}}),
    );
    post(
        &server,
        "/api/v1/namespaces/tools/pods",
        &host_path_pod("exempt"),
    );
    let hardened = pod(
        "hardened",
        json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
               "containers": [{"name": "app", "image": "app.wasm", "securityContext": {
                   "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}),
    );
    post(&server, PODS, &hardened);
}

#[test]
fn a_huge_grace_period_neither_panics_nor_leaves_a_pod_undeletable() {
    let server = Server::api_only();
    let http = server.http();
    post(
        &server,
        PODS,
        &pod(
            "slow",
            json!({"nodeName": "nowhere", "containers": [{"name": "app", "image": "app.wasm"}]}),
        ),
    );
    let url = format!("{}{PODS}/slow", server.url);
    for grace in [i64::MAX.to_string(), "-5".to_owned()] {
        let response = http
            .delete(format!("{url}?gracePeriodSeconds={grace}"))
            .send()
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "grace {grace}: {}",
            response.text().unwrap()
        );
    }
    let marked: Value = http.get(&url).send().unwrap().json().unwrap();
    assert_eq!(
        marked["metadata"]["deletionGracePeriodSeconds"], 1,
        "{marked}"
    );
    let gone = http
        .delete(&url)
        .json(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}))
        .send()
        .unwrap();
    assert_eq!(gone.status(), 200);
    assert_eq!(http.get(&url).send().unwrap().status(), 404);
    // The server is still up and answering.
    assert_eq!(
        http.get(format!("{}/healthz", server.url))
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn a_dry_run_delete_deletes_nothing_whether_it_comes_in_the_query_or_the_body() {
    let server = Server::api_only();
    let http = server.http();
    let maps = format!("{}/api/v1/namespaces/default/configmaps", server.url);
    for name in ["one", "two"] {
        post(
            &server,
            "/api/v1/namespaces/default/configmaps",
            &json!({"metadata": {"name": name}}),
        );
    }
    let body = json!({"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"]});
    let by_body = http
        .delete(format!("{maps}/one"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(by_body.status(), 200);
    let by_query = http
        .delete(format!("{maps}/one?dryRun=All"))
        .send()
        .unwrap();
    assert_eq!(by_query.status(), 200);
    let collection = http.delete(&maps).json(&body).send().unwrap();
    assert_eq!(collection.status(), 200);
    let left: Value = http.get(&maps).send().unwrap().json().unwrap();
    assert_eq!(left["items"].as_array().unwrap().len(), 2, "{left}");
    let unknown = http
        .delete(format!("{maps}/one?dryRun=Yes"))
        .send()
        .unwrap();
    assert_eq!(unknown.status(), 422);
    assert_eq!(
        http.get(format!("{maps}/one")).send().unwrap().status(),
        200
    );

    // kubectl's --dry-run=server (it sends the dry run in the body).
    let (ok, stdout, stderr) = kubectl(
        &server,
        None,
        &["delete", "configmap", "two", "--dry-run=server"],
        None,
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("(server dry run)"), "{stdout}");
    assert_eq!(
        http.get(format!("{maps}/two")).send().unwrap().status(),
        200
    );
}

#[test]
fn system_namespaces_cannot_be_deleted_and_namespaces_have_no_deletecollection() {
    let server = Server::api_only();
    let http = server.http();
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let response = http
            .delete(format!("{}/api/v1/namespaces/{name}", server.url))
            .send()
            .unwrap();
        assert_eq!(response.status(), 403, "{name}");
        let status: Value = response.json().unwrap();
        assert_eq!(
            status["message"],
            format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted")
        );
    }
    let all = http
        .delete(format!("{}/api/v1/namespaces", server.url))
        .send()
        .unwrap();
    assert_eq!(all.status(), 405);
    let (ok, _, stderr) = kubectl(&server, None, &["delete", "namespace", "kube-system"], None);
    assert!(
        !ok && stderr.contains("this namespace may not be deleted"),
        "{stderr}"
    );
    let list: Value = http
        .get(format!("{}/api/v1/namespaces", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 4, "{list}");
}

#[test]
fn impersonation_needs_the_impersonate_verb_and_then_acts_as_the_other_user() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_an_editor(dir.path(), &[]);
    // The admin as alice sees alice's view: refused outside her namespace.
    let (ok, _, stderr) = kubectl(
        &server,
        None,
        &["--as=alice", "get", "pods", "-n", "default"],
        None,
    );
    assert!(!ok);
    assert!(
        stderr.contains("User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{stderr}"
    );
    let (ok, _, stderr) = kubectl(
        &server,
        None,
        &["--as=alice", "get", "pods", "-n", "team"],
        None,
    );
    assert!(ok, "{stderr}");
    // alice may not become the admin.
    let (ok, _, stderr) = kubectl(
        &server,
        Some("alice-token"),
        &["--as=admin", "--as-group=system:masters", "get", "nodes"],
        None,
    );
    assert!(!ok);
    assert!(
        stderr.contains("users \"admin\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{stderr}"
    );
    // A group without a user is a bad request.
    let response = server
        .http()
        .get(format!("{}/api/v1/namespaces", server.url))
        .header("Impersonate-Group", "system:masters")
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[test]
fn health_and_version_answer_without_credentials_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_an_editor(dir.path(), &[]);
    let anonymous = server.http_as(None);
    for path in ["/healthz", "/livez", "/readyz", "/version"] {
        let response = anonymous
            .get(format!("{}{path}", server.url))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    for path in ["/api", "/api/v1/namespaces", "/apis"] {
        let response = anonymous
            .get(format!("{}{path}", server.url))
            .send()
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    // Wrong credentials are wrong everywhere.
    let wrong = server.http_as(Some("wrong-token"));
    let response = wrong.get(format!("{}/healthz", server.url)).send().unwrap();
    assert_eq!(response.status(), 401);
}

#[test]
fn a_deleted_node_comes_back_when_its_agent_next_reports() {
    let server = Server::start();
    let agent = NodeAgent::start(&server, "comes-back");
    let url = format!("{}/api/v1/nodes/{}", server.url, agent.name);
    let http = server.http();
    assert_eq!(http.delete(&url).send().unwrap().status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http.get(&url).send().unwrap().status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node never came back: {}",
            std::fs::read_to_string(agent.data_dir.join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Regression (issue 13): a frozen agent's pods stayed Ready, so Services kept sending them traffic.
#[test]
fn the_pods_of_a_frozen_agent_are_marked_not_ready_until_it_thaws() {
    let server = Server::start_with(&["--node-monitor-grace-period-seconds", "2"]);
    let agent = NodeAgent::start(&server, "frozen");
    let mut pod = common::echo_pod("held", "frozen");
    // Tolerated for a while: the pod is not evicted, only marked not ready.
    pod["spec"]["tolerations"] = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                         "effect": "NoExecute", "tolerationSeconds": 300}]);
    common::create_pod(&server, pod);
    common::wait_for(&server, "held", "Ready", |p| {
        common::ready_status(p) == "True"
    });
    agent.signal("STOP");
    let marked = common::wait_for(&server, "held", "not Ready", |p| {
        common::ready_status(p) == "False"
    });
    assert!(marked.to_string().contains("NodeNotReady"), "{marked}");
    agent.signal("CONT");
    common::wait_for(&server, "held", "Ready again", |p| {
        common::ready_status(p) == "True"
    });
}

/// Regression (issue 14's first fix): a DELETE without preconditions raced any controller writing the object
/// and answered 409; it is tried again on the new state, and only preconditions make a 409.
#[test]
fn a_delete_without_preconditions_wins_over_concurrent_writes() {
    let server = Server::api_only();
    let maps = format!("{}/api/v1/namespaces/default/configmaps", server.url);
    let names: Vec<String> = (0..40).map(|i| format!("busy-{i}")).collect();
    for name in &names {
        post(
            &server,
            "/api/v1/namespaces/default/configmaps",
            &json!({"metadata": {"name": name}, "data": {"n": "0"}}),
        );
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (http, maps, names, stop) =
                (server.http(), maps.clone(), names.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    for name in &names {
                        n += 1;
                        let _ = http
                            .patch(format!("{maps}/{name}"))
                            .header("content-type", "application/merge-patch+json")
                            .json(&json!({"data": {"n": format!("{w}-{n}")}}))
                            .send();
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let http = server.http();
    let mut codes = Vec::new();
    for name in &names {
        codes.push(
            http.delete(format!("{maps}/{name}"))
                .send()
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for writer in writers {
        writer.join().unwrap();
    }
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    // With a stale resourceVersion precondition, 409.
    post(
        &server,
        "/api/v1/namespaces/default/configmaps",
        &json!({"metadata": {"name": "pinned"}}),
    );
    let stale = http
        .delete(format!("{maps}/pinned"))
        .json(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": "1"}}))
        .send()
        .unwrap();
    assert_eq!(stale.status(), 409);
}

/// Regression (issue 13): a pod without a memory limit could take the node down. Past 90% of the guests'
/// budget the agent evicts, BestEffort first, and the Burstable pod keeps running.
#[test]
fn under_memory_pressure_the_agent_evicts_best_effort_pods_first() {
    let server = Server::start();
    let _agent = NodeAgent::start_with(&server, "tight", &["--guest-memory", "200Mi"]);
    let hog = format!(
        "file://{}",
        common::wasm_app("wasm32-wasip1", "memory-hog").display()
    );
    let pod = |name: &str, args: &[&str], resources: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"nodeName": "tight", "restartPolicy": "Never",
                        "containers": [{"name": "hog", "image": hog, "args": args, "resources": resources}]}})
    };
    // Burstable: 120 MiB at once, then idle.
    common::create_pod(
        &server,
        pod(
            "steady",
            &["0", "120"],
            json!({"requests": {"memory": "128Mi"}}),
        ),
    );
    common::wait_for(&server, "steady", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    // BestEffort: 8 MiB more every second, without end.
    common::create_pod(&server, pod("grower", &["1000"], json!({})));
    let evicted = common::wait_for(&server, "grower", "Evicted", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(
        evicted["status"]["reason"], "Evicted",
        "{}",
        evicted["status"]
    );
    assert!(
        evicted["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("The node was low on resource: memory."),
        "{}",
        evicted["status"]
    );
    common::wait_for_events(&server, "grower", &["Evicted"]);
    let steady = common::get_pod(&server, "steady").unwrap();
    assert_eq!(steady["status"]["phase"], "Running", "{}", steady["status"]);
}
