//! One pod on this node: its containers run as Wasm, restarted per the pod's policy with Kubernetes'
//! CrashLoopBackOff, and every change of their state written to the pod's status.

pub mod admission;
pub mod claims;
pub mod eviction;
pub mod images;
pub mod probes;
pub mod pull_secrets;
pub mod safe_path;
pub mod status;
pub mod token_refresh;

use crate::data_dir::{DataDir, PodDir};
use crate::logs::{ContainerLog, Stream};
use crate::network::services::{PodNames, ServiceView};
use crate::pod::probes::ProbeEvent;
use crate::pod::status::{Container, State};
use crate::runtime::http_serve::Serving;
use crate::runtime::{Mount, PodNetwork, RunSpec, Runtime};
use crate::streams::running::Stdin;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container as ContainerSpec, DownwardAPIVolumeFile, EphemeralContainer, KeyToPath,
    Pod, PodSpec, PodStatus, ProjectedVolumeSource, Secret, ServiceAccount,
    ServiceAccountTokenProjection,
};
use kube::Api;
use kube::api::{Patch, PatchParams};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use wasmkube_core::events::EventType::{Normal, Warning};
use wasmkube_core::events::{EventType, Recorder};
use wasmkube_core::go_duration::go_duration;
use wasmkube_core::quantity::Quantity;
use wasmkube_core::resources::Resources;
use wasmkube_core::stats::PodReference;

/// How long a container start waits for the Service watch to have listed once (for its service links).
const SERVICES_READY: Duration = Duration::from_secs(10);

/// How long a starting pod's first status write waits for its containers to start: a pod whose containers
/// start within it is written once, Running, rather than ContainerCreating and then Running (one write of the
/// apiserver's less per pod); one that takes longer (an image pull) is shown ContainerCreating after it.
const FIRST_WRITE_HOLD: Duration = Duration::from_millis(500);

/// The first pause before a failed status write is tried again; it doubles up to [`STATUS_RETRY_MAX`].
const STATUS_RETRY_FIRST: Duration = Duration::from_millis(200);

/// The longest pause between tries of a status write.
const STATUS_RETRY_MAX: Duration = Duration::from_secs(5);

/// Restart backoff: Kubernetes' defaults are 10 s doubling to 5 minutes, reset after 10 minutes of running.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

/// What every pod worker of a node shares.
pub struct NodeContext {
    /// The Kubernetes client.
    pub client: kube::Client,
    /// The Wasm runtime.
    pub runtime: Arc<Runtime>,
    /// This node's name.
    pub node_name: String,
    /// This node's address.
    pub address: String,
    /// Where pods keep their logs and volumes.
    pub data_dir: DataDir,
    /// Restart delays.
    pub backoff: Backoff,
    /// Where images come from.
    pub images: crate::pod::images::Images,
    /// The addresses of this node's pods.
    pub addresses: Arc<crate::network::addresses::PodAddresses>,
    /// The cluster's Services.
    pub services: ServiceView,
    /// Records Events about pods, as the kubelet of this node.
    pub events: Recorder,
    /// The addresses pods may not connect to.
    pub infrastructure: Arc<crate::network::sandbox::Infrastructure>,
    /// The runs of this node's containers, for exec and attach.
    pub containers: crate::streams::running::RunningContainers,
    /// The mounted tokens kept fresh.
    pub token_refreshes: crate::pod::token_refresh::Refreshes,
    /// Where claims' volumes live on this node.
    pub local_volumes: claims::LocalVolumes,
}

/// A running pod: stop it by dropping or calling [`PodWorker::stop`].
pub struct PodWorker {
    uid: String,
    /// The pod as it was started.
    pub pod: Arc<Pod>,
    /// What the pod asked for when it was admitted.
    pub requests: Resources,
    ctx: Arc<NodeContext>,
    stop: watch::Sender<bool>,
    /// The pod's status as the API last showed it.
    observed: watch::Sender<Option<PodStatus>>,
    /// The pod's ephemeral containers as the API last showed them.
    ephemeral: watch::Sender<Vec<EphemeralContainer>>,
    /// Bytes of linear memory its guests hold.
    memory: Arc<std::sync::atomic::AtomicUsize>,
    /// Its Quality of Service class, which orders evictions.
    pub qos: crate::pod::eviction::QosClass,
    task: tokio::task::JoinHandle<()>,
}

impl PodWorker {
    /// Starts running a pod.
    pub fn start(pod: Arc<Pod>, ctx: Arc<NodeContext>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let (observed, observations) = watch::channel(pod.status.clone());
        let (ephemeral, ephemeral_list) = watch::channel(ephemeral_containers(&pod));
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let requests = wasmkube_core::resources::requests(&pod);
        let qos = crate::pod::eviction::QosClass::of(&pod.spec.clone().unwrap_or_default());
        let memory = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let worker = Worker {
            stopped,
            observed: observations,
            memory: memory.clone(),
            ephemeral: ephemeral_list,
        };
        let started = pod.clone();
        let task = tokio::spawn(run_pod(pod, ctx.clone(), worker));
        Self {
            uid,
            pod: started,
            requests,
            ctx,
            stop,
            observed,
            ephemeral,
            memory,
            qos,
            task,
        }
    }

    /// Tells the worker the ephemeral containers the API shows now: new ones start.
    pub fn observe_ephemeral(&self, pod: &Pod) {
        let listed = ephemeral_containers(pod);
        self.ephemeral.send_if_modified(|current| {
            let changed = *current != listed;
            *current = listed;
            changed
        });
    }

    /// Bytes of linear memory the pod's guests hold now.
    pub fn memory_usage(&self) -> usize {
        self.memory.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Tells the worker the status the API shows now: one someone else changed (the node controller marks the
    /// pods of a silent node not ready) is written again from what the pod really is.
    pub fn observe(&self, status: Option<PodStatus>) {
        self.observed.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }

    /// Whether the pod still runs (its worker ends when the pod reaches Succeeded or Failed).
    pub fn is_active(&self) -> bool {
        !self.task.is_finished()
    }

    /// Stops the pod's containers, waiting at most `grace` for the worker to end, and frees its address.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
        self.ctx.addresses.release(&self.uid);
    }
}

fn ephemeral_containers(pod: &Pod) -> Vec<EphemeralContainer> {
    pod.spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.clone())
        .unwrap_or_default()
}

