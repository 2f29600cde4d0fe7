//! wasmkube's control plane: the revisioned store, the Kubernetes-compatible apiserver, the scheduler and the
//! controllers.

pub mod api;
pub mod apiserver;
pub mod cache;
pub mod controllers;
pub mod endpoint_reconciler;
pub mod events;
pub mod leader_election;
pub mod pki;
pub mod scheduler;
pub mod store;
