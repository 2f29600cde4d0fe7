//! The wasmkube CLI's kubectl-like verbs against a real server.

mod common;

use common::{NodeAgent, Server, wasmkube};
use std::path::Path;

fn manifests() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .display()
        .to_string()
}

#[test]
fn apply_get_describe_and_delete_work_like_kubectl() {
    let server = Server::start();
    let (ok, out, err) = wasmkube(&server, &["apply", "-f", &manifests()]);
    assert!(ok, "{err}");
    assert!(out.contains("deployment.apps/hello created"), "{out}");
    assert!(out.contains("configmap/hello-settings created"), "{out}");
    let (ok, out, _) = wasmkube(&server, &["apply", "-f", &manifests()]);
    assert!(ok);
    assert!(out.contains("deployment.apps/hello unchanged"), "{out}");

    let (ok, out, err) = wasmkube(&server, &["get", "deploy"]);
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert_eq!(rows[1][0], "hello");

    let (_, out, _) = wasmkube(&server, &["get", "ns"]);
    assert!(
        out.contains("kube-system") && out.contains("Active"),
        "{out}"
    );
    let (_, out, _) = wasmkube(&server, &["get", "configmaps", "-A", "-o", "wide"]);
    assert!(out.starts_with("NAMESPACE"), "{out}");
    let (_, out, _) = wasmkube(&server, &["get", "deployments.apps", "hello", "-o", "name"]);
    assert_eq!(out.trim(), "deployment.apps/hello");
    let (_, out, _) = wasmkube(&server, &["get", "cm", "hello-settings", "-o", "yaml"]);
    assert!(out.contains("greeting: hello from a ConfigMap"), "{out}");
    let (_, out, _) = wasmkube(&server, &["get", "svc", "-l", "app=nothing"]);
    assert!(out.is_empty());

    let (ok, out, _) = wasmkube(&server, &["describe", "deployment", "hello"]);
    assert!(ok);
    assert!(
        out.contains("Name:         hello") && out.contains("Events:"),
        "{out}"
    );

    let (ok, out, _) = wasmkube(&server, &["delete", "-f", &manifests()]);
    assert!(ok);
    assert!(out.contains("deployment.apps \"hello\" deleted"), "{out}");
}

