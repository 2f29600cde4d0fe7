//! A stored object's JSON read without building all of it: a watch serves the stored bytes with the
//! resourceVersion put into their metadata, and a selector reads only the fields it names. Objects are
//! stored without their resourceVersion (it is the store's revision), written by [`to_stored`].

use crate::store::Revision;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// `object` as stored: its JSON without `metadata.resourceVersion`.
pub fn to_stored(object: &Value) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&WithoutVersion {
        value: object,
        top: true,
    })
}

/// A value serialized without the resourceVersion of its metadata (`top`: the object itself).
struct WithoutVersion<'a> {
    value: &'a Value,
    top: bool,
}

impl Serialize for WithoutVersion<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Value::Object(fields) = self.value else {
            return self.value.serialize(serializer);
        };
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in fields {
            if self.top && key == "metadata" {
                map.serialize_entry(key, &WithoutVersion { value, top: false })?;
            } else if self.top || key != "resourceVersion" {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// The stored JSON object `stored` as served at `revision`: `"resourceVersion":"N"` put first in its
/// metadata, every other byte as stored. `None` when the bytes are not a JSON object with a metadata object
/// free of a resourceVersion (protobuf from kube-apiserver, a corrupt value): the caller decodes those.
pub fn served_json(stored: &[u8], revision: Revision) -> Option<Vec<u8>> {
    let mut at = skip_space(stored, 0);
    if stored.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    let mut metadata: Option<(usize, bool)> = None;
    let mut first = true;
    loop {
        at = skip_space(stored, at);
        if *stored.get(at)? == b'}' {
            at += 1;
            break;
        }
        if !first {
            if stored[at] != b',' {
                return None;
            }
            at = skip_space(stored, at + 1);
        }
        first = false;
        let (key, next): (&str, usize) = value_at(stored, at)?;
        at = skip_space(stored, next);
        if stored.get(at) != Some(&b':') {
            return None;
        }
        at = skip_space(stored, at + 1);
        if key == "metadata" {
            if stored.get(at) != Some(&b'{') || metadata.is_some() {
                return None;
            }
            let (fields, next): (BTreeMap<&str, IgnoredAny>, usize) = value_at(stored, at)?;
            if fields.contains_key("resourceVersion") {
                return None;
            }
            metadata = Some((at, fields.is_empty()));
            at = next;
        } else {
            let (_, next): (IgnoredAny, usize) = value_at(stored, at)?;
            at = next;
        }
    }
    if skip_space(stored, at) != stored.len() {
        return None;
    }
    let (start, empty) = metadata?;
    let version = format!(
        "\"resourceVersion\":\"{revision}\"{}",
        if empty { "" } else { "," }
    );
    let mut served = Vec::with_capacity(stored.len() + version.len());
    served.extend_from_slice(&stored[..=start]);
    served.extend_from_slice(version.as_bytes());
    served.extend_from_slice(&stored[start + 1..]);
    Some(served)
}

/// The JSON value that starts at `at` (no space before it), and where it ends.
fn value_at<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8], at: usize) -> Option<(T, usize)> {
    let mut stream = serde_json::Deserializer::from_slice(bytes.get(at..)?).into_iter::<T>();
    let value = stream.next()?.ok()?;
    Some((value, at + stream.byte_offset()))
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// The fields of a stored object a selector reads: each path kept whole, everything else left out (a
/// path through something other than an object finds nothing).
#[derive(Debug, Default)]
pub struct Projection {
    whole: bool,
    fields: BTreeMap<String, Projection>,
}

impl Projection {
    /// The projection that keeps `paths` (each outermost field first).
    pub fn of<'p>(paths: impl IntoIterator<Item = Vec<&'p str>>) -> Self {
        let mut projection = Projection::default();
        for path in paths {
            projection.insert(&path);
        }
        projection
    }

    fn insert(&mut self, path: &[&str]) {
        match path.split_first() {
            None => self.whole = true,
            Some((first, rest)) => self
                .fields
                .entry((*first).to_owned())
                .or_default()
                .insert(rest),
        }
    }

    /// The kept fields of `stored`; `None` when the bytes are not JSON.
    pub fn read(&self, stored: &[u8]) -> Option<Value> {
        let mut deserializer = serde_json::Deserializer::from_slice(stored);
        let value = self.deserialize(&mut deserializer).ok()?;
        deserializer.end().ok()?;
        Some(value)
    }
}

impl<'de> DeserializeSeed<'de> for &Projection {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        if self.whole {
            serde::Deserialize::deserialize(deserializer)
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for &Projection {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match self.fields.get(key.as_ref()) {
                Some(keep) => {
                    kept.insert(key.into_owned(), map.next_value_seed(keep)?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_is_stored_without_its_resource_version_and_served_with_it() {
        let object = json!({"kind": "Pod", "metadata": {"name": "a", "resourceVersion": "5",
            "labels": {"resourceVersion": "kept"}}, "spec": {"resourceVersion": "kept"}});
        let stored = to_stored(&object).unwrap();
        let mut expected = object.clone();
        expected["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        assert_eq!(serde_json::from_slice::<Value>(&stored).unwrap(), expected);
        let served: Value = serde_json::from_slice(&served_json(&stored, 9).unwrap()).unwrap();
        expected["metadata"]["resourceVersion"] = "9".into();
        assert_eq!(served, expected);
        assert_eq!(
            served_json(br#" { "metadata" : { } } "#, 3).unwrap(),
            br#" { "metadata" : {"resourceVersion":"3" } } "#
        );
    }

    #[test]
    fn bytes_that_are_not_a_plain_stored_object_are_left_to_the_decoder() {
        for stored in [
            &b"k8s\x00protobuf"[..],
            b"",
            b"[]",
            b"{\"kind\":\"Pod\"}",
            b"{\"metadata\":[]}",
            b"{\"metadata\":{\"resourceVersion\":\"1\"}}",
            b"{\"metadata\":{},\"metadata\":{}}",
            b"{\"metadata\":{}} trailing",
            b"{\"metadata\":{},}",
            b"{\"metadata\":{}",
            b"{\"metadata\":{\"name\":\"a\"},\"spec\":{\"x\":[1,2}}",
            b"{\"metadata\" {}}",
            b"{\"me\\u0074adata\":{}}",
        ] {
            assert_eq!(
                served_json(stored, 1),
                None,
                "{}",
                String::from_utf8_lossy(stored)
            );
        }
    }

    #[test]
    fn a_projection_keeps_the_named_fields_whole_and_nothing_else() {
        let stored = br#"{"metadata":{"name":"a","labels":{"app":"web"},"annotations":{"x":"y"}},
            "spec":{"nodeName":"n1","containers":[{"name":"c"}],"priority":7},"status":{"phase":"Running"}}"#;
        let projection = Projection::of([
            vec!["metadata", "labels"],
            vec!["metadata", "name"],
            vec!["spec", "nodeName"],
            vec!["spec", "priority"],
            vec!["spec", "containers", "name"],
            vec!["status", "phase", "deeper"],
        ]);
        assert_eq!(
            projection.read(stored).unwrap(),
            json!({"metadata": {"name": "a", "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "priority": 7, "containers": null}, "status": {"phase": null}})
        );
        assert_eq!(projection.read(b"{\"metadata\":"), None);
        assert_eq!(projection.read(b"{} {}"), None);
    }
}
