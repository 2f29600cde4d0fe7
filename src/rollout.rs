//! `scale` and `rollout` (status, history, undo, restart, pause, resume), as kubectl does them for Deployments;
//! `rollout status` also follows DaemonSets and StatefulSets.

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use std::time::{Duration, Instant};
use wasmkube_control::api::resources;
use wasmkube_control::controllers::rollout::{REVISION_ANNOTATION, without_hash};

/// `scale` arguments.
#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// `KIND/NAME`, or a kind followed by names.
    pub target: Vec<String>,
    /// The number of replicas wanted.
    #[arg(long)]
    pub replicas: i32,
}

/// `rollout` arguments.
#[derive(clap::Args, Debug)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub action: RolloutAction,
}

/// What `rollout` does.
#[derive(clap::Subcommand, Debug)]
pub enum RolloutAction {
    /// Wait until the rollout of a Deployment, DaemonSet or StatefulSet is done.
    Status {
        /// `KIND/NAME` or `KIND NAME`.
        target: Vec<String>,
        /// Give up after this long (e.g. 90s, 5m); 0 waits forever.
        #[arg(long, default_value = "0s")]
        timeout: String,
    },
    /// List the revisions.
    History {
        /// `deployment/NAME` or `deployment NAME`.
        target: Vec<String>,
    },
    /// Go back to the previous revision (or `--to-revision`).
    Undo {
        /// `deployment/NAME` or `deployment NAME`.
        target: Vec<String>,
        /// The revision to go back to; 0 is the previous one.
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
    /// Replace every pod, one rollout step at a time.
    Restart {
        /// `deployment/NAME` or `deployment NAME`.
        target: Vec<String>,
    },
    /// Stop rolling out template changes.
    Pause {
        /// `deployment/NAME` or `deployment NAME`.
        target: Vec<String>,
    },
    /// Roll out template changes again.
    Resume {
        /// `deployment/NAME` or `deployment NAME`.
        target: Vec<String>,
    },
}

/// Splits `kind/name` or `kind name` into the resource type and the name.
fn target(words: &[String]) -> anyhow::Result<(&'static resources::ResourceType, String)> {
    let (kind, name) = match words {
        [one] => one
            .split_once('/')
            .map(|(k, n)| (k.to_owned(), n.to_owned()))
            .ok_or_else(|| anyhow!("expected KIND/NAME or KIND NAME, got {one:?}"))?,
        [kind, name] => (kind.clone(), name.clone()),
        _ => bail!("expected KIND/NAME or KIND NAME"),
    };
    let resource = resources::by_user_name(&kind)
        .ok_or_else(|| anyhow!("the server doesn't have a resource type {kind:?}"))?;
    Ok((resource, name))
}

/// The target, which must be a Deployment.
fn deployment(words: &[String]) -> anyhow::Result<String> {
    let (resource, name) = target(words)?;
    if resource.kind != "Deployment" {
        bail!("rollout supports deployments only, not {}", resource.plural);
    }
    Ok(name)
}

fn api_error(error: kube::Error) -> anyhow::Error {
    match error {
        kube::Error::Api(status) => anyhow!("{}", status.message),
        other => anyhow!(other),
    }
}

/// `wasmkube scale`.
pub async fn scale(client: kube::Client, namespace: &str, args: ScaleArgs) -> anyhow::Result<()> {
    let (resource, name) = target(&args.target)?;
    if !resource
        .subresources
        .contains(&resources::Subresource::Scale)
    {
        bail!("{} cannot be scaled", resource.plural);
    }
    if args.replicas < 0 {
        bail!("--replicas must not be negative");
    }
    let group = if resource.group.is_empty() {
        String::new()
    } else {
        format!("{}/", resource.group)
    };
    let base = if resource.group.is_empty() {
        "/api".to_owned()
    } else {
        "/apis".to_owned()
    };
    let path = format!(
        "{base}/{group}{}/namespaces/{namespace}/{}/{name}/scale",
        resource.version, resource.plural
    );
    let body = json!({"spec": {"replicas": args.replicas}})
        .to_string()
        .into_bytes();
    let request = http::Request::patch(path)
        .header(http::header::CONTENT_TYPE, "application/merge-patch+json")
        .body(body)?;
    client
        .request::<serde_json::Value>(request)
        .await
        .map_err(api_error)?;
    println!("{}/{name} scaled", display(resource));
    Ok(())
}

fn display(resource: &resources::ResourceType) -> String {
    if resource.group.is_empty() {
        resource.kind.to_ascii_lowercase()
    } else {
        format!("{}.{}", resource.kind.to_ascii_lowercase(), resource.group)
    }
}

/// kubectl's verdict on a Deployment's rollout: a message, and whether it is done.
pub fn rollout_state(deployment: &Deployment) -> anyhow::Result<(String, bool)> {
    let name = deployment.name_any();
    let status = deployment.status.clone().unwrap_or_default();
    if deployment.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0) {
        return Ok((
            "Waiting for deployment spec update to be observed...".into(),
            false,
        ));
    }
    let timed_out = status.conditions.iter().flatten().any(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if timed_out {
        bail!("deployment {name:?} exceeded its progress deadline");
    }
    let desired = deployment.spec.replicas.unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    Ok(if updated < desired {
        (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {updated} out of {desired} new replicas have been updated..."
            ),
            false,
        )
    } else if replicas > updated {
        (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                replicas - updated
            ),
            false,
        )
    } else if available < updated {
        (
            format!(
                "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
            ),
            false,
        )
    } else {
        (format!("deployment {name:?} successfully rolled out"), true)
    })
}

