//! The shape of the built-in kinds that merging and field ownership need, as their OpenAPI markers say:
//! which lists are maps keyed by some of their items' fields (`x-kubernetes-list-type: map`, the strategic
//! merge key first), which are sets of scalars, and which lists and objects are atomic (replaced and owned
//! whole).

use serde_json::Value;

/// How a list field is merged and owned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListType {
    /// Items are objects identified by these fields; each item is owned apart.
    Map(&'static [&'static str]),
    /// Items are scalars, each owned apart.
    Set,
    /// The list is one value.
    Atomic,
}

/// The list type of the list field `field` holding `items`.
pub fn list_type(field: &str, items: &[Value]) -> ListType {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => ListType::Map(&["name"]),
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => {
            ListType::Map(&["containerPort", "protocol"])
        }
        "ports" if items.iter().any(|i| i.get("port").is_some()) => {
            ListType::Map(&["port", "protocol"])
        }
        "volumeMounts" => ListType::Map(&["mountPath"]),
        "volumeDevices" => ListType::Map(&["devicePath"]),
        "conditions" => ListType::Map(&["type"]),
        "addresses" if items.iter().all(Value::is_object) => ListType::Map(&["type"]),
        "addresses" => ListType::Set,
        "ownerReferences" => ListType::Map(&["uid"]),
        "hostAliases" | "podIPs" | "hostIPs" => ListType::Map(&["ip"]),
        "topologySpreadConstraints" => ListType::Map(&["topologyKey", "whenUnsatisfiable"]),
        "taints" => ListType::Map(&["key", "effect"]),
        "readinessGates" => ListType::Map(&["conditionType"]),
        "resizePolicy" => ListType::Map(&["resourceName"]),
        "finalizers" => ListType::Set,
        _ => ListType::Atomic,
    }
}

/// Whether the object field `field` is atomic: label selectors and role references are one value each.
pub fn is_atomic_object(field: &str) -> bool {
    matches!(
        field,
        "selector" | "labelSelector" | "namespaceSelector" | "roleRef"
    )
}

/// The value a list-map key takes when an item leaves it out (the API's default).
pub fn key_default(key: &str) -> Option<Value> {
    (key == "protocol").then(|| Value::String("TCP".into()))
}

/// The `k:` identity of a list-map item: its key fields (defaulted where left out), or `None` when it lacks
/// one.
pub fn item_key(item: &Value, keys: &[&str]) -> Option<serde_json::Map<String, Value>> {
    let mut identity = serde_json::Map::new();
    for key in keys {
        let value = item.get(*key).cloned().or_else(|| key_default(key))?;
        identity.insert((*key).to_owned(), value);
    }
    Some(identity)
}
