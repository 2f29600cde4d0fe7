//! The ClusterRoles and ClusterRoleBindings every cluster starts with, as Kubernetes' bootstrap policy (and
//! kubeadm's): `cluster-admin` for `system:masters`, discovery and health paths for every authenticated user,
//! certificate requests for bootstrap tokens' users (joining nodes), and the user-facing `admin`, `edit` and
//! `view` roles to bind in a namespace.

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Deserialize;
use serde_json::{Value, json};

/// What `view` may read: everything of a namespace but its Secrets and its roles, and what pods and nodes use.
const VIEWABLE: [(&str, &[&str]); 9] = [
    (
        "",
        &[
            "pods",
            "pods/log",
            "pods/status",
            "replicationcontrollers",
            "replicationcontrollers/status",
            "services",
            "services/status",
            "endpoints",
            "configmaps",
            "events",
            "limitranges",
            "resourcequotas",
            "resourcequotas/status",
            "namespaces",
            "namespaces/status",
            "serviceaccounts",
            "persistentvolumeclaims",
            "persistentvolumeclaims/status",
        ],
    ),
    (
        "apps",
        &[
            "deployments",
            "deployments/scale",
            "deployments/status",
            "replicasets",
            "replicasets/scale",
            "replicasets/status",
            "statefulsets",
            "statefulsets/scale",
            "statefulsets/status",
            "daemonsets",
            "daemonsets/status",
        ],
    ),
    (
        "batch",
        &["jobs", "jobs/status", "cronjobs", "cronjobs/status"],
    ),
    (
        "autoscaling",
        &[
            "horizontalpodautoscalers",
            "horizontalpodautoscalers/status",
        ],
    ),
    ("discovery.k8s.io", &["endpointslices"]),
    ("events.k8s.io", &["events"]),
    ("networking.k8s.io", &["ingresses", "ingresses/status"]),
    // Kubernetes' system:aggregated-metrics-reader, aggregated into view, edit and admin.
    ("metrics.k8s.io", &["pods", "nodes"]),
    (
        "policy",
        &["poddisruptionbudgets", "poddisruptionbudgets/status"],
    ),
];

/// What `edit` may change besides: the workloads, their configuration and Secrets, exec, attach and port
/// forwarding, evictions, disruption budgets and autoscalers.
const EDITABLE: [(&str, &[&str]); 7] = [
    (
        "",
        &[
            "pods",
            "pods/attach",
            "pods/ephemeralcontainers",
            "pods/eviction",
            "pods/exec",
            "pods/portforward",
            "pods/proxy",
            "replicationcontrollers",
            "services",
            "endpoints",
            "configmaps",
            "secrets",
            "serviceaccounts",
            "serviceaccounts/token",
            "services/proxy",
            "persistentvolumeclaims",
        ],
    ),
    (
        "apps",
        &[
            "deployments",
            "deployments/scale",
            "replicasets",
            "replicasets/scale",
            "statefulsets",
            "statefulsets/scale",
            "daemonsets",
        ],
    ),
    ("autoscaling", &["horizontalpodautoscalers"]),
    ("batch", &["jobs", "cronjobs"]),
    ("coordination.k8s.io", &["leases"]),
    ("networking.k8s.io", &["ingresses"]),
    ("policy", &["poddisruptionbudgets"]),
];

/// The user a node proxy (`wasmkube proxy`, kube-proxy) runs as; `system:node-proxier` lets it follow Services.
pub const PROXY_USER: &str = "system:kube-proxy";
/// The ClusterRole (and binding) that lets every authenticated user log in to the dashboard as themselves.
const DASHBOARD_USER: &str = "wasmkube:dashboard-user";

const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

fn rules(groups: &[(&str, &[&str])], verbs: &[&str]) -> Vec<Value> {
    groups
        .iter()
        .map(|(group, resources)| json!({"apiGroups": [group], "resources": resources, "verbs": verbs}))
        .collect()
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                     "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "rules": rules,
    })
}

