//! apimachinery's types whose JSON is not the shape of their message: times, durations, quantities,
//! int-or-string, embedded raw JSON, and named string slices.

use super::field;
use protobuf::MessageDyn;
use protobuf::reflect::{MessageDescriptor, ReflectValueBox, ReflectValueRef};
use serde_json::Value;

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

/// A duration in nanoseconds as Go's `time.Duration.String` writes it: `1h2m3.5s`, `250ms`, `0s`.
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let body = if n < 1_000 {
        format!("{n}ns")
    } else if n < 1_000_000 {
        format!("{}µs", decimal(n, 1_000))
    } else if n < 1_000_000_000 {
        format!("{}ms", decimal(n, 1_000_000))
    } else {
        let seconds = n / 1_000_000_000;
        let (hours, minutes) = (seconds / 3600, seconds / 60 % 60);
        let rest = decimal(n % 60_000_000_000, 1_000_000_000);
        match (hours, minutes) {
            (0, 0) => format!("{rest}s"),
            (0, m) => format!("{m}m{rest}s"),
            (h, m) => format!("{h}h{m}m{rest}s"),
        }
    };
    format!("{sign}{body}")
}

/// `value / unit` with its fraction, trailing zeros trimmed.
fn decimal(value: u64, unit: u64) -> String {
    let (whole, fraction) = (value / unit, value % unit);
    if fraction == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parses a Go duration string (`1h30m`, `1.5s`, `-250ms`, `0`) to nanoseconds.
pub fn parse_go_duration(text: &str) -> Result<i64, String> {
    let invalid = || format!("invalid duration {text:?}");
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(invalid)?;
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(invalid()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        let mut part = whole.checked_mul(scale).ok_or_else(invalid)?;
        let mut place = scale;
        for digit in fraction.chars() {
            place /= 10;
            let digit = i128::from(digit.to_digit(10).ok_or_else(invalid)?);
            part += digit * place;
        }
        total = total.checked_add(part).ok_or_else(invalid)?;
        rest = after;
    }
    let total = if negative { -total } else { total };
    i64::try_from(total).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_go_writes_them() {
        for (nanos, text) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (250_000_000, "250ms"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (-3_723_000_000_000, "-1h2m3s"),
        ] {
            assert_eq!(go_duration(nanos), text);
            assert_eq!(parse_go_duration(text), Ok(nanos), "{text}");
        }
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration(".5s"), Ok(500_000_000));
        for bad in ["", "1", "s", "1x", "1.2.3s", "-", "99999999999h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_are_written_to_the_second_or_microsecond() {
        assert_eq!(rfc3339(0, None).as_deref(), Ok("1970-01-01T00:00:00Z"));
        assert_eq!(
            rfc3339(1_764_547_200, Some(1234)).as_deref(),
            Ok("2025-12-01T00:00:00.001234Z")
        );
    }
}