/// A pod that cannot start at all (no address, an unsafe name): its status says why.
struct Failed<'a> {
    pod: &'a Pod,
    ctx: &'a NodeContext,
    restart_policy: &'a str,
    start_time: jiff::Timestamp,
}

impl Failed<'_> {
    /// Reports every container waiting with `reason` and `message`.
    async fn report(
        &self,
        inits: &mut [Container],
        containers: &mut [Container],
        reason: &str,
        message: &str,
    ) {
        for container in containers.iter_mut() {
            container.state = State::Waiting {
                reason: reason.into(),
                message: Some(message.to_owned()),
            };
        }
        let status = status::pod_status(
            self.restart_policy,
            inits,
            containers,
            &self.ctx.address,
            None,
            self.start_time,
            self.pod.status.as_ref(),
        );
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let patch = serde_json::json!({"status": status});
        let _ = pods
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
    }
}

/// Which of a pod's lists a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Init,
    Main,
    Ephemeral,
}

/// A change of one container, sent to the pod's status writer.
struct Update {
    kind: Kind,
    index: usize,
    container: Box<Container>,
}

/// The status entries of containers before they start: creating, or waiting for the init containers.
fn initial_states(
    pod: &Pod,
    specs: &[ContainerSpec],
    waiting_reason: &str,
    init: bool,
) -> Vec<Container> {
    let previous = pod.status.as_ref().and_then(|s| {
        if init {
            s.init_container_statuses.as_ref()
        } else {
            s.container_statuses.as_ref()
        }
    });
    specs
        .iter()
        .map(|c| Container {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: String::new(),
            state: State::Waiting {
                reason: waiting_reason.into(),
                message: None,
            },
            last_state: None,
            restart_count: previous
                .and_then(|cs| cs.iter().find(|s| s.name == c.name))
                .map_or(0, |s| s.restart_count),
            started: false,
            ready: false,
        })
        .collect()
}

/// What a pod's task hears from its `PodWorker`.
struct Worker {
    /// Turns true when the pod must stop.
    stopped: watch::Receiver<bool>,
    /// The pod's status as the API shows it.
    observed: watch::Receiver<Option<PodStatus>>,
    /// Where its guests count the memory they hold.
    memory: Arc<std::sync::atomic::AtomicUsize>,
    /// The pod's ephemeral containers as the API shows them (`kubectl debug` adds them).
    ephemeral: watch::Receiver<Vec<EphemeralContainer>>,
}

/// An ephemeral container as the container it runs as: with its target's volumes when it names a target and
/// mounts none of its own (a Wasm guest cannot enter another's namespaces; it gets the same files instead).
fn ephemeral_spec(ephemeral: &EphemeralContainer, spec: &PodSpec) -> ContainerSpec {
    let mut container: ContainerSpec = serde_json::to_value(ephemeral)
        .ok()
        .and_then(|mut value| {
            value.as_object_mut()?.remove("targetContainerName");
            serde_json::from_value(value).ok()
        })
        .unwrap_or_default();
    let target = ephemeral.target_container_name.as_deref().and_then(|name| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
    });
    if let Some(target) = target
        && container.volume_mounts.as_ref().is_none_or(Vec::is_empty)
    {
        container.volume_mounts = target.volume_mounts.clone();
        if container.working_dir.is_none() {
            container.working_dir = target.working_dir.clone();
        }
    }
    container
}

