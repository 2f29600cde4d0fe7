//! A secured control plane (the default: HTTPS, Node and RBAC authorization; here with a `--token-auth-file`) as
//! its users meet it:
//! anonymous and wrong credentials get 401; users get what their RoleBindings and ClusterRoleBindings grant,
//! in kubectl's and our CLI's words when refused; node agents change only their own Node, Lease and pods and
//! read only the Secrets and ConfigMaps of their pods.

mod common;

use common::{NodeAgent, PODS, Server, echo_pod, kubectl, wait_for, wait_until, wasmkube};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

const TOKENS: &str = "alice-token,alice,1001\n\
bob-token,bob,1002,\"ops,other\"\n\
n1-token,system:node:auth-n1,n1,system:nodes\n\
n2-token,system:node:auth-n2,n2,system:nodes\n\
prom-token,prometheus,1003,system:monitoring\n";

fn secured_server(dir: &Path) -> Server {
    let tokens = dir.join("tokens.csv");
    std::fs::write(&tokens, TOKENS).unwrap();
    let tokens = tokens.display().to_string();
    Server::start_with(&[
        "--authorization-mode",
        "Node,RBAC",
        "--token-auth-file",
        &tokens,
    ])
}

const POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: dev}
---
apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: dev}
data: {mode: dev}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: prod}
data: {mode: prod}
---
apiVersion: v1
kind: Secret
metadata: {name: db, namespace: dev}
stringData: {password: s3cret}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-edits-dev, namespace: dev}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: ops-view}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: ops}]
"#;

fn config_map(namespace: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {namespace}}}\ndata: {{a: b}}\n"
    )
}

