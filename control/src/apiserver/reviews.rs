//! The review APIs, created and answered but never stored: access reviews (`kubectl auth can-i`), rules
//! reviews (`kubectl auth can-i --list`), self-subject reviews (`kubectl auth whoami`) and token reviews.

use super::auth::{AuthorizationMode, REQUESTER};
use super::error::{ApiError, qualified_kind};
use super::{ApiServer, Target};
use crate::api::rbac::{AUTHENTICATED, MASTERS, Request, ResourceRequest, User};
use crate::api::validation::Cause;
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReviewSpec,
};
use serde::Deserialize;
use serde_json::{Value, json};

impl ApiServer {
    /// POST of a review: the review with its `status` answered.
    pub(super) fn review(&self, target: &Target, mut object: Value) -> Result<Value, ApiError> {
        if !object.is_object() {
            return Err(ApiError::BadRequest(
                "the body of the request must be a JSON object".into(),
            ));
        }
        let resource = target.resource;
        let requester = REQUESTER
            .try_with(User::clone)
            .map_err(|_| ApiError::Internal("the request has no user".into()))?;
        let invalid = |causes: Vec<Cause>| ApiError::Invalid {
            kind: qualified_kind(resource),
            name: String::new(),
            causes,
        };
        let status = match resource.kind {
            "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview" => {
                let spec: SubjectAccessReviewSpec = spec_of(&object)?;
                let mut causes = attribute_causes(&spec);
                let subject = if resource.kind == "SelfSubjectAccessReview" {
                    requester
                } else {
                    let groups = spec.groups.clone().unwrap_or_default();
                    let name = spec.user.clone().unwrap_or_default();
                    if name.is_empty() && groups.is_empty() {
                        causes.push(Cause::invalid(
                            "spec.user",
                            "",
                            "at least one of user or group must be specified",
                        ));
                    }
                    User { name, groups }
                };
                if resource.kind == "LocalSubjectAccessReview" {
                    let asked = spec
                        .resource_attributes
                        .as_ref()
                        .and_then(|a| a.namespace.as_deref());
                    if asked.is_some_and(|ns| Some(ns) != target.namespace.as_deref()) {
                        return Err(ApiError::BadRequest(format!(
                            "spec.resourceAttributes.namespace must match namespace: {}",
                            target.namespace.as_deref().unwrap_or_default()
                        )));
                    }
                }
                let request = spec
                    .resource_attributes
                    .as_ref()
                    .map(|attributes| resource_request(attributes, target))
                    .or_else(|| {
                        spec.non_resource_attributes
                            .as_ref()
                            .map(non_resource_request)
                    });
                let Some(request) = request.filter(|_| causes.is_empty()) else {
                    return Err(invalid(causes));
                };
                match self.authorize(&subject, &request, None) {
                    Ok(()) => json!({"allowed": true}),
                    Err(ApiError::Forbidden(_)) => json!({"allowed": false}),
                    Err(other) => return Err(other),
                }
            }
            "SelfSubjectRulesReview" => {
                let namespace = object["spec"]["namespace"].as_str().unwrap_or_default();
                if namespace.is_empty() {
                    return Err(invalid(vec![Cause::required("spec.namespace")]));
                }
                self.rules_of(&requester, namespace)?
            }
            "SelfSubjectReview" => json!({"userInfo": user_info(&requester)}),
            "TokenReview" => {
                let token = object["spec"]["token"].as_str().unwrap_or_default();
                if token.is_empty() {
                    return Err(invalid(vec![Cause::required("spec.token")]));
                }
                match self.user_of_token(token) {
                    Some(user) => json!({"authenticated": true, "user": user_info(&user)}),
                    None => json!({"authenticated": false, "user": {}}),
                }
            }
            other => {
                return Err(ApiError::Internal(format!("{other} is not a review")));
            }
        };
        object["status"] = status;
        object["apiVersion"] = resource.api_version().into();
        object["kind"] = resource.kind.into();
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        Ok(object)
    }

    /// What `user` may do in `namespace`, as a rules review's status.
    fn rules_of(&self, user: &User, namespace: &str) -> Result<Value, ApiError> {
        let everything = self.auth.modes.contains(&AuthorizationMode::AlwaysAllow)
            || user.groups.iter().any(|g| g == MASTERS);
        if everything {
            return Ok(json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            }));
        }
        let rules = self
            .rbac_policy_in(Some(namespace))?
            .rules_for(user, Some(namespace));
        let (mut resource_rules, mut non_resource_rules) = (Vec::new(), Vec::new());
        for rule in rules {
            match rule.non_resource_urls.filter(|u| !u.is_empty()) {
                Some(urls) => {
                    non_resource_rules.push(json!({"verbs": rule.verbs, "nonResourceURLs": urls}));
                }
                None => {
                    let mut entry = json!({"verbs": rule.verbs, "apiGroups": rule.api_groups,
                                           "resources": rule.resources});
                    if let Some(names) = rule.resource_names.filter(|n| !n.is_empty()) {
                        entry["resourceNames"] = json!(names);
                    }
                    resource_rules.push(entry);
                }
            }
        }
        Ok(json!({
            "resourceRules": resource_rules,
            "nonResourceRules": non_resource_rules,
            "incomplete": false,
        }))
    }
}

fn spec_of(object: &Value) -> Result<SubjectAccessReviewSpec, ApiError> {
    SubjectAccessReviewSpec::deserialize(&object["spec"])
        .map_err(|e| ApiError::BadRequest(format!("the review's spec is not valid: {e}")))
}

/// Kubernetes' rule: exactly one of resourceAttributes and nonResourceAttributes.
fn attribute_causes(spec: &SubjectAccessReviewSpec) -> Vec<Cause> {
    match (&spec.resource_attributes, &spec.non_resource_attributes) {
        (Some(_), Some(_)) => vec![Cause::invalid(
            "spec.nonResourceAttributes",
            "",
            "cannot be specified in combination with resourceAttributes",
        )],
        (None, None) => vec![Cause::invalid(
            "spec.resourceAttributes",
            "",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )],
        _ => Vec::new(),
    }
}

fn resource_request(attributes: &ResourceAttributes, target: &Target) -> Request {
    let text = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
    Request::Resource(ResourceRequest {
        verb: attributes.verb.clone().unwrap_or_default(),
        group: attributes.group.clone().unwrap_or_default(),
        resource: attributes.resource.clone().unwrap_or_default(),
        subresource: text(&attributes.subresource),
        namespace: text(&attributes.namespace).or_else(|| {
            (target.resource.kind == "LocalSubjectAccessReview")
                .then(|| target.namespace.clone())
                .flatten()
        }),
        name: text(&attributes.name),
    })
}

fn non_resource_request(attributes: &NonResourceAttributes) -> Request {
    Request::NonResource {
        verb: attributes.verb.clone().unwrap_or_default(),
        path: attributes.path.clone().unwrap_or_default(),
    }
}

/// A user as authentication.k8s.io's UserInfo.
fn user_info(user: &User) -> Value {
    let mut groups = user.groups.clone();
    if user.name != "system:anonymous" && !groups.iter().any(|g| g == AUTHENTICATED) {
        groups.push(AUTHENTICATED.into());
    }
    json!({"username": user.name, "groups": groups})
}