#[test]
fn bad_input_gets_a_one_line_error_and_a_failing_exit() {
    let server = Server::start();
    for args in [
        &["get", "widgets"][..],
        &["get", "deploy", "missing"],
        &["apply", "-f", "/no/such/file.yaml"],
        &["delete", "pods"],
        &["get", "pods", "-o", "table-of-doom"],
        &["get", "pods", "-l", "in ("],
    ] {
        let (ok, out, err) = wasmkube(&server, args);
        assert!(!ok, "{args:?} must fail: {out}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    let (_, _, err) = wasmkube(&server, &["get", "deploy", "missing"]);
    assert_eq!(err.trim(), "error: deployments.apps \"missing\" not found");
}

#[test]
fn the_server_shuts_down_cleanly_on_sigterm_even_with_open_watches() {
    let mut server = Server::start();
    let watch = std::net::TcpStream::connect(server.url.trim_start_matches("http://")).unwrap();
    use std::io::Write;
    (&watch)
        .write_all(b"GET /api/v1/namespaces?watch=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let exited = server.terminate(std::time::Duration::from_secs(10));
    assert_eq!(
        exited,
        Some(true),
        "the server must exit 0 within 10 s of SIGTERM"
    );
}

#[test]
fn scale_and_rollout_status_history_restart_undo_pause_and_resume() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "cli-node");
    common::wasm_app("wasm32-wasip2", "hello_http");
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/hello-deployment.yaml");
    let (ok, _, err) = wasmkube(&server, &["apply", "-f", &hello.display().to_string()]);
    assert!(ok, "{err}");
    let status = |server: &Server| {
        let (ok, out, err) = wasmkube(
            server,
            &["rollout", "status", "deployment/hello", "--timeout", "60s"],
        );
        assert!(ok, "{err}");
        assert!(
            out.trim_end()
                .ends_with("deployment \"hello\" successfully rolled out"),
            "{out}"
        );
    };
    status(&server);

    let (ok, out, err) = wasmkube(&server, &["scale", "deploy/hello", "--replicas", "1"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "deployment.apps/hello scaled");
    status(&server);
    // A scale-down is no rollout (kubectl's status says rolled out at once too): the extra pods go after.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, out, _) = wasmkube(&server, &["get", "deploy", "hello"]);
        if out.lines().nth(1).and_then(|l| l.split_whitespace().nth(1)) == Some("1/1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{out}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let (ok, out, _) = wasmkube(&server, &["rollout", "restart", "deployment", "hello"]);
    assert!(ok);
    assert_eq!(out.trim(), "deployment.apps/hello restarted");
    status(&server);
    let history = |server: &Server| -> Vec<String> {
        let (_, out, _) = wasmkube(server, &["rollout", "history", "deployment/hello"]);
        out.lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    };
    assert_eq!(history(&server), ["1", "2"]);
    let (ok, out, err) = wasmkube(&server, &["rollout", "undo", "deployment/hello"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "deployment.apps/hello rolled back");
    status(&server);
    assert_eq!(history(&server), ["2", "3"], "revision 1 came back as 3");

    let (ok, out, _) = wasmkube(&server, &["rollout", "pause", "deployment/hello"]);
    assert!(ok && out.trim() == "deployment.apps/hello paused", "{out}");
    let (ok, out, _) = wasmkube(&server, &["rollout", "resume", "deployment/hello"]);
    assert!(ok && out.trim() == "deployment.apps/hello resumed", "{out}");

    for args in [
        &["rollout", "status", "pod/hello"][..],
        &["rollout", "undo", "deployment/hello", "--to-revision", "42"],
        &["scale", "configmap/hello-settings", "--replicas", "2"],
        &["scale", "deployment/missing", "--replicas", "2"],
        &["rollout", "status", "deployment/hello", "--timeout", "soon"],
    ] {
        let (ok, _, err) = wasmkube(&server, args);
        assert!(!ok, "{args:?} must fail");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
}

#[test]
fn the_misbehaving_examples_are_valid_manifests() {
    let server = Server::api_only();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/misbehaving");
    let (ok, out, err) = wasmkube(&server, &["apply", "-f", &dir.display().to_string()]);
    assert!(ok, "{err}");
    for pod in ["crash", "cpu-hog", "memory-hog", "log-flood"] {
        assert!(out.contains(&format!("pod/{pod} created")), "{out}");
    }
}

#[test]
fn apply_wait_prints_progress_until_ready_and_fails_on_a_timeout_with_the_reason() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "wait-node");
    common::wasm_app("wasm32-wasip2", "hello_http");
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/hello-deployment.yaml");
    let (ok, out, err) = wasmkube(
        &server,
        &[
            "apply",
            "-f",
            &hello.display().to_string(),
            "--wait",
            "--timeout",
            "60s",
        ],
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "deployment.apps/hello created", "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("deployment.apps/hello: Waiting for deployment")),
        "{out}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("deployment.apps/hello: deployment \"hello\" successfully rolled out"),
        "{out}"
    );
    let pods = common::get_json(
        &server,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dhello",
    );
    let ready = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| common::ready_status(p) == "True")
        .count();
    assert_eq!(ready, 3, "{pods}");

    // A pod whose image is not there never gets ready: the wait says why, and gives up at its timeout.
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("missing.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: missing\nspec:\n  containers:\n  - name: app\n    image: /no/such/app.wasm\n",
    )
    .unwrap();
    let (ok, out, err) = wasmkube(
        &server,
        &[
            "apply",
            "-f",
            &manifest.display().to_string(),
            "--wait",
            "--timeout",
            "3s",
        ],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("pod/missing: Waiting for pod \"missing\": container \"app\" is ErrImagePull")
            || out.contains("container \"app\" is ImagePullBackOff"),
        "{out}"
    );
    assert_eq!(
        err.trim(),
        "error: timed out after 3s waiting for pod/missing",
        "{err}"
    );
    // While it waits it shows its pods' image pulls, with their size in bytes.
    let image = common::wasm_app("wasm32-wasip2", "hello_http");
    let unready = dir.path().join("unready.yaml");
    std::fs::write(
        &unready,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: unready\nspec:\n  containers:\n  - name: app\n    image: file://{}\n    readinessProbe:\n      tcpSocket:\n        port: 9\n",
            image.display()
        ),
    )
    .unwrap();
    let (ok, out, _) = wasmkube(
        &server,
        &[
            "apply",
            "-f",
            &unready.display().to_string(),
            "--wait",
            "--timeout",
            "3s",
        ],
    );
    assert!(!ok, "{out}");
    let size = std::fs::metadata(&image).unwrap().len();
    assert!(
        out.lines()
            .any(|l| l.starts_with("pod/unready: Successfully pulled image")
                && l.ends_with(&format!("Image size: {size} bytes."))),
        "{out}"
    );
    let (ok, _, err) = wasmkube(
        &server,
        &[
            "apply",
            "-f",
            &manifest.display().to_string(),
            "--timeout",
            "3s",
        ],
    );
    assert!(!ok);
    assert!(err.contains("--wait"), "{err}");
}
