//! wasmkube's control plane: the revisioned store and the Kubernetes-compatible apiserver.

pub mod store;
