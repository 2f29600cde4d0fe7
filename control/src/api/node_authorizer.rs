//! The Node authorizer, as Kubernetes' (with its NodeRestriction admission): a node agent (user
//! `system:node:NAME` in group `system:nodes`) may read what every node reads (nodes, pods, Services and
//! their endpoints), change only its own Node and Lease and the pods bound to it, write Events, and read only
//! the Secrets, ConfigMaps and claims its pods use (and volumes, which hold no secrets). Pure: the apiserver
//! answers the questions about pods.

use super::rbac::{Request, ResourceRequest, User};
use k8s_openapi::api::core::v1::Pod;

/// The group every node's user is in.
pub const NODES_GROUP: &str = "system:nodes";
/// The prefix of a node's user name.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// The node a user is, if they are one.
pub fn node_of(user: &User) -> Option<&str> {
    user.name
        .strip_prefix(NODE_USER_PREFIX)
        .filter(|_| user.groups.iter().any(|g| g == NODES_GROUP))
}

/// What the authorizer needs to know about pods.
pub trait PodGraph {
    /// The node a pod is bound to, if the pod exists and is bound.
    fn node_of_pod(&self, namespace: &str, name: &str) -> Option<String>;
    /// The pods of a namespace bound to a node.
    fn pods_on(&self, node: &str, namespace: &str) -> Vec<Pod>;
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Not this authorizer's to allow; the next one decides. The reason, if any, explains a final refusal.
    NoOpinion(Option<String>),
}

/// The decision on a node's request. `created_name` is the name in the body of a create.
pub fn authorize(
    node: &str,
    request: &Request,
    created_name: Option<&str>,
    graph: &impl PodGraph,
) -> Decision {
    let Request::Resource(asked) = request else {
        return Decision::NoOpinion(None);
    };
    let verb = asked.verb.as_str();
    let reads = matches!(verb, "get" | "list" | "watch");
    let own = |name: Option<&str>| name == Some(node);
    let target = asked.name.as_deref().or(created_name);
    let allowed = match (asked.group.as_str(), asked.resource.as_str()) {
        ("", "nodes") => reads && asked.subresource.is_none() || own(target),
        ("", "pods") => match (asked.subresource.as_deref(), verb) {
            (None, "get" | "list" | "watch") => true,
            (Some("status"), "get" | "update" | "patch") | (None, "delete") => {
                bound_here(node, asked, graph)
            }
            _ => false,
        },
        ("", "services" | "endpoints") | ("discovery.k8s.io", "endpointslices") => {
            reads && asked.subresource.is_none()
        }
        ("", "events") | ("events.k8s.io", "events") => {
            matches!(verb, "create" | "update" | "patch")
        }
        ("coordination.k8s.io", "leases") => {
            asked.namespace.as_deref() == Some("kube-node-lease")
                && !matches!(verb, "list" | "watch" | "deletecollection")
                && own(target)
        }
        ("", "secrets" | "configmaps") => {
            verb == "get" && asked.subresource.is_none() && used_here(node, asked, graph)
        }
        ("", "persistentvolumeclaims") => {
            verb == "get" && asked.subresource.is_none() && claimed_here(node, asked, graph)
        }
        // What a claim is bound to, and the local volumes whose directories the node removes once deleted.
        ("", "persistentvolumes") => reads && asked.subresource.is_none(),
        // Tokens for the accounts its pods run as (mounted into them).
        ("", "serviceaccounts") => {
            verb == "create"
                && asked.subresource.as_deref() == Some("token")
                && runs_as_here(node, asked, graph)
        }
        _ => return Decision::NoOpinion(None),
    };
    if allowed {
        Decision::Allow
    } else {
        Decision::NoOpinion(Some(format!(
            "no relationship found between node '{node}' and this object"
        )))
    }
}

fn bound_here(node: &str, asked: &ResourceRequest, graph: &impl PodGraph) -> bool {
    match (&asked.namespace, &asked.name) {
        (Some(namespace), Some(name)) => {
            graph.node_of_pod(namespace, name).as_deref() == Some(node)
        }
        _ => false,
    }
}

fn used_here(node: &str, asked: &ResourceRequest, graph: &impl PodGraph) -> bool {
    let (Some(namespace), Some(name)) = (&asked.namespace, &asked.name) else {
        return false;
    };
    let secret = asked.resource == "secrets";
    graph
        .pods_on(node, namespace)
        .iter()
        .any(|pod| references(pod, secret).any(|used| used == name))
}

fn claimed_here(node: &str, asked: &ResourceRequest, graph: &impl PodGraph) -> bool {
    let (Some(namespace), Some(name)) = (&asked.namespace, &asked.name) else {
        return false;
    };
    graph
        .pods_on(node, namespace)
        .iter()
        .any(|pod| super::storage::pod_claims(pod).any(|c| c == name))
}

