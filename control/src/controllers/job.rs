//! The Job controller: runs a Job's pods until `completions` of them succeed (at most `parallelism` at once),
//! retries failures with Kubernetes' exponential delay until `backoffLimit`, stops at `activeDeadlineSeconds`,
//! honours `suspend`, reports Complete or Failed, and deletes finished Jobs after `ttlSecondsAfterFinished`.

use super::controller_loop::ControllerLoop;
use super::pods::{self, is_active};
use super::{ControllerError, Expectations, cached_in, ownership, retry_after, write_status};
use crate::cache::Cache;
use crate::events::{EventType, Recorder};
use crate::informers::Informers;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// The longest delay before a failed Job's next pod (Kubernetes: 6 minutes).
const MAX_BACKOFF: Duration = Duration::from_secs(360);

struct Context {
    client: kube::Client,
    pods: Cache<Pod>,
    expectations: Expectations,
    events: Recorder,
    backoff: Duration,
}

/// How a Job's pods stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Pods running or about to.
    pub active: i32,
    /// Active pods that are ready.
    pub ready: i32,
    /// Pods that succeeded.
    pub succeeded: i32,
    /// Pods that failed.
    pub failed: i32,
    /// Container restarts of active pods (with restartPolicy OnFailure they count as failures).
    pub restarts: i32,
}

/// Counts the Job's pods; counts never go down (pods that finished may be deleted since).
pub fn counts(previous: Option<&JobStatus>, owned: &[&Pod]) -> Counts {
    let phase = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(owned.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let active: Vec<&&Pod> = owned.iter().filter(|p| is_active(p)).collect();
    Counts {
        active: i32::try_from(active.len()).unwrap_or(i32::MAX),
        ready: i32::try_from(active.iter().filter(|p| pods::is_ready(p)).count())
            .unwrap_or(i32::MAX),
        succeeded: count(&|p| phase(p) == "Succeeded")
            .max(previous.and_then(|s| s.succeeded).unwrap_or(0)),
        failed: count(&|p| phase(p) == "Failed").max(previous.and_then(|s| s.failed).unwrap_or(0)),
        restarts: active
            .iter()
            .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
            .flatten()
            .map(|c| c.restart_count)
            .sum(),
    }
}

/// Why a Job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Enough pods succeeded.
    Complete,
    /// More failures than backoffLimit.
    BackoffLimitExceeded,
    /// It ran longer than activeDeadlineSeconds.
    DeadlineExceeded,
}

/// What one sync of a Job should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// End the Job (and stop its active pods).
    End(Ending),
    /// Run this many pods at once.
    Run(i32),
}

/// Decides from the Job's spec, its counts and how long it has been active.
pub fn plan(job: &Job, counts: Counts, active_for: Duration) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let failures = counts.failed + if on_failure { counts.restarts } else { 0 };
    let complete = match spec.completions {
        Some(completions) => counts.succeeded >= completions,
        // A work queue: done once one pod succeeded and none is still at work.
        None => counts.succeeded > 0 && counts.active == 0,
    };
    if complete {
        return Plan::End(Ending::Complete);
    }
    if failures > spec.backoff_limit.unwrap_or(6) {
        return Plan::End(Ending::BackoffLimitExceeded);
    }
    if spec
        .active_deadline_seconds
        .is_some_and(|s| active_for.as_secs() >= s.max(0).unsigned_abs())
    {
        return Plan::End(Ending::DeadlineExceeded);
    }
    if spec.suspend == Some(true) {
        return Plan::Run(0);
    }
    Plan::Run(match spec.completions {
        Some(completions) => parallelism.min(completions - counts.succeeded),
        None if counts.succeeded > 0 => counts.active.min(parallelism),
        None => parallelism,
    })
}

