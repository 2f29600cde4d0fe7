//! What the storage kinds share between the apiserver, the scheduler and the controllers: Kubernetes' names
//! for their annotations and finalizers, the default StorageClass, and how a claim and a volume match.

use super::quantity::Quantity;
use super::selector::LabelSelector;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::Value;
pub use wasmkube_core::local_volumes::{LOCAL_PATH_PROVISIONER, LOCAL_PATH_ROOT, PROVISIONED_BY};

/// The finalizer that keeps a claim while a pod uses it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a volume while it is bound.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// The annotation that makes a StorageClass the default.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The older spelling of [`DEFAULT_CLASS`], still honoured.
const BETA_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";
/// The older way a claim names its class.
pub const BETA_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The node the scheduler chose for a WaitForFirstConsumer claim's first pod.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The provisioner a claim waits for.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// Set on a claim once the binder finished binding it.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on a claim or volume the binder bound (rather than the user).
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The StorageClass every cluster starts with, as k3s names it.
pub const LOCAL_PATH_CLASS: &str = "local-path";

/// The StorageClass every cluster starts with (as k3s' local-path): the default, provisioning a directory on
/// the node of the claim's first pod, removed with its claim.
pub fn local_path_class() -> StorageClass {
    StorageClass {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(LOCAL_PATH_CLASS.to_owned()),
            annotations: Some([(DEFAULT_CLASS.to_owned(), "true".to_owned())].into()),
            ..Default::default()
        },
        provisioner: LOCAL_PATH_PROVISIONER.to_owned(),
        reclaim_policy: Some("Delete".to_owned()),
        volume_binding_mode: Some("WaitForFirstConsumer".to_owned()),
        ..Default::default()
    }
}

/// The access modes a directory on one node can serve.
const LOCAL_PATH_MODES: [&str; 2] = ["ReadWriteOnce", "ReadWriteOncePod"];

/// Why the local-path provisioner can never serve a claim of a class, whatever node is chosen (the scheduler asks too, to
/// keep such a claim's pod Pending rather than bound and waiting).
pub fn local_path_refusal(claim: &PersistentVolumeClaim, class: &StorageClass) -> Option<String> {
    let spec = claim.spec.clone().unwrap_or_default();
    if let Some(mode) = claim_modes(claim)
        .iter()
        .find(|m| !LOCAL_PATH_MODES.contains(&m.as_str()))
    {
        return Some(format!(
            "{LOCAL_PATH_PROVISIONER} supports only the ReadWriteOnce and ReadWriteOncePod access modes, not {mode}"
        ));
    }
    if spec
        .volume_mode
        .as_deref()
        .is_some_and(|m| m != "Filesystem")
    {
        return Some(format!(
            "{LOCAL_PATH_PROVISIONER} supports only volumeMode Filesystem"
        ));
    }
    if spec.selector.is_some() {
        return Some("claim Selector is not supported".into());
    }
    if class.volume_binding_mode.as_deref() != Some("WaitForFirstConsumer") {
        return Some(format!(
            "{LOCAL_PATH_PROVISIONER} needs volumeBindingMode WaitForFirstConsumer: a directory lives on the node \
             of the claim's first pod"
        ));
    }
    None
}

/// Adds a finalizer to an object (as JSON) that does not have it yet.
pub fn add_finalizer(object: &mut Value, finalizer: &str) {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let list = metadata
        .entry("finalizers")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(list) = list.as_array_mut()
        && !list.iter().any(|f| f.as_str() == Some(finalizer))
    {
        list.push(finalizer.into());
    }
}

/// Whether a StorageClass is marked as the default.
pub fn is_default_class(class: &StorageClass) -> bool {
    let annotations = class.metadata.annotations.as_ref();
    [DEFAULT_CLASS, BETA_DEFAULT_CLASS]
        .iter()
        .any(|key| annotations.and_then(|a| a.get(*key)).map(String::as_str) == Some("true"))
}

/// The default StorageClass: of those marked, the newest (then the first by name), as Kubernetes picks one.
pub fn default_class(classes: &[StorageClass]) -> Option<&StorageClass> {
    classes
        .iter()
        .filter(|c| is_default_class(c))
        .max_by(|a, b| {
            let created = |c: &StorageClass| c.metadata.creation_timestamp.clone().map(|t| t.0);
            created(a)
                .cmp(&created(b))
                .then_with(|| b.metadata.name.cmp(&a.metadata.name))
        })
}

/// The class a claim asks for: its `storageClassName`, else the beta annotation; `""` means none.
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .or_else(|| {
            claim
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(BETA_CLASS))
                .map(String::as_str)
        })
        .unwrap_or_default()
}

/// The storage a claim requests.
pub fn claim_request(claim: &PersistentVolumeClaim) -> Option<Quantity> {
    let text = claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?;
    Quantity::parse(&text.0).ok()
}

/// The claims a pod's volumes name.
pub fn pod_claims(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
}

/// The storage a node's local volumes share (its `ephemeral-storage`), if it says.
pub fn local_room(node: &Node) -> Option<Quantity> {
    let text = node
        .status
        .as_ref()?
        .allocatable
        .as_ref()?
        .get("ephemeral-storage")?;
    Quantity::parse(&text.0).ok()
}

/// The storage a volume offers.
pub fn volume_capacity(volume: &PersistentVolume) -> Option<Quantity> {
    let text = volume.spec.as_ref()?.capacity.as_ref()?.get("storage")?;
    Quantity::parse(&text.0).ok()
}

/// The access modes of a claim.
pub fn claim_modes(claim: &PersistentVolumeClaim) -> &[String] {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default()
}