async fn run_pod(pod: Arc<Pod>, ctx: Arc<NodeContext>, worker: Worker) {
    let began = std::time::Instant::now();
    let Worker {
        stopped,
        mut observed,
        memory,
        mut ephemeral,
    } = worker;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let no_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&no_spec);
    let restart_policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or_else(jiff::Timestamp::now, |t| t.0);
    let init_specs = spec.init_containers.clone().unwrap_or_default();
    let main_waiting = if init_specs.is_empty() {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let mut containers = initial_states(&pod, &spec.containers, main_waiting, false);
    let mut inits = initial_states(&pod, &init_specs, "PodInitializing", true);
    let failed = Failed {
        pod: &pod,
        ctx: &ctx,
        restart_policy: &restart_policy,
        start_time,
    };
    let dir = match ctx.data_dir.pod(&namespace, &name, &uid) {
        Ok(dir) => dir,
        Err(error) => {
            ctx.events
                .record(pod.as_ref(), Warning, "Failed", &error.to_string());
            // Futures awaited once are boxed: an idle pod's task keeps only the size of what it waits on.
            return Box::pin(failed.report(
                &mut inits,
                &mut containers,
                "CreateContainerConfigError",
                &error.to_string(),
            ))
            .await;
        }
    };
    // The pod's directory, where its logs (made at their first output) and volumes go.
    if let Err(error) = std::fs::create_dir_all(dir.path()) {
        let message = format!("cannot create the pod's directory: {error}");
        return Box::pin(failed.report(
            &mut inits,
            &mut containers,
            "CreateContainerError",
            &message,
        ))
        .await;
    }
    let previous_ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref());
    let pod_ip = match ctx.addresses.assign(&uid, previous_ip) {
        Ok(ip) => ip,
        Err(error) => {
            tracing::warn!(pod = %name, namespace = %namespace, %error, "no pod address");
            return Box::pin(failed.report(
                &mut inits,
                &mut containers,
                "ContainerCreating",
                &error.to_string(),
            ))
            .await;
        }
    };
    let network = PodNetwork {
        ip: pod_ip,
        ports: spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| u16::try_from(p.container_port).ok())
            .collect(),
        names: Some(Arc::new(PodNames {
            view: ctx.services.clone(),
            namespace: namespace.clone(),
        })),
        infrastructure: Some(ctx.infrastructure.clone()),
    };
    let (updates, mut changes) = mpsc::channel::<Update>(64);
    let worker = |spec: &ContainerSpec,
                  index: usize,
                  kind: Kind,
                  state: &Container,
                  updates: &mpsc::Sender<Update>| ContainerWorker {
        pod: pod.clone(),
        spec: spec.clone(),
        index,
        kind,
        // Ephemeral containers run once.
        restart_policy: if kind == Kind::Ephemeral {
            "Never".to_owned()
        } else {
            restart_policy.clone()
        },
        dir: dir.clone(),
        ctx: ctx.clone(),
        state: state.clone(),
        updates: updates.clone(),
        stopped: stopped.clone(),
        network: network.clone(),
        memory: memory.clone(),
    };
    // Init containers run one after another, each to success, before the others start.
    let init_workers: Vec<ContainerWorker> = init_specs
        .iter()
        .enumerate()
        .map(|(i, c)| worker(c, i, Kind::Init, &inits[i], &updates))
        .collect();
    let main_workers: Vec<ContainerWorker> = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| worker(c, i, Kind::Main, &containers[i], &updates))
        .collect();
    // The status writer ends when every container's worker has: ephemeral containers start only while
    // some still run.
    let ephemeral_updates = updates.downgrade();
    drop(updates);
    let mut ephemerals: Vec<Container> = Vec::new();
    // Marks the current list as seen, so the first look below starts what the pod already has.
    ephemeral.mark_changed();
    tokio::spawn(async move {
        for init in init_workers {
            if !init.run().await {
                return;
            }
        }
        for main in main_workers {
            tokio::spawn(main.run());
        }
    });
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut written = pod.status.clone();
    // After a failed write (its apiserver died mid-request, say), the next try: nothing else may change.
    let mut retry: Option<Duration> = None;
    // Until then, the first write waits for the containers to start, so a pod is written once, Running.
    let mut hold = Some(tokio::time::Instant::now() + FIRST_WRITE_HOLD);
    loop {
        let mut status = status::pod_status(
            &restart_policy,
            &inits,
            &containers,
            &ctx.address,
            Some(pod_ip),
            start_time,
            written.as_ref(),
        );
        if !ephemerals.is_empty() {
            status.ephemeral_container_statuses =
                Some(ephemerals.iter().map(status::container_status).collect());
        }
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            // Nothing of the pod runs any more: its address can go to another pod (its status keeps it).
            ctx.addresses.release(&uid);
        }
        let settled = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
            || !inits.iter().chain(&containers).any(is_starting);
        if settled {
            hold = None;
        }
        if hold.is_none() && written.as_ref() != Some(&status) {
            let patch = serde_json::json!({"status": status});
            match Box::pin(pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)))
                .await
            {
                Ok(_) => {
                    tracing::debug!(
                        pod = %name, namespace = %namespace, phase = ?status.phase,
                        since_start_us = began.elapsed().as_micros(), "status written"
                    );
                    written = Some(status);
                    retry = None;
                }
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                Err(error) => {
                    tracing::warn!(pod = %name, namespace = %namespace, %error, "cannot write pod status");
                    retry =
                        Some(retry.map_or(STATUS_RETRY_FIRST, |r| (r * 2).min(STATUS_RETRY_MAX)));
                }
            }
        }
        let first = tokio::select! {
            () = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => continue,
            () = tokio::time::sleep_until(hold.unwrap_or_else(tokio::time::Instant::now)), if hold.is_some() => {
                hold = None;
                continue;
            }
            change = changes.recv() => match change {
                Some(change) => change,
                None => return,
            },
            Ok(()) = observed.changed() => {
                // The API's status differs from what was written: compare against it and write again.
                written = observed.borrow_and_update().clone();
                continue;
            }
            Ok(()) = ephemeral.changed() => {
                // New ephemeral containers start beside the others; existing ones never change.
                let listed = ephemeral.borrow_and_update().clone();
                let added: Vec<&EphemeralContainer> = listed
                    .iter()
                    .filter(|e| !ephemerals.iter().any(|s| s.name == e.name))
                    .collect();
                for added in added {
                    let Some(updates) = ephemeral_updates.upgrade() else { break };
                    let spec = ephemeral_spec(added, spec);
                    let state = initial_states(&pod, std::slice::from_ref(&spec), "ContainerCreating", false)
                        .remove(0);
                    ephemerals.push(state.clone());
                    let index = ephemerals.len() - 1;
                    tokio::spawn(worker(&spec, index, Kind::Ephemeral, &state, &updates).run());
                }
                continue;
            }
        };
        // Take every change that is already waiting, so a burst is written once.
        let mut next = Some(first);
        while let Some(update) = next {
            let list = match update.kind {
                Kind::Init => &mut inits,
                Kind::Main => &mut containers,
                Kind::Ephemeral => &mut ephemerals,
            };
            if let Some(entry) = list.get_mut(update.index) {
                *entry = *update.container;
            }
            next = changes.try_recv().ok();
        }
    }
}

/// Whether a container is still in the state it was created in (waiting for its image, or for the init
/// containers), before its worker first reported on it.
fn is_starting(container: &Container) -> bool {
    matches!(&container.state, State::Waiting { reason, message: None }
        if reason == "ContainerCreating" || reason == "PodInitializing")
}

struct ContainerWorker {
    pod: Arc<Pod>,
    spec: ContainerSpec,
    index: usize,
    /// Which list it is in: an init container runs until it succeeds once, an ephemeral one once.
    kind: Kind,
    restart_policy: String,
    dir: PodDir,
    ctx: Arc<NodeContext>,
    state: Container,
    updates: mpsc::Sender<Update>,
    stopped: watch::Receiver<bool>,
    network: PodNetwork,
    memory: Arc<std::sync::atomic::AtomicUsize>,
}

/// How one run of a container ended.
enum Ended {
    /// The guest exited (or could not be set up).
    Exited(Result<crate::runtime::Exit, crate::runtime::RunError>),
    /// The pod is being stopped.
    Stopped,
    /// Its liveness or startup probe failed.
    Unhealthy(String),
}

impl ContainerWorker {
    /// Records an Event about the pod.
    fn event(&self, kind: EventType, reason: &'static str, message: String) {
        self.ctx
            .events
            .record(self.pod.as_ref(), kind, reason, &message);
    }

    async fn report(&mut self, state: State) {
        self.state.state = state;
        self.resend().await;
    }

    /// Sends the container's state to the pod's status writer.
    async fn resend(&mut self) {
        let update = Update {
            kind: self.kind,
            index: self.index,
            container: Box::new(self.state.clone()),
        };
        let _ = self.updates.send(update).await;
    }

