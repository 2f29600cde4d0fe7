//! Kubernetes' .proto files, loaded once from their compiled descriptors, and which message an
//! `apiVersion` and `kind` are.

use protobuf::Message;
use protobuf::descriptor::FileDescriptorSet;
use protobuf::reflect::{FileDescriptor, MessageDescriptor};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The compiled .proto files, as `scripts/protobuf-descriptors` writes them (Kubernetes 1.35).
const DESCRIPTORS: &[u8] = include_bytes!("../../../proto/kubernetes.desc");

/// The .proto file of each API group version served in protobuf, by group (empty for core) and version.
const GROUP_VERSIONS: &[(&str, &str, &str)] = &[
    ("", "v1", "api/core/v1"),
    (
        "admissionregistration.k8s.io",
        "v1",
        "api/admissionregistration/v1",
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "apiextensions_apiserver/pkg/apis/apiextensions/v1",
    ),
    ("apps", "v1", "api/apps/v1"),
    ("authentication.k8s.io", "v1", "api/authentication/v1"),
    ("authorization.k8s.io", "v1", "api/authorization/v1"),
    ("autoscaling", "v1", "api/autoscaling/v1"),
    ("autoscaling", "v2", "api/autoscaling/v2"),
    ("batch", "v1", "api/batch/v1"),
    ("certificates.k8s.io", "v1", "api/certificates/v1"),
    ("coordination.k8s.io", "v1", "api/coordination/v1"),
    ("discovery.k8s.io", "v1", "api/discovery/v1"),
    ("events.k8s.io", "v1", "api/events/v1"),
    ("flowcontrol.apiserver.k8s.io", "v1", "api/flowcontrol/v1"),
    ("meta.k8s.io", "v1", "apimachinery/pkg/apis/meta/v1"),
    ("networking.k8s.io", "v1", "api/networking/v1"),
    ("node.k8s.io", "v1", "api/node/v1"),
    ("policy", "v1", "api/policy/v1"),
    ("rbac.authorization.k8s.io", "v1", "api/rbac/v1"),
    ("scheduling.k8s.io", "v1", "api/scheduling/v1"),
    ("storage.k8s.io", "v1", "api/storage/v1"),
];

/// apimachinery's meta/v1 file, whose kinds (Status, DeleteOptions, WatchEvent, ...) every group version
/// has, as Kubernetes registers them in each.
const META: &str = "apimachinery/pkg/apis/meta/v1";
/// apimachinery's runtime file: the envelope (`Unknown`) and raw extensions.
pub const RUNTIME: &str = "apimachinery/pkg/runtime";

/// Every loaded file, by its path without `/generated.proto`.
fn files() -> &'static HashMap<String, FileDescriptor> {
    static FILES: OnceLock<HashMap<String, FileDescriptor>> = OnceLock::new();
    FILES.get_or_init(|| {
        let loaded = FileDescriptorSet::parse_from_bytes(DESCRIPTORS)
            .map_err(|e| e.to_string())
            .and_then(|set| {
                FileDescriptor::new_dynamic_fds(set.file, &[]).map_err(|e| e.to_string())
            });
        match loaded {
            Ok(files) => files
                .into_iter()
                .map(|f| (f.name().trim_end_matches("/generated.proto").to_owned(), f))
                .collect(),
            Err(error) => {
                tracing::error!(%error, "Kubernetes' protobuf descriptors could not be loaded");
                HashMap::new()
            }
        }
    })
}

/// The message `name` of the file at `path` (`apimachinery/pkg/runtime`).
pub fn in_file(path: &str, name: &str) -> Option<MessageDescriptor> {
    files().get(path)?.message_by_package_relative_name(name)
}

/// The message of `kind` in `api_version`, if the group version is served in protobuf and has it.
pub fn message(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let (_, _, path) = GROUP_VERSIONS
        .iter()
        .find(|(g, v, _)| *g == group && *v == version)?;
    in_file(path, kind).or_else(|| in_file(META, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_group_version_has_its_file() {
        for (group, version, path) in GROUP_VERSIONS {
            assert!(files().contains_key(*path), "{group}/{version}: {path}");
        }
        assert_eq!(
            message("apps/v1", "Deployment").map(|m| m.full_name().to_owned()),
            Some("api.apps.v1.Deployment".into())
        );
        assert_eq!(
            message("v1", "Status").map(|m| m.full_name().to_owned()),
            Some("apimachinery.pkg.apis.meta.v1.Status".into())
        );
        assert!(message("example.com/v1", "Widget").is_none());
        assert!(message("apps/v1", "Widget").is_none());
    }
}