/// Kubernetes' delay before the pod after the `failures`-th failure: `base`, doubling, at most 6 minutes.
pub fn backoff_delay(base: Duration, failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(failures - 1).unwrap_or(0).min(20);
    (base * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// The condition that ended the Job (Complete or Failed, true), if it has ended.
pub fn finished(job: &Job) -> Option<&JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn condition(kind: &str, reason: &str, message: &str, now: jiff::Timestamp) -> JobCondition {
    JobCondition {
        type_: kind.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// When the most recent failed pod ended.
fn last_failure(owned: &[&Pod]) -> Option<jiff::Timestamp> {
    owned
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter_map(|c| {
            c.state
                .as_ref()?
                .terminated
                .as_ref()?
                .finished_at
                .as_ref()
                .map(|t| t.0)
        })
        .max()
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let namespace = job.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let now = jiff::Timestamp::now();
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if let Some(done) = finished(&job) {
        // A finished Job goes ttlSecondsAfterFinished after it ended.
        let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
            return Ok(Action::await_change());
        };
        let ended = done.last_transition_time.as_ref().map_or(now, |t| t.0);
        let left = ended.as_second() + i64::from(ttl) - now.as_second();
        if left > 0 {
            return Ok(Action::requeue(Duration::from_secs(left.unsigned_abs())));
        }
        match jobs
            .delete(&job.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {
                tracing::info!(job = %job.name_any(), namespace = %namespace, "deleted after its ttl")
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
        return Ok(Action::await_change());
    }
    let key = format!("{namespace}/{}", job.name_any());
    let candidates = cached_in(&ctx.pods, &namespace).await?;
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = job
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    if !ownership::selector_usable(job.as_ref(), &selector, &ctx.events).await {
        return Ok(Action::await_change());
    }
    let owned = ownership::claim(
        &pod_api,
        job.as_ref(),
        &selector,
        candidates.clone(),
        is_active,
    )
    .await;
    let owned: Vec<&Pod> = owned.iter().map(AsRef::as_ref).collect();
    let previous = job.status.as_ref();
    let counts = counts(previous, &owned);
    let suspended = job.spec.as_ref().and_then(|s| s.suspend) == Some(true);
    let start_time = previous
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0)
        .or((!suspended).then_some(now));
    let active_for = start_time.map_or(Duration::ZERO, |s| {
        Duration::from_secs((now.as_second() - s.as_second()).max(0).unsigned_abs())
    });
    let mut status = JobStatus {
        active: Some(counts.active),
        ready: Some(counts.ready),
        succeeded: Some(counts.succeeded),
        failed: Some(counts.failed),
        start_time: start_time.map(Time),
        completion_time: previous.and_then(|s| s.completion_time.clone()),
        conditions: previous.and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let control = pods::PodControl {
        api: &pod_api,
        owner: job.as_ref(),
        key: &key,
        expectations: &ctx.expectations,
        events: &ctx.events,
    };
    let active_names: Vec<String> = owned
        .iter()
        .filter(|p| is_active(p))
        .map(|p| p.name_any())
        .collect();
    let mut requeue = None;
    match plan(&job, counts, active_for) {
        Plan::End(ending) => {
            control.delete(&active_names).await?;
            let (conditions, event): (Vec<JobCondition>, (EventType, &str, &str)) = match ending {
                Ending::Complete => {
                    status.completion_time = Some(Time(now));
                    let message = "Reached expected number of succeeded pods";
                    (
                        vec![
                            condition("SuccessCriteriaMet", "CompletionsReached", message, now),
                            condition("Complete", "CompletionsReached", message, now),
                        ],
                        (EventType::Normal, "Completed", "Job completed"),
                    )
                }
                Ending::BackoffLimitExceeded => {
                    let message = "Job has reached the specified backoff limit";
                    (
                        vec![
                            condition("FailureTarget", "BackoffLimitExceeded", message, now),
                            condition("Failed", "BackoffLimitExceeded", message, now),
                        ],
                        (EventType::Warning, "BackoffLimitExceeded", message),
                    )
                }
                Ending::DeadlineExceeded => {
                    let message = "Job was active longer than specified deadline";
                    (
                        vec![
                            condition("FailureTarget", "DeadlineExceeded", message, now),
                            condition("Failed", "DeadlineExceeded", message, now),
                        ],
                        (EventType::Warning, "DeadlineExceeded", message),
                    )
                }
            };
            status.active = Some(0);
            status.ready = Some(0);
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .extend(conditions);
            ctx.events.record(job.as_ref(), event.0, event.1, event.2);
            tracing::info!(job = %job.name_any(), namespace = %namespace, ?ending, "job ended");
        }
        Plan::Run(want) if ctx.expectations.satisfied(&key, &candidates) => {
            let active = i32::try_from(active_names.len()).unwrap_or(i32::MAX);
            if want > active {
                let wait = last_failure(&owned).map_or(Duration::ZERO, |at| {
                    let due = at.as_millisecond()
                        + i64::try_from(backoff_delay(ctx.backoff, counts.failed).as_millis())
                            .unwrap_or(i64::MAX);
                    Duration::from_millis((due - now.as_millisecond()).max(0).unsigned_abs())
                });
                if wait.is_zero() {
                    let template = job.spec.as_ref().map(|s| &s.template);
                    let count = usize::try_from(want - active).unwrap_or(0);
                    control.create(template, count).await?;
                } else {
                    requeue = Some(wait);
                }
            } else if want < active {
                let mut ranked: Vec<&Pod> =
                    owned.iter().copied().filter(|p| is_active(p)).collect();
                ranked.sort_by(|a, b| pods::deletion_order(a, b));
                let surplus: Vec<String> = ranked
                    .iter()
                    .take(usize::try_from(active - want).unwrap_or(0))
                    .map(|p| p.name_any())
                    .collect();
                control.delete(&surplus).await?;
            }
        }
        Plan::Run(_) => {}
    }
    write_status(&jobs, &job.name_any(), previous, &status).await?;
    // Wake up for the deadline too.
    let deadline = job
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .map(|s| Duration::from_secs(s.max(0).unsigned_abs()).saturating_sub(active_for));
    Ok(match requeue.into_iter().chain(deadline).min() {
        Some(delay) => Action::requeue(delay + Duration::from_millis(100)),
        None => Action::await_change(),
    })
}

fn error_policy(job: Arc<Job>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(job = %job.name_any(), namespace = ?job.namespace(), %error, "job sync failed");
    retry_after(error)
}

/// Runs the controller until the process ends; `backoff` is the first delay after a failed pod.
pub async fn run(client: kube::Client, informers: &Informers, backoff: Duration) {
    let (pods, pod_changes) = informers.pods().follow();
    let controller = ControllerLoop::new(
        "job",
        Api::<Job>::all(client.clone()),
        watcher::Config::default(),
    );
    let jobs = controller.store();
    let ctx = Arc::new(Context {
        events: Recorder::new(client.clone(), "job-controller"),
        client,
        pods,
        expectations: Expectations::default(),
        backoff,
    });
    let controller = controller.watches_shared_stream(pod_changes, move |pod| {
        ownership::owners_of(pod.as_ref(), &jobs, |job: &Job| {
            job.spec.as_ref().and_then(|s| s.selector.as_ref())
        })
    });
    controller.run(reconcile, error_policy, ctx).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(spec: serde_json::Value) -> Job {
        let mut spec = spec;
        spec["template"] = json!({"spec": {"restartPolicy": "Never", "containers": []}});
        serde_json::from_value(json!({"metadata": {"name": "j"}, "spec": spec})).unwrap()
    }

    fn at(active: i32, succeeded: i32, failed: i32) -> Counts {
        Counts {
            active,
            ready: 0,
            succeeded,
            failed,
            restarts: 0,
        }
    }

    #[test]
    fn a_job_runs_parallel_pods_until_enough_succeed() {
        let j = job(json!({"completions": 5, "parallelism": 2, "backoffLimit": 6}));
        assert_eq!(plan(&j, at(0, 0, 0), Duration::ZERO), Plan::Run(2));
        // 4 done: only one more is needed.
        assert_eq!(plan(&j, at(1, 4, 0), Duration::ZERO), Plan::Run(1));
        assert_eq!(
            plan(&j, at(0, 5, 0), Duration::ZERO),
            Plan::End(Ending::Complete)
        );
    }

    #[test]
    fn failures_past_the_backoff_limit_or_the_deadline_end_the_job() {
        let j = job(
            json!({"completions": 1, "parallelism": 1, "backoffLimit": 2, "activeDeadlineSeconds": 60}),
        );
        assert_eq!(plan(&j, at(1, 0, 2), Duration::ZERO), Plan::Run(1));
        assert_eq!(
            plan(&j, at(0, 0, 3), Duration::ZERO),
            Plan::End(Ending::BackoffLimitExceeded)
        );
        assert_eq!(
            plan(&j, at(1, 0, 0), Duration::from_secs(60)),
            Plan::End(Ending::DeadlineExceeded)
        );
        let suspended = job(json!({"completions": 1, "parallelism": 1, "suspend": true}));
        assert_eq!(plan(&suspended, at(1, 0, 0), Duration::ZERO), Plan::Run(0));
    }

    #[test]
    fn a_work_queue_job_is_done_when_one_succeeded_and_none_is_active() {
        let j = job(json!({"parallelism": 3}));
        assert_eq!(plan(&j, at(0, 0, 0), Duration::ZERO), Plan::Run(3));
        assert_eq!(plan(&j, at(2, 1, 0), Duration::ZERO), Plan::Run(2));
        assert_eq!(
            plan(&j, at(0, 1, 0), Duration::ZERO),
            Plan::End(Ending::Complete)
        );
    }

    #[test]
    fn the_retry_delay_doubles_from_the_base_up_to_six_minutes() {
        let base = Duration::from_secs(10);
        assert_eq!(backoff_delay(base, 0), Duration::ZERO);
        assert_eq!(backoff_delay(base, 1), Duration::from_secs(10));
        assert_eq!(backoff_delay(base, 3), Duration::from_secs(40));
        assert_eq!(backoff_delay(base, 12), Duration::from_secs(360));
    }
}
