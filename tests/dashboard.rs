//! The web dashboard under `/ui/`: its login (one-time codes exchanged for sessions that are the user's, RBAC
//! and all), and the page itself in a real headless Chromium driven through WebDriver.

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::Browser;
use common::{NodeAgent, Server, post, wait_until};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;

const TOKENS: &str = "node-token,system:node:ui-node,n1,system:nodes\nalice-token,alice,1001\n";

fn secured_server(dir: &Path) -> Server {
    let tokens = dir.join("tokens.csv");
    std::fs::write(&tokens, TOKENS).unwrap();
    Server::start_with(&[
        "--authorization-mode",
        "Node,RBAC",
        "--token-auth-file",
        tokens.to_str().unwrap(),
    ])
}

fn login_code(server: &Server, token: Option<&str>) -> reqwest::blocking::Response {
    server
        .http_as(token)
        .post(format!("{}/ui/login-codes", server.url))
        .json(&json!({}))
        .send()
        .unwrap()
}

/// `POST /ui/login` with a body; the status and the answer.
fn exchange(server: &Server, body: String) -> (u16, Value) {
    let response = server
        .http_as(None)
        .post(format!("{}/ui/login", server.url))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .unwrap();
    (
        response.status().as_u16(),
        response.json().unwrap_or_default(),
    )
}

fn status_of(server: &Server, token: &str, path: &str) -> u16 {
    server
        .http_as(Some(token))
        .get(format!("{}{path}", server.url))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn a_login_code_works_once_for_its_own_user_and_a_session_ends_at_logout() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured_server(dir.path());
    for object in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "alice-views-team", "namespace": "team"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]}),
    ] {
        let path = match object["kind"].as_str() {
            Some("Namespace") => "/api/v1/namespaces".to_owned(),
            _ => "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings".to_owned(),
        };
        post(&server, &path, &object);
    }

    // The page is anyone's (it holds no data), kept to its own scripts; a login code is not.
    let page = server
        .http_as(None)
        .get(format!("{}/ui/", server.url))
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    assert!(page.text().unwrap().contains("<title>wasmkube</title>"));
    let script = server
        .http_as(None)
        .get(format!("{}/ui/app.js", server.url))
        .send()
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(login_code(&server, None).status(), 401);

    // Alice's code logs in as Alice: what she may see, no more.
    let answer: Value = {
        let response = login_code(&server, Some("alice-token"));
        assert_eq!(response.status(), 201);
        response.json().unwrap()
    };
    assert_eq!(answer["user"], "alice");
    let code = answer["code"].as_str().unwrap().to_owned();
    assert_eq!(
        status_of(&server, &code, "/api/v1/namespaces/team/pods"),
        401,
        "a login code is no bearer token"
    );
    let (status, session) = exchange(&server, json!({ "code": code }).to_string());
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["user"], "alice");
    let token = session["token"].as_str().unwrap().to_owned();
    assert_eq!(
        status_of(&server, &token, "/api/v1/namespaces/team/pods"),
        200
    );
    assert_eq!(
        status_of(&server, &token, "/api/v1/namespaces/default/pods"),
        403
    );
    assert_eq!(status_of(&server, &token, "/api/v1/secrets"), 403);
    let (again, _) = exchange(&server, json!({ "code": code }).to_string());
    assert_eq!(again, 401, "a code works once");

    // Logging out revokes the session, but never a token the user logged in with themselves.
    let logout = |token: &str| {
        server
            .http_as(Some(token))
            .delete(format!("{}/ui/session", server.url))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(logout("alice-token"), 204);
    assert_eq!(
        status_of(&server, "alice-token", "/api/v1/namespaces/team/pods"),
        200
    );
    assert_eq!(logout(&token), 204);
    assert_eq!(
        status_of(&server, &token, "/api/v1/namespaces/team/pods"),
        401
    );

    // A code that expired, or a wrong secret for a live one, logs nobody in; the right one does, once.
    let hand_made = |id: &str, secret: &str, expiration: &str| {
        let sha = Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        post(
            &server,
            "/api/v1/namespaces/kube-system/secrets",
            &json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": format!("login-code-{id}")},
                    "type": "wasmkube.io/dashboard-login-code",
                    "stringData": {"token-id": id, "token-secret-sha256": sha, "user": "alice",
                                   "groups": "", "expiration": expiration}}),
        );
    };
    hand_made("old000", "0123456789abcdef", "2020-01-01T00:00:00Z");
    hand_made("new000", "0123456789abcdef", "2100-01-01T00:00:00Z");
    for (code, expected) in [
        ("old000.0123456789abcdef", 401),
        ("new000.0123456789abcdeX", 401),
        ("new000.fedcba9876543210", 401),
        ("new000.0123456789abcdef", 200),
        ("new000.0123456789abcdef", 401),
    ] {
        let (status, body) = exchange(&server, json!({ "code": code }).to_string());
        assert_eq!(status, expected, "{code}: {body}");
    }

    // Bad requests are refused with a Status, never served.
    for (body, expected) in [
        ("not json".to_owned(), 400),
        (json!({"token": "x"}).to_string(), 400),
        (json!({"code": "x".repeat(4096)}).to_string(), 400),
        (json!({"code": "../../etc"}).to_string(), 401),
    ] {
        let (status, answer) = exchange(&server, body.clone());
        assert_eq!(status, expected, "{body:.60}: {answer}");
        assert_eq!(answer["kind"], "Status", "{answer}");
    }

    // `wasmkube dashboard` prints the admin's link.
    let (ok, stdout, stderr) = common::wasmkube(&server, &["dashboard"]);
    assert!(ok, "{stderr}");
    let link = stdout.trim();
    let prefix = format!("{}/ui/#code=", server.url);
    assert!(link.starts_with(&prefix), "{link}");
    assert!(stderr.contains("as admin once"), "{stderr}");
    let (status, session) = exchange(
        &server,
        json!({ "code": &link[prefix.len()..] }).to_string(),
    );
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["user"], "admin");
}

