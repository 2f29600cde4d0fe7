//! Validation of every served kind with Kubernetes' rules and messages, ported from Kubernetes'
//! `pkg/apis/*/validation` and apimachinery's name, label, selector and quantity rules: the field errors it
//! reports, the syntax rules shared by every kind, and one module per group of kinds.

pub mod access;
pub mod core;
pub mod networking;
pub mod pod;
pub mod storage;
pub mod workloads;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use std::collections::BTreeMap;

/// One field that failed validation, as a Kubernetes `StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueForbidden`, ...
    pub reason: &'static str,
    /// What is wrong, as Kubernetes words it, without the field (`Required value`, `Invalid value: "x": ...`).
    pub message: String,
    /// The field's path, e.g. `spec.containers[0].image`.
    pub field: String,
}

impl std::fmt::Display for Cause {
    /// `field: message`, as Kubernetes lists a field error in a Status message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

fn with_detail(body: String, detail: &str) -> String {
    if detail.is_empty() {
        body
    } else {
        format!("{body}: {detail}")
    }
}

impl Cause {
    fn new(reason: &'static str, field: impl Into<String>, message: String) -> Self {
        Self {
            reason,
            message,
            field: field.into(),
        }
    }

    /// A required field is missing.
    pub fn required(field: impl Into<String>) -> Self {
        Self::new("FieldValueRequired", field, "Required value".into())
    }

    /// A required field is missing, with why it is required.
    pub fn required_because(field: impl Into<String>, detail: &str) -> Self {
        Self::new(
            "FieldValueRequired",
            field,
            with_detail("Required value".into(), detail),
        )
    }

    /// A field has a text value that is not allowed.
    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Self {
        Self::new(
            "FieldValueInvalid",
            field,
            with_detail(format!("Invalid value: {value:?}"), detail),
        )
    }

    /// A field has a number that is not allowed (numbers are shown unquoted, as Kubernetes does).
    pub fn invalid_number(field: impl Into<String>, value: i64, detail: &str) -> Self {
        Self::new(
            "FieldValueInvalid",
            field,
            with_detail(format!("Invalid value: {value}"), detail),
        )
    }

    /// A field has a structured value that is not allowed (shown as JSON, as Kubernetes shows maps and lists).
    pub fn invalid_value(field: impl Into<String>, value: &impl Serialize, detail: &str) -> Self {
        let shown = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
        Self::new(
            "FieldValueInvalid",
            field,
            with_detail(format!("Invalid value: {shown}"), detail),
        )
    }

    /// A field may not be changed or set.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self::new(
            "FieldValueForbidden",
            field,
            with_detail("Forbidden".into(), detail),
        )
    }

    /// A field's value is not one of the supported ones.
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self::new(
            "FieldValueNotSupported",
            field,
            format!(
                "Unsupported value: {value:?}: supported values: {}",
                quoted.join(", ")
            ),
        )
    }

    /// A value that must be unique is repeated.
    pub fn duplicate(field: impl Into<String>, value: &str) -> Self {
        Self::new(
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: {value:?}"),
        )
    }

    /// A value refers to something that does not exist.
    pub fn not_found(field: impl Into<String>, value: &str) -> Self {
        Self::new("FieldValueNotFound", field, format!("Not found: {value:?}"))
    }

    /// A value is longer than allowed.
    pub fn too_long(field: impl Into<String>, limit: usize) -> Self {
        Self::new(
            "FieldValueTooLong",
            field,
            format!("Too long: may not be more than {limit} bytes"),
        )
    }

    /// A list has more items than allowed.
    pub fn too_many(field: impl Into<String>, actual: usize, limit: usize) -> Self {
        Self::new(
            "FieldValueTooMany",
            field,
            format!("Too many: {actual}: must have at most {limit} items"),
        )
    }
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// The error detail of a DNS-1123 label (namespaces, services, container names), or none if valid.
pub fn dns1123_label(value: &str) -> Option<String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.chars().all(|c| is_alnum(c) || c == '-')
        && value.starts_with(is_alnum)
        && value.ends_with(is_alnum);
    (!ok).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and \
         end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            .to_owned()
    })
}

/// The error detail of a DNS-1123 subdomain (most object names), or none if valid.
pub fn dns1123_subdomain(value: &str) -> Option<String> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|part| dns1123_label(part).is_none());
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must \
         start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            .to_owned()
    })
}

