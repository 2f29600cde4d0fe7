//! core/v1 kinds other than pods, and the discovery and coordination kinds, as Kubernetes'
//! `core/validation`, `discovery/validation` and `coordination/validation` check them: Service ports and
//! policies, ConfigMap and Secret keys and sizes, Node taints, Endpoints and EndpointSlice addresses, Events,
//! Leases, quotas and limit ranges.

use super::non_negative_quantity;
use super::{
    Cause, PORT_RANGE, cidr, config_key, dns1123_label, dns1123_subdomain, ip_address, labels,
    non_negative, one_of, port_number_or_name, positive, qualified_name,
};
use crate::api::quantity::Quantity;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::api::core::v1::{
    ConfigMap, EndpointPort, Endpoints, Event, LimitRangeSpec, NodeSpec, ResourceQuotaSpec, Secret,
    ServiceSpec,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, HashSet};

/// Largest total size of a ConfigMap's or Secret's data, as Kubernetes' 1 MiB.
pub const MAX_DATA: usize = 1024 * 1024;

const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];

/// A Service's spec.
pub fn service(spec: &ServiceSpec, causes: &mut Vec<Cause>) {
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    one_of(
        "spec.type",
        Some(kind),
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        causes,
    );
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports = spec.ports.as_deref().unwrap_or_default();
    if kind == "ExternalName" {
        match spec.external_name.as_deref().filter(|n| !n.is_empty()) {
            None => causes.push(Cause::required("spec.externalName")),
            Some(name) => {
                if let Some(detail) = dns1123_subdomain(name.trim_end_matches('.')) {
                    causes.push(Cause::invalid("spec.externalName", name, &detail));
                }
            }
        }
    } else if !headless && ports.is_empty() {
        causes.push(Cause::required("spec.ports"));
    }
    if headless && kind != "ClusterIP" && kind != "ExternalName" {
        causes.push(Cause::invalid(
            "spec.clusterIPs[0]",
            "None",
            &format!("may not be set to 'None' for {kind} services"),
        ));
    }
    let mut names = HashSet::new();
    let mut numbers = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let name = port.name.as_deref().unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            causes.push(Cause::required(format!("{at}.name")));
        } else if !name.is_empty() {
            if let Some(detail) = dns1123_label(name) {
                causes.push(Cause::invalid(format!("{at}.name"), name, &detail));
            } else if !names.insert(name) {
                causes.push(Cause::duplicate(format!("{at}.name"), name));
            }
        }
        if !(1..=65535).contains(&port.port) {
            causes.push(Cause::invalid_number(
                format!("{at}.port"),
                i64::from(port.port),
                PORT_RANGE,
            ));
        }
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        one_of(
            &format!("{at}.protocol"),
            Some(protocol),
            &PROTOCOLS,
            causes,
        );
        if !numbers.insert((port.port, protocol)) {
            causes.push(Cause::duplicate(
                at.clone(),
                &format!("{}/{protocol}", port.port),
            ));
        }
        if let Some(target) = &port.target_port {
            port_number_or_name(&format!("{at}.targetPort"), target, causes);
        }
        if let Some(node_port) = port.node_port.filter(|p| *p != 0) {
            if !(1..=65535).contains(&node_port) {
                causes.push(Cause::invalid_number(
                    format!("{at}.nodePort"),
                    i64::from(node_port),
                    PORT_RANGE,
                ));
            } else if kind == "ClusterIP" || kind == "ExternalName" {
                causes.push(Cause::forbidden(
                    format!("{at}.nodePort"),
                    &format!("may not be used when `type` is '{kind}'"),
                ));
            }
        }
        if let Some(protocol) = port.app_protocol.as_deref() {
            qualified_name(&format!("{at}.appProtocol"), protocol, causes);
        }
    }
    causes.extend(labels("spec.selector", spec.selector.as_ref()));
    one_of(
        "spec.sessionAffinity",
        spec.session_affinity.as_deref(),
        &["ClientIP", "None"],
        causes,
    );
    if let Some(seconds) = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        && !(1..=86400).contains(&seconds)
    {
        causes.push(Cause::invalid_number(
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            i64::from(seconds),
            "must be greater than 0 and less than 86400",
        ));
    }
    one_of(
        "spec.internalTrafficPolicy",
        spec.internal_traffic_policy.as_deref(),
        &["Cluster", "Local"],
        causes,
    );
    let externally_accessible = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"))
        || (spec.type_.as_deref() == Some("ClusterIP")
            && spec
                .external_ips
                .as_ref()
                .is_some_and(|ips| !ips.is_empty()));
    match &spec.external_traffic_policy {
        Some(policy) if !externally_accessible => causes.push(Cause::invalid(
            "spec.externalTrafficPolicy",
            policy,
            "may only be set for externally-accessible services",
        )),
        policy => one_of(
            "spec.externalTrafficPolicy",
            policy.as_deref(),
            &["Cluster", "Local"],
            causes,
        ),
    }
    one_of(
        "spec.ipFamilyPolicy",
        spec.ip_family_policy.as_deref(),
        &["PreferDualStack", "RequireDualStack", "SingleStack"],
        causes,
    );
    for (i, family) in spec.ip_families.iter().flatten().enumerate() {
        one_of(
            &format!("spec.ipFamilies[{i}]"),
            Some(family),
            &["IPv4", "IPv6"],
            causes,
        );
    }
    for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
        if ip != "None" && !ip.is_empty() {
            ip_address(&format!("spec.clusterIPs[{i}]"), ip, causes);
        }
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        ip_address(&format!("spec.externalIPs[{i}]"), ip, causes);
    }
}

