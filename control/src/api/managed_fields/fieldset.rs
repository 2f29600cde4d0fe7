//! Sets of field paths, in managedFields' `FieldsV1` form: a tree whose keys are path elements (`f:name` a
//! field or map key, `k:{"name":"web"}` a list-map item, `v:"value"` a set item) and where `.` marks an
//! element that is itself a member. Also the set of fields an object holds, and what changed between two.

use crate::api::schema::{self, ListType};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A set of field paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    /// Whether the path leading here is a member.
    member: bool,
    /// The sets under each path element.
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// Reads `fieldsV1`; what is not an object is an empty set.
    pub fn from_fields_v1(fields: &Value) -> Self {
        let mut set = FieldSet::default();
        if let Some(object) = fields.as_object() {
            for (element, child) in object {
                if element == "." {
                    set.member = true;
                    continue;
                }
                let mut child_set = FieldSet::from_fields_v1(child);
                if child_set.children.is_empty() {
                    child_set.member = true;
                }
                set.children.insert(element.clone(), child_set);
            }
        }
        set
    }

    /// The set as `fieldsV1`.
    pub fn to_fields_v1(&self) -> Value {
        let mut object = Map::new();
        if self.member && !self.children.is_empty() {
            object.insert(".".into(), Value::Object(Map::new()));
        }
        for (element, child) in &self.children {
            object.insert(element.clone(), child.to_fields_v1());
        }
        Value::Object(object)
    }

    /// Whether the set has no member.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    fn child(&mut self, element: String) -> &mut FieldSet {
        self.children.entry(element).or_default()
    }

    /// Adds `path` (its elements, outermost first) as a member.
    pub fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.child(first.clone()).insert(rest),
        }
    }

    /// Every member of `other` added.
    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (element, child) in &other.children {
            self.child(element.clone()).union(child);
        }
    }

    /// The members of `self` that `other` lacks.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut result = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            let rest = match other.children.get(element) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            if !rest.is_empty() {
                result.children.insert(element.clone(), rest);
            }
        }
        result
    }

    /// Removes the members of `other`, as [`FieldSet::difference`] without copying what stays; whether
    /// anything was removed.
    pub fn subtract(&mut self, other: &FieldSet) -> bool {
        let mut removed = self.member && other.member;
        self.member &= !other.member;
        for (element, theirs) in &other.children {
            if let Some(child) = self.children.get_mut(element)
                && child.subtract(theirs)
            {
                removed = true;
                if child.is_empty() {
                    self.children.remove(element);
                }
            }
        }
        removed
    }

    /// The members of both.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut result = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            if let Some(theirs) = other.children.get(element) {
                let both = child.intersection(theirs);
                if !both.is_empty() {
                    result.children.insert(element.clone(), both);
                }
            }
        }
        result
    }

    /// Every member path, outermost element first.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut paths = Vec::new();
        self.collect(&mut Vec::new(), &mut paths);
        paths
    }

    fn collect(&self, prefix: &mut Vec<String>, paths: &mut Vec<Vec<String>>) {
        if self.member {
            paths.push(prefix.clone());
        }
        for (element, child) in &self.children {
            prefix.push(element.clone());
            child.collect(prefix, paths);
            prefix.pop();
        }
    }
}

/// A member path as Kubernetes prints it: `.spec.containers[name="web"].image`.
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(field) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(key) = element.strip_prefix("k:") {
            let fields: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = element.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        } else if let Some(index) = element.strip_prefix("i:") {
            out.push_str(&format!("[{index}]"));
        }
    }
    out
}

/// The path element of list item `item` of the list field `field`, or `None` if the list is atomic.
fn item_element(list: ListType, item: &Value) -> Option<String> {
    match list {
        ListType::Map(keys) => {
            let key = schema::item_key(item, keys)?;
            Some(format!("k:{}", Value::Object(key)))
        }
        ListType::Set => Some(format!("v:{item}")),
        ListType::Atomic => None,
    }
}

/// How the list `items` of `field` is owned: per item (with each item's element), or whole.
fn list_items<'a>(field: &str, items: &'a [Value]) -> Option<Vec<(String, &'a Value)>> {
    let list = schema::list_type(field, items);
    items
        .iter()
        .map(|item| item_element(list, item).map(|e| (e, item)))
        .collect()
}

