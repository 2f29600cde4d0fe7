//! A pod's status as a pure function of what its containers are doing: phase, conditions and container
//! statuses, computed the way the kubelet does.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What one container is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not running: a reason (ContainerCreating, ErrImagePull, CrashLoopBackOff, CreateContainerError, ...) and
    /// a message a user can act on.
    Waiting {
        /// The Kubernetes reason.
        reason: String,
        /// Details.
        message: Option<String>,
    },
    /// Running since.
    Running {
        /// When it started.
        started_at: jiff::Timestamp,
    },
    /// Ended.
    Terminated {
        /// The exit code.
        exit_code: i32,
        /// Completed, Error or OOMKilled.
        reason: String,
        /// Details, e.g. the trap.
        message: Option<String>,
        /// When it started.
        started_at: jiff::Timestamp,
        /// When it ended.
        finished_at: jiff::Timestamp,
    },
}

/// Everything the status says about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The container's name.
    pub name: String,
    /// The image as the pod names it.
    pub image: String,
    /// The digest of the binary that runs, once loaded.
    pub image_id: String,
    /// The current state.
    pub state: State,
    /// The previous run's end, if it restarted.
    pub last_state: Option<State>,
    /// How often it restarted.
    pub restart_count: i32,
    /// Whether its startup probe passed (true without one); it counts only while running.
    pub started: bool,
    /// Whether its readiness probe passes (true without one, once started); it counts only while running.
    pub ready: bool,
}

impl Container {
    fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// Running, started and passing its readiness probe.
    pub fn is_ready(&self) -> bool {
        self.running() && self.started && self.ready
    }
}

impl State {
    fn to_k8s(&self) -> ContainerState {
        let time = |t: &jiff::Timestamp| Some(api_time(*t));
        match self {
            State::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            State::Running { started_at } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time(started_at),
                }),
                ..Default::default()
            },
            State::Terminated {
                exit_code,
                reason,
                message,
                started_at,
                finished_at,
            } => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: *exit_code,
                    reason: Some(reason.clone()),
                    message: message.clone(),
                    started_at: time(started_at),
                    finished_at: time(finished_at),
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }
}

/// A time as the API stores it: whole seconds (RFC 3339 without a fraction). A status built with the fraction
/// would differ from its own stored copy and be written again (the kubelet normalizes the same way).
fn api_time(t: jiff::Timestamp) -> Time {
    Time(jiff::Timestamp::from_second(t.as_second()).unwrap_or(t))
}

fn succeeded(container: &Container) -> bool {
    matches!(container.state, State::Terminated { exit_code: 0, .. })
}

/// Pending, Running, Succeeded or Failed, from the init containers, the containers and the restart policy.
pub fn phase(restart_policy: &str, inits: &[Container], containers: &[Container]) -> &'static str {
    if !inits.iter().all(succeeded) {
        let failed_for_good = restart_policy == "Never"
            && inits
                .iter()
                .any(|c| matches!(c.state, State::Terminated { exit_code, .. } if exit_code != 0));
        return if failed_for_good { "Failed" } else { "Pending" };
    }
    let terminated: Vec<i32> = containers
        .iter()
        .filter_map(|c| match c.state {
            State::Terminated { exit_code, .. } => Some(exit_code),
            _ => None,
        })
        .collect();
    let running = containers
        .iter()
        .any(|c| matches!(c.state, State::Running { .. }));
    let all_ended = terminated.len() == containers.len() && !containers.is_empty();
    match restart_policy {
        _ if all_ended
            && terminated.iter().all(|code| *code == 0)
            && restart_policy != "Always" =>
        {
            "Succeeded"
        }
        "Never" if all_ended => "Failed",
        _ if running || containers.iter().any(|c| c.restart_count > 0) => "Running",
        _ => "Pending",
    }
}

fn condition(kind: &str, ok: bool, reason: Option<&str>, since: jiff::Timestamp) -> PodCondition {
    PodCondition {
        type_: kind.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: if ok { None } else { reason.map(str::to_owned) },
        last_transition_time: Some(api_time(since)),
        ..Default::default()
    }
}

