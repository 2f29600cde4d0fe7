//! wasmkube's node agent: runs the pods bound to its node as WebAssembly with wasmtime.

pub mod addresses;
pub mod admission;
pub mod agent;
pub mod cpu;
pub mod endpoint_tls;
pub mod eviction;
pub mod exec;
pub mod http_serve;
pub mod images;
pub mod join;
pub mod local_sockets;
pub mod log_server;
pub mod logs;
pub mod memory;
pub mod pod;
pub mod port_forward;
pub mod probes;
pub mod proxy;
pub mod pull_secrets;
pub mod routes;
pub mod running;
pub mod runtime;
pub mod safe_path;
pub mod sandbox;
pub mod services;
pub mod status;