#[test]
fn anonymous_and_wrong_tokens_get_401_and_users_get_what_their_bindings_grant() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured_server(dir.path());
    assert!(server.url.starts_with("https://"), "{}", server.url);

    // No credentials, or wrong ones: 401 with a Status (but health and version answer anyone without
    // credentials, as Kubernetes' system:public-info-viewer allows).
    for (token, paths) in [
        (None, &["/api/v1/namespaces/default/pods", "/apis"][..]),
        (
            Some("wrong-token"),
            &["/api/v1/namespaces/default/pods", "/version", "/apis"][..],
        ),
    ] {
        for path in paths {
            let response = server
                .http_as(token)
                .get(format!("{}{path}", server.url))
                .send()
                .unwrap();
            assert_eq!(response.status(), 401, "{path} with {token:?}");
            let status: Value = response.json().unwrap();
            assert_eq!(status["reason"], "Unauthorized");
            assert_eq!(status["kind"], "Status");
        }
    }
    let (ok, _, err) = kubectl(&server, Some("wrong-token"), &["get", "pods"], None);
    assert!(!ok);
    assert!(err.contains("You must be logged in to the server"), "{err}");

    // The admin of the kubeconfig sets up namespaces, objects and bindings.
    let (ok, out, err) = kubectl(&server, None, &["apply", "-f", "-"], Some(POLICY));
    assert!(ok, "{out}{err}");

    // alice may edit dev only.
    let alice = Some("alice-token");
    let (ok, out, err) = kubectl(&server, alice, &["get", "configmaps", "-n", "dev"], None);
    assert!(ok && out.contains("settings"), "{out}{err}");
    let (ok, out, err) = kubectl(
        &server,
        alice,
        &["get", "secrets", "-n", "dev", "db", "-o", "name"],
        None,
    );
    assert!(ok && out.contains("secret/db"), "{out}{err}");
    let (ok, out, err) = kubectl(
        &server,
        alice,
        &["apply", "-f", "-"],
        Some(&config_map("dev", "mine")),
    );
    assert!(ok, "{out}{err}");
    let (ok, _, err) = kubectl(&server, alice, &["get", "configmaps", "-n", "prod"], None);
    assert!(!ok);
    assert!(
        err.contains(r#"Error from server (Forbidden): configmaps is forbidden: User "alice" cannot list resource "configmaps" in API group "" in the namespace "prod""#),
        "{err}"
    );
    let (ok, _, err) = kubectl(
        &server,
        alice,
        &["get", "configmap", "settings", "-n", "prod"],
        None,
    );
    assert!(!ok);
    assert!(
        err.contains(r#"configmaps "settings" is forbidden: User "alice" cannot get resource "configmaps" in API group "" in the namespace "prod""#),
        "{err}"
    );
    let (ok, _, err) = kubectl(
        &server,
        alice,
        &["apply", "-f", "-"],
        Some(&config_map("prod", "mine")),
    );
    assert!(!ok);
    assert!(err.contains("forbidden"), "{err}");
    let (ok, _, err) = kubectl(&server, alice, &["delete", "namespace", "prod"], None);
    assert!(!ok);
    assert!(
        err.contains(r#"namespaces "prod" is forbidden: User "alice" cannot delete resource "namespaces" in API group "" in the namespace "prod""#),
        "{err}"
    );
    let (ok, _, err) = kubectl(&server, alice, &["get", "nodes"], None);
    assert!(!ok);
    assert!(
        err.contains(r#"nodes is forbidden: User "alice" cannot list resource "nodes" in API group "" at the cluster scope"#),
        "{err}"
    );
    // Nothing of prod changed.
    let (ok, out, _) = kubectl(
        &server,
        None,
        &["get", "configmaps", "-n", "prod", "-o", "name"],
        None,
    );
    assert!(
        ok && !out.contains("mine") && out.contains("settings"),
        "{out}"
    );

    // bob's group ops may read everything but Secrets, everywhere, and change nothing.
    let bob = Some("bob-token");
    let (ok, out, err) = kubectl(&server, bob, &["get", "configmaps", "-A"], None);
    assert!(
        ok && out.contains("prod") && out.contains("dev"),
        "{out}{err}"
    );
    let (ok, _, err) = kubectl(&server, bob, &["get", "secrets", "-n", "dev"], None);
    assert!(!ok);
    assert!(
        err.contains(r#"User "bob" cannot list resource "secrets""#),
        "{err}"
    );
    let (ok, _, err) = kubectl(
        &server,
        bob,
        &["apply", "-f", "-"],
        Some(&config_map("dev", "bobs")),
    );
    assert!(!ok);
    assert!(err.contains("forbidden"), "{err}");

    // The same rules through our own CLI: one line, non-zero exit.
    let (ok, out, err) = wasmkube(
        &server,
        &["--token", "alice-token", "get", "configmaps", "-n", "dev"],
    );
    assert!(ok && out.contains("settings"), "{out}{err}");
    let (ok, _, err) = wasmkube(
        &server,
        &["--token", "alice-token", "get", "configmaps", "-n", "prod"],
    );
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(r#"User "alice" cannot list resource "configmaps""#),
        "{err}"
    );
    let (ok, _, err) = wasmkube(&server, &["--token", "wrong-token", "get", "pods"]);
    assert!(!ok);
    assert!(err.contains("Unauthorized"), "{err}");
}

#[test]
fn a_node_changes_only_its_own_objects_and_reads_only_what_its_pods_use() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured_server(dir.path());
    let admin = server.http();
    let post = |path: &str, body: Value| {
        let response = admin
            .post(format!("{}{path}", server.url))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().unwrap());
    };
    post(
        "/api/v1/namespaces/default/secrets",
        json!({"metadata": {"name": "db"}, "stringData": {"password": "s3cret"}}),
    );
    post(
        "/api/v1/namespaces/default/secrets",
        json!({"metadata": {"name": "unused"}, "stringData": {"password": "other"}}),
    );
    // A pod on auth-n1 that takes its password from the Secret db; one on auth-n2, whose agent never runs.
    let mut web = echo_pod("web", "auth-n1");
    web["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}));
    post(PODS, web);
    post(PODS, echo_pod("theirs", "auth-n2"));

    // The agent, with only its node's token, registers, renews its Lease, reads the Secret, runs the pod and
    // reports its status.
    let _agent = NodeAgent::start_as(&server, "auth-n1", Some("n1-token"));
    wait_for(&server, "web", "Running", |pod| {
        pod["status"]["phase"] == "Running"
    });

    let node = server.http_as(Some("n1-token"));
    let url = |path: &str| format!("{}{path}", server.url);
    let refused = |response: reqwest::blocking::Response, message: &str| {
        assert_eq!(response.status(), 403);
        let status: Value = response.json().unwrap();
        assert_eq!(status["reason"], "Forbidden");
        let text = status["message"].as_str().unwrap_or_default().to_owned();
        assert!(text.contains(message), "{text}");
    };
    let get = |path: &str| node.get(url(path)).send().unwrap();
    assert_eq!(get("/api/v1/namespaces/default/secrets/db").status(), 200);
    refused(
        get("/api/v1/namespaces/default/secrets/unused"),
        r#"secrets "unused" is forbidden: User "system:node:auth-n1" cannot get resource "secrets" in API group "" in the namespace "default": no relationship found between node 'auth-n1' and this object"#,
    );
    refused(
        get("/api/v1/namespaces/default/secrets"),
        "cannot list resource \"secrets\"",
    );
    refused(
        get("/api/v1/namespaces/default/pods/web/log"),
        "cannot get resource \"pods/log\"",
    );
    assert_eq!(get("/api/v1/nodes").status(), 200);
    assert_eq!(
        get("/api/v1/pods?fieldSelector=spec.nodeName%3Dauth-n1").status(),
        200
    );

    let merge = |path: &str, body: Value| {
        node.patch(url(path))
            .header("Content-Type", "application/merge-patch+json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let labelled = json!({"metadata": {"labels": {"touched": "yes"}}});
    assert_eq!(
        merge("/api/v1/nodes/auth-n1", labelled.clone()).status(),
        200
    );
    refused(
        merge("/api/v1/nodes/auth-n2/status", labelled.clone()),
        r#"nodes "auth-n2" is forbidden: User "system:node:auth-n1" cannot patch resource "nodes/status""#,
    );
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    assert_eq!(
        merge("/api/v1/namespaces/default/pods/web/status", ready.clone()).status(),
        200
    );
    refused(
        merge("/api/v1/namespaces/default/pods/theirs/status", ready),
        r#"pods "theirs" is forbidden"#,
    );
    refused(
        node.delete(url("/api/v1/namespaces/default/pods/theirs"))
            .send()
            .unwrap(),
        r#"cannot delete resource "pods""#,
    );
    refused(
        node.post(url("/api/v1/nodes"))
            .json(&json!({"metadata": {"name": "auth-n2"}}))
            .send()
            .unwrap(),
        r#"nodes is forbidden: User "system:node:auth-n1" cannot create resource "nodes""#,
    );
    let lease = |name: &str| json!({"metadata": {"name": name, "namespace": "kube-node-lease"}, "spec": {"holderIdentity": name}});
    refused(
        node.post(url(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        ))
        .json(&lease("auth-n2"))
        .send()
        .unwrap(),
        r#"leases.coordination.k8s.io is forbidden: User "system:node:auth-n1" cannot create resource "leases" in API group "coordination.k8s.io" in the namespace "kube-node-lease""#,
    );
    refused(
        node.post(url(PODS))
            .json(&echo_pod("sneaky", "auth-n1"))
            .send()
            .unwrap(),
        r#"cannot create resource "pods""#,
    );
    // The other node's own token may do for auth-n2 what auth-n1's may not.
    let other = server.http_as(Some("n2-token"));
    let response = other
        .post(url(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        ))
        .json(&lease("auth-n2"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().unwrap());
}

#[test]
fn issued_tokens_authenticate_as_their_user_until_revoked_or_expired() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured_server(dir.path());
    let (ok, out, err) = kubectl(&server, None, &["apply", "-f", "-"], Some(POLICY));
    assert!(ok, "{out}{err}");
    let issue = |args: &[&str]| {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        let (ok, out, err) = wasmkube(&server, &all);
        assert!(ok, "{out}{err}");
        out.trim().to_owned()
    };

    // A user token for carol in group ops: what ops may do (view), as carol.
    let carol = issue(&[
        "--user",
        "carol",
        "--group",
        "ops",
        "--description",
        "for carol",
    ]);
    let (ok, out, err) = kubectl(&server, Some(&carol), &["get", "configmaps", "-A"], None);
    assert!(ok && out.contains("prod"), "{out}{err}");
    let (ok, _, err) = kubectl(
        &server,
        Some(&carol),
        &["get", "secrets", "-n", "dev"],
        None,
    );
    assert!(!ok);
    assert!(
        err.contains(r#"User "carol" cannot list resource "secrets""#),
        "{err}"
    );

    // A bootstrap token is a system:bootstrap:ID user, allowed nothing by these bindings.
    let bootstrap = issue(&[]);
    let id = bootstrap.split('.').next().unwrap().to_owned();
    let (ok, _, err) = kubectl(&server, Some(&bootstrap), &["get", "pods"], None);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            r#"User "system:bootstrap:{id}" cannot list resource "pods""#
        )),
        "{err}"
    );

    // Listed by ID, never with their secrets.
    let (ok, out, err) = wasmkube(&server, &["token", "list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("carol") && out.contains("for carol") && out.contains(&id),
        "{out}"
    );
    assert!(!out.contains(&carol) && !out.contains(&bootstrap), "{out}");

    // Revoked: 401 from then on. A wrong secret for a known ID is 401 too.
    let (ok, out, err) = wasmkube(&server, &["token", "delete", &carol]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = kubectl(&server, Some(&carol), &["get", "configmaps", "-A"], None);
    assert!(!ok && err.contains("Unauthorized"), "{err}");
    let forged = format!("{id}.0000000000000000");
    let response = server
        .http_as(Some(&forged))
        .get(format!("{}/api/v1/pods", server.url))
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);

    // Expired: 401.
    let brief = issue(&["--user", "dave", "--ttl", "1s"]);
    let status = |token: &str| {
        server
            .http_as(Some(token))
            .get(format!("{}/version", server.url))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(status(&brief), 200);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(status(&brief), 401);
    // ... and the token cleaner deletes its Secret.
    let dave = format!("user-token-{}", brief.split('.').next().unwrap());
    wait_until(
        &server,
        "/api/v1/namespaces/kube-system/secrets",
        "without dave's expired token",
        |list| {
            list["items"]
                .as_array()
                .is_some_and(|items| items.iter().all(|s| s["metadata"]["name"] != dave.as_str()))
        },
    );

    // Bad input: one line and a non-zero exit.
    let (ok, _, err) = wasmkube(&server, &["token", "create", "--ttl", "soon"]);
    assert!(
        !ok && err.contains("--ttl \"soon\" is not a duration"),
        "{err}"
    );
    let (ok, _, err) = wasmkube(&server, &["token", "delete", "zzzzzz"]);
    assert!(!ok && err.contains("not found"), "{err}");
}

/// Runs `wasmkube node` to its end (a failed join); (success, stderr).
fn failed_join(server: &Server, token: &str, name: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .args([
            "--server",
            &server.url,
            "--token",
            token,
            "node",
            "--name",
            name,
            "--port",
            "0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_node_joins_with_a_join_token_alone_and_keeps_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured_server(dir.path());
    // Anyone may fetch the CA: a joining node checks it against its token.
    let response = server
        .http_as(None)
        .get(format!("{}/cacerts", server.url))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().unwrap(),
        std::fs::read_to_string(server.ca_file()).unwrap()
    );

    let (ok, out, err) = wasmkube(&server, &["token", "create", "--print-join-command"]);
    assert!(ok, "{out}{err}");
    let join = out
        .split_whitespace()
        .find(|word| word.starts_with("wk1:"))
        .unwrap_or_else(|| panic!("no join token in {out}"))
        .to_owned();
    assert!(
        out.starts_with(&format!(
            "wasmkube node --server {} --token wk1:",
            server.url
        )),
        "{out}"
    );

    // The node joins with the URL and the token only: its certificate is requested, approved and kept.
    let mut agent = NodeAgent::start_as(&server, "edge-1", Some(&join));
    let csrs: Value = server
        .http()
        .get(format!(
            "{}/apis/certificates.k8s.io/v1/certificatesigningrequests",
            server.url
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let csr = &csrs["items"][0];
    let bootstrap_id = join.rsplit(':').next().unwrap().split('.').next().unwrap();
    assert_eq!(
        csr["spec"]["username"],
        format!("system:bootstrap:{bootstrap_id}")
    );
    assert_eq!(
        csr["spec"]["signerName"],
        "kubernetes.io/kube-apiserver-client-kubelet"
    );
    assert_eq!(csr["status"]["conditions"][0]["type"], "Approved");
    assert_eq!(csr["status"]["conditions"][0]["reason"], "AutoApproved");
    assert!(csr["status"]["certificate"].is_string());
    use std::os::unix::fs::PermissionsExt;
    let key = std::fs::metadata(agent.data_dir.join("pki/node.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);

    // As system:node:edge-1 it runs what is bound to it.
    common::create_pod(&server, echo_pod("on-edge", "edge-1"));
    wait_for(&server, "on-edge", "Running", |pod| {
        pod["status"]["phase"] == "Running"
    });

    // Its logs reach kubectl through the apiserver, the one client the agent's endpoint serves: a direct
    // request without a certificate, or with the node's own, is refused during the TLS handshake.
    let (ok, out, err) = kubectl(&server, None, &["logs", "on-edge"], None);
    assert!(ok && out.contains("listening on"), "{out}{err}");
    let node: Value = server
        .http()
        .get(format!("{}/api/v1/nodes/edge-1", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_i64()
        .unwrap();
    let logs = format!("https://127.0.0.1:{port}/containerLogs/default/on-edge/echo");
    let anyone = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    assert!(
        anyone.get(&logs).send().is_err(),
        "the agent served a client without a certificate"
    );
    let pki = agent.data_dir.join("pki");
    let node_identity = format!(
        "{}{}",
        std::fs::read_to_string(pki.join("node.key")).unwrap(),
        std::fs::read_to_string(pki.join("node.crt")).unwrap()
    );
    let as_node = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .identity(reqwest::Identity::from_pem(node_identity.as_bytes()).unwrap())
        .build()
        .unwrap();
    assert!(
        as_node.get(&logs).send().is_err(),
        "the agent served a node's certificate"
    );
    // The node's certificate is good for the API, where it is system:node:edge-1.
    let status = as_node
        .get(format!("{}/api/v1/namespaces/default/secrets", server.url))
        .send()
        .unwrap();
    assert_eq!(status.status(), 403);
    assert!(status.text().unwrap().contains("system:node:edge-1"));

    // The bootstrap token can go: a restarted agent uses its certificate.
    let (ok, out, err) = wasmkube(&server, &["token", "delete", bootstrap_id]);
    assert!(ok, "{out}{err}");
    agent.restart(&server);

    // A revoked token, or a token that trusts another CA, joins nothing: one line, non-zero exit.
    let (ok, err) = failed_join(&server, &join, "edge-2");
    assert!(!ok);
    assert!(err.contains("Unauthorized"), "{err}");
    let (ok, out, err) = wasmkube(&server, &["token", "create", "--print-join-command"]);
    assert!(ok, "{out}{err}");
    let fresh = out
        .split_whitespace()
        .find(|w| w.starts_with("wk1:"))
        .unwrap()
        .to_owned();
    let mut forged = fresh.clone();
    forged.replace_range(
        4..8,
        if &fresh[4..8] == "0000" {
            "1111"
        } else {
            "0000"
        },
    );
    let (ok, err) = failed_join(&server, &forged, "edge-3");
    assert!(!ok);
    assert!(
        err.contains("is not the one the join token trusts"),
        "{err}"
    );
    let (ok, err) = failed_join(&server, "wk1:nonsense", "edge-4");
    assert!(!ok);
    assert!(err.contains("is not a join token"), "{err}");
    let nodes: Value = server
        .http()
        .get(format!("{}/api/v1/nodes", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(nodes["items"].as_array().map(Vec::len), Some(1), "{nodes}");
}

#[test]
fn a_namespace_admin_grants_only_what_they_hold() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured_server(dir.path());
    let setup = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-admin, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]
"#;
    let (ok, out, err) = kubectl(&server, None, &["apply", "-f", "-"], Some(setup));
    assert!(ok, "{out}{err}");
    let alice = Some("alice-token");
    let binding = |name: &str, role: &str| {
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {name}, namespace: team}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}\n\
             subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}}]\n"
        )
    };
    let role = |name: &str, resource: &str| {
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: {name}, namespace: team}}\n\
             rules: [{{apiGroups: [\"\"], resources: [{resource}], verbs: [get, list]}}]\n"
        )
    };
    // What she holds in team, she may hand on.
    let (ok, out, err) = kubectl(
        &server,
        alice,
        &["apply", "-f", "-"],
        Some(&binding("bob-views", "view")),
    );
    assert!(ok, "{out}{err}");
    let (ok, out, err) = kubectl(
        &server,
        alice,
        &["apply", "-f", "-"],
        Some(&role("reads-secrets", "secrets")),
    );
    assert!(ok, "{out}{err}");
    // Not what she lacks: cluster-admin's powers, or nodes.
    let (ok, _, err) = kubectl(
        &server,
        alice,
        &["apply", "-f", "-"],
        Some(&binding("bob-rules", "cluster-admin")),
    );
    assert!(!ok);
    assert!(
        err.contains(
            r#"rolebindings.rbac.authorization.k8s.io "bob-rules" is forbidden: user "alice""#
        ) && err.contains("is attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    let (ok, _, err) = kubectl(
        &server,
        alice,
        &["apply", "-f", "-"],
        Some(&role("reads-nodes", "nodes")),
    );
    assert!(!ok);
    assert!(err.contains(r#"Resources:["nodes"]"#), "{err}");
    // bob got exactly what alice gave: view in team.
    let (ok, out, err) = kubectl(
        &server,
        Some("bob-token"),
        &["get", "pods", "-n", "team"],
        None,
    );
    assert!(ok, "{out}{err}");
    let (ok, _, _) = kubectl(
        &server,
        Some("bob-token"),
        &["get", "secrets", "-n", "team"],
        None,
    );
    assert!(!ok);
}

/// kubectl 1.37 (protobuf reviews) as the users of a secured cluster.
fn kubectl_1_37(server: &Server, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(common::test_tool("kubectl-1.37/kubectl"));
    command.arg("--kubeconfig").arg(server.kubeconfig());
    if let Some(token) = token {
        command.arg(format!("--token={token}"));
    }
    command.args(args);
    let output = common::output_with_stdin(command, None);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `kubectl auth can-i` (and `--list`, and `--as`), `kubectl auth whoami`, SubjectAccessReview and TokenReview
/// answer as RBAC decides, without storing anything.
#[test]
fn reviews_answer_can_i_whoami_and_token_questions_as_rbac_decides() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured_server(dir.path());
    let (ok, out, err) = kubectl(&server, None, &["apply", "-f", "-"], Some(POLICY));
    assert!(ok, "{out}{err}");
    let alice = Some("alice-token");

    for (args, expected) in [
        (
            &["auth", "can-i", "create", "configmaps", "-n", "dev"][..],
            "yes",
        ),
        (
            &["auth", "can-i", "get", "secrets/db", "-n", "dev"][..],
            "yes",
        ),
        (
            &["auth", "can-i", "create", "configmaps", "-n", "prod"][..],
            "no",
        ),
        (&["auth", "can-i", "create", "clusterroles"][..], "no"),
    ] {
        let (ok, out, err) = kubectl_1_37(&server, alice, args);
        assert_eq!(out.trim(), expected, "{args:?}: {err}");
        assert_eq!(ok, expected == "yes", "kubectl exits 1 for no: {args:?}");
    }
    // The admin asks as alice.
    let (ok, out, _) = kubectl_1_37(
        &server,
        None,
        &[
            "auth",
            "can-i",
            "list",
            "configmaps",
            "-n",
            "prod",
            "--as",
            "alice",
        ],
    );
    assert!(!ok && out.trim() == "no", "{out}");

    let (ok, out, err) = kubectl_1_37(&server, alice, &["auth", "can-i", "--list", "-n", "dev"]);
    assert!(ok, "{err}");
    let rows = |resource: &str| {
        out.lines()
            .filter(|l| l.split_whitespace().next() == Some(resource))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let configmaps = rows("configmaps");
    assert!(
        configmaps.contains("create")
            && configmaps.contains("delete")
            && configmaps.contains("get"),
        "{out}"
    );
    assert!(
        !rows("selfsubjectaccessreviews.authorization.k8s.io").is_empty(),
        "{out}"
    );
    assert!(
        rows("clusterroles.rbac.authorization.k8s.io").is_empty(),
        "{out}"
    );

    let (ok, out, err) = kubectl_1_37(
        &server,
        Some("bob-token"),
        &["auth", "whoami", "-o", "json"],
    );
    assert!(ok, "{err}");
    let whoami: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(whoami["kind"], "SelfSubjectReview");
    assert_eq!(whoami["status"]["userInfo"]["username"], "bob");
    assert_eq!(
        whoami["status"]["userInfo"]["groups"],
        json!(["ops", "other", "system:authenticated"])
    );

    // An admin's reviews about others; nothing is stored, and malformed reviews are 422s.
    let post = |path: &str, body: Value| {
        let response = server
            .http()
            .post(format!("{}{path}", server.url))
            .json(&body)
            .send()
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().unwrap(),
        )
    };
    let reviews = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let (code, review) = post(
        reviews,
        json!({"spec": {"user": "alice", "resourceAttributes":
            {"namespace": "dev", "verb": "delete", "resource": "configmaps"}}}),
    );
    assert_eq!(
        (code, &review["status"]["allowed"]),
        (201, &json!(true)),
        "{review}"
    );
    let (_, review) = post(
        reviews,
        json!({"spec": {"groups": ["ops"], "resourceAttributes":
            {"namespace": "prod", "verb": "delete", "resource": "configmaps"}}}),
    );
    assert_eq!(review["status"]["allowed"], false, "{review}");
    let (code, status) = post(reviews, json!({"spec": {"user": "alice"}}));
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.resourceAttributes"
    );
    let (code, status) = post(
        "/apis/authorization.k8s.io/v1/namespaces/dev/localsubjectaccessreviews",
        json!({"spec": {"user": "alice", "resourceAttributes": {"namespace": "prod", "verb": "get", "resource": "pods"}}}),
    );
    assert_eq!(code, 400, "{status}");

    let tokens = "/apis/authentication.k8s.io/v1/tokenreviews";
    let (_, review) = post(tokens, json!({"spec": {"token": "alice-token"}}));
    assert_eq!(review["status"]["authenticated"], true, "{review}");
    assert_eq!(review["status"]["user"]["username"], "alice");
    let (_, review) = post(tokens, json!({"spec": {"token": "nobody"}}));
    assert_eq!(review["status"]["authenticated"], false, "{review}");
    let listed = server
        .http()
        .get(format!("{}{reviews}", server.url))
        .send()
        .unwrap();
    assert_eq!(listed.status(), 405, "reviews are created, never listed");
}

/// ServiceAccounts: every namespace gets `default`; `kubectl create token` issues a signed, expiring,
/// audience-bound token that authenticates as `system:serviceaccount:NS:NAME` under RBAC until the account
/// (or the pod it is bound to) is gone.
#[test]
fn service_account_tokens_authenticate_as_their_account_until_it_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured_server(dir.path());
    let (ok, out, err) = kubectl(&server, None, &["apply", "-f", "-"], Some(POLICY));
    assert!(ok, "{out}{err}");
    common::wait_until(
        &server,
        "/api/v1/namespaces/dev/serviceaccounts/default",
        "made by the controller",
        |sa| sa["metadata"]["uid"].is_string(),
    );
    let admin = |args: &[&str]| {
        let (ok, out, err) = kubectl_1_37(&server, None, args);
        assert!(ok, "{args:?}: {err}");
        out.trim().to_owned()
    };
    admin(&["create", "serviceaccount", "builder", "-n", "dev"]);
    let token = admin(&["create", "token", "builder", "-n", "dev", "--duration=15m"]);
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let bearer = Some(token.as_str());

    let (ok, _, err) = kubectl_1_37(&server, bearer, &["get", "configmaps", "-n", "dev"]);
    assert!(!ok);
    assert!(
        err.contains(
            r#"User "system:serviceaccount:dev:builder" cannot list resource "configmaps""#
        ),
        "{err}"
    );
    admin(&[
        "create",
        "rolebinding",
        "builder-edits",
        "--clusterrole=edit",
        "--serviceaccount=dev:builder",
        "-n",
        "dev",
    ]);
    let (ok, out, err) = kubectl_1_37(&server, bearer, &["get", "configmaps", "-n", "dev"]);
    assert!(ok && out.contains("settings"), "{out}{err}");
    let (ok, out, err) = kubectl_1_37(&server, bearer, &["auth", "whoami", "-o", "json"]);
    assert!(ok, "{err}");
    let whoami: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        whoami["status"]["userInfo"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:dev",
            "system:authenticated"
        ])
    );
    let review = server
        .http()
        .post(format!(
            "{}/apis/authentication.k8s.io/v1/tokenreviews",
            server.url
        ))
        .json(&json!({"spec": {"token": token}}))
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    assert_eq!(
        review["status"]["user"]["username"],
        "system:serviceaccount:dev:builder"
    );

    // A token for another audience is not one for the API; lifetimes under 10 minutes are refused.
    let vault = admin(&[
        "create",
        "token",
        "builder",
        "-n",
        "dev",
        "--audience=vault",
    ]);
    let (ok, _, err) = kubectl_1_37(&server, Some(&vault), &["get", "configmaps", "-n", "dev"]);
    assert!(!ok && err.contains("Unauthorized"), "{err}");
    // Hostile values: wrong types and absurd lifetimes are Kubernetes-worded 4xx answers.
    let token_path = format!(
        "{}/api/v1/namespaces/dev/serviceaccounts/builder/token",
        server.url
    );
    for (spec, code) in [
        (json!({"expirationSeconds": "600"}), 400),
        (json!({"audiences": [7]}), 400),
        (
            json!({"expirationSeconds": 9_223_372_036_854_775_807_i64}),
            422,
        ),
        (
            json!({"boundObjectRef": {"kind": "Pod", "name": "../../etc"}}),
            404,
        ),
        (
            json!({"boundObjectRef": {"kind": "Node", "name": "n"}}),
            422,
        ),
    ] {
        let response = server
            .http()
            .post(&token_path)
            .json(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}))
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), code, "{spec}");
        assert_eq!(response.json::<Value>().unwrap()["kind"], "Status");
    }
    let (ok, _, err) = kubectl_1_37(
        &server,
        None,
        &["create", "token", "builder", "-n", "dev", "--duration=1m"],
    );
    assert!(
        !ok && err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );

    // A token bound to a pod ends with the pod; any token of an account ends with the account, even if
    // one of the same name comes back.
    admin(&["run", "worker", "-n", "dev", "--image=hello.wasm"]);
    let bound = admin(&[
        "create",
        "token",
        "builder",
        "-n",
        "dev",
        "--bound-object-kind=Pod",
        "--bound-object-name=worker",
    ]);
    let (ok, _, err) = kubectl_1_37(&server, Some(&bound), &["get", "configmaps", "-n", "dev"]);
    assert!(ok, "{err}");
    admin(&[
        "delete",
        "pod",
        "worker",
        "-n",
        "dev",
        "--grace-period=0",
        "--force",
    ]);
    let (ok, _, err) = kubectl_1_37(&server, Some(&bound), &["get", "configmaps", "-n", "dev"]);
    assert!(!ok && err.contains("Unauthorized"), "{err}");
    admin(&["delete", "serviceaccount", "builder", "-n", "dev"]);
    admin(&["create", "serviceaccount", "builder", "-n", "dev"]);
    let (ok, _, err) = kubectl_1_37(&server, bearer, &["get", "configmaps", "-n", "dev"]);
    assert!(!ok && err.contains("Unauthorized"), "{err}");
}

/// Runs `kubectl exec POD -- ARGS` as the admin; its stdout.
fn exec_in(server: &Server, pod: &str, args: &[&str]) -> String {
    let mut full = vec!["exec", pod, "--"];
    full.extend_from_slice(args);
    let (ok, out, err) = kubectl(server, None, &full, None);
    assert!(ok, "exec {args:?}: {err}");
    out
}

#[test]
fn pods_get_their_service_account_token_mounted_and_call_the_api_under_rbac() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured_server(dir.path());
    let _node = NodeAgent::start_as(&server, "auth-n1", Some("n1-token"));
    let toolbox = format!(
        "file://{}",
        common::wasm_app("wasm32-wasip1", "toolbox").display()
    );
    let pod = |name: &str, extra: Value| {
        let mut spec = json!({"nodeName": "auth-n1",
                              "containers": [{"name": "tools", "image": toolbox, "command": ["repl"]}]});
        for (key, value) in extra.as_object().into_iter().flatten() {
            spec[key] = value.clone();
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
    };
    let created = common::post(&server, PODS, &pod("tools", json!({})));
    // ServiceAccount admission: the default account, its token volume mounted where clients look.
    assert_eq!(created["spec"]["serviceAccountName"], "default");
    let volume = &created["spec"]["volumes"][0];
    assert!(
        volume["name"]
            .as_str()
            .unwrap()
            .starts_with("kube-api-access-"),
        "{volume}"
    );
    assert_eq!(
        created["spec"]["containers"][0]["volumeMounts"][0],
        json!({"name": volume["name"], "readOnly": true,
               "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
    );
    wait_for(&server, "tools", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert_eq!(
        exec_in(&server, "tools", &["ls", dir]),
        "ca.crt\nnamespace\ntoken\n"
    );
    assert_eq!(
        exec_in(&server, "tools", &["read", &format!("{dir}/namespace")]),
        "default"
    );
    assert_eq!(
        exec_in(&server, "tools", &["read", &format!("{dir}/ca.crt")]),
        std::fs::read_to_string(server.ca_file()).unwrap()
    );
    let token = exec_in(&server, "tools", &["read", &format!("{dir}/token")]);
    // The token is the pod's account, under RBAC: nothing until a binding grants it.
    let as_pod = server.http_as(Some(&token));
    let pods = format!("{}{PODS}", server.url);
    let refused = as_pod.get(&pods).send().unwrap();
    assert_eq!(refused.status(), 403);
    let message = refused.json::<Value>().unwrap()["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap_or_default()
            .contains("system:serviceaccount:default:default"),
        "{message}"
    );
    let (ok, _, err) = kubectl(
        &server,
        None,
        &[
            "create",
            "rolebinding",
            "pods-view",
            "--clusterrole=view",
            "--serviceaccount=default:default",
        ],
        None,
    );
    assert!(ok, "{err}");
    let listed = as_pod.get(&pods).send().unwrap();
    assert_eq!(listed.status(), 200);

    // Opting out, and an account that does not exist.
    let opted_out = common::post(
        &server,
        PODS,
        &pod("quiet", json!({"automountServiceAccountToken": false})),
    );
    assert!(opted_out["spec"]["volumes"].is_null(), "{opted_out}");
    let missing = server
        .http()
        .post(&pods)
        .json(&pod("lost", json!({"serviceAccountName": "missing"})))
        .send()
        .unwrap();
    assert_eq!(missing.status(), 403);
    let status: Value = missing.json().unwrap();
    assert_eq!(
        status["message"],
        "pods \"lost\" is forbidden: error looking up service account default/missing: serviceaccount \
         \"missing\" not found"
    );
}

#[test]
fn the_apiserver_serves_its_metrics_to_admins_and_the_monitoring_group_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured_server(dir.path());
    let (ok, out, err) = kubectl(
        &server,
        None,
        &["apply", "-f", "-"],
        Some(&config_map("default", "counted")),
    );
    assert!(ok, "{out}{err}");
    let (ok, _, err) = kubectl(&server, None, &["get", "pods"], None);
    assert!(ok, "{err}");
    let (ok, _, _) = kubectl(&server, Some("alice-token"), &["get", "pods"], None);
    assert!(!ok, "alice may not list the default namespace's pods");

    let (ok, metrics, err) = kubectl(&server, None, &["get", "--raw", "/metrics"], None);
    assert!(ok, "{err}");
    for line in [
        // kubectl apply reads the object first (404), then creates it (as the controllers create theirs).
        r#"apiserver_request_total{verb="GET",group="",version="v1",resource="configmaps",subresource="",scope="resource",component="apiserver",dry_run="",code="404"} "#,
        r#"apiserver_request_total{verb="POST",group="",version="v1",resource="configmaps",subresource="",scope="resource",component="apiserver",dry_run="",code="201"} "#,
        r#"apiserver_request_total{verb="LIST",group="",version="v1",resource="pods",subresource="",scope="namespace",component="apiserver",dry_run="",code="403"} 1"#,
        "# TYPE apiserver_request_duration_seconds histogram",
        r#"apiserver_request_duration_seconds_bucket{le="60.0",verb="POST",group="",version="v1",resource="configmaps",subresource="",scope="resource",component="apiserver",dry_run=""} "#,
        "# TYPE apiserver_longrunning_requests gauge",
        // The controllers' work queues, with client-go's names.
        r#"workqueue_adds_total{name="namespace"} "#,
        "# TYPE workqueue_depth gauge",
        // The events sent to watchers (the controllers of this process watch namespaces).
        r#"apiserver_watch_events_total{group="",version="v1",resource="namespaces"} "#,
        // The store's requests, by kube-apiserver's storage metric.
        r#"etcd_request_duration_seconds_count{operation="create",type="/registry/configmaps/"} "#,
        r#"etcd_request_duration_seconds_count{operation="list",type="/registry/pods/"} "#,
        "# TYPE wasmkube_store_compacted_revision gauge",
        // The embedded store's commits, by etcd's name for its backend's.
        "etcd_disk_backend_commit_duration_seconds_bucket{le=\"0.001\"} ",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let (ok, version, err) = kubectl(
        &server,
        None,
        &[
            "get",
            "configmap",
            "counted",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
        None,
    );
    assert!(ok, "{err}");
    let revision: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wasmkube_store_revision "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no store revision in {metrics}"));
    assert!(
        revision >= version.parse::<u64>().unwrap(),
        "{revision} < {version}"
    );

    for (token, code) in [("prom-token", 200), ("alice-token", 403)] {
        let response = server
            .http_as(Some(token))
            .get(format!("{}/metrics", server.url))
            .send()
            .unwrap();
        assert_eq!(response.status(), code, "{token}");
    }
}
