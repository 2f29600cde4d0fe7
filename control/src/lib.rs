//! wasmkube's control plane: the revisioned store, the Kubernetes-compatible apiserver, the scheduler and the
//! controllers.

pub mod api;
pub mod apiserver;
pub mod component_metrics;
pub mod controllers;
pub mod endpoint_reconciler;
pub mod informers;
pub mod leader_election;
pub mod scheduler;
pub mod store;

pub use wasmkube_core::{cache, events, pki};
