//! The horizontal pod autoscaler: every sync period (kube-controller-manager's
//! `--horizontal-pod-autoscaler-sync-period`, 15 s) each HorizontalPodAutoscaler reads its target's scale
//! subresource, the pods its selector picks and their PodMetrics (metrics.k8s.io), asks each resource metric
//! for a replica count (`replicas`), normalizes the largest (`normalize`), sets the scale when it changed (a
//! `SuccessfulRescale` Event) and reports what it saw in its status, with Kubernetes' conditions.

pub mod normalize;
pub mod replicas;

use super::controller_loop::ControllerLoop;
use super::{ControllerError, cached_in};
use crate::api::resource_metrics::PodMetrics;
use crate::cache::Cache;
use crate::events::{EventType, Recorder};
use crate::informers::Informers;
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
    MetricIdentifier, MetricSpec, MetricStatus, MetricValueStatus, PodsMetricStatus,
    ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use normalize::{History, Limit};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use replicas::{PodSample, Recommendation, Target};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmkube_core::quantity::{milli_of, milli_text};

struct Context {
    client: kube::Client,
    pods: Cache<Pod>,
    events: Recorder,
    sync: Duration,
    /// Each HPA's recommendations and scale events, by namespace/name.
    histories: Mutex<HashMap<String, History>>,
}

/// The scalable kinds an HPA may target, by kind: their group/version and plural.
fn target_resource(api_version: Option<&str>, kind: &str) -> Option<ApiResource> {
    let (group, version, plural) = match kind {
        "Deployment" => ("apps", "v1", "deployments"),
        "ReplicaSet" => ("apps", "v1", "replicasets"),
        "StatefulSet" => ("apps", "v1", "statefulsets"),
        "ReplicationController" => ("", "v1", "replicationcontrollers"),
        _ => return None,
    };
    let api_version = api_version.map_or_else(
        || {
            if group.is_empty() {
                version.to_owned()
            } else {
                format!("{group}/{version}")
            }
        },
        str::to_owned,
    );
    Some(ApiResource {
        group: group.into(),
        version: version.into(),
        api_version,
        kind: kind.into(),
        plural: plural.into(),
    })
}

/// A pod's use of `resource` from its PodMetrics, in milli-units, with the end and length of their window.
fn resource_usage(
    metrics: Option<&PodMetrics>,
    resource: &str,
) -> Option<(i64, jiff::Timestamp, Duration)> {
    metrics.map(|m| {
        let used = m
            .containers
            .iter()
            .filter_map(|c| c.usage.get(resource))
            .map(|q| milli_of(&q.0))
            .fold(0i64, i64::saturating_add);
        (used, m.timestamp.0, window_of(&m.window))
    })
}

/// A pod as the replica calculation needs it: its requests of `resource` and its measured `usage`.
fn sample(pod: &Pod, resource: &str, usage: Option<(i64, jiff::Timestamp, Duration)>) -> PodSample {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| {
            let since = c
                .last_transition_time
                .as_ref()
                .map_or_else(jiff::Timestamp::now, |t| t.0);
            (c.status == "True", since)
        });
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let request = containers
        .iter()
        .map(|c| {
            c.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .map(|q| milli_of(&q.0))
        })
        // Saturating: requests are whatever users wrote.
        .try_fold(0i64, |sum, request| Some(sum.saturating_add(request?)));
    PodSample {
        name: pod.name_any(),
        gone: pod.metadata.deletion_timestamp.is_some() || phase == "Failed",
        pending: phase == "Pending",
        ready,
        started: status.start_time.map(|t| t.0),
        request,
        usage,
    }
}

/// A window as metrics.k8s.io writes it (`5s`, `1.5s`, `1m5s`); zero when unreadable.
fn window_of(text: &str) -> Duration {
    let (minutes, rest) = text.split_once('m').unwrap_or(("0", text));
    let seconds: f64 = rest.trim_end_matches('s').parse().unwrap_or(0.0);
    let minutes: f64 = minutes.parse().unwrap_or(0.0);
    Duration::try_from_secs_f64(minutes * 60.0 + seconds).unwrap_or_default()
}

/// Where a metric's values come from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// A resource of the pods' containers (metrics.k8s.io): `cpu` or `memory`.
    Resource(String),
    /// A metric of each pod (custom.metrics.k8s.io), and the selector of its series.
    Pods(MetricIdentifier),
}

