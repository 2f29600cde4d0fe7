//! RBAC's escalation check on writes of roles and bindings, as Kubernetes makes it: a user may write a Role or
//! ClusterRole only with permissions they hold themselves (or with the `escalate` verb on it), and a binding only
//! to a role whose permissions they hold (or with the `bind` verb on that role). The server's own writes and
//! `system:masters` pass. `api::rbac` decides; this gathers the policy.

use super::ApiServer;
use super::auth::{AuthorizationMode, REQUESTER};
use super::error::ApiError;
use crate::api::rbac::{MASTERS, Request, ResourceRequest, User};
use crate::api::resources::ResourceType;
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde::Deserialize;
use serde_json::Value;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

impl ApiServer {
    /// Refuses a role or binding about to be written that would grant its writer more than they hold.
    pub(super) fn check_rbac_escalation(
        &self,
        resource: &ResourceType,
        object: &Value,
    ) -> Result<(), ApiError> {
        if resource.group != RBAC_GROUP || !self.auth.modes.contains(&AuthorizationMode::Rbac) {
            return Ok(());
        }
        let Ok(user) = REQUESTER.try_with(User::clone) else {
            return Ok(());
        };
        if user.groups.iter().any(|g| g == MASTERS) {
            return Ok(());
        }
        let namespace = object["metadata"]["namespace"].as_str();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let policy = self.rbac_policy_in(namespace)?;
        let (rules, exempting_verb, role_plural, role_name) = match resource.kind {
            "Role" | "ClusterRole" => {
                let rules: Vec<PolicyRule> =
                    Vec::<PolicyRule>::deserialize(&object["rules"]).unwrap_or_default();
                (rules, "escalate", resource.plural, name.to_owned())
            }
            _ => {
                let kind = object["roleRef"]["kind"].as_str().unwrap_or_default();
                let role = object["roleRef"]["name"].as_str().unwrap_or_default();
                let plural = if kind == "Role" {
                    "roles"
                } else {
                    "clusterroles"
                };
                (
                    policy.referenced_rules(namespace, kind, role),
                    "bind",
                    plural,
                    role.to_owned(),
                )
            }
        };
        let exempt = Request::Resource(ResourceRequest {
            verb: exempting_verb.into(),
            group: RBAC_GROUP.into(),
            resource: role_plural.into(),
            subresource: None,
            namespace: namespace.map(str::to_owned),
            name: Some(role_name),
        });
        if policy.authorize(&user, &exempt).is_ok() {
            return Ok(());
        }
        policy
            .confirm_no_escalation(&user, namespace, &rules)
            .map_err(|lacking| {
                ApiError::Forbidden(format!(
                    "{}.{RBAC_GROUP} {name:?} is forbidden: {lacking}",
                    resource.plural
                ))
            })
    }
}