    /// Sleeps, unless the pod is stopped first; returns whether it was stopped.
    async fn wait_or_stop(&mut self, delay: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => false,
            _ = self.stopped.wait_for(|stop| *stop) => true,
        }
    }

    /// The pod as the node's tables name it.
    fn pod_reference(&self) -> PodReference {
        PodReference {
            name: self.pod.metadata.name.clone().unwrap_or_default(),
            namespace: self.pod.metadata.namespace.clone().unwrap_or_default(),
            uid: self.pod.metadata.uid.clone().unwrap_or_default(),
        }
    }

    /// Runs the container through its restarts; returns whether its last run succeeded (an init container
    /// returns as soon as one run succeeds).
    async fn run(mut self) -> bool {
        let mut backoff = self.ctx.backoff.initial;
        let restarts = self.ctx.containers.count_restarts(
            self.pod_reference(),
            &self.spec.name,
            self.state.restart_count,
        );
        loop {
            let started = jiff::Timestamp::now();
            // Boxed, as the run below: the container's task keeps only the size of the step it is in.
            let ran = match Box::pin(self.prepare()).await {
                Ok((loaded, mut spec, listener, log)) => {
                    let stdin = self.spec.stdin.unwrap_or(false).then(|| {
                        let (stdin, input) = Stdin::pipe(self.spec.stdin_once.unwrap_or(false));
                        spec.stdin = Some(input);
                        stdin
                    });
                    let _registration = self.ctx.containers.register(
                        self.pod_reference(),
                        &self.spec.name,
                        loaded.clone(),
                        spec.clone(),
                        log.clone(),
                        stdin,
                    );
                    self.state.image_id = loaded.digest.clone();
                    self.state.started = self.spec.startup_probe.is_none();
                    self.state.ready = self.state.started && self.spec.readiness_probe.is_none();
                    let name = &self.spec.name;
                    self.event(Normal, "Created", format!("Created container: {name}"));
                    self.event(Normal, "Started", format!("Started container {name}"));
                    self.report(State::Running {
                        started_at: started,
                    })
                    .await;
                    let (probe_events, mut probe_verdicts) = mpsc::channel(4);
                    let prober = tokio::spawn(probes::run(
                        self.spec.clone(),
                        self.network.ip,
                        probe_events,
                    ));
                    let mut stopped = self.stopped.clone();
                    let runtime = self.ctx.runtime.clone();
                    let serving = listener.map(|listener| Serving {
                        listener,
                        drain: self.stopped.clone(),
                    });
                    let mut run = Box::pin(runtime.run(&loaded, spec, serving));
                    let outcome = loop {
                        let verdict = tokio::select! {
                            exit = &mut run => break Ended::Exited(exit),
                            _ = async { stopped.wait_for(|stop| *stop).await.is_ok() } => {
                                // An HTTP component drains: its requests under way finish (within the grace
                                // period, which the worker's stop enforces).
                                if loaded.serves_http() {
                                    let _ = (&mut run).await;
                                }
                                break Ended::Stopped;
                            }
                            Some(verdict) = probe_verdicts.recv() => verdict,
                        };
                        match verdict {
                            ProbeEvent::Started => {
                                self.state.started = true;
                                self.state.ready = self.spec.readiness_probe.is_none();
                            }
                            ProbeEvent::Readiness(readiness) => {
                                if let Err(message) = &readiness {
                                    self.event(Warning, "Unhealthy", message.clone());
                                }
                                self.state.ready = readiness.is_ok();
                            }
                            ProbeEvent::Failed(message) => break Ended::Unhealthy(message),
                        }
                        self.resend().await;
                    };
                    prober.abort();
                    self.state.started = false;
                    self.state.ready = false;
                    log.finish();
                    let finished = jiff::Timestamp::now();
                    let killed = |message: String| State::Terminated {
                        exit_code: 137,
                        reason: "Error".into(),
                        message: Some(message),
                        started_at: started,
                        finished_at: finished,
                    };
                    let name = &self.spec.name;
                    let terminated = match outcome {
                        Ended::Stopped => {
                            self.event(Normal, "Killing", format!("Stopping container {name}"));
                            killed("stopped".into())
                        }
                        Ended::Unhealthy(message) => {
                            tracing::info!(pod = %self.pod.metadata.name.as_deref().unwrap_or_default(), container = %name, %message, "restarting an unhealthy container");
                            let probe = if message.starts_with("Startup") {
                                "startup"
                            } else {
                                "liveness"
                            };
                            self.event(Warning, "Unhealthy", message.clone());
                            self.event(
                                Normal,
                                "Killing",
                                format!("Container {name} failed {probe} probe, will be restarted"),
                            );
                            killed(message)
                        }
                        Ended::Exited(Ok(exit)) => State::Terminated {
                            exit_code: exit.code,
                            reason: exit.reason.into(),
                            message: exit.message,
                            started_at: started,
                            finished_at: finished,
                        },
                        Ended::Exited(Err(error)) => State::Waiting {
                            reason: "CreateContainerError".into(),
                            message: Some(error.to_string()),
                        },
                    };
                    self.report(terminated.clone()).await;
                    if *self.stopped.borrow() {
                        return false;
                    }
                    match terminated {
                        State::Terminated { exit_code, .. } => {
                            Some((exit_code, finished.as_second() - started.as_second()))
                        }
                        _ => None,
                    }
                }
                Err(waiting) => {
                    if let State::Waiting { reason, message } = &waiting {
                        let message = message.clone().unwrap_or_default();
                        let image = self.spec.image.as_deref().unwrap_or_default();
                        let (event, text) = if reason.starts_with("ErrImage") {
                            (
                                "Failed",
                                format!("Failed to pull image {image:?}: {message}"),
                            )
                        } else if reason == "ContainerCreating" {
                            (
                                "FailedMount",
                                format!("Unable to attach or mount volumes: {message}"),
                            )
                        } else {
                            ("Failed", format!("Error: {message}"))
                        };
                        self.event(Warning, event, text);
                    }
                    self.report(waiting).await;
                    None
                }
            };
            let restart = match (&ran, self.restart_policy.as_str()) {
                (None, _) => true,
                (Some((0, _)), _) if self.kind == Kind::Init => false,
                (Some(_), "Always") => true,
                (Some((code, _)), "OnFailure") => *code != 0,
                (Some(_), _) => false,
            };
            if !restart {
                return ran.is_some_and(|(code, _)| code == 0);
            }
            if let Some((_, seconds)) = ran {
                if seconds > 600 {
                    backoff = self.ctx.backoff.initial;
                }
                self.state.last_state = Some(self.state.state.clone());
                self.state.restart_count += 1;
                restarts.set(self.state.restart_count);
                let message = format!(
                    "back-off {}s restarting failed container={} pod={}",
                    backoff.as_secs(),
                    self.spec.name,
                    self.pod.metadata.name.as_deref().unwrap_or_default()
                );
                self.report(State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some(message),
                })
                .await;
                self.event(
                    Warning,
                    "BackOff",
                    format!("Back-off restarting failed container {}", self.spec.name),
                );
            }
            if self.wait_or_stop(backoff).await {
                return false;
            }
            backoff = (backoff * 2).min(self.ctx.backoff.max);
        }
    }

    /// Fetches and loads the image, builds the run's environment and, for an HTTP component, listens on its
    /// port; a failure is the Waiting state to show.
    async fn prepare(
        &mut self,
    ) -> Result<
        (
            crate::runtime::Loaded,
            RunSpec,
            Option<tokio::net::TcpListener>,
            ContainerLog,
        ),
        State,
    > {
        let waiting = |reason: &str, message: String| State::Waiting {
            reason: reason.into(),
            message: Some(message),
        };
        let image = self.spec.image.clone().unwrap_or_default();
        let policy = self
            .spec
            .image_pull_policy
            .as_deref()
            .unwrap_or("IfNotPresent");
        let pull_secrets = self.pull_secrets().await;
        let pulling = std::time::Instant::now();
        let pulled = self
            .ctx
            .images
            .fetch(&image, policy, &pull_secrets)
            .await
            .map_err(|e| waiting(e.reason(), e.to_string()))?;
        // The kubelet's words: the size of what was pulled, in bytes, and how long it took.
        let message = if pulled.present {
            format!(
                "Container image {image:?} already present on machine and can be accessed by the pod"
            )
        } else {
            let took = go_duration(
                i64::try_from(pulling.elapsed().as_millis())
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1_000_000),
            );
            format!(
                "Successfully pulled image {image:?} in {took} ({took} including waiting). Image size: {} bytes.",
                pulled.bytes.len()
            )
        };
        self.event(Normal, "Pulled", message);
        let fetched = pulling.elapsed();
        let loaded = self
            .ctx
            .runtime
            .load_digested(&pulled.digest, &pulled.bytes)
            .map_err(|e| waiting("CreateContainerError", format!("{image}: {e}")))?;
        let loading = pulling.elapsed();
        let env = self
            .env()
            .await
            .map_err(|e| waiting("CreateContainerConfigError", e))?;
        let environment = pulling.elapsed();
        let mut mounts = self.mounts().await.map_err(|e| match e {
            MountError::Config(message) => waiting("CreateContainerConfigError", message),
            MountError::Volume(message) => waiting("ContainerCreating", message),
        })?;
        let mounting = pulling.elapsed();
        if let Some(dir) = self.spec.working_dir.as_deref().filter(|d| !d.is_empty()) {
            let own = self
                .dir
                .working_dir(&self.spec.name)
                .map_err(|e| waiting("CreateContainerConfigError", e.to_string()))?;
            let working = working_dir(dir, &mounts, &own)
                .map_err(|e| waiting("CreateContainerConfigError", e))?;
            mounts.extend(working);
        }
        let log_file = self
            .dir
            .log(&self.spec.name, self.state.restart_count)
            .map_err(|e| waiting("CreateContainerConfigError", e.to_string()))?;
        let log = ContainerLog::create(&log_file, self.state.restart_count == 0).map_err(|e| {
            waiting(
                "CreateContainerError",
                format!("cannot create the log file: {e}"),
            )
        })?;
        let mut args: Vec<String> = self
            .spec
            .command
            .clone()
            .unwrap_or_else(|| vec![self.spec.name.clone()]);
        args.extend(self.spec.args.clone().unwrap_or_default());
        let memory_limit = self
            .spec
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .and_then(|q| Quantity::parse(&q.0).ok())
            .map(|bytes| usize::try_from(bytes.value()).unwrap_or(usize::MAX));
        let cpu_limit = self
            .spec
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("cpu"))
            .and_then(|q| crate::runtime::cpu::millicores(&q.0));
        let cpu_request = self
            .spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|l| l.get("cpu"))
            .and_then(|q| crate::runtime::cpu::millicores(&q.0));
        let spec = RunSpec {
            args,
            env,
            mounts,
            memory_limit,
            cpu_limit,
            cpu_request,
            stdin: None,
            stdout: log.stream(Stream::Stdout),
            stderr: log.stream(Stream::Stderr),
            network: self.network.clone(),
            pod_memory: self.memory.clone(),
            usage: Arc::default(),
            requests: Arc::default(),
        };
        let listener = if loaded.serves_http() {
            Some(self.listen().await.map_err(|message| {
                waiting("CreateContainerError", format!("{image}: {message}"))
            })?)
        } else {
            None
        };
        // Where a container start's time goes, cumulative from its image fetch (RUST_LOG=wasmkube_node=debug).
        tracing::debug!(
            pod = %self.pod.metadata.name.as_deref().unwrap_or_default(),
            namespace = %self.pod.metadata.namespace.as_deref().unwrap_or_default(),
            container = %self.spec.name,
            image_us = fetched.as_micros(),
            load_us = loading.as_micros(),
            env_us = environment.as_micros(),
            mounts_us = mounting.as_micros(),
            ready_us = pulling.elapsed().as_micros(),
            "container prepared"
        );
        Ok((loaded, spec, listener, log))
    }

    /// The pod's imagePullSecrets that exist; missing ones are reported as Kubernetes does and skipped.
    async fn pull_secrets(&self) -> Vec<Secret> {
        let names: Vec<String> = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten())
            .map(|r| r.name.clone())
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Vec::new();
        }
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            match api.get_opt(&name).await {
                Ok(Some(secret)) => found.push(secret),
                _ => missing.push(name),
            }
        }
        if !missing.is_empty() {
            self.event(
                Warning,
                "FailedToRetrieveImagePullSecret",
                format!(
                    "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                    missing.join(", ")
                ),
            );
        }
        found
    }

    /// Listens on the pod's address and the container's first declared TCP port, for an HTTP component.
    async fn listen(&self) -> Result<tokio::net::TcpListener, String> {
        let port = self
            .spec
            .ports
            .iter()
            .flatten()
            .find(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or("an HTTP component needs a containerPort to be served on")?;
        let address = std::net::SocketAddr::new(self.network.ip, port);
        tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot listen on {address}: {e}"))
    }

    async fn env(&self) -> Result<Vec<(String, String)>, String> {
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let mut env = Vec::new();
        let service_links = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        if service_links {
            if !self.ctx.services.wait_ready(SERVICES_READY).await {
                return Err(
                    "services have not yet been read at least once, cannot construct envvars"
                        .to_owned(),
                );
            }
            // The container's own variables win over the Services' of the same name.
            let own: Vec<&str> = self
                .spec
                .env
                .iter()
                .flatten()
                .map(|v| v.name.as_str())
                .collect();
            env.extend(
                self.ctx
                    .services
                    .environment(&namespace)
                    .into_iter()
                    .filter(|(name, _)| !own.contains(&name.as_str())),
            );
        }
        for var in self.spec.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(from)) => {
                    if let Some(field) = &from.field_ref {
                        match field.field_path.as_str() {
                            "metadata.name" => self.pod.metadata.name.clone().unwrap_or_default(),
                            "metadata.namespace" => namespace.clone(),
                            "metadata.uid" => self.pod.metadata.uid.clone().unwrap_or_default(),
                            "spec.nodeName" => self.ctx.node_name.clone(),
                            "status.podIP" => self.network.ip.to_string(),
                            "status.hostIP" => self.ctx.address.clone(),
                            other => {
                                return Err(format!(
                                    "unsupported fieldRef {other:?} in env {}",
                                    var.name
                                ));
                            }
                        }
                    } else if let Some((holder, name, key, optional)) = from
                        .config_map_key_ref
                        .as_ref()
                        .map(|r| (KeyHolder::ConfigMap, &r.name, &r.key, r.optional))
                        .or_else(|| {
                            from.secret_key_ref
                                .as_ref()
                                .map(|r| (KeyHolder::Secret, &r.name, &r.key, r.optional))
                        })
                    {
                        match self
                            .key_value(holder, &namespace, name, key, optional)
                            .await?
                        {
                            Some(value) => value,
                            None => continue,
                        }
                    } else {
                        return Err(format!("env {} has no supported valueFrom", var.name));
                    }
                }
                (None, None) => String::new(),
            };
            env.push((var.name.clone(), value));
        }
        Ok(env)
    }

    async fn mounts(&self) -> Result<Vec<Mount>, MountError> {
        let volumes = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let mut mounts = Vec::new();
        for mount in self.spec.volume_mounts.iter().flatten() {
            let volume = volumes
                .iter()
                .find(|v| v.name == mount.name)
                .ok_or_else(|| format!("volume {:?} is not defined in the pod", mount.name))?;
            let own_dir = self.dir.volume(&volume.name).map_err(|e| e.to_string())?;
            let (host_path, forced_read_only) = if let Some(host) = &volume.host_path {
                (PathBuf::from(&host.path), false)
            } else if volume.empty_dir.is_some() {
                std::fs::create_dir_all(&own_dir)
                    .map_err(|e| format!("cannot create emptyDir {}: {e}", volume.name))?;
                (own_dir, false)
            } else if let Some(source) = &volume.config_map {
                let files = self
                    .key_files(
                        KeyHolder::ConfigMap,
                        &namespace,
                        &source.name,
                        source.optional,
                    )
                    .await?;
                write_volume(&own_dir, files, source.items.as_deref().unwrap_or_default())?;
                (own_dir, true)
            } else if let Some(source) = &volume.secret {
                let name = source.secret_name.clone().unwrap_or_default();
                let files = self
                    .key_files(KeyHolder::Secret, &namespace, &name, source.optional)
                    .await?;
                write_volume(&own_dir, files, source.items.as_deref().unwrap_or_default())?;
                (own_dir, true)
            } else if let Some(source) = &volume.downward_api {
                let files = downward_files(&self.pod, source.items.as_deref().unwrap_or_default())?;
                write_volume(&own_dir, files, &[])?;
                (own_dir, true)
            } else if let Some(source) = &volume.projected {
                let files = self.projected_files(&namespace, source).await?;
                write_volume(&own_dir, files, &[])?;
                self.keep_tokens_fresh(&own_dir, &namespace, source)?;
                (own_dir, true)
            } else if let Some(source) = &volume.persistent_volume_claim {
                let dir = claims::directory(
                    &self.ctx.client,
                    &self.ctx.local_volumes,
                    &self.ctx.node_name,
                    &namespace,
                    &source.claim_name,
                    &self.stopped,
                )
                .await
                .map_err(|e| MountError::Volume(format!("volume {:?}: {e}", volume.name)))?;
                (dir, source.read_only.unwrap_or(false))
            } else {
                return Err(format!(
                    "volume {:?}: only emptyDir, hostPath, configMap, secret, downwardAPI, projected and \
                     persistentVolumeClaim volumes are supported",
                    volume.name
                )
                .into());
            };
            let read_only = forced_read_only || mount.read_only.unwrap_or(false);
            let host_path = match mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
                // A subPath of a volume the guest writes may be a symlink it planted: resolved inside.
                Some(sub_path) => {
                    safe_path::directory_within(&host_path, "subPath", sub_path, !read_only)
                        .map_err(|e| e.to_string())?
                }
                None => host_path,
            };
            mounts.push(Mount {
                host_path,
                guest_path: mount.mount_path.clone(),
                read_only,
            });
        }
        Ok(mounts)
    }
}

