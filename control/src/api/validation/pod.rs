//! Pod specs, as Kubernetes' `ValidatePodSpec` checks them: volumes and their sources, containers (names,
//! images, ports, env, mounts, probes, resources, security context), scheduling fields (node selector,
//! tolerations, affinity) and the pod-level enums and numbers. Used for pods and for every pod template.

use super::non_negative_quantity;
use super::{
    Cause, PORT_RANGE, config_key, dns1123_label, dns1123_subdomain, iana_svc_name, labels,
    local_descending_path, non_negative, one_of, port_number_or_name, qualified_name,
};
use crate::api::quantity::Quantity;
use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, KeyToPath, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, PodAffinityTerm, PodSchedulingGate, PodSpec, Probe, ResourceRequirements,
    SecurityContext, Toleration, Volume,
};
use std::collections::{BTreeMap, HashSet};

/// The volume sources a pod may name (k8s-openapi's fields), so that exactly one is set.
fn volume_sources(volume: &Volume) -> Vec<&'static str> {
    // Kubernetes' order: with two sources, the second in this order is the one reported.
    let sources = [
        ("hostPath", volume.host_path.is_some()),
        ("emptyDir", volume.empty_dir.is_some()),
        ("gitRepo", volume.git_repo.is_some()),
        ("gcePersistentDisk", volume.gce_persistent_disk.is_some()),
        (
            "awsElasticBlockStore",
            volume.aws_elastic_block_store.is_some(),
        ),
        ("secret", volume.secret.is_some()),
        ("nfs", volume.nfs.is_some()),
        ("iscsi", volume.iscsi.is_some()),
        ("glusterfs", volume.glusterfs.is_some()),
        (
            "persistentVolumeClaim",
            volume.persistent_volume_claim.is_some(),
        ),
        ("rbd", volume.rbd.is_some()),
        ("quobyte", volume.quobyte.is_some()),
        ("cinder", volume.cinder.is_some()),
        ("cephfs", volume.cephfs.is_some()),
        ("flexVolume", volume.flex_volume.is_some()),
        ("downwardAPI", volume.downward_api.is_some()),
        ("fc", volume.fc.is_some()),
        ("azureFile", volume.azure_file.is_some()),
        ("vsphereVolume", volume.vsphere_volume.is_some()),
        ("azureDisk", volume.azure_disk.is_some()),
        (
            "photonPersistentDisk",
            volume.photon_persistent_disk.is_some(),
        ),
        ("portworxVolume", volume.portworx_volume.is_some()),
        ("scaleIO", volume.scale_io.is_some()),
        ("configMap", volume.config_map.is_some()),
        ("storageos", volume.storageos.is_some()),
        ("projected", volume.projected.is_some()),
        ("csi", volume.csi.is_some()),
        ("ephemeral", volume.ephemeral.is_some()),
        ("image", volume.image.is_some()),
    ];

    sources
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| name)
        .collect()
}

/// Kubernetes' message for a file mode outside 0..=0777.
const MODE: &str = "must be a number between 0 and 0777 (octal), both inclusive";

fn file_mode(field: &str, mode: Option<i32>, causes: &mut Vec<Cause>) {
    if let Some(mode) = mode.filter(|m| !(0..=0o777).contains(m)) {
        causes.push(Cause::invalid_number(field, i64::from(mode), MODE));
    }
}

fn key_to_paths(field: &str, items: Option<&Vec<KeyToPath>>, causes: &mut Vec<Cause>) {
    for (i, item) in items.into_iter().flatten().enumerate() {
        let at = format!("{field}.items[{i}]");
        if item.key.is_empty() {
            causes.push(Cause::required(format!("{at}.key")));
        } else {
            config_key(&format!("{at}.key"), &item.key, causes);
        }
        if item.path.is_empty() {
            causes.push(Cause::required(format!("{at}.path")));
        } else {
            local_descending_path(&format!("{at}.path"), &item.path, causes);
        }
        file_mode(&format!("{at}.mode"), item.mode, causes);
    }
}

/// The fields a downward API file may show, as Kubernetes allows them in volumes.
const DOWNWARD_API_FIELDS: [&str; 6] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
    "spec.serviceAccountName",
];

fn downward_api_items(
    field: &str,
    items: Option<&Vec<k8s_openapi::api::core::v1::DownwardAPIVolumeFile>>,
    causes: &mut Vec<Cause>,
) {
    for (i, item) in items.into_iter().flatten().enumerate() {
        let at = format!("{field}.items[{i}]");
        if item.path.is_empty() {
            causes.push(Cause::required(format!("{at}.path")));
        } else {
            local_descending_path(&format!("{at}.path"), &item.path, causes);
        }
        file_mode(&format!("{at}.mode"), item.mode, causes);
        match (&item.field_ref, &item.resource_field_ref) {
            (Some(field_ref), None) => one_of(
                &format!("{at}.fieldRef.fieldPath"),
                Some(field_ref.field_path.as_str()),
                &DOWNWARD_API_FIELDS,
                causes,
            ),
            (None, Some(_)) => {}
            (Some(_), Some(_)) => causes.push(Cause::invalid(
                format!("{at}.fieldRef"),
                "",
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            )),
            (None, None) => causes.push(Cause::required_because(
                format!("{at}.fieldRef"),
                "one of fieldRef and resourceFieldRef is required",
            )),
        }
    }
}

