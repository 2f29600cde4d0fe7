//! The agent's streaming endpoints, as a kubelet's: exec, attach and port-forward over WebSocket or SPDY, and the
//! registry of container runs they reach.

pub mod exec;
pub mod port_forward;
pub mod running;
pub mod spdy;
pub mod streaming;
