//! The PersistentVolume binder, as kube-controller-manager's persistentvolume-binder: what one claim and one
//! volume need next. Pure: the caller writes the result and records the Events.

use crate::api::storage::{
    LOCAL_PATH_PROVISIONER, PROVISIONED_BY, SELECTED_NODE, best_volume, claim_class,
};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

/// Why a claim waits, as the Event the binder records (reason and message, Kubernetes' words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// A Warning (something is wrong) rather than Normal (waiting as designed).
    pub warning: bool,
    /// The Event's reason.
    pub reason: &'static str,
    /// The Event's message.
    pub message: String,
}

impl Waiting {
    fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason,
            message: message.into(),
        }
    }

    fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason,
            message: message.into(),
        }
    }
}

/// What one claim needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimStep {
    /// Bound, or being deleted: nothing.
    Done,
    /// Bind it to this volume.
    Bind(String),
    /// Ask a provisioner for a volume on the node its first pod was scheduled to.
    Provision {
        /// The provisioner named by its class.
        provisioner: String,
        /// The selected node, for a WaitForFirstConsumer class.
        node: Option<String>,
    },
    /// Wait, saying why.
    Wait(Waiting),
    /// It was bound and its volume is gone.
    Lost,
}

fn phase_of_claim(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The volume a claim is bound to, if it names one.
pub fn claim_volume(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty())
}

/// Whether `volume` is reserved for or bound to `claim` (by namespace and name, and uid when it has one).
pub fn refers_to(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some_and(|r| {
            r.namespace == claim.metadata.namespace
                && r.name == claim.metadata.name
                && r.uid
                    .as_deref()
                    .is_none_or(|uid| Some(uid) == claim.metadata.uid.as_deref())
        })
}

/// The next step for a claim, given every volume and StorageClass.
pub fn plan_claim(
    claim: &PersistentVolumeClaim,
    volumes: &[&PersistentVolume],
    classes: &[&StorageClass],
) -> ClaimStep {
    if claim.metadata.deletion_timestamp.is_some() {
        return ClaimStep::Done;
    }
    if let Some(name) = claim_volume(claim) {
        let Some(volume) = volumes
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(name))
        else {
            return if phase_of_claim(claim) == "Bound" {
                ClaimStep::Lost
            } else {
                ClaimStep::Wait(Waiting::warning(
                    "FailedBinding",
                    format!("volume {name:?} not found"),
                ))
            };
        };
        let free = volume.spec.as_ref().is_none_or(|s| s.claim_ref.is_none());
        return if free || refers_to(volume, claim) {
            ClaimStep::Bind(name.to_owned())
        } else {
            ClaimStep::Wait(Waiting::warning(
                "FailedBinding",
                format!("volume {name:?} already bound to a different claim."),
            ))
        };
    }
    if let Some(volume) = best_volume(volumes.iter().copied(), claim) {
        return ClaimStep::Bind(volume.metadata.name.clone().unwrap_or_default());
    }
    let class_name = claim_class(claim);
    if class_name.is_empty() {
        return ClaimStep::Wait(Waiting::normal(
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        ));
    }
    let Some(class) = classes
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(class_name))
    else {
        return ClaimStep::Wait(Waiting::warning(
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io {class_name:?} not found"),
        ));
    };
    let selected = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SELECTED_NODE))
        .cloned();
    let waits_for_consumer = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
    if waits_for_consumer && selected.is_none() {
        return ClaimStep::Wait(Waiting::normal(
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding",
        ));
    }
    ClaimStep::Provision {
        provisioner: class.provisioner.clone(),
        node: selected.filter(|_| waits_for_consumer),
    }
}

/// What one volume needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeStep {
    /// Nothing.
    Done,
    /// Set its phase (Available, Released).
    Phase(&'static str),
    /// Its claim is gone and it was made by this cluster's provisioner with reclaim policy Delete: delete it
    /// (its node's agent then removes the directory).
    Delete,
    /// Its claim is gone and its reclaim policy cannot be carried out: Failed, with an Event.
    Fail(String),
}

