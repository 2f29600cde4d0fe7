//! Kubernetes' syntax rules for names and labels, and the field errors validation reports.

use serde::Serialize;
use std::collections::BTreeMap;

/// One field that failed validation, as a Kubernetes `StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueForbidden`, ...
    pub reason: &'static str,
    /// What is wrong, as Kubernetes words it.
    pub message: String,
    /// The field's path, e.g. `spec.containers[0].image`.
    pub field: String,
}

impl Cause {
    /// A required field is missing.
    pub fn required(field: impl Into<String>) -> Self {
        let field = field.into();
        Self {
            reason: "FieldValueRequired",
            message: format!("{field}: Required value"),
            field,
        }
    }

    /// A field has a value that is not allowed.
    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Self {
        let field = field.into();
        Self {
            reason: "FieldValueInvalid",
            message: format!("{field}: Invalid value: {value:?}: {detail}"),
            field,
        }
    }

    /// A field may not be changed or set.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        let field = field.into();
        Self {
            reason: "FieldValueForbidden",
            message: format!("{field}: Forbidden: {detail}"),
            field,
        }
    }

    /// A field's value is not one of the supported ones.
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let field = field.into();
        let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self {
            reason: "FieldValueNotSupported",
            message: format!(
                "{field}: Unsupported value: {value:?}: supported values: {}",
                quoted.join(", ")
            ),
            field,
        }
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

/// Checks a label map, reporting each bad key or value under `field`.
pub fn labels(field: &str, labels: Option<&BTreeMap<String, String>>) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (key, value) in labels.into_iter().flatten() {
        if !is_qualified_name(key) {
            causes.push(Cause::invalid(
                field,
                key,
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with \
                 an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for \
                 validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            ));
        }
        if !is_label_value(value) {
            causes.push(Cause::invalid(
                field,
                value,
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', \
                 and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or \
                 '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ));
        }
    }
    causes
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
