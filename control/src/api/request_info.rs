//! What a request is about, read from its method, path and query alone, as Kubernetes' RequestInfo resolver
//! does before any handler runs: the verb, and the API group, resource, subresource, namespace and name of a
//! resource request, or the path of any other request. Authorization decides on this.

use super::rbac::{Request, ResourceRequest};
use http::Method;

/// The query parameters that change what a request is about.
#[derive(Debug, Default, Clone, Copy)]
pub struct QueryFacts<'a> {
    /// `watch=true`: a list is a watch.
    pub watch: bool,
    /// `fieldSelector`: `metadata.name=N` names the one object a list or watch is about.
    pub field_selector: Option<&'a str>,
}

/// What a request is about.
pub fn resolve(method: &Method, path: &str, query: QueryFacts<'_>) -> Request {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        _ => return non_resource(method, path),
    };
    let (namespace, rest): (Option<&str>, &[&str]) = match rest {
        ["namespaces", namespace, next, ..] if !["status", "finalize"].contains(next) => {
            (Some(namespace), &rest[2..])
        }
        ["namespaces", namespace, ..] => (Some(namespace), rest),
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, subresource] => (*resource, Some(*name), Some(*subresource)),
        _ => return non_resource(method, path),
    };
    let name = name.map(str::to_owned).or_else(|| {
        query
            .field_selector
            .and_then(named_by_field_selector)
            .filter(|_| *method == Method::GET)
    });
    let verb = match *method {
        Method::GET if query.watch => "watch",
        Method::GET if rest.len() == 1 => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if rest.len() == 1 => "deletecollection",
        Method::DELETE => "delete",
        _ => return non_resource(method, path),
    };
    Request::Resource(ResourceRequest {
        verb: verb.to_owned(),
        group: group.to_owned(),
        resource: resource.to_owned(),
        subresource: subresource.map(str::to_owned),
        namespace: namespace.map(str::to_owned),
        name,
    })
}

fn non_resource(method: &Method, path: &str) -> Request {
    Request::NonResource {
        verb: method.as_str().to_ascii_lowercase(),
        path: path.to_owned(),
    }
}

/// `metadata.name=N` (or `==`), alone in the selector.
fn named_by_field_selector(selector: &str) -> Option<String> {
    let value = selector
        .strip_prefix("metadata.name==")
        .or_else(|| selector.strip_prefix("metadata.name="))?;
    (!value.is_empty() && !value.contains(',')).then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        subresource: Option<&str>,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Request {
        Request::Resource(ResourceRequest {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.map(Into::into),
            namespace: namespace.map(Into::into),
            name: name.map(Into::into),
        })
    }

    #[test]
    fn resource_paths_give_verb_group_resource_namespace_and_name() {
        let plain = QueryFacts::default();
        assert_eq!(
            resolve(&Method::GET, "/api/v1/namespaces/dev/pods", plain),
            resource("list", "", "pods", None, Some("dev"), None)
        );
        assert_eq!(
            resolve(
                &Method::GET,
                "/api/v1/pods",
                QueryFacts {
                    watch: true,
                    field_selector: Some("spec.nodeName=n1")
                }
            ),
            resource("watch", "", "pods", None, None, None)
        );
        assert_eq!(
            resolve(
                &Method::GET,
                "/api/v1/nodes",
                QueryFacts {
                    watch: true,
                    field_selector: Some("metadata.name=n1")
                }
            ),
            resource("watch", "", "nodes", None, None, Some("n1"))
        );
        assert_eq!(
            resolve(
                &Method::PATCH,
                "/api/v1/namespaces/dev/pods/web/status",
                plain
            ),
            resource(
                "patch",
                "",
                "pods",
                Some("status"),
                Some("dev"),
                Some("web")
            )
        );
        assert_eq!(
            resolve(
                &Method::DELETE,
                "/apis/apps/v1/namespaces/dev/deployments",
                plain
            ),
            resource(
                "deletecollection",
                "apps",
                "deployments",
                None,
                Some("dev"),
                None
            )
        );
        assert_eq!(
            resolve(
                &Method::POST,
                "/apis/apps/v1/namespaces/dev/deployments",
                plain
            ),
            resource("create", "apps", "deployments", None, Some("dev"), None)
        );
        assert_eq!(
            resolve(
                &Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
                plain
            ),
            resource(
                "update",
                "coordination.k8s.io",
                "leases",
                None,
                Some("kube-node-lease"),
                Some("n1")
            )
        );
    }

    #[test]
    fn a_namespace_is_its_own_namespace_and_keeps_its_subresources() {
        let plain = QueryFacts::default();
        assert_eq!(
            resolve(&Method::GET, "/api/v1/namespaces", plain),
            resource("list", "", "namespaces", None, None, None)
        );
        assert_eq!(
            resolve(&Method::DELETE, "/api/v1/namespaces/dev", plain),
            resource("delete", "", "namespaces", None, Some("dev"), Some("dev"))
        );
        assert_eq!(
            resolve(&Method::PUT, "/api/v1/namespaces/dev/finalize", plain),
            resource(
                "update",
                "",
                "namespaces",
                Some("finalize"),
                Some("dev"),
                Some("dev")
            )
        );
    }

    #[test]
    fn discovery_and_other_paths_are_non_resource_requests() {
        let plain = QueryFacts::default();
        for path in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/version",
            "/openapi/v3/api/v1",
        ] {
            assert_eq!(
                resolve(&Method::GET, path, plain),
                Request::NonResource {
                    verb: "get".into(),
                    path: path.into()
                },
                "{path}"
            );
        }
        assert_eq!(
            resolve(
                &Method::GET,
                "/api/v1/namespaces/dev/pods/a/log/extra",
                plain
            ),
            Request::NonResource {
                verb: "get".into(),
                path: "/api/v1/namespaces/dev/pods/a/log/extra".into()
            }
        );
    }
}