/// A binding of `role` to subjects of one kind (`Group` or `User`).
fn binding(name: &str, role: &str, kind: &str, subjects: &[&str]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|s| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": s}))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                     "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

/// The default ClusterRoles.
pub fn cluster_roles() -> Vec<ClusterRole> {
    let discovery = [
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/healthz",
        "/livez",
        "/openapi",
        "/openapi/*",
        "/readyz",
        "/version",
        "/version/",
    ];
    let public_info = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    let view = rules(&VIEWABLE, &READ);
    let mut edit = view.clone();
    edit.extend(rules(&EDITABLE, &WRITE));
    edit.push(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": READ}));
    let mut admin = edit.clone();
    admin.push(
        json!({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
                      "verbs": READ.iter().chain(WRITE.iter()).collect::<Vec<_>>()}),
    );
    [
        cluster_role(
            "cluster-admin",
            vec![
                json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
                json!({"nonResourceURLs": ["*"], "verbs": ["*"]}),
            ],
        ),
        cluster_role(
            "system:discovery",
            vec![json!({"nonResourceURLs": discovery, "verbs": ["get"]})],
        ),
        cluster_role(
            "system:basic-user",
            vec![
                json!({"apiGroups": ["authorization.k8s.io"],
                       "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                       "verbs": ["create"]}),
                json!({"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"],
                       "verbs": ["create"]}),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            vec![json!({"nonResourceURLs": public_info, "verbs": ["get"]})],
        ),
        // Logging in to the dashboard as oneself, and out again.
        cluster_role(
            DASHBOARD_USER,
            vec![
                json!({"nonResourceURLs": ["/ui/login-codes"], "verbs": ["post"]}),
                json!({"nonResourceURLs": ["/ui/session"], "verbs": ["delete"]}),
            ],
        ),
        // Full access to the metrics and health endpoints.
        cluster_role(
            "system:monitoring",
            vec![json!({"nonResourceURLs": ["/metrics", "/metrics/slis", "/livez", "/readyz", "/healthz",
                                            "/livez/*", "/readyz/*", "/healthz/*"],
                        "verbs": ["get"]})],
        ),
        cluster_role(
            "system:node-bootstrapper",
            vec![json!({"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
                        "verbs": ["create", "get", "list", "watch"]})],
        ),
        cluster_role("system:node-proxier", {
            let mut proxier = rules(
                &[("", &["endpoints", "services"]), ("discovery.k8s.io", &["endpointslices"])],
                &["list", "watch"],
            );
            proxier.extend(rules(&[("", &["nodes"])], &READ));
            proxier.extend(rules(
                &[("", &["events"]), ("events.k8s.io", &["events"])],
                &["create", "patch", "update"],
            ));
            proxier
        }),
        cluster_role("admin", admin),
        cluster_role("edit", edit),
        cluster_role("view", view),
    ]
    .into_iter()
    .map(|role| ClusterRole::deserialize(&role).expect("bootstrap ClusterRoles are well-formed"))
    .collect()
}

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<ClusterRoleBinding> {
    [
        binding(
            "cluster-admin",
            "cluster-admin",
            "Group",
            &["system:masters"],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            "Group",
            &["system:authenticated"],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            "Group",
            &["system:authenticated"],
        ),
        binding(
            DASHBOARD_USER,
            DASHBOARD_USER,
            "Group",
            &["system:authenticated"],
        ),
        binding(
            "system:monitoring",
            "system:monitoring",
            "Group",
            &["system:monitoring"],
        ),
        binding(
            "system:node-bootstrapper",
            "system:node-bootstrapper",
            "Group",
            &["system:bootstrappers"],
        ),
        binding(
            "system:node-proxier",
            "system:node-proxier",
            "User",
            &[PROXY_USER],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            "Group",
            &["system:authenticated", "system:unauthenticated"],
        ),
    ]
    .into_iter()
    .map(|b| {
        ClusterRoleBinding::deserialize(&b).expect("bootstrap ClusterRoleBindings are well-formed")
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rbac::{Policy, Request, ResourceRequest, User};

    fn policy() -> Policy {
        let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "dev-view", "namespace": "dev"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "viewer"}]}))
        .unwrap();
        Policy {
            cluster_roles: cluster_roles(),
            cluster_role_bindings: cluster_role_bindings(),
            role_bindings: vec![binding],
            ..Default::default()
        }
    }

    fn ask(verb: &str, group: &str, resource: &str) -> Request {
        Request::Resource(ResourceRequest {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: None,
            namespace: Some("dev".into()),
            name: None,
        })
    }

    #[test]
    fn view_reads_workloads_but_not_secrets_and_everyone_may_discover() {
        let policy = policy();
        let viewer = User {
            name: "viewer".into(),
            groups: vec!["system:authenticated".into()],
        };
        assert_eq!(
            policy.authorize(&viewer, &ask("list", "apps", "deployments")),
            Ok(())
        );
        assert!(
            policy
                .authorize(&viewer, &ask("list", "", "secrets"))
                .is_err()
        );
        assert!(
            policy
                .authorize(&viewer, &ask("create", "", "pods"))
                .is_err()
        );
        let discovery = Request::NonResource {
            verb: "get".into(),
            path: "/apis/apps/v1".into(),
        };
        assert_eq!(policy.authorize(&viewer, &discovery), Ok(()));
        let anonymous = User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        };
        assert!(policy.authorize(&anonymous, &discovery).is_err());
        let version = Request::NonResource {
            verb: "get".into(),
            path: "/version".into(),
        };
        assert_eq!(policy.authorize(&anonymous, &version), Ok(()));
    }

    #[test]
    fn the_proxy_follows_services_and_nodes_and_nothing_else() {
        let policy = policy();
        let proxy = User {
            name: PROXY_USER.into(),
            groups: vec!["system:authenticated".into()],
        };
        for (verb, group, resource) in [
            ("watch", "discovery.k8s.io", "endpointslices"),
            ("list", "", "services"),
            ("get", "", "nodes"),
            ("create", "events.k8s.io", "events"),
        ] {
            assert_eq!(
                policy.authorize(&proxy, &ask(verb, group, resource)),
                Ok(()),
                "{verb} {resource}"
            );
        }
        for (verb, resource) in [
            ("list", "secrets"),
            ("delete", "services"),
            ("list", "pods"),
        ] {
            assert!(policy.authorize(&proxy, &ask(verb, "", resource)).is_err());
        }
    }
}
