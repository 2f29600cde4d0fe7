//! Label selectors (equality- and set-based) and field selectors, parsed from query strings.

use serde_json::Value;
use std::collections::BTreeMap;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value`, `key==value`, or `key in (a,b)`.
    In(String, Vec<String>),
    /// `key!=value` or `key notin (a,b)` (also true when the key is absent).
    NotIn(String, Vec<String>),
    /// `key`
    Exists(String),
    /// `!key`
    DoesNotExist(String),
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// A selector that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SelectorError(pub String);

fn split_top_level(input: &str) -> Vec<&str> {
    // Commas inside `in (a,b)` do not separate requirements.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&input[start..]);
    parts
}

fn check_key(key: &str, whole: &str) -> Result<String, SelectorError> {
    if super::validation::is_qualified_name(key) {
        Ok(key.to_owned())
    } else {
        Err(SelectorError(format!(
            "invalid label key {key:?} in {whole:?}"
        )))
    }
}

fn check_value(value: &str, whole: &str) -> Result<String, SelectorError> {
    if super::validation::is_label_value(value) {
        Ok(value.to_owned())
    } else {
        Err(SelectorError(format!(
            "invalid label value {value:?} in {whole:?}"
        )))
    }
}

fn set_values(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            SelectorError(format!(
                "expected a parenthesised set of values in {whole:?}"
            ))
        })?;
    inner
        .split(',')
        .map(|v| check_value(v.trim(), whole))
        .collect()
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k`.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for raw in split_top_level(input) {
            let part = raw.trim();
            if part.is_empty() {
                continue;
            }
            let requirement = if let Some(key) = part.strip_prefix('!') {
                Requirement::DoesNotExist(check_key(key.trim(), part)?)
            } else if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotIn(
                    check_key(key.trim(), part)?,
                    vec![check_value(value.trim(), part)?],
                )
            } else if let Some((key, value)) =
                part.split_once("==").or_else(|| part.split_once('='))
            {
                Requirement::In(
                    check_key(key.trim(), part)?,
                    vec![check_value(value.trim(), part)?],
                )
            } else if let Some((key, rest)) = part.split_once(" notin ") {
                Requirement::NotIn(check_key(key.trim(), part)?, set_values(rest, part)?)
            } else if let Some((key, rest)) = part.split_once(" in ") {
                Requirement::In(check_key(key.trim(), part)?, set_values(rest, part)?)
            } else {
                Requirement::Exists(check_key(part, part)?)
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    /// Builds the selector of a `metav1.LabelSelector` object (matchLabels and matchExpressions).
    pub fn from_object(selector: &Value) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (key, value) in labels {
                requirements.push(Requirement::In(
                    key.clone(),
                    vec![value.as_str().unwrap_or_default().to_owned()],
                ));
            }
        }
        for expression in selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = expression
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let values: Vec<String> = expression
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            let requirement = match expression.get("operator").and_then(Value::as_str) {
                Some("In") => Requirement::In(key, values),
                Some("NotIn") => Requirement::NotIn(key, values),
                Some("Exists") => Requirement::Exists(key),
                Some("DoesNotExist") => Requirement::DoesNotExist(key),
                other => {
                    return Err(SelectorError(format!(
                        "{other:?} is not a valid label selector operator"
                    )));
                }
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    /// Whether a label map satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|key| labels.get(key).map(String::as_str))
    }

    /// Whether the labels `label` looks up satisfy every requirement.
    pub fn matches_with<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|requirement| match requirement {
            Requirement::In(key, values) => {
                label(key).is_some_and(|v| values.iter().any(|w| w == v))
            }
            Requirement::NotIn(key, values) => {
                label(key).is_none_or(|v| !values.iter().any(|w| w == v))
            }
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::DoesNotExist(key) => label(key).is_none(),
        })
    }

    /// Renders the selector in query-string form (as `kubectl get -l` takes it).
    pub fn render(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|requirement| match requirement {
                Requirement::In(key, values) if values.len() == 1 => format!("{key}={}", values[0]),
                Requirement::In(key, values) => format!("{key} in ({})", values.join(",")),
                Requirement::NotIn(key, values) if values.len() == 1 => {
                    format!("{key}!={}", values[0])
                }
                Requirement::NotIn(key, values) => format!("{key} notin ({})", values.join(",")),
                Requirement::Exists(key) => key.clone(),
                Requirement::DoesNotExist(key) => format!("!{key}"),
            })
            .collect();
        parts.join(",")
    }
}

/// A parsed field selector: `field=value`, `field==value` and `field!=value` terms, all of which must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses a field selector, accepting only the fields in `supported`.
    pub fn parse(input: &str, supported: &[&str]) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(SelectorError(format!(
                    "invalid field selector {part:?}: expected field=value"
                )));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(SelectorError(format!("field label not supported: {field}")));
            }
            terms.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    /// Whether an object satisfies every term; a missing field reads as the empty string.
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let mut node = object;
            for segment in field.split('.') {
                node = node.get(segment).unwrap_or(&Value::Null);
            }
            let same = match node {
                Value::String(s) => s == value,
                Value::Null => value.is_empty(),
                other => serde_json::to_string(other).is_ok_and(|text| text == *value),
            };
            same == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_and_set_based_requirements_combine() {
        let selector =
            LabelSelector::parse("app=web, tier in (front,edge),env notin (prod),!legacy,team")
                .unwrap();
        assert!(selector.matches(&labels(&[("app", "web"), ("tier", "edge"), ("team", "a")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "back"), ("team", "a")])));
        assert!(!selector.matches(&labels(&[
            ("app", "web"),
            ("tier", "edge"),
            ("env", "prod"),
            ("team", "a")
        ])));
        assert!(!selector.matches(&labels(&[
            ("app", "web"),
            ("tier", "edge"),
            ("legacy", ""),
            ("team", "a")
        ])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "edge")])));
    }

    #[test]
    fn not_equal_matches_objects_without_the_label() {
        let selector = LabelSelector::parse("app!=web").unwrap();
        assert!(selector.matches(&labels(&[])));
        assert!(!selector.matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn malformed_selectors_are_refused() {
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("bad key=x").is_err());
        assert!(FieldSelector::parse("spec.foo=x", &["metadata.name"]).is_err());
    }

    #[test]
    fn field_selectors_read_nested_fields() {
        let selector = FieldSelector::parse(
            "spec.nodeName=n1,status.phase!=Failed",
            &["spec.nodeName", "status.phase"],
        )
        .unwrap();
        let pod = serde_json::json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert!(selector.matches(&pod));
        let unbound = serde_json::json!({"spec": {}});
        assert!(!selector.matches(&unbound));
        let unbound_selector = FieldSelector::parse("spec.nodeName=", &["spec.nodeName"]).unwrap();
        assert!(unbound_selector.matches(&unbound));
    }
}
