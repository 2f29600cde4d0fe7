//! RBAC authorization as Kubernetes evaluates it: a request is allowed when a rule of a Role or ClusterRole
//! bound to its user (or one of their groups, or their service account) covers its verb, API group, resource,
//! subresource and name (or its non-resource path). ClusterRoleBindings apply everywhere; RoleBindings only in
//! their namespace. Members of `system:masters` may do anything. Pure: the apiserver supplies the objects.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};

/// The group whose members are allowed everything.
pub const MASTERS: &str = "system:masters";

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user name (`system:serviceaccount:NS:NAME` for a service account).
    pub name: String,
    /// The groups they belong to.
    pub groups: Vec<String>,
}

/// A request about objects of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRequest {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// The API group (`""` for core).
    pub group: String,
    /// The resource's plural.
    pub resource: String,
    /// The subresource, if any (`log`, `status`...).
    pub subresource: Option<String>,
    /// The namespace, for namespaced requests.
    pub namespace: Option<String>,
    /// The object's name, when the request names one.
    pub name: Option<String>,
}

impl ResourceRequest {
    /// `resource` or `resource/subresource`, as rules name them.
    pub fn path(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }
}

/// What a request does, in RBAC's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A request about objects of a resource.
    Resource(ResourceRequest),
    /// A request for another path (`/healthz`, `/version`, discovery).
    NonResource {
        /// The verb (`get` for reads).
        verb: String,
        /// The path.
        path: String,
    },
}

/// The RBAC objects a decision is made from.
#[derive(Debug, Default, Clone)]
pub struct Policy {
    /// Every Role (each in its namespace).
    pub roles: Vec<Role>,
    /// Every ClusterRole.
    pub cluster_roles: Vec<ClusterRole>,
    /// Every RoleBinding.
    pub role_bindings: Vec<RoleBinding>,
    /// Every ClusterRoleBinding.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

fn covers(list: &[String], value: &str) -> bool {
    list.iter().any(|item| item == "*" || item == value)
}

fn subject_matches(subject: &Subject, user: &User) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let namespace = subject.namespace.as_deref().unwrap_or_default();
            user.name == format!("system:serviceaccount:{namespace}:{}", subject.name)
        }
        _ => false,
    }
}

fn rule_allows(rule: &PolicyRule, request: &Request) -> bool {
    match request {
        Request::Resource(asked) => {
            let groups = rule.api_groups.clone().unwrap_or_default();
            let resources = rule.resources.clone().unwrap_or_default();
            let combined = asked.path();
            let subresource_wildcard = asked.subresource.as_ref().map(|sub| format!("*/{sub}"));
            let resource_ok = resources
                .iter()
                .any(|r| r == "*" || *r == combined || Some(r) == subresource_wildcard.as_ref());
            let names = rule.resource_names.clone().unwrap_or_default();
            let name_ok =
                names.is_empty() || asked.name.as_ref().is_some_and(|n| names.contains(n));
            covers(&rule.verbs, &asked.verb)
                && covers(&groups, &asked.group)
                && resource_ok
                && name_ok
        }
        Request::NonResource { verb, path } => {
            let urls = rule.non_resource_urls.clone().unwrap_or_default();
            covers(&rule.verbs, verb)
                && urls.iter().any(|url| {
                    url == "*"
                        || url == path
                        || url
                            .strip_suffix('*')
                            .is_some_and(|prefix| path.starts_with(prefix))
                })
        }
    }
}

impl Policy {
    fn cluster_role_rules(&self, name: &str) -> Vec<PolicyRule> {
        self.cluster_roles
            .iter()
            .filter(|r| r.metadata.name.as_deref() == Some(name))
            .flat_map(|r| r.rules.clone().unwrap_or_default())
            .collect()
    }

    fn role_rules(&self, namespace: &str, name: &str) -> Vec<PolicyRule> {
        self.roles
            .iter()
            .filter(|r| {
                r.metadata.name.as_deref() == Some(name)
                    && r.metadata.namespace.as_deref() == Some(namespace)
            })
            .flat_map(|r| r.rules.clone().unwrap_or_default())
            .collect()
    }

    /// The rules that apply to `user` for a request in `namespace` (cluster-wide ones always).
    pub fn rules_for(&self, user: &User, namespace: Option<&str>) -> Vec<PolicyRule> {
        let bound = |subjects: &Option<Vec<Subject>>| {
            subjects.iter().flatten().any(|s| subject_matches(s, user))
        };
        let mut rules: Vec<PolicyRule> = self
            .cluster_role_bindings
            .iter()
            .filter(|b| bound(&b.subjects) && b.role_ref.kind == "ClusterRole")
            .flat_map(|b| self.cluster_role_rules(&b.role_ref.name))
            .collect();
        if let Some(namespace) = namespace {
            for binding in self.role_bindings.iter().filter(|b| {
                b.metadata.namespace.as_deref() == Some(namespace) && bound(&b.subjects)
            }) {
                rules.extend(match binding.role_ref.kind.as_str() {
                    "Role" => self.role_rules(namespace, &binding.role_ref.name),
                    "ClusterRole" => self.cluster_role_rules(&binding.role_ref.name),
                    _ => Vec::new(),
                });
            }
        }
        rules
    }