fn data_size(field: &str, total: usize, causes: &mut Vec<Cause>) {
    if total > MAX_DATA {
        causes.push(Cause::too_long(field, MAX_DATA));
    }
}

/// A ConfigMap: valid, distinct keys in data and binaryData; at most 1 MiB in all.
pub fn config_map(map: &ConfigMap, causes: &mut Vec<Cause>) {
    let mut total = 0;
    for (key, value) in map.data.iter().flatten() {
        config_key(&format!("data[{key}]"), key, causes);
        total += key.len() + value.len();
    }
    for (key, value) in map.binary_data.iter().flatten() {
        config_key(&format!("binaryData[{key}]"), key, causes);
        if map.data.as_ref().is_some_and(|d| d.contains_key(key)) {
            causes.push(Cause::invalid(
                format!("data[{key}]"),
                key,
                "duplicate of key present in binaryData",
            ));
        }
        total += key.len() + value.0.len();
    }
    data_size("", total, causes);
}

/// A Secret: valid keys, at most 1 MiB, and the keys its type requires.
pub fn secret(secret: &Secret, causes: &mut Vec<Cause>) {
    let data: BTreeMap<&str, &[u8]> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
        .collect();
    let mut total = 0;
    for (key, value) in &data {
        config_key(&format!("data[{key}]"), key, causes);
        total += key.len() + value.len();
    }
    data_size("data", total, causes);
    let require = |key: &str, causes: &mut Vec<Cause>| {
        if !data.contains_key(key) {
            causes.push(Cause::required(format!("data[{key}]")));
        }
    };
    match secret.type_.as_deref().unwrap_or("Opaque") {
        "kubernetes.io/dockerconfigjson" => {
            require(".dockerconfigjson", causes);
            if let Some(bytes) = data.get(".dockerconfigjson")
                && serde_json::from_slice::<serde_json::Value>(bytes).is_err()
            {
                causes.push(Cause::invalid(
                    "data[.dockerconfigjson]",
                    "<secret contents redacted>",
                    "invalid character in the docker config JSON",
                ));
            }
        }
        "kubernetes.io/dockercfg" => require(".dockercfg", causes),
        "kubernetes.io/tls" => {
            require("tls.crt", causes);
            require("tls.key", causes);
        }
        "kubernetes.io/ssh-auth" => require("ssh-privatekey", causes),
        "kubernetes.io/basic-auth" => {
            if !data.contains_key("username") && !data.contains_key("password") {
                causes.push(Cause::required_because(
                    "data[username]",
                    "must specify at least one of `username` or `password`",
                ));
            }
        }
        "kubernetes.io/service-account-token" => {
            let annotated = secret
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("kubernetes.io/service-account.name"));
            if !annotated {
                causes.push(Cause::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                ));
            }
        }
        "" => causes.push(Cause::required("type")),
        other => qualified_name("type", other, causes),
    }
}