/// Why a container's volumes cannot be set up.
#[derive(Debug)]
enum MountError {
    /// Its configuration cannot be used (a missing key, a bad subPath): CreateContainerConfigError.
    Config(String),
    /// A claim's volume is not there (yet): the container stays ContainerCreating, with a FailedMount Event.
    Volume(String),
}

impl From<String> for MountError {
    fn from(message: String) -> Self {
        Self::Config(message)
    }
}

/// The kinds of object whose keys become environment variables and volume files.
#[derive(Debug, Clone, Copy)]
enum KeyHolder {
    ConfigMap,
    Secret,
}

impl KeyHolder {
    fn kind(self) -> &'static str {
        match self {
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
        }
    }

    /// The kubelet's words for a missing one.
    fn not_found(self, name: &str) -> String {
        match self {
            Self::ConfigMap => format!("configmap {name:?} not found"),
            Self::Secret => format!("secret {name:?} not found"),
        }
    }
}

impl ContainerWorker {
    /// The keys and values of a ConfigMap (its binaryData too when `binary`) or a Secret; None when it does not
    /// exist.
    async fn keys_of(
        &self,
        holder: KeyHolder,
        namespace: &str,
        name: &str,
        binary: bool,
    ) -> Result<Option<Vec<(String, Vec<u8>)>>, String> {
        let client = self.ctx.client.clone();
        match holder {
            KeyHolder::ConfigMap => {
                let maps: Api<ConfigMap> = Api::namespaced(client, namespace);
                let mut found = maps.get_opt(name).await.map_err(|e| e.to_string())?;
                // The cluster CA's ConfigMap is published by a controller just after its namespace is made: a
                // pod started in between waits for it a little, as for its default ServiceAccount's token.
                let mut attempts = 0;
                while found.is_none()
                    && name == ROOT_CA_CONFIG_MAP
                    && attempts < ACCOUNT_WAIT_ATTEMPTS
                {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    found = maps.get_opt(name).await.map_err(|e| e.to_string())?;
                }
                Ok(found.map(|map| {
                    let text = map
                        .data
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k, v.into_bytes()));
                    let bytes = map.binary_data.into_iter().flatten().map(|(k, v)| (k, v.0));
                    text.chain(bytes.filter(|_| binary)).collect()
                }))
            }
            KeyHolder::Secret => {
                let secrets: Api<Secret> = Api::namespaced(client, namespace);
                let found = secrets.get_opt(name).await.map_err(|e| e.to_string())?;
                Ok(found.map(|secret| {
                    secret
                        .data
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k, v.0))
                        .collect()
                }))
            }
        }
    }

    /// A ConfigMap's or Secret's keys as files (none when it is missing and optional).
    async fn key_files(
        &self,
        holder: KeyHolder,
        namespace: &str,
        name: &str,
        optional: Option<bool>,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        match self.keys_of(holder, namespace, name, true).await? {
            Some(keys) => Ok(keys),
            None if optional == Some(true) => Ok(Vec::new()),
            None => Err(holder.not_found(name)),
        }
    }

    /// One key of a ConfigMap or Secret as an environment variable's value; None when it or its object is
    /// missing and the reference is optional (the kubelet then leaves the variable out).
    async fn key_value(
        &self,
        holder: KeyHolder,
        namespace: &str,
        name: &str,
        key: &str,
        optional: Option<bool>,
    ) -> Result<Option<String>, String> {
        let keys = self.keys_of(holder, namespace, name, false).await?;
        let value = keys
            .as_ref()
            .and_then(|keys| keys.iter().find(|(k, _)| k == key));
        match (value, keys.is_some()) {
            (Some((_, value)), _) => Ok(Some(String::from_utf8_lossy(value).into_owned())),
            _ if optional == Some(true) => Ok(None),
            (None, false) => Err(holder.not_found(name)),
            (None, true) => Err(format!(
                "couldn't find key {key} in {} {namespace}/{name}",
                holder.kind()
            )),
        }
    }

    /// The files of a projected volume, by path: each source's files, a ServiceAccount token requested for
    /// this pod.
    async fn projected_files(
        &self,
        namespace: &str,
        projected: &ProjectedVolumeSource,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        // Every source at once: the cluster CA's ConfigMap and the pod's token are two requests to the apiserver.
        let sources = projected.sources.iter().flatten().map(|source| async move {
            if let Some(map) = &source.config_map {
                let found = self
                    .key_files(KeyHolder::ConfigMap, namespace, &map.name, map.optional)
                    .await?;
                Ok(select(found, map.items.as_deref().unwrap_or_default()))
            } else if let Some(secret) = &source.secret {
                let found = self
                    .key_files(KeyHolder::Secret, namespace, &secret.name, secret.optional)
                    .await?;
                Ok(select(found, secret.items.as_deref().unwrap_or_default()))
            } else if let Some(downward) = &source.downward_api {
                downward_files(&self.pod, downward.items.as_deref().unwrap_or_default())
            } else if let Some(token) = &source.service_account_token {
                Ok(vec![(token.path.clone(), self.token(namespace, token).await?)])
            } else {
                Err(
                    "projected volumes support configMap, secret, downwardAPI and serviceAccountToken \
                     sources"
                        .to_owned(),
                )
            }
        });
        let files = futures::future::try_join_all(sources).await?;
        Ok(files.into_iter().flatten().collect())
    }

    /// A token of the pod's ServiceAccount, bound to the pod, as the kubelet requests it.
    async fn token(
        &self,
        namespace: &str,
        source: &ServiceAccountTokenProjection,
    ) -> Result<Vec<u8>, String> {
        request_token(
            self.ctx.client.clone(),
            self.pod.clone(),
            namespace.to_owned(),
            source.clone(),
        )
        .await
    }

    /// Keeps the projected volume's tokens fresh while the pod runs.
    fn keep_tokens_fresh(
        &self,
        dir: &Path,
        namespace: &str,
        projected: &ProjectedVolumeSource,
    ) -> Result<(), String> {
        let tokens = projected
            .sources
            .iter()
            .flatten()
            .filter_map(|s| s.service_account_token.clone());
        for source in tokens {
            let file = safe_path::descend(dir, "volume item path", &source.path)
                .map_err(|e| e.to_string())?;
            let lifetime = Duration::from_secs(
                u64::try_from(source.expiration_seconds.unwrap_or(3600)).unwrap_or(3600),
            );
            let (client, pod, namespace) = (
                self.ctx.client.clone(),
                self.pod.clone(),
                namespace.to_owned(),
            );
            self.ctx
                .token_refreshes
                .keep(file, lifetime, self.stopped.clone(), move || {
                    request_token(
                        client.clone(),
                        pod.clone(),
                        namespace.clone(),
                        source.clone(),
                    )
                });
        }
        Ok(())
    }
}

