//! Admission: the plugins every write passes, as Kubernetes' admission chain. Before the body is decoded, each
//! may refuse the request for what it is (create, update or delete of which object where); a create's or
//! update's object is decoded and defaulted as its kind, passes every mutating step (they fill in), is
//! validated by its kind's rules, then passes every validating step (they refuse, or warn) before it is
//! stored. Each plugin says
//! which writes it is about; the verbs only run the chain. A plugin that decides on what other stored objects
//! hold (addresses taken, quota used) names a lock that is held from admission until the write is stored.

use super::ApiServer;
use super::auth::REQUESTER;
use super::error::ApiError;
use super::objects::{self, Query};
use crate::api::rbac::User;
use crate::api::resources::ResourceType;
use crate::store::lock::StoreLockGuard;
use serde_json::Value;

/// What a write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operation {
    /// A new object.
    Create,
    /// A change to a stored object (or its status).
    Update,
    /// A deletion.
    Delete,
}

/// A write being admitted.
pub(super) struct Write<'a> {
    /// What it does.
    pub operation: Operation,
    /// The resource type written.
    pub resource: &'static ResourceType,
    /// The object's name (for a create, once known from the body).
    pub name: &'a str,
    /// The namespace of the request path.
    pub namespace: Option<&'a str>,
    /// The stored object an update replaces (none for a create or a delete).
    pub old: Option<&'a Value>,
    /// Whether only the status is written (the status subresource).
    pub status_only: bool,
}

impl Write<'_> {
    fn is(&self, group: &str, kind: &str) -> bool {
        self.resource.group == group && self.resource.kind == kind
    }

    fn creates(&self) -> bool {
        self.operation == Operation::Create
    }
}

/// A lock a plugin needs held: this server's mutex, and the store key that servers sharing the store take
/// turns on.
pub(super) struct AdmissionLock<'s> {
    local: &'s tokio::sync::Mutex<()>,
    key: String,
}

/// Where admission locks live in the store (held only while a write is admitted and stored).
const LOCKS: &str = "/registry/wasmkube.io/admission-locks/";

/// The lock a plugin needs held, if any.
type Lock<'s> = Result<Option<AdmissionLock<'s>>, ApiError>;

/// What validating admission says: refused, or warnings for the client.
type Verdict = Result<Vec<String>, ApiError>;

/// What mutating admission says: refused, or done (the object changed in place).
type Mutation = Result<(), ApiError>;

/// One admission plugin, named as Kubernetes names its counterpart.
trait Plugin: Sync {
    /// Refuses the request for what it is, before its body is decoded.
    fn admit_request(&self, _server: &ApiServer, _write: &Write<'_>) -> Mutation {
        Ok(())
    }

    /// The lock to hold from admission until the write is stored.
    fn lock<'s>(&self, _server: &'s ApiServer, _write: &Write<'_>) -> Lock<'s> {
        Ok(None)
    }

    /// Mutating admission: fills in the object.
    fn mutate(&self, _server: &ApiServer, _write: &Write<'_>, _object: &mut Value) -> Mutation {
        Ok(())
    }

    /// Validating admission: refuses the object, or returns warnings for the client.
    fn validate(&self, _server: &ApiServer, _write: &Write<'_>, _object: &Value) -> Verdict {
        Ok(Vec::new())
    }
}

/// The plugins, in the order they run.
const CHAIN: [&dyn Plugin; 11] = [
    &NamespaceLifecycle,
    &CertificateSigningRequester,
    &LimitRanger,
    &ServiceAccount,
    &Priority,
    &DefaultStorageClass,
    &StorageObjectInUseProtection,
    &ServiceAddresses,
    &PodSecurity,
    &RbacEscalation,
    &ResourceQuota,
];

/// Namespaces that may never be deleted, as Kubernetes' NamespaceLifecycle keeps them.
const IMMORTAL_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// NamespaceLifecycle: nothing is created in a namespace that does not exist or is being terminated, and the
/// system namespaces are never deleted.
struct NamespaceLifecycle;

