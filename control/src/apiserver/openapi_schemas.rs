//! The OpenAPI v3 schemas of the served kinds (each group version document's `components.schemas`), kept as
//! generated JSON under `control/openapi/`, one file per group version, as Kubernetes keeps its
//! `api/openapi-spec/v3`. They are Kubernetes' own schemas as k8s-openapi carries them (through schemars), with
//! the list and patch markers k8s-openapi lacks and each kind's group, version and kind. The server's build
//! reads the files and compiles neither schemars nor k8s-openapi's schema code (which doubled k8s-openapi's
//! build time). The test below generates them again and fails when a file differs;
//! `WASMKUBE_UPDATE_OPENAPI=1 cargo test --workspace --lib openapi_schemas` writes them anew.

use serde_json::{Map, Value};

/// Every generated file: the group version's path and the file's text.
const DOCUMENTS: &[(&str, &str)] = &[
    ("api/v1", include_str!("../../openapi/api__v1.json")),
    (
        "apis/apps/v1",
        include_str!("../../openapi/apis__apps__v1.json"),
    ),
    (
        "apis/authentication.k8s.io/v1",
        include_str!("../../openapi/apis__authentication.k8s.io__v1.json"),
    ),
    (
        "apis/authorization.k8s.io/v1",
        include_str!("../../openapi/apis__authorization.k8s.io__v1.json"),
    ),
    (
        "apis/autoscaling/v1",
        include_str!("../../openapi/apis__autoscaling__v1.json"),
    ),
    (
        "apis/autoscaling/v2",
        include_str!("../../openapi/apis__autoscaling__v2.json"),
    ),
    (
        "apis/batch/v1",
        include_str!("../../openapi/apis__batch__v1.json"),
    ),
    (
        "apis/certificates.k8s.io/v1",
        include_str!("../../openapi/apis__certificates.k8s.io__v1.json"),
    ),
    (
        "apis/coordination.k8s.io/v1",
        include_str!("../../openapi/apis__coordination.k8s.io__v1.json"),
    ),
    (
        "apis/discovery.k8s.io/v1",
        include_str!("../../openapi/apis__discovery.k8s.io__v1.json"),
    ),
    (
        "apis/metrics.k8s.io/v1beta1",
        include_str!("../../openapi/apis__metrics.k8s.io__v1beta1.json"),
    ),
    (
        "apis/networking.k8s.io/v1",
        include_str!("../../openapi/apis__networking.k8s.io__v1.json"),
    ),
    (
        "apis/policy/v1",
        include_str!("../../openapi/apis__policy__v1.json"),
    ),
    (
        "apis/rbac.authorization.k8s.io/v1",
        include_str!("../../openapi/apis__rbac.authorization.k8s.io__v1.json"),
    ),
    (
        "apis/scheduling.k8s.io/v1",
        include_str!("../../openapi/apis__scheduling.k8s.io__v1.json"),
    ),
    (
        "apis/storage.k8s.io/v1",
        include_str!("../../openapi/apis__storage.k8s.io__v1.json"),
    ),
];