/// The next step for a volume, given the claim it refers to (if that claim exists).
pub fn plan_volume(volume: &PersistentVolume, claim: Option<&PersistentVolumeClaim>) -> VolumeStep {
    let phase = volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    let set = |wanted: &'static str| {
        if phase == wanted {
            VolumeStep::Done
        } else {
            VolumeStep::Phase(wanted)
        }
    };
    let Some(reference) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return set("Available");
    };
    let claim = claim.filter(|c| {
        reference
            .uid
            .as_deref()
            .is_none_or(|uid| Some(uid) == c.metadata.uid.as_deref())
    });
    match claim {
        // Reserved for a claim not made yet (a pre-bound volume): available to it.
        None if reference.uid.as_deref().is_none_or(str::is_empty) => set("Available"),
        // Bound (or being bound) to its claim: the claim's sync writes Bound.
        Some(_) => VolumeStep::Done,
        None => {
            if matches!(phase, "Failed") {
                return VolumeStep::Done;
            }
            let annotations = volume.metadata.annotations.as_ref();
            let ours = annotations
                .and_then(|a| a.get(PROVISIONED_BY))
                .map(String::as_str)
                == Some(LOCAL_PATH_PROVISIONER);
            let policy = volume
                .spec
                .as_ref()
                .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
                .unwrap_or("Retain");
            let name = volume.metadata.name.as_deref().unwrap_or_default();
            match policy {
                "Delete" if ours => VolumeStep::Delete,
                "Delete" => VolumeStep::Fail(format!(
                    "error getting deleter volume plugin for volume {name:?}: no deletable volume plugin matched"
                )),
                "Recycle" => {
                    VolumeStep::Fail(format!("No recycler plugin found for the volume {name:?}!"))
                }
                _ => set("Released"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(extra: serde_json::Value) -> PersistentVolumeClaim {
        let mut object = json!({"metadata": {"name": "data", "namespace": "ns", "uid": "c1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"}});
        json_patch::merge(&mut object, &extra);
        serde_json::from_value(object).unwrap()
    }

    fn volume(name: &str, extra: serde_json::Value) -> PersistentVolume {
        let mut object = json!({"metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "2Gi"},
                     "hostPath": {"path": "/x"}, "persistentVolumeReclaimPolicy": "Retain"},
            "status": {"phase": "Available"}});
        json_patch::merge(&mut object, &extra);
        serde_json::from_value(object).unwrap()
    }

    fn class(name: &str, mode: &str) -> StorageClass {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "provisioner": LOCAL_PATH_PROVISIONER,
            "volumeBindingMode": mode}),
        )
        .unwrap()
    }

    #[test]
    fn a_claim_binds_a_matching_volume_or_says_why_it_waits() {
        let free = volume("pv-1", json!({"spec": {"storageClassName": ""}}));
        let unclassed = claim(json!({"spec": {"storageClassName": ""}}));
        assert_eq!(
            plan_claim(&unclassed, &[&free], &[]),
            ClaimStep::Bind("pv-1".into())
        );
        let too_big = claim(json!({"spec": {"storageClassName": "",
            "resources": {"requests": {"storage": "5Gi"}}}}));
        assert_eq!(
            plan_claim(&too_big, &[&free], &[]),
            ClaimStep::Wait(Waiting::normal(
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set"
            ))
        );
        let missing_class = claim(json!({"spec": {"storageClassName": "gold"}}));
        assert_eq!(
            plan_claim(&missing_class, &[], &[]),
            ClaimStep::Wait(Waiting::warning(
                "ProvisioningFailed",
                "storageclass.storage.k8s.io \"gold\" not found"
            ))
        );
        let local = class("local-path", "WaitForFirstConsumer");
        let waiting = claim(json!({"spec": {"storageClassName": "local-path"}}));
        assert_eq!(
            plan_claim(&waiting, &[], &[&local]),
            ClaimStep::Wait(Waiting::normal(
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding"
            ))
        );
        let scheduled = claim(json!({"metadata": {"annotations": {SELECTED_NODE: "n1"}},
            "spec": {"storageClassName": "local-path"}}));
        assert_eq!(
            plan_claim(&scheduled, &[], &[&local]),
            ClaimStep::Provision {
                provisioner: LOCAL_PATH_PROVISIONER.into(),
                node: Some("n1".into())
            }
        );
    }

    #[test]
    fn a_claim_naming_its_volume_binds_only_a_free_or_reserved_one() {
        let taken = volume(
            "pv-1",
            json!({"spec": {"claimRef": {"namespace": "ns", "name": "other", "uid": "o1"}}}),
        );
        let named = claim(json!({"spec": {"volumeName": "pv-1"}}));
        assert_eq!(
            plan_claim(&named, &[&taken], &[]),
            ClaimStep::Wait(Waiting::warning(
                "FailedBinding",
                "volume \"pv-1\" already bound to a different claim."
            ))
        );
        let reserved = volume(
            "pv-1",
            json!({"spec": {"claimRef": {"namespace": "ns", "name": "data"}}}),
        );
        assert_eq!(
            plan_claim(&named, &[&reserved], &[]),
            ClaimStep::Bind("pv-1".into())
        );
        let bound = claim(json!({"spec": {"volumeName": "gone"}, "status": {"phase": "Bound"}}));
        assert_eq!(plan_claim(&bound, &[], &[]), ClaimStep::Lost);
    }

    #[test]
    fn a_volume_whose_claim_is_gone_is_released_deleted_or_failed_by_its_policy() {
        let bound_to = |policy: &str, ours: bool| {
            let mut extra = json!({"spec": {"persistentVolumeReclaimPolicy": policy,
                "claimRef": {"namespace": "ns", "name": "data", "uid": "c1"}},
                "status": {"phase": "Bound"}});
            if ours {
                extra["metadata"] =
                    json!({"annotations": {PROVISIONED_BY: LOCAL_PATH_PROVISIONER}});
            }
            volume("pv-1", extra)
        };
        let live = claim(json!({}));
        assert_eq!(
            plan_volume(&bound_to("Retain", false), Some(&live)),
            VolumeStep::Done
        );
        assert_eq!(
            plan_volume(&bound_to("Retain", false), None),
            VolumeStep::Phase("Released")
        );
        // A new claim of the same name (another uid) is not the one the volume was bound to.
        let successor = claim(json!({"metadata": {"uid": "c2"}}));
        assert_eq!(
            plan_volume(&bound_to("Retain", false), Some(&successor)),
            VolumeStep::Phase("Released")
        );
        assert_eq!(
            plan_volume(&bound_to("Delete", true), None),
            VolumeStep::Delete
        );
        assert!(matches!(
            plan_volume(&bound_to("Delete", false), None),
            VolumeStep::Fail(m) if m.contains("no deletable volume plugin matched")
        ));
        let fresh = volume("pv-2", json!({"status": {"phase": "Pending"}}));
        assert_eq!(plan_volume(&fresh, None), VolumeStep::Phase("Available"));
    }
}