/// The error detail of a name that must be one URL path segment (RBAC objects), or none if valid.
pub fn path_segment_name(value: &str) -> Option<String> {
    if value == "." || value == ".." {
        return Some(format!("may not be '{value}'"));
    }
    ["/", "%"]
        .iter()
        .find(|bad| value.contains(**bad))
        .map(|bad| format!("may not contain '{bad}'"))
}

fn qualified_name_part(value: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| alnum(c) || c == '-' || c == '_' || c == '.')
        && value.starts_with(alnum)
        && value.ends_with(alnum)
}

/// Whether `key` is a valid label or annotation key: an optional DNS subdomain prefix and `/`, then a name.
pub fn is_qualified_name(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => dns1123_subdomain(prefix).is_none() && qualified_name_part(name),
        None => qualified_name_part(key),
    }
}

/// Whether `value` is a valid label value: empty, or up to 63 alphanumerics, '-', '_' or '.' inside.
pub fn is_label_value(value: &str) -> bool {
    value.is_empty() || qualified_name_part(value)
}

const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', \
     '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or \
     '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// Checks a label map, reporting each bad key or value under `field`.
pub fn labels(field: &str, labels: Option<&BTreeMap<String, String>>) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (key, value) in labels.into_iter().flatten() {
        qualified_name(field, key, &mut causes);
        if !is_label_value(value) {
            causes.push(Cause::invalid(field, value, LABEL_VALUE));
        }
    }
    causes
}

/// The error detail of an IANA service name (a named port), or none if valid.
pub fn iana_svc_name(value: &str) -> Option<&'static str> {
    if value.len() > 15 {
        return Some("must be no more than 15 characters");
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Some("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if value.contains("--") {
        return Some("must not contain consecutive hyphens");
    }
    if !value.chars().any(|c| c.is_ascii_lowercase()) {
        return Some("must contain at least one letter (a-z)");
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Some("must not begin or end with a hyphen");
    }
    None
}

/// Kubernetes' words for a port number out of range.
pub const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

/// A port given as a number (1-65535) or an IANA name, as probes' and Services' target ports are.
pub fn port_number_or_name(field: &str, port: &IntOrString, causes: &mut Vec<Cause>) {
    match port {
        IntOrString::Int(n) if !(1..=65535).contains(n) => {
            causes.push(Cause::invalid_number(field, i64::from(*n), PORT_RANGE));
        }
        IntOrString::String(name) => {
            if let Some(detail) = iana_svc_name(name) {
                causes.push(Cause::invalid(field, name, detail));
            }
        }
        IntOrString::Int(_) => {}
    }
}

/// A number that may not be negative.
pub fn non_negative(field: &str, value: Option<i64>, causes: &mut Vec<Cause>) {
    if let Some(n) = value.filter(|n| *n < 0) {
        causes.push(Cause::invalid_number(
            field,
            n,
            "must be greater than or equal to 0",
        ));
    }
}

/// A number that must be above zero.
pub fn positive(field: &str, value: Option<i64>, causes: &mut Vec<Cause>) {
    if let Some(n) = value.filter(|n| *n <= 0) {
        causes.push(Cause::invalid_number(field, n, "must be greater than 0"));
    }
}

/// A text that must be one of a few values.
pub fn one_of(field: &str, value: Option<&str>, supported: &[&str], causes: &mut Vec<Cause>) {
    if let Some(value) = value.filter(|v| !supported.contains(v)) {
        causes.push(Cause::not_supported(field, value, supported));
    }
}

/// A relative path that only descends (volume item paths, subPaths): not absolute, no `..` element.
pub fn local_descending_path(field: &str, path: &str, causes: &mut Vec<Cause>) {
    if path.starts_with('/') {
        causes.push(Cause::invalid(field, path, "must be a relative path"));
    }
    if path.split('/').any(|part| part == "..") {
        causes.push(Cause::invalid(field, path, "must not contain '..'"));
    }
}

/// The detail for a config key (ConfigMap and Secret data, volume items).
pub const CONFIG_KEY: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. \
     'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// A ConfigMap or Secret key: up to 253 of `[-._a-zA-Z0-9]`, and not `.` or `..` or starting with `..`.