/// kubectl's verdict on a DaemonSet's rollout.
pub fn daemonset_state(set: &DaemonSet) -> anyhow::Result<(String, bool)> {
    let name = set.name_any();
    if set
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        == Some("OnDelete")
    {
        bail!("rollout status is only available for RollingUpdate strategy type");
    }
    let status = set.status.clone().unwrap_or_default();
    if set.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0) {
        return Ok((
            "Waiting for daemon set spec update to be observed...".into(),
            false,
        ));
    }
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let available = status.number_available.unwrap_or(0);
    Ok(if updated < desired {
        (
            format!(
                "Waiting for daemon set {name:?} rollout to finish: {updated} out of {desired} new pods have been updated..."
            ),
            false,
        )
    } else if available < desired {
        (
            format!(
                "Waiting for daemon set {name:?} rollout to finish: {available} of {desired} updated pods are available..."
            ),
            false,
        )
    } else {
        (format!("daemon set {name:?} successfully rolled out"), true)
    })
}

/// Whether `apply --wait` waits for objects of this kind.
pub fn awaited(kind: &str) -> bool {
    matches!(
        kind,
        "Deployment" | "DaemonSet" | "StatefulSet" | "Pod" | "Job"
    )
}

/// Whether an object `apply --wait` waits for is ready, in words: kubectl's rollout status for Deployments,
/// DaemonSets and StatefulSets, the Ready condition (or success) for a Pod, the Complete condition for a Job;
/// an error when it never will be (a failed Pod or Job, a rollout past its deadline).
pub fn readiness(object: &serde_json::Value) -> anyhow::Result<(String, bool)> {
    match object["kind"].as_str().unwrap_or_default() {
        "Deployment" => rollout_state(&decoded(object)?),
        "DaemonSet" => daemonset_state(&decoded(object)?),
        "StatefulSet" => Ok(statefulset_state(&decoded(object)?)),
        "Pod" => pod_readiness(&decoded(object)?),
        "Job" => job_readiness(&decoded(object)?),
        _ => Ok((String::new(), true)),
    }
}

/// The object as its type, read from JSON text as the client reads its responses: the binary then compiles one
/// deserializer of each kind, not a second one from `serde_json::Value`.
fn decoded<K: serde::de::DeserializeOwned>(object: &serde_json::Value) -> anyhow::Result<K> {
    serde_json::from_str(&object.to_string()).context("the object cannot be read")
}

