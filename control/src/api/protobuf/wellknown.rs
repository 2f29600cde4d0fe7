//! apimachinery's types whose JSON is not the shape of their message: times, durations, quantities,
//! int-or-string, embedded raw JSON, and named string slices.

use super::field;
use protobuf::MessageDyn;
use protobuf::reflect::{MessageDescriptor, ReflectValueBox, ReflectValueRef};
use serde_json::Value;
use wasmkube_core::go_duration::{go_duration, parse_go_duration};

/// A type whose JSON and message differ.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WellKnown {
    /// `meta.v1.Time`: an RFC 3339 string to the second; `{seconds, nanos}`, empty for the zero time.
    Time,
    /// `meta.v1.MicroTime`: an RFC 3339 string to the microsecond.
    MicroTime,
    /// `meta.v1.Duration`: a Go duration string (`1h2m3s`); `{duration}` in nanoseconds.
    Duration,
    /// `resource.Quantity`: a string (`100m`); `{string}`.
    Quantity,
    /// `intstr.IntOrString`: a number or a string; `{type, intVal, strVal}`.
    IntOrString,
    /// `runtime.RawExtension` and apiextensions' `JSON`: any JSON; `{raw}`, the JSON's bytes.
    RawJson,
    /// `meta.v1.FieldsV1`: a JSON object; `{Raw}`, its bytes.
    Fields,
    /// A named slice of strings (`ExtraValue`, `Verbs`): a JSON array; `{items}`.
    Strings,
}

impl WellKnown {
    /// Which well-known type a message is, if any.
    pub fn of(message: &MessageDescriptor) -> Option<Self> {
        Some(match message.full_name() {
            "apimachinery.pkg.apis.meta.v1.Time" => WellKnown::Time,
            "apimachinery.pkg.apis.meta.v1.MicroTime" => WellKnown::MicroTime,
            "apimachinery.pkg.apis.meta.v1.Duration" => WellKnown::Duration,
            "apimachinery.pkg.api.resource.Quantity"
            | "apimachinery.pkg.api.resource.QuantityValue" => WellKnown::Quantity,
            "apimachinery.pkg.util.intstr.IntOrString" => WellKnown::IntOrString,
            "apimachinery.pkg.runtime.RawExtension"
            | "apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON" => WellKnown::RawJson,
            "apimachinery.pkg.apis.meta.v1.FieldsV1" => WellKnown::Fields,
            "apimachinery.pkg.apis.meta.v1.Verbs" => WellKnown::Strings,
            name if name.ends_with(".ExtraValue") => WellKnown::Strings,
            _ => return None,
        })
    }
}

fn int(message: &dyn MessageDyn, name: &str) -> i64 {
    match field(message, name) {
        Some(ReflectValueRef::I64(n)) => n,
        Some(ReflectValueRef::I32(n)) => n.into(),
        _ => 0,
    }
}

fn bytes<'a>(message: &'a dyn MessageDyn, name: &str) -> &'a [u8] {
    match field(message, name) {
        Some(ReflectValueRef::Bytes(b)) => b,
        _ => &[],
    }
}

/// What a raw JSON field holds: JSON, or (as protobuf clients may send) an enveloped protobuf object.
pub enum Raw<'a> {
    /// Parsed JSON.
    Json(Value),
    /// An enveloped protobuf object, for the caller to decode.
    Enveloped(&'a [u8]),
}

