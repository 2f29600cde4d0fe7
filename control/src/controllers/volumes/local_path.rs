//! The local-path provisioner (k3s' local-path-provisioner, built in): a claim of a class it serves gets a
//! volume that is a directory on the node its first pod was scheduled to, under the root that node's agent
//! announces, pinned to that node by node affinity. Pure: the caller creates the volume; the agent makes the
//! directory when a pod mounts it and removes it when the volume is deleted.

use crate::api::storage::{
    LOCAL_PATH_ROOT, PROVISIONED_BY, claim_modes, claim_request, local_path_refusal, local_room,
};
use k8s_openapi::api::core::v1::{
    LocalVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use wasmkube_core::local_volumes::LOCAL_PATH_PROVISIONER;

/// The name of the volume provisioned for a claim (what Kubernetes' provisioners call it).
pub fn volume_name(claim: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or_default())
}

/// The volume for `claim` of `class` on `node`, or why there is none (the ProvisioningFailed Event's words).
/// Every name in the path is one the apiserver validated (DNS labels and subdomains, a uid); the agent checks
/// the path again before it uses it.
pub fn volume_for(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node: Option<&Node>,
    node_name: &str,
) -> Result<PersistentVolume, String> {
    if let Some(reason) = local_path_refusal(claim, class) {
        return Err(reason);
    }
    let modes = claim_modes(claim).to_vec();
    let node = node.ok_or_else(|| format!("node {node_name:?} not found"))?;
    let root = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LOCAL_PATH_ROOT))
        .filter(|r| r.starts_with('/'))
        .ok_or_else(|| {
            format!(
                "node {node_name:?} does not offer local volumes (no {LOCAL_PATH_ROOT} annotation)"
            )
        })?;
    let request = claim_request(claim).ok_or("the claim requests no storage")?;
    if let Some(room) = local_room(node)
        && request.milli() > room.milli()
    {
        return Err(format!(
            "the claim requests {}, more than node {node_name:?} can give ({} in {root})",
            request_text(claim),
            room_text(node)
        ));
    }
    let namespace = claim.metadata.namespace.clone().unwrap_or_default();
    let claim_name = claim.metadata.name.clone().unwrap_or_default();
    let name = volume_name(claim);
    let path = format!(
        "{}/{name}_{namespace}_{claim_name}",
        root.trim_end_matches('/')
    );
    let capacity = BTreeMap::from([(
        "storage".to_owned(),
        k8s_openapi::apimachinery::pkg::api::resource::Quantity(request_text(claim)),
    )]);
    Ok(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.to_owned(),
                LOCAL_PATH_PROVISIONER.to_owned(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: Some(modes),
            capacity: Some(capacity),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(namespace),
                name: Some(claim_name),
                uid: claim.metadata.uid.clone(),
                ..Default::default()
            }),
            local: Some(LocalVolumeSource {
                path,
                fs_type: None,
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![node_name.to_owned()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            persistent_volume_reclaim_policy: class.reclaim_policy.clone(),
            storage_class_name: class.metadata.name.clone(),
            volume_mode: Some("Filesystem".into()),
            ..Default::default()
        }),
        status: None,
    })
}

fn request_text(claim: &PersistentVolumeClaim) -> String {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

fn room_text(node: &Node) -> String {
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get("ephemeral-storage"))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(modes: &[&str], size: &str) -> PersistentVolumeClaim {
        serde_json::from_value(
            json!({"metadata": {"name": "data-kv-0", "namespace": "ns", "uid": "u1"},
            "spec": {"accessModes": modes, "resources": {"requests": {"storage": size}},
                     "storageClassName": "local-path"}}),
        )
        .unwrap()
    }

    fn node() -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n1",
            "annotations": {LOCAL_PATH_ROOT: "/var/lib/wasmkube/storage"}},
            "status": {"allocatable": {"ephemeral-storage": "10Gi"}}}))
        .unwrap()
    }

    #[test]
    fn a_claim_gets_a_directory_under_its_nodes_root_pinned_to_that_node() {
        let class = crate::api::storage::local_path_class();
        let volume = volume_for(
            &claim(&["ReadWriteOnce"], "1Gi"),
            &class,
            Some(&node()),
            "n1",
        )
        .unwrap();
        assert_eq!(volume.metadata.name.as_deref(), Some("pvc-u1"));
        let spec = volume.spec.unwrap();
        assert_eq!(
            spec.local.unwrap().path,
            "/var/lib/wasmkube/storage/pvc-u1_ns_data-kv-0"
        );
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        assert_eq!(spec.claim_ref.unwrap().uid.as_deref(), Some("u1"));
        let pinned = serde_json::to_value(spec.node_affinity).unwrap();
        assert_eq!(
            pinned["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
            json!(["n1"])
        );
    }

    #[test]
    fn what_a_node_directory_cannot_be_is_refused_with_a_reason() {
        let class = crate::api::storage::local_path_class();
        let shared = volume_for(
            &claim(&["ReadWriteMany"], "1Gi"),
            &class,
            Some(&node()),
            "n1",
        );
        assert_eq!(
            shared.unwrap_err(),
            "wasmkube.io/local-path supports only the ReadWriteOnce and ReadWriteOncePod access modes, not ReadWriteMany"
        );
        let huge = volume_for(
            &claim(&["ReadWriteOnce"], "100Ti"),
            &class,
            Some(&node()),
            "n1",
        );
        assert_eq!(
            huge.unwrap_err(),
            "the claim requests 100Ti, more than node \"n1\" can give (10Gi in /var/lib/wasmkube/storage)"
        );
        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "n2"}})).unwrap();
        assert!(
            volume_for(&claim(&["ReadWriteOnce"], "1Gi"), &class, Some(&bare), "n2")
                .unwrap_err()
                .contains("does not offer local volumes")
        );
    }
}