impl Source {
    fn name(&self) -> &str {
        match self {
            Source::Resource(name) => name,
            Source::Pods(metric) => &metric.name,
        }
    }

    /// What the metric is called in the HPA's conditions and events.
    fn described(&self, target: Target) -> String {
        match (self, target) {
            (Source::Resource(name), Target::Utilization(_)) => {
                format!("{name} resource utilization (percentage of request)")
            }
            (Source::Resource(name), Target::AverageValue(_)) => format!("{name} resource"),
            (Source::Pods(metric), _) => format!("pods metric {}", metric.name),
        }
    }

    /// What one metric measured, for the status.
    fn status(&self, recommendation: &Recommendation) -> MetricStatus {
        let average = if self.name() == "cpu" {
            format!("{}m", recommendation.average)
        } else if matches!(self, Source::Pods(_)) {
            milli_text(recommendation.average)
        } else {
            (recommendation.average / 1000).to_string()
        };
        let current = MetricValueStatus {
            average_utilization: recommendation.utilization,
            average_value: Some(Quantity(average)),
            value: None,
        };
        match self {
            Source::Resource(name) => MetricStatus {
                type_: "Resource".into(),
                resource: Some(ResourceMetricStatus {
                    name: name.clone(),
                    current,
                }),
                ..Default::default()
            },
            Source::Pods(metric) => MetricStatus {
                type_: "Pods".into(),
                pods: Some(PodsMetricStatus {
                    metric: metric.clone(),
                    current,
                }),
                ..Default::default()
            },
        }
    }
}

/// A metric's source and target; `None` for the sources not supported yet (Object, External,
/// ContainerResource).
fn metric_target(metric: &MetricSpec) -> Option<(Source, Target)> {
    let (source, target) = match metric.type_.as_str() {
        "Resource" => {
            let resource = metric.resource.as_ref()?;
            (Source::Resource(resource.name.clone()), &resource.target)
        }
        "Pods" => {
            let pods = metric.pods.as_ref()?;
            (Source::Pods(pods.metric.clone()), &pods.target)
        }
        _ => return None,
    };
    let target = match target.type_.as_str() {
        "Utilization" => Target::Utilization(target.average_utilization?),
        "AverageValue" => Target::AverageValue(milli_of(&target.average_value.as_ref()?.0)),
        _ => return None,
    };
    Some((source, target))
}

