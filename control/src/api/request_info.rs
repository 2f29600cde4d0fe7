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

/// What a request is about: in authorization's terms, and where its path points. Resolved once, before any
/// handler runs, and carried with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// What authorization decides on (a namespace is its own namespace; a `metadata.name` field selector
    /// names the object of a list).
    pub request: Request,
    /// Where the path points, as the API serves it.
    pub path: ApiPath,
}

/// Where a path under `/api` or `/apis` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiPath {
    /// `/api`: the core group's versions.
    CoreVersions,
    /// `/apis`: the API groups.
    Groups,
    /// `/apis/GROUP`: one group.
    Group(String),
    /// `/api/VERSION` or `/apis/GROUP/VERSION`: the resources of a group version.
    Resources {
        /// The group, empty for core.
        group: String,
        /// The version.
        version: String,
    },
    /// A resource's collection, one object, or one of its subresources.
    Resource(ResourcePath),
    /// Any other path.
    Other,
}

/// The parts of a resource path, as written: `/apis/GROUP/VERSION[/namespaces/NS]/RESOURCE[/NAME[/SUB]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    /// The group, empty for core.
    pub group: String,
    /// The version.
    pub version: String,
    /// The namespace segment of the path (none for a Namespace object's own path).
    pub namespace: Option<String>,
    /// The resource's plural name.
    pub resource: String,
    /// The object's name.
    pub name: Option<String>,
    /// The subresource.
    pub subresource: Option<String>,
    /// For the `proxy` subresource, the path after it (`/` at least).
    pub proxy_path: Option<String>,
}

/// What a request is about. The path's segments are percent-decoded, as Go's server decodes a path before
/// Kubernetes reads it (clients such as the official Python one write `system:node` as `system%3Anode`); what
/// follows a `proxy` subresource is passed on as it came.
pub fn resolve(method: &Method, path: &str, query: QueryFacts<'_>) -> RequestInfo {
    let raw: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let decoded: Vec<std::borrow::Cow<'_, str>> = raw
        .iter()
        .map(|segment| percent_encoding::percent_decode_str(segment).decode_utf8_lossy())
        .collect();
    let parts: Vec<&str> = decoded.iter().map(AsRef::as_ref).collect();
    let discovery = match parts.as_slice() {
        ["api"] => Some(ApiPath::CoreVersions),
        ["apis"] => Some(ApiPath::Groups),
        ["apis", group] => Some(ApiPath::Group((*group).to_owned())),
        ["api", version] => Some(ApiPath::Resources {
            group: String::new(),
            version: (*version).to_owned(),
        }),
        ["apis", group, version] => Some(ApiPath::Resources {
            group: (*group).to_owned(),
            version: (*version).to_owned(),
        }),
        _ => None,
    };
    if let Some(discovery) = discovery {
        return non_resource(method, path, discovery);
    }
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return non_resource(method, path, ApiPath::Other),
    };
    let (path_namespace, rest): (Option<&str>, &[&str]) = match rest {
        ["namespaces", namespace, next, ..] if !["status", "finalize"].contains(next) => {
            (Some(namespace), &rest[2..])
        }
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, subresource, ..] if *subresource == "proxy" => {
            (*resource, Some(*name), Some(*subresource))
        }
        [resource, name, subresource] => (*resource, Some(*name), Some(*subresource)),
        _ => return non_resource(method, path, ApiPath::Other),
    };
    // What follows `proxy` is the path to request there, its trailing slash kept.
    let proxy_path = (subresource == Some("proxy")).then(|| {
        let tail_segments = rest.len().saturating_sub(3);
        let tail = raw[raw.len() - tail_segments..].join("/");
        let slash = if path.ends_with('/') && !tail.is_empty() {
            "/"
        } else {
            ""
        };
        format!("/{tail}{slash}")
    });
    let verb = match *method {
        // A WebSocket can only be opened with a GET: as Kubernetes, opening these streams is creating.
        Method::GET if matches!(subresource, Some("exec" | "attach" | "portforward")) => "create",
        Method::GET if query.watch => "watch",
        Method::GET if rest.len() == 1 => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if rest.len() == 1 => "deletecollection",
        Method::DELETE => "delete",
        _ => return non_resource(method, path, ApiPath::Other),
    };
    let owned = |s: Option<&str>| s.map(str::to_owned);
    // A Namespace object is in its own namespace.
    let namespace =
        path_namespace.or(name.filter(|_| path_namespace.is_none() && resource == "namespaces"));
    let named = owned(name).or_else(|| {
        query
            .field_selector
            .and_then(named_by_field_selector)
            .filter(|_| *method == Method::GET)
    });
    RequestInfo {
        request: Request::Resource(ResourceRequest {
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource: resource.to_owned(),
            subresource: owned(subresource),
            namespace: owned(namespace),
            name: named,
        }),
        path: ApiPath::Resource(ResourcePath {
            group: group.to_owned(),
            version: version.to_owned(),
            namespace: owned(path_namespace),
            resource: resource.to_owned(),
            name: owned(name),
            subresource: owned(subresource),
            proxy_path,
        }),
    }
}