fn runs_as_here(node: &str, asked: &ResourceRequest, graph: &impl PodGraph) -> bool {
    let (Some(namespace), Some(name)) = (&asked.namespace, &asked.name) else {
        return false;
    };
    graph.pods_on(node, namespace).iter().any(|pod| {
        pod.spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .unwrap_or("default")
            == name
    })
}

/// The names of the Secrets (or ConfigMaps) a pod uses: volumes (projected ones too), env, envFrom and image
/// pull secrets.
fn references(pod: &Pod, secret: bool) -> impl Iterator<Item = &str> {
    let spec = pod.spec.as_ref();
    let volumes = spec
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .flat_map(move |volume| {
            let own = if secret {
                volume
                    .secret
                    .as_ref()
                    .and_then(|s| s.secret_name.as_deref())
            } else {
                volume.config_map.as_ref().map(|c| c.name.as_str())
            };
            let projected = volume
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .filter_map(move |source| {
                    if secret {
                        source.secret.as_ref().map(|s| s.name.as_str())
                    } else {
                        source.config_map.as_ref().map(|c| c.name.as_str())
                    }
                });
            own.into_iter().chain(projected)
        });
    let containers = spec.into_iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    });
    let env = containers.flat_map(move |c| {
        let values = c.env.iter().flatten().filter_map(move |e| {
            let from = e.value_from.as_ref()?;
            if secret {
                from.secret_key_ref.as_ref().map(|r| r.name.as_str())
            } else {
                from.config_map_key_ref.as_ref().map(|r| r.name.as_str())
            }
        });
        let sources = c.env_from.iter().flatten().filter_map(move |e| {
            if secret {
                e.secret_ref.as_ref().map(|r| r.name.as_str())
            } else {
                e.config_map_ref.as_ref().map(|r| r.name.as_str())
            }
        });
        values.chain(sources)
    });
    let pull = spec
        .and_then(|s| s.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
        .filter(move |_| secret)
        .map(|r| r.name.as_str());
    volumes.chain(env).chain(pull)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Pods(Vec<Pod>);

    impl PodGraph for Pods {
        fn node_of_pod(&self, namespace: &str, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|p| {
                    p.metadata.namespace.as_deref() == Some(namespace)
                        && p.metadata.name.as_deref() == Some(name)
                })
                .and_then(|p| p.spec.as_ref()?.node_name.clone())
        }
        fn pods_on(&self, node: &str, namespace: &str) -> Vec<Pod> {
            self.0
                .iter()
                .filter(|p| {
                    p.metadata.namespace.as_deref() == Some(namespace)
                        && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
                })
                .cloned()
                .collect()
        }
    }

    fn graph() -> Pods {
        let pod = |name: &str, node: &str, spec: serde_json::Value| -> Pod {
            let mut spec = spec;
            spec["nodeName"] = json!(node);
            serde_json::from_value(
                json!({"metadata": {"name": name, "namespace": "dev"}, "spec": spec}),
            )
            .unwrap()
        };
        Pods(vec![
            pod(
                "web",
                "n1",
                json!({"containers": [{"name": "app", "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
                    "envFrom": [{"configMapRef": {"name": "settings"}}]}],
                    "volumes": [{"name": "c", "secret": {"secretName": "tls"}},
                                {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                                {"name": "api", "projected": {"sources": [
                                    {"serviceAccountToken": {"path": "token"}},
                                    {"configMap": {"name": "kube-root-ca.crt"}}]}}],
                    "serviceAccountName": "builder",
                    "imagePullSecrets": [{"name": "registry"}]}),
            ),
            pod(
                "other",
                "n2",
                json!({"containers": [{"name": "app"}], "volumes": [{"name": "c", "configMap": {"name": "theirs"}}]}),
            ),
        ])
    }

    fn ask(
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Request {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r.to_owned(), Some(s.to_owned())),
            None => (resource.to_owned(), None),
        };
        Request::Resource(ResourceRequest {
            verb: verb.into(),
            group: group.into(),
            resource,
            subresource,
            namespace: namespace.map(Into::into),
            name: name.map(Into::into),
        })
    }

    fn allowed(request: Request) -> bool {
        authorize("n1", &request, None, &graph()) == Decision::Allow
    }

    #[test]
    fn a_node_changes_only_its_own_node_lease_and_pods() {
        assert!(allowed(ask("list", "", "nodes", None, None)));
        assert!(allowed(ask("patch", "", "nodes/status", None, Some("n1"))));
        assert!(!allowed(ask("patch", "", "nodes/status", None, Some("n2"))));
        assert!(!allowed(ask("delete", "", "nodes", None, Some("n2"))));
        assert_eq!(
            authorize(
                "n1",
                &ask("create", "", "nodes", None, None),
                Some("n1"),
                &graph()
            ),
            Decision::Allow
        );
        assert_ne!(
            authorize(
                "n1",
                &ask("create", "", "nodes", None, None),
                Some("n2"),
                &graph()
            ),
            Decision::Allow
        );
        let lease = |verb, name| {
            ask(
                verb,
                "coordination.k8s.io",
                "leases",
                Some("kube-node-lease"),
                name,
            )
        };
        assert!(allowed(lease("update", Some("n1"))));
        assert!(!allowed(lease("update", Some("n2"))));
        assert!(!allowed(lease("list", None)));
        assert!(allowed(ask("watch", "", "pods", None, None)));
        assert!(allowed(ask(
            "patch",
            "",
            "pods/status",
            Some("dev"),
            Some("web")
        )));
        assert!(allowed(ask("delete", "", "pods", Some("dev"), Some("web"))));
        assert_eq!(
            authorize(
                "n1",
                &ask("patch", "", "pods/status", Some("dev"), Some("other")),
                None,
                &graph()
            ),
            Decision::NoOpinion(Some(
                "no relationship found between node 'n1' and this object".into()
            ))
        );
        assert!(!allowed(ask("create", "", "pods", Some("dev"), None)));
        assert!(!allowed(ask(
            "get",
            "",
            "pods/log",
            Some("dev"),
            Some("web")
        )));
        assert!(allowed(ask("create", "", "events", Some("dev"), None)));
        assert!(allowed(ask(
            "watch",
            "discovery.k8s.io",
            "endpointslices",
            None,
            None
        )));
    }

    #[test]
    fn a_node_reads_only_the_claims_its_pods_use_and_reads_volumes() {
        assert!(allowed(ask(
            "get",
            "",
            "persistentvolumeclaims",
            Some("dev"),
            Some("data")
        )));
        assert!(!allowed(ask(
            "get",
            "",
            "persistentvolumeclaims",
            Some("dev"),
            Some("other")
        )));
        assert!(!allowed(ask(
            "list",
            "",
            "persistentvolumeclaims",
            Some("dev"),
            None
        )));
        assert!(allowed(ask("watch", "", "persistentvolumes", None, None)));
        assert!(!allowed(ask(
            "delete",
            "",
            "persistentvolumes",
            None,
            Some("pv-1")
        )));
    }

    #[test]
    fn a_node_reads_only_the_secrets_and_config_maps_its_pods_use() {
        for secret in ["db", "tls", "registry"] {
            assert!(
                allowed(ask("get", "", "secrets", Some("dev"), Some(secret))),
                "{secret}"
            );
        }
        assert!(allowed(ask(
            "get",
            "",
            "configmaps",
            Some("dev"),
            Some("settings")
        )));
        assert!(!allowed(ask(
            "get",
            "",
            "configmaps",
            Some("dev"),
            Some("theirs")
        )));
        assert!(!allowed(ask(
            "get",
            "",
            "secrets",
            Some("prod"),
            Some("db")
        )));
        assert!(!allowed(ask("list", "", "secrets", Some("dev"), None)));
        assert!(allowed(ask(
            "get",
            "",
            "configmaps",
            Some("dev"),
            Some("kube-root-ca.crt")
        )));
    }

    #[test]
    fn a_node_gets_tokens_only_for_the_accounts_its_pods_run_as() {
        let token = |verb: &str, account: &str| {
            let mut request = ask(verb, "", "serviceaccounts", Some("dev"), Some(account));
            if let Request::Resource(r) = &mut request {
                r.subresource = Some("token".into());
            }
            allowed(request)
        };
        assert!(token("create", "builder"));
        // default is what n2's pod runs as, not n1's.
        assert!(!token("create", "default"));
        assert!(!token("get", "builder"));
        assert!(!allowed(ask(
            "get",
            "",
            "serviceaccounts",
            Some("dev"),
            Some("builder")
        )));
    }

    #[test]
    fn other_users_and_requests_are_left_to_rbac() {
        let user = |name: &str, groups: &[&str]| User {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert_eq!(node_of(&user("system:node:n1", &[NODES_GROUP])), Some("n1"));
        assert_eq!(node_of(&user("system:node:n1", &[])), None);
        assert_eq!(node_of(&user("alice", &[NODES_GROUP])), None);
        assert_eq!(
            authorize(
                "n1",
                &ask("list", "apps", "deployments", None, None),
                None,
                &graph()
            ),
            Decision::NoOpinion(None)
        );
    }
}