/// The full pod status to write. `previous` keeps condition transition times that did not change.
pub fn pod_status(
    restart_policy: &str,
    inits: &[Container],
    containers: &[Container],
    host_ip: &str,
    pod_ip: Option<std::net::IpAddr>,
    start_time: jiff::Timestamp,
    previous: Option<&PodStatus>,
) -> PodStatus {
    let now = jiff::Timestamp::now();
    let ready = !containers.is_empty() && containers.iter().all(Container::is_ready);
    let phase = phase(restart_policy, inits, containers);
    let initialized = inits.iter().all(succeeded);
    let finished = matches!(phase, "Succeeded" | "Failed");
    let keep_time = |kind: &str, ok: bool| -> jiff::Timestamp {
        previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.type_ == kind && (c.status == "True") == ok)
            })
            .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
            .unwrap_or(now)
    };
    let not_ready_reason = if finished {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let conditions = vec![
        condition(
            "PodReadyToStartContainers",
            true,
            None,
            keep_time("PodReadyToStartContainers", true),
        ),
        condition(
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
            keep_time("Initialized", initialized),
        ),
        condition(
            "Ready",
            ready,
            Some(not_ready_reason),
            keep_time("Ready", ready),
        ),
        condition(
            "ContainersReady",
            ready,
            Some(not_ready_reason),
            keep_time("ContainersReady", ready),
        ),
        condition("PodScheduled", true, None, keep_time("PodScheduled", true)),
    ];
    let statuses = |containers: &[Container]| -> Vec<ContainerStatus> {
        containers.iter().map(container_status).collect()
    };
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        init_container_statuses: (!inits.is_empty()).then(|| statuses(inits)),
        container_statuses: Some(statuses(containers)),
        host_ip: Some(host_ip.to_owned()),
        pod_ip: pod_ip.map(|ip| ip.to_string()),
        pod_ips: pod_ip.map(|ip| vec![k8s_openapi::api::core::v1::PodIP { ip: ip.to_string() }]),
        start_time: Some(api_time(start_time)),
        qos_class: previous.and_then(|p| p.qos_class.clone()),
        ..Default::default()
    }
}

/// A container's entry in its pod's status.
pub fn container_status(c: &Container) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: (!c.image_id.is_empty())
            .then(|| format!("wasmtime://{}/{}", c.name, c.restart_count)),
        ready: c.is_ready(),
        started: Some(c.running() && c.started),
        restart_count: c.restart_count,
        state: Some(c.state.to_k8s()),
        last_state: Some(c.last_state.as_ref().map(State::to_k8s).unwrap_or_default()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(state: State, restarts: i32) -> Container {
        Container {
            name: "c".into(),
            image: "x.wasm".into(),
            image_id: String::new(),
            state,
            last_state: None,
            restart_count: restarts,
            started: true,
            ready: true,
        }
    }

    fn ended(code: i32) -> State {
        let t = jiff::Timestamp::now();
        State::Terminated {
            exit_code: code,
            reason: "x".into(),
            message: None,
            started_at: t,
            finished_at: t,
        }
    }

    #[test]
    fn a_status_is_the_same_after_the_api_stores_it() {
        let started_at = jiff::Timestamp::new(1_700_000_000, 123_456_789).unwrap();
        let running = container(State::Running { started_at }, 0);
        let status = pod_status(
            "Always",
            &[],
            &[running],
            "127.0.0.1",
            None,
            started_at,
            None,
        );
        let stored: PodStatus =
            serde_json::from_value(serde_json::to_value(&status).unwrap()).unwrap();
        assert_eq!(stored, status);
    }

    #[test]
    fn phases_follow_the_restart_policy() {
        let waiting = State::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
        assert_eq!(
            phase("Always", &[], &[container(waiting.clone(), 0)]),
            "Pending"
        );
        assert_eq!(
            phase(
                "Always",
                &[],
                &[container(
                    State::Running {
                        started_at: jiff::Timestamp::now()
                    },
                    0
                )]
            ),
            "Running"
        );
        assert_eq!(phase("Never", &[], &[container(ended(0), 0)]), "Succeeded");
        assert_eq!(
            phase("OnFailure", &[], &[container(ended(0), 2)]),
            "Succeeded"
        );
        assert_eq!(phase("Never", &[], &[container(ended(1), 0)]), "Failed");
        assert_eq!(
            phase(
                "Never",
                &[],
                &[container(ended(0), 0), container(ended(2), 0)]
            ),
            "Failed"
        );
        // Waiting to be restarted after a crash is still Running, as in Kubernetes.
        assert_eq!(phase("Always", &[], &[container(waiting, 3)]), "Running");
        assert_eq!(phase("Always", &[], &[container(ended(0), 0)]), "Pending");
    }

    #[test]
    fn init_containers_hold_the_pod_pending_until_they_succeed() {
        let waiting = State::Waiting {
            reason: "PodInitializing".into(),
            message: None,
        };
        let main = [container(waiting.clone(), 0)];
        assert_eq!(phase("Always", &[container(waiting, 0)], &main), "Pending");
        assert_eq!(phase("Always", &[container(ended(1), 1)], &main), "Pending");
        assert_eq!(phase("Never", &[container(ended(1), 0)], &main), "Failed");
        assert_eq!(
            phase(
                "Never",
                &[container(ended(0), 0)],
                &[container(ended(0), 0)]
            ),
            "Succeeded"
        );
    }
}
