//! Pure API logic, free of IO: the served resource types, defaulting and validation, selectors, patches and
//! tables.

pub mod autoscaling;
pub mod bootstrap_policy;
pub mod conversion;
pub mod disruption;
pub mod impersonation;
pub mod kinds;
pub mod managed_fields;
pub mod node_authorizer;
pub mod patch;
pub mod pod_security;
pub mod priority;
pub mod protobuf;
pub mod quota;
pub mod rbac;
pub mod request_info;
pub mod resource_metrics;
pub mod resources;
pub mod schedule;
pub mod schema;
pub mod selector;
pub mod service_account_tokens;
pub mod storage;
pub mod table;
pub mod tokens;
pub mod validation;
pub mod value;

pub use wasmkube_core::{csr, qos, quantity, stream_options};