/// Each pod's value of a pods metric (custom.metrics.k8s.io) among the pods `selector` picks, by pod name, in
/// milli-units with the end and length of their window.
async fn pods_metric(
    client: &kube::Client,
    namespace: &str,
    metric: &MetricIdentifier,
    selector: &str,
) -> Result<HashMap<String, (i64, jiff::Timestamp, Duration)>, String> {
    let mut query = vec![("labelSelector", selector.to_owned())];
    if let Some(series) = &metric.selector {
        query.push(("metricLabelSelector", label_selector_text(series)));
    }
    let query = serde_urlencoded::to_string(query).map_err(|e| e.to_string())?;
    let path = format!(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{}/pods/*/{}?{query}",
        utf8_percent_encode(namespace, PATH_SEGMENT),
        utf8_percent_encode(&metric.name, PATH_SEGMENT)
    );
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let list: MetricValueList = client.request(request).await.map_err(|e| match e {
        kube::Error::Api(status) => status.message,
        other => other.to_string(),
    })?;
    Ok(list
        .items
        .into_iter()
        .map(|item| {
            let window =
                Duration::from_secs(item.window_seconds.unwrap_or(0).max(0).unsigned_abs());
            (
                item.described_object.name,
                (milli_of(&item.value.0), item.timestamp.0, window),
            )
        })
        .collect())
}

/// What a path segment escapes: all but letters, digits and `-._~` (Go's `url.PathEscape`, as client-go).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// custom.metrics.k8s.io's MetricValueList, as far as the autoscaler reads it.
#[derive(serde::Deserialize)]
struct MetricValueList {
    items: Vec<MetricValue>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetricValue {
    described_object: DescribedObject,
    timestamp: Time,
    window_seconds: Option<i64>,
    value: Quantity,
}

#[derive(serde::Deserialize)]
struct DescribedObject {
    name: String,
}

/// A label selector as a query writes it (`a=b,c in (d,e)`).
fn label_selector_text(selector: &LabelSelector) -> String {
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.clone().unwrap_or_default().join(",");
        terms.push(match expression.operator.as_str() {
            "In" => format!("{} in ({values})", expression.key),
            "NotIn" => format!("{} notin ({values})", expression.key),
            "Exists" => expression.key.clone(),
            _ => format!("!{}", expression.key),
        });
    }
    terms.join(",")
}

fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
) -> HorizontalPodAutoscalerCondition {
    HorizontalPodAutoscalerCondition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        ..Default::default()
    }
}

/// Keeps a condition's transition time when its status did not change.
fn keep_transitions(
    mut conditions: Vec<HorizontalPodAutoscalerCondition>,
    previous: &[HorizontalPodAutoscalerCondition],
) -> Vec<HorizontalPodAutoscalerCondition> {
    let now =
        Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_default());
    for c in &mut conditions {
        c.last_transition_time = previous
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
            .and_then(|p| p.last_transition_time.clone())
            .or_else(|| Some(now.clone()));
    }
    conditions
}

async fn reconcile(
    hpa: Arc<HorizontalPodAutoscaler>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let namespace = hpa.namespace().unwrap_or_default();
    let name = hpa.name_any();
    let key = format!("{namespace}/{name}");
    let spec = hpa.spec.clone();
    let previous = hpa.status.clone().unwrap_or_default();
    let target = &spec.scale_target_ref;
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let now = jiff::Timestamp::now();
    let mut conditions = Vec::new();
    let mut status = HorizontalPodAutoscalerStatus {
        current_metrics: None,
        current_replicas: previous.current_replicas,
        desired_replicas: previous.desired_replicas,
        last_scale_time: previous.last_scale_time.clone(),
        observed_generation: hpa.metadata.generation,
        conditions: None,
    };
    // The target's API, read once: its scale is read here and written below.
    let scalable = target_resource(target.api_version.as_deref(), &target.kind).map(|resource| {
        Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, &resource)
    });
    let scale = match &scalable {
        Some(api) => api.get_scale(&target.name).await.map_err(|e| e.to_string()),
        None => Err(format!(
            "no matches for kind {:?} in the scalable kinds",
            target.kind
        )),
    };
    let scale = match scale {
        Ok(scale) => scale,
        Err(error) => {
            let message =
                format!("the HPA controller was unable to get the target's current scale: {error}");
            ctx.events
                .record(hpa.as_ref(), EventType::Warning, "FailedGetScale", &message);
            conditions.push(condition("AbleToScale", false, "FailedGetScale", message));
            write_status(&ctx, &hpa, status, conditions, &previous).await?;
            return Ok(Action::requeue(ctx.sync));
        }
    };
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let selector = scale
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    status.current_replicas = Some(current);
    let (desired, reason, limited) = if current == 0 && min != 0 {
        conditions.push(condition(
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
        ));
        (0, String::new(), Limit::None)
    } else if current > max {
        (
            max,
            "Current number of replicas above Spec.MaxReplicas".into(),
            Limit::None,
        )
    } else if current < min {
        (
            min,
            "Current number of replicas below Spec.MinReplicas".into(),
            Limit::None,
        )
    } else {
        let pods: Vec<Arc<Pod>> = {
            let selector = crate::api::selector::LabelSelector::parse(&selector)
                .map_err(|e| ControllerError::Invalid(e.to_string()))?;
            cached_in(&ctx.pods, &namespace)
                .await?
                .into_iter()
                .filter(|p| selector.matches(p.labels()))
                .collect()
        };
        let metrics: HashMap<String, PodMetrics> =
            Api::<PodMetrics>::namespaced(ctx.client.clone(), &namespace)
                .list(&ListParams::default().labels(&selector))
                .await
                .map(|list| {
                    list.items
                        .into_iter()
                        .map(|m| (m.metadata.name.clone().unwrap_or_default(), m))
                        .collect()
                })
                .unwrap_or_default();
        let mut best: Option<(i32, String)> = None;
        let mut measured = Vec::new();
        let mut failure = None;
        for metric in spec.metrics.iter().flatten() {
            let Some((source, goal)) = metric_target(metric) else {
                failure = Some((
                    "InvalidMetricSourceType",
                    format!(
                        "the HPA was unable to compute the replica count: metric source type {:?} is not supported",
                        metric.type_
                    ),
                ));
                continue;
            };
            let (samples, failed_reason): (Vec<PodSample>, &str) = match &source {
                Source::Resource(resource) => (
                    pods.iter()
                        .map(|p| {
                            let usage = resource_usage(metrics.get(&p.name_any()), resource);
                            sample(p, resource, usage)
                        })
                        .collect(),
                    "FailedGetResourceMetric",
                ),
                Source::Pods(metric) => {
                    match pods_metric(&ctx.client, &namespace, metric, &selector).await {
                        Ok(values) => (
                            pods.iter()
                                .map(|p| {
                                    sample(p, &metric.name, values.get(&p.name_any()).copied())
                                })
                                .collect(),
                            "FailedGetPodsMetric",
                        ),
                        Err(error) => {
                            failure = Some((
                                "FailedGetPodsMetric",
                                format!(
                                    "the HPA was unable to compute the replica count: unable to get metric {}: {error}",
                                    metric.name
                                ),
                            ));
                            continue;
                        }
                    }
                }
            };
            match replicas::recommend(current, &samples, source.name(), goal, now) {
                Ok(recommendation) => {
                    measured.push(source.status(&recommendation));
                    if best
                        .as_ref()
                        .is_none_or(|(r, _)| recommendation.replicas > *r)
                    {
                        best = Some((recommendation.replicas, source.described(goal)));
                    }
                }
                Err(error) => {
                    let what = match &source {
                        Source::Resource(resource) => format!("{resource} utilization"),
                        Source::Pods(metric) => format!("pods metric {}", metric.name),
                    };
                    failure = Some((
                        failed_reason,
                        format!(
                            "the HPA was unable to compute the replica count: failed to get {what}: {error}"
                        ),
                    ));
                }
            }
        }
        status.current_metrics = (!measured.is_empty()).then_some(measured);
        let Some((recommended, what)) = best else {
            let (why, message) = failure.unwrap_or((
                "FailedGetResourceMetric",
                "the HPA has no metrics to compute a replica count from".into(),
            ));
            ctx.events
                .record(hpa.as_ref(), EventType::Warning, why, &message);
            conditions.push(condition(
                "AbleToScale",
                true,
                "SucceededGetScale",
                "the HPA controller was able to get the target's current scale".into(),
            ));
            conditions.push(condition("ScalingActive", false, why, message));
            status.desired_replicas = current;
            write_status(&ctx, &hpa, status, conditions, &previous).await?;
            return Ok(Action::requeue(ctx.sync));
        };
        conditions.push(condition(
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!("the HPA was able to successfully calculate a replica count from {what}"),
        ));
        let reason = if recommended > current {
            format!("{what} above target")
        } else {
            "All metrics below target".into()
        };
        let mut histories = ctx
            .histories
            .lock()
            .map_err(|_| ControllerError::NotReady)?;
        let history = histories.entry(key.clone()).or_default();
        let (desired, limited) = normalize::normalize(
            current,
            recommended,
            (min, max),
            spec.behavior.as_ref(),
            history,
            now.as_second(),
        );
        (desired, reason, limited)
    };
    if desired != current {
        let api = scalable
            .as_ref()
            .ok_or_else(|| ControllerError::Invalid("the target kind is not scalable".into()))?;
        let patch = serde_json::json!({"spec": {"replicas": desired}});
        api.patch_scale(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        ctx.events.record(
            hpa.as_ref(),
            EventType::Normal,
            "SuccessfulRescale",
            &format!("New size: {desired}; reason: {reason}"),
        );
        if let Ok(mut histories) = ctx.histories.lock() {
            normalize::record_scale(
                histories.entry(key).or_default(),
                current,
                desired,
                now.as_second(),
            );
        }
        status.last_scale_time = Some(Time(
            jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
        ));
        conditions.insert(
            0,
            condition(
                "AbleToScale",
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {desired}"),
            ),
        );
    } else {
        conditions.insert(
            0,
            condition(
                "AbleToScale",
                true,
                "ReadyForNewScale",
                "recommended size matches current size".into(),
            ),
        );
    }
    status.desired_replicas = desired;
    let limit = match limited {
        Limit::None => condition(
            "ScalingLimited",
            false,
            "DesiredWithinRange",
            "the desired count is within the acceptable range".into(),
        ),
        Limit::TooFewReplicas => condition(
            "ScalingLimited",
            true,
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count".into(),
        ),
        Limit::TooManyReplicas => condition(
            "ScalingLimited",
            true,
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count".into(),
        ),
        Limit::ScaleUpLimit => condition(
            "ScalingLimited",
            true,
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate".into(),
        ),
        Limit::ScaleDownLimit => condition(
            "ScalingLimited",
            true,
            "ScaleDownLimit",
            "the desired replica count is decreasing faster than the maximum scale rate".into(),
        ),
    };
    conditions.push(limit);
    write_status(&ctx, &hpa, status, conditions, &previous).await?;
    Ok(Action::requeue(ctx.sync))
}

/// Writes the status when it differs from the one stored.
async fn write_status(
    ctx: &Context,
    hpa: &HorizontalPodAutoscaler,
    mut status: HorizontalPodAutoscalerStatus,
    conditions: Vec<HorizontalPodAutoscalerCondition>,
    previous: &HorizontalPodAutoscalerStatus,
) -> Result<(), ControllerError> {
    status.conditions = Some(keep_transitions(
        conditions,
        previous.conditions.as_deref().unwrap_or_default(),
    ));
    if &status == previous {
        return Ok(());
    }
    let api = Api::<HorizontalPodAutoscaler>::namespaced(
        ctx.client.clone(),
        &hpa.namespace().unwrap_or_default(),
    );
    let patch = serde_json::json!({"status": status});
    api.patch_status(
        &hpa.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

fn error_policy(
    hpa: Arc<HorizontalPodAutoscaler>,
    error: &ControllerError,
    ctx: Arc<Context>,
) -> Action {
    tracing::warn!(hpa = %hpa.name_any(), namespace = ?hpa.namespace(), %error, "autoscaler sync failed");
    Action::requeue(ctx.sync.min(Duration::from_secs(5)))
}

/// Runs the autoscaler until the process ends, looking at every HPA each `sync` period.
pub async fn run(client: kube::Client, informers: &Informers, sync: Duration) {
    let hpas = Api::<HorizontalPodAutoscaler>::all(client.clone());
    let context = Arc::new(Context {
        events: Recorder::new(client.clone(), "horizontal-pod-autoscaler"),
        client,
        pods: informers.pods().cache(),
        sync,
        histories: Mutex::default(),
    });
    ControllerLoop::new(
        "horizontal-pod-autoscaler",
        hpas,
        watcher::Config::default(),
    )
    .run(reconcile, error_policy, context)
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_read_as_metrics_k8s_io_writes_them() {
        assert_eq!(window_of("5s"), Duration::from_secs(5));
        assert_eq!(window_of("1.5s"), Duration::from_millis(1500));
        assert_eq!(window_of("1m5s"), Duration::from_secs(65));
        assert_eq!(window_of("nonsense"), Duration::ZERO);
    }

    #[test]
    fn pods_metrics_are_read_with_their_target_and_series_selector() {
        let metric: MetricSpec = serde_json::from_value(serde_json::json!({
            "type": "Pods",
            "pods": {"metric": {"name": "http_requests_per_second",
                                "selector": {"matchLabels": {"code": "2xx"},
                                             "matchExpressions": [{"key": "path", "operator": "In", "values": ["/a", "/b"]},
                                                                  {"key": "debug", "operator": "DoesNotExist"}]}},
                     "target": {"type": "AverageValue", "averageValue": "1500m"}},
        }))
        .unwrap();
        let (source, target) = metric_target(&metric).unwrap();
        assert_eq!(target, Target::AverageValue(1500));
        assert_eq!(source.name(), "http_requests_per_second");
        let Source::Pods(identifier) = &source else {
            panic!("{source:?}")
        };
        assert_eq!(
            label_selector_text(identifier.selector.as_ref().unwrap()),
            "code=2xx,path in (/a,/b),!debug"
        );
        let status = source.status(&Recommendation {
            replicas: 4,
            utilization: None,
            average: 2500,
        });
        assert_eq!(status.type_, "Pods");
        assert_eq!(
            status.pods.unwrap().current.average_value,
            Some(Quantity("2500m".into()))
        );
        let object: MetricSpec = serde_json::from_value(serde_json::json!({
            "type": "Object",
            "object": {"metric": {"name": "hits"}, "describedObject": {"kind": "Service", "name": "web"},
                       "target": {"type": "Value", "value": "10"}},
        }))
        .unwrap();
        assert_eq!(metric_target(&object), None);
    }
}