/// A projected volume's sources, each of exactly one kind, their paths inside the volume.
fn projected_sources(
    field: &str,
    projected: &k8s_openapi::api::core::v1::ProjectedVolumeSource,
    causes: &mut Vec<Cause>,
) {
    file_mode(
        &format!("{field}.defaultMode"),
        projected.default_mode,
        causes,
    );
    for (i, source) in projected.sources.iter().flatten().enumerate() {
        let at = format!("{field}.sources[{i}]");
        let kinds = [
            source.secret.is_some(),
            source.config_map.is_some(),
            source.downward_api.is_some(),
            source.service_account_token.is_some(),
            source.cluster_trust_bundle.is_some(),
            source.pod_certificate.is_some(),
        ];
        if kinds.iter().filter(|set| **set).count() != 1 {
            causes.push(Cause::forbidden(
                at.clone(),
                "may not specify more than 1 volume type per source",
            ));
        }
        if let Some(secret) = &source.secret {
            key_to_paths(&format!("{at}.secret"), secret.items.as_ref(), causes);
        }
        if let Some(map) = &source.config_map {
            key_to_paths(&format!("{at}.configMap"), map.items.as_ref(), causes);
        }
        if let Some(downward) = &source.downward_api {
            downward_api_items(
                &format!("{at}.downwardAPI"),
                downward.items.as_ref(),
                causes,
            );
        }
        if let Some(token) = &source.service_account_token {
            let path = format!("{at}.serviceAccountToken.path");
            if token.path.is_empty() {
                causes.push(Cause::required(path));
            } else {
                local_descending_path(&path, &token.path, causes);
            }
            if let Some(seconds) = token.expiration_seconds {
                let expiry = format!("{at}.serviceAccountToken.expirationSeconds");
                if seconds < 600 {
                    causes.push(Cause::invalid_number(
                        &expiry,
                        seconds,
                        "may not specify a duration less than 10 minutes",
                    ));
                } else if seconds > 1 << 32 {
                    causes.push(Cause::invalid_number(
                        &expiry,
                        seconds,
                        "may not specify a duration larger than 2^32 seconds",
                    ));
                }
            }
        }
    }
}

const HOST_PATH_TYPES: [&str; 8] = [
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];

/// The pod's volumes; returns the names declared, for the mounts to refer to.
fn volumes(field: &str, volumes: &[Volume], causes: &mut Vec<Cause>) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, volume) in volumes.iter().enumerate() {
        let at = format!("{field}[{i}]");
        if volume.name.is_empty() {
            causes.push(Cause::required(format!("{at}.name")));
        } else if let Some(detail) = dns1123_label(&volume.name) {
            causes.push(Cause::invalid(format!("{at}.name"), &volume.name, &detail));
        } else if !names.insert(volume.name.clone()) {
            causes.push(Cause::duplicate(format!("{at}.name"), &volume.name));
        }
        match volume_sources(volume).as_slice() {
            [] => causes.push(Cause::required_because(
                at.clone(),
                "must specify a volume type",
            )),
            [_] => {}
            [_, second, ..] => causes.push(Cause::forbidden(
                format!("{at}.{second}"),
                "may not specify more than 1 volume type",
            )),
        }
        if let Some(host) = &volume.host_path {
            if host.path.is_empty() {
                causes.push(Cause::required(format!("{at}.hostPath.path")));
            } else if host.path.split('/').any(|part| part == "..") {
                causes.push(Cause::invalid(
                    format!("{at}.hostPath.path"),
                    &host.path,
                    "must not contain '..'",
                ));
            }
            one_of(
                &format!("{at}.hostPath.type"),
                host.type_.as_deref(),
                &HOST_PATH_TYPES,
                causes,
            );
        }
        if let Some(source) = &volume.config_map {
            if source.name.is_empty() {
                causes.push(Cause::required(format!("{at}.configMap.name")));
            }
            key_to_paths(&format!("{at}.configMap"), source.items.as_ref(), causes);
            file_mode(
                &format!("{at}.configMap.defaultMode"),
                source.default_mode,
                causes,
            );
        }
        if let Some(source) = &volume.secret {
            if source.secret_name.as_deref().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("{at}.secret.secretName")));
            }
            key_to_paths(&format!("{at}.secret"), source.items.as_ref(), causes);
            file_mode(
                &format!("{at}.secret.defaultMode"),
                source.default_mode,
                causes,
            );
        }
        if let Some(source) = &volume.downward_api {
            downward_api_items(&format!("{at}.downwardAPI"), source.items.as_ref(), causes);
            file_mode(
                &format!("{at}.downwardAPI.defaultMode"),
                source.default_mode,
                causes,
            );
        }
        if let Some(projected) = &volume.projected {
            projected_sources(&format!("{at}.projected"), projected, causes);
        }
        if let Some(limit) = volume
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
        {
            non_negative_quantity(&format!("{at}.emptyDir.sizeLimit"), &limit.0, causes);
        }
        if let Some(claim) = &volume.persistent_volume_claim
            && claim.claim_name.is_empty()
        {
            causes.push(Cause::required(format!(
                "{at}.persistentVolumeClaim.claimName"
            )));
        }
    }
    names
}

/// Resource names Kubernetes knows without a domain.
const STANDARD_CONTAINER_RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

fn resources(field: &str, resources: &ResourceRequirements, causes: &mut Vec<Cause>) {
    // (limits|requests, resource) -> the quantity and its text.
    let mut parsed: BTreeMap<(&str, &str), (Quantity, &str)> = BTreeMap::new();
    for (which, map) in [
        ("limits", &resources.limits),
        ("requests", &resources.requests),
    ] {
        for (name, value) in map.iter().flatten() {
            let at = format!("{field}.{which}[{name}]");
            let standard = STANDARD_CONTAINER_RESOURCES.contains(&name.as_str())
                || name.starts_with("hugepages-");
            let qualified = name.contains('/') && super::is_qualified_name(name);
            if !(standard || qualified) {
                causes.push(Cause::invalid(
                    at.clone(),
                    name,
                    "must be a standard resource type or fully qualified",
                ));
                continue;
            }
            if let Some(q) = non_negative_quantity(&at, &value.0, causes) {
                parsed.insert((which, name.as_str()), (q, value.0.as_str()));
            }
        }
    }
    for ((which, name), (request, text)) in &parsed {
        if let Some((limit, limit_text)) = parsed.get(&("limits", name))
            && *which == "requests"
            && request > limit
        {
            causes.push(Cause::invalid(
                format!("{field}.requests"),
                text,
                &format!("must be less than or equal to {name} limit of {limit_text}"),
            ));
        }
    }
}