/// How many times (100 ms apart) a token is asked for while its account does not exist yet (and the cluster
/// CA's ConfigMap looked for).
const ACCOUNT_WAIT_ATTEMPTS: u32 = 50;
/// The ConfigMap of every namespace that holds the cluster CA.
const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// A token of the pod's ServiceAccount for `source`, bound to the pod, as the kubelet requests it.
async fn request_token(
    client: kube::Client,
    pod: Arc<Pod>,
    namespace: String,
    source: ServiceAccountTokenProjection,
) -> Result<Vec<u8>, String> {
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: source.audience.clone().map(|audience| vec![audience]),
            expiration_seconds: source.expiration_seconds,
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(client, &namespace);
    // A pod made just after its namespace may start before the controller has made the default account.
    let mut attempts = 0;
    let answered = loop {
        match accounts
            .create_token_request(&account, &Default::default(), &request)
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 404 && attempts < ACCOUNT_WAIT_ATTEMPTS => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answered => {
                break answered.map_err(|e| {
                    format!("cannot get a token of service account {account:?}: {e}")
                })?;
            }
        }
    };
    answered
        .status
        .and_then(|s| s.token)
        .map(String::into_bytes)
        .ok_or_else(|| format!("the token request of service account {account:?} has no token"))
}

/// The files `items` select of a source's keys, by their paths (all keys, by name, without items).
fn select(files: Vec<(String, Vec<u8>)>, items: &[KeyToPath]) -> Vec<(String, Vec<u8>)> {
    if items.is_empty() {
        return files;
    }
    files
        .into_iter()
        .filter_map(|(key, bytes)| {
            items
                .iter()
                .find(|item| item.key == key)
                .map(|item| (item.path.clone(), bytes))
        })
        .collect()
}