/// A Pod: ready, succeeded, failed, or what its containers wait for.
fn pod_readiness(pod: &Pod) -> anyhow::Result<(String, bool)> {
    let name = pod.name_any();
    let status = pod.status.clone().unwrap_or_default();
    match status.phase.as_deref() {
        Some("Succeeded") => return Ok((format!("pod {name:?} succeeded"), true)),
        Some("Failed") => bail!(
            "pod {name:?} failed{}",
            status.reason.map(|r| format!(": {r}")).unwrap_or_default()
        ),
        _ => {}
    }
    if wasmkube_control::controllers::pods::is_ready(pod) {
        return Ok((format!("pod {name:?} is ready"), true));
    }
    let waiting = status.container_statuses.iter().flatten().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        Some(match waiting.message.as_deref().filter(|m| !m.is_empty()) {
            Some(message) => format!("container {:?} is {reason}: {message}", c.name),
            None => format!("container {:?} is {reason}", c.name),
        })
    });
    let phase = status.phase.unwrap_or_else(|| "Pending".into());
    Ok(match waiting {
        Some(waiting) => (format!("Waiting for pod {name:?}: {waiting}"), false),
        None => (
            format!("Waiting for pod {name:?} to be ready ({phase})..."),
            false,
        ),
    })
}

/// A Job: complete, failed, or how many completions it has.
fn job_readiness(job: &Job) -> anyhow::Result<(String, bool)> {
    let name = job.name_any();
    match wasmkube_control::controllers::job::finished(job) {
        Some(ended) if ended.type_ == "Complete" => Ok((format!("job {name:?} complete"), true)),
        Some(ended) => bail!(
            "job {name:?} failed{}",
            ended
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        None => {
            let completions = job.spec.as_ref().and_then(|s| s.completions).unwrap_or(1);
            let succeeded = job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0);
            Ok((
                format!(
                    "Waiting for job {name:?} to complete: {succeeded} of {completions} succeeded..."
                ),
                false,
            ))
        }
    }
}

/// kubectl's verdict on a StatefulSet's rolling update.
pub fn statefulset_state(set: &StatefulSet) -> (String, bool) {
    let status = set.status.clone().unwrap_or_default();
    if set.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0) {
        return (
            "Waiting for statefulset spec update to be observed...".into(),
            false,
        );
    }
    let replicas = set.spec.replicas.unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0);
    if ready < replicas {
        return (
            format!("Waiting for {} pods to be ready...", replicas - ready),
            false,
        );
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let partition = set
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition);
    if let Some(partition) = partition {
        // As kubectl: with a partition, done once every ordinal at or above it runs the new revision.
        let wanted = replicas - partition;
        if updated < wanted {
            return (
                format!(
                    "Waiting for partitioned roll out to finish: {updated} out of {wanted} new pods have been updated..."
                ),
                false,
            );
        }
        return (
            format!("partitioned roll out complete: {updated} new pods have been updated..."),
            true,
        );
    }
    let revision = status.update_revision.clone().unwrap_or_default();
    if status.current_revision.as_deref() != Some(revision.as_str()) {
        let updated = status.updated_replicas.unwrap_or(0);
        return (
            format!(
                "waiting for statefulset rolling update to complete {updated} pods at revision {revision}..."
            ),
            false,
        );
    }
    (
        format!(
            "statefulset rolling update complete {} pods at revision {revision}...",
            status.current_replicas.unwrap_or(0)
        ),
        true,
    )
}

