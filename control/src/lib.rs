//! wasmkube's control plane: the revisioned store and the Kubernetes-compatible apiserver.

pub mod api;
pub mod apiserver;
pub mod store;
