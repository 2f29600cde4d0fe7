//! The `kubectl get` columns of each kind, served as meta.k8s.io/v1 Tables like Kubernetes' printers do.

use jiff::Timestamp;
use serde_json::{Value, json};

/// One table column.
pub struct Column {
    /// Header text.
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer` or `date`.
    pub kind: &'static str,
    /// 0 = always shown, 1 = only with `-o wide`.
    pub priority: u8,
}

/// The columns of a kind and how to fill a row.
pub struct TableSpec {
    /// The NAME cell of an object.
    pub name: fn(&Value) -> String,
    /// Columns after NAME.
    pub columns: &'static [Column],
    /// The cells after NAME for one object.
    pub row: fn(&Value, Timestamp) -> Vec<Value>,
}

const fn col(name: &'static str, kind: &'static str, priority: u8) -> Column {
    Column {
        name,
        kind,
        priority,
    }
}

/// An object's name, as most kinds show it.
fn plain_name(v: &Value) -> String {
    s(v, "metadata.name").to_owned()
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).as_str().unwrap_or_default()
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(v, |node, key| node.get(key).unwrap_or(&Value::Null))
}

fn n(v: &Value, path: &str) -> i64 {
    at(v, path).as_i64().unwrap_or(0)
}

fn list<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path)
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Kubernetes' short human durations: `45s`, `3m20s`, `2h5m`, `3d4h`, `2y10d`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    let days = hours / 24;
    match () {
        _ if seconds < 120 => format!("{seconds}s"),
        _ if minutes < 10 && seconds % 60 == 0 => format!("{minutes}m"),
        _ if minutes < 10 => format!("{minutes}m{}s", seconds % 60),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 && minutes % 60 == 0 => format!("{hours}h"),
        _ if hours < 8 => format!("{hours}h{}m", minutes % 60),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 192 && hours % 24 == 0 => format!("{days}d"),
        _ if hours < 192 => format!("{days}d{}h", hours % 24),
        _ if hours < 24 * 365 * 2 => format!("{days}d"),
        _ if hours < 24 * 365 * 8 && days % 365 == 0 => format!("{}y", days / 365),
        _ if hours < 24 * 365 * 8 => format!("{}y{}d", days / 365, days % 365),
        _ => format!("{}y", days / 365),
    }
}

/// The age of a timestamp field, or `<unknown>`.
pub fn age(v: &Value, path: &str, now: Timestamp) -> Value {
    match s(v, path).parse::<Timestamp>() {
        Ok(t) => Value::String(human_duration(now.as_second() - t.as_second())),
        Err(_) => Value::String("<unknown>".into()),
    }
}

fn created(v: &Value, now: Timestamp) -> Value {
    age(v, "metadata.creationTimestamp", now)
}

fn or_none(text: String) -> Value {
    Value::String(if text.is_empty() {
        "<none>".into()
    } else {
        text
    })
}

fn selector_text(v: &Value, path: &str) -> Value {
    let selector = at(v, path);
    if selector.is_null() {
        return "<none>".into();
    }
    let parsed = super::selector::LabelSelector::from_object(selector).unwrap_or_default();
    or_none(parsed.render())
}

/// A map of labels (a Service's or ReplicationController's selector, a node selector) as `k=v,k=v`.
fn label_map_text(v: &Value, path: &str) -> Value {
    let pairs: Vec<String> = at(v, path)
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, value)| format!("{k}={}", value.as_str().unwrap_or_default()))
        .collect();
    or_none(pairs.join(","))
}

fn containers_and_images(v: &Value, template: &str) -> [Value; 2] {
    let containers = list(v, &format!("{template}.containers"));
    let names: Vec<&str> = containers.iter().map(|c| s(c, "name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, "image")).collect();
    [names.join(",").into(), images.join(",").into()]
}

/// namespaces
pub static NAMESPACES: TableSpec = TableSpec {
    name: plain_name,
    columns: &[col("Status", "string", 0), col("Age", "string", 0)],
    row: |v, now| vec![s(v, "status.phase").into(), created(v, now)],
};

fn node_status(v: &Value) -> String {
    let ready = list(v, "status.conditions")
        .iter()
        .find(|c| s(c, "type") == "Ready");
    let mut status = match ready.map(|c| s(c, "status")) {
        Some("True") => "Ready".to_owned(),
        Some("False") => "NotReady".to_owned(),
        _ => "Unknown".to_owned(),
    };
    if at(v, "spec.unschedulable").as_bool() == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

fn node_address(v: &Value, kind: &str) -> Value {
    let found = list(v, "status.addresses")
        .iter()
        .find(|a| s(a, "type") == kind)
        .map(|a| s(a, "address"));
    or_none(found.unwrap_or_default().to_owned())
}

/// nodes
pub static NODES: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Status", "string", 0),
        col("Roles", "string", 0),
        col("Age", "string", 0),
        col("Version", "string", 0),
        col("Internal-IP", "string", 1),
        col("External-IP", "string", 1),
        col("OS-Image", "string", 1),
        col("Kernel-Version", "string", 1),
        col("Container-Runtime", "string", 1),
    ],
    row: |v, now| {
        let roles: Vec<&str> = at(v, "metadata.labels")
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
            .collect();
        vec![
            node_status(v).into(),
            or_none(roles.join(",")),
            created(v, now),
            s(v, "status.nodeInfo.kubeletVersion").into(),
            node_address(v, "InternalIP"),
            node_address(v, "ExternalIP"),
            s(v, "status.nodeInfo.osImage").into(),
            s(v, "status.nodeInfo.kernelVersion").into(),
            s(v, "status.nodeInfo.containerRuntimeVersion").into(),
        ]
    },
};

/// The STATUS column of a pod, worked out as kubectl's printer does.
fn pod_status(v: &Value) -> String {
    let mut reason = match s(v, "status.reason") {
        "" => s(v, "status.phase").to_owned(),
        r => r.to_owned(),
    };
    let gated = list(v, "status.conditions")
        .iter()
        .any(|c| s(c, "type") == "PodScheduled" && s(c, "reason") == "SchedulingGated");
    if gated {
        reason = "SchedulingGated".into();
    }
    let inits = list(v, "status.initContainerStatuses");
    let init_count = list(v, "spec.initContainers").len();
    let mut initializing = false;
    for (i, status) in inits.iter().enumerate() {
        let terminated = at(status, "state.terminated");
        if !terminated.is_null() && n(terminated, "exitCode") == 0 {
            continue;
        }
        initializing = true;
        reason = if !terminated.is_null() {
            match s(terminated, "reason") {
                "" => format!("Init:ExitCode:{}", n(terminated, "exitCode")),
                r => format!("Init:{r}"),
            }
        } else {
            match s(status, "state.waiting.reason") {
                "" | "PodInitializing" => format!("Init:{i}/{init_count}"),
                r => format!("Init:{r}"),
            }
        };
        break;
    }
    if !initializing {
        let mut has_running = false;
        for status in list(v, "status.containerStatuses").iter().rev() {
            let waiting = s(status, "state.waiting.reason");
            let terminated = at(status, "state.terminated");
            if !waiting.is_empty() {
                reason = waiting.to_owned();
            } else if !terminated.is_null() {
                reason = match s(terminated, "reason") {
                    "" => format!("ExitCode:{}", n(terminated, "exitCode")),
                    r => r.to_owned(),
                };
            } else if status.get("ready").and_then(Value::as_bool) == Some(true) {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if !at(v, "metadata.deletionTimestamp").is_null() {
        reason = if s(v, "status.reason") == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    reason
}

/// pods
pub static PODS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Ready", "string", 0),
        col("Status", "string", 0),
        col("Restarts", "string", 0),
        col("Age", "string", 0),
        col("IP", "string", 1),
        col("Node", "string", 1),
        col("Nominated Node", "string", 1),
        col("Readiness Gates", "string", 1),
    ],
    row: |v, now| {
        let statuses = list(v, "status.containerStatuses");
        let total = list(v, "spec.containers").len();
        let ready = statuses
            .iter()
            .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
            .count();
        let restarts: i64 = statuses.iter().map(|c| n(c, "restartCount")).sum();
        vec![
            format!("{ready}/{total}").into(),
            pod_status(v).into(),
            restarts.to_string().into(),
            created(v, now),
            or_none(s(v, "status.podIP").to_owned()),
            or_none(s(v, "spec.nodeName").to_owned()),
            or_none(s(v, "status.nominatedNodeName").to_owned()),
            "<none>".into(),
        ]
    },
};

fn service_ports(v: &Value) -> String {
    let ports: Vec<String> = list(v, "spec.ports")
        .iter()
        .map(|p| {
            let node_port = n(p, "nodePort");
            let proto = match s(p, "protocol") {
                "" => "TCP",
                p => p,
            };
            if node_port > 0 {
                format!("{}:{}/{}", n(p, "port"), node_port, proto)
            } else {
                format!("{}/{}", n(p, "port"), proto)
            }
        })
        .collect();
    ports.join(",")
}

/// services
pub static SERVICES: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Type", "string", 0),
        col("Cluster-IP", "string", 0),
        col("External-IP", "string", 0),
        col("Port(s)", "string", 0),
        col("Age", "string", 0),
        col("Selector", "string", 1),
    ],
    row: |v, now| {
        let external = list(v, "spec.externalIPs")
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(",");
        vec![
            s(v, "spec.type").into(),
            or_none(s(v, "spec.clusterIP").to_owned()),
            or_none(external),
            or_none(service_ports(v)),
            created(v, now),
            label_map_text(v, "spec.selector"),
        ]
    },
};

/// endpoints
pub static ENDPOINTS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[col("Endpoints", "string", 0), col("Age", "string", 0)],
    row: |v, now| {
        let mut all = Vec::new();
        for subset in list(v, "subsets") {
            for address in list(subset, "addresses") {
                for port in list(subset, "ports") {
                    all.push(format!("{}:{}", s(address, "ip"), n(port, "port")));
                }
            }
        }
        let shown = if all.len() > 3 {
            format!("{} + {} more...", all[..3].join(","), all.len() - 3)
        } else {
            all.join(",")
        };
        vec![or_none(shown), created(v, now)]
    },
};

/// configmaps
pub static CONFIGMAPS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[col("Data", "integer", 0), col("Age", "string", 0)],
    row: |v, now| {
        let count = at(v, "data").as_object().map_or(0, |m| m.len())
            + at(v, "binaryData").as_object().map_or(0, |m| m.len());
        vec![count.into(), created(v, now)]
    },
};

/// secrets
pub static SECRETS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Type", "string", 0),
        col("Data", "integer", 0),
        col("Age", "string", 0),
    ],
    row: |v, now| {
        vec![
            s(v, "type").into(),
            at(v, "data").as_object().map_or(0, |m| m.len()).into(),
            created(v, now),
        ]
    },
};

/// events
pub static EVENTS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Last Seen", "string", 0),
        col("Type", "string", 0),
        col("Reason", "string", 0),
        col("Object", "string", 0),
        col("Source", "string", 1),
        col("Message", "string", 0),
        col("First Seen", "string", 1),
        col("Count", "integer", 1),
    ],
    row: |v, now| {
        let last = if s(v, "lastTimestamp").is_empty() {
            "eventTime"
        } else {
            "lastTimestamp"
        };
        let object = format!(
            "{}/{}",
            s(v, "involvedObject.kind").to_ascii_lowercase(),
            s(v, "involvedObject.name")
        );
        vec![
            age(v, last, now),
            s(v, "type").into(),
            s(v, "reason").into(),
            object.into(),
            s(v, "source.component").into(),
            s(v, "message").into(),
            age(v, "firstTimestamp", now),
            n(v, "count").into(),
        ]
    },
};

/// horizontalpodautoscalers: their target, each metric's current and target value, bounds and replicas, as
/// kubectl's printer shows them (`cpu: 250%/50%`).
pub static HORIZONTAL_POD_AUTOSCALERS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Reference", "string", 0),
        col("Targets", "string", 0),
        col("MinPods", "string", 0),
        col("MaxPods", "integer", 0),
        col("Replicas", "integer", 0),
        col("Age", "string", 0),
    ],
    row: |v, now| {
        let current = list(v, "status.currentMetrics");
        let targets: Vec<String> = list(v, "spec.metrics")
            .iter()
            .map(|metric| {
                let name = s(metric, "resource.name");
                let seen = current.iter().find(|c| s(c, "resource.name") == name);
                match s(metric, "resource.target.type") {
                    "Utilization" => {
                        let now = seen
                            .and_then(|c| at(c, "resource.current.averageUtilization").as_i64())
                            .map_or("<unknown>".to_owned(), |u| format!("{u}%"));
                        format!(
                            "{name}: {now}/{}%",
                            n(metric, "resource.target.averageUtilization")
                        )
                    }
                    "AverageValue" => {
                        let now = seen
                            .map(|c| s(c, "resource.current.averageValue"))
                            .filter(|v| !v.is_empty())
                            .unwrap_or("<unknown>");
                        format!(
                            "{name}: {now}/{}",
                            s(metric, "resource.target.averageValue")
                        )
                    }
                    _ => format!("<unknown>/{}", s(metric, "type")),
                }
            })
            .collect();
        let min = at(v, "spec.minReplicas")
            .as_i64()
            .map_or("<unset>".to_owned(), |m| m.to_string());
        vec![
            format!(
                "{}/{}",
                s(v, "spec.scaleTargetRef.kind"),
                s(v, "spec.scaleTargetRef.name")
            )
            .into(),
            or_none(targets.join(", ")),
            min.into(),
            n(v, "spec.maxReplicas").into(),
            n(v, "status.currentReplicas").into(),
            created(v, now),
        ]
    },
};

/// ingresses: as kubectl shows them (HOSTS `*` for a rule without one; PORTS 80, and 443 with TLS).
pub static INGRESSES: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Class", "string", 0),
        col("Hosts", "string", 0),
        col("Address", "string", 0),
        col("Ports", "string", 0),
        col("Age", "string", 0),
    ],
    row: |v, now| {
        let hosts: Vec<&str> = list(v, "spec.rules")
            .iter()
            .map(|r| match s(r, "host") {
                "" => "*",
                host => host,
            })
            .collect();
        let addresses: Vec<&str> = list(v, "status.loadBalancer.ingress")
            .iter()
            .map(|i| match s(i, "ip") {
                "" => s(i, "hostname"),
                ip => ip,
            })
            .collect();
        let ports = if list(v, "spec.tls").is_empty() {
            "80"
        } else {
            "80, 443"
        };
        let class = match s(v, "spec.ingressClassName") {
            "" => "<none>",
            class => class,
        };
        vec![
            class.into(),
            or_none(hosts.join(",")),
            addresses.join(",").into(),
            ports.into(),
            created(v, now),
        ]
    },
};

/// ingressclasses: their controller and parameters.
pub static INGRESS_CLASSES: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Controller", "string", 0),
        col("Parameters", "string", 0),
        col("Age", "string", 0),
    ],
    row: |v, now| {
        let parameters = match s(v, "spec.parameters.name") {
            "" => "<none>".to_owned(),
            name => format!("{}/{name}", s(v, "spec.parameters.kind")),
        };
        vec![
            s(v, "spec.controller").into(),
            parameters.into(),
            created(v, now),
        ]
    },
};

/// Access modes as kubectl abbreviates them, in its order: `RWO,ROX,RWX,RWOP`.
fn access_modes(v: &Value, path: &str) -> Value {
    let modes = list(v, path);
    let has = |mode: &str| modes.iter().any(|m| m.as_str() == Some(mode));
    let short: Vec<&str> = [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .into_iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| short)
    .collect();
    short.join(",").into()
}

/// persistentvolumes: as kubectl shows them (CLAIM is the bound claim's namespace/name).
pub static PERSISTENT_VOLUMES: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Capacity", "string", 0),
        col("Access Modes", "string", 0),
        col("Reclaim Policy", "string", 0),
        col("Status", "string", 0),
        col("Claim", "string", 0),
        col("StorageClass", "string", 0),
        col("VolumeAttributesClass", "string", 0),
        col("Reason", "string", 0),
        col("Age", "string", 0),
        col("VolumeMode", "string", 1),
    ],
    row: |v, now| {
        let claim = match s(v, "spec.claimRef.name") {
            "" => String::new(),
            name => format!("{}/{name}", s(v, "spec.claimRef.namespace")),
        };
        vec![
            s(v, "spec.capacity.storage").into(),
            access_modes(v, "spec.accessModes"),
            s(v, "spec.persistentVolumeReclaimPolicy").into(),
            s(v, "status.phase").into(),
            claim.into(),
            s(v, "spec.storageClassName").into(),
            or_unset(s(v, "spec.volumeAttributesClassName")),
            s(v, "status.reason").into(),
            created(v, now),
            s(v, "spec.volumeMode").into(),
        ]
    },
};

fn or_unset(text: &str) -> Value {
    if text.is_empty() { "<unset>" } else { text }.into()
}

/// persistentvolumeclaims: as kubectl shows them (capacity and access modes once bound).
pub static PERSISTENT_VOLUME_CLAIMS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Status", "string", 0),
        col("Volume", "string", 0),
        col("Capacity", "string", 0),
        col("Access Modes", "string", 0),
        col("StorageClass", "string", 0),
        col("VolumeAttributesClass", "string", 0),
        col("Age", "string", 0),
        col("VolumeMode", "string", 1),
    ],
    row: |v, now| {
        let phase = if at(v, "metadata.deletionTimestamp").is_null() {
            s(v, "status.phase")
        } else {
            "Terminating"
        };
        vec![
            phase.into(),
            s(v, "spec.volumeName").into(),
            s(v, "status.capacity.storage").into(),
            access_modes(v, "status.accessModes"),
            s(v, "spec.storageClassName").into(),
            or_unset(s(v, "spec.volumeAttributesClassName")),
            created(v, now),
            s(v, "spec.volumeMode").into(),
        ]
    },
};

/// storageclasses: as kubectl shows them, the default one named `NAME (default)`.
pub static STORAGE_CLASSES: TableSpec = TableSpec {
    name: |v| {
        let default = [
            "storageclass.kubernetes.io/is-default-class",
            "storageclass.beta.kubernetes.io/is-default-class",
        ]
        .iter()
        .any(|key| {
            at(v, "metadata.annotations")
                .get(key)
                .and_then(Value::as_str)
                == Some("true")
        });
        let name = s(v, "metadata.name");
        if default {
            format!("{name} (default)")
        } else {
            name.to_owned()
        }
    },
    columns: &[
        col("Provisioner", "string", 0),
        col("ReclaimPolicy", "string", 0),
        col("VolumeBindingMode", "string", 0),
        col("AllowVolumeExpansion", "string", 0),
        col("Age", "string", 0),
    ],
    row: |v, now| {
        vec![
            s(v, "provisioner").into(),
            s(v, "reclaimPolicy").into(),
            s(v, "volumeBindingMode").into(),
            at(v, "allowVolumeExpansion")
                .as_bool()
                .unwrap_or(false)
                .to_string()
                .into(),
            created(v, now),
        ]
    },
};

/// limitranges, roles and clusterroles: when they were made.
pub static CREATED: TableSpec = TableSpec {
    name: plain_name,
    columns: &[col("Created At", "date", 0)],
    row: |v, _| vec![s(v, "metadata.creationTimestamp").into()],
};

/// rolebindings and clusterrolebindings: the role and age, as kubectl shows them.
pub static BINDINGS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[col("Role", "string", 0), col("Age", "string", 0)],
    row: |v, now| {
        vec![
            format!("{}/{}", s(v, "roleRef.kind"), s(v, "roleRef.name")).into(),
            created(v, now),
        ]
    },
};

/// resourcequotas
pub static RESOURCE_QUOTAS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Age", "string", 0),
        col("Request", "string", 0),
        col("Limit", "string", 0),
    ],
    row: |v, now| {
        let usage = |prefix_limits: bool| {
            let hard = at(v, "status.hard")
                .as_object()
                .cloned()
                .unwrap_or_default();
            let used = at(v, "status.used");
            let parts: Vec<String> = hard
                .iter()
                .filter(|(k, _)| k.starts_with("limits.") == prefix_limits)
                .map(|(k, h)| {
                    format!(
                        "{k}: {}/{}",
                        used.get(k).and_then(Value::as_str).unwrap_or("0"),
                        h.as_str().unwrap_or_default()
                    )
                })
                .collect();
            Value::String(parts.join(", "))
        };
        vec![created(v, now), usage(false), usage(true)]
    },
};

/// deployments
pub static DEPLOYMENTS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Ready", "string", 0),
        col("Up-to-date", "string", 0),
        col("Available", "string", 0),
        col("Age", "string", 0),
        col("Containers", "string", 1),
        col("Images", "string", 1),
        col("Selector", "string", 1),
    ],
    row: |v, now| {
        let [containers, images] = containers_and_images(v, "spec.template.spec");
        vec![
            format!("{}/{}", n(v, "status.readyReplicas"), n(v, "spec.replicas")).into(),
            n(v, "status.updatedReplicas").into(),
            n(v, "status.availableReplicas").into(),
            created(v, now),
            containers,
            images,
            selector_text(v, "spec.selector"),
        ]
    },
};

/// replicasets
pub static REPLICA_SETS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Desired", "integer", 0),
        col("Current", "integer", 0),
        col("Ready", "integer", 0),
        col("Age", "string", 0),
        col("Containers", "string", 1),
        col("Images", "string", 1),
        col("Selector", "string", 1),
    ],
    row: |v, now| {
        let [containers, images] = containers_and_images(v, "spec.template.spec");
        vec![
            n(v, "spec.replicas").into(),
            n(v, "status.replicas").into(),
            n(v, "status.readyReplicas").into(),
            created(v, now),
            containers,
            images,
            selector_text(v, "spec.selector"),
        ]
    },
};

/// replicationcontrollers
pub static REPLICATION_CONTROLLERS: TableSpec = TableSpec {
    name: plain_name,
    columns: REPLICA_SETS.columns,
    row: |v, now| {
        let [containers, images] = containers_and_images(v, "spec.template.spec");
        vec![
            n(v, "spec.replicas").into(),
            n(v, "status.replicas").into(),
            n(v, "status.readyReplicas").into(),
            created(v, now),
            containers,
            images,
            label_map_text(v, "spec.selector"),
        ]
    },
};

/// componentstatuses
pub static COMPONENT_STATUSES: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Status", "string", 0),
        col("Message", "string", 0),
        col("Error", "string", 0),
    ],
    row: |v, _| {
        let healthy = list(v, "conditions")
            .iter()
            .find(|c| s(c, "type") == "Healthy");
        let status = match healthy.map(|c| s(c, "status")) {
            Some("True") => "Healthy",
            Some("False") => "Unhealthy",
            _ => "Unknown",
        };
        vec![
            status.into(),
            healthy.map_or("", |c| s(c, "message")).into(),
            healthy.map_or("", |c| s(c, "error")).into(),
        ]
    },
};

/// daemonsets
pub static DAEMON_SETS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Desired", "integer", 0),
        col("Current", "integer", 0),
        col("Ready", "integer", 0),
        col("Up-to-date", "integer", 0),
        col("Available", "integer", 0),
        col("Node Selector", "string", 0),
        col("Age", "string", 0),
        col("Containers", "string", 1),
        col("Images", "string", 1),
        col("Selector", "string", 1),
    ],
    row: |v, now| {
        let [containers, images] = containers_and_images(v, "spec.template.spec");
        vec![
            n(v, "status.desiredNumberScheduled").into(),
            n(v, "status.currentNumberScheduled").into(),
            n(v, "status.numberReady").into(),
            n(v, "status.updatedNumberScheduled").into(),
            n(v, "status.numberAvailable").into(),
            label_map_text(v, "spec.template.spec.nodeSelector"),
            created(v, now),
            containers,
            images,
            selector_text(v, "spec.selector"),
        ]
    },
};

/// statefulsets
pub static STATEFUL_SETS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Ready", "string", 0),
        col("Age", "string", 0),
        col("Containers", "string", 1),
        col("Images", "string", 1),
    ],
    row: |v, now| {
        let [containers, images] = containers_and_images(v, "spec.template.spec");
        vec![
            format!("{}/{}", n(v, "status.readyReplicas"), n(v, "spec.replicas")).into(),
            created(v, now),
            containers,
            images,
        ]
    },
};

fn job_status(v: &Value) -> &'static str {
    let conditions = list(v, "status.conditions");
    let has = |kind: &str| {
        conditions
            .iter()
            .any(|c| s(c, "type") == kind && s(c, "status") == "True")
    };
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

/// jobs
pub static JOBS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Status", "string", 0),
        col("Completions", "string", 0),
        col("Duration", "string", 0),
        col("Age", "string", 0),
        col("Containers", "string", 1),
        col("Images", "string", 1),
        col("Selector", "string", 1),
    ],
    row: |v, now| {
        let [containers, images] = containers_and_images(v, "spec.template.spec");
        let completions = match at(v, "spec.completions").as_i64() {
            Some(c) => format!("{}/{c}", n(v, "status.succeeded")),
            None => format!(
                "{}/1 of {}",
                n(v, "status.succeeded"),
                n(v, "spec.parallelism")
            ),
        };
        let start = s(v, "status.startTime").parse::<Timestamp>().ok();
        let end = s(v, "status.completionTime")
            .parse::<Timestamp>()
            .ok()
            .unwrap_or(now);
        let duration = start.map_or(String::new(), |start| {
            human_duration(end.as_second() - start.as_second())
        });
        vec![
            job_status(v).into(),
            completions.into(),
            duration.into(),
            created(v, now),
            containers,
            images,
            selector_text(v, "spec.selector"),
        ]
    },
};

/// cronjobs
pub static CRON_JOBS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Schedule", "string", 0),
        col("Timezone", "string", 0),
        col("Suspend", "boolean", 0),
        col("Active", "integer", 0),
        col("Last Schedule", "string", 0),
        col("Age", "string", 0),
        col("Containers", "string", 1),
        col("Images", "string", 1),
        col("Selector", "string", 1),
    ],
    row: |v, now| {
        let [containers, images] = containers_and_images(v, "spec.jobTemplate.spec.template.spec");
        let last = if s(v, "status.lastScheduleTime").is_empty() {
            "<none>".into()
        } else {
            age(v, "status.lastScheduleTime", now)
        };
        vec![
            s(v, "spec.schedule").into(),
            or_none(s(v, "spec.timeZone").to_owned()),
            at(v, "spec.suspend").as_bool().unwrap_or(false).into(),
            list(v, "status.active").len().into(),
            last,
            created(v, now),
            containers,
            images,
            selector_text(v, "spec.jobTemplate.spec.selector"),
        ]
    },
};

/// serviceaccounts: the Secrets they list (none, since tokens are requested), and age.
pub static SERVICE_ACCOUNTS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[col("Secrets", "string", 0), col("Age", "string", 0)],
    row: |v, now| vec![list(v, "secrets").len().into(), created(v, now)],
};

/// poddisruptionbudgets: kubectl's columns.
pub static DISRUPTION_BUDGETS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Min Available", "string", 0),
        col("Max Unavailable", "string", 0),
        col("Allowed Disruptions", "integer", 0),
        col("Age", "string", 0),
    ],
    row: |v, now| {
        let int_or_percent = |path: &str| match at(v, path) {
            Value::Null => "N/A".to_owned(),
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        vec![
            int_or_percent("spec.minAvailable").into(),
            int_or_percent("spec.maxUnavailable").into(),
            n(v, "status.disruptionsAllowed").into(),
            created(v, now),
        ]
    },
};

/// priorityclasses: as kubectl shows them.
pub static PRIORITY_CLASSES: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Value", "integer", 0),
        col("Global-Default", "boolean", 0),
        col("Age", "string", 0),
        col("PreemptionPolicy", "string", 0),
    ],
    row: |v, now| {
        vec![
            n(v, "value").into(),
            at(v, "globalDefault").as_bool().unwrap_or(false).into(),
            created(v, now),
            s(v, "preemptionPolicy").into(),
        ]
    },
};

/// leases
pub static LEASES: TableSpec = TableSpec {
    name: plain_name,
    columns: &[col("Holder", "string", 0), col("Age", "string", 0)],
    row: |v, now| vec![s(v, "spec.holderIdentity").into(), created(v, now)],
};

/// certificatesigningrequests: as kubectl shows them, with the condition `Approved,Issued` once signed.
pub static CERTIFICATE_SIGNING_REQUESTS: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("Age", "string", 0),
        col("SignerName", "string", 0),
        col("Requestor", "string", 0),
        col("RequestedDuration", "string", 0),
        col("Condition", "string", 0),
    ],
    row: |v, now| {
        let mut conditions: Vec<String> = list(v, "status.conditions")
            .iter()
            .filter(|c| s(c, "status") == "True")
            .map(|c| s(c, "type").to_owned())
            .collect();
        if !s(v, "status.certificate").is_empty() {
            conditions.push("Issued".into());
        }
        let condition = if conditions.is_empty() {
            "Pending".to_owned()
        } else {
            conditions.join(",")
        };
        let duration = n(v, "spec.expirationSeconds");
        vec![
            created(v, now),
            s(v, "spec.signerName").into(),
            s(v, "spec.username").into(),
            if duration > 0 {
                format!("{duration}s")
            } else {
                "<none>".to_owned()
            }
            .into(),
            condition.into(),
        ]
    },
};

/// endpointslices
pub static ENDPOINT_SLICES: TableSpec = TableSpec {
    name: plain_name,
    columns: &[
        col("AddressType", "string", 0),
        col("Ports", "string", 0),
        col("Endpoints", "string", 0),
        col("Age", "string", 0),
    ],
    row: |v, now| {
        let ports: Vec<String> = list(v, "ports")
            .iter()
            .map(|p| n(p, "port").to_string())
            .collect();
        let addresses: Vec<&str> = list(v, "endpoints")
            .iter()
            .flat_map(|e| list(e, "addresses"))
            .filter_map(Value::as_str)
            .collect();
        vec![
            s(v, "addressType").into(),
            or_none(ports.join(",")),
            or_none(addresses.join(",")),
            created(v, now),
        ]
    },
};

/// What each row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// Nothing.
    None,
    /// The object's metadata, as a PartialObjectMetadata (the default).
    #[default]
    Metadata,
    /// The whole object (kubectl asks for it to sort by any field).
    Object,
}

impl IncludeObject {
    /// The `includeObject` query parameter, or the reason it is not one.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("" | "Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"None\", \"Metadata\", \"Object\""
            )),
        }
    }
}

/// Builds a Table of `objects` (already in their served form) with kubectl's columns for `spec`, each row with
/// what `include` asks for.
pub fn build(
    spec: &TableSpec,
    objects: &[Value],
    resource_version: &str,
    continue_token: Option<&str>,
    include: IncludeObject,
) -> Value {
    let now = Timestamp::now();
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    columns.extend(spec.columns.iter().map(|c| json!({"name": c.name, "type": c.kind, "format": "", "description": c.name, "priority": c.priority})));
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![Value::String((spec.name)(object))];
            cells.extend((spec.row)(object, now));
            let mut row = json!({"cells": cells});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]});
                }
                IncludeObject::Object => row["object"] = object.clone(),
            }
            row
        })
        .collect();
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(token) = continue_token {
        metadata["continue"] = token.into();
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": columns, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 5 * 60), "3h5m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600), "3d4h");
        assert_eq!(human_duration(40 * 86400), "40d");
    }

    #[test]
    fn a_crashing_pod_shows_its_waiting_reason() {
        let pod = json!({
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Running", "containerStatuses": [{"ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        });
        let row = (PODS.row)(&pod, Timestamp::now());
        assert_eq!(row[0], "0/1");
        assert_eq!(row[1], "CrashLoopBackOff");
        assert_eq!(row[2], "4");
    }
}