pub fn config_key(field: &str, key: &str, causes: &mut Vec<Cause>) {
    if key.is_empty()
        || key.len() > 253
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        causes.push(Cause::invalid(field, key, CONFIG_KEY));
    } else if key == "." {
        causes.push(Cause::invalid(field, key, "must not be '.'"));
    } else if key == ".." {
        causes.push(Cause::invalid(field, key, "must not be '..'"));
    } else if key.starts_with("..") {
        causes.push(Cause::invalid(field, key, "must not start with '..'"));
    }
}

const QUALIFIED_NAME: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must \
     start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for \
     validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// A label key, annotation key or other qualified name (`prefix/name`).
pub fn qualified_name(field: &str, key: &str, causes: &mut Vec<Cause>) {
    if !is_qualified_name(key) {
        causes.push(Cause::invalid(field, key, QUALIFIED_NAME));
    }
}

/// A `metav1.LabelSelector`: its labels and its requirements' keys, operators and values.
pub fn label_selector(field: &str, selector: &LabelSelector, causes: &mut Vec<Cause>) {
    causes.extend(labels(
        &format!("{field}.matchLabels"),
        selector.match_labels.as_ref(),
    ));
    for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        let at = format!("{field}.matchExpressions[{i}]");
        let values = requirement.values.as_deref().unwrap_or_default();
        match requirement.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => causes.push(Cause::required_because(
                format!("{at}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => causes.push(Cause::forbidden(
                format!("{at}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => causes.push(Cause::invalid(
                format!("{at}.operator"),
                other,
                "not a valid selector operator",
            )),
        }
        qualified_name(&format!("{at}.key"), &requirement.key, causes);
        for (j, value) in values.iter().enumerate() {
            if !is_label_value(value) {
                causes.push(Cause::invalid(
                    format!("{at}.values[{j}]"),
                    value,
                    LABEL_VALUE,
                ));
            }
        }
    }
}

/// Whether a selector selects nothing by itself (no labels and no requirements).
pub fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

/// Largest total size of an object's annotations, as Kubernetes' 256 KiB.
pub const MAX_ANNOTATIONS: usize = 256 * 1024;

/// Annotation keys, and their total size.
pub fn annotations(
    field: &str,
    annotations: Option<&BTreeMap<String, String>>,
    causes: &mut Vec<Cause>,
) {
    let mut total = 0;
    for (key, value) in annotations.into_iter().flatten() {
        qualified_name(field, &key.to_ascii_lowercase(), causes);
        total += key.len() + value.len();
    }
    if total > MAX_ANNOTATIONS {
        causes.push(Cause::new(
            "FieldValueTooLong",
            field,
            format!("Too long: must have at most {MAX_ANNOTATIONS} bytes"),
        ));
    }
}

/// A quantity that must parse and not be negative; the parsed value when it is valid.
pub fn non_negative_quantity(
    field: &str,
    text: &str,
    causes: &mut Vec<Cause>,
) -> Option<crate::api::quantity::Quantity> {
    match crate::api::quantity::Quantity::parse(text) {
        Ok(q) if q.milli() < 0 => {
            causes.push(Cause::invalid(
                field,
                text,
                "must be greater than or equal to 0",
            ));
            None
        }
        Ok(q) => Some(q),
        Err(e) => {
            causes.push(Cause::invalid(field, text, &e.to_string()));
            None
        }
    }
}

/// An IP address.
pub fn ip_address(field: &str, value: &str, causes: &mut Vec<Cause>) {
    if value.parse::<std::net::IpAddr>().is_err() {
        causes.push(Cause::invalid(
            field,
            value,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
}

/// A CIDR (`10.0.0.0/24`).
pub fn cidr(field: &str, value: &str, causes: &mut Vec<Cause>) {
    if value.parse::<ipnet::IpNet>().is_err() {
        causes.push(Cause::invalid(
            field,
            value,
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc_1123() {
        assert!(dns1123_subdomain("web-1.example").is_none());
        assert!(dns1123_subdomain("Web").is_some());
        assert!(dns1123_subdomain("-web").is_some());
        assert!(dns1123_subdomain("").is_some());
        assert!(dns1123_label("a.b").is_some());
        assert!(dns1123_label(&"a".repeat(64)).is_some());
    }

    #[test]
    fn label_keys_may_carry_a_dns_prefix() {
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(is_qualified_name("App_1"));
        assert!(!is_qualified_name("bad key"));
        assert!(!is_qualified_name("/name"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-x"));
    }
}
