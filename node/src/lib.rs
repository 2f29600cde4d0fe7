//! wasmkube's node agent: runs the pods bound to its node as WebAssembly with wasmtime.
//!
//! `agent` registers the node and reconciles its pods; `pod/` runs one pod (containers, status, probes, images,
//! admission and eviction); `runtime/` is wasmtime (the engine, compiled modules, wasi:http serving, CPU and memory
//! budgets); `network/` holds pod addresses, routes, the sandbox, Services and the proxy; `logs/` the containers'
//! logs and their endpoint; `streams/` exec, attach and port-forward; `join` and `endpoint_tls` the node's
//! credentials; `data_dir` the layout of the agent's directory.

pub mod agent;
pub mod data_dir;
pub mod endpoint_tls;
pub mod join;
pub mod logs;
pub mod metrics;
pub mod network;
pub mod pod;
pub mod runtime;
pub mod stats;
pub mod streams;
