//! `componentstatuses` (deprecated in Kubernetes, still asked by `kubectl get cs` and `cluster-info dump`):
//! computed when read, never stored. `etcd-0` is the store, healthy when it answers a read; `scheduler` and
//! `controller-manager` are healthy when they run in this server's process, and unknown when they run apart.

use super::error::ApiError;
use super::{ApiServer, Target};
use serde_json::{Value, json};

/// The components, in the order Kubernetes lists them.
const COMPONENTS: [&str; 3] = ["scheduler", "controller-manager", "etcd-0"];

impl ApiServer {
    /// Every component's status.
    pub(super) fn component_statuses(&self) -> Vec<Value> {
        COMPONENTS
            .iter()
            .map(|name| self.component_status(name))
            .collect()
    }

    /// One component's status, if it is one.
    pub(super) fn component_status_named(
        &self,
        target: &Target,
        name: &str,
    ) -> Result<Value, ApiError> {
        if !COMPONENTS.contains(&name) {
            return Err(ApiError::NotFound {
                resource: super::error::qualified_resource(target.resource),
                name: name.to_owned(),
            });
        }
        Ok(self.component_status(name))
    }

    fn component_status(&self, name: &str) -> Value {
        let (status, message, error) = match name {
            "etcd-0" => match self.store.get("/registry/namespaces/default") {
                Ok(_) => (
                    "True",
                    r#"{"health":"true","reason":""}"#.to_owned(),
                    String::new(),
                ),
                Err(e) => ("False", String::new(), e.to_string()),
            },
            "scheduler" if self.in_process.scheduler => ("True", "ok".to_owned(), String::new()),
            "controller-manager" if self.in_process.controller_manager => {
                ("True", "ok".to_owned(), String::new())
            }
            _ => (
                "Unknown",
                String::new(),
                "runs in a process of its own, which this server does not check".to_owned(),
            ),
        };
        let mut condition = json!({"type": "Healthy", "status": status, "message": message});
        if !error.is_empty() {
            condition["error"] = error.into();
        }
        json!({"apiVersion": "v1", "kind": "ComponentStatus", "metadata": {"name": name},
               "conditions": [condition]})
    }
}
