//! The verbs on objects: get, list, create, update, patch, delete, deletecollection, and the status, scale and
//! binding subresources.

use super::error::{ApiError, qualified_kind};
use super::service_network::Taken;
use super::{ApiServer, Target};
use crate::api::patch::strategic_merge;
use crate::api::resources::{self, AdmitError, AdmitRequest, ResourceType, Subresource};
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::store::{Expect, KeyValue, ListRequest, Revision};
use base64::Engine;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions;
use serde::Deserialize;
use serde_json::{Value, json};

/// Namespaces that may never be deleted, as Kubernetes' NamespaceLifecycle admission keeps them.
const IMMORTAL_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Largest request body accepted, as Kubernetes' 3 MiB.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The store key of an object.
pub fn key(resource: &ResourceType, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if resource.namespaced => format!("/registry/{}/{ns}/{name}", resource.plural),
        _ => format!("/registry/{}/{name}", resource.plural),
    }
}

/// The store prefix of a list: one namespace, or all of them.
pub fn prefix(resource: &ResourceType, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if resource.namespaced => format!("/registry/{}/{ns}/", resource.plural),
        _ => format!("/registry/{}/", resource.plural),
    }
}

/// An object as served: the stored JSON with `metadata.resourceVersion` set to its revision.
pub fn served(value: &[u8], revision: Revision) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(value)
        .map_err(|e| ApiError::Internal(format!("stored object is corrupt: {e}")))?;
    object["metadata"]["resourceVersion"] = Value::String(revision.to_string());
    Ok(object)
}

fn stored(object: &Value) -> Result<Vec<u8>, ApiError> {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&object).map_err(|e| ApiError::Internal(e.to_string()))
}