    /// Allowed, or the reason it is not, in Kubernetes' words (the part after `... is forbidden: `).
    pub fn authorize(&self, user: &User, request: &Request) -> Result<(), String> {
        if user.groups.iter().any(|g| g == MASTERS) {
            return Ok(());
        }
        let namespace = match request {
            Request::Resource(asked) => asked.namespace.as_deref(),
            Request::NonResource { .. } => None,
        };
        if self
            .rules_for(user, namespace)
            .iter()
            .any(|rule| rule_allows(rule, request))
        {
            return Ok(());
        }
        Err(refusal(user, request))
    }
}

/// Every permission a rule grants, as requests in `namespace` (one per group, resource, verb and name).
fn permissions(rule: &PolicyRule, namespace: Option<&str>) -> Vec<Request> {
    let verbs = &rule.verbs;
    if let Some(urls) = rule.non_resource_urls.as_ref().filter(|u| !u.is_empty()) {
        return urls
            .iter()
            .flat_map(|path| {
                verbs.iter().map(|verb| Request::NonResource {
                    verb: verb.clone(),
                    path: path.clone(),
                })
            })
            .collect();
    }
    let groups = rule.api_groups.clone().unwrap_or_default();
    let resources = rule.resources.clone().unwrap_or_default();
    let names: Vec<Option<String>> = match rule.resource_names.as_ref().filter(|n| !n.is_empty()) {
        Some(names) => names.iter().cloned().map(Some).collect(),
        None => vec![None],
    };
    let mut all = Vec::new();
    for group in &groups {
        for resource in &resources {
            let (resource, subresource) = match resource.split_once('/') {
                Some((r, s)) => (r.to_owned(), Some(s.to_owned())),
                None => (resource.clone(), None),
            };
            for verb in verbs {
                for name in &names {
                    all.push(Request::Resource(ResourceRequest {
                        verb: verb.clone(),
                        group: group.clone(),
                        resource: resource.clone(),
                        subresource: subresource.clone(),
                        namespace: namespace.map(str::to_owned),
                        name: name.clone(),
                    }));
                }
            }
        }
    }
    all
}

impl Policy {
    /// Whether `user` holds every permission of `rules` (in `namespace`, or cluster-wide): a user may grant
    /// only what they have. The refusal names what they lack, in Kubernetes' words.
    pub fn confirm_no_escalation(
        &self,
        user: &User,
        namespace: Option<&str>,
        rules: &[PolicyRule],
    ) -> Result<(), String> {
        let missing: Vec<String> = rules
            .iter()
            .flat_map(|rule| permissions(rule, namespace))
            .filter(|asked| self.authorize(user, asked).is_err())
            .map(|asked| match asked {
                Request::Resource(r) => format!(
                    "{{APIGroups:[{:?}], Resources:[{:?}], Verbs:[{:?}]}}",
                    r.group,
                    r.path(),
                    r.verb
                ),
                Request::NonResource { verb, path } => {
                    format!("{{NonResourceURLs:[{path:?}], Verbs:[{verb:?}]}}")
                }
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}",
            user.name,
            user.groups,
            missing.join("\n")
        ))
    }

    /// The rules of the role a binding refers to.
    pub fn referenced_rules(
        &self,
        namespace: Option<&str>,
        kind: &str,
        name: &str,
    ) -> Vec<PolicyRule> {
        match (kind, namespace) {
            ("ClusterRole", _) => self.cluster_role_rules(name),
            ("Role", Some(namespace)) => self.role_rules(namespace, name),
            _ => Vec::new(),
        }
    }
}

