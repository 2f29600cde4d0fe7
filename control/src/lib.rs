//! wasmkube's control plane: the revisioned store, the Kubernetes-compatible apiserver and the scheduler.

pub mod api;
pub mod apiserver;
pub mod scheduler;
pub mod store;
