//! Whether a pod's tolerations tolerate a node's taint, as Kubernetes matches them.

use k8s_openapi::api::core::v1::{Taint, Toleration};

/// Whether one toleration tolerates one taint (key, effect and value or `Exists`; an empty key with `Exists`
/// tolerates everything).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let key_ok = toleration
        .key
        .as_deref()
        .is_none_or(|k| k.is_empty() || k == taint.key);
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let value_ok = match toleration.operator.as_deref() {
        Some("Exists") => true,
        _ => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
    };
    key_ok && effect_ok && value_ok
}

/// Whether tolerations tolerate the NoSchedule taint `key` (no value) that the node lifecycle puts on nodes in a
/// condition (cordoned, under memory pressure, ...).
pub fn tolerates_no_schedule(tolerations: &[Toleration], key: &str) -> bool {
    let taint = Taint {
        key: key.to_owned(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    tolerations.iter().any(|t| tolerates(t, &taint))
}
