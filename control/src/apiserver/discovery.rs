//! What clients read before they talk about objects: `/version`, legacy discovery (`/api`, `/apis`, resource
//! lists) and OpenAPI v3 documents that declare server-side field validation.

use super::openapi_schemas;
use crate::api::conversion::{self, Conversion};
use crate::api::resources::{self, ResourceType, Subresource};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The Kubernetes API version whose objects are served (k8s-openapi's newest).
pub const KUBERNETES_MINOR: &str = "37";

/// `GET /version`
pub fn version() -> Value {
    json!({
        "major": "1", "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-wasmkube.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "",
        "compiler": "rustc", "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// `GET /api`
pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = resources::all()
        .iter()
        .map(|r| r.group)
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    groups
}

/// The resource types served at a group version: the stored ones, and those served from another version's
/// objects with the conversion that serves them.
pub(super) fn served_at(
    group: &str,
    version: &str,
) -> Vec<(&'static ResourceType, Option<&'static Conversion>)> {
    let stored = resources::all()
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| (r, None));
    let converted = conversion::all()
        .iter()
        .filter(|c| c.group == group && c.version == version)
        .filter_map(|c| Some((c.stored()?, Some(c))));
    stored.chain(converted).collect()
}

/// A group's versions, the preferred (stored) one first.
fn versions(group: &str) -> Vec<&'static str> {
    let mut versions: Vec<&str> = resources::all()
        .iter()
        .filter(|r| r.group == group)
        .map(|r| r.version)
        .chain(
            conversion::all()
                .iter()
                .filter(|c| c.group == group)
                .map(|c| c.version),
        )
        .collect();
    versions.dedup();
    versions
}

fn group_object(group: &str) -> Value {
    let versions: Vec<Value> = versions(group)
        .into_iter()
        .map(|version| json!({"groupVersion": format!("{group}/{version}"), "version": version}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

/// `GET /apis`
pub fn api_groups() -> Value {
    let mut groups: Vec<Value> = groups().into_iter().map(group_object).collect();
    groups.push(super::custom_metrics::group_object());
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/<group>`, if the group is served.
pub fn api_group(group: &str) -> Option<Value> {
    let served = groups().contains(&group) || group == super::custom_metrics::GROUP;
    served.then(|| {
        let mut object = if group == super::custom_metrics::GROUP {
            super::custom_metrics::group_object()
        } else {
            group_object(group)
        };
        object["kind"] = "APIGroup".into();
        object["apiVersion"] = "v1".into();
        object
    })
}

fn verbs(resource: &ResourceType) -> Vec<&'static str> {
    if resource.review {
        return vec!["create"];
    }
    if resource.computed {
        return vec!["get", "list"];
    }
    let mut verbs = vec![
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    if resource.kind == "Namespace" {
        verbs.retain(|v| *v != "deletecollection");
    }
    verbs
}

fn resource_entries(resource: &ResourceType) -> Vec<Value> {
    let mut main = json!({
        "name": resource.plural, "singularName": resource.singular, "namespaced": resource.namespaced,
        "kind": resource.kind, "verbs": verbs(resource),
    });
    if !resource.short_names.is_empty() {
        main["shortNames"] = json!(resource.short_names);
    }
    if resource.in_category_all {
        main["categories"] = json!(["all"]);
    }
    let mut entries = vec![main];
    for sub in resource.subresources {
        let name = format!("{}/{}", resource.plural, sub.name());
        let entry = match sub {
            Subresource::Status | Subresource::Approval | Subresource::EphemeralContainers => {
                json!({"name": name, "singularName": "", "namespaced": resource.namespaced, "kind": resource.kind, "verbs": ["get", "patch", "update"]})
            }
            Subresource::Scale => {
                json!({"name": name, "singularName": "", "namespaced": resource.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]})
            }
            Subresource::Binding => {
                json!({"name": name, "singularName": "", "namespaced": resource.namespaced, "kind": "Binding", "verbs": ["create"]})
            }
            Subresource::Token => {
                json!({"name": name, "singularName": "", "namespaced": resource.namespaced, "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"]})
            }
            Subresource::Eviction => {
                json!({"name": name, "singularName": "", "namespaced": resource.namespaced, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]})
            }
            Subresource::Proxy => {
                let kind = match resource.kind {
                    "Pod" => "PodProxyOptions",
                    "Service" => "ServiceProxyOptions",
                    _ => "NodeProxyOptions",
                };
                json!({"name": name, "singularName": "", "namespaced": resource.namespaced, "kind": kind, "verbs": ["create", "delete", "get", "patch", "update"]})
            }
            Subresource::Log => {
                json!({"name": name, "singularName": "", "namespaced": resource.namespaced, "kind": resource.kind, "verbs": ["get"]})
            }
            Subresource::PortForward | Subresource::Exec | Subresource::Attach => {
                let kind = match sub {
                    Subresource::Exec => "PodExecOptions",
                    Subresource::Attach => "PodAttachOptions",
                    _ => "PodPortForwardOptions",
                };
                json!({"name": name, "singularName": "", "namespaced": resource.namespaced, "kind": kind, "verbs": ["create", "get"]})
            }
        };
        entries.push(entry);
    }
    entries
}

/// `GET /api/v1` or `/apis/<group>/<version>`, if served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let entries: Vec<Value> = served_at(group, version)
        .into_iter()
        .flat_map(|(resource, _)| resource_entries(resource))
        .collect();
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    (!entries.is_empty()).then(|| json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}))
}

/// Every group version served, with the path of its documents (`api/v1`, `apis/apps/v1`).
pub(super) fn group_version_paths() -> Vec<(String, &'static str, &'static str)> {
    let mut paths: Vec<(String, &str, &str)> = resources::all()
        .iter()
        .map(|r| (r.group, r.version))
        .chain(conversion::all().iter().map(|c| (c.group, c.version)))
        .map(|(group, version)| {
            let path = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            (path, group, version)
        })
        .collect();
    paths.dedup();
    paths
}

/// `GET /openapi/v3`: the index of group-version documents.
pub fn openapi_index() -> Value {
    let hash = env!("CARGO_PKG_VERSION");
    let paths: serde_json::Map<String, Value> = group_version_paths()
        .into_iter()
        .map(|(path, _, _)| {
            let url = format!("/openapi/v3/{path}?hash={hash}");
            (path, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// `GET /openapi/v3/<path>`: the operations of one group-version. It declares the `fieldValidation` parameter
/// on every patch, so kubectl leaves validation to this server; it lists no strategic-merge media type, so
/// kubectl computes strategic patches from its built-in knowledge of the kinds.
pub fn openapi_document(path: &str) -> Option<Value> {
    static DOCUMENTS: std::sync::Mutex<BTreeMap<String, Arc<Value>>> =
        std::sync::Mutex::new(BTreeMap::new());
    if let Some(document) = DOCUMENTS.lock().ok()?.get(path) {
        return Some(Value::clone(document));
    }
    let document = Arc::new(build_openapi_document(path)?);
    DOCUMENTS
        .lock()
        .ok()?
        .insert(path.to_owned(), document.clone());
    Some(Value::clone(&document))
}

fn build_openapi_document(path: &str) -> Option<Value> {
    let (_, group, version) = group_version_paths()
        .into_iter()
        .find(|(p, _, _)| p == path)?;
    let mut paths = serde_json::Map::new();
    for (resource, _) in served_at(group, version) {
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let item = if resource.namespaced {
            format!(
                "{base}/namespaces/{{namespace}}/{}/{{name}}",
                resource.plural
            )
        } else {
            format!("{base}/{}/{{name}}", resource.plural)
        };
        let gvk = json!({"group": group, "version": version, "kind": resource.kind});
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
        ]);
        let body = json!({"content": {
            "application/json-patch+json": {"schema": {"type": "object"}},
            "application/merge-patch+json": {"schema": {"type": "object"}},
            "application/apply-patch+yaml": {"schema": {"type": "object"}},
        }});
        let operation = |action: &str| {
            json!({
                "operationId": format!("{action}{}", resource.kind),
                "parameters": params,
                "requestBody": body,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        paths.insert(
            item,
            json!({"patch": operation("patch"), "put": operation("put")}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "wasmkube", "version": format!("v1.{KUBERNETES_MINOR}.0")},
        "paths": paths,
        "components": {"schemas": openapi_schemas::schemas(path)?},
    }))
}

/// `GET /openapi/v2`: an empty OpenAPI v2 document in gnostic's protobuf form, which is what kubectl before
/// 1.27 asks for. With no definitions in it, kubectl leaves validation to the server and computes strategic
/// patches from its built-in knowledge of the kinds.
pub fn openapi_v2_protobuf() -> Vec<u8> {
    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        // Length-delimited field: tag (number << 3 | 2), then a one-byte length (every part here is short).
        let mut out = vec![(number << 3) | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }
    let version = format!("v1.{KUBERNETES_MINOR}.0");
    let info = [field(1, b"wasmkube"), field(2, version.as_bytes())].concat();
    [field(1, b"2.0"), field(2, &info)].concat()
}
