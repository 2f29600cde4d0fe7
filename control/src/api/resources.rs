//! The resource types the apiserver serves: their names, scope and subresources, and how a write of each is
//! decoded, defaulted and validated through its k8s-openapi type.

use super::kinds::{KindRules, NameRule};
use super::resource_metrics::{NodeMetrics, PodMetrics};
use super::table::{self, TableSpec};
use super::validation::{self, Cause};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenReview};
use k8s_openapi::api::authorization::v1::{
    LocalSubjectAccessReview, SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ComponentStatus, ConfigMap, Endpoints, Event, LimitRange, Namespace, Node, PersistentVolume,
    PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A subresource served under `<resource>/<name>/<subresource>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `status`: writes change only `.status`.
    Status,
    /// `scale`: an autoscaling/v1 Scale view of `.spec.replicas`.
    Scale,
    /// `binding`: assigns a pod to a node.
    Binding,
    /// `log`: a pod's container output, read from its node.
    Log,
    /// `portforward`: a connection upgraded to a stream to the pod's ports, through its node.
    PortForward,
    /// `exec`: a connection upgraded to the stdio of a command run in a pod's container, through its node.
    Exec,
    /// `attach`: a connection upgraded to the stdio of a pod's running container, through its node.
    Attach,
    /// `ephemeralcontainers`: a pod's ephemeral containers, the one part of a pod's spec that grows.
    EphemeralContainers,
    /// `proxy`: HTTP requests made again to the pod, a ready endpoint of the Service, or the node's agent.
    Proxy,
    /// `approval`: a CertificateSigningRequest's approval conditions (written like `status`).
    Approval,
    /// `eviction`: a pod's deletion that respects its disruption budget (policy/v1 Eviction).
    Eviction,
    /// `token`: a service account's token (authentication.k8s.io/v1 TokenRequest).
    Token,
}

impl Subresource {
    /// The path segment of the subresource.
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Log => "log",
            Subresource::PortForward => "portforward",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::EphemeralContainers => "ephemeralcontainers",
            Subresource::Proxy => "proxy",
            Subresource::Approval => "approval",
            Subresource::Eviction => "eviction",
            Subresource::Token => "token",
        }
    }

    /// Whether writes through it change only `.status`.
    pub fn writes_status(self) -> bool {
        matches!(self, Subresource::Status | Subresource::Approval)
    }
}

/// A decoded and defaulted object, ready for mutating admission.
#[derive(Debug)]
pub struct Decoded {
    /// The object as the kind holds it (unknown fields dropped, defaults filled in).
    pub object: Value,
    /// Paths of the fields the kind does not have.
    pub unknown_fields: Vec<String>,
}

/// Why a write was refused before it reached the store.
#[derive(Debug)]
pub enum AdmitError {
    /// The body does not decode as the kind (wrong types, bad structure).
    Malformed(String),
    /// The object decodes but breaks the kind's rules.
    Invalid(Vec<Cause>),
}

type DecodeFn = fn(Value, Option<&str>) -> Result<Decoded, AdmitError>;

type ValidateFn = fn(&Value, Option<&Value>) -> Result<(), AdmitError>;

/// Registers a kind's OpenAPI schema (and those it refers to) with a generator; returns its reference.
#[cfg(test)]
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

/// [`SchemaFn`] of a type.
#[cfg(test)]
pub fn schema_of<K: schemars::JsonSchema>(
    generator: &mut schemars::SchemaGenerator,
) -> schemars::Schema {
    generator.subschema_for::<K>()
}

/// One served resource type.
pub struct ResourceType {
    /// API group, empty for core.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// The kind, e.g. `Deployment`.
    pub kind: &'static str,
    /// The plural resource name used in paths, e.g. `deployments`.
    pub plural: &'static str,
    /// The singular name, e.g. `deployment`.
    pub singular: &'static str,
    /// kubectl short names, e.g. `deploy`.
    pub short_names: &'static [&'static str],
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether `kubectl get all` includes it.
    pub in_category_all: bool,
    /// Subresources served besides the object itself.
    pub subresources: &'static [Subresource],
    /// Field selectors accepted besides metadata.name and metadata.namespace.
    pub field_selectors: &'static [&'static str],
    /// Whether a create keeps the status it is given (nodes report theirs when they register).
    pub status_on_create: bool,
    /// The table columns of `kubectl get`.
    pub table: &'static TableSpec,
    /// Whether objects are reviews: created and answered, never stored (access, rules and token reviews).
    pub review: bool,
    /// Whether objects are computed from the server's state when read, never written (componentstatuses).
    pub computed: bool,
    decode: DecodeFn,
    validate: ValidateFn,
    /// Its OpenAPI schema, as k8s-openapi carries Kubernetes' own (for the generated documents under
    /// `control/openapi/`).
    #[cfg(test)]
    pub schema: SchemaFn,
}

impl ResourceType {
    /// `v1` for core, `<group>/<version>` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether objects of the type carry `metadata.generation` (1 on create, one more at each change of what is
    /// not metadata or status), as Kubernetes' strategies for these kinds set it; others (ConfigMaps, Services,
    /// Nodes...) have none.
    pub fn tracks_generation(&self) -> bool {
        matches!(
            self.kind,
            "Pod"
                | "Deployment"
                | "ReplicaSet"
                | "DaemonSet"
                | "StatefulSet"
                | "Job"
                | "CronJob"
                | "PodDisruptionBudget"
        )
    }

    /// The status a new object of the type carries before anyone reports one, as Go writes its empty status
    /// struct: the fields Kubernetes' types write even when zero (no `omitempty`), which clients generated from
    /// them require (the official Python client refuses a DaemonSet status without `numberReady`); `None` for
    /// kinds without a status.
    pub fn empty_status(&self) -> Option<serde_json::Value> {
        use serde_json::json;
        if !self.has(Subresource::Status) {
            return None;
        }
        Some(match self.kind {
            "Service" => json!({"loadBalancer": {}}),
            "ReplicaSet" | "ReplicationController" => json!({"replicas": 0}),
            "StatefulSet" => json!({"replicas": 0, "availableReplicas": 0}),
            "DaemonSet" => json!({"currentNumberScheduled": 0, "numberMisscheduled": 0,
                "desiredNumberScheduled": 0, "numberReady": 0}),
            "PodDisruptionBudget" => json!({"disruptionsAllowed": 0, "currentHealthy": 0,
                "desiredHealthy": 0, "expectedPods": 0}),
            "HorizontalPodAutoscaler" => json!({"desiredReplicas": 0}),
            _ => json!({}),
        })
    }

    /// Whether the type has this subresource.
    pub fn has(&self, subresource: Subresource) -> bool {
        self.subresources.contains(&subresource)
    }

    /// Decodes a written object as this type and fills in its defaults; a create's object (`new_uid` given)
    /// first gets what a new object starts with.
    pub fn decode(&self, object: Value, new_uid: Option<&str>) -> Result<Decoded, AdmitError> {
        (self.decode)(object, new_uid)
    }

    /// Checks a decoded (and admitted) object against the type's rules; `old` is the stored object an update
    /// replaces.
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Result<(), AdmitError> {
        (self.validate)(object, old)
    }

    /// Every field selector this type accepts.
    pub fn supported_field_selectors(&self) -> Vec<&'static str> {
        let mut fields = vec!["metadata.name", "metadata.namespace"];
        fields.extend(self.field_selectors);
        fields
    }
}

/// Whether a k8s-openapi scope is namespaced.
trait Scope {
    const NAMESPACED: bool;
}

impl Scope for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}

impl Scope for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}

fn validate_metadata(meta: &ObjectMeta, rule: NameRule, namespaced: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    match meta.name.as_deref() {
        None | Some("") => causes.push(Cause::required("metadata.name")),
        Some(name) => {
            let detail = match rule {
                NameRule::Label => validation::dns1123_label(name),
                NameRule::Subdomain => validation::dns1123_subdomain(name),
                NameRule::PathSegment => validation::path_segment_name(name),
            };
            if let Some(detail) = detail {
                causes.push(Cause::invalid("metadata.name", name, &detail));
            }
        }
    }
    if namespaced && meta.namespace.as_deref().is_none_or(str::is_empty) {
        causes.push(Cause::required("metadata.namespace"));
    }
    causes.extend(validation::labels("metadata.labels", meta.labels.as_ref()));
    validation::annotations(
        "metadata.annotations",
        meta.annotations.as_ref(),
        &mut causes,
    );
    for (i, finalizer) in meta.finalizers.iter().flatten().enumerate() {
        validation::qualified_name(&format!("metadata.finalizers[{i}]"), finalizer, &mut causes);
    }
    causes
}

fn decode<K>(object: Value, new_uid: Option<&str>) -> Result<Decoded, AdmitError>
where
    K: KindRules + Serialize + DeserializeOwned,
{
    let mut unknown_fields = Vec::new();
    let mut note_unknown = |path: serde_ignored::Path| {
        // serde_ignored writes `?` for the Option layers it passes through.
        let path = path.to_string();
        unknown_fields.push(
            path.split('.')
                .filter(|segment| *segment != "?")
                .collect::<Vec<_>>()
                .join("."),
        );
    };
    // One callback type for every kind: a closure's own type would make serde_ignored's deserializer, and every
    // type the kind contains, compile again for each kind (PodSpec eight times).
    let callback: &mut dyn FnMut(serde_ignored::Path) = &mut note_unknown;
    let mut decoded: K = serde_ignored::deserialize(object, callback).map_err(malformed)?;
    if let Some(uid) = new_uid {
        decoded.prepare_create(uid);
    }
    decoded.defaults();
    Ok(Decoded {
        object: serde_json::to_value(&decoded).map_err(malformed)?,
        unknown_fields,
    })
}

fn validate<K>(object: &Value, old: Option<&Value>) -> Result<(), AdmitError>
where
    K: KindRules + Resource + Metadata<Ty = ObjectMeta> + DeserializeOwned,
    K::Scope: Scope,
{
    let object = K::deserialize(object).map_err(malformed)?;
    let mut causes = validate_metadata(object.metadata(), K::NAME_RULE, K::Scope::NAMESPACED);
    causes.extend(object.validate());
    match old {
        None => causes.extend(object.validate_create()),
        Some(old) => {
            causes.extend(object.validate_update(&K::deserialize(old).map_err(malformed)?))
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(AdmitError::Invalid(causes))
    }
}

fn malformed(error: serde_json::Error) -> AdmitError {
    AdmitError::Malformed(error.to_string())
}

use Subresource::{
    Approval, Attach, Binding, EphemeralContainers, Eviction, Exec, Log, PortForward, Proxy, Scale,
    Status, Token,
};

macro_rules! resource {
    ($ty:ty, $plural:literal, $singular:literal, [$($short:literal),*], all: $all:literal, [$($sub:expr),*], fields: [$($field:literal),*], table: $table:expr $(, status_on_create: $soc:literal)? $(, review: $review:literal)? $(, computed: $computed:literal)?) => {
        ResourceType {
            group: <$ty as Resource>::GROUP,
            version: <$ty as Resource>::VERSION,
            kind: <$ty as Resource>::KIND,
            plural: $plural,
            singular: $singular,
            short_names: &[$($short),*],
            namespaced: <<$ty as Resource>::Scope as Scope>::NAMESPACED,
            in_category_all: $all,
            subresources: &[$($sub),*],
            field_selectors: &[$($field),*],
            status_on_create: false $(|| $soc)?,
            table: $table,
            review: false $(|| $review)?,
            computed: false $(|| $computed)?,
            decode: decode::<$ty>,
            validate: validate::<$ty>,
            #[cfg(test)]
            schema: schema_of::<$ty>,
        }
    };
}

/// Every resource type the apiserver serves.
pub fn all() -> &'static [ResourceType] {
    static ALL: std::sync::OnceLock<Vec<ResourceType>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        vec![
            resource!(Namespace, "namespaces", "namespace", ["ns"], all: false, [Status], fields: ["status.phase"], table: &table::NAMESPACES),
            resource!(Node, "nodes", "node", ["no"], all: false, [Status, Proxy], fields: ["spec.unschedulable"], table: &table::NODES, status_on_create: true),
            resource!(Pod, "pods", "pod", ["po"], all: true, [Status, Binding, Log, PortForward, Exec, Attach, Eviction, EphemeralContainers, Proxy], fields: ["spec.nodeName", "status.phase", "spec.restartPolicy", "spec.schedulerName", "status.podIP"], table: &table::PODS),
            resource!(Service, "services", "service", ["svc"], all: true, [Status, Proxy], fields: ["spec.clusterIP", "spec.type"], table: &table::SERVICES),
            resource!(Endpoints, "endpoints", "endpoints", ["ep"], all: false, [], fields: [], table: &table::ENDPOINTS),
            resource!(ConfigMap, "configmaps", "configmap", ["cm"], all: false, [], fields: [], table: &table::CONFIGMAPS),
            resource!(Secret, "secrets", "secret", [], all: false, [], fields: ["type"], table: &table::SECRETS),
            resource!(ServiceAccount, "serviceaccounts", "serviceaccount", ["sa"], all: false, [Token], fields: [], table: &table::SERVICE_ACCOUNTS),
            resource!(Event, "events", "event", ["ev"], all: false, [], fields: ["involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"], table: &table::EVENTS),
            resource!(LimitRange, "limitranges", "limitrange", ["limits"], all: false, [], fields: [], table: &table::CREATED),
            resource!(ResourceQuota, "resourcequotas", "resourcequota", ["quota"], all: false, [Status], fields: [], table: &table::RESOURCE_QUOTAS),
            resource!(Deployment, "deployments", "deployment", ["deploy"], all: true, [Status, Scale], fields: [], table: &table::DEPLOYMENTS),
            resource!(ReplicaSet, "replicasets", "replicaset", ["rs"], all: true, [Status, Scale], fields: [], table: &table::REPLICA_SETS),
            resource!(ReplicationController, "replicationcontrollers", "replicationcontroller", ["rc"], all: true, [Status], fields: ["status.replicas"], table: &table::REPLICATION_CONTROLLERS),
            resource!(DaemonSet, "daemonsets", "daemonset", ["ds"], all: true, [Status], fields: [], table: &table::DAEMON_SETS),
            resource!(StatefulSet, "statefulsets", "statefulset", ["sts"], all: true, [Status, Scale], fields: [], table: &table::STATEFUL_SETS),
            resource!(Job, "jobs", "job", [], all: true, [Status], fields: ["status.successful"], table: &table::JOBS),
            resource!(CronJob, "cronjobs", "cronjob", ["cj"], all: true, [Status], fields: [], table: &table::CRON_JOBS),
            resource!(Lease, "leases", "lease", [], all: false, [], fields: [], table: &table::LEASES),
            resource!(Role, "roles", "role", [], all: false, [], fields: [], table: &table::CREATED),
            resource!(ClusterRole, "clusterroles", "clusterrole", [], all: false, [], fields: [], table: &table::CREATED),
            resource!(RoleBinding, "rolebindings", "rolebinding", [], all: false, [], fields: [], table: &table::BINDINGS),
            resource!(ClusterRoleBinding, "clusterrolebindings", "clusterrolebinding", [], all: false, [], fields: [], table: &table::BINDINGS),
            resource!(EndpointSlice, "endpointslices", "endpointslice", [], all: false, [], fields: [], table: &table::ENDPOINT_SLICES),
            resource!(CertificateSigningRequest, "certificatesigningrequests", "certificatesigningrequest", ["csr"], all: false, [Status, Approval], fields: ["spec.signerName"], table: &table::CERTIFICATE_SIGNING_REQUESTS),
            resource!(HorizontalPodAutoscaler, "horizontalpodautoscalers", "horizontalpodautoscaler", ["hpa"], all: true, [Status], fields: [], table: &table::HORIZONTAL_POD_AUTOSCALERS),
            resource!(Ingress, "ingresses", "ingress", ["ing"], all: false, [Status], fields: [], table: &table::INGRESSES),
            resource!(IngressClass, "ingressclasses", "ingressclass", [], all: false, [], fields: [], table: &table::INGRESS_CLASSES),
            resource!(PersistentVolume, "persistentvolumes", "persistentvolume", ["pv"], all: false, [Status], fields: [], table: &table::PERSISTENT_VOLUMES),
            resource!(PersistentVolumeClaim, "persistentvolumeclaims", "persistentvolumeclaim", ["pvc"], all: false, [Status], fields: [], table: &table::PERSISTENT_VOLUME_CLAIMS),
            resource!(StorageClass, "storageclasses", "storageclass", ["sc"], all: false, [], fields: [], table: &table::STORAGE_CLASSES),
            resource!(PriorityClass, "priorityclasses", "priorityclass", ["pc"], all: false, [], fields: [], table: &table::PRIORITY_CLASSES),
            resource!(PodDisruptionBudget, "poddisruptionbudgets", "poddisruptionbudget", ["pdb"], all: false, [Status], fields: [], table: &table::DISRUPTION_BUDGETS),
            resource!(SelfSubjectAccessReview, "selfsubjectaccessreviews", "", [], all: false, [], fields: [], table: &table::CREATED, review: true),
            resource!(SubjectAccessReview, "subjectaccessreviews", "", [], all: false, [], fields: [], table: &table::CREATED, review: true),
            resource!(LocalSubjectAccessReview, "localsubjectaccessreviews", "", [], all: false, [], fields: [], table: &table::CREATED, review: true),
            resource!(SelfSubjectRulesReview, "selfsubjectrulesreviews", "", [], all: false, [], fields: [], table: &table::CREATED, review: true),
            resource!(SelfSubjectReview, "selfsubjectreviews", "", [], all: false, [], fields: [], table: &table::CREATED, review: true),
            resource!(TokenReview, "tokenreviews", "", [], all: false, [], fields: [], table: &table::CREATED, review: true),
            resource!(ComponentStatus, "componentstatuses", "componentstatus", ["cs"], all: false, [], fields: [], table: &table::COMPONENT_STATUSES, computed: true),
            resource!(NodeMetrics, "nodes", "", [], all: false, [], fields: [], table: &table::CREATED, computed: true),
            resource!(PodMetrics, "pods", "", [], all: false, [], fields: [], table: &table::CREATED, computed: true),
        ]
    })
}

/// The resource types whose objects are stored (all but the reviews and computed ones): what controllers watch, the garbage
/// collector follows and namespace deletion empties.
pub fn stored() -> &'static [&'static ResourceType] {
    static STORED: std::sync::OnceLock<Vec<&'static ResourceType>> = std::sync::OnceLock::new();
    STORED.get_or_init(|| all().iter().filter(|r| !r.review && !r.computed).collect())
}

/// Finds a resource type by group, version and plural name.
pub fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    all()
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource type by what a user types: plural, singular, short name or kind, any case, optionally
/// qualified by group (`deployments.apps`).
pub fn by_user_name(name: &str) -> Option<&'static ResourceType> {
    let name = name.to_ascii_lowercase();
    let (name, group) = match name.split_once('.') {
        Some((n, g)) => (n.to_owned(), Some(g.to_owned())),
        None => (name, None),
    };
    all().iter().find(|r| {
        group
            .as_deref()
            .is_none_or(|g| g == r.group || (g == "core" && r.group.is_empty()))
            && (r.plural == name
                || r.singular == name
                || r.kind.eq_ignore_ascii_case(&name)
                || r.short_names.contains(&name.as_str()))
    })
}

/// Finds the resource type of an object's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    all()
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scope_comes_from_the_kubernetes_type() {
        assert!(by_user_name("po").unwrap().namespaced);
        assert!(!by_user_name("nodes").unwrap().namespaced);
        assert!(!by_user_name("Namespace").unwrap().namespaced);
        assert_eq!(by_user_name("deployments.apps").unwrap().kind, "Deployment");
        assert!(by_user_name("deployments.batch").is_none());
    }

    #[test]
    fn a_new_status_holds_the_counts_go_writes_even_when_zero() {
        let status = |api_version, kind| by_kind(api_version, kind).unwrap().empty_status();
        assert_eq!(
            status("apps/v1", "DaemonSet").unwrap()["numberReady"],
            json!(0)
        );
        assert_eq!(
            status("autoscaling/v2", "HorizontalPodAutoscaler").unwrap(),
            json!({"desiredReplicas": 0})
        );
        assert_eq!(status("apps/v1", "Deployment").unwrap(), json!({}));
        assert!(status("v1", "ConfigMap").is_none());
    }

    #[test]
    fn a_deployment_gets_kubernetes_defaults_and_unknown_fields_are_reported() {
        let deployment = by_kind("apps/v1", "Deployment").unwrap();
        let object = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "replicaz": 3,
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": "hello.wasm"}]}}}
        });
        let admitted = deployment.decode(object, Some("u")).unwrap();
        deployment.validate(&admitted.object, None).unwrap();
        assert_eq!(admitted.unknown_fields, vec!["spec.replicaz".to_owned()]);
        let spec = &admitted.object["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            spec["template"]["spec"]["terminationGracePeriodSeconds"],
            30
        );
    }

    #[test]
    fn a_selector_that_misses_the_template_is_invalid() {
        let deployment = by_kind("apps/v1", "Deployment").unwrap();
        let object = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "other"}},
                                  "spec": {"containers": [{"name": "web"}]}}}
        });
        let decoded = deployment.decode(object, None).unwrap();
        let Err(AdmitError::Invalid(causes)) = deployment.validate(&decoded.object, None) else {
            panic!("must be invalid");
        };
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.template.metadata.labels",
                "spec.template.spec.containers[0].image"
            ]
        );
    }
}