/// A well-known message as JSON. `Ok(None)` leaves the field out (the zero time, an empty raw value).
pub fn to_json<'a>(
    kind: WellKnown,
    message: &'a dyn MessageDyn,
) -> Result<Option<Raw<'a>>, String> {
    let json = match kind {
        WellKnown::Time | WellKnown::MicroTime => {
            if field(message, "seconds").is_none() && field(message, "nanos").is_none() {
                return Ok(None);
            }
            let seconds = int(message, "seconds");
            let text = if kind == WellKnown::Time {
                rfc3339(seconds, None)?
            } else {
                rfc3339(seconds, Some(int(message, "nanos") / 1000))?
            };
            Value::String(text)
        }
        WellKnown::Duration => Value::String(go_duration(int(message, "duration"))),
        WellKnown::Quantity => match field(message, "string") {
            Some(ReflectValueRef::String(s)) if !s.is_empty() => Value::String(s.to_owned()),
            _ => return Ok(None),
        },
        WellKnown::IntOrString => {
            if int(message, "type") == 1 {
                match field(message, "strVal") {
                    Some(ReflectValueRef::String(s)) => Value::String(s.to_owned()),
                    _ => Value::String(String::new()),
                }
            } else {
                Value::from(int(message, "intVal"))
            }
        }
        WellKnown::RawJson | WellKnown::Fields => {
            let raw = bytes(
                message,
                if kind == WellKnown::Fields {
                    "Raw"
                } else {
                    "raw"
                },
            );
            if raw.is_empty() {
                return Ok(None);
            }
            if raw.starts_with(super::MAGIC) {
                return Ok(Some(Raw::Enveloped(raw)));
            }
            serde_json::from_slice(raw).map_err(|e| format!("raw JSON: {e}"))?
        }
        WellKnown::Strings => {
            let items = message
                .descriptor_dyn()
                .field_by_name("items")
                .map(|f| {
                    f.get_repeated(message)
                        .into_iter()
                        .filter_map(|v| match v {
                            ReflectValueRef::String(s) => Some(Value::String(s.to_owned())),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            Value::Array(items)
        }
    };
    Ok(Some(Raw::Json(json)))
}

/// A well-known message from its JSON.
pub fn from_json(
    kind: WellKnown,
    descriptor: &MessageDescriptor,
    json: &Value,
) -> Result<Box<dyn MessageDyn>, String> {
    let mut message = descriptor.new_instance();
    let mut set = |name: &str, value: ReflectValueBox| match descriptor.field_by_name(name) {
        Some(field) => {
            field.set_singular_field(&mut *message, value);
            Ok(())
        }
        None => Err(format!("{} has no field {name}", descriptor.full_name())),
    };
    match kind {
        WellKnown::Time | WellKnown::MicroTime => {
            let text = json.as_str().ok_or("expected an RFC 3339 time string")?;
            let time: jiff::Timestamp = text
                .parse()
                .map_err(|e| format!("invalid time {text:?}: {e}"))?;
            set("seconds", ReflectValueBox::I64(time.as_second()))?;
            let nanos = time.subsec_nanosecond();
            if kind == WellKnown::MicroTime && nanos != 0 {
                set("nanos", ReflectValueBox::I32(nanos))?;
            }
        }
        WellKnown::Duration => {
            let text = json.as_str().ok_or("expected a duration string")?;
            set("duration", ReflectValueBox::I64(parse_go_duration(text)?))?;
        }
        WellKnown::Quantity => {
            let text = match json {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err("expected a quantity string".into()),
            };
            set("string", ReflectValueBox::String(text))?;
        }
        WellKnown::IntOrString => match json {
            Value::String(s) => {
                set("type", ReflectValueBox::I64(1))?;
                set("strVal", ReflectValueBox::String(s.clone()))?;
            }
            Value::Number(n) => {
                let n = n
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or("expected a 32-bit integer or a string")?;
                set("type", ReflectValueBox::I64(0))?;
                set("intVal", ReflectValueBox::I32(n))?;
            }
            _ => return Err("expected an integer or a string".into()),
        },
        WellKnown::RawJson | WellKnown::Fields => {
            let raw = serde_json::to_vec(json).map_err(|e| e.to_string())?;
            let name = if kind == WellKnown::Fields {
                "Raw"
            } else {
                "raw"
            };
            set(name, ReflectValueBox::Bytes(raw))?;
        }
        WellKnown::Strings => {
            let items = json.as_array().ok_or("expected an array of strings")?;
            let field = descriptor
                .field_by_name("items")
                .ok_or("the named slice has no items field")?;
            let mut repeated = field.mut_repeated(&mut *message);
            for item in items {
                let text = item.as_str().ok_or("expected an array of strings")?;
                repeated.push(ReflectValueBox::String(text.to_owned()));
            }
        }
    }
    Ok(message)
}

/// `seconds` since the epoch in UTC, as Kubernetes writes times: to the second, or with six digits of
/// `micros`.
fn rfc3339(seconds: i64, micros: Option<i64>) -> Result<String, String> {
    let time = jiff::Timestamp::from_second(seconds).map_err(|e| format!("invalid time: {e}"))?;
    let whole = time.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    Ok(match micros {
        None => format!("{whole}Z"),
        Some(micros) => format!("{whole}.{:06}Z", micros.clamp(0, 999_999)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_to_the_second_or_microsecond() {
        assert_eq!(rfc3339(0, None).as_deref(), Ok("1970-01-01T00:00:00Z"));
        assert_eq!(
            rfc3339(1_764_547_200, Some(1234)).as_deref(),
            Ok("2025-12-01T00:00:00.001234Z")
        );
    }
}