/// Kubernetes' wording of a denial: `User "alice" cannot list resource "pods" in API group "" in the namespace
/// "prod"`.
pub fn refusal(user: &User, request: &Request) -> String {
    match request {
        Request::Resource(asked) => {
            let scope = match &asked.namespace {
                Some(ns) => format!("in the namespace {ns:?}"),
                None => "at the cluster scope".to_owned(),
            };
            format!(
                "User {:?} cannot {} resource {:?} in API group {:?} {scope}",
                user.name,
                asked.verb,
                asked.path(),
                asked.group
            )
        }
        Request::NonResource { verb, path } => {
            format!("User {:?} cannot {verb} path {path:?}", user.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn request(verb: &str, resource: &str, namespace: Option<&str>, name: Option<&str>) -> Request {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r.to_owned(), Some(s.to_owned())),
            None => (resource.to_owned(), None),
        };
        Request::Resource(ResourceRequest {
            verb: verb.into(),
            group: String::new(),
            resource,
            subresource,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
        })
    }

    fn policy() -> Policy {
        Policy {
            roles: vec![serde_json::from_value(json!({"metadata": {"name": "dev-edit", "namespace": "dev"},
                "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "create"]},
                          {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"], "verbs": ["get"]}]}))
                .unwrap()],
            cluster_roles: vec![serde_json::from_value(json!({"metadata": {"name": "node-reader"},
                "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
                          {"nonResourceURLs": ["/healthz", "/apis/*"], "verbs": ["get"]}]}))
                .unwrap()],
            role_bindings: vec![serde_json::from_value(json!({"metadata": {"name": "alice-dev", "namespace": "dev"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "dev-edit"},
                "subjects": [{"kind": "User", "name": "alice"},
                             {"kind": "ServiceAccount", "name": "ci", "namespace": "dev"}]}))
                .unwrap()],
            cluster_role_bindings: vec![serde_json::from_value(json!({"metadata": {"name": "readers"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "node-reader"},
                "subjects": [{"kind": "Group", "name": "ops"}]}))
                .unwrap()],
        }
    }

    #[test]
    fn a_role_binding_allows_only_in_its_namespace() {
        let policy = policy();
        let alice = user("alice", &["system:authenticated"]);
        assert_eq!(
            policy.authorize(&alice, &request("list", "pods", Some("dev"), None)),
            Ok(())
        );
        assert_eq!(
            policy.authorize(&alice, &request("get", "pods/log", Some("dev"), Some("p"))),
            Ok(())
        );
        assert_eq!(
            policy.authorize(&alice, &request("list", "pods", Some("prod"), None)),
            Err("User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"prod\"".into())
        );
        assert!(
            policy
                .authorize(&alice, &request("delete", "pods", Some("dev"), Some("p")))
                .is_err()
        );
        assert!(
            policy
                .authorize(&alice, &request("get", "pods/exec", Some("dev"), Some("p")))
                .is_err()
        );
        // resourceNames limit a rule to those objects.
        assert_eq!(
            policy.authorize(
                &alice,
                &request("get", "configmaps", Some("dev"), Some("settings"))
            ),
            Ok(())
        );
        assert!(
            policy
                .authorize(
                    &alice,
                    &request("get", "configmaps", Some("dev"), Some("other"))
                )
                .is_err()
        );
        assert!(
            policy
                .authorize(&alice, &request("list", "configmaps", Some("dev"), None))
                .is_err()
        );
        // A service account named as a subject.
        let ci = user("system:serviceaccount:dev:ci", &[]);
        assert_eq!(
            policy.authorize(&ci, &request("create", "pods", Some("dev"), None)),
            Ok(())
        );
    }

    #[test]
    fn a_user_grants_only_what_they_hold() {
        let policy = policy();
        let alice = user("alice", &["system:authenticated"]);
        let rule =
            |value: serde_json::Value| -> PolicyRule { serde_json::from_value(value).unwrap() };
        let held =
            rule(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}));
        assert_eq!(
            policy.confirm_no_escalation(&alice, Some("dev"), std::slice::from_ref(&held)),
            Ok(())
        );
        // Not in prod, not secrets, not everything.
        assert!(
            policy
                .confirm_no_escalation(&alice, Some("prod"), &[held])
                .is_err()
        );
        let secrets = rule(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}));
        assert_eq!(
            policy.confirm_no_escalation(&alice, Some("dev"), &[secrets]),
            Err("user \"alice\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}".into())
        );
        let everything = rule(json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}));
        assert!(
            policy
                .confirm_no_escalation(&alice, Some("dev"), std::slice::from_ref(&everything))
                .is_err()
        );
        let admin = user("root", &[MASTERS]);
        assert_eq!(
            policy.confirm_no_escalation(&admin, None, &[everything]),
            Ok(())
        );
        // resourceNames narrow what must be held.
        let named = rule(
            json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"], "verbs": ["get"]}),
        );
        assert_eq!(
            policy.confirm_no_escalation(&alice, Some("dev"), &[named]),
            Ok(())
        );
        assert_eq!(
            policy
                .referenced_rules(Some("dev"), "Role", "dev-edit")
                .len(),
            2
        );
    }

    #[test]
    fn cluster_bindings_groups_paths_and_masters() {
        let policy = policy();
        let operator = user("bob", &["ops"]);
        assert_eq!(
            policy.authorize(&operator, &request("list", "nodes", None, None)),
            Ok(())
        );
        assert_eq!(
            policy.authorize(&operator, &request("delete", "nodes", None, Some("n1"))),
            Err("User \"bob\" cannot delete resource \"nodes\" in API group \"\" at the cluster scope".into())
        );
        let path = |p: &str| Request::NonResource {
            verb: "get".into(),
            path: p.into(),
        };
        assert_eq!(policy.authorize(&operator, &path("/healthz")), Ok(()));
        assert_eq!(policy.authorize(&operator, &path("/apis/apps/v1")), Ok(()));
        assert!(policy.authorize(&operator, &path("/metrics")).is_err());
        let nobody = user("system:anonymous", &["system:unauthenticated"]);
        assert!(
            policy
                .authorize(&nobody, &request("list", "nodes", None, None))
                .is_err()
        );
        let admin = user("admin", &[MASTERS]);
        assert_eq!(
            policy.authorize(&admin, &request("delete", "nodes", None, Some("n1"))),
            Ok(())
        );
    }
}
