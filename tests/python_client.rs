//! The official Kubernetes Python client (PyPI `kubernetes`) against the apiserver.

mod common;

use common::Server;
use std::path::Path;

#[test]
fn the_official_python_client_creates_lists_scales_and_watches() {
    let server = Server::api_only();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/official_client.py");
    common::python(&server, &[script.as_os_str()], "python client: ok");
}