/// A duration as kubectl's and Kubernetes' flags write it: `15s`, `500ms`, `1m`, `2h` (a bare number is seconds).
pub(crate) fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let value: f64 = number
        .parse()
        .with_context(|| format!("invalid duration {text:?}"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => bail!("invalid duration {text:?}: use s, m or h"),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        bail!("invalid duration {text:?}");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The Deployment's ReplicaSets by revision, oldest first.
async fn revisions(
    client: &kube::Client,
    namespace: &str,
    deployment: &Deployment,
) -> anyhow::Result<Vec<(i64, ReplicaSet)>> {
    let uid = deployment.uid().unwrap_or_default();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let mut owned: Vec<(i64, ReplicaSet)> = sets
        .list(&ListParams::default())
        .await
        .map_err(api_error)?
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .map(|rs| {
            (
                rs.annotations()
                    .get(REVISION_ANNOTATION)
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0),
                rs,
            )
        })
        .collect();
    owned.sort_by_key(|(revision, _)| *revision);
    Ok(owned)
}

/// `wasmkube rollout ...`.
pub async fn rollout(
    client: kube::Client,
    namespace: &str,
    args: RolloutArgs,
) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let patch = |name: String, body: serde_json::Value, verb: &'static str| {
        let api = api.clone();
        async move {
            api.patch(&name, &PatchParams::default(), &Patch::Strategic(&body))
                .await
                .map_err(api_error)?;
            println!("deployment.apps/{name} {verb}");
            anyhow::Ok(())
        }
    };
    match args.action {
        RolloutAction::Status { target, timeout } => {
            let (resource, name) = self::target(&target)?;
            let limit = parse_duration(&timeout)?;
            let started = Instant::now();
            let mut last = String::new();
            loop {
                let (message, done) = match resource.kind {
                    "Deployment" => rollout_state(&api.get(&name).await.map_err(api_error)?)?,
                    "DaemonSet" => {
                        let sets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
                        daemonset_state(&sets.get(&name).await.map_err(api_error)?)?
                    }
                    "StatefulSet" => {
                        let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
                        statefulset_state(&sets.get(&name).await.map_err(api_error)?)
                    }
                    _ => bail!(
                        "rollout status supports deployments, daemonsets and statefulsets, not {}",
                        resource.plural
                    ),
                };
                if message != last {
                    println!("{message}");
                    last = message;
                }
                if done {
                    return Ok(());
                }
                if !limit.is_zero() && started.elapsed() > limit {
                    bail!("timed out waiting for the condition");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        RolloutAction::History { target } => {
            let name = deployment(&target)?;
            let current = api.get(&name).await.map_err(api_error)?;
            println!("deployment.apps/{name}");
            println!("{:<10}CHANGE-CAUSE", "REVISION");
            for (revision, rs) in revisions(&client, namespace, &current).await? {
                let cause = rs
                    .annotations()
                    .get("kubernetes.io/change-cause")
                    .cloned()
                    .unwrap_or_else(|| "<none>".into());
                println!("{revision:<10}{cause}");
            }
            Ok(())
        }
        RolloutAction::Undo {
            target,
            to_revision,
        } => {
            let name = deployment(&target)?;
            let current = api.get(&name).await.map_err(api_error)?;
            let history = revisions(&client, namespace, &current).await?;
            let chosen = if to_revision == 0 {
                history.iter().rev().nth(1)
            } else {
                history.iter().find(|(r, _)| *r == to_revision)
            };
            let (_, rs) = chosen.ok_or_else(|| match to_revision {
                0 => anyhow!("no rollout history found for deployment {name:?}"),
                r => anyhow!("unable to find specified revision {r} in history"),
            })?;
            let mut replaced = current.clone();
            replaced.spec.template = rs
                .spec
                .template
                .as_ref()
                .map(without_hash)
                .unwrap_or_default();
            api.replace(&name, &Default::default(), &replaced)
                .await
                .map_err(api_error)?;
            println!("deployment.apps/{name} rolled back");
            Ok(())
        }
        RolloutAction::Restart { target } => {
            let name = deployment(&target)?;
            let now = jiff::Timestamp::now().to_string();
            let body = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}});
            patch(name, body, "restarted").await
        }
        RolloutAction::Pause { target } => {
            patch(
                deployment(&target)?,
                json!({"spec": {"paused": true}}),
                "paused",
            )
            .await
        }
        RolloutAction::Resume { target } => {
            patch(
                deployment(&target)?,
                json!({"spec": {"paused": null}}),
                "resumed",
            )
            .await
        }
    }
}
