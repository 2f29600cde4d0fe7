//! custom.metrics.k8s.io/v1beta2, served by the apiserver itself (in Kubernetes, a metrics adapter such as
//! prometheus-adapter behind the aggregation layer): one metric of pods, [`HTTP_REQUESTS_PER_SECOND`], the rate
//! of HTTP requests each pod answered between its node's two newest summaries (the readings behind
//! metrics.k8s.io). The HorizontalPodAutoscaler's `Pods` metrics read it.

use super::error::ApiError;
use super::{ApiServer, json};
use crate::api::request_info::ResourcePath;
use crate::api::resources;
use crate::api::selector::LabelSelector;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use wasmkube_core::quantity::milli_text;

/// The group.
pub const GROUP: &str = "custom.metrics.k8s.io";
/// The version served.
pub const VERSION: &str = "v1beta2";
/// The metric: HTTP requests a pod answered per second.
pub const HTTP_REQUESTS_PER_SECOND: &str = "http_requests_per_second";

/// The group as `/apis` lists it.
pub fn group_object() -> Value {
    let version = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"name": GROUP, "versions": [version], "preferredVersion": version})
}

/// `GET /apis/custom.metrics.k8s.io/v1beta2`: the metrics served, as resources `pods/METRIC`.
pub fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [{
            "name": format!("pods/{HTTP_REQUESTS_PER_SECOND}"), "singularName": "", "namespaced": true,
            "kind": "MetricValueList", "verbs": ["get"],
        }],
    })
}

/// A rate as a quantity to the thousandth (`2`, `1500m`).
fn quantity(value: f64) -> String {
    milli_text((value * 1000.0).round() as i64)
}

fn not_found(what: &str) -> ApiError {
    ApiError::NotFound {
        resource: format!("{HTTP_REQUESTS_PER_SECOND}.{GROUP}"),
        name: what.to_owned(),
    }
}

impl ApiServer {
    /// `GET /apis/custom.metrics.k8s.io/v1beta2/namespaces/NS/pods/NAME|*/METRIC`: the MetricValueList of
    /// the pod named, or of every pod the query's labelSelector picks.
    pub(super) fn custom_metrics(
        &self,
        method: &Method,
        path: &ResourcePath,
        raw_query: &str,
    ) -> Response {
        if method != Method::GET {
            return ApiError::MethodNotAllowed.into_response();
        }
        let (Some(namespace), "pods", Some(name), Some(metric)) = (
            path.namespace.as_deref(),
            path.resource.as_str(),
            path.name.as_deref(),
            path.subresource.as_deref(),
        ) else {
            return ApiError::PathNotFound.into_response();
        };
        let query: HashMap<String, String> =
            serde_urlencoded::from_str(raw_query).unwrap_or_default();
        let selector = |key: &str| query.get(key).map_or("", String::as_str);
        match self.metric_values(
            namespace,
            name,
            metric,
            selector("labelSelector"),
            selector("metricLabelSelector"),
        ) {
            Ok(list) => json(StatusCode::OK, list),
            Err(error) => error.into_response(),
        }
    }

    fn metric_values(
        &self,
        namespace: &str,
        name: &str,
        metric: &str,
        label_selector: &str,
        metric_label_selector: &str,
    ) -> Result<Value, ApiError> {
        if metric != HTTP_REQUESTS_PER_SECOND {
            return Err(not_found(metric));
        }
        let pods = LabelSelector::parse(label_selector)
            .map_err(|e| ApiError::BadRequest(format!("unable to parse labelSelector: {e}")))?;
        // The metric has no labels: a metric selector that requires one matches nothing.
        let metric_labels = LabelSelector::parse(metric_label_selector).map_err(|e| {
            ApiError::BadRequest(format!("unable to parse metricLabelSelector: {e}"))
        })?;
        let pod_type = resources::by_path("", "v1", "pods")
            .ok_or_else(|| ApiError::Internal("pods are not served".into()))?;
        let picked: HashMap<String, String> = self
            .list_of::<Pod>(pod_type, Some(namespace))?
            .into_iter()
            .filter(|p| name == "*" || p.metadata.name.as_deref() == Some(name))
            .filter(|p| pods.matches(p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
            .filter_map(|p| Some((p.metadata.uid?, p.metadata.name?)))
            .collect();
        let mut items: Vec<Value> = if metric_labels.matches(&BTreeMap::new()) {
            self.request_rates()?
                .into_iter()
                .filter(|(pod, _)| picked.get(&pod.uid) == Some(&pod.name))
                .map(|(pod, rate)| {
                    json!({
                        "describedObject": {"kind": "Pod", "namespace": namespace, "name": pod.name, "apiVersion": "/v1"},
                        "metric": {"name": metric},
                        "timestamp": rate.timestamp.to_string(),
                        "windowSeconds": rate.window.as_secs().max(1),
                        "value": quantity(rate.per_second),
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        if name != "*" && items.is_empty() {
            return Err(not_found(&format!("{namespace}/{name}")));
        }
        items.sort_by(|a, b| {
            a["describedObject"]["name"]
                .as_str()
                .cmp(&b["describedObject"]["name"].as_str())
        });
        Ok(json!({
            "kind": "MetricValueList", "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {},
            "items": items,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quantities_to_the_thousandth() {
        assert_eq!(quantity(2.0), "2");
        assert_eq!(quantity(1.5), "1500m");
        assert_eq!(quantity(0.0004), "0");
        assert_eq!(quantity(0.0126), "13m");
    }
}
