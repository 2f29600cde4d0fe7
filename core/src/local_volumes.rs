//! The names the control plane's local-path provisioner and the node agents agree on: which volumes the
//! provisioner made, and where a node keeps their directories.

/// The provisioner of node-local directories (k3s' local-path).
pub const LOCAL_PATH_PROVISIONER: &str = "wasmkube.io/local-path";
/// The annotation on a Node naming the directory its agent keeps local volumes in.
pub const LOCAL_PATH_ROOT: &str = "wasmkube.io/local-path-root";
/// The annotation naming the provisioner that made a volume.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
