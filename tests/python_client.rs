//! The official Kubernetes Python client (PyPI `kubernetes`) against the apiserver.

mod common;

use common::Server;
use std::path::Path;
use std::process::Command;

#[test]
fn the_official_python_client_creates_lists_scales_and_watches() {
    let server = Server::api_only();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/official_client.py");
    let output = Command::new("python3")
        .arg(&script)
        .env("KUBECONFIG", server.kubeconfig())
        .output()
        .expect("python3 runs (scripts/setup-test-tools installs the kubernetes package)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("python client: ok"), "{stdout}");
}
