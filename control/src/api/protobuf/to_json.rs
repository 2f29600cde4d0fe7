//! A protobuf message as its Kubernetes JSON object.
//!
//! Go writes every non-pointer field, so a field on the wire may be Go's zero value standing for "unset".
//! An empty singular string, repeated field or map is left out, as Go's `omitempty` does (no API field
//! tells an empty string from an unset one); numbers and booleans are kept, as `replicas: 0` and
//! `automountServiceAccountToken: false` mean something. ObjectMeta and ListMeta, whose numbers are all
//! "unset" at zero, leave those out too.

use super::wellknown::{Raw, WellKnown};
use base64::Engine;
use protobuf::MessageDyn;
use protobuf::reflect::{ReflectFieldRef, ReflectValueRef};
use serde_json::{Map, Value};

/// Why a message could not be written as JSON.
#[derive(Debug)]
pub enum Error {
    /// Enveloped objects nest too deeply.
    TooDeep,
    /// A value is not valid for its type.
    Invalid(String),
}

/// Messages whose numeric zero values are Go's "unset".
const ZERO_IS_UNSET: &[&str] = &[
    "apimachinery.pkg.apis.meta.v1.ObjectMeta",
    "apimachinery.pkg.apis.meta.v1.ListMeta",
];

/// `message` as JSON; `depth` counts the enveloped objects it is inside.
pub fn message(message: &dyn MessageDyn, depth: usize) -> Result<Value, Error> {
    let descriptor = message.descriptor_dyn();
    let zero_is_unset = ZERO_IS_UNSET.contains(&descriptor.full_name());
    let mut object = Map::new();
    for field in descriptor.fields() {
        let json = match field.get_reflect(message) {
            ReflectFieldRef::Optional(value) => match value.value() {
                Some(value) if zero_is_unset && is_zero_number(&value) => None,
                Some(value) => singular(value, depth)?,
                None => None,
            },
            ReflectFieldRef::Repeated(values) if !values.is_empty() => {
                let items = values
                    .into_iter()
                    .map(|v| element(v, depth))
                    .collect::<Result<Vec<_>, _>>()?;
                Some(Value::Array(items))
            }
            ReflectFieldRef::Map(entries) if !entries.is_empty() => {
                let mut map = Map::new();
                for (key, value) in &entries {
                    let key = match key {
                        ReflectValueRef::String(s) => s.to_owned(),
                        other => other.to_string(),
                    };
                    map.insert(key, element(value, depth)?);
                }
                Some(Value::Object(map))
            }
            ReflectFieldRef::Repeated(_) | ReflectFieldRef::Map(_) => None,
        };
        match json {
            // An embedded struct's fields are the parent's, in JSON.
            Some(Value::Object(inner))
                if super::is_inline(descriptor.full_name(), field.name()) =>
            {
                object.extend(inner);
            }
            Some(json) => {
                object.insert(field.name().to_owned(), json);
            }
            None => {}
        }
    }
    Ok(Value::Object(object))
}

fn is_zero_number(value: &ReflectValueRef) -> bool {
    matches!(
        value,
        ReflectValueRef::I32(0)
            | ReflectValueRef::I64(0)
            | ReflectValueRef::U32(0)
            | ReflectValueRef::U64(0)
    )
}

/// A singular field's JSON, `None` to leave it out.
fn singular(value: ReflectValueRef, depth: usize) -> Result<Option<Value>, Error> {
    match value {
        ReflectValueRef::String("") | ReflectValueRef::Bytes([]) => Ok(None),
        ReflectValueRef::Message(m) => nested(&*m, depth),
        other => element(other, depth).map(Some),
    }
}

/// A message field's JSON, well-known types converted; `None` to leave it out.
fn nested(m: &dyn MessageDyn, depth: usize) -> Result<Option<Value>, Error> {
    match WellKnown::of(&m.descriptor_dyn()) {
        None => message(m, depth).map(Some),
        Some(kind) => match super::wellknown::to_json(kind, m).map_err(Error::Invalid)? {
            None => Ok(None),
            Some(Raw::Json(json)) => Ok(Some(json)),
            Some(Raw::Enveloped(bytes)) => match super::decode_nested(bytes, depth + 1) {
                Ok(json) => Ok(Some(json)),
                Err(super::ProtobufError::TooDeep) => Err(Error::TooDeep),
                Err(e) => Err(Error::Invalid(e.to_string())),
            },
        },
    }
}

/// An element of a repeated field or map, or a singular scalar.
fn element(value: ReflectValueRef, depth: usize) -> Result<Value, Error> {
    Ok(match value {
        ReflectValueRef::U32(n) => n.into(),
        ReflectValueRef::U64(n) => n.into(),
        ReflectValueRef::I32(n) => n.into(),
        ReflectValueRef::I64(n) => n.into(),
        ReflectValueRef::F32(n) => float(n.into())?,
        ReflectValueRef::F64(n) => float(n)?,
        ReflectValueRef::Bool(b) => b.into(),
        ReflectValueRef::String(s) => s.into(),
        ReflectValueRef::Bytes(b) => base64::engine::general_purpose::STANDARD.encode(b).into(),
        ReflectValueRef::Enum(_, n) => n.into(),
        ReflectValueRef::Message(m) => nested(&*m, depth)?.unwrap_or(Value::Null),
    })
}

fn float(n: f64) -> Result<Value, Error> {
    serde_json::Number::from_f64(n)
        .map(Value::Number)
        .ok_or_else(|| Error::Invalid(format!("{n} is not a JSON number")))
}