/// Whether a volume can serve a claim: same class and volume mode, every mode the claim asks, at least its
/// size, and labels its selector picks (kube-controller-manager's checkVolumeSatisfyClaim).
pub fn satisfies(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let (Some(spec), Some(claim_spec)) = (volume.spec.as_ref(), claim.spec.as_ref()) else {
        return false;
    };
    let modes = spec.access_modes.as_deref().unwrap_or_default();
    let big_enough = match (volume_capacity(volume), claim_request(claim)) {
        (Some(has), Some(wants)) => has.milli() >= wants.milli(),
        _ => false,
    };
    let selected = claim_spec.selector.as_ref().is_none_or(|selector| {
        serde_json::to_value(selector)
            .ok()
            .and_then(|v| LabelSelector::from_object(&v).ok())
            .is_some_and(|s| s.matches(&volume.metadata.labels.clone().unwrap_or_default()))
    });
    let mode = |m: Option<&String>| m.map_or("Filesystem", String::as_str).to_owned();
    spec.storage_class_name.as_deref().unwrap_or_default() == claim_class(claim)
        && mode(spec.volume_mode.as_ref()) == mode(claim_spec.volume_mode.as_ref())
        && claim_modes(claim).iter().all(|m| modes.contains(m))
        && big_enough
        && selected
}

/// The smallest volume of `volumes` that is free (or reserved for this claim) and serves the claim.
pub fn best_volume<'a>(
    volumes: impl IntoIterator<Item = &'a PersistentVolume>,
    claim: &PersistentVolumeClaim,
) -> Option<&'a PersistentVolume> {
    let uid = claim.metadata.uid.as_deref();
    let (namespace, name) = (
        claim.metadata.namespace.as_deref(),
        claim.metadata.name.as_deref(),
    );
    volumes
        .into_iter()
        .filter(|v| v.metadata.deletion_timestamp.is_none())
        .filter(|v| {
            match v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                None => v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available"),
                // Reserved for this claim by name (and uid, once known).
                Some(r) => {
                    r.namespace.as_deref() == namespace
                        && r.name.as_deref() == name
                        && r.uid.as_deref().is_none_or(|u| Some(u) == uid)
                }
            }
        })
        .filter(|v| satisfies(v, claim))
        .min_by_key(|v| volume_capacity(v).map_or(i128::MAX, |q| q.milli()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn volume(
        name: &str,
        size: &str,
        modes: &[&str],
        class: &str,
        phase: &str,
    ) -> PersistentVolume {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"tier": "fast"}},
            "spec": {"capacity": {"storage": size}, "accessModes": modes, "storageClassName": class,
                     "hostPath": {"path": "/x"}},
            "status": {"phase": phase}}),
        )
        .unwrap()
    }

    fn claim(size: &str, modes: &[&str], class: Option<&str>) -> PersistentVolumeClaim {
        let mut spec = json!({"accessModes": modes, "resources": {"requests": {"storage": size}}});
        if let Some(class) = class {
            spec["storageClassName"] = json!(class);
        }
        serde_json::from_value(
            json!({"metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
            "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn a_claim_gets_the_smallest_free_volume_of_its_class_that_serves_it() {
        let volumes = [
            volume("small", "1Gi", &["ReadWriteOnce"], "", "Available"),
            volume("big", "10Gi", &["ReadWriteOnce"], "", "Available"),
            volume("medium", "5Gi", &["ReadWriteOnce"], "", "Available"),
            volume("taken", "3Gi", &["ReadWriteOnce"], "", "Bound"),
            volume("shared-only", "3Gi", &["ReadOnlyMany"], "", "Available"),
            volume(
                "other-class",
                "3Gi",
                &["ReadWriteOnce"],
                "slow",
                "Available",
            ),
        ];
        // 2Gi: small is too small, taken is bound, shared-only lacks RWO, other-class is another class.
        let chosen = best_volume(&volumes, &claim("2Gi", &["ReadWriteOnce"], Some("")));
        assert_eq!(
            chosen.and_then(|v| v.metadata.name.as_deref()),
            Some("medium")
        );
        assert!(best_volume(&volumes, &claim("20Gi", &["ReadWriteOnce"], Some(""))).is_none());
        let mut picky = claim("1Gi", &["ReadWriteOnce"], Some(""));
        picky.spec.as_mut().unwrap().selector =
            Some(serde_json::from_value(json!({"matchLabels": {"tier": "slow"}})).unwrap());
        assert!(
            best_volume(&volumes, &picky).is_none(),
            "its selector picks none"
        );
    }

    #[test]
    fn the_newest_default_class_wins() {
        let class = |name: &str, default: &str, created: &str| -> StorageClass {
            serde_json::from_value(
                json!({"metadata": {"name": name, "creationTimestamp": created,
                "annotations": {DEFAULT_CLASS: default}}, "provisioner": "x"}),
            )
            .unwrap()
        };
        let classes = [
            class("old", "true", "2026-01-01T00:00:00Z"),
            class("new", "true", "2026-06-01T00:00:00Z"),
            class("newest-but-not-default", "false", "2026-12-01T00:00:00Z"),
        ];
        assert_eq!(
            default_class(&classes).and_then(|c| c.metadata.name.as_deref()),
            Some("new")
        );
        let mut object = json!({"metadata": {"finalizers": ["a"]}});
        add_finalizer(&mut object, PVC_PROTECTION);
        add_finalizer(&mut object, PVC_PROTECTION);
        assert_eq!(
            object["metadata"]["finalizers"],
            json!(["a", PVC_PROTECTION])
        );
    }
}
