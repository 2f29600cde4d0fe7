//! Defaulting and validation of each built-in kind, as Kubernetes' registry strategies do them, on the
//! k8s-openapi types.

use super::validation::{self, Cause};
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetUpdateStrategy, Deployment, DeploymentStrategy, ReplicaSet,
    RollingUpdateDaemonSet, RollingUpdateDeployment, RollingUpdateStatefulSetStrategy, StatefulSet,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Endpoints, Event, LimitRange, Namespace, NamespaceSpec, NamespaceStatus,
    Node, Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec, ReplicationController,
    ResourceQuota, Secret, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding, RoleRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// What a kind's object names must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 subdomain (most kinds).
    Subdomain,
    /// A DNS-1123 label: no dots (Services, Namespaces).
    Label,
    /// Anything usable as one URL path segment (RBAC kinds: `system:discovery`).
    PathSegment,
}

/// The per-kind rules the apiserver applies to every write.
pub trait KindRules: Sized {
    /// What the object's name must be.
    const NAME_RULE: NameRule = NameRule::Subdomain;

    /// Fills in the defaults Kubernetes gives unset fields.
    fn defaults(&mut self) {}

    /// Prepares a new object before defaulting (e.g. a pod starts in phase Pending).
    fn prepare_create(&mut self, _uid: &str) {}

    /// The field errors of the object's own content.
    fn validate(&self) -> Vec<Cause> {
        Vec::new()
    }

    /// The field errors only a new object can have.
    fn validate_create(&self) -> Vec<Cause> {
        Vec::new()
    }

    /// The field errors of changing `old` into `self` (immutable fields).
    fn validate_update(&self, _old: &Self) -> Vec<Cause> {
        Vec::new()
    }
}

/// Kubernetes' image pull policy default: Always for `:latest` or untagged images, else IfNotPresent.
fn default_pull_policy(image: &str) -> &'static str {
    let name = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match name.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_container(container: &mut Container) {
    if container.image_pull_policy.is_none() {
        let policy = default_pull_policy(container.image.as_deref().unwrap_or_default());
        container.image_pull_policy = Some(policy.to_owned());
    }
    container
        .termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".to_owned());
    container
        .termination_message_policy
        .get_or_insert_with(|| "File".to_owned());
    for port in container.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".to_owned());
    }
    for probe in [
        &mut container.liveness_probe,
        &mut container.readiness_probe,
        &mut container.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
}

/// Kubernetes' probe defaults: every 10 s, 1 s to answer, one success and three failures in a row count; an
/// httpGet asks for `/` over HTTP.
fn default_probe(probe: &mut k8s_openapi::api::core::v1::Probe) {
    probe.period_seconds.get_or_insert(10);
    probe.timeout_seconds.get_or_insert(1);
    probe.success_threshold.get_or_insert(1);
    probe.failure_threshold.get_or_insert(3);
    if let Some(get) = probe.http_get.as_mut() {
        get.path.get_or_insert_with(|| "/".to_owned());
        get.scheme.get_or_insert_with(|| "HTTP".to_owned());
    }
}

/// Defaults of a pod spec, also applied to the templates of workload kinds.
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy
        .get_or_insert_with(|| "Always".to_owned());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy
        .get_or_insert_with(|| "ClusterFirst".to_owned());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".to_owned());
    spec.enable_service_links.get_or_insert(true);
    spec.security_context.get_or_insert_with(Default::default);
    spec.containers.iter_mut().for_each(default_container);
    spec.init_containers
        .iter_mut()
        .flatten()
        .for_each(default_container);
}

fn default_template(template: &mut PodTemplateSpec) {
    if let Some(spec) = template.spec.as_mut() {
        default_pod_spec(spec);
    }
}

fn immutable(field: &str, changed: bool, causes: &mut Vec<Cause>) {
    if changed {
        causes.push(Cause::invalid(field, "", "field is immutable"));
    }
}

fn immutable_selector(new: &LabelSelector, old: &LabelSelector) -> Vec<Cause> {
    let mut causes = Vec::new();
    immutable("spec.selector", new != old, &mut causes);
    causes
}

/// Whether a pod still carries scheduling gates: it is not scheduled (nor may it be bound) until they are gone.
pub fn is_scheduling_gated(spec: Option<&PodSpec>) -> bool {
    spec.and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|gates| !gates.is_empty())
}