fn non_resource(method: &Method, path: &str, api_path: ApiPath) -> RequestInfo {
    RequestInfo {
        request: Request::NonResource {
            verb: method.as_str().to_ascii_lowercase(),
            path: path.to_owned(),
        },
        path: api_path,
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

    fn asked(method: &Method, path: &str, query: QueryFacts<'_>) -> Request {
        resolve(method, path, query).request
    }

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
    fn segments_are_percent_decoded_but_a_proxied_path_is_passed_on_as_it_came() {
        let plain = QueryFacts::default();
        assert_eq!(
            asked(
                &Method::GET,
                "/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Amonitoring",
                plain
            ),
            resource(
                "get",
                "rbac.authorization.k8s.io",
                "clusterroles",
                None,
                None,
                Some("system:monitoring")
            )
        );
        // A slash written as %2F stays inside its segment: a name no object can have.
        assert_eq!(
            asked(&Method::GET, "/api/v1/namespaces/a%2Fb/pods", plain),
            resource("list", "", "pods", None, Some("a/b"), None)
        );
        let info = resolve(
            &Method::GET,
            "/api/v1/namespaces/dev/pods/web%3A1/proxy/a%20b/c%2Fd/",
            plain,
        );
        let ApiPath::Resource(path) = info.path else {
            panic!("{info:?}")
        };
        assert_eq!(path.name.as_deref(), Some("web:1"));
        assert_eq!(path.proxy_path.as_deref(), Some("/a%20b/c%2Fd/"));
    }

    #[test]
    fn resource_paths_give_verb_group_resource_namespace_and_name() {
        let plain = QueryFacts::default();
        assert_eq!(
            asked(&Method::GET, "/api/v1/namespaces/dev/pods", plain),
            resource("list", "", "pods", None, Some("dev"), None)
        );
        assert_eq!(
            asked(
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
            asked(
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
            asked(
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
            asked(
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
            asked(
                &Method::POST,
                "/apis/apps/v1/namespaces/dev/deployments",
                plain
            ),
            resource("create", "apps", "deployments", None, Some("dev"), None)
        );
        assert_eq!(
            asked(
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
            asked(&Method::GET, "/api/v1/namespaces", plain),
            resource("list", "", "namespaces", None, None, None)
        );
        assert_eq!(
            asked(&Method::DELETE, "/api/v1/namespaces/dev", plain),
            resource("delete", "", "namespaces", None, Some("dev"), Some("dev"))
        );
        assert_eq!(
            asked(&Method::PUT, "/api/v1/namespaces/dev/finalize", plain),
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
                asked(&Method::GET, path, plain),
                Request::NonResource {
                    verb: "get".into(),
                    path: path.into()
                },
                "{path}"
            );
        }
        assert_eq!(
            asked(
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

    #[test]
    fn paths_resolve_to_what_the_api_serves() {
        let plain = QueryFacts::default();
        let path = |p: &str| resolve(&Method::GET, p, plain).path;
        assert_eq!(path("/api"), ApiPath::CoreVersions);
        assert_eq!(path("/apis/apps"), ApiPath::Group("apps".into()));
        assert_eq!(
            path("/apis/apps/v1"),
            ApiPath::Resources {
                group: "apps".into(),
                version: "v1".into()
            }
        );
        let resource = |group: &str,
                        namespace: Option<&str>,
                        plural: &str,
                        name: Option<&str>,
                        sub: Option<&str>| {
            ApiPath::Resource(ResourcePath {
                group: group.into(),
                version: "v1".into(),
                namespace: namespace.map(Into::into),
                resource: plural.into(),
                name: name.map(Into::into),
                subresource: sub.map(Into::into),
                proxy_path: None,
            })
        };
        assert_eq!(
            path("/apis/apps/v1/namespaces/dev/deployments/web/scale"),
            resource(
                "apps",
                Some("dev"),
                "deployments",
                Some("web"),
                Some("scale")
            )
        );
        // A Namespace's own path has no namespace segment, though authorization sees one.
        assert_eq!(
            path("/api/v1/namespaces/dev/status"),
            resource("", None, "namespaces", Some("dev"), Some("status"))
        );
        // A field selector names the object for authorization only: the path is still the list.
        let selected = QueryFacts {
            watch: false,
            field_selector: Some("metadata.name=n1"),
        };
        assert_eq!(
            resolve(&Method::GET, "/api/v1/nodes", selected).path,
            resource("", None, "nodes", None, None)
        );
        assert_eq!(
            path("/api/v1/namespaces/dev/pods/a/log/extra"),
            ApiPath::Other
        );
        assert_eq!(path("/version"), ApiPath::Other);
    }
}
