//! Pure API logic, free of IO: the served resource types, defaulting and validation, selectors, patches and
//! tables.

pub mod bootstrap_policy;
pub mod csr;
pub mod disruption;
pub mod impersonation;
pub mod kinds;
pub mod managed_fields;
pub mod node_authorizer;
pub mod patch;
pub mod pod_security;
pub mod protobuf;
pub mod qos;
pub mod quantity;
pub mod quota;
pub mod rbac;
pub mod request_info;
pub mod resources;
pub mod schedule;
pub mod schema;
pub mod selector;
pub mod service_account_tokens;
pub mod stream_options;
pub mod table;
pub mod tokens;
pub mod validation;