/// Changes of a Secret or ConfigMap that Kubernetes refuses: its type, and anything once it is immutable.
pub fn immutable_data(
    old_immutable: Option<bool>,
    data_changed: bool,
    new_immutable: Option<bool>,
    causes: &mut Vec<Cause>,
) {
    if old_immutable == Some(true) {
        if data_changed {
            causes.push(Cause::forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
        if new_immutable != Some(true) {
            causes.push(Cause::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

/// What an update may change of a Node's spec: its pod ranges and providerID only from unset to set (node IPAM
/// assigns the ranges once; a node's pods have addresses in them).
pub fn node_update(new: Option<&NodeSpec>, old: Option<&NodeSpec>, causes: &mut Vec<Cause>) {
    let ranges = |spec: Option<&NodeSpec>| -> Vec<String> {
        let Some(spec) = spec else { return Vec::new() };
        match (&spec.pod_cidrs, spec.pod_cidr.as_deref()) {
            (Some(ranges), _) if !ranges.is_empty() => ranges.clone(),
            (_, Some(range)) if !range.is_empty() => vec![range.to_owned()],
            _ => Vec::new(),
        }
    };
    let (was, now) = (ranges(old), ranges(new));
    if !was.is_empty() && was != now {
        let message = if now.is_empty() {
            "field cannot be cleared once set"
        } else {
            "node updates may not change podCIDR except from \"\" to valid"
        };
        causes.push(Cause::forbidden("spec.podCIDRs", message));
    }
    let provider =
        |spec: Option<&NodeSpec>| spec.and_then(|s| s.provider_id.clone()).unwrap_or_default();
    let old_provider = provider(old);
    if !old_provider.is_empty() && old_provider != provider(new) {
        causes.push(Cause::forbidden(
            "spec.providerID",
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
}

/// A Node's spec.
pub fn node(spec: &NodeSpec, causes: &mut Vec<Cause>) {
    if let Some(range) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty()) {
        cidr("spec.podCIDR", range, causes);
    }
    for (i, range) in spec.pod_cidrs.iter().flatten().enumerate() {
        cidr(&format!("spec.podCIDRs[{i}]"), range, causes);
    }
    let mut seen = HashSet::new();
    for (i, taint) in spec.taints.iter().flatten().enumerate() {
        let at = format!("spec.taints[{i}]");
        if taint.key.is_empty() {
            causes.push(Cause::required(format!("{at}.key")));
        } else {
            qualified_name(&format!("{at}.key"), &taint.key, causes);
        }
        if let Some(value) = taint.value.as_deref()
            && !super::is_label_value(value)
        {
            causes.push(Cause::invalid(
                format!("{at}.value"),
                value,
                super::LABEL_VALUE,
            ));
        }
        one_of(
            &format!("{at}.effect"),
            Some(taint.effect.as_str()),
            &["NoExecute", "NoSchedule", "PreferNoSchedule"],
            causes,
        );
        if !seen.insert((taint.key.as_str(), taint.effect.as_str())) {
            causes.push(Cause::duplicate(
                at,
                &format!("{}:{}", taint.key, taint.effect),
            ));
        }
    }
}

fn endpoint_port(field: &str, port: &EndpointPort, causes: &mut Vec<Cause>) {
    if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty())
        && let Some(detail) = dns1123_label(name)
    {
        causes.push(Cause::invalid(format!("{field}.name"), name, &detail));
    }
    if !(1..=65535).contains(&port.port) {
        causes.push(Cause::invalid_number(
            format!("{field}.port"),
            i64::from(port.port),
            PORT_RANGE,
        ));
    }
    one_of(
        &format!("{field}.protocol"),
        port.protocol.as_deref(),
        &PROTOCOLS,
        causes,
    );
}

/// Endpoints: valid addresses and ports in every subset.
pub fn endpoints(endpoints: &Endpoints, causes: &mut Vec<Cause>) {
    for (i, subset) in endpoints.subsets.iter().flatten().enumerate() {
        let at = format!("subsets[{i}]");
        for (list, addresses) in [
            ("addresses", &subset.addresses),
            ("notReadyAddresses", &subset.not_ready_addresses),
        ] {
            for (j, address) in addresses.iter().flatten().enumerate() {
                ip_address(&format!("{at}.{list}[{j}].ip"), &address.ip, causes);
                if let Some(node) = address.node_name.as_deref()
                    && let Some(detail) = dns1123_subdomain(node)
                {
                    causes.push(Cause::invalid(
                        format!("{at}.{list}[{j}].nodeName"),
                        node,
                        &detail,
                    ));
                }
            }
        }
        for (j, port) in subset.ports.iter().flatten().enumerate() {
            endpoint_port(&format!("{at}.ports[{j}]"), port, causes);
        }
    }
}

/// An EndpointSlice: a known address type, 1 to 100 addresses of that type per endpoint, valid ports.
pub fn endpoint_slice(slice: &EndpointSlice, causes: &mut Vec<Cause>) {
    let kind = slice.address_type.as_str();
    one_of("addressType", Some(kind), &["FQDN", "IPv4", "IPv6"], causes);
    for (i, endpoint) in slice.endpoints.iter().flatten().enumerate() {
        let at = format!("endpoints[{i}].addresses");
        match endpoint.addresses.len() {
            0 => causes.push(Cause::required_because(
                at.clone(),
                "must contain at least 1 address",
            )),
            n if n > 100 => causes.push(Cause::too_many(at.clone(), n, 100)),
            _ => {}
        }
        for (j, address) in endpoint.addresses.iter().enumerate() {
            let field = format!("{at}[{j}]");
            let ok = match kind {
                "IPv4" => address.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => address.parse::<std::net::Ipv6Addr>().is_ok(),
                "FQDN" => dns1123_subdomain(address).is_none(),
                _ => true,
            };
            if !ok {
                causes.push(Cause::invalid(
                    field,
                    address,
                    &format!("must be a valid {kind} address"),
                ));
            }
        }
        if let Some(node) = endpoint.node_name.as_deref()
            && let Some(detail) = dns1123_subdomain(node)
        {
            causes.push(Cause::invalid(
                format!("endpoints[{i}].nodeName"),
                node,
                &detail,
            ));
        }
    }
    let mut names = HashSet::new();
    for (i, port) in slice.ports.iter().flatten().enumerate() {
        let at = format!("ports[{i}]");
        let name = port.name.as_deref().unwrap_or_default();
        if !name.is_empty()
            && let Some(detail) = dns1123_label(name)
        {
            causes.push(Cause::invalid(format!("{at}.name"), name, &detail));
        }
        if !names.insert(name) {
            causes.push(Cause::duplicate(format!("{at}.name"), name));
        }
        if let Some(number) = port.port.filter(|p| !(1..=65535).contains(p)) {
            causes.push(Cause::invalid_number(
                format!("{at}.port"),
                i64::from(number),
                PORT_RANGE,
            ));
        }
        one_of(
            &format!("{at}.protocol"),
            port.protocol.as_deref(),
            &PROTOCOLS,
            causes,
        );
    }
}

/// Changes of an EndpointSlice Kubernetes refuses: its address type.
pub fn endpoint_slice_update(new: &EndpointSlice, old: &EndpointSlice, causes: &mut Vec<Cause>) {
    if new.address_type != old.address_type {
        causes.push(Cause::invalid(
            "addressType",
            &new.address_type,
            "field is immutable",
        ));
    }
}

/// An Event: its type and the object it is about.
pub fn event(event: &Event, causes: &mut Vec<Cause>) {
    one_of(
        "type",
        event.type_.as_deref(),
        &["Normal", "Warning"],
        causes,
    );
    if event
        .involved_object
        .kind
        .as_deref()
        .is_none_or(str::is_empty)
    {
        causes.push(Cause::required("involvedObject.kind"));
    }
    non_negative("count", event.count.map(i64::from), causes);
}

/// A Lease's spec.
pub fn lease(spec: &LeaseSpec, causes: &mut Vec<Cause>) {
    positive(
        "spec.leaseDurationSeconds",
        spec.lease_duration_seconds.map(i64::from),
        causes,
    );
    non_negative(
        "spec.leaseTransitions",
        spec.lease_transitions.map(i64::from),
        causes,
    );
}

/// A ResourceQuota's spec: known resource names with non-negative quantities.
pub fn resource_quota(spec: &ResourceQuotaSpec, causes: &mut Vec<Cause>) {
    for (name, value) in spec.hard.iter().flatten() {
        let at = format!("spec.hard[{name}]");
        qualified_name(&at, name, causes);
        non_negative_quantity(&at, &value.0, causes);
    }
    for (i, scope) in spec.scopes.iter().flatten().enumerate() {
        one_of(
            &format!("spec.scopes[{i}]"),
            Some(scope),
            &[
                "BestEffort",
                "CrossNamespacePodAffinity",
                "NotBestEffort",
                "NotTerminating",
                "PriorityClass",
                "Terminating",
            ],
            causes,
        );
    }
}

/// A LimitRange's spec: known types, valid quantities, min <= defaultRequest <= default <= max.
pub fn limit_range(spec: &LimitRangeSpec, causes: &mut Vec<Cause>) {
    for (i, item) in spec.limits.iter().enumerate() {
        let at = format!("spec.limits[{i}]");
        one_of(
            &format!("{at}.type"),
            Some(item.type_.as_str()),
            &["Container", "PersistentVolumeClaim", "Pod"],
            causes,
        );
        // (min|max|default..., resource) -> the quantity and its text.
        let mut parsed: BTreeMap<(&str, &str), (Quantity, &str)> = BTreeMap::new();
        for (which, map) in [
            ("min", &item.min),
            ("max", &item.max),
            ("default", &item.default),
            ("defaultRequest", &item.default_request),
            ("maxLimitRequestRatio", &item.max_limit_request_ratio),
        ] {
            for (name, value) in map.iter().flatten() {
                if let Some(q) =
                    non_negative_quantity(&format!("{at}.{which}[{name}]"), &value.0, causes)
                {
                    parsed.insert((which, name.as_str()), (q, value.0.as_str()));
                }
            }
        }
        if item.type_ == "Pod" && (item.default.is_some() || item.default_request.is_some()) {
            causes.push(Cause::forbidden(
                format!("{at}.default"),
                "may not be specified when `type` is 'Pod'",
            ));
        }
        let order = [
            ("min", "defaultRequest"),
            ("defaultRequest", "default"),
            ("min", "max"),
            ("default", "max"),
            ("min", "default"),
            ("defaultRequest", "max"),
        ];
        for ((lower, upper), name) in order.iter().flat_map(|pair| {
            parsed
                .keys()
                .filter(move |(which, _)| *which == pair.0)
                .map(move |(_, name)| (*pair, *name))
        }) {
            if let (Some((low, low_text)), Some((high, high_text))) =
                (parsed.get(&(lower, name)), parsed.get(&(upper, name)))
                && low > high
            {
                causes.push(Cause::invalid(
                    format!("{at}.{upper}[{name}]"),
                    high_text,
                    &format!("{lower} value {low_text} is greater than {upper} value {high_text}"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_nodes_pod_ranges_are_set_once() {
        let spec = |ranges: &[&str]| NodeSpec {
            pod_cidr: ranges.first().map(|r| (*r).to_owned()),
            pod_cidrs: Some(ranges.iter().map(|r| (*r).to_owned()).collect()),
            ..Default::default()
        };
        let causes = |new: &NodeSpec, old: &NodeSpec| {
            let mut causes = Vec::new();
            node_update(Some(new), Some(old), &mut causes);
            causes.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        assert!(causes(&spec(&["10.42.0.0/24"]), &spec(&[])).is_empty());
        assert!(causes(&spec(&["10.42.0.0/24"]), &spec(&["10.42.0.0/24"])).is_empty());
        assert_eq!(
            causes(&spec(&["10.42.1.0/24"]), &spec(&["10.42.0.0/24"])),
            [
                "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"
            ]
        );
        assert_eq!(
            causes(&spec(&[]), &spec(&["10.42.0.0/24"])),
            ["spec.podCIDRs: Forbidden: field cannot be cleared once set"]
        );
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn config_maps_are_limited_to_one_mebibyte() {
        let map: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "big"}, "data": {"blob": "x".repeat(MAX_DATA)}
        }))
        .unwrap();
        let mut causes = Vec::new();
        config_map(&map, &mut causes);
        assert_eq!(
            causes[0].to_string(),
            "Too long: may not be more than 1048576 bytes"
        );
    }

    #[test]
    fn service_ports_target_ports_and_policies_are_checked() {
        let spec: ServiceSpec = serde_json::from_value(json!({
            "ports": [{"name": "web", "port": 80, "targetPort": "Not_A_Name"},
                      {"name": "web", "port": 80, "protocol": "HTTP"}],
            "sessionAffinity": "Sticky"
        }))
        .unwrap();
        let mut causes = Vec::new();
        service(&spec, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.ports[0].targetPort",
                "spec.ports[1].name",
                "spec.ports[1].protocol",
                "spec.sessionAffinity",
            ],
            "{causes:#?}"
        );
    }
}
