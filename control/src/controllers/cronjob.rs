//! The CronJob controller: creates a Job from the template at every time the schedule names (in `timeZone`,
//! UTC by default), following concurrencyPolicy (Allow, Forbid, Replace), startingDeadlineSeconds, suspend,
//! and keeps successfulJobsHistoryLimit / failedJobsHistoryLimit finished Jobs. Schedules are standard five-field
//! cron lines or `@hourly`-style names; a sixth, leading seconds field is accepted as a wasmkube extension.

use super::controller_loop::ControllerLoop;
use super::ownership::controller_reference;
use super::{ControllerError, reflect, retry_after, write_status};
use crate::api::schedule::{MAX_MISSED, Schedule};
use crate::cache::Cache;
use crate::events::{EventType, Recorder};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

struct Context {
    client: kube::Client,
    jobs: Cache<Job>,
    events: Recorder,
}

fn finished(job: &Job) -> Option<(&str, jiff::Timestamp)> {
    let condition = job
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    let at = condition
        .last_transition_time
        .as_ref()
        .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0);
    Some((condition.type_.as_str(), at))
}

/// The Job for one scheduled time: `<cronjob>-<minutes since the epoch>` (seconds with a seconds schedule).
fn job_for(cronjob: &CronJob, at: jiff::Timestamp) -> Job {
    let template = cronjob.spec.job_template.clone();
    let meta = template.metadata.unwrap_or_default();
    let suffix = if at.as_second() % 60 == 0 {
        at.as_second() / 60
    } else {
        at.as_second()
    };
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        "batch.kubernetes.io/cronjob-scheduled-timestamp".into(),
        at.to_string(),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(format!("{}-{suffix}", cronjob.name_any())),
            namespace: cronjob.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_reference(cronjob)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

async fn reconcile(cronjob: Arc<CronJob>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    if cronjob.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = cronjob.namespace().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = cronjob.uid().unwrap_or_default();
    let owned: Vec<Arc<Job>> = super::cached_in(&ctx.jobs, &namespace)
        .await?
        .into_iter()
        .filter(|j| super::ownership::controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    let spec = &cronjob.spec;
    let schedule = match Schedule::new(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(schedule) => schedule,
        Err(message) => {
            ctx.events.record(
                cronjob.as_ref(),
                EventType::Warning,
                "UnparseableSchedule",
                &message,
            );
            return Ok(Action::await_change());
        }
    };
    // History: the oldest finished Jobs beyond the limits go.
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let mut done: Vec<(jiff::Timestamp, &Arc<Job>)> = owned
            .iter()
            .filter_map(|j| {
                finished(j)
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, at)| (at, j))
            })
            .collect();
        done.sort_by_key(|(at, _)| *at);
        let surplus = done
            .len()
            .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        for (_, job) in done.iter().take(surplus) {
            match jobs_api
                .delete(&job.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    let mut active: Vec<Arc<Job>> = owned
        .iter()
        .filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    let previous = cronjob.status.clone().unwrap_or_default();
    let mut status = CronJobStatus {
        last_schedule_time: previous.last_schedule_time.clone(),
        last_successful_time: owned
            .iter()
            .filter_map(|j| {
                finished(j)
                    .filter(|(k, _)| *k == "Complete")
                    .map(|(_, at)| at)
            })
            .max()
            .map(Time)
            .or(previous.last_successful_time.clone()),
        active: None,
    };
    let now = jiff::Timestamp::now();
    if spec.suspend != Some(true) {
        let since = previous
            .last_schedule_time
            .as_ref()
            .or(cronjob.metadata.creation_timestamp.as_ref())
            .map_or(now, |t| t.0);
        let (due, missed) = schedule.latest_due(since, now);
        if missed > MAX_MISSED {
            ctx.events.record(
                cronjob.as_ref(),
                EventType::Warning,
                "TooManyMissedTimes",
                "too many missed start times; starting the latest",
            );
        }
        let too_late = |at: jiff::Timestamp| {
            spec.starting_deadline_seconds
                .is_some_and(|d| now.as_second() - at.as_second() > d)
        };
        if let Some(at) = due.filter(|at| !too_late(*at)) {
            let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
            let blocked = policy == "Forbid" && !active.is_empty();
            if !blocked {
                if policy == "Replace" {
                    for job in active.drain(..) {
                        match jobs_api
                            .delete(&job.name_any(), &DeleteParams::background())
                            .await
                        {
                            Ok(_) => ctx.events.record(
                                cronjob.as_ref(),
                                EventType::Normal,
                                "SuccessfulDelete",
                                &format!("Deleted job {}", job.name_any()),
                            ),
                            Err(kube::Error::Api(status)) if status.code == 404 => {}
                            Err(error) => return Err(error.into()),
                        }
                    }
                }
                let job = job_for(&cronjob, at);
                match jobs_api.create(&PostParams::default(), &job).await {
                    Ok(created) => {
                        ctx.events.record(
                            cronjob.as_ref(),
                            EventType::Normal,
                            "SuccessfulCreate",
                            &format!("Created job {}", created.name_any()),
                        );
                        active.push(Arc::new(created));
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(error) => return Err(error.into()),
                }
                status.last_schedule_time = Some(Time(at));
            }
        }
    }
    let references: Vec<ObjectReference> = active.iter().map(|j| reference(j)).collect();
    status.active = (!references.is_empty()).then_some(references);
    let cronjobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &namespace);
    write_status(
        &cronjobs,
        &cronjob.name_any(),
        cronjob.status.as_ref(),
        &status,
    )
    .await?;
    // Wake up at the next scheduled time.
    Ok(match schedule.next_after(now) {
        Some(next) => Action::requeue(
            Duration::from_millis(
                (next.as_millisecond() - now.as_millisecond())
                    .max(0)
                    .unsigned_abs(),
            ) + Duration::from_millis(50),
        ),
        None => Action::await_change(),
    })
}

fn error_policy(cronjob: Arc<CronJob>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(cronjob = %cronjob.name_any(), namespace = ?cronjob.namespace(), %error, "cronjob sync failed");
    retry_after(error)
}

/// Runs the controller until the process ends.
pub async fn run(client: kube::Client) {
    let (jobs, job_changes) = reflect(Api::<Job>::all(client.clone()));
    let controller = ControllerLoop::new(
        "cronjob",
        Api::<CronJob>::all(client.clone()),
        watcher::Config::default(),
    );
    let ctx = Arc::new(Context {
        events: Recorder::new(client.clone(), "cronjob-controller"),
        client,
        jobs,
    });
    let controller = controller.watches_stream(job_changes, |job: Job| {
        let namespace = job.namespace().unwrap_or_default();
        super::ownership::controller_of(&job.metadata)
            .filter(|r| r.kind == "CronJob")
            .map(|r| ObjectRef::new(&r.name).within(&namespace))
    });
    controller.run(reconcile, error_policy, ctx).await;
}
