//! Validation of the storage kinds, with Kubernetes' messages: PersistentVolume and PersistentVolumeClaim
//! (core/v1, pkg/apis/core/validation) and StorageClass (storage.k8s.io/v1, pkg/apis/storage/validation).

use super::pod::node_selector;
use super::{Cause, dns1123_subdomain, label_selector, one_of, qualified_name};
use crate::api::quantity::Quantity;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaimSpec, PersistentVolumeSpec, VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;

/// The access modes Kubernetes knows.
pub const ACCESS_MODES: [&str; 4] = [
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const RECLAIM_POLICIES: [&str; 3] = ["Delete", "Recycle", "Retain"];
const VOLUME_MODES: [&str; 2] = ["Block", "Filesystem"];
const BINDING_MODES: [&str; 2] = ["Immediate", "WaitForFirstConsumer"];
const CLASS_RECLAIM_POLICIES: [&str; 2] = ["Delete", "Retain"];
/// Most parameters a StorageClass may have, and most bytes in all.
const MAX_PARAMETERS: usize = 512;
const MAX_PARAMETERS_SIZE: usize = 256 * 1024;

fn access_modes(field: &str, modes: &[String], causes: &mut Vec<Cause>) {
    let (mut once_pod, mut others) = (false, false);
    for mode in modes {
        if !ACCESS_MODES.contains(&mode.as_str()) {
            causes.push(Cause::not_supported(field, mode, &ACCESS_MODES));
        } else if mode == "ReadWriteOncePod" {
            once_pod = true;
        } else {
            others = true;
        }
    }
    if once_pod && others {
        causes.push(Cause::forbidden(
            field,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

/// A storage size that must parse and be above zero.
fn positive_size(field: &str, text: &str, causes: &mut Vec<Cause>) {
    match Quantity::parse(text) {
        Ok(q) if q.milli() <= 0 => {
            causes.push(Cause::invalid(field, text, "must be greater than zero"))
        }
        Ok(_) => {}
        Err(e) => causes.push(Cause::invalid(field, text, &e.to_string())),
    }
}

fn class_name(field: &str, name: Option<&str>, causes: &mut Vec<Cause>) {
    if let Some(name) = name.filter(|n| !n.is_empty())
        && let Some(message) = dns1123_subdomain(name)
    {
        causes.push(Cause::invalid(field, name, &message));
    }
}

/// A path on the node: set, and never stepping back up (`..`).
fn node_path(field: &str, path: &str, causes: &mut Vec<Cause>) {
    if path.is_empty() {
        causes.push(Cause::required(field));
    } else if path.split('/').any(|part| part == "..") {
        causes.push(Cause::invalid(field, path, "must not contain '..'"));
    }
}

/// The volume sources a PersistentVolume has, by field name.
fn volume_sources(spec: &PersistentVolumeSpec) -> Vec<&'static str> {
    [
        ("hostPath", spec.host_path.is_some()),
        ("gcePersistentDisk", spec.gce_persistent_disk.is_some()),
        (
            "awsElasticBlockStore",
            spec.aws_elastic_block_store.is_some(),
        ),
        ("glusterfs", spec.glusterfs.is_some()),
        ("flocker", spec.flocker.is_some()),
        ("nfs", spec.nfs.is_some()),
        ("rbd", spec.rbd.is_some()),
        ("quobyte", spec.quobyte.is_some()),
        ("cephFS", spec.cephfs.is_some()),
        ("iscsi", spec.iscsi.is_some()),
        ("cinder", spec.cinder.is_some()),
        ("fc", spec.fc.is_some()),
        ("flexVolume", spec.flex_volume.is_some()),
        ("azureFile", spec.azure_file.is_some()),
        ("vsphereVolume", spec.vsphere_volume.is_some()),
        (
            "photonPersistentDisk",
            spec.photon_persistent_disk.is_some(),
        ),
        ("portworxVolume", spec.portworx_volume.is_some()),
        ("azureDisk", spec.azure_disk.is_some()),
        ("scaleIO", spec.scale_io.is_some()),
        ("local", spec.local.is_some()),
        ("storageos", spec.storageos.is_some()),
        ("csi", spec.csi.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(name, _)| name)
    .collect()
}

/// A PersistentVolume's spec (ValidatePersistentVolumeSpec for a volume that is not inline).
pub fn persistent_volume(spec: &PersistentVolumeSpec, causes: &mut Vec<Cause>) {
    let modes = spec.access_modes.as_deref().unwrap_or_default();
    if modes.is_empty() {
        causes.push(Cause::required("spec.accessModes"));
    }
    access_modes("spec.accessModes", modes, causes);
    let capacity = spec.capacity.clone().unwrap_or_default();
    if capacity.is_empty() {
        causes.push(Cause::required("spec.capacity"));
    }
    if !capacity.contains_key("storage") || capacity.len() > 1 {
        let keys: Vec<&str> = capacity.keys().map(String::as_str).collect();
        causes.push(Cause::not_supported(
            "spec.capacity",
            &format!("{keys:?}"),
            &["storage"],
        ));
    }
    for (name, quantity) in &capacity {
        positive_size(&format!("spec.capacity[{name}]"), &quantity.0, causes);
    }
    one_of(
        "spec.persistentVolumeReclaimPolicy",
        spec.persistent_volume_reclaim_policy
            .as_deref()
            .filter(|p| !p.is_empty()),
        &RECLAIM_POLICIES,
        causes,
    );
    let mut has_node_affinity = false;
    if let Some(affinity) = &spec.node_affinity {
        has_node_affinity = true;
        match &affinity.required {
            Some(required) => node_selector("spec.nodeAffinity.required", required, causes),
            None => causes.push(Cause::required_because(
                "spec.nodeAffinity.required",
                "must specify required node constraints",
            )),
        }
    }
    match volume_sources(spec).as_slice() {
        [] => causes.push(Cause::required_because(
            "spec",
            "must specify a volume type",
        )),
        [_] => {}
        [_, second, ..] => causes.push(Cause::forbidden(
            format!("spec.{second}"),
            "may not specify more than 1 volume type",
        )),
    }
    if let Some(host) = &spec.host_path {
        node_path("spec.hostPath.path", &host.path, causes);
    }
    if let Some(local) = &spec.local {
        node_path("spec.local.path", &local.path, causes);
        if !has_node_affinity {
            causes.push(Cause::required_because(
                "spec.nodeAffinity",
                "Local volume requires node affinity",
            ));
        }
    }
    class_name(
        "spec.storageClassName",
        spec.storage_class_name.as_deref(),
        causes,
    );
    one_of(
        "spec.volumeMode",
        spec.volume_mode.as_deref(),
        &VOLUME_MODES,
        causes,
    );
}

/// What may change in a PersistentVolume: not its volume source, volume mode or a node affinity once set.
pub fn persistent_volume_update(
    new: &PersistentVolumeSpec,
    old: &PersistentVolumeSpec,
    causes: &mut Vec<Cause>,
) {
    // Everything but the volume source, cleared: what is left is the source.
    let source = |s: &PersistentVolumeSpec| PersistentVolumeSpec {
        access_modes: None,
        capacity: None,
        claim_ref: None,
        mount_options: None,
        node_affinity: None,
        persistent_volume_reclaim_policy: None,
        storage_class_name: None,
        volume_attributes_class_name: None,
        volume_mode: None,
        ..s.clone()
    };
    if source(new) != source(old) {
        causes.push(Cause::forbidden(
            "spec.persistentvolumesource",
            "spec.persistentvolumesource is immutable after creation",
        ));
    }
    if new.volume_mode != old.volume_mode {
        causes.push(Cause::invalid_value(
            "volumeMode",
            &new.volume_mode,
            "field is immutable",
        ));
    }
    if old.node_affinity.is_some() && new.node_affinity != old.node_affinity {
        causes.push(Cause::invalid_value(
            "nodeAffinity",
            &new.node_affinity,
            "field is immutable",
        ));
    }
}

fn storage_request(resources: Option<&VolumeResourceRequirements>) -> Option<&str> {
    resources?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.as_str())
}

/// A PersistentVolumeClaim's spec (ValidatePersistentVolumeClaimSpec).
pub fn persistent_volume_claim(
    field: &str,
    spec: &PersistentVolumeClaimSpec,
    causes: &mut Vec<Cause>,
) {
    let modes = spec.access_modes.as_deref().unwrap_or_default();
    if modes.is_empty() {
        causes.push(Cause::required_because(
            format!("{field}.accessModes"),
            "at least 1 access mode is required",
        ));
    }
    if let Some(selector) = &spec.selector {
        label_selector(&format!("{field}.selector"), selector, causes);
    }
    access_modes(&format!("{field}.accessModes"), modes, causes);
    let at = format!("{field}.resources[storage]");
    match storage_request(spec.resources.as_ref()) {
        None => causes.push(Cause::required(at)),
        Some(size) => positive_size(&at, size, causes),
    }
    class_name(
        &format!("{field}.storageClassName"),
        spec.storage_class_name.as_deref(),
        causes,
    );
    one_of(
        &format!("{field}.volumeMode"),
        spec.volume_mode.as_deref(),
        &VOLUME_MODES,
        causes,
    );
    if let Some(source) = &spec.data_source {
        let kind_ok = source.api_group.as_deref().is_some_and(|g| !g.is_empty())
            || source.kind == "PersistentVolumeClaim";
        if !kind_ok {
            causes.push(Cause::invalid(
                format!("{field}.dataSource"),
                &source.kind,
                "must be 'PersistentVolumeClaim' when referencing the default apiGroup",
            ));
        }
    }
}

/// What may change in a claim: its spec is fixed but for a volumeName set once and a bound claim's storage
/// request, which may only grow.
pub fn persistent_volume_claim_update(
    new: &PersistentVolumeClaimSpec,
    old: &PersistentVolumeClaimSpec,
    bound: bool,
    causes: &mut Vec<Cause>,
) {
    let mut comparable = new.clone();
    if old.volume_name.as_deref().is_none_or(str::is_empty) {
        comparable.volume_name = old.volume_name.clone();
    }
    if old.storage_class_name.is_none() && new.storage_class_name.is_some() {
        comparable.storage_class_name = None;
    }
    if bound {
        comparable.resources = old.resources.clone();
    }
    comparable.volume_attributes_class_name = old.volume_attributes_class_name.clone();
    if comparable != *old {
        causes.push(Cause::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    let size = |s: &PersistentVolumeClaimSpec| {
        storage_request(s.resources.as_ref()).and_then(|q| Quantity::parse(q).ok())
    };
    if let (Some(new_size), Some(old_size)) = (size(new), size(old))
        && new_size.milli() < old_size.milli()
    {
        causes.push(Cause::forbidden(
            "spec.resources.requests.storage",
            "field can not be less than previous value",
        ));
    }
    if new.volume_mode != old.volume_mode {
        causes.push(Cause::invalid_value(
            "volumeMode",
            &new.volume_mode,
            "field is immutable",
        ));
    }
}

/// A StorageClass (ValidateStorageClass).
pub fn storage_class(class: &StorageClass, causes: &mut Vec<Cause>) {
    if class.provisioner.is_empty() {
        causes.push(Cause::required("provisioner"));
    } else {
        qualified_name(
            "provisioner",
            &class.provisioner.to_ascii_lowercase(),
            causes,
        );
    }
    let parameters = class.parameters.clone().unwrap_or_default();
    if parameters.len() > MAX_PARAMETERS {
        causes.push(Cause::too_many(
            "parameters",
            parameters.len(),
            MAX_PARAMETERS,
        ));
    } else {
        let mut size = 0;
        for (key, value) in &parameters {
            if key.is_empty() {
                causes.push(Cause::invalid("parameters", key, "field can not be empty."));
            }
            size += key.len() + value.len();
        }
        if size > MAX_PARAMETERS_SIZE {
            causes.push(Cause::too_long("parameters", MAX_PARAMETERS_SIZE));
        }
    }
    one_of(
        "reclaimPolicy",
        class.reclaim_policy.as_deref(),
        &CLASS_RECLAIM_POLICIES,
        causes,
    );
    match class.volume_binding_mode.as_deref() {
        None => causes.push(Cause::required("volumeBindingMode")),
        mode => one_of("volumeBindingMode", mode, &BINDING_MODES, causes),
    }
}

/// What may change in a StorageClass: not its parameters, provisioner, reclaim policy or binding mode.
pub fn storage_class_update(new: &StorageClass, old: &StorageClass, causes: &mut Vec<Cause>) {
    if new.parameters.clone().unwrap_or_default() != old.parameters.clone().unwrap_or_default() {
        causes.push(Cause::forbidden(
            "parameters",
            "updates to parameters are forbidden.",
        ));
    }
    if new.provisioner != old.provisioner {
        causes.push(Cause::forbidden(
            "provisioner",
            "updates to provisioner are forbidden.",
        ));
    }
    if new.reclaim_policy != old.reclaim_policy {
        causes.push(Cause::forbidden(
            "reclaimPolicy",
            "updates to reclaimPolicy are forbidden.",
        ));
    }
    if new.volume_binding_mode != old.volume_binding_mode {
        causes.push(Cause::invalid_value(
            "volumeBindingMode",
            &new.volume_binding_mode,
            "field is immutable",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(causes: &[Cause]) -> Vec<String> {
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn a_persistent_volume_needs_modes_a_size_and_exactly_one_source() {
        let spec: PersistentVolumeSpec = serde_json::from_value(json!({
            "accessModes": ["ReadWriteOnce", "ReadWriteOncePod", "Sometimes"],
            "capacity": {"storage": "0", "cpu": "1"},
            "hostPath": {"path": "/data/../etc"}, "nfs": {"server": "x", "path": "/"},
            "local": {"path": "/x"},
            "persistentVolumeReclaimPolicy": "Shred"}))
        .unwrap();
        let mut causes = Vec::new();
        persistent_volume(&spec, &mut causes);
        let text = fields(&causes).join("\n");
        for expected in [
            "spec.accessModes: Unsupported value: \"Sometimes\"",
            "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes",
            "spec.capacity: Unsupported value",
            "spec.capacity[storage]: Invalid value: \"0\": must be greater than zero",
            "spec.persistentVolumeReclaimPolicy: Unsupported value: \"Shred\"",
            "spec.nfs: Forbidden: may not specify more than 1 volume type",
            "spec.hostPath.path: Invalid value: \"/data/../etc\": must not contain '..'",
            "spec.nodeAffinity: Required value: Local volume requires node affinity",
        ] {
            assert!(text.contains(expected), "{expected} not in\n{text}");
        }
        let mut causes = Vec::new();
        persistent_volume(&PersistentVolumeSpec::default(), &mut causes);
        assert_eq!(
            fields(&causes),
            [
                "spec.accessModes: Required value",
                "spec.capacity: Required value",
                "spec.capacity: Unsupported value: \"[]\": supported values: \"storage\"",
                "spec: Required value: must specify a volume type"
            ]
        );
    }

    #[test]
    fn a_claim_needs_a_mode_and_a_positive_size_and_changes_only_as_kubernetes_allows() {
        let spec: PersistentVolumeClaimSpec = serde_json::from_value(json!({
            "accessModes": [], "resources": {"requests": {"storage": "-1Gi"}},
            "storageClassName": "Not_A_Name"}))
        .unwrap();
        let mut causes = Vec::new();
        persistent_volume_claim("spec", &spec, &mut causes);
        let text = fields(&causes).join("\n");
        assert!(
            text.contains("spec.accessModes: Required value: at least 1 access mode is required")
        );
        assert!(text.contains(
            "spec.resources[storage]: Invalid value: \"-1Gi\": must be greater than zero"
        ));
        assert!(text.contains("spec.storageClassName: Invalid value: \"Not_A_Name\""));

        let old: PersistentVolumeClaimSpec = serde_json::from_value(json!({
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}))
        .unwrap();
        let mut bound = old.clone();
        bound.volume_name = Some("pv-1".into());
        let mut causes = Vec::new();
        persistent_volume_claim_update(&bound, &old, false, &mut causes);
        assert!(causes.is_empty(), "volumeName is set once: {causes:?}");
        let mut bigger: PersistentVolumeClaimSpec = serde_json::from_value(json!({
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}},
            "volumeName": "pv-1"}))
        .unwrap();
        let mut causes = Vec::new();
        persistent_volume_claim_update(&bigger, &bound, true, &mut causes);
        assert!(causes.is_empty(), "a bound claim may grow: {causes:?}");
        bigger.access_modes = Some(vec!["ReadWriteMany".into()]);
        let mut causes = Vec::new();
        persistent_volume_claim_update(&bigger, &bound, true, &mut causes);
        assert_eq!(
            fields(&causes),
            [
                "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"
            ]
        );
        let mut causes = Vec::new();
        persistent_volume_claim_update(&old, &bigger, true, &mut causes);
        assert!(fields(&causes).contains(
            &"spec.resources.requests.storage: Forbidden: field can not be less than previous value".to_owned()
        ));
    }

    #[test]
    fn a_storage_class_names_a_provisioner_and_keeps_its_rules() {
        let class: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": "fast"}, "provisioner": "",
            "reclaimPolicy": "Recycle", "volumeBindingMode": "Later"}))
        .unwrap();
        let mut causes = Vec::new();
        storage_class(&class, &mut causes);
        assert_eq!(
            fields(&causes),
            [
                "provisioner: Required value",
                "reclaimPolicy: Unsupported value: \"Recycle\": supported values: \"Delete\", \"Retain\"",
                "volumeBindingMode: Unsupported value: \"Later\": supported values: \"Immediate\", \"WaitForFirstConsumer\""
            ]
        );
        let old: StorageClass = serde_json::from_value(json!({"metadata": {"name": "fast"},
            "provisioner": "a.io/x", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}))
        .unwrap();
        let new: StorageClass = serde_json::from_value(json!({"metadata": {"name": "fast"},
            "provisioner": "b.io/y", "reclaimPolicy": "Retain", "volumeBindingMode": "Immediate",
            "parameters": {"a": "b"}}))
        .unwrap();
        let mut causes = Vec::new();
        storage_class_update(&new, &old, &mut causes);
        assert_eq!(
            fields(&causes),
            [
                "parameters: Forbidden: updates to parameters are forbidden.",
                "provisioner: Forbidden: updates to provisioner are forbidden.",
                "reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden."
            ]
        );
    }
}