/// The downward API's files: the pod's own fields, as the kubelet writes them (labels and annotations one
/// `key="value"` per line, sorted).
fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let pairs = |map: &Option<std::collections::BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    items
        .iter()
        .map(|item| {
            let field = item
                .field_ref
                .as_ref()
                .map(|f| f.field_path.as_str())
                .ok_or_else(|| format!("{}: only fieldRef is supported", item.path))?;
            let value = match field {
                "metadata.name" => pod.metadata.name.clone().unwrap_or_default(),
                "metadata.namespace" => pod.metadata.namespace.clone().unwrap_or_default(),
                "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
                "metadata.labels" => pairs(&pod.metadata.labels),
                "metadata.annotations" => pairs(&pod.metadata.annotations),
                "spec.serviceAccountName" => pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_default(),
                other => return Err(format!("{}: unsupported field {other:?}", item.path)),
            };
            Ok((item.path.clone(), value.into_bytes()))
        })
        .collect()
}

/// The preopens that make `dir` the container's working directory. WASI has no current directory: relative
/// paths resolve against a preopen named ".", so the directory is preopened there too. Inside a volume it is
/// that volume's directory; elsewhere it is a directory of the container's own (`own`), mounted at `dir`.
fn working_dir(dir: &str, mounts: &[Mount], own: &Path) -> Result<Vec<Mount>, String> {
    if !dir.starts_with('/') || dir.split('/').any(|part| part == "..") {
        return Err(format!(
            "workingDir {dir:?} must be an absolute path without .."
        ));
    }
    let inside = mounts
        .iter()
        .filter_map(|m| {
            let rest = dir.strip_prefix(m.guest_path.trim_end_matches('/'))?;
            (rest.is_empty() || rest.starts_with('/')).then_some((m, rest.trim_start_matches('/')))
        })
        .max_by_key(|(m, _)| m.guest_path.len());
    let (host_path, read_only, extra) = match inside {
        Some((mount, "")) => (mount.host_path.clone(), mount.read_only, None),
        Some((mount, rest)) => {
            // Inside a volume the guest writes, the path may lead through a symlink it planted.
            let resolved =
                safe_path::directory_within(&mount.host_path, "workingDir", rest, !mount.read_only)
                    .map_err(|e| e.to_string())?;
            (resolved, mount.read_only, None)
        }
        None => {
            let own_mount = Mount {
                host_path: own.to_path_buf(),
                guest_path: dir.to_owned(),
                read_only: false,
            };
            (own.to_path_buf(), false, Some(own_mount))
        }
    };
    if !read_only {
        std::fs::create_dir_all(&host_path)
            .map_err(|e| format!("cannot create workingDir {dir}: {e}"))?;
    } else if !host_path.is_dir() {
        return Err(format!(
            "workingDir {dir} does not exist in its read-only volume"
        ));
    }
    let dot = Mount {
        host_path,
        guest_path: ".".into(),
        read_only,
    };
    Ok(extra.into_iter().chain(std::iter::once(dot)).collect())
}

