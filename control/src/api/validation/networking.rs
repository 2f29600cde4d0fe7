//! Validation of networking.k8s.io/v1 Ingress and IngressClass, with Kubernetes' messages
//! (pkg/apis/networking/validation). They are stored and served for the manifests and charts that carry them;
//! an ingress controller is what would act on them.

use super::{Cause, PORT_RANGE, dns1123_label, dns1123_subdomain, iana_svc_name, qualified_name};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, IngressBackend, IngressClassSpec, IngressSpec,
};

const PATH_TYPES: [&str; 3] = ["Exact", "ImplementationSpecific", "Prefix"];
/// What an Exact or Prefix path may not contain, or end with.
const BAD_SEQUENCES: [&str; 5] = ["//", "/./", "/../", "%2f", "%2F"];
const BAD_SUFFIXES: [&str; 2] = ["/..", "/."];
/// The longest IngressClass controller name.
const MAX_CONTROLLER: usize = 250;

const WILDCARD: &str = "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, \
     which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character \
     (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// A host: a DNS subdomain, or `*.` and one.
fn host(field: &str, value: &str, causes: &mut Vec<Cause>) {
    if value.contains('*') {
        if value
            .strip_prefix("*.")
            .is_none_or(|rest| dns1123_subdomain(rest).is_some())
        {
            causes.push(Cause::invalid(field, value, WILDCARD));
        }
    } else if let Some(detail) = dns1123_subdomain(value) {
        causes.push(Cause::invalid(field, value, &detail));
    }
}

fn backend(field: &str, backend: &IngressBackend, causes: &mut Vec<Cause>) {
    match (&backend.resource, &backend.service) {
        (Some(_), Some(_)) => causes.push(Cause::invalid(
            field,
            "",
            "cannot set both resource and service backends",
        )),
        (Some(resource), None) => {
            if resource.kind.is_empty() {
                causes.push(Cause::required(format!("{field}.resource.kind")));
            }
            if resource.name.is_empty() {
                causes.push(Cause::required(format!("{field}.resource.name")));
            }
        }
        (None, Some(service)) => {
            if service.name.is_empty() {
                causes.push(Cause::required(format!("{field}.service.name")));
            } else if let Some(detail) = dns1123_label(&service.name) {
                causes.push(Cause::invalid(
                    format!("{field}.service.name"),
                    &service.name,
                    &detail,
                ));
            }
            let port = service.port.clone().unwrap_or_default();
            let name = port.name.unwrap_or_default();
            let number = port.number.unwrap_or(0);
            match (name.is_empty(), number) {
                (false, n) if n != 0 => causes.push(Cause::invalid(
                    field,
                    "",
                    "cannot set both port name & port number",
                )),
                (false, _) => {
                    if let Some(detail) = iana_svc_name(&name) {
                        causes.push(Cause::invalid(
                            format!("{field}.service.port.name"),
                            &name,
                            detail,
                        ));
                    }
                }
                (true, 0) => causes.push(Cause::required_because(
                    field,
                    "port name or number is required",
                )),
                (true, n) => {
                    if !(1..=65535).contains(&n) {
                        causes.push(Cause::invalid_number(
                            format!("{field}.service.port.number"),
                            i64::from(n),
                            PORT_RANGE,
                        ));
                    }
                }
            }
        }
        (None, None) => causes.push(Cause::invalid(
            field,
            "",
            "resource or service backend is required",
        )),
    }
}

fn http_path(field: &str, path: &HTTPIngressPath, causes: &mut Vec<Cause>) {
    let value = path.path.as_deref().unwrap_or_default();
    match path.path_type.as_str() {
        "" => {
            causes.push(Cause::required_because(
                format!("{field}.pathType"),
                "pathType must be specified",
            ));
            return;
        }
        "Exact" | "Prefix" => {
            if !value.starts_with('/') {
                causes.push(Cause::invalid(
                    format!("{field}.path"),
                    value,
                    "must be an absolute path",
                ));
            }
            for bad in BAD_SEQUENCES.iter().filter(|b| value.contains(**b)) {
                causes.push(Cause::invalid(
                    format!("{field}.path"),
                    value,
                    &format!("must not contain '{bad}'"),
                ));
            }
            for bad in BAD_SUFFIXES.iter().filter(|b| value.ends_with(**b)) {
                causes.push(Cause::invalid(
                    format!("{field}.path"),
                    value,
                    &format!("cannot end with '{bad}'"),
                ));
            }
        }
        "ImplementationSpecific" => {
            if !value.is_empty() && !value.starts_with('/') {
                causes.push(Cause::invalid(
                    format!("{field}.path"),
                    value,
                    "must be an absolute path",
                ));
            }
        }
        other => causes.push(Cause::not_supported(
            format!("{field}.pathType"),
            other,
            &PATH_TYPES,
        )),
    }
    backend(&format!("{field}.backend"), &path.backend, causes);
}