/// The schemas of the group version whose documents are at `path` (`api/v1`, `apis/apps/v1`).
pub fn schemas(path: &str) -> Option<Map<String, Value>> {
    let (_, text) = DOCUMENTS.iter().find(|(p, _)| *p == path)?;
    serde_json::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::discovery::{group_version_paths, served_at};
    use serde_json::json;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The components of a group version's document: the schemas of its kinds and of everything they hold,
    /// Kubernetes' own as k8s-openapi carries them, each kind's marked with its group, version and kind (which
    /// `kubectl explain` looks for).
    fn generate(group: &str, version: &str) -> Map<String, Value> {
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        let mut kinds = Vec::new();
        for (resource, conversion) in served_at(group, version) {
            let reference = conversion.map_or(resource.schema, |c| c.schema)(&mut generator);
            let name = reference
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.rsplit('/').next())
                .map(str::to_owned);
            if let Some(name) = name {
                kinds.push((name, resource.kind));
            }
        }
        let mut schemas = generator.take_definitions(true);
        mark_lists(&mut schemas);
        for (name, kind) in kinds {
            if let Some(schema) = schemas.get_mut(&name) {
                schema["x-kubernetes-group-version-kind"] =
                    json!([{"group": group, "version": version, "kind": kind}]);
            }
        }
        schemas
    }

    /// Adds Kubernetes' list and patch markers, which k8s-openapi's schemas lack, from the merge rules this server
    /// applies itself (`api::schema`): kubectl computes client-side apply patches from them (without them a
    /// list would be replaced whole, and an item removed from a manifest would stay).
    fn mark_lists(schemas: &mut Map<String, Value>) {
        use crate::api::schema::{ListType, list_type};
        for schema in schemas.values_mut() {
            let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut)
            else {
                continue;
            };
            for (field, property) in properties.iter_mut() {
                if property["type"] != "array" {
                    continue;
                }
                let item = property["items"]["$ref"]
                    .as_str()
                    .and_then(|r| r.rsplit('/').next())
                    .unwrap_or_default()
                    .to_owned();
                // The same field name means other lists in other kinds.
                let listed = match (field.as_str(), item.as_str()) {
                    ("ports", "io.k8s.api.core.v1.ContainerPort") => {
                        ListType::Map(&["containerPort", "protocol"])
                    }
                    ("ports", "io.k8s.api.core.v1.ServicePort") => {
                        ListType::Map(&["port", "protocol"])
                    }
                    ("addresses", "io.k8s.api.core.v1.NodeAddress") => ListType::Map(&["type"]),
                    ("ports" | "addresses", _) => ListType::Atomic,
                    _ => list_type(field, &[]),
                };
                match listed {
                    ListType::Map(keys) => {
                        property["x-kubernetes-list-type"] = "map".into();
                        property["x-kubernetes-list-map-keys"] = json!(keys);
                        property["x-kubernetes-patch-strategy"] = if field == "volumes" {
                            "merge,retainKeys".into()
                        } else {
                            "merge".into()
                        };
                        property["x-kubernetes-patch-merge-key"] = keys[0].into();
                    }
                    ListType::Set => {
                        property["x-kubernetes-list-type"] = "set".into();
                        property["x-kubernetes-patch-strategy"] = "merge".into();
                    }
                    ListType::Atomic => property["x-kubernetes-list-type"] = "atomic".into(),
                }
            }
        }
    }

    /// The file a group version's schemas are kept in: `apis/apps/v1` → `apis__apps__v1.json`.
    fn file_name(path: &str) -> String {
        format!("{}.json", path.replace('/', "__"))
    }

    #[test]
    fn generated_schemas_are_current() {
        let update = std::env::var_os("WASMKUBE_UPDATE_OPENAPI").is_some();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi");
        let paths = group_version_paths();
        let mut stale = Vec::new();
        for (path, group, version) in &paths {
            let text = serde_json::to_string_pretty(&generate(group, version)).unwrap() + "\n";
            if update {
                std::fs::write(dir.join(file_name(path)), &text).unwrap();
            }
            let embedded = DOCUMENTS.iter().find(|(p, _)| p == path).map(|(_, t)| *t);
            if embedded != Some(text.as_str()) {
                stale.push(path.as_str());
            }
        }
        let served: BTreeSet<&str> = paths.iter().map(|(path, _, _)| path.as_str()).collect();
        let kept: BTreeSet<&str> = DOCUMENTS.iter().map(|(path, _)| *path).collect();
        assert_eq!(
            kept, served,
            "DOCUMENTS lists one file per served group version"
        );
        assert!(
            update || stale.is_empty(),
            "control/openapi/ is out of date for {stale:?}: run WASMKUBE_UPDATE_OPENAPI=1 cargo test --workspace --lib openapi_schemas"
        );
    }

    #[test]
    fn a_kind_carries_its_group_version_kind_and_list_markers() {
        let apps = schemas("apis/apps/v1").unwrap();
        let deployment = &apps["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        let containers = &apps["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert!(schemas("apis/nope/v1").is_none());
    }
}