impl KindRules for Pod {
    fn prepare_create(&mut self, _uid: &str) {
        let created = self.metadata.creation_timestamp.clone();
        let gated = is_scheduling_gated(self.spec.as_ref());
        let status = self.status.get_or_insert_with(PodStatus::default);
        status.phase.get_or_insert_with(|| "Pending".to_owned());
        let class = super::qos::QosClass::of(&self.spec.clone().unwrap_or_default());
        status.qos_class = Some(class.name().to_owned());
        if gated {
            // As kube-apiserver's pod strategy: a gated pod says so from the start (kubectl shows SchedulingGated).
            let conditions = status.conditions.get_or_insert_with(Vec::new);
            conditions.retain(|c| c.type_ != "PodScheduled");
            conditions.push(PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("SchedulingGated".into()),
                message: Some("Scheduling is blocked due to non-empty scheduling gates".into()),
                last_transition_time: created,
                ..PodCondition::default()
            });
        }
    }

    fn defaults(&mut self) {
        if let Some(spec) = self.spec.as_mut() {
            default_pod_spec(spec);
        }
    }

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        match &self.spec {
            Some(spec) => validation::pod::pod_spec("spec", spec, &mut causes),
            None => causes.push(Cause::required("spec")),
        }
        causes
    }

    fn validate_create(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        let Some(spec) = self.spec.as_ref() else {
            return causes;
        };
        if spec
            .ephemeral_containers
            .as_ref()
            .is_some_and(|l| !l.is_empty())
        {
            causes.push(Cause::forbidden(
                "spec.ephemeralContainers",
                "cannot be set on create",
            ));
        }
        let bound = spec.node_name.as_ref().is_some_and(|n| !n.is_empty());
        if bound && is_scheduling_gated(Some(spec)) {
            causes.push(Cause::forbidden(
                "spec.nodeName",
                "cannot be set until all schedulingGates have been cleared",
            ));
        }
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        let gates = |spec: &Option<PodSpec>| {
            spec.as_ref()
                .and_then(|s| s.scheduling_gates.clone())
                .unwrap_or_default()
        };
        let mut causes =
            validation::pod::scheduling_gates_update(&gates(&self.spec), &gates(&old.spec));
        // A gated pod may still narrow where it will run (how queueing controllers such as Kueue place it).
        let gated = is_scheduling_gated(old.spec.as_ref());
        if gated {
            let node_affinity =
                |spec: &Option<PodSpec>| spec.as_ref()?.affinity.as_ref()?.node_affinity.clone();
            let selector = |spec: &Option<PodSpec>| spec.as_ref()?.node_selector.clone();
            causes.extend(validation::pod::node_selector_additions(
                selector(&self.spec).as_ref(),
                selector(&old.spec).as_ref(),
            ));
            causes.extend(validation::pod::node_affinity_additions(
                node_affinity(&self.spec).as_ref(),
                node_affinity(&old.spec).as_ref(),
            ));
        }
        // Only images, activeDeadlineSeconds, tolerations and scheduling gates may change in a pod's spec (and
        // its ephemeral containers, through their subresource, which checks them); the rules above say how.
        // Both sides with today's defaults: a pod stored before a default was added is not changed by it.
        let mutable_cleared =
            |spec: &Option<PodSpec>| {
                spec.clone().map(|mut spec| {
                    default_pod_spec(&mut spec);
                    spec.ephemeral_containers = None;
                    spec.containers.iter_mut().for_each(|c| c.image = None);
                    spec.init_containers
                        .iter_mut()
                        .flatten()
                        .for_each(|c| c.image = None);
                    spec.active_deadline_seconds = None;
                    spec.tolerations = None;
                    spec.scheduling_gates = None;
                    if gated {
                        spec.node_selector = None;
                        if let Some(affinity) = spec.affinity.as_mut() {
                            affinity.node_affinity = None;
                        }
                        if spec.affinity.as_ref().is_some_and(|a| {
                            a.pod_affinity.is_none() && a.pod_anti_affinity.is_none()
                        }) {
                            spec.affinity = None;
                        }
                    }
                    spec
                })
            };
        if !causes.is_empty() {
            return causes;
        }
        if mutable_cleared(&self.spec) != mutable_cleared(&old.spec) {
            return vec![Cause::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,\
                 `spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to \
                 existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was \
                 previously negative)",
            )];
        }
        Vec::new()
    }
}

impl KindRules for Deployment {
    fn defaults(&mut self) {
        let spec = &mut self.spec;
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        spec.progress_deadline_seconds.get_or_insert(600);
        let strategy = spec
            .strategy
            .get_or_insert_with(DeploymentStrategy::default);
        let kind = strategy
            .type_
            .get_or_insert_with(|| "RollingUpdate".to_owned());
        if kind == "RollingUpdate" {
            let rolling = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDeployment::default);
            rolling
                .max_surge
                .get_or_insert_with(|| IntOrString::String("25%".to_owned()));
            rolling
                .max_unavailable
                .get_or_insert_with(|| IntOrString::String("25%".to_owned()));
        }
        default_template(&mut spec.template);
    }

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::workloads::deployment(&self.spec, &mut causes);
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        immutable_selector(&self.spec.selector, &old.spec.selector)
    }
}

impl KindRules for ReplicaSet {
    fn defaults(&mut self) {
        let spec = &mut self.spec;
        spec.replicas.get_or_insert(1);
        if let Some(template) = spec.template.as_mut() {
            default_template(template);
        }
    }

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::workloads::replica_set(&self.spec, &mut causes);
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        immutable_selector(&self.spec.selector, &old.spec.selector)
    }
}

impl KindRules for ReplicationController {
    fn defaults(&mut self) {
        let Some(spec) = self.spec.as_mut() else {
            return;
        };
        spec.replicas.get_or_insert(1);
        if let Some(template) = spec.template.as_mut() {
            default_template(template);
            // Without a selector, a ReplicationController selects its template's labels.
            if spec.selector.as_ref().is_none_or(BTreeMap::is_empty) {
                spec.selector = template.metadata.as_ref().and_then(|m| m.labels.clone());
            }
        }
    }

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        match &self.spec {
            Some(spec) => validation::workloads::replication_controller(spec, &mut causes),
            None => causes.push(Cause::required("spec")),
        }
        causes
    }
}

impl KindRules for DaemonSet {
    fn defaults(&mut self) {
        let spec = &mut self.spec;
        spec.revision_history_limit.get_or_insert(10);
        let strategy = spec
            .update_strategy
            .get_or_insert_with(DaemonSetUpdateStrategy::default);
        if strategy
            .type_
            .get_or_insert_with(|| "RollingUpdate".to_owned())
            == "RollingUpdate"
        {
            let rolling = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDaemonSet::default);
            rolling.max_unavailable.get_or_insert(IntOrString::Int(1));
            rolling.max_surge.get_or_insert(IntOrString::Int(0));
        }
        default_template(&mut spec.template);
    }

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::workloads::daemon_set(&self.spec, &mut causes);
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        immutable_selector(&self.spec.selector, &old.spec.selector)
    }
}

impl KindRules for StatefulSet {
    fn defaults(&mut self) {
        let spec = &mut self.spec;
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        spec.pod_management_policy
            .get_or_insert_with(|| "OrderedReady".to_owned());
        let strategy = spec
            .update_strategy
            .get_or_insert_with(StatefulSetUpdateStrategy::default);
        if strategy
            .type_
            .get_or_insert_with(|| "RollingUpdate".to_owned())
            == "RollingUpdate"
        {
            strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateStatefulSetStrategy::default)
                .partition
                .get_or_insert(0);
        }
        default_template(&mut spec.template);
        let retention = spec
            .persistent_volume_claim_retention_policy
            .get_or_insert_with(Default::default);
        retention
            .when_deleted
            .get_or_insert_with(|| "Retain".to_owned());
        retention
            .when_scaled
            .get_or_insert_with(|| "Retain".to_owned());
        for claim in spec.volume_claim_templates.iter_mut().flatten() {
            claim
                .spec
                .get_or_insert_with(Default::default)
                .volume_mode
                .get_or_insert_with(|| "Filesystem".to_owned());
            claim
                .status
                .get_or_insert_with(Default::default)
                .phase
                .get_or_insert_with(|| "Pending".to_owned());
        }
    }

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::workloads::stateful_set(&self.spec, &mut causes);
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        let mut causes = immutable_selector(&self.spec.selector, &old.spec.selector);
        let templates = |s: &Self| {
            s.spec
                .volume_claim_templates
                .iter()
                .flatten()
                .map(|t| (t.metadata.name.clone(), t.spec.clone()))
                .collect::<Vec<_>>()
        };
        if templates(self) != templates(old) {
            causes.push(Cause::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', \
                 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
        causes
    }
}

impl KindRules for Job {
    fn prepare_create(&mut self, uid: &str) {
        // Like Kubernetes, a Job without manualSelector selects its pods by its own uid.
        let name = self.metadata.name.clone().unwrap_or_default();
        let Some(spec) = self.spec.as_mut() else {
            return;
        };
        if spec.manual_selector == Some(true) {
            return;
        }
        let labels = BTreeMap::from([
            (
                "batch.kubernetes.io/controller-uid".to_owned(),
                uid.to_owned(),
            ),
            ("batch.kubernetes.io/job-name".to_owned(), name.clone()),
            ("controller-uid".to_owned(), uid.to_owned()),
            ("job-name".to_owned(), name),
        ]);
        spec.selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "batch.kubernetes.io/controller-uid".to_owned(),
                uid.to_owned(),
            )])),
            ..Default::default()
        });
        let metadata = spec.template.metadata.get_or_insert_with(Default::default);
        metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .extend(labels);
    }

    fn defaults(&mut self) {
        let Some(spec) = self.spec.as_mut() else {
            return;
        };
        if spec.completions.is_none() && spec.parallelism.is_none() {
            spec.completions = Some(1);
        }
        spec.parallelism.get_or_insert(1);
        spec.backoff_limit.get_or_insert(6);
        spec.completion_mode
            .get_or_insert_with(|| "NonIndexed".to_owned());
        spec.suspend.get_or_insert(false);
        spec.manual_selector.get_or_insert(false);
        spec.pod_replacement_policy
            .get_or_insert_with(|| "TerminatingOrFailed".to_owned());
        default_template(&mut spec.template);
    }

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        match &self.spec {
            Some(spec) => validation::workloads::job(spec, &mut causes),
            None => causes.push(Cause::required("spec")),
        }
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        let mut causes = Vec::new();
        let selector = |j: &Job| j.spec.as_ref().map(|s| s.selector.clone());
        immutable(
            "spec.selector",
            selector(self) != selector(old),
            &mut causes,
        );
        let completions = |j: &Job| j.spec.as_ref().map(|s| s.completions);
        immutable(
            "spec.completions",
            completions(self) != completions(old),
            &mut causes,
        );
        causes
    }
}

impl KindRules for CronJob {
    fn defaults(&mut self) {
        let spec = &mut self.spec;
        spec.concurrency_policy
            .get_or_insert_with(|| "Allow".to_owned());
        spec.suspend.get_or_insert(false);
        spec.successful_jobs_history_limit.get_or_insert(3);
        spec.failed_jobs_history_limit.get_or_insert(1);
        if let Some(template) = spec
            .job_template
            .spec
            .as_mut()
            .and_then(|j| j.template.spec.as_mut())
        {
            default_pod_spec(template);
        }
    }

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        let spec = &self.spec;
        if let Err(message) =
            crate::api::schedule::Schedule::new(&spec.schedule, spec.time_zone.as_deref())
        {
            let (field, value) = if message.starts_with("unknown time zone") {
                ("spec.timeZone", spec.time_zone.clone().unwrap_or_default())
            } else {
                ("spec.schedule", spec.schedule.clone())
            };
            causes.push(Cause::invalid(field, &value, &message));
        }
        validation::workloads::cron_job(spec, &mut causes);
        causes
    }
}

impl KindRules for Service {
    const NAME_RULE: NameRule = NameRule::Label;

    fn defaults(&mut self) {
        let Some(spec) = self.spec.as_mut() else {
            return;
        };
        spec.type_.get_or_insert_with(|| "ClusterIP".to_owned());
        spec.session_affinity
            .get_or_insert_with(|| "None".to_owned());
        if spec.type_.as_deref() != Some("ExternalName") {
            spec.internal_traffic_policy
                .get_or_insert_with(|| "Cluster".to_owned());
        }
        if matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer")) {
            spec.external_traffic_policy
                .get_or_insert_with(|| "Cluster".to_owned());
        }
        for port in spec.ports.iter_mut().flatten() {
            port.protocol.get_or_insert_with(|| "TCP".to_owned());
            port.target_port.get_or_insert(IntOrString::Int(port.port));
        }
    }

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        match &self.spec {
            Some(spec) => validation::core::service(spec, &mut causes),
            None => causes.push(Cause::required("spec")),
        }
        causes
    }
}

impl KindRules for Namespace {
    const NAME_RULE: NameRule = NameRule::Label;

    fn prepare_create(&mut self, _uid: &str) {
        let name = self.metadata.name.clone().unwrap_or_default();
        self.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert("kubernetes.io/metadata.name".to_owned(), name);
        self.spec
            .get_or_insert_with(NamespaceSpec::default)
            .finalizers
            .get_or_insert_with(|| vec!["kubernetes".to_owned()]);
        self.status
            .get_or_insert_with(NamespaceStatus::default)
            .phase
            .get_or_insert_with(|| "Active".to_owned());
    }
}

impl KindRules for Secret {
    fn defaults(&mut self) {
        self.type_.get_or_insert_with(|| "Opaque".to_owned());
        // stringData is write-only: the apiserver merges it into data, as Kubernetes does.
        if let Some(strings) = self.string_data.take() {
            let data = self.data.get_or_insert_with(BTreeMap::new);
            for (key, value) in strings {
                data.insert(key, k8s_openapi::ByteString(value.into_bytes()));
            }
        }
    }

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::core::secret(self, &mut causes);
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        let mut causes = Vec::new();
        if self.type_ != old.type_ {
            causes.push(Cause::invalid(
                "type",
                self.type_.as_deref().unwrap_or_default(),
                "field is immutable",
            ));
        }
        validation::core::immutable_data(
            old.immutable,
            self.data != old.data,
            self.immutable,
            &mut causes,
        );
        causes
    }
}

impl KindRules for ConfigMap {
    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::core::config_map(self, &mut causes);
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        let mut causes = Vec::new();
        let changed = self.data != old.data || self.binary_data != old.binary_data;
        validation::core::immutable_data(old.immutable, changed, self.immutable, &mut causes);
        causes
    }
}

impl KindRules for Node {
    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        if let Some(spec) = &self.spec {
            validation::core::node(spec, &mut causes);
        }
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::core::node_update(self.spec.as_ref(), old.spec.as_ref(), &mut causes);
        causes
    }
}

impl KindRules for Endpoints {
    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::core::endpoints(self, &mut causes);
        causes
    }
}

impl KindRules for Event {
    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::core::event(self, &mut causes);
        causes
    }
}

impl KindRules for ResourceQuota {
    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        if let Some(spec) = &self.spec {
            validation::core::resource_quota(spec, &mut causes);
        }
        causes
    }
}

impl KindRules for LimitRange {
    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        if let Some(spec) = &self.spec {
            validation::core::limit_range(spec, &mut causes);
        }
        causes
    }
}

impl KindRules for Role {
    const NAME_RULE: NameRule = NameRule::PathSegment;

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::access::rules(
            self.rules.as_deref().unwrap_or_default(),
            false,
            &mut causes,
        );
        causes
    }
}

impl KindRules for ClusterRole {
    const NAME_RULE: NameRule = NameRule::PathSegment;

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        // An aggregated role's rules are filled in by the controller.
        if self.aggregation_rule.is_none() {
            validation::access::rules(self.rules.as_deref().unwrap_or_default(), true, &mut causes);
        }
        causes
    }
}

/// A binding's role reference may not change, as Kubernetes refuses.
fn role_ref_unchanged(new: &RoleRef, old: &RoleRef) -> Vec<Cause> {
    if new == old {
        return Vec::new();
    }
    vec![Cause::invalid(
        "roleRef",
        &format!("{}/{}", new.kind, new.name),
        "cannot change roleRef",
    )]
}

impl KindRules for RoleBinding {
    const NAME_RULE: NameRule = NameRule::PathSegment;

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::access::role_ref(&self.role_ref, false, &mut causes);
        validation::access::subjects(
            self.subjects.as_deref().unwrap_or_default(),
            false,
            &mut causes,
        );
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        role_ref_unchanged(&self.role_ref, &old.role_ref)
    }
}

impl KindRules for ClusterRoleBinding {
    const NAME_RULE: NameRule = NameRule::PathSegment;

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::access::role_ref(&self.role_ref, true, &mut causes);
        validation::access::subjects(
            self.subjects.as_deref().unwrap_or_default(),
            true,
            &mut causes,
        );
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        role_ref_unchanged(&self.role_ref, &old.role_ref)
    }
}

impl KindRules for Lease {
    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        if let Some(spec) = &self.spec {
            validation::core::lease(spec, &mut causes);
        }
        causes
    }
}

impl KindRules for k8s_openapi::api::certificates::v1::CertificateSigningRequest {
    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::access::certificate_request(&self.spec, &mut causes);
        causes
    }
}

impl KindRules for EndpointSlice {
    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::core::endpoint_slice(self, &mut causes);
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::core::endpoint_slice_update(self, old, &mut causes);
        causes
    }
}

impl KindRules for k8s_openapi::api::policy::v1::PodDisruptionBudget {
    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        if let Some(spec) = &self.spec {
            validation::workloads::disruption_budget(spec, &mut causes);
        }
        causes
    }
}

impl KindRules for k8s_openapi::api::core::v1::ServiceAccount {}

impl KindRules for k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler {
    fn defaults(&mut self) {
        super::autoscaling::defaults(&mut self.spec);
    }

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        super::autoscaling::validate(&self.spec, &mut causes);
        causes
    }
}

impl KindRules for k8s_openapi::api::core::v1::PersistentVolume {
    fn defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.persistent_volume_reclaim_policy
            .get_or_insert_with(|| "Retain".to_owned());
        spec.volume_mode
            .get_or_insert_with(|| "Filesystem".to_owned());
    }

    fn prepare_create(&mut self, _uid: &str) {
        let status = self.status.get_or_insert_with(Default::default);
        status.phase.get_or_insert_with(|| "Pending".to_owned());
    }

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::storage::persistent_volume(&self.spec.clone().unwrap_or_default(), &mut causes);
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::storage::persistent_volume_update(
            &self.spec.clone().unwrap_or_default(),
            &old.spec.clone().unwrap_or_default(),
            &mut causes,
        );
        causes
    }
}

impl KindRules for k8s_openapi::api::core::v1::PersistentVolumeClaim {
    fn defaults(&mut self) {
        self.spec
            .get_or_insert_with(Default::default)
            .volume_mode
            .get_or_insert_with(|| "Filesystem".to_owned());
    }

    fn prepare_create(&mut self, _uid: &str) {
        let status = self.status.get_or_insert_with(Default::default);
        status.phase.get_or_insert_with(|| "Pending".to_owned());
    }

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::storage::persistent_volume_claim(
            "spec",
            &self.spec.clone().unwrap_or_default(),
            &mut causes,
        );
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        let bound = self.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let mut causes = Vec::new();
        validation::storage::persistent_volume_claim_update(
            &self.spec.clone().unwrap_or_default(),
            &old.spec.clone().unwrap_or_default(),
            bound,
            &mut causes,
        );
        causes
    }
}

impl KindRules for k8s_openapi::api::storage::v1::StorageClass {
    fn defaults(&mut self) {
        self.reclaim_policy
            .get_or_insert_with(|| "Delete".to_owned());
        self.volume_binding_mode
            .get_or_insert_with(|| "Immediate".to_owned());
    }

    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::storage::storage_class(self, &mut causes);
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::storage::storage_class_update(self, old, &mut causes);
        causes
    }
}

impl KindRules for k8s_openapi::api::networking::v1::Ingress {
    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::networking::ingress(&self.spec.clone().unwrap_or_default(), &mut causes);
        causes
    }
}

impl KindRules for k8s_openapi::api::networking::v1::IngressClass {
    fn validate(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::networking::ingress_class(&self.spec.clone().unwrap_or_default(), &mut causes);
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        let mut causes = Vec::new();
        validation::networking::ingress_class_update(
            &self.spec.clone().unwrap_or_default(),
            &old.spec.clone().unwrap_or_default(),
            &mut causes,
        );
        causes
    }
}

// Reviews are answered and never stored; the apiserver's review handler checks them.
impl KindRules for k8s_openapi::api::authorization::v1::SelfSubjectAccessReview {}
impl KindRules for k8s_openapi::api::authorization::v1::SubjectAccessReview {}
impl KindRules for k8s_openapi::api::authorization::v1::LocalSubjectAccessReview {}
impl KindRules for k8s_openapi::api::authorization::v1::SelfSubjectRulesReview {}
impl KindRules for k8s_openapi::api::authentication::v1::SelfSubjectReview {}
impl KindRules for k8s_openapi::api::authentication::v1::TokenReview {}

// ComponentStatuses and resource metrics are computed when read, never written.
impl KindRules for k8s_openapi::api::core::v1::ComponentStatus {}
impl KindRules for super::resource_metrics::NodeMetrics {}
impl KindRules for super::resource_metrics::PodMetrics {}

impl KindRules for k8s_openapi::api::scheduling::v1::PriorityClass {
    fn defaults(&mut self) {
        self.preemption_policy
            .get_or_insert_with(|| "PreemptLowerPriority".to_owned());
    }

    fn validate(&self) -> Vec<Cause> {
        use super::priority::{
            HIGHEST_USER_DEFINABLE_PRIORITY, SYSTEM_PRIORITY_CLASS_PREFIX, is_known_system_class,
        };
        let mut causes = Vec::new();
        let name = self.metadata.name.as_deref().unwrap_or_default();
        if name.starts_with(SYSTEM_PRIORITY_CLASS_PREFIX) {
            if let Err(error) = is_known_system_class(
                name,
                self.value.unwrap_or(0),
                self.global_default == Some(true),
            ) {
                causes.push(Cause::forbidden(
                    "metadata.name",
                    &format!(
                        "priority class names with '{SYSTEM_PRIORITY_CLASS_PREFIX}' prefix are reserved for \
                         system use only. error: {error}"
                    ),
                ));
            }
        } else if self.value.unwrap_or(0) > HIGHEST_USER_DEFINABLE_PRIORITY {
            causes.push(Cause::forbidden(
                "value",
                &format!(
                    "maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"
                ),
            ));
        }
        validation::one_of(
            "preemptionPolicy",
            self.preemption_policy.as_deref(),
            &["Never", "PreemptLowerPriority"],
            &mut causes,
        );
        causes
    }

    fn validate_update(&self, old: &Self) -> Vec<Cause> {
        let mut causes = Vec::new();
        if self.value.unwrap_or(0) != old.value.unwrap_or(0) {
            causes.push(Cause::forbidden(
                "value",
                "may not be changed in an update.",
            ));
        }
        if self.preemption_policy != old.preemption_policy {
            causes.push(Cause::invalid(
                "preemptionPolicy",
                self.preemption_policy.as_deref().unwrap_or_default(),
                "field is immutable",
            ));
        }
        causes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_pull_policy_defaults_like_kubernetes() {
        assert_eq!(default_pull_policy("hello.wasm"), "Always");
        assert_eq!(default_pull_policy("registry:5000/app"), "Always");
        assert_eq!(default_pull_policy("registry:5000/app:latest"), "Always");
        assert_eq!(default_pull_policy("registry:5000/app:v1"), "IfNotPresent");
        assert_eq!(default_pull_policy("app@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn probes_get_kubernetes_defaults_and_keep_what_is_set() {
        let mut spec: PodSpec = serde_json::from_value(serde_json::json!({"containers": [{
            "name": "app", "image": "app.wasm",
            "readinessProbe": {"httpGet": {"port": 8080}},
            "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 3, "failureThreshold": 5}}]}))
        .unwrap();
        default_pod_spec(&mut spec);
        let container = serde_json::to_value(&spec.containers[0]).unwrap();
        assert_eq!(
            container["readinessProbe"],
            serde_json::json!({"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"}, "periodSeconds": 10,
                               "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(container["livenessProbe"]["periodSeconds"], 3);
        assert_eq!(container["livenessProbe"]["failureThreshold"], 5);
        assert_eq!(container["livenessProbe"]["timeoutSeconds"], 1);
    }
}
