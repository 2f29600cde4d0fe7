//! A node's network: pod addresses from its podCIDR, routes to other nodes' pods, the sandbox that keeps
//! guests from the host and the control plane, the sockets bound on this machine, the Services as the node sees
//! them, and the Service proxy.

pub mod addresses;
pub mod local_sockets;
pub mod proxy;
pub mod routes;
pub mod sandbox;
pub mod services;