/// The set of every field `value` (the value of field `field`) holds, its leaves as members.
pub fn fields_of(field: &str, value: &Value) -> FieldSet {
    let mut set = FieldSet::default();
    match value {
        Value::Object(object) if !object.is_empty() && !schema::is_atomic_object(field) => {
            for (key, child) in object {
                set.children
                    .insert(format!("f:{key}"), fields_of(key, child));
            }
        }
        Value::Array(items) if !items.is_empty() => match list_items(field, items) {
            Some(elements) => {
                for (element, item) in elements {
                    let mut item_set = match item {
                        Value::Object(_) => fields_of("", item),
                        _ => FieldSet::default(),
                    };
                    item_set.member = true;
                    set.children.insert(element, item_set);
                }
            }
            None => set.member = true,
        },
        _ => set.member = true,
    }
    set
}

/// What changed from `old` to `new` (values of the field `field`): the members added or modified, and the
/// members removed.
pub fn changes(field: &str, old: &Value, new: &Value) -> (FieldSet, FieldSet) {
    let mut changed = FieldSet::default();
    let mut removed = FieldSet::default();
    if old == new {
        return (changed, removed);
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b))
            if !a.is_empty() && !b.is_empty() && !schema::is_atomic_object(field) =>
        {
            for (key, new_child) in b {
                let element = format!("f:{key}");
                match a.get(key) {
                    None => {
                        changed.children.insert(element, fields_of(key, new_child));
                    }
                    Some(old_child) => {
                        let (c, r) = changes(key, old_child, new_child);
                        if !c.is_empty() {
                            changed.children.insert(element.clone(), c);
                        }
                        if !r.is_empty() {
                            removed.children.insert(element, r);
                        }
                    }
                }
            }
            for (key, old_child) in a {
                if !b.contains_key(key) {
                    removed
                        .children
                        .insert(format!("f:{key}"), fields_of(key, old_child));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if !a.is_empty() && !b.is_empty() => {
            match (list_items(field, a), list_items(field, b)) {
                (Some(old_items), Some(new_items)) => {
                    let old_items: BTreeMap<String, &Value> = old_items.into_iter().collect();
                    let new_items: BTreeMap<String, &Value> = new_items.into_iter().collect();
                    for (element, item) in &new_items {
                        match old_items.get(element) {
                            None => {
                                let mut added = fields_of("", item);
                                added.member = true;
                                changed.children.insert(element.clone(), added);
                            }
                            Some(before) => {
                                let (c, r) = changes("", before, item);
                                if !c.is_empty() {
                                    changed.children.insert(element.clone(), c);
                                }
                                if !r.is_empty() {
                                    removed.children.insert(element.clone(), r);
                                }
                            }
                        }
                    }
                    for (element, item) in &old_items {
                        if !new_items.contains_key(element) {
                            let mut gone = fields_of("", item);
                            gone.member = true;
                            removed.children.insert(element.clone(), gone);
                        }
                    }
                }
                _ if a != b => changed.member = true,
                _ => {}
            }
        }
        _ if old != new => {
            // A leaf (or an atomic or newly empty value) changed: the new value's members are changed.
            changed = fields_of(field, new);
            if changed.children.is_empty() {
                changed.member = true;
            }
        }
        _ => {}
    }
    (changed, removed)
}

/// Removes from `value` (of field `field`) every member of `doomed`: map keys, list-map and set items.
pub fn remove(field: &str, value: &mut Value, doomed: &FieldSet) {
    match value {
        Value::Object(object) => {
            for (element, child) in &doomed.children {
                let Some(key) = element.strip_prefix("f:") else {
                    continue;
                };
                if child.member {
                    object.remove(key);
                } else if let Some(inner) = object.get_mut(key) {
                    remove(key, inner, child);
                }
            }
        }
        Value::Array(items) => {
            let list = schema::list_type(field, items);
            items.retain_mut(|item| {
                let Some(element) = item_element(list, item) else {
                    return true;
                };
                match doomed.children.get(&element) {
                    Some(child) if child.member => false,
                    Some(child) => {
                        remove("", item, child);
                        true
                    }
                    None => true,
                }
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(elements: &[&str]) -> Vec<String> {
        elements.iter().map(|e| (*e).to_owned()).collect()
    }

    #[test]
    fn fields_v1_round_trips_with_item_members() {
        let fields = json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}}
        });
        let set = FieldSet::from_fields_v1(&fields);
        assert_eq!(set.to_fields_v1(), fields);
        let paths: Vec<String> = set.paths().iter().map(|p| display(p)).collect();
        assert_eq!(
            paths,
            [
                ".metadata.labels.app",
                ".spec.containers[name=\"web\"]",
                ".spec.containers[name=\"web\"].image",
                ".spec.containers[name=\"web\"].name",
            ]
        );
    }

    #[test]
    fn subtracting_in_place_leaves_what_the_difference_leaves() {
        let set = FieldSet::from_fields_v1(&json!({
            "f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}}}, "f:replicas": {}}
        }));
        let others = [
            json!({"f:metadata": {"f:labels": {"f:app": {}}}}),
            json!({"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}}}}}),
            json!({"f:spec": {"f:replicas": {}, "f:paused": {}}, "f:status": {"f:phase": {}}}),
            json!({"f:status": {"f:phase": {}}}),
            json!({}),
        ];
        for other in others {
            let other = FieldSet::from_fields_v1(&other);
            let mut subtracted = set.clone();
            let removed = subtracted.subtract(&other);
            assert_eq!(subtracted, set.difference(&other), "{other:?}");
            assert_eq!(removed, subtracted != set, "{other:?}");
        }
    }

    #[test]
    fn an_object_s_fields_follow_list_types() {
        let pod_spec = json!({
            "containers": [{"name": "web", "image": "a.wasm", "ports": [{"containerPort": 80}],
                            "args": ["x", "y"]}],
            "nodeSelector": {"disk": "ssd"},
            "resources": {}
        });
        let set = fields_of("spec", &pod_spec);
        let paths: Vec<String> = set.paths().iter().map(|p| display(p)).collect();
        assert!(
            paths.contains(&".containers[name=\"web\"].args".to_owned()),
            "{paths:?}"
        );
        assert!(
            paths.contains(
                &".containers[name=\"web\"].ports[containerPort=80,protocol=\"TCP\"]".to_owned()
            ),
            "{paths:?}"
        );
        assert!(
            paths.contains(&".nodeSelector.disk".to_owned()),
            "{paths:?}"
        );
        assert!(paths.contains(&".resources".to_owned()), "{paths:?}");
        let selector = fields_of("selector", &json!({"matchLabels": {"app": "web"}}));
        assert_eq!(
            selector.paths(),
            vec![Vec::<String>::new()],
            "a label selector is atomic"
        );
    }

    #[test]
    fn changes_are_split_into_changed_and_removed() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "finalizers": ["x", "y"]});
        let new = json!({"a": 1, "b": {"c": 5}, "e": "new", "finalizers": ["y", "z"]});
        let (changed, removed) = changes("", &old, &new);
        let shown = |s: &FieldSet| s.paths().iter().map(|p| display(p)).collect::<Vec<_>>();
        assert_eq!(shown(&changed), [".b.c", ".e", ".finalizers[=\"z\"]"]);
        assert_eq!(shown(&removed), [".b.d", ".finalizers[=\"x\"]"]);
    }

    #[test]
    fn set_algebra_and_removal() {
        let mut mine = FieldSet::default();
        mine.insert(&path(&["f:data", "f:a"]));
        mine.insert(&path(&["f:data", "f:b"]));
        let mut theirs = FieldSet::default();
        theirs.insert(&path(&["f:data", "f:b"]));
        assert_eq!(
            mine.difference(&theirs).paths(),
            vec![path(&["f:data", "f:a"])]
        );
        assert_eq!(
            mine.intersection(&theirs).paths(),
            vec![path(&["f:data", "f:b"])]
        );
        let mut object = json!({"data": {"a": "1", "b": "2"}, "spec": {"containers": [{"name": "x"}, {"name": "y"}]}});
        let mut doomed = mine.difference(&theirs);
        doomed.insert(&path(&["f:spec", "f:containers", "k:{\"name\":\"x\"}"]));
        remove("", &mut object, &doomed);
        assert_eq!(
            object,
            json!({"data": {"b": "2"}, "spec": {"containers": [{"name": "y"}]}})
        );
        mine.union(&theirs);
        assert_eq!(mine.paths().len(), 2);
        assert!(FieldSet::default().is_empty());
    }
}