impl Plugin for NamespaceLifecycle {
    fn admit_request(&self, server: &ApiServer, write: &Write<'_>) -> Mutation {
        match write.operation {
            Operation::Delete
                if write.is("", "Namespace") && IMMORTAL_NAMESPACES.contains(&write.name) =>
            {
                Err(ApiError::Forbidden(format!(
                    "namespaces {:?} is forbidden: this namespace may not be deleted",
                    write.name
                )))
            }
            Operation::Create if write.resource.namespaced => match write.namespace {
                Some(namespace) => server.check_namespace(write.resource, write.name, namespace),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

/// A new CertificateSigningRequest records who asked (`spec.username`, `spec.groups`), whatever its body said,
/// as Kubernetes' CSR registry does: the signer and approver trust it.
struct CertificateSigningRequester;

impl Plugin for CertificateSigningRequester {
    fn mutate(&self, _server: &ApiServer, write: &Write<'_>, object: &mut Value) -> Mutation {
        if !(write.is("certificates.k8s.io", "CertificateSigningRequest") && write.creates()) {
            return Ok(());
        }
        // A request made by the server itself (no requester) keeps what it wrote.
        if let Ok(user) = REQUESTER.try_with(User::clone)
            && object["spec"].is_object()
        {
            object["spec"]["username"] = user.name.into();
            object["spec"]["groups"] = user.groups.into();
        }
        Ok(())
    }
}

/// LimitRanger: a new pod gets its namespace's LimitRange defaults and must keep within their bounds.
struct LimitRanger;

impl Plugin for LimitRanger {
    fn mutate(&self, server: &ApiServer, write: &Write<'_>, object: &mut Value) -> Mutation {
        if write.is("", "Pod") && write.creates() {
            server.apply_pod_limit_ranges(object)?;
        }
        Ok(())
    }
}

/// ServiceAccount: a new pod runs as an account of its namespace and gets its token mounted.
struct ServiceAccount;

impl Plugin for ServiceAccount {
    fn mutate(&self, server: &ApiServer, write: &Write<'_>, object: &mut Value) -> Mutation {
        if write.is("", "Pod") && write.creates() {
            server.admit_service_account(object)?;
        }
        Ok(())
    }
}

/// Priority: a new pod gets the priority and preemption policy of its PriorityClass (or of the global default);
/// at most one class is the global default; the system's classes are never deleted.
struct Priority;

impl Plugin for Priority {
    fn admit_request(&self, _server: &ApiServer, write: &Write<'_>) -> Mutation {
        let system = crate::api::priority::SYSTEM_PRIORITY_CLASSES
            .iter()
            .any(|(name, _, _)| *name == write.name);
        if write.is("scheduling.k8s.io", "PriorityClass")
            && write.operation == Operation::Delete
            && system
        {
            return Err(ApiError::Forbidden(format!(
                "priorityclasses.scheduling.k8s.io {:?} is forbidden: this is a system priority class and cannot \
                 be deleted",
                write.name
            )));
        }
        Ok(())
    }

    fn mutate(&self, server: &ApiServer, write: &Write<'_>, object: &mut Value) -> Mutation {
        if write.is("", "Pod") && write.creates() {
            server.admit_pod_priority(object)?;
        }
        Ok(())
    }

    fn validate(&self, server: &ApiServer, write: &Write<'_>, object: &Value) -> Verdict {
        if write.is("scheduling.k8s.io", "PriorityClass")
            && write.operation != Operation::Delete
            && object["globalDefault"] == Value::Bool(true)
        {
            server.check_one_global_default(write, object)?;
        }
        Ok(Vec::new())
    }
}

/// DefaultStorageClass: a new claim that names no class (and has no beta class annotation) gets the default
/// StorageClass's name; an explicit `""` keeps it classless.
struct DefaultStorageClass;

impl Plugin for DefaultStorageClass {
    fn mutate(&self, server: &ApiServer, write: &Write<'_>, object: &mut Value) -> Mutation {
        if write.is("", "PersistentVolumeClaim") && write.creates() {
            server.admit_default_storage_class(object)?;
        }
        Ok(())
    }
}

/// StorageObjectInUseProtection: new claims and volumes carry the finalizer their protection controller
/// removes once nothing uses them (`kubernetes.io/pvc-protection`, `kubernetes.io/pv-protection`).
struct StorageObjectInUseProtection;

impl Plugin for StorageObjectInUseProtection {
    fn mutate(&self, _server: &ApiServer, write: &Write<'_>, object: &mut Value) -> Mutation {
        let finalizer = if write.is("", "PersistentVolumeClaim") {
            crate::api::storage::PVC_PROTECTION
        } else if write.is("", "PersistentVolume") {
            crate::api::storage::PV_PROTECTION
        } else {
            return Ok(());
        };
        if write.creates() {
            crate::api::storage::add_finalizer(object, finalizer);
        }
        Ok(())
    }
}

/// A Service gets its cluster IP and node ports from what other Services do not hold (Kubernetes does this
/// in the Service registry; here it is one more mutating step, serialized with every other Service write).
struct ServiceAddresses;

impl Plugin for ServiceAddresses {
    fn lock<'s>(&self, server: &'s ApiServer, write: &Write<'_>) -> Lock<'s> {
        Ok(write.is("", "Service").then(|| AdmissionLock {
            local: &server.service_writes,
            key: format!("{LOCKS}services"),
        }))
    }

    fn mutate(&self, server: &ApiServer, write: &Write<'_>, object: &mut Value) -> Mutation {
        if write.is("", "Service") && !write.status_only {
            server.allocate_service_addresses(write.resource, object, write.old)?;
        }
        Ok(())
    }
}

/// PodSecurity: pods against their namespace's enforced level, templates against its warn level, and
/// namespaces' level labels.
struct PodSecurity;

impl Plugin for PodSecurity {
    fn validate(&self, server: &ApiServer, write: &Write<'_>, object: &Value) -> Verdict {
        if write.status_only {
            return Ok(Vec::new());
        }
        server.admit_pod_security(write.resource, object, write.old)
    }
}

/// RBAC's escalation check on roles and bindings.
struct RbacEscalation;

impl Plugin for RbacEscalation {
    fn validate(&self, server: &ApiServer, write: &Write<'_>, object: &Value) -> Verdict {
        server.check_rbac_escalation(write.resource, object)?;
        Ok(Vec::new())
    }
}

/// ResourceQuota: a new pod must fit its namespace's quotas; creations of pods in a namespace with quotas are
/// serialized, so two never take the last of one.
struct ResourceQuota;

impl Plugin for ResourceQuota {
    fn lock<'s>(&self, server: &'s ApiServer, write: &Write<'_>) -> Lock<'s> {
        if !(write.is("", "Pod") && write.creates()) {
            return Ok(None);
        }
        let Some(namespace) = write.namespace else {
            return Ok(None);
        };
        let quotas: Vec<Value> = server.list_in("resourcequotas", namespace)?;
        Ok((!quotas.is_empty()).then(|| AdmissionLock {
            local: &server.pod_admission,
            key: format!("{LOCKS}resourcequotas/{namespace}"),
        }))
    }

    fn validate(&self, server: &ApiServer, write: &Write<'_>, object: &Value) -> Verdict {
        if write.is("", "Pod") && write.creates() {
            server.check_pod_quota(object)?;
        }
        Ok(Vec::new())
    }
}

/// The locks a write's plugins hold until it is stored.
pub(super) struct Held<'s> {
    /// The store keys, released first.
    shared: Vec<StoreLockGuard>,
    _local: Vec<tokio::sync::MutexGuard<'s, ()>>,
}

impl Held<'_> {
    /// Releases the locks once the write is stored (dropping them releases them too, in the background).
    pub(super) async fn release(self) {
        for guard in self.shared {
            guard.release().await;
        }
    }
}

impl ApiServer {
    /// The namespace must exist and not be terminating before anything is created in it.
    fn check_namespace(&self, resource: &ResourceType, name: &str, namespace: &str) -> Mutation {
        let namespaces = crate::api::resources::by_path("", "v1", "namespaces")
            .ok_or_else(|| ApiError::Internal("namespaces are not served".into()))?;
        let kv = self.read(namespaces, None, namespace)?;
        if namespace_phase(&kv.value)?.as_deref() == Some("Terminating") {
            return Err(ApiError::Forbidden(format!(
                "{} {name:?} is forbidden: unable to create new content in namespace {namespace} because it \
                 is being terminated",
                resource.plural
            )));
        }
        Ok(())
    }

    /// Asks every plugin whether the request may go on, before its body is decoded.
    pub(super) fn admit_request(&self, write: &Write<'_>) -> Mutation {
        CHAIN
            .iter()
            .try_for_each(|plugin| plugin.admit_request(self, write))
    }

    /// Takes the locks the write's plugins name, in the chain's order (so two writes never wait on each other
    /// crosswise). Hold them until the write is stored.
    pub(super) async fn hold_for_admission(&self, write: &Write<'_>) -> Result<Held<'_>, ApiError> {
        let holder = format!("apiserver-{}", std::process::id());
        let (mut local, mut shared) = (Vec::new(), Vec::new());
        for plugin in CHAIN {
            if let Some(lock) = plugin.lock(self, write)? {
                local.push(lock.local.lock().await);
                let guard = crate::store::lock::acquire(self.store.clone(), lock.key, &holder)
                    .await
                    .map_err(|e| ApiError::from_store(e, write.resource, write.name))?;
                shared.push(guard);
            }
        }
        Ok(Held {
            shared,
            _local: local,
        })
    }

    /// Admits a create's or update's object, as Kubernetes does: decoded as its kind and defaulted, filled in
    /// by every mutating plugin, checked against its kind's rules, then against every validating plugin.
    /// Returns the object to store and the warnings for the client.
    pub(super) fn admit(
        &self,
        write: &Write<'_>,
        object: Value,
        new_uid: Option<&str>,
        query: &Query,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let (mut object, mut warnings) = objects::decode(write.resource, object, new_uid, query)?;
        for plugin in CHAIN {
            plugin.mutate(self, write, &mut object)?;
        }
        objects::validate(write.resource, &object, write.old)?;
        for plugin in CHAIN {
            warnings.extend(plugin.validate(self, write, &object)?);
        }
        Ok((object, warnings))
    }
}

/// A stored Namespace's `status.phase`, read without building the rest of it (every namespaced create asks).
fn namespace_phase(stored: &[u8]) -> Result<Option<String>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Namespace {
        status: Option<Status>,
    }
    #[derive(serde::Deserialize)]
    struct Status {
        phase: Option<String>,
    }
    match serde_json::from_slice::<Namespace>(stored) {
        Ok(namespace) => Ok(namespace.status.and_then(|s| s.phase)),
        // Kubernetes' protobuf (an etcd taken over from kube-apiserver), or an unreadable object's error.
        Err(_) => Ok(super::objects::stored_object(stored)?["status"]["phase"]
            .as_str()
            .map(str::to_owned)),
    }
}
