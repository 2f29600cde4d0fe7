//! What wasmkube's control plane and node agent share, so that the agent does not build the control plane:
//! Kubernetes' resource arithmetic (quantities, pod requests, QoS classes, tolerations), the cluster's
//! certificate authority and join tokens, Go's duration format, the options of exec/attach/port-forward streams, the agent's usage
//! summary, the names of local volumes, node selector matching, and two client helpers (an Event recorder and
//! watch-fed caches).

pub mod cache;
pub mod csr;
pub mod events;
pub mod go_duration;
pub mod join_token;
pub mod local_volumes;
pub mod node_selection;
pub mod pki;
pub mod qos;
pub mod quantity;
pub mod resources;
pub mod stats;
pub mod stream_options;
pub mod tolerations;

/// The future of an entry point that other crates await (a component's run loop, the store's connect), boxed
/// by the crate that defines it. Rust compiles an async function's state machine, and everything generic it
/// polls, in the crate that polls it: awaited directly, the control plane's and the agent's futures were
/// compiled in the binary crate, alone after the crates beside each other that define them (its release build
/// took 103 s; 40 s since).
pub type EntryFuture<'a, T> = futures::future::BoxFuture<'a, T>;