/// Now, to the second as Kubernetes writes times, truncated: never in the future.
fn now() -> String {
    let now = jiff::Timestamp::now();
    now.round(
        jiff::TimestampRound::new()
            .smallest(jiff::Unit::Second)
            .mode(jiff::RoundMode::Trunc),
    )
    .unwrap_or(now)
    .to_string()
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

fn parse_revision(text: &str) -> Result<Revision, ApiError> {
    text.parse()
        .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {text:?}")))
}

/// Query parameters shared by the verbs.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    /// `labelSelector`
    pub label_selector: Option<String>,
    /// `fieldSelector`
    pub field_selector: Option<String>,
    /// `limit`
    pub limit: Option<usize>,
    /// `continue`
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
    /// `resourceVersion`
    pub resource_version: Option<String>,
    /// `watch`
    pub watch: Option<String>,
    /// `allowWatchBookmarks`
    pub allow_watch_bookmarks: Option<bool>,
    /// `timeoutSeconds`
    pub timeout_seconds: Option<u64>,
    /// `sendInitialEvents`
    pub send_initial_events: Option<bool>,
    /// `fieldValidation`: Strict, Warn (default) or Ignore.
    pub field_validation: Option<String>,
    /// `dryRun=All`
    pub dry_run: Option<String>,
    /// `gracePeriodSeconds`
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`
    pub propagation_policy: Option<String>,
    /// `orphanDependents` (deprecated; `propagationPolicy=Orphan`)
    pub orphan_dependents: Option<bool>,
    /// `includeObject` for Tables.
    pub include_object: Option<String>,
}

impl Query {
    /// Whether this GET is a watch.
    pub fn is_watch(&self) -> bool {
        matches!(self.watch.as_deref(), Some("1" | "true" | "True"))
    }

    fn dry_run(&self) -> bool {
        self.dry_run.as_deref() == Some("All")
    }

    /// Refuses a `dryRun` other than `All`, which a write would otherwise carry out for real. `options` is
    /// the kind Kubernetes names in the error: `CreateOptions`, `UpdateOptions`, `PatchOptions`.
    pub fn check_dry_run(&self, options: &str) -> Result<(), ApiError> {
        match self.dry_run.as_deref() {
            None | Some("All") => Ok(()),
            Some(other) => Err(dry_run_invalid(options, other)),
        }
    }
}

fn dry_run_invalid(options: &str, value: &str) -> ApiError {
    ApiError::Invalid {
        kind: options.to_owned(),
        name: String::new(),
        causes: vec![crate::api::validation::Cause::not_supported(
            "dryRun",
            value,
            &["All"],
        )],
    }
}

/// A DELETE's options, from its body (`DeleteOptions`) and its query, the body winning as in Kubernetes.
#[derive(Debug, Default)]
pub struct Deletion {
    /// Check everything, change nothing.
    pub dry_run: bool,
    /// Seconds a pod gets to stop; none for the pod's own.
    pub grace_period_seconds: Option<i64>,
    /// Background, Foreground or Orphan.
    pub propagation_policy: String,
    /// The uid the object must have.
    pub uid: Option<String>,
    /// The resourceVersion the object must have.
    pub resource_version: Option<String>,
}

impl Deletion {
    /// The options of a DELETE: `body` is its decoded body (null when empty).
    pub fn new(body: &Value, query: &Query) -> Result<Self, ApiError> {
        let options: DeleteOptions = if body.is_null() {
            DeleteOptions::default()
        } else {
            serde_json::from_value(body.clone()).map_err(|e| {
                ApiError::BadRequest(format!("the body of the request is not DeleteOptions: {e}"))
            })?
        };
        let dry_run = match options.dry_run.as_deref() {
            Some([]) | None => query.dry_run.clone().into_iter().collect(),
            Some(values) => values.to_vec(),
        };
        if let Some(bad) = dry_run.iter().find(|v| *v != "All") {
            return Err(dry_run_invalid("DeleteOptions", bad));
        }
        let orphan = options.orphan_dependents.or(query.orphan_dependents);
        let policy = options
            .propagation_policy
            .or_else(|| query.propagation_policy.clone());
        if orphan.is_some() && policy.is_some() {
            return Err(ApiError::Invalid {
                kind: "DeleteOptions".into(),
                name: String::new(),
                causes: vec![crate::api::validation::Cause::invalid(
                    "propagationPolicy",
                    policy.as_deref().unwrap_or_default(),
                    "orphanDependents and deletionPropagation cannot be both set",
                )],
            });
        }
        let policy = match (policy, orphan) {
            (Some(policy), _) => policy,
            (None, Some(true)) => "Orphan".to_owned(),
            (None, _) => "Background".to_owned(),
        };
        if !["Background", "Foreground", "Orphan"].contains(&policy.as_str()) {
            return Err(ApiError::Invalid {
                kind: "DeleteOptions".into(),
                name: String::new(),
                causes: vec![crate::api::validation::Cause::not_supported(
                    "propagationPolicy",
                    &policy,
                    &["Foreground", "Background", "Orphan", "nil"],
                )],
            });
        }
        let preconditions = options.preconditions.unwrap_or_default();
        Ok(Self {
            dry_run: !dry_run.is_empty(),
            grace_period_seconds: options.grace_period_seconds.or(query.grace_period_seconds),
            propagation_policy: policy,
            uid: preconditions.uid,
            resource_version: preconditions.resource_version,
        })
    }

    fn has_preconditions(&self) -> bool {
        self.uid.is_some() || self.resource_version.is_some()
    }
}

/// Label and field selectors of a list or watch.
pub struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    /// Parses the selectors of a query for a resource type.
    pub fn new(resource: &ResourceType, query: &Query) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(query.label_selector.as_deref().unwrap_or_default())
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let fields = FieldSelector::parse(
            query.field_selector.as_deref().unwrap_or_default(),
            &resource.supported_field_selectors(),
        )
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(Self { labels, fields })
    }

    /// Whether an object passes both selectors.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        self.labels.matches(&labels) && self.fields.matches(object)
    }
}

/// A body decoded by its Content-Type: JSON, or YAML as `kubectl` and users may send.
pub fn decode_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let media = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    let value: Value = match media {
        "application/json"
        | ""
        | "*/*"
        | "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json" => {
            serde_json::from_slice(body).map_err(|e| {
                ApiError::BadRequest(format!(
                    "the body of the request could not be decoded as JSON: {e}"
                ))
            })?
        }
        "application/yaml" | "application/apply-patch+yaml" => serde_yaml::from_slice(body)
            .map_err(|e| {
                ApiError::BadRequest(format!(
                    "the body of the request could not be decoded as YAML: {e}"
                ))
            })?,
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "application/json, application/yaml",
            ));
        }
    };
    Ok(value)
}

fn require_object(value: &Value) -> Result<(), ApiError> {
    if value.is_object() {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "the body of the request must be a JSON object".into(),
        ))
    }
}

/// Checks the body's apiVersion, kind, namespace and name against the request, filling in what is missing.
fn align_with_target(
    object: &mut Value,
    target: &Target,
    name: Option<&str>,
) -> Result<(), ApiError> {
    require_object(object)?;
    let resource = target.resource;
    let api_version = resource.api_version();
    match object.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => object["apiVersion"] = api_version.clone().into(),
        Some(given) if given != api_version => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({given}) does not match the expected API version ({api_version})"
            )));
        }
        Some(_) => {}
    }
    match object.get("kind").and_then(Value::as_str) {
        None | Some("") => object["kind"] = resource.kind.into(),
        Some(given) if given != resource.kind => {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({given}) does not match the expected kind ({})",
                resource.kind
            )));
        }
        Some(_) => {}
    }
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    if resource.namespaced {
        let ns = target.namespace.as_deref().unwrap_or("default");
        match meta_str(object, "namespace") {
            None | Some("") => object["metadata"]["namespace"] = ns.into(),
            Some(given) if given != ns => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
            Some(_) => {}
        }
    } else if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("namespace");
    }
    if let Some(name) = name {
        match meta_str(object, "name") {
            None | Some("") => object["metadata"]["name"] = name.into(),
            Some(given) if given != name => {
                return Err(ApiError::BadRequest(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn generated_name(prefix: &str) -> String {
    // Kubernetes' alphabet: no vowels (no words) and no look-alike characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let suffix: String = bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// The outcome of a write: the object as served and the warnings for the client.
pub struct Written {
    /// The object after the write.
    pub object: Value,
    /// `Warning` headers to send.
    pub warnings: Vec<String>,
}

fn admit(
    resource: &ResourceType,
    object: Value,
    old: Option<&Value>,
    new_uid: Option<&str>,
    query: &Query,
) -> Result<(Value, Vec<String>), ApiError> {
    let name = meta_str(&object, "name").unwrap_or_default().to_owned();
    match resource.admit(AdmitRequest {
        object,
        old,
        new_uid,
    }) {
        Ok(admitted) => {
            let unknown: Vec<String> = admitted
                .unknown_fields
                .iter()
                .map(|f| format!("unknown field {f:?}"))
                .collect();
            match query.field_validation.as_deref().unwrap_or("Warn") {
                "Strict" if !unknown.is_empty() => Err(ApiError::BadRequest(format!(
                    "strict decoding error: {}",
                    unknown.join(", ")
                ))),
                "Ignore" => Ok((admitted.object, Vec::new())),
                "Strict" | "Warn" => Ok((admitted.object, unknown)),
                other => Err(ApiError::BadRequest(format!(
                    "fieldValidation must be one of Ignore, Warn or Strict, not {other:?}"
                ))),
            }
        }
        Err(AdmitError::Malformed(detail)) => Err(ApiError::BadRequest(format!(
            "{} in version {:?} cannot be handled as a {}: {detail}",
            resource.kind, resource.version, resource.kind
        ))),
        Err(AdmitError::Invalid(causes)) => Err(ApiError::Invalid {
            kind: qualified_kind(resource),
            name,
            causes,
        }),
    }
}

impl ApiServer {
    /// For a write of a Service: holds off other Service writes until this one is stored, so two Services
    /// never take the same address.
    async fn lock_service_writes(
        &self,
        resource: &ResourceType,
    ) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if resource.kind == "Service" && resource.group.is_empty() {
            Some(self.service_writes.lock().await)
        } else {
            None
        }
    }

    /// Gives a Service its cluster IP and node ports from what the other Services do not hold.
    fn allocate_service_addresses(
        &self,
        resource: &ResourceType,
        object: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        if resource.kind != "Service" || !resource.group.is_empty() {
            return Ok(());
        }
        let typed = |value: &Value| {
            serde_json::from_value::<Service>(value.clone())
                .map_err(|e| ApiError::Internal(format!("admitted Service is malformed: {e}")))
        };
        let mut service = typed(object)?;
        let old = old.map(typed).transpose()?;
        let page = self.store.list(&ListRequest {
            prefix: prefix(resource, None),
            ..Default::default()
        })?;
        let mut taken = Taken::default();
        let this = (
            service.metadata.namespace.clone(),
            service.metadata.name.clone(),
        );
        for kv in &page.items {
            let other: Service = serde_json::from_slice(&kv.value)
                .map_err(|e| ApiError::Internal(format!("stored object is corrupt: {e}")))?;
            if (
                other.metadata.namespace.clone(),
                other.metadata.name.clone(),
            ) != this
            {
                taken.add(&other);
            }
        }
        self.service_network
            .allocate(&mut service, old.as_ref(), &taken)
            .map_err(|causes| ApiError::Invalid {
                kind: qualified_kind(resource),
                name: this.1.unwrap_or_default(),
                causes,
            })?;
        let mut allocated =
            serde_json::to_value(&service).map_err(|e| ApiError::Internal(e.to_string()))?;
        allocated["metadata"] = object["metadata"].take();
        *object = allocated;
        Ok(())
    }

    /// Reads one object as served, or NotFound.
    pub fn read(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<KeyValue, ApiError> {
        self.store
            .get(&key(resource, namespace, name))?
            .ok_or_else(|| ApiError::not_found(resource, name))
    }

    /// GET of one object.
    pub fn get(&self, target: &Target, name: &str) -> Result<Value, ApiError> {
        let kv = self.read(target.resource, target.namespace.as_deref(), name)?;
        served(&kv.value, kv.mod_revision)
    }

    /// A list: the matching objects, the revision of the snapshot and the continue token of the next page.
    pub fn list(
        &self,
        target: &Target,
        query: &Query,
    ) -> Result<(Vec<Value>, Revision, Option<String>), ApiError> {
        let filter = Filter::new(target.resource, query)?;
        let prefix = prefix(target.resource, target.namespace.as_deref());
        let (mut start_after, mut revision) = match &query.continue_token {
            Some(token) => decode_continue(token)?,
            None => (None, None),
        };
        if revision.is_none()
            && let Some(rv) = query
                .resource_version
                .as_deref()
                .filter(|rv| !rv.is_empty() && *rv != "0")
            && query.continue_token.is_none()
        {
            // resourceVersionMatch=NotOlderThan semantics: the newest state is never older.
            let rv = parse_revision(rv)?;
            let current = self.store.current_revision();
            if rv > current {
                return Err(ApiError::Timeout(format!(
                    "Too large resource version: {rv}, current: {current}"
                )));
            }
        }
        let limit = query.limit.unwrap_or(0);
        let mut items = Vec::new();
        loop {
            let page = self.store.list(&ListRequest {
                prefix: prefix.clone(),
                start_after: start_after.clone(),
                limit: if limit == 0 { 0 } else { limit.max(64) },
                revision,
            })?;
            revision = Some(page.revision);
            for kv in &page.items {
                start_after = Some(kv.key.clone());
                let object = served(&kv.value, kv.mod_revision)?;
                if filter.matches(&object) {
                    items.push(object);
                    if limit > 0 && items.len() == limit {
                        let more = page.more
                            || kv.key
                                != page.items.last().map(|l| l.key.clone()).unwrap_or_default();
                        let token = more.then(|| encode_continue(kv.key.as_str(), page.revision));
                        return Ok((items, page.revision, token));
                    }
                }
            }
            if !page.more {
                return Ok((items, page.revision, None));
            }
        }
    }

    /// The namespace must exist and not be terminating before anything is created in it.
    fn check_namespace(&self, target: &Target) -> Result<(), ApiError> {
        let Some(ns) = target
            .namespace
            .as_deref()
            .filter(|_| target.resource.namespaced)
        else {
            return Ok(());
        };
        let namespaces = resources::by_path("", "v1", "namespaces")
            .ok_or_else(|| ApiError::Internal("no namespaces".into()))?;
        let kv = self.read(namespaces, None, ns)?;
        let namespace = served(&kv.value, kv.mod_revision)?;
        if namespace["status"]["phase"] == "Terminating" {
            return Err(ApiError::Forbidden(format!(
                "{} {:?} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                target.resource.plural,
                meta_str(&namespace, "name").unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// POST: creates an object.
    pub async fn create(
        &self,
        target: &Target,
        mut object: Value,
        query: &Query,
    ) -> Result<Written, ApiError> {
        align_with_target(&mut object, target, None)?;
        if meta_str(&object, "name").is_none_or(str::is_empty)
            && let Some(prefix) = meta_str(&object, "generateName").map(str::to_owned)
        {
            object["metadata"]["name"] = generated_name(&prefix).into();
        }
        self.check_namespace(target)?;
        let uid = uuid::Uuid::new_v4().to_string();
        if let Some(meta) = object["metadata"].as_object_mut() {
            for field in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
                "managedFields",
            ] {
                meta.remove(field);
            }
            meta.insert("uid".into(), uid.clone().into());
            meta.insert("creationTimestamp".into(), now().into());
            meta.remove("generation");
            if target.resource.tracks_generation() {
                meta.insert("generation".into(), 1.into());
            }
        }
        if !target.resource.status_on_create && target.resource.has(Subresource::Status) {
            object.as_object_mut().map(|o| o.remove("status"));
        }
        let _service_writes = self.lock_service_writes(target.resource).await;
        let _pod_admission = self
            .lock_pod_admission(target.resource, target.namespace.as_deref())
            .await?;
        let (mut object, mut warnings) = admit(target.resource, object, None, Some(&uid), query)?;
        warnings.extend(self.admit_pod_security(target.resource, &object, None)?);
        self.check_rbac_escalation(target.resource, &object)?;
        self.allocate_service_addresses(target.resource, &mut object, None)?;
        self.admit_pod_resources(target.resource, &mut object)?;
        let name = meta_str(&object, "name").unwrap_or_default().to_owned();
        if query.dry_run() {
            return Ok(Written { object, warnings });
        }
        let revision = self
            .store
            .put(
                key(target.resource, target.namespace.as_deref(), &name),
                stored(&object)?,
                Expect::Absent,
            )
            .await
            .map_err(|e| ApiError::from_store(e, target.resource, &name))?;
        object["metadata"]["resourceVersion"] = revision.to_string().into();
        Ok(Written { object, warnings })
    }

    /// PUT of an object or its status: replaces it, compare-and-swap on the resourceVersion it carries.
    pub async fn update(
        &self,
        target: &Target,
        name: &str,
        mut object: Value,
        subresource: Option<Subresource>,
        query: &Query,
    ) -> Result<Written, ApiError> {
        align_with_target(&mut object, target, Some(name))?;
        let current = self.read(target.resource, target.namespace.as_deref(), name)?;
        let expected = match meta_str(&object, "resourceVersion").filter(|rv| !rv.is_empty()) {
            Some(rv) => parse_revision(rv)?,
            None => current.mod_revision,
        };
        if expected != current.mod_revision {
            return Err(ApiError::stale(target.resource, name));
        }
        let old = served(&current.value, current.mod_revision)?;
        self.replace(target, name, old, object, subresource, query)
            .await
    }

    /// Writes `new` over `old` (both as served), keeping what clients may not change.
    async fn replace(
        &self,
        target: &Target,
        name: &str,
        old: Value,
        mut new: Value,
        subresource: Option<Subresource>,
        query: &Query,
    ) -> Result<Written, ApiError> {
        let resource = target.resource;
        if subresource.is_some_and(Subresource::writes_status) {
            // A status write changes the status and nothing else.
            let status = new.get("status").cloned();
            new = old.clone();
            match status {
                Some(status) => new["status"] = status,
                None => {
                    new.as_object_mut().map(|o| o.remove("status"));
                }
            }
        } else if resource.has(Subresource::Status) {
            match old.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    new.as_object_mut().map(|o| o.remove("status"));
                }
            }
        }
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old["metadata"].get(field) {
                Some(value) => new["metadata"][field] = value.clone(),
                None => {
                    new["metadata"].as_object_mut().map(|m| m.remove(field));
                }
            }
        }
        new["metadata"]
            .as_object_mut()
            .map(|m| m.remove("managedFields"));
        let _service_writes = self.lock_service_writes(resource).await;
        let (mut new, mut warnings) = admit(resource, new, Some(&old), None, query)?;
        self.check_rbac_escalation(resource, &new)?;
        if !subresource.is_some_and(Subresource::writes_status) {
            warnings.extend(self.admit_pod_security(resource, &new, Some(&old))?);
            self.allocate_service_addresses(resource, &mut new, Some(&old))?;
        }
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if resource.tracks_generation() && spec_of(&new) != spec_of(&old) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = generation.into();
        }
        let revision = parse_revision(meta_str(&old, "resourceVersion").unwrap_or("0"))?;
        if new == old || query.dry_run() {
            return Ok(Written {
                object: new,
                warnings,
            });
        }
        let key = key(resource, target.namespace.as_deref(), name);
        let finalized = !new["metadata"]["deletionTimestamp"].is_null()
            && new["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty);
        if finalized {
            // The last finalizer of an object being deleted is gone: the object goes with it.
            let (deleted_at, _) = self
                .store
                .delete(key, Expect::Revision(revision))
                .await
                .map_err(|e| ApiError::from_store(e, resource, name))?;
            new["metadata"]["resourceVersion"] = deleted_at.to_string().into();
            return Ok(Written {
                object: new,
                warnings,
            });
        }
        let written = self
            .store
            .put(key, stored(&new)?, Expect::Revision(revision))
            .await
            .map_err(|e| ApiError::from_store(e, resource, name))?;
        new["metadata"]["resourceVersion"] = written.to_string().into();
        Ok(Written {
            object: new,
            warnings,
        })
    }

    /// PATCH of an object or its status or scale, by the patch's Content-Type; retried on conflict unless the
    /// patch pins a resourceVersion.
    pub async fn patch(
        &self,
        target: &Target,
        name: &str,
        content_type: &str,
        body: &[u8],
        subresource: Option<Subresource>,
        query: &Query,
    ) -> Result<Written, ApiError> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let patch = decode_body(Some(&media), body)?;
        for _attempt in 0..8 {
            let current = match self.read(target.resource, target.namespace.as_deref(), name) {
                Err(ApiError::NotFound { .. }) if media == "application/apply-patch+yaml" => {
                    return self.create(target, patch, query).await;
                }
                other => other?,
            };
            let old = served(&current.value, current.mod_revision)?;
            let base = if subresource == Some(Subresource::Scale) {
                scale_of(target.resource, &old)?
            } else {
                old.clone()
            };
            let mut patched = base.clone();
            match media.as_str() {
                "application/json-patch+json" => {
                    let operations: json_patch::Patch = serde_json::from_value(patch.clone())
                        .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
                    json_patch::patch(&mut patched, &operations).map_err(|e| {
                        ApiError::BadRequest(format!("the JSON patch could not be applied: {e}"))
                    })?;
                }
                "application/merge-patch+json" => {
                    require_object(&patch)?;
                    json_patch::merge(&mut patched, &patch);
                }
                "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => {
                    strategic_merge(&mut patched, &patch)
                        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                }
                _ => {
                    return Err(ApiError::UnsupportedMediaType(
                        "application/json-patch+json, application/merge-patch+json, \
                         application/strategic-merge-patch+json, application/apply-patch+yaml",
                    ));
                }
            }
            let pinned = meta_str(&patched, "resourceVersion").map(str::to_owned);
            if pinned
                .as_deref()
                .is_some_and(|rv| rv != current.mod_revision.to_string())
            {
                return Err(ApiError::stale(target.resource, name));
            }
            let new = if subresource == Some(Subresource::Scale) {
                with_scale(&old, &patched)?
            } else {
                align_with_target(&mut patched, target, Some(name))?;
                patched
            };
            match self
                .replace(
                    target,
                    name,
                    old,
                    new,
                    subresource.filter(|s| s.writes_status()),
                    query,
                )
                .await
            {
                Err(ApiError::Conflict { .. })
                    if pinned.is_none()
                        || pinned.as_deref() == Some(&current.mod_revision.to_string()) =>
                {
                    continue;
                }
                Ok(written) if subresource == Some(Subresource::Scale) => {
                    return Ok(Written {
                        object: scale_of(target.resource, &written.object)?,
                        warnings: written.warnings,
                    });
                }
                other => return other,
            }
        }
        Err(ApiError::Conflict {
            resource: super::error::qualified_resource(target.resource),
            name: name.to_owned(),
            detail: "the object kept changing while the patch was applied".into(),
        })
    }

    /// PUT of the scale subresource.
    pub async fn update_scale(
        &self,
        target: &Target,
        name: &str,
        scale: Value,
        query: &Query,
    ) -> Result<Value, ApiError> {
        let current = self.read(target.resource, target.namespace.as_deref(), name)?;
        let old = served(&current.value, current.mod_revision)?;
        if let Some(rv) = meta_str(&scale, "resourceVersion").filter(|rv| !rv.is_empty())
            && parse_revision(rv)? != current.mod_revision
        {
            return Err(ApiError::stale(target.resource, name));
        }
        let new = with_scale(&old, &scale)?;
        let written = self.replace(target, name, old, new, None, query).await?;
        scale_of(target.resource, &written.object)
    }

    /// GET of the scale subresource.
    pub fn get_scale(&self, target: &Target, name: &str) -> Result<Value, ApiError> {
        scale_of(target.resource, &self.get(target, name)?)
    }

    /// POST pods/{name}/binding: assigns an unbound pod to a node.
    pub async fn bind(
        &self,
        target: &Target,
        name: &str,
        binding: Value,
    ) -> Result<Value, ApiError> {
        let node = binding["target"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Invalid {
                kind: "Binding".into(),
                name: name.to_owned(),
                causes: vec![crate::api::validation::Cause::required("target.name")],
            })?;
        let current = self.read(target.resource, target.namespace.as_deref(), name)?;
        let mut pod = served(&current.value, current.mod_revision)?;
        if let Some(bound) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::Conflict {
                resource: "pods".into(),
                name: name.to_owned(),
                detail: format!("pod {name} is already assigned to node {bound:?}"),
            });
        }
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            return Err(ApiError::Conflict {
                resource: "pods".into(),
                name: name.to_owned(),
                detail: format!("pod {name} is being deleted, cannot be assigned to a host"),
            });
        }
        pod["spec"]["nodeName"] = node.into();
        let conditions = pod["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conditions: Vec<Value> = conditions
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()}));
        pod["status"]["conditions"] = Value::Array(conditions);
        let revision = self
            .store
            .put(
                current.key,
                stored(&pod)?,
                Expect::Revision(current.mod_revision),
            )
            .await
            .map_err(|e| ApiError::from_store(e, target.resource, name))?;
        tracing::debug!(pod = name, revision, "bound");
        Ok(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        )
    }

    /// DELETE of one object, honouring preconditions, graceful pod deletion, finalizers and propagation. A
    /// write that races another is tried again on the new state unless the client sent preconditions.
    pub async fn delete(
        &self,
        target: &Target,
        name: &str,
        deletion: &Deletion,
    ) -> Result<Value, ApiError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.delete_once(target, name, deletion).await {
                Err(ApiError::Conflict { .. }) if !deletion.has_preconditions() && attempts < 8 => {
                }
                other => return other,
            }
        }
    }

    async fn delete_once(
        &self,
        target: &Target,
        name: &str,
        deletion: &Deletion,
    ) -> Result<Value, ApiError> {
        let resource = target.resource;
        if resource.kind == "Namespace" && IMMORTAL_NAMESPACES.contains(&name) {
            return Err(ApiError::Forbidden(format!(
                "namespaces {name:?} is forbidden: this namespace may not be deleted"
            )));
        }
        let current = self.read(resource, target.namespace.as_deref(), name)?;
        let mut object = served(&current.value, current.mod_revision)?;
        if let Some(uid) = deletion.uid.as_deref()
            && Some(uid) != meta_str(&object, "uid")
        {
            return Err(ApiError::Conflict {
                resource: super::error::qualified_resource(resource),
                name: name.to_owned(),
                detail: format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&object, "uid").unwrap_or_default()
                ),
            });
        }
        if let Some(rv) = deletion.resource_version.as_deref()
            && rv != current.mod_revision.to_string()
        {
            return Err(ApiError::Conflict {
                resource: super::error::qualified_resource(resource),
                name: name.to_owned(),
                detail: format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    current.mod_revision
                ),
            });
        }
        let grace = deletion.grace_period_seconds;
        let policy = deletion.propagation_policy.as_str();
        if deletion.dry_run {
            return Ok(object);
        }
        let mut finalizers: Vec<Value> = object["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let propagation_finalizer = match policy {
            "Foreground" => Some("foregroundDeletion"),
            "Orphan" => Some("orphan"),
            _ => None,
        };
        if let Some(f) = propagation_finalizer
            && !finalizers.iter().any(|x| x == f)
        {
            finalizers.push(f.into());
        }
        let bound_pod = resource.kind == "Pod"
            && object["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
        let pod_phase_done = matches!(
            object["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
        // As Kubernetes' pod strategy: a negative period is 1 s.
        let pod_grace = if bound_pod && !pod_phase_done {
            let period = grace
                .or(object["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30);
            if period < 0 { 1 } else { period }
        } else {
            0
        };
        let namespace_kind = resource.kind == "Namespace";
        let namespace_busy = namespace_kind && self.namespace_has_content(name)?;
        if !finalizers.is_empty() || pod_grace > 0 || namespace_busy {
            // Deletion is pending: mark the object; its finalizers' owners (or the node agent) finish it.
            if object["metadata"]["deletionTimestamp"].is_null() {
                // A period past the end of time (9999-12-31) saturates there rather than overflowing.
                let at = jiff::Timestamp::now()
                    .checked_add(jiff::SignedDuration::from_secs(pod_grace))
                    .unwrap_or(jiff::Timestamp::MAX);
                object["metadata"]["deletionTimestamp"] = at
                    .round(jiff::Unit::Second)
                    .unwrap_or(at)
                    .to_string()
                    .into();
                object["metadata"]["deletionGracePeriodSeconds"] = pod_grace.into();
            } else if pod_grace == 0 && finalizers.is_empty() && !namespace_busy {
                return self.remove(target, name, current.mod_revision).await;
            } else if let Some(previous) = object["metadata"]["deletionGracePeriodSeconds"].as_i64()
                && pod_grace < previous
            {
                object["metadata"]["deletionGracePeriodSeconds"] = pod_grace.into();
            }
            if !finalizers.is_empty() {
                object["metadata"]["finalizers"] = Value::Array(finalizers);
            }
            if namespace_kind {
                object["status"]["phase"] = "Terminating".into();
            }
            let revision = self
                .store
                .put(
                    current.key,
                    stored(&object)?,
                    Expect::Revision(current.mod_revision),
                )
                .await
                .map_err(|e| ApiError::from_store(e, resource, name))?;
            object["metadata"]["resourceVersion"] = revision.to_string().into();
            return Ok(object);
        }
        self.remove(target, name, current.mod_revision).await
    }

    async fn remove(
        &self,
        target: &Target,
        name: &str,
        revision: Revision,
    ) -> Result<Value, ApiError> {
        let (deleted_at, last) = self
            .store
            .delete(
                key(target.resource, target.namespace.as_deref(), name),
                Expect::Revision(revision),
            )
            .await
            .map_err(|e| ApiError::from_store(e, target.resource, name))?;
        served(&last.value, deleted_at)
    }

    fn namespace_has_content(&self, namespace: &str) -> Result<bool, ApiError> {
        for resource in resources::all().iter().filter(|r| r.namespaced) {
            let page = self.store.list(&ListRequest {
                prefix: prefix(resource, Some(namespace)),
                limit: 1,
                ..Default::default()
            })?;
            if !page.items.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// DELETE of a collection: every object the selectors match.
    pub async fn delete_collection(
        &self,
        target: &Target,
        deletion: &Deletion,
        query: &Query,
    ) -> Result<Value, ApiError> {
        if target.resource.kind == "Namespace" {
            return Err(ApiError::MethodNotAllowed);
        }
        let (items, revision, _) = self.list(
            target,
            &Query {
                limit: None,
                continue_token: None,
                ..query_clone(query)
            },
        )?;
        let mut deleted = Vec::new();
        for item in items {
            let name = meta_str(&item, "name").unwrap_or_default().to_owned();
            let namespace = meta_str(&item, "namespace").map(str::to_owned);
            let one = Target {
                resource: target.resource,
                namespace,
            };
            match self.delete(&one, &name, deletion).await {
                Ok(object) => deleted.push(object),
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(list_object(target.resource, deleted, revision, None))
    }
}

fn query_clone(query: &Query) -> Query {
    Query {
        label_selector: query.label_selector.clone(),
        field_selector: query.field_selector.clone(),
        ..Query::default()
    }
}

/// Everything of an object that counts for `metadata.generation`: all but metadata and status.
fn spec_of(object: &Value) -> Value {
    let mut rest = object.clone();
    if let Some(map) = rest.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    rest
}

/// The autoscaling/v1 Scale view of a workload.
fn scale_of(resource: &ResourceType, object: &Value) -> Result<Value, ApiError> {
    let selector = LabelSelector::from_object(&object["spec"]["selector"])
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"],
            "uid": object["metadata"]["uid"], "resourceVersion": object["metadata"]["resourceVersion"],
            "creationTimestamp": object["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": object["spec"]["replicas"].as_i64().unwrap_or(if resource.kind == "Job" { 0 } else { 1 })},
        "status": {"replicas": object["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector.render()},
    }))
}

fn with_scale(object: &Value, scale: &Value) -> Result<Value, ApiError> {
    let replicas = scale["spec"]["replicas"]
        .as_i64()
        .ok_or_else(|| ApiError::Invalid {
            kind: "Scale.autoscaling".into(),
            name: meta_str(object, "name").unwrap_or_default().to_owned(),
            causes: vec![crate::api::validation::Cause::required("spec.replicas")],
        })?;
    let mut object = object.clone();
    object["spec"]["replicas"] = replicas.into();
    Ok(object)
}

/// A `<Kind>List` object.
pub fn list_object(
    resource: &ResourceType,
    items: Vec<Value>,
    revision: Revision,
    token: Option<String>,
) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(token) = token {
        metadata["continue"] = token.into();
    }
    json!({"kind": format!("{}List", resource.kind), "apiVersion": resource.api_version(), "metadata": metadata, "items": items})
}

fn encode_continue(key: &str, revision: Revision) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": key});
    base64::engine::general_purpose::STANDARD.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(Option<String>, Option<Revision>), ApiError> {
    let bad = || ApiError::BadRequest(format!("continue key is not valid: {token:?}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let start = value["start"].as_str().ok_or_else(bad)?.to_owned();
    let revision = value["rv"].as_u64().ok_or_else(bad)?;
    Ok((Some(start), Some(revision)))
}