/// An Ingress's spec (ValidateIngressSpec).
pub fn ingress(spec: &IngressSpec, causes: &mut Vec<Cause>) {
    let rules = spec.rules.as_deref().unwrap_or_default();
    if rules.is_empty() && spec.default_backend.is_none() {
        causes.push(Cause::invalid_value(
            "spec",
            &rules,
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(default) = &spec.default_backend {
        backend("spec.defaultBackend", default, causes);
    }
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if let Some(name) = rule.host.as_deref().filter(|h| !h.is_empty()) {
            if name.parse::<std::net::IpAddr>().is_ok() {
                causes.push(Cause::invalid(
                    format!("{at}.host"),
                    name,
                    "must be a DNS name, not an IP address",
                ));
            }
            host(&format!("{at}.host"), name, causes);
        }
        if let Some(http) = &rule.http {
            if http.paths.is_empty() {
                causes.push(Cause::required(format!("{at}.http.paths")));
            }
            for (j, path) in http.paths.iter().enumerate() {
                http_path(&format!("{at}.http.paths[{j}]"), path, causes);
            }
        }
    }
    for (i, tls) in spec.tls.iter().flatten().enumerate() {
        for (j, name) in tls.hosts.iter().flatten().enumerate() {
            host(&format!("spec.tls[{i}].hosts[{j}]"), name, causes);
        }
        if let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty())
            && let Some(detail) = dns1123_subdomain(secret)
        {
            causes.push(Cause::invalid(
                format!("spec.tls[{i}].secretName"),
                secret,
                &detail,
            ));
        }
    }
    if let Some(class) = &spec.ingress_class_name
        && let Some(detail) = dns1123_subdomain(class)
    {
        causes.push(Cause::invalid("spec.ingressClassName", class, &detail));
    }
}

/// An IngressClass's spec: the controller that implements it, a domain-prefixed path.
pub fn ingress_class(spec: &IngressClassSpec, causes: &mut Vec<Cause>) {
    let controller = spec.controller.as_deref().unwrap_or_default();
    if controller.is_empty() {
        causes.push(Cause::required("spec.controller"));
    } else if controller.len() > MAX_CONTROLLER {
        causes.push(Cause::too_long("spec.controller", MAX_CONTROLLER));
    } else {
        // A domain-prefixed path: the domain part is checked as a qualified name's prefix.
        let domain = controller.split('/').next().unwrap_or_default();
        qualified_name("spec.controller", &format!("{domain}/x"), causes);
    }
}

/// What may change in an IngressClass: not its controller.
pub fn ingress_class_update(
    new: &IngressClassSpec,
    old: &IngressClassSpec,
    causes: &mut Vec<Cause>,
) {
    if new.controller != old.controller {
        causes.push(Cause::invalid_value(
            "spec.controller",
            &new.controller,
            "field is immutable",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(spec: serde_json::Value) -> Vec<String> {
        let spec: IngressSpec = serde_json::from_value(spec).unwrap();
        let mut causes = Vec::new();
        ingress(&spec, &mut causes);
        causes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn an_ingress_needs_rules_or_a_backend_and_each_path_a_type_and_a_port() {
        assert_eq!(
            messages(json!({})),
            ["spec: Invalid value: []: either `defaultBackend` or `rules` must be specified"]
        );
        let text = messages(json!({"rules": [{"host": "10.0.0.1", "http": {"paths": [
            {"path": "/a", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
            {"path": "a/../b", "pathType": "Prefix", "backend": {"service": {"name": "web"}}},
            {"path": "/x", "pathType": "Regex", "backend": {"service": {"name": "Web_1", "port": {"number": 70000}}}}]}},
            {"host": "*.example.com", "http": {"paths": []}}],
            "tls": [{"hosts": ["bad..host"], "secretName": "tls"}]}))
        .join("\n");
        for expected in [
            "spec.rules[0].host: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address",
            "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified",
            "spec.rules[0].http.paths[1].path: Invalid value: \"a/../b\": must be an absolute path",
            "spec.rules[0].http.paths[1].path: Invalid value: \"a/../b\": must not contain '/../'",
            "spec.rules[0].http.paths[1].backend: Required value: port name or number is required",
            "spec.rules[0].http.paths[2].pathType: Unsupported value: \"Regex\"",
            "spec.rules[0].http.paths[2].backend.service.name: Invalid value: \"Web_1\"",
            "spec.rules[0].http.paths[2].backend.service.port.number: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.rules[1].http.paths: Required value",
            "spec.tls[0].hosts[0]: Invalid value: \"bad..host\"",
        ] {
            assert!(text.contains(expected), "{expected} not in\n{text}");
        }
        assert!(!text.contains("rules[1].host"), "a wildcard host is valid");
        assert!(
            messages(
                json!({"defaultBackend": {"service": {"name": "web", "port": {"name": "http"}}}})
            )
            .is_empty()
        );
    }
}
