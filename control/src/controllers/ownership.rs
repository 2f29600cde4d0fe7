//! Owner references, as Kubernetes' ControllerRefManager handles them: a controller adopts orphans its
//! selector matches, releases what it owns but no longer matches, and a change of a child wakes its owner.

use crate::api::selector;
use crate::events::{EventType, Recorder};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// The owner reference a controller puts on what it creates.
pub fn controller_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The owner reference that marks an object's managing controller.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Builds a label selector; `None` (matching nothing) for one that cannot be parsed or is empty.
pub fn selector(selector: &LabelSelector) -> Option<selector::LabelSelector> {
    let value = serde_json::to_value(selector).ok()?;
    let parsed = selector::LabelSelector::from_object(&value).ok()?;
    (!parsed.0.is_empty()).then_some(parsed)
}

/// Whether an owner's selector can select its children. One that cannot be parsed or is empty (the apiserver
/// refuses both, but an object stored before it did may carry one) gets a Warning event instead: a controller
/// that acted on it would make children it can never find again, without end.
pub async fn selector_usable<O>(
    owner: &O,
    owner_selector: &LabelSelector,
    events: &Recorder,
) -> bool
where
    O: Resource<DynamicType = ()>,
{
    if selector(owner_selector).is_some() {
        return true;
    }
    tracing::warn!(
        name = %owner.name_any(),
        namespace = owner.namespace().unwrap_or_default(),
        "selector cannot be used: not acting"
    );
    events.record(
        owner,
        EventType::Warning,
        "InvalidSelector",
        "the selector is empty or cannot be parsed: nothing is done until it is fixed",
    );
    false
}

/// Whether a selector matches an object's labels.
pub fn matches(selector: &selector::LabelSelector, meta: &ObjectMeta) -> bool {
    selector.matches(&meta.labels.clone().unwrap_or_default())
}

/// Takes ownership of `candidates` (objects of the owner's namespace): keeps those it controls and selects,
/// adopts selected orphans that `adoptable` accepts, releases controlled ones it no longer selects. Returns
/// what it owns now.
pub async fn claim<O, C>(
    api: &Api<C>,
    owner: &O,
    owner_selector: &LabelSelector,
    candidates: Vec<Arc<C>>,
    adoptable: impl Fn(&C) -> bool,
) -> Vec<Arc<C>>
where
    O: Resource<DynamicType = ()>,
    C: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let uid = owner.uid().unwrap_or_default();
    let selector = selector(owner_selector);
    let may_adopt = owner.meta().deletion_timestamp.is_none();
    let mut owned = Vec::new();
    for child in candidates {
        let controller = controller_of(child.meta());
        let ours = controller.is_some_and(|r| r.uid == uid);
        if controller.is_some() && !ours {
            // Another controller's: neither ours nor adoptable, whatever its labels (most of a namespace's
            // pods, so the selector is not even matched).
            continue;
        }
        let selected = selector.as_ref().is_some_and(|s| matches(s, child.meta()));
        let adopt = !ours && selected && controller.is_none() && may_adopt && adoptable(&child);
        if ours && selected {
            owned.push(child);
            continue;
        }
        if !(ours || adopt) {
            continue;
        }
        let mut references: Vec<OwnerReference> = child
            .owner_references()
            .iter()
            .filter(|r| r.uid != uid)
            .cloned()
            .collect();
        if adopt {
            references.push(controller_reference(owner));
        }
        // The resourceVersion makes this a compare-and-swap: no adopting what changed meanwhile.
        let patch = serde_json::json!({"metadata": {
            "ownerReferences": references,
            "resourceVersion": child.resource_version(),
        }});
        match super::merge_patch(api, &child.name_any(), &patch).await {
            Ok(adopted) if adopt => owned.push(Arc::new(adopted)),
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(object = %child.name_any(), %error, "cannot adopt or release");
            }
        }
    }
    owned
}

/// The owners of kind `O` a change of `child` concerns: its controller, if that is an `O`; for an orphan,
/// every `O` of its namespace whose selector matches it.
pub fn owners_of<O, C>(
    child: &C,
    owners: &Store<O>,
    owner_selector: impl Fn(&O) -> Option<&LabelSelector>,
) -> Vec<ObjectRef<O>>
where
    O: Resource<DynamicType = ()> + Clone,
    C: Resource,
{
    let namespace = child.meta().namespace.clone().unwrap_or_default();
    if let Some(owner) = controller_of(child.meta()) {
        return if owner.kind == O::kind(&()) {
            vec![ObjectRef::new(&owner.name).within(&namespace)]
        } else {
            Vec::new()
        };
    }
    owners
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace.as_str()))
        .filter(|o| {
            owner_selector(o)
                .and_then(selector)
                .is_some_and(|s| matches(&s, child.meta()))
        })
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}
