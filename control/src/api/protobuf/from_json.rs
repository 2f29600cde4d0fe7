//! A Kubernetes JSON object as a protobuf message. Keys the message has no field for (`apiVersion`,
//! `kind`, fields newer than the .proto files) are left out.

use super::wellknown::{self, WellKnown};
use base64::Engine;
use protobuf::MessageDyn;
use protobuf::reflect::{MessageDescriptor, ReflectValueBox, RuntimeFieldType, RuntimeType};
use serde_json::Value;

/// A JSON value that does not fit its field.
#[derive(Debug)]
pub struct Error {
    /// The path to the field, innermost first.
    segments: Vec<String>,
    /// What was wrong.
    pub message: String,
}

impl Error {
    fn new(message: impl Into<String>) -> Self {
        Self {
            segments: Vec::new(),
            message: message.into(),
        }
    }

    fn within(mut self, segment: String) -> Self {
        self.segments.push(segment);
        self
    }

    /// The field's path, as `spec.containers[0].ports`.
    pub fn path(&self) -> String {
        let mut path = String::new();
        for segment in self.segments.iter().rev() {
            if !path.is_empty() && !segment.starts_with('[') {
                path.push('.');
            }
            path.push_str(segment);
        }
        path
    }
}

/// `json` as a message of `descriptor`.
pub fn message(descriptor: &MessageDescriptor, json: &Value) -> Result<Box<dyn MessageDyn>, Error> {
    if let Some(kind) = WellKnown::of(descriptor) {
        return wellknown::from_json(kind, descriptor, json).map_err(Error::new);
    }
    let object = json
        .as_object()
        .ok_or_else(|| Error::new("expected an object"))?;
    let mut message = descriptor.new_instance();
    // An embedded struct is read from the parent's own fields.
    for field in descriptor.fields() {
        if super::is_inline(descriptor.full_name(), field.name())
            && let RuntimeFieldType::Singular(RuntimeType::Message(inner)) =
                field.runtime_field_type()
        {
            let embedded = self::message(&inner, json)?;
            field.set_singular_field(&mut *message, ReflectValueBox::Message(embedded));
        }
    }
    for (key, value) in object {
        let Some(field) = descriptor.field_by_name(key) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let within = |e: Error| e.within(key.clone());
        match field.runtime_field_type() {
            RuntimeFieldType::Singular(t) => {
                field.set_singular_field(&mut *message, boxed(&t, value).map_err(within)?);
            }
            RuntimeFieldType::Repeated(t) => {
                let items = value
                    .as_array()
                    .ok_or_else(|| within(Error::new("expected an array")))?;
                let mut repeated = field.mut_repeated(&mut *message);
                for (index, item) in items.iter().enumerate() {
                    let item =
                        boxed(&t, item).map_err(|e| within(e.within(format!("[{index}]"))))?;
                    repeated.push(item);
                }
            }
            RuntimeFieldType::Map(_, t) => {
                let entries = value
                    .as_object()
                    .ok_or_else(|| within(Error::new("expected an object")))?;
                let mut map = field.mut_map(&mut *message);
                for (name, item) in entries {
                    let item =
                        boxed(&t, item).map_err(|e| within(e.within(format!("[{name}]"))))?;
                    map.insert(ReflectValueBox::String(name.clone()), item);
                }
            }
        }
    }
    Ok(message)
}

/// One value of type `t`.
fn boxed(t: &RuntimeType, json: &Value) -> Result<ReflectValueBox, Error> {
    let integer = || {
        json.as_i64()
            .ok_or_else(|| Error::new("expected an integer"))
    };
    let unsigned = || {
        json.as_u64()
            .ok_or_else(|| Error::new("expected a non-negative integer"))
    };
    let out_of_range = |_| Error::new("the integer is out of range");
    Ok(match t {
        RuntimeType::I32 => ReflectValueBox::I32(i32::try_from(integer()?).map_err(out_of_range)?),
        RuntimeType::I64 => ReflectValueBox::I64(integer()?),
        RuntimeType::U32 => ReflectValueBox::U32(u32::try_from(unsigned()?).map_err(out_of_range)?),
        RuntimeType::U64 => ReflectValueBox::U64(unsigned()?),
        RuntimeType::F32 | RuntimeType::F64 => {
            let n = json
                .as_f64()
                .ok_or_else(|| Error::new("expected a number"))?;
            if matches!(t, RuntimeType::F32) {
                ReflectValueBox::F32(n as f32)
            } else {
                ReflectValueBox::F64(n)
            }
        }
        RuntimeType::Bool => ReflectValueBox::Bool(
            json.as_bool()
                .ok_or_else(|| Error::new("expected a boolean"))?,
        ),
        RuntimeType::String => ReflectValueBox::String(
            json.as_str()
                .ok_or_else(|| Error::new("expected a string"))?
                .to_owned(),
        ),
        RuntimeType::VecU8 => {
            let text = json
                .as_str()
                .ok_or_else(|| Error::new("expected a base64 string"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| Error::new(format!("invalid base64: {e}")))?;
            ReflectValueBox::Bytes(bytes)
        }
        RuntimeType::Enum(e) => {
            let n = i32::try_from(integer()?).map_err(out_of_range)?;
            ReflectValueBox::Enum(e.clone(), n)
        }
        RuntimeType::Message(descriptor) => ReflectValueBox::Message(message(descriptor, json)?),
    })
}
