//! Strategic merge patch, as kubectl sends it: objects merge, lists of the built-in kinds merge by their key
//! (containers by name, ports by port number, env and volumes by name, ...), and the `$patch`,
//! `$setElementOrder`, `$retainKeys` and `$deleteFromPrimitiveList` directives are honoured.

use super::schema::{self, ListType};
use serde_json::{Map, Value};

/// How a list field of the built-in kinds is patched.
enum ListStrategy {
    /// Items are objects merged by this key.
    MergeByKey(&'static str),
    /// Items are scalars; the patch's items are added to the list.
    MergePrimitives,
    /// The patch's list replaces the old one.
    Replace,
}

fn strategy(field: &str, items: &[Value]) -> ListStrategy {
    match schema::list_type(field, items) {
        ListType::Map([key, ..]) => ListStrategy::MergeByKey(key),
        ListType::Set => ListStrategy::MergePrimitives,
        ListType::Map([]) | ListType::Atomic => ListStrategy::Replace,
    }
}

/// A patch that breaks the format.
#[derive(Debug, thiserror::Error)]
#[error("invalid strategic merge patch: {0}")]
pub struct PatchError(String);

/// Applies a strategic merge patch to `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => merge_object(target, patch),
        (_, Some(patch)) => {
            let mut fresh = Map::new();
            merge_object(&mut fresh, patch)?;
            *target = Value::Object(fresh);
            Ok(())
        }
        _ => Err(PatchError("a patch must be a JSON object".into())),
    }
}

fn merge_object(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<(), PatchError> {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = patch.clone();
        target.remove("$patch");
        return Ok(());
    }
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let doomed = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(items)) = target.get_mut(field) {
                items.retain(|item| !doomed.contains(item));
            }
            continue;
        }
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner)
                if inner.get("$patch").and_then(Value::as_str) == Some("delete") =>
            {
                target.remove(key);
            }
            Value::Object(inner) => match target.get_mut(key) {
                Some(Value::Object(existing)) => merge_object(existing, inner)?,
                _ => {
                    let mut fresh = Map::new();
                    merge_object(&mut fresh, inner)?;
                    target.insert(key.clone(), Value::Object(fresh));
                }
            },
            Value::Array(items) => {
                let merged = merge_list(key, target.remove(key), items)?;
                target.insert(key.clone(), merged);
            }
            scalar => {
                target.insert(key.clone(), scalar.clone());
            }
        }
    }
    for (key, order) in patch
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("$setElementOrder/")?, v)))
    {
        if let (Some(Value::Array(items)), Some(order)) = (target.get_mut(key), order.as_array()) {
            reorder(key, items, order);
        }
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        target.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(())
}

fn merge_list(field: &str, old: Option<Value>, patch: &[Value]) -> Result<Value, PatchError> {
    let old = match old {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let kept = patch
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(Value::Array(kept));
    }
    match strategy(field, if old.is_empty() { patch } else { &old }) {
        ListStrategy::Replace => Ok(Value::Array(patch.to_vec())),
        ListStrategy::MergePrimitives => {
            let mut merged = old;
            for item in patch {
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            Ok(Value::Array(merged))
        }
        ListStrategy::MergeByKey(merge_key) => {
            let mut merged = old;
            for item in patch {
                let Some(key) = item.get(merge_key) else {
                    return Err(PatchError(format!(
                        "map: {item} does not contain declared merge key: {merge_key}"
                    )));
                };
                let position = merged.iter().position(|m| m.get(merge_key) == Some(key));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (position, delete) {
                    (Some(i), true) => {
                        merged.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => strategic_merge(&mut merged[i], item)?,
                    (None, false) => {
                        let mut fresh = Value::Object(Map::new());
                        strategic_merge(&mut fresh, item)?;
                        merged.push(fresh);
                    }
                }
            }
            Ok(Value::Array(merged))
        }
    }
}

fn reorder(field: &str, items: &mut [Value], order: &[Value]) {
    let rank = |item: &Value| -> usize {
        let position = match strategy(field, std::slice::from_ref(item)) {
            ListStrategy::MergeByKey(key) => order
                .iter()
                .position(|o| o.get(key).is_some() && o.get(key) == item.get(key)),
            _ => order.iter().position(|o| o == item),
        };
        position.unwrap_or(usize::MAX)
    };
    // Stable: items the order does not name keep their relative place after the named ones.
    items.sort_by_key(rank);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_and_keep_the_order_kubectl_sets() {
        let mut target = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]}]}});
        strategic_merge(&mut target, &patch).unwrap();
        assert_eq!(
            target,
            json!({"spec": {"containers": [
            {"name": "b", "image": "b:1"},
            {"name": "a", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}]}})
        );
    }

    #[test]
    fn delete_directives_and_nulls_remove_things() {
        let mut target = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x", "y"]},
            "spec": {"ports": [{"port": 80}, {"port": 443}], "strategy": {"type": "RollingUpdate", "rollingUpdate": {}}}});
        let patch = json!({
            "metadata": {"labels": {"a": null}, "$deleteFromPrimitiveList/finalizers": ["x"]},
            "spec": {"ports": [{"port": 80, "$patch": "delete"}],
                     "strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        strategic_merge(&mut target, &patch).unwrap();
        assert_eq!(
            target,
            json!({"metadata": {"labels": {"b": "2"}, "finalizers": ["y"]},
            "spec": {"ports": [{"port": 443}], "strategy": {"type": "Recreate"}}})
        );
    }

    #[test]
    fn unknown_lists_are_replaced_and_replace_directives_win() {
        let mut target = json!({"args": ["a", "b"], "env": [{"name": "A"}]});
        let patch = json!({"args": ["c"], "env": [{"$patch": "replace"}, {"name": "B"}]});
        strategic_merge(&mut target, &patch).unwrap();
        assert_eq!(target, json!({"args": ["c"], "env": [{"name": "B"}]}));
    }

    #[test]
    fn a_list_item_without_its_merge_key_is_an_error() {
        let mut target = json!({"containers": []});
        assert!(strategic_merge(&mut target, &json!({"containers": [{"image": "x"}]})).is_err());
    }
}
