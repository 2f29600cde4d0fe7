//! What controllers need to know about pods: active, ready and available, and the order in which surplus pods
//! go.

use super::Expectations;
use super::ownership::controller_reference;
use crate::events::{EventType, Recorder};
use futures::future::join_all;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use std::cmp::Ordering;

/// The most pods created at once; creation starts with one and doubles while it succeeds (Kubernetes' slow
/// start), so a template that cannot work fails once, not a hundred times.
const MAX_BURST: usize = 64;

/// A pod from an owner's template, named `<owner>-<random>` and controlled by the owner.
pub fn from_template<O: Resource<DynamicType = ()>>(
    owner: &O,
    template: Option<&PodTemplateSpec>,
) -> Pod {
    let template = template.cloned().unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.name_any())),
            namespace: owner.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![controller_reference(owner)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Creates and deletes one owner's pods: remembers them as expectations (under `key`) and records the events
/// `describe` shows (SuccessfulCreate, FailedCreate, SuccessfulDelete).
pub struct PodControl<'a, O> {
    /// The pods of the owner's namespace.
    pub api: &'a Api<Pod>,
    /// The owner.
    pub owner: &'a O,
    /// The owner's expectations key.
    pub key: &'a str,
    /// The controller's expectations.
    pub expectations: &'a Expectations,
    /// The controller's event recorder.
    pub events: &'a Recorder,
}

impl<O: Resource<DynamicType = ()>> PodControl<'_, O> {
    /// Creates `count` pods from the owner's template.
    pub async fn create(
        &self,
        template: Option<&PodTemplateSpec>,
        count: usize,
    ) -> Result<(), kube::Error> {
        self.create_copies(&from_template(self.owner, template), count)
            .await
    }

    /// Creates `count` copies of a pod made for the owner.
    pub async fn create_copies(&self, pod: &Pod, count: usize) -> Result<(), kube::Error> {
        let (created, error) = create(self.api, pod, count).await;
        self.expectations.expect_created(self.key, created.clone());
        if !created.is_empty() {
            let message = format!("Created pod: {}", created.join(", "));
            self.events
                .record(self.owner, EventType::Normal, "SuccessfulCreate", &message);
        }
        match error {
            Some(error) => {
                let message = format!("Error creating: {error}");
                self.events
                    .record(self.owner, EventType::Warning, "FailedCreate", &message);
                Err(error)
            }
            None => Ok(()),
        }
    }

    /// Deletes pods by name (gracefully); ones already gone are fine.
    pub async fn delete(&self, names: &[String]) -> Result<(), kube::Error> {
        if names.is_empty() {
            return Ok(());
        }
        let params = DeleteParams::default();
        let results = join_all(names.iter().map(|n| self.api.delete(n, &params))).await;
        self.expectations.expect_deleted(self.key, names.to_vec());
        let message = format!("Deleted pod: {}", names.join(", "));
        self.events
            .record(self.owner, EventType::Normal, "SuccessfulDelete", &message);
        results.into_iter().try_for_each(|r| match r {
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            other => other.map(|_| ()),
        })
    }
}

/// Creates `count` copies of `pod` in doubling batches; returns the names created and the first error.
async fn create(api: &Api<Pod>, pod: &Pod, count: usize) -> (Vec<String>, Option<kube::Error>) {
    let (mut created, mut batch) = (Vec::new(), 1);
    while created.len() < count {
        let size = batch.min(count - created.len());
        let params = PostParams::default();
        let results = join_all((0..size).map(|_| api.create(&params, pod))).await;
        let mut failure = None;
        for result in results {
            match result {
                Ok(pod) => created.push(pod.name_any()),
                Err(error) => failure = Some(error),
            }
        }
        if failure.is_some() {
            return (created, failure);
        }
        batch = (batch * 2).min(MAX_BURST);
    }
    (created, None)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// A pod that counts toward its owner's replicas: not finished and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// When the pod's Ready condition became true, if it is ready.
pub fn ready_since(pod: &Pod) -> Option<jiff::Timestamp> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        condition
            .last_transition_time
            .as_ref()
            .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0),
    )
}

/// Whether the pod is ready.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Whether the pod has been ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    ready_since(pod).is_some_and(|since| {
        min_ready_seconds <= 0
            || now.as_second() - since.as_second() >= i64::from(min_ready_seconds)
    })
}

/// How long until a ready pod becomes available, if it is not yet.
pub fn until_available(
    pod: &Pod,
    min_ready_seconds: i32,
    now: jiff::Timestamp,
) -> Option<std::time::Duration> {
    let since = ready_since(pod)?;
    let left = i64::from(min_ready_seconds) - (now.as_second() - since.as_second());
    (left > 0).then(|| std::time::Duration::from_secs(left.unsigned_abs()))
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

/// Kubernetes' order for scaling down (the kube-controller-manager's `ActivePods` sort): pods that cost least to
/// lose come first: unscheduled before scheduled, Pending before Running, not ready before ready, recently
/// ready before long ready, more restarts before fewer, newer before older.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let scheduled = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    let phase_rank = |p: &Pod| match phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    scheduled(a)
        .cmp(&scheduled(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(is_ready(a).cmp(&is_ready(b)))
        .then(ready_since(b).cmp(&ready_since(a)))
        .then(restarts(b).cmp(&restarts(a)))
        .then(created(b).cmp(&created(a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn surplus_pods_go_unscheduled_first_then_not_ready_then_newest() {
        let unscheduled = pod(json!({"metadata": {"name": "u"}, "spec": {"containers": []}}));
        let pending = pod(
            json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n", "containers": []},
            "status": {"phase": "Pending"}}),
        );
        let ready_old = pod(
            json!({"metadata": {"name": "old", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "n", "containers": []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:10Z"}]}}),
        );
        let ready_new = pod(
            json!({"metadata": {"name": "new", "creationTimestamp": "2026-01-02T00:00:00Z"},
            "spec": {"nodeName": "n", "containers": []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-02T00:00:10Z"}]}}),
        );
        let mut pods = [&ready_old, &ready_new, &pending, &unscheduled];
        pods.sort_by(|a, b| deletion_order(a, b));
        let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["u", "p", "new", "old"]);
    }

    #[test]
    fn a_pod_is_available_once_ready_for_min_ready_seconds() {
        let ready = pod(
            json!({"metadata": {"name": "r"}, "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}),
        );
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        assert!(is_available(&ready, 0, at("2026-01-01T00:00:00Z")));
        assert!(!is_available(&ready, 10, at("2026-01-01T00:00:05Z")));
        assert_eq!(
            until_available(&ready, 10, at("2026-01-01T00:00:05Z")),
            Some(std::time::Duration::from_secs(5))
        );
        assert!(is_available(&ready, 10, at("2026-01-01T00:00:10Z")));
    }
}