/// Writes a configMap's or secret's keys as files: every key, or only `items` (key → relative path).
fn write_volume(
    dir: &Path,
    files: Vec<(String, Vec<u8>)>,
    items: &[KeyToPath],
) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create volume {}: {e}", dir.display()))?;
    for (key, bytes) in files {
        let relative = if items.is_empty() {
            key.clone()
        } else {
            match items.iter().find(|item| item.key == key) {
                Some(item) => item.path.clone(),
                None => continue,
            }
        };
        let path =
            safe_path::descend(dir, "volume item path", &relative).map_err(|e| e.to_string())?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, bytes)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_working_dir_is_preopened_as_dot_inside_its_volume_or_on_its_own() {
        let data = Mount {
            host_path: "/host/vol".into(),
            guest_path: "/data".into(),
            read_only: true,
        };
        let scratch = tempfile::tempdir().unwrap();
        let own = scratch.path().join("own");
        let inside = working_dir("/data", std::slice::from_ref(&data), &own);
        assert!(
            inside.is_err(),
            "a read-only volume's missing dir is an error"
        );
        let writable = Mount {
            host_path: scratch.path().join("vol"),
            guest_path: "/data".into(),
            read_only: false,
        };
        let mounts = working_dir("/data/work", std::slice::from_ref(&writable), &own).unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].guest_path, ".");
        assert_eq!(mounts[0].host_path, scratch.path().join("vol/work"));
        let mounts = working_dir("/app", &[writable], &own).unwrap();
        let guest: Vec<&str> = mounts.iter().map(|m| m.guest_path.as_str()).collect();
        assert_eq!(guest, ["/app", "."]);
        assert!(own.is_dir());
        assert!(working_dir("relative", &[], &own).is_err());
    }
}