#[test]
fn in_a_browser_the_dashboard_logs_in_shows_pods_turn_running_and_scales_a_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let server = secured_server(dir.path());
    let _node = NodeAgent::start_as(&server, "ui-node", Some("node-token"));
    let browser = Browser::start();

    // The login link opens the page logged in, and is gone from the address bar.
    let (ok, link, stderr) = common::wasmkube(&server, &["dashboard"]);
    assert!(ok, "{stderr}");
    browser.goto(link.trim());
    browser.wait_for_count("#whoami", "the user's name", |_| {
        browser.text("#whoami") == "admin"
    });
    assert!(!browser.url().contains("code="), "{}", browser.url());
    // Over HTTP/2: the page's watches share one connection (HTTP/1.1 would give it six).
    assert_eq!(
        browser.script("return performance.getEntriesByType('navigation')[0].nextHopProtocol"),
        "h2"
    );

    let hello = format!(
        "file://{}",
        common::wasm_app("wasm32-wasip2", "hello_http").display()
    );
    post(
        &server,
        "/apis/apps/v1/namespaces/default/deployments",
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hello"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "hello"}},
                         "template": {"metadata": {"labels": {"app": "hello"}},
                                      "spec": {"containers": [{"name": "hello", "image": hello,
                                                               "ports": [{"containerPort": 8080}]}]}}}}),
    );
    let running = r#"#pods tr[data-pod^="default/hello-"][data-status="Running"]"#;
    browser.wait_for_count(running, "2 Running hello pods", |n| n == 2);

    // Scale from the Deployments view (reached with its key), confirming in the dialog.
    browser.press("2");
    let row = r#"tr[data-deployment="default/hello"]"#;
    browser.wait_for(&format!(r#"{row}[data-rollout="Complete"]"#));
    browser.fill(&format!("{row} input[data-scale]"), "3");
    browser.click(&format!(r#"{row} button[data-action="scale"]"#));
    browser.click("#confirm-ok");
    wait_until(
        &server,
        "/apis/apps/v1/namespaces/default/deployments/hello",
        "scaled to 3 by the page",
        |d| d["spec"]["replicas"] == 3,
    );
    browser.press("4");
    browser.wait_for_count(running, "3 Running hello pods", |n| n == 3);

    // The node's card shows the three pods placed on it.
    browser.press("1");
    browser.wait_for_count(
        r#"article[data-node="ui-node"] .chip.ok[data-pod^="default/hello-"]"#,
        "the node's 3 hello pods",
        |n| n == 3,
    );
    // Its CPU comes from metrics.k8s.io while a pod on the card keeps the keyboard focus.
    let card = r#"article[data-node="ui-node"]"#;
    browser.script(&format!(
        "document.querySelector('{card} .chip').focus(); return 1"
    ));
    browser.wait_for_script(
        &format!("return /[0-9]+m of/.test(document.querySelector('{card}').textContent)"),
        "the node's CPU use",
    );
    assert_eq!(
        browser.script("return document.activeElement.classList.contains('chip')"),
        true
    );
    let screenshot = browser.screenshot("dashboard-nodes");
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 1000);

    // A Service of the pods shows its 3 endpoints and, while it is called, the requests per second they answer.
    let service = post(
        &server,
        "/api/v1/namespaces/default/services",
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"},
                "spec": {"selector": {"app": "hello"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    );
    let url = format!("http://{}/", service["spec"]["clusterIP"].as_str().unwrap());
    let calling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let caller = {
        let calling = calling.clone();
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            while calling.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = client.get(&url).send();
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    browser.press("3");
    let row = r#"#services tr[data-service="default/hello"]"#;
    browser.wait_for_script(
        &format!(
            "const row = document.querySelector('{row}'); \
             return !!row && row.cells[5].textContent === '3' && parseFloat(row.cells[6].textContent) > 0"
        ),
        "the Service's 3 endpoints and its requests per second",
    );
    browser.screenshot("dashboard-services");
    calling.store(false, std::sync::atomic::Ordering::Relaxed);
    caller.join().unwrap();

    // Each pod's CPU and memory come from metrics.k8s.io.
    browser.press("4");
    browser.wait_for_script(
        "return [...document.querySelectorAll('#pods tr')].every(row => \
           /^[0-9]+m$/.test(row.cells[6].textContent) && /[0-9](B|Ki|Mi)$/.test(row.cells[7].textContent))",
        "CPU and memory for every pod",
    );
    browser.screenshot("dashboard-pods");

    // The cluster's Events, newest first: the Deployment's scaling and the scheduler's placements.
    browser.press("5");
    browser.wait_for_script(
        "const rows = [...document.querySelectorAll('#events tr')]; \
         return rows.some(r => r.dataset.reason === 'ScalingReplicaSet' && r.cells[4].textContent === 'Deployment/hello') \
           && rows.some(r => r.dataset.reason === 'Scheduled' && r.cells[4].textContent.startsWith('Pod/hello-'))",
        "the Deployment's and the scheduler's Events",
    );
    browser.screenshot("dashboard-events");
    browser.press("4");

    // A pod's details show its Events; deleting it from the page (confirmed) has the Deployment replace it.
    let victim = browser
        .script("return document.querySelector('#pods tr[data-pod]').dataset.pod")
        .as_str()
        .unwrap()
        .to_owned();
    browser.click(&format!(r#"#pods tr[data-pod="{victim}"] td"#));
    browser.wait_for_count("#pod-events tr", "the pod's Events", |n| n >= 2);
    assert!(
        browser.text("#pod-events").contains("Started"),
        "{}",
        browser.text("#pod-events")
    );
    browser.click(&format!(
        r#"#pods tr[data-pod="{victim}"] button[data-action="delete"]"#
    ));
    browser.click("#confirm-ok");
    browser.wait_for_count(
        &format!(r#"#pods tr[data-pod="{victim}"]"#),
        "the pod gone",
        |n| n == 0,
    );
    browser.wait_for_count(running, "3 Running hello pods again", |n| n == 3);
}
