//! Admission of pods against a namespace's LimitRanges and ResourceQuotas, as Kubernetes' `LimitRanger` and
//! `ResourceQuota` admission plugins do: LimitRange defaults fill in container requests and limits and its
//! min/max bound them; a quota's `hard` amounts cap what the namespace's live pods ask for in total. Pure
//! functions over typed objects; the apiserver does the reading and the refusing.

use crate::api::quantity::{milli_of, value_of};
use k8s_openapi::api::core::v1::{Container, LimitRange, Pod, ResourceQuota};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// The quota keys pods count against, in base units (millicores for CPU, bytes for memory, a count for pods).
pub const POD_RESOURCES: [&str; 8] = [
    "pods",
    "count/pods",
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

fn is_cpu(resource: &str) -> bool {
    resource.ends_with("cpu")
}

/// A quantity in the base unit of a resource (millicores for CPU).
pub fn parse(resource: &str, text: &str) -> i64 {
    if is_cpu(resource) {
        milli_of(text)
    } else {
        value_of(text)
    }
}

/// A base-unit amount as Kubernetes prints it: `1500m` or `2` for CPU, `128Mi` for memory, `3` for counts.
pub fn format(resource: &str, value: i64) -> String {
    if is_cpu(resource) {
        return if value % 1000 == 0 {
            (value / 1000).to_string()
        } else {
            format!("{value}m")
        };
    }
    if resource.ends_with("memory") && value != 0 {
        for (suffix, unit) in [
            ("Ti", 1i64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if value % unit == 0 {
                return format!("{}{suffix}", value / unit);
            }
        }
    }
    value.to_string()
}

fn amounts(
    containers: &[Container],
    which: fn(&Container) -> Option<&BTreeMap<String, Quantity>>,
    resource: &str,
) -> Vec<i64> {
    containers
        .iter()
        .map(|c| {
            which(c)
                .and_then(|m| m.get(resource))
                .map_or(0, |q| parse(resource, &q.0))
        })
        .collect()
}

fn requests(c: &Container) -> Option<&BTreeMap<String, Quantity>> {
    c.resources.as_ref()?.requests.as_ref()
}

fn limits(c: &Container) -> Option<&BTreeMap<String, Quantity>> {
    c.resources.as_ref()?.limits.as_ref()
}

/// What a pod counts for against a quota: per resource, the larger of its containers' sum and its largest
/// init container (init containers run one at a time before the others).
pub fn pod_usage(pod: &Pod) -> BTreeMap<String, i64> {
    let spec = pod.spec.clone().unwrap_or_default();
    let inits = spec.init_containers.clone().unwrap_or_default();
    let effective = |which: fn(&Container) -> Option<&BTreeMap<String, Quantity>>,
                     resource: &str| {
        let sum: i64 = amounts(&spec.containers, which, resource).iter().sum();
        let init = amounts(&inits, which, resource)
            .into_iter()
            .max()
            .unwrap_or(0);
        sum.max(init)
    };
    let mut usage = BTreeMap::from([("pods".to_owned(), 1), ("count/pods".to_owned(), 1)]);
    for resource in ["cpu", "memory"] {
        let requested = effective(requests, resource);
        usage.insert(resource.to_owned(), requested);
        usage.insert(format!("requests.{resource}"), requested);
        usage.insert(format!("limits.{resource}"), effective(limits, resource));
    }
    usage
}

/// Whether a pod still counts against quota: not finished and not being deleted.
pub fn counts(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// What the counted `pods` use of each resource a quota limits.
pub fn used(hard: &BTreeMap<String, Quantity>, pods: &[Pod]) -> BTreeMap<String, i64> {
    let mut used: BTreeMap<String, i64> = hard
        .keys()
        .filter(|k| POD_RESOURCES.contains(&k.as_str()))
        .map(|k| (k.clone(), 0))
        .collect();
    for pod in pods.iter().filter(|p| counts(p)) {
        let usage = pod_usage(pod);
        for (resource, amount) in used.iter_mut() {
            *amount += usage.get(resource).copied().unwrap_or(0);
        }
    }
    used
}

/// The quota's `status.used` as quantities.
pub fn used_quantities(used: &BTreeMap<String, i64>) -> BTreeMap<String, Quantity> {
    used.iter()
        .map(|(k, v)| (k.clone(), Quantity(format(k, *v))))
        .collect()
}

/// Checks a new pod against one quota given what the namespace's other pods use; the error is the part of
/// Kubernetes' message after `pods "NAME" is forbidden: `.
pub fn check_quota(quota: &ResourceQuota, pod: &Pod, others: &[Pod]) -> Result<(), String> {
    let name = quota.metadata.name.clone().unwrap_or_default();
    let hard = quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    // A quota on limits (or requests) needs every container to say them, or it could not be enforced.
    let mut missing = Vec::new();
    for resource in [
        "limits.cpu",
        "limits.memory",
        "requests.cpu",
        "requests.memory",
    ] {
        if !hard.contains_key(resource) {
            continue;
        }
        let (kind, base) = resource.split_once('.').unwrap_or_default();
        let which = if kind == "limits" { limits } else { requests };
        let lacking: Vec<String> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .filter(|c| which(c).and_then(|m| m.get(base)).is_none())
            .map(|c| c.name.clone())
            .collect();
        if !lacking.is_empty() {
            missing.push(format!("{resource} for: {}", lacking.join(",")));
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "failed quota: {name}: must specify {}",
            missing.join("; ")
        ));
    }
    let usage = pod_usage(pod);
    let used = used(&hard, others);
    let over: Vec<&String> = used
        .keys()
        .filter(|resource| {
            let limit = parse(resource, &hard[*resource].0);
            used[*resource] + usage.get(*resource).copied().unwrap_or(0) > limit
        })
        .collect();
    if over.is_empty() {
        return Ok(());
    }
    let list = |value: &dyn Fn(&str) -> String| {
        over.iter()
            .map(|r| format!("{r}={}", value(r)))
            .collect::<Vec<_>>()
            .join(",")
    };
    Err(format!(
        "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
        list(&|r| format(r, usage.get(r).copied().unwrap_or(0))),
        list(&|r| format(r, used[r])),
        list(&|r| hard[r].0.clone()),
    ))
}

fn container_bounds(
    container: &Container,
    kind: &str,
    bound: &BTreeMap<String, Quantity>,
    maximum: bool,
) -> Result<(), String> {
    for (resource, limit) in bound {
        let bound_value = parse(resource, &limit.0);
        let (which, what) = if maximum {
            (limits(container), "limit")
        } else {
            (requests(container), "request")
        };
        let word = if maximum { "maximum" } else { "minimum" };
        match which.and_then(|m| m.get(resource)) {
            Some(value) => {
                let amount = parse(resource, &value.0);
                let outside = if maximum {
                    amount > bound_value
                } else {
                    amount < bound_value
                };
                if outside {
                    return Err(format!(
                        "{word} {resource} usage per {kind} is {}, but {what} is {}",
                        limit.0, value.0
                    ));
                }
            }
            None => {
                return Err(format!(
                    "{word} {resource} usage per {kind} is {}.  No {what} is specified",
                    limit.0
                ));
            }
        }
    }
    Ok(())
}

/// Fills in container requests and limits from the namespace's LimitRanges (type Container: `default` for
/// limits, `defaultRequest` for requests; a request left unset takes the limit, as Kubernetes defaults it),
/// then checks each container against their `min` and `max`.
pub fn apply_limit_ranges(pod: &mut Pod, ranges: &[LimitRange]) -> Result<(), String> {
    let items: Vec<_> = ranges
        .iter()
        .flat_map(|r| r.spec.iter().flat_map(|s| s.limits.iter()))
        .filter(|item| item.type_ == "Container")
        .collect();
    let Some(spec) = pod.spec.as_mut() else {
        return Ok(());
    };
    let containers = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten());
    for container in containers {
        let resources = container.resources.get_or_insert_with(Default::default);
        for item in &items {
            for (field, defaults) in [
                (&mut resources.limits, &item.default),
                (&mut resources.requests, &item.default_request),
            ] {
                for (resource, value) in defaults.iter().flatten() {
                    field
                        .get_or_insert_with(BTreeMap::new)
                        .entry(resource.clone())
                        .or_insert_with(|| value.clone());
                }
            }
        }
        for (resource, limit) in resources.limits.clone().unwrap_or_default() {
            resources
                .requests
                .get_or_insert_with(BTreeMap::new)
                .entry(resource)
                .or_insert(limit);
        }
        for item in &items {
            if let Some(max) = &item.max {
                container_bounds(container, "Container", max, true)?;
            }
            if let Some(min) = &item.min {
                container_bounds(container, "Container", min, false)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": containers}}),
        )
        .unwrap()
    }

    fn quota(hard: serde_json::Value) -> ResourceQuota {
        serde_json::from_value(json!({"metadata": {"name": "compute"}, "spec": {"hard": hard}}))
            .unwrap()
    }

    #[test]
    fn quantities_print_as_kubernetes_prints_them() {
        assert_eq!(format("requests.cpu", 1500), "1500m");
        assert_eq!(format("cpu", 2000), "2");
        assert_eq!(format("limits.memory", 128 << 20), "128Mi");
        assert_eq!(format("memory", 1000), "1000");
        assert_eq!(format("pods", 3), "3");
        assert_eq!(parse("requests.cpu", "250m"), 250);
    }

    #[test]
    fn usage_counts_init_containers_by_their_largest() {
        let mut p = pod(json!([
            {"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "200m"}}}
        ]));
        p.spec.as_mut().unwrap().init_containers = Some(
            serde_json::from_value(json!([{"name": "i", "resources": {"requests": {"cpu": "1"}}}]))
                .unwrap(),
        );
        let usage = pod_usage(&p);
        assert_eq!(usage["requests.cpu"], 1000);
        assert_eq!(usage["limits.memory"], 64 << 20);
        assert_eq!(usage["pods"], 1);
    }

    #[test]
    fn a_quota_refuses_what_would_exceed_it_with_kubernetes_words() {
        let q = quota(json!({"pods": "2", "requests.cpu": "1"}));
        let small = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "600m"}}}]));
        assert_eq!(check_quota(&q, &small, &[]), Ok(()));
        assert_eq!(
            check_quota(&q, &small, std::slice::from_ref(&small)),
            Err("exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1".into())
        );
        let tiny = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]));
        assert_eq!(
            check_quota(&q, &tiny, &[tiny.clone(), tiny.clone()]),
            Err("exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2".into())
        );
        // Finished pods no longer count.
        let mut done = tiny.clone();
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        assert_eq!(check_quota(&q, &tiny, &[done.clone(), done]), Ok(()));
    }

    #[test]
    fn a_quota_on_limits_needs_every_container_to_set_them() {
        let q = quota(json!({"limits.cpu": "2", "limits.memory": "1Gi"}));
        let p =
            pod(json!([{"name": "app", "resources": {"limits": {"cpu": "1"}}}, {"name": "side"}]));
        assert_eq!(
            check_quota(&q, &p, &[]),
            Err("failed quota: compute: must specify limits.cpu for: side; limits.memory for: app,side".into())
        );
    }

    #[test]
    fn limit_ranges_default_and_bound_containers() {
        let range: LimitRange =
            serde_json::from_value(json!({"metadata": {"name": "lr"}, "spec": {"limits": [{
                "type": "Container",
                "default": {"cpu": "500m", "memory": "128Mi"},
                "defaultRequest": {"cpu": "100m"},
                "max": {"cpu": "1"}, "min": {"memory": "16Mi"}
            }]}}))
            .unwrap();
        let mut p =
            pod(json!([{"name": "a"}, {"name": "b", "resources": {"limits": {"cpu": "800m"}}}]));
        apply_limit_ranges(&mut p, std::slice::from_ref(&range)).unwrap();
        let resources = |i: usize| {
            p.spec.as_ref().unwrap().containers[i]
                .resources
                .clone()
                .unwrap()
        };
        assert_eq!(resources(0).limits.unwrap()["cpu"].0, "500m");
        assert_eq!(resources(0).requests.as_ref().unwrap()["cpu"].0, "100m");
        assert_eq!(
            resources(0).requests.unwrap()["memory"].0,
            "128Mi",
            "a request takes its limit"
        );
        assert_eq!(resources(1).limits.unwrap()["cpu"].0, "800m");
        let mut big = pod(json!([{"name": "a", "resources": {"limits": {"cpu": "2"}}}]));
        assert_eq!(
            apply_limit_ranges(&mut big, std::slice::from_ref(&range)),
            Err("maximum cpu usage per Container is 1, but limit is 2".into())
        );
        let mut small = pod(json!([{"name": "a", "resources": {"limits": {"memory": "8Mi"}}}]));
        assert_eq!(
            apply_limit_ranges(&mut small, &[range]),
            Err("minimum memory usage per Container is 16Mi, but request is 8Mi".into())
        );
    }
}