/// The fields `fieldRef` may select in env and downward API volumes.
const FIELD_PATHS: [&str; 11] = [
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

const RESOURCE_FIELDS: [&str; 6] = [
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

fn field_path(field: &str, path: &str, causes: &mut Vec<Cause>) {
    // `metadata.labels['key']` selects one label; the whole map only in a downward API volume.
    let subscripted = ["metadata.labels", "metadata.annotations"]
        .iter()
        .find_map(|prefix| {
            path.strip_prefix(prefix)?
                .strip_prefix("['")?
                .strip_suffix("']")
        });
    match subscripted {
        Some(key) => qualified_name(field, key, causes),
        None if FIELD_PATHS[2..].contains(&path) => {}
        None => causes.push(Cause::not_supported(field, path, &FIELD_PATHS[2..])),
    }
}

fn env(field: &str, vars: &[EnvVar], causes: &mut Vec<Cause>) {
    for (i, var) in vars.iter().enumerate() {
        let at = format!("{field}[{i}]");
        if var.name.is_empty() {
            causes.push(Cause::required(format!("{at}.name")));
        } else if var.name.contains('=')
            || !var.name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        {
            causes.push(Cause::invalid(
                format!("{at}.name"),
                &var.name,
                "a valid environment variable name must consist only of printable ASCII characters other \
                 than '='",
            ));
        }
        let Some(source) = &var.value_from else {
            continue;
        };
        let at = format!("{at}.valueFrom");
        let set = [
            source.field_ref.is_some(),
            source.resource_field_ref.is_some(),
            source.config_map_key_ref.is_some(),
            source.secret_key_ref.is_some(),
            source.file_key_ref.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if var.value.as_deref().is_some_and(|v| !v.is_empty()) {
            causes.push(Cause::invalid(
                at.clone(),
                "",
                "may not be specified when `value` is not empty",
            ));
        }
        match set {
            0 => causes.push(Cause::required_because(
                at.clone(),
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            )),
            1 => {}
            _ => causes.push(Cause::invalid(
                at.clone(),
                "",
                "may not have more than one field specified at a time",
            )),
        }
        if let Some(selector) = &source.field_ref {
            if selector.field_path.is_empty() {
                causes.push(Cause::required(format!("{at}.fieldRef.fieldPath")));
            } else {
                field_path(
                    &format!("{at}.fieldRef.fieldPath"),
                    &selector.field_path,
                    causes,
                );
            }
        }
        if let Some(selector) = &source.resource_field_ref {
            one_of(
                &format!("{at}.resourceFieldRef.resource"),
                Some(selector.resource.as_str()),
                &RESOURCE_FIELDS,
                causes,
            );
        }
        if let Some(selector) = &source.config_map_key_ref {
            if selector.name.is_empty() {
                causes.push(Cause::required(format!("{at}.configMapKeyRef.name")));
            }
            if selector.key.is_empty() {
                causes.push(Cause::required(format!("{at}.configMapKeyRef.key")));
            } else {
                config_key(&format!("{at}.configMapKeyRef.key"), &selector.key, causes);
            }
        }
        if let Some(selector) = &source.secret_key_ref {
            if selector.name.is_empty() {
                causes.push(Cause::required(format!("{at}.secretKeyRef.name")));
            }
            if selector.key.is_empty() {
                causes.push(Cause::required(format!("{at}.secretKeyRef.key")));
            } else {
                config_key(&format!("{at}.secretKeyRef.key"), &selector.key, causes);
            }
        }
    }
}

fn probe(field: &str, probe: &Probe, liveness_or_startup: bool, causes: &mut Vec<Cause>) {
    let handlers = [
        probe.exec.is_some(),
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
        probe.grpc.is_some(),
    ]
    .iter()
    .filter(|h| **h)
    .count();
    match handlers {
        0 => causes.push(Cause::required_because(
            field,
            "must specify a handler type",
        )),
        1 => {}
        _ => causes.push(Cause::forbidden(
            field,
            "may not specify more than 1 handler type",
        )),
    }
    for (name, value) in [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        non_negative(&format!("{field}.{name}"), value.map(i64::from), causes);
    }
    non_negative(
        &format!("{field}.terminationGracePeriodSeconds"),
        probe.termination_grace_period_seconds,
        causes,
    );
    if liveness_or_startup && let Some(n) = probe.success_threshold.filter(|n| *n != 1) {
        causes.push(Cause::invalid_number(
            format!("{field}.successThreshold"),
            i64::from(n),
            "must be 1",
        ));
    }
    if let Some(get) = &probe.http_get {
        port_number_or_name(&format!("{field}.httpGet.port"), &get.port, causes);
        one_of(
            &format!("{field}.httpGet.scheme"),
            get.scheme.as_deref(),
            &["HTTP", "HTTPS"],
            causes,
        );
        for (i, header) in get.http_headers.iter().flatten().enumerate() {
            if header.name.is_empty()
                || !header
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                causes.push(Cause::invalid(
                    format!("{field}.httpGet.httpHeaders[{i}].name"),
                    &header.name,
                    "a valid HTTP header must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', \
                     regex used for validation is '[-A-Za-z0-9]+')",
                ));
            }
        }
    }
    if let Some(socket) = &probe.tcp_socket {
        port_number_or_name(&format!("{field}.tcpSocket.port"), &socket.port, causes);
    }
    if let Some(exec) = &probe.exec
        && exec.command.as_ref().is_none_or(Vec::is_empty)
    {
        causes.push(Cause::required(format!("{field}.exec.command")));
    }
    if let Some(grpc) = &probe.grpc
        && !(1..=65535).contains(&grpc.port)
    {
        causes.push(Cause::invalid_number(
            format!("{field}.grpc.port"),
            i64::from(grpc.port),
            PORT_RANGE,
        ));
    }
}

fn security_context(field: &str, context: &SecurityContext, causes: &mut Vec<Cause>) {
    for (name, value) in [
        ("runAsUser", context.run_as_user),
        ("runAsGroup", context.run_as_group),
    ] {
        if let Some(id) = value.filter(|id| !(0..=i64::from(i32::MAX)).contains(id)) {
            causes.push(Cause::invalid_number(
                format!("{field}.{name}"),
                id,
                "must be between 0 and 2147483647, inclusive",
            ));
        }
    }
    if context.privileged == Some(true) && context.allow_privilege_escalation == Some(false) {
        causes.push(Cause::invalid(
            field,
            "",
            "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
        ));
    }
    one_of(
        &format!("{field}.procMount"),
        context.proc_mount.as_deref(),
        &["Default", "Unmasked"],
        causes,
    );
    if let Some(profile) = &context.seccomp_profile {
        one_of(
            &format!("{field}.seccompProfile.type"),
            Some(profile.type_.as_str()),
            &["Localhost", "RuntimeDefault", "Unconfined"],
            causes,
        );
    }
}

/// A pod's ephemeral containers: containers (checked as such) without ports, probes, lifecycle, resources or
/// subPaths, whose target is one of the pod's other containers.
fn ephemeral_containers(
    field: &str,
    list: &[k8s_openapi::api::core::v1::EphemeralContainer],
    pod: &mut PodContext<'_>,
    causes: &mut Vec<Cause>,
) {
    let others = pod.names.clone();
    for (i, ephemeral) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        // The same fields as a container's, but the target.
        let as_container = serde_json::to_value(ephemeral)
            .ok()
            .and_then(|mut value| {
                value.as_object_mut()?.remove("targetContainerName");
                serde_json::from_value::<Container>(value).ok()
            })
            .unwrap_or_default();
        let before = causes.len();
        containers(
            field,
            std::slice::from_ref(&as_container),
            false,
            pod,
            causes,
        );
        // `containers` reports at index 0: the causes it just added are about item i.
        let first = format!("{field}[0]");
        for cause in &mut causes[before..] {
            if let Some(rest) = cause.field.strip_prefix(&first) {
                cause.field = format!("{at}{rest}");
            }
        }
        let forbidden = [
            (
                "ports",
                ephemeral.ports.as_ref().is_some_and(|p| !p.is_empty()),
            ),
            ("livenessProbe", ephemeral.liveness_probe.is_some()),
            ("readinessProbe", ephemeral.readiness_probe.is_some()),
            ("startupProbe", ephemeral.startup_probe.is_some()),
            ("lifecycle", ephemeral.lifecycle.is_some()),
            (
                "resources",
                ephemeral.resources.as_ref().is_some_and(|r| {
                    r.limits.as_ref().is_some_and(|l| !l.is_empty())
                        || r.requests.as_ref().is_some_and(|l| !l.is_empty())
                }),
            ),
        ];
        for (name, set) in forbidden {
            if set {
                causes.push(Cause::forbidden(
                    format!("{at}.{name}"),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
        for (j, mount) in ephemeral.volume_mounts.iter().flatten().enumerate() {
            if mount.sub_path.as_deref().is_some_and(|p| !p.is_empty()) {
                causes.push(Cause::forbidden(
                    format!("{at}.volumeMounts[{j}].subPath"),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
        if let Some(target) = ephemeral
            .target_container_name
            .as_deref()
            .filter(|t| !t.is_empty())
            && !others.contains(target)
        {
            causes.push(Cause::not_found(
                format!("{at}.targetContainerName"),
                target,
            ));
        }
    }
}

/// The causes of changing a pod's ephemeral containers from `old`'s to `new`: they may only be added to,
/// as Kubernetes' ValidatePodEphemeralContainersUpdate.
pub fn ephemeral_containers_update(
    old: &serde_json::Value,
    new: Option<&serde_json::Value>,
) -> Result<(), Vec<Cause>> {
    let by_name = |list: Option<&serde_json::Value>| -> BTreeMap<String, serde_json::Value> {
        list.and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c["name"].as_str()?.to_owned(), c.clone())))
            .collect()
    };
    let (before, after) = (
        by_name(old["spec"].get("ephemeralContainers")),
        by_name(new),
    );
    let mut causes = Vec::new();
    for (name, container) in &before {
        match after.get(name) {
            None => causes.push(Cause::forbidden(
                "spec.ephemeralContainers",
                &format!("existing ephemeral containers {name:?} may not be removed"),
            )),
            Some(now) if now != container => causes.push(Cause::forbidden(
                "spec.ephemeralContainers",
                &format!("existing ephemeral containers {name:?} may not be changed"),
            )),
            Some(_) => {}
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}

/// What a pod's containers share: the names and volumes declared, and whether it uses the host's network.
struct PodContext<'a> {
    volumes: &'a HashSet<String>,
    host_network: bool,
    names: HashSet<String>,
}

fn containers(
    field: &str,
    list: &[Container],
    init: bool,
    pod: &mut PodContext<'_>,
    causes: &mut Vec<Cause>,
) {
    for (i, container) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        if container.name.is_empty() {
            causes.push(Cause::required(format!("{at}.name")));
        } else if let Some(detail) = dns1123_label(&container.name) {
            causes.push(Cause::invalid(
                format!("{at}.name"),
                &container.name,
                &detail,
            ));
        } else if !pod.names.insert(container.name.clone()) {
            causes.push(Cause::duplicate(format!("{at}.name"), &container.name));
        }
        if container
            .image
            .as_deref()
            .is_none_or(|i| i.trim().is_empty())
        {
            causes.push(Cause::required(format!("{at}.image")));
        } else if container.image.as_deref().is_some_and(|i| i.trim() != i) {
            causes.push(Cause::invalid(
                format!("{at}.image"),
                container.image.as_deref().unwrap_or_default(),
                "must not have leading or trailing whitespace",
            ));
        }
        one_of(
            &format!("{at}.imagePullPolicy"),
            container.image_pull_policy.as_deref(),
            &["Always", "IfNotPresent", "Never"],
            causes,
        );
        one_of(
            &format!("{at}.terminationMessagePolicy"),
            container.termination_message_policy.as_deref(),
            &["FallbackToLogsOnError", "File"],
            causes,
        );
        if init {
            one_of(
                &format!("{at}.restartPolicy"),
                container.restart_policy.as_deref(),
                &["Always"],
                causes,
            );
        } else if let Some(policy) = &container.restart_policy {
            causes.push(Cause::forbidden(
                format!("{at}.restartPolicy"),
                &format!("may not be set for non-init containers (was {policy:?})"),
            ));
        }
        ports(&at, container, pod.host_network, causes);
        env(
            &format!("{at}.env"),
            container.env.as_deref().unwrap_or_default(),
            causes,
        );
        for (j, from) in container.env_from.iter().flatten().enumerate() {
            let from_at = format!("{at}.envFrom[{j}]");
            match (&from.config_map_ref, &from.secret_ref) {
                (Some(_), Some(_)) => causes.push(Cause::invalid(
                    from_at,
                    "",
                    "may not have more than one field specified at a time",
                )),
                (None, None) => causes.push(Cause::required_because(
                    from_at,
                    "must specify one of: `configMapRef` or `secretRef`",
                )),
                (Some(map), None) if map.name.is_empty() => {
                    causes.push(Cause::required(format!("{from_at}.configMapRef.name")));
                }
                (None, Some(secret)) if secret.name.is_empty() => {
                    causes.push(Cause::required(format!("{from_at}.secretRef.name")));
                }
                _ => {}
            }
        }
        volume_mounts(&at, container, pod.volumes, causes);
        for (name, found, liveness) in [
            ("livenessProbe", &container.liveness_probe, true),
            ("readinessProbe", &container.readiness_probe, false),
            ("startupProbe", &container.startup_probe, true),
        ] {
            if let Some(found) = found {
                if init && container.restart_policy.as_deref() != Some("Always") {
                    causes.push(Cause::forbidden(
                        format!("{at}.{name}"),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
                probe(&format!("{at}.{name}"), found, liveness, causes);
            }
        }
        if let Some(found) = &container.resources {
            resources(&format!("{at}.resources"), found, causes);
        }
        if let Some(context) = &container.security_context {
            security_context(&format!("{at}.securityContext"), context, causes);
        }
    }
}

fn ports(at: &str, container: &Container, host_network: bool, causes: &mut Vec<Cause>) {
    let mut names = HashSet::new();
    for (j, port) in container.ports.iter().flatten().enumerate() {
        let field = format!("{at}.ports[{j}]");
        if !(1..=65535).contains(&port.container_port) {
            causes.push(Cause::invalid_number(
                format!("{field}.containerPort"),
                i64::from(port.container_port),
                PORT_RANGE,
            ));
        }
        if let Some(host) = port.host_port.filter(|p| *p != 0) {
            if !(1..=65535).contains(&host) {
                causes.push(Cause::invalid_number(
                    format!("{field}.hostPort"),
                    i64::from(host),
                    PORT_RANGE,
                ));
            } else if host_network && host != port.container_port {
                causes.push(Cause::invalid_number(
                    format!("{field}.hostPort"),
                    i64::from(host),
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
        one_of(
            &format!("{field}.protocol"),
            port.protocol.as_deref(),
            &["SCTP", "TCP", "UDP"],
            causes,
        );
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            if let Some(detail) = iana_svc_name(name) {
                causes.push(Cause::invalid(format!("{field}.name"), name, detail));
            } else if !names.insert(name) {
                causes.push(Cause::duplicate(format!("{field}.name"), name));
            }
        }
        if let Some(ip) = port.host_ip.as_deref().filter(|ip| !ip.is_empty()) {
            super::ip_address(&format!("{field}.hostIP"), ip, causes);
        }
    }
}

fn volume_mounts(
    at: &str,
    container: &Container,
    volumes: &HashSet<String>,
    causes: &mut Vec<Cause>,
) {
    let mut paths = HashSet::new();
    for (j, mount) in container.volume_mounts.iter().flatten().enumerate() {
        let field = format!("{at}.volumeMounts[{j}]");
        if mount.name.is_empty() {
            causes.push(Cause::required(format!("{field}.name")));
        } else if !volumes.contains(&mount.name) {
            causes.push(Cause::not_found(format!("{field}.name"), &mount.name));
        }
        if mount.mount_path.is_empty() {
            causes.push(Cause::required(format!("{field}.mountPath")));
        } else if !paths.insert(mount.mount_path.as_str()) {
            causes.push(Cause::invalid(
                format!("{field}.mountPath"),
                &mount.mount_path,
                "must be unique",
            ));
        }
        if let Some(sub_path) = mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
            local_descending_path(&format!("{field}.subPath"), sub_path, causes);
        }
        if let Some(expression) = mount.sub_path_expr.as_deref().filter(|p| !p.is_empty()) {
            if mount.sub_path.as_deref().is_some_and(|p| !p.is_empty()) {
                causes.push(Cause::invalid(
                    format!("{field}.subPathExpr"),
                    expression,
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            local_descending_path(&format!("{field}.subPathExpr"), expression, causes);
        }
        one_of(
            &format!("{field}.mountPropagation"),
            mount.mount_propagation.as_deref(),
            &["Bidirectional", "HostToContainer", "None"],
            causes,
        );
    }
}

fn toleration(field: &str, toleration: &Toleration, causes: &mut Vec<Cause>) {
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() {
        qualified_name(&format!("{field}.key"), key, causes);
    }
    let operator = toleration.operator.as_deref().unwrap_or("Equal");
    let value = toleration.value.as_deref().unwrap_or_default();
    match operator {
        "Equal" if key.is_empty() => causes.push(Cause::invalid(
            format!("{field}.operator"),
            operator,
            "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
        )),
        "Equal" => {
            if !super::is_label_value(value) {
                causes.push(Cause::invalid(format!("{field}.value"), value, super::LABEL_VALUE));
            }
        }
        "Exists" if !value.is_empty() => causes.push(Cause::invalid(
            format!("{field}.operator"),
            value,
            "value must be empty when `operator` is 'Exists'",
        )),
        "Exists" => {}
        other => causes.push(Cause::not_supported(format!("{field}.operator"), other, &["Equal", "Exists"])),
    }
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if toleration.toleration_seconds.is_some() && effect != "NoExecute" {
        causes.push(Cause::invalid(
            format!("{field}.effect"),
            effect,
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        ));
    }
    if !effect.is_empty() {
        one_of(
            &format!("{field}.effect"),
            Some(effect),
            &["NoExecute", "NoSchedule", "PreferNoSchedule"],
            causes,
        );
    }
}

fn node_selector_requirement(
    field: &str,
    requirement: &NodeSelectorRequirement,
    causes: &mut Vec<Cause>,
) {
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => causes.push(Cause::required_because(
            format!("{field}.values"),
            "must be specified when `operator` is 'In' or 'NotIn'",
        )),
        "Exists" | "DoesNotExist" if !values.is_empty() => causes.push(Cause::forbidden(
            format!("{field}.values"),
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )),
        "Gt" | "Lt" if values.len() != 1 || values[0].parse::<i64>().is_err() => {
            causes.push(Cause::required_because(
                format!("{field}.values"),
                "must be specified single value when `operator` is 'Lt' or 'Gt'",
            ));
        }
        "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {}
        other => causes.push(Cause::invalid(
            format!("{field}.operator"),
            other,
            "not a valid selector operator",
        )),
    }
    qualified_name(&format!("{field}.key"), &requirement.key, causes);
}

fn node_selector_term(field: &str, term: &NodeSelectorTerm, causes: &mut Vec<Cause>) {
    for (i, requirement) in term.match_expressions.iter().flatten().enumerate() {
        node_selector_requirement(
            &format!("{field}.matchExpressions[{i}]"),
            requirement,
            causes,
        );
    }
    for (i, requirement) in term.match_fields.iter().flatten().enumerate() {
        let at = format!("{field}.matchFields[{i}]");
        if requirement.key != "metadata.name" {
            causes.push(Cause::not_supported(
                format!("{at}.key"),
                &requirement.key,
                &["metadata.name"],
            ));
        }
        node_selector_requirement(&at, requirement, causes);
    }
}

fn pod_affinity_term(field: &str, term: &PodAffinityTerm, causes: &mut Vec<Cause>) {
    if term.topology_key.is_empty() {
        causes.push(Cause::required_because(
            format!("{field}.topologyKey"),
            "can not be empty",
        ));
    } else {
        qualified_name(&format!("{field}.topologyKey"), &term.topology_key, causes);
    }
    if let Some(selector) = &term.label_selector {
        super::label_selector(&format!("{field}.labelSelector"), selector, causes);
    }
    if let Some(selector) = &term.namespace_selector {
        super::label_selector(&format!("{field}.namespaceSelector"), selector, causes);
    }
}

fn weight(field: &str, weight: i32, causes: &mut Vec<Cause>) {
    if !(1..=100).contains(&weight) {
        causes.push(Cause::invalid_number(
            field,
            i64::from(weight),
            "must be in the range 1-100",
        ));
    }
}

/// A required node selector: at least one term, each valid (ValidateNodeSelector).
pub fn node_selector(field: &str, selector: &NodeSelector, causes: &mut Vec<Cause>) {
    let terms_at = format!("{field}.nodeSelectorTerms");
    if selector.node_selector_terms.is_empty() {
        causes.push(Cause::required_because(
            terms_at.clone(),
            "must have at least one node selector term",
        ));
    }
    for (i, term) in selector.node_selector_terms.iter().enumerate() {
        node_selector_term(&format!("{terms_at}[{i}]"), term, causes);
    }
}

fn affinity(field: &str, affinity: &Affinity, causes: &mut Vec<Cause>) {
    if let Some(node) = &affinity.node_affinity {
        let at = format!("{field}.nodeAffinity");
        if let Some(required) = &node.required_during_scheduling_ignored_during_execution {
            node_selector(
                &format!("{at}.requiredDuringSchedulingIgnoredDuringExecution"),
                required,
                causes,
            );
        }
        for (i, preferred) in node
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .enumerate()
        {
            let term_at = format!("{at}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            weight(&format!("{term_at}.weight"), preferred.weight, causes);
            node_selector_term(
                &format!("{term_at}.preference"),
                &preferred.preference,
                causes,
            );
        }
    }
    for (name, pod) in [
        (
            "podAffinity",
            affinity.pod_affinity.as_ref().map(|a| {
                (
                    &a.required_during_scheduling_ignored_during_execution,
                    &a.preferred_during_scheduling_ignored_during_execution,
                )
            }),
        ),
        (
            "podAntiAffinity",
            affinity.pod_anti_affinity.as_ref().map(|a| {
                (
                    &a.required_during_scheduling_ignored_during_execution,
                    &a.preferred_during_scheduling_ignored_during_execution,
                )
            }),
        ),
    ] {
        let Some((required, preferred)) = pod else {
            continue;
        };
        let at = format!("{field}.{name}");
        for (i, term) in required.iter().flatten().enumerate() {
            pod_affinity_term(
                &format!("{at}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"),
                term,
                causes,
            );
        }
        for (i, term) in preferred.iter().flatten().enumerate() {
            let term_at = format!("{at}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            weight(&format!("{term_at}.weight"), term.weight, causes);
            pod_affinity_term(
                &format!("{term_at}.podAffinityTerm"),
                &term.pod_affinity_term,
                causes,
            );
        }
    }
}

/// Field errors of a pod spec under `field` (`spec`, or `spec.template.spec` in a workload).
pub fn pod_spec(field: &str, spec: &PodSpec, causes: &mut Vec<Cause>) {
    let declared = volumes(
        &format!("{field}.volumes"),
        spec.volumes.as_deref().unwrap_or_default(),
        causes,
    );
    if spec.containers.is_empty() {
        causes.push(Cause::required(format!("{field}.containers")));
    }
    let mut pod = PodContext {
        volumes: &declared,
        host_network: spec.host_network == Some(true),
        names: HashSet::new(),
    };
    containers(
        &format!("{field}.containers"),
        &spec.containers,
        false,
        &mut pod,
        causes,
    );
    containers(
        &format!("{field}.initContainers"),
        spec.init_containers.as_deref().unwrap_or_default(),
        true,
        &mut pod,
        causes,
    );
    ephemeral_containers(
        &format!("{field}.ephemeralContainers"),
        spec.ephemeral_containers.as_deref().unwrap_or_default(),
        &mut pod,
        causes,
    );
    one_of(
        &format!("{field}.restartPolicy"),
        spec.restart_policy.as_deref(),
        &["Always", "Never", "OnFailure"],
        causes,
    );
    one_of(
        &format!("{field}.dnsPolicy"),
        spec.dns_policy.as_deref(),
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
        causes,
    );
    non_negative(
        &format!("{field}.terminationGracePeriodSeconds"),
        spec.termination_grace_period_seconds,
        causes,
    );
    if let Some(n) = spec
        .active_deadline_seconds
        .filter(|n| !(1..=i64::from(i32::MAX)).contains(n))
    {
        causes.push(Cause::invalid_number(
            format!("{field}.activeDeadlineSeconds"),
            n,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    causes.extend(labels(
        &format!("{field}.nodeSelector"),
        spec.node_selector.as_ref(),
    ));
    for (name, value) in [
        ("nodeName", &spec.node_name),
        ("serviceAccountName", &spec.service_account_name),
        ("schedulerName", &spec.scheduler_name),
        ("priorityClassName", &spec.priority_class_name),
    ] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty())
            && let Some(detail) = dns1123_subdomain(value)
        {
            causes.push(Cause::invalid(format!("{field}.{name}"), value, &detail));
        }
    }
    for (name, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty())
            && let Some(detail) = dns1123_label(value)
        {
            causes.push(Cause::invalid(format!("{field}.{name}"), value, &detail));
        }
    }
    for (i, found) in spec.tolerations.iter().flatten().enumerate() {
        toleration(&format!("{field}.tolerations[{i}]"), found, causes);
    }
    if let Some(found) = &spec.affinity {
        affinity(&format!("{field}.affinity"), found, causes);
    }
    for (i, secret) in spec.image_pull_secrets.iter().flatten().enumerate() {
        if secret.name.is_empty() {
            causes.push(Cause::required(format!(
                "{field}.imagePullSecrets[{i}].name"
            )));
        }
    }
    if let Some(context) = &spec.security_context {
        for (name, value) in [
            ("runAsUser", context.run_as_user),
            ("runAsGroup", context.run_as_group),
            ("fsGroup", context.fs_group),
        ] {
            if let Some(id) = value.filter(|id| !(0..=i64::from(i32::MAX)).contains(id)) {
                causes.push(Cause::invalid_number(
                    format!("{field}.securityContext.{name}"),
                    id,
                    "must be between 0 and 2147483647, inclusive",
                ));
            }
        }
    }
    if let Some(overhead) = &spec.overhead {
        for (name, value) in overhead {
            non_negative_quantity(&format!("{field}.overhead[{name}]"), &value.0, causes);
        }
    }
    scheduling_gates(
        &format!("{field}.schedulingGates"),
        spec.scheduling_gates.as_deref().unwrap_or_default(),
        causes,
    );
}

/// Scheduling gates are qualified names, each named once (Kubernetes' validateSchedulingGates).
fn scheduling_gates(field: &str, gates: &[PodSchedulingGate], causes: &mut Vec<Cause>) {
    let mut seen = HashSet::new();
    for (i, gate) in gates.iter().enumerate() {
        let at = format!("{field}[{i}]");
        qualified_name(&at, &gate.name, causes);
        if !seen.insert(gate.name.as_str()) {
            causes.push(Cause::duplicate(at, &gate.name));
        }
    }
}

/// Once a pod exists its scheduling gates may only be removed (Kubernetes' validateOnlyDeletedSchedulingGates).
pub fn scheduling_gates_update(new: &[PodSchedulingGate], old: &[PodSchedulingGate]) -> Vec<Cause> {
    new.iter()
        .enumerate()
        .filter(|(_, gate)| !old.iter().any(|o| o.name == gate.name))
        .map(|(i, gate)| {
            Cause::forbidden(
                format!("spec.schedulingGates[{i}].name"),
                &format!(
                    "only deletion is allowed, but found new scheduling gate '{}'",
                    gate.name
                ),
            )
        })
        .collect()
}

/// A gated pod's nodeSelector may gain entries but not lose or change any (validateNodeSelectorMutation).
pub fn node_selector_additions(
    new: Option<&BTreeMap<String, String>>,
    old: Option<&BTreeMap<String, String>>,
) -> Vec<Cause> {
    let kept = old
        .into_iter()
        .flatten()
        .all(|(key, value)| new.and_then(|n| n.get(key)) == Some(value));
    if kept {
        return Vec::new();
    }
    vec![Cause::invalid_value(
        "spec.nodeSelector",
        &new,
        "only additions to spec.nodeSelector are allowed (no mutations or deletions)",
    )]
}

/// A gated pod's required node affinity may only narrow: the same terms, each keeping its requirements and
/// gaining more (validateNodeAffinityMutation). Preferred terms may change freely.
pub fn node_affinity_additions(
    new: Option<&NodeAffinity>,
    old: Option<&NodeAffinity>,
) -> Vec<Cause> {
    let terms = |affinity: Option<&NodeAffinity>| {
        affinity
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|r| r.node_selector_terms.clone())
    };
    let Some(old_terms) = terms(old).filter(|t| !t.is_empty()) else {
        return Vec::new();
    };
    let new_terms = terms(new).unwrap_or_default();
    let field = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms";
    if new_terms.len() != old_terms.len() {
        return vec![Cause::invalid_value(
            field,
            &new_terms,
            "no additions/deletions to non-empty NodeSelectorTerms list are allowed",
        )];
    }
    let keeps = |new: &[NodeSelectorRequirement], old: &[NodeSelectorRequirement]| {
        new.len() >= old.len() && new[..old.len()] == *old
    };
    new_terms
        .iter()
        .zip(&old_terms)
        .enumerate()
        .filter(|(_, (new, old))| {
            let expressions = keeps(
                new.match_expressions.as_deref().unwrap_or_default(),
                old.match_expressions.as_deref().unwrap_or_default(),
            );
            let fields = keeps(
                new.match_fields.as_deref().unwrap_or_default(),
                old.match_fields.as_deref().unwrap_or_default(),
            );
            !(expressions && fields)
        })
        .map(|(i, (new, _))| {
            Cause::invalid_value(
                format!("{field}[{i}]"),
                new,
                "only additions are allowed (no mutations or deletions)",
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn causes_of(spec: serde_json::Value) -> Vec<String> {
        let spec: PodSpec = serde_json::from_value(spec).unwrap();
        let mut causes = Vec::new();
        pod_spec("spec", &spec, &mut causes);
        causes.iter().map(Cause::to_string).collect()
    }

    #[test]
    fn scheduling_gates_are_qualified_names_each_named_once() {
        let causes = causes_of(json!({
            "containers": [{"name": "app", "image": "app.wasm"}],
            "schedulingGates": [{"name": "example.com/quota"}, {"name": "example.com/quota"}, {"name": "-bad"}]
        }));
        assert_eq!(causes.len(), 2, "{causes:?}");
        assert_eq!(
            causes[0],
            "spec.schedulingGates[1]: Duplicate value: \"example.com/quota\""
        );
        assert!(
            causes[1].starts_with(
                "spec.schedulingGates[2]: Invalid value: \"-bad\": name part must consist of"
            ),
            "{causes:?}"
        );
    }

    #[test]
    fn a_gated_pod_may_only_lose_gates_and_narrow_where_it_runs() {
        let gate = |name: &str| PodSchedulingGate { name: name.into() };
        let added: Vec<String> =
            scheduling_gates_update(&[gate("a"), gate("x")], &[gate("a"), gate("b")])
                .iter()
                .map(Cause::to_string)
                .collect();
        assert_eq!(
            added,
            [
                "spec.schedulingGates[1].name: Forbidden: only deletion is allowed, but found new scheduling gate 'x'"
            ]
        );
        assert!(scheduling_gates_update(&[], &[gate("a")]).is_empty());

        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(
            node_selector_additions(
                Some(&map(&[("a", "b"), ("c", "d")])),
                Some(&map(&[("a", "b")]))
            )
            .is_empty()
        );
        let changed: Vec<String> = node_selector_additions(
            Some(&map(&[("a", "z"), ("c", "d")])),
            Some(&map(&[("a", "b")])),
        )
        .iter()
        .map(Cause::to_string)
        .collect();
        assert_eq!(
            changed,
            [
                r#"spec.nodeSelector: Invalid value: {"a":"z","c":"d"}: only additions to spec.nodeSelector are allowed (no mutations or deletions)"#
            ]
        );

        let affinity = |terms: serde_json::Value| -> NodeAffinity {
            serde_json::from_value(json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}})).unwrap()
        };
        let zone = json!({"key": "zone", "operator": "In", "values": ["a"]});
        let disk = json!({"key": "disk", "operator": "Exists"});
        let old = affinity(json!([{"matchExpressions": [zone.clone()]}]));
        let narrowed = affinity(json!([{"matchExpressions": [zone.clone(), disk.clone()]}]));
        assert!(node_affinity_additions(Some(&narrowed), Some(&old)).is_empty());
        assert!(
            node_affinity_additions(Some(&old), None).is_empty(),
            "anything may be set where nothing was"
        );
        let replaced = affinity(json!([{"matchExpressions": [disk.clone()]}]));
        assert_eq!(
            node_affinity_additions(Some(&replaced), Some(&old))[0].field,
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
        );
        let another = affinity(json!([{"matchExpressions": [zone]}, {"matchExpressions": [disk]}]));
        assert_eq!(
            node_affinity_additions(Some(&another), Some(&old))[0].message,
            r#"Invalid value: [{"matchExpressions":[{"key":"zone","operator":"In","values":["a"]}]},{"matchExpressions":[{"key":"disk","operator":"Exists"}]}]: no additions/deletions to non-empty NodeSelectorTerms list are allowed"#
        );
    }

    #[test]
    fn a_volume_name_that_climbs_out_of_the_pod_directory_is_invalid() {
        let causes = causes_of(json!({
            "volumes": [{"name": "../../../../tmp/x", "emptyDir": {}}],
            "containers": [{"name": "app", "image": "app.wasm",
                            "volumeMounts": [{"name": "../../../../tmp/x", "mountPath": "/data"}]}]
        }));
        assert!(causes[0].starts_with("spec.volumes[0].name: Invalid value: \"../../../../tmp/x\": a lowercase RFC 1123 label"), "{causes:?}");
        assert!(
            causes.contains(
                &"spec.containers[0].volumeMounts[0].name: Not found: \"../../../../tmp/x\""
                    .to_owned()
            ),
            "{causes:?}"
        );
    }

    #[test]
    fn paths_inside_volumes_only_descend() {
        let causes = causes_of(json!({
            "volumes": [{"name": "cfg", "configMap": {"name": "c", "items": [{"key": "k", "path": "../../etc/passwd"}]}}],
            "containers": [{"name": "app", "image": "app.wasm",
                            "volumeMounts": [{"name": "cfg", "mountPath": "/c", "subPath": "/abs"}]}]
        }));
        assert_eq!(
            causes,
            [
                "spec.volumes[0].configMap.items[0].path: Invalid value: \"../../etc/passwd\": must not contain '..'",
                "spec.containers[0].volumeMounts[0].subPath: Invalid value: \"/abs\": must be a relative path",
            ]
        );
    }

    #[test]
    fn ports_probes_env_and_resources_follow_kubernetes_rules() {
        let causes = causes_of(json!({
            "containers": [{"name": "app", "image": "app.wasm",
                "ports": [{"containerPort": 0}, {"containerPort": 80, "protocol": "HTTP", "name": "Web_Port"}],
                "env": [{"name": "A=B", "value": "x"}, {"name": "P", "valueFrom": {"fieldRef": {"fieldPath": "spec.secret"}}}],
                "livenessProbe": {"httpGet": {"port": 70000}, "successThreshold": 2},
                "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1", "memory": "lots"}}}],
            "restartPolicy": "Sometimes"
        }));
        let fields: Vec<&str> = causes
            .iter()
            .map(|c| c.split(':').next().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "spec.containers[0].ports[0].containerPort",
                "spec.containers[0].ports[1].protocol",
                "spec.containers[0].ports[1].name",
                "spec.containers[0].env[0].name",
                "spec.containers[0].env[1].valueFrom.fieldRef.fieldPath",
                "spec.containers[0].livenessProbe.successThreshold",
                "spec.containers[0].livenessProbe.httpGet.port",
                "spec.containers[0].resources.limits[memory]",
                "spec.containers[0].resources.requests",
                "spec.restartPolicy",
            ],
            "{causes:#?}"
        );
    }
}
