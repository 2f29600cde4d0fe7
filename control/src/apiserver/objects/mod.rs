//! The verbs on objects: get, list, create, update, patch, delete, deletecollection, and the status, scale and
//! binding subresources.

use super::admission::{Operation, Write};
use super::error::{ApiError, qualified_kind};
use super::service_network::Taken;
use super::stored_json::Projection;
use super::{ApiServer, Target};
use crate::api::managed_fields;
use crate::api::patch::strategic_merge;
use crate::api::protobuf;
use crate::api::resources::{self, AdmitError, ResourceType, Subresource};
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::api::validation::Cause;
use crate::store::{Expect, KeyValue, ListRequest, Revision};
use base64::Engine;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions;
use serde::Deserialize;
use serde_json::{Value, json};

mod bind;
mod create;
mod delete;
mod evict;
mod patch;
mod read;
mod scale;
mod token;
mod update;

/// Largest request body accepted, as Kubernetes' 3 MiB.
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// How much of a body over [`MAX_BODY`] is read and thrown away before the 413, so that a client still
/// writing it reads the answer rather than a broken pipe.
const DISCARDED_BODY: usize = 64 * 1024 * 1024;

/// A request's body, at most [`MAX_BODY`]; a larger one is a 413 (read to its end first, up to
/// [`DISCARDED_BODY`], so the client gets the Status).
pub async fn read_body(body: axum::body::Body) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut kept = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(ApiError::BadRequest(
                "the request body could not be read".into(),
            ));
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > DISCARDED_BODY {
            break;
        }
        if seen <= MAX_BODY {
            kept.extend_from_slice(&data);
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::TooLarge(MAX_BODY));
    }
    Ok(kept.freeze())
}

/// The store key of an object.
pub fn key(resource: &ResourceType, namespace: Option<&str>, name: &str) -> String {
    format!("{}{name}", prefix(resource, namespace))
}

/// The store prefix of a list: one namespace, or all of them.
pub fn prefix(resource: &ResourceType, namespace: Option<&str>) -> String {
    let stored_as = stored_as(resource);
    match namespace {
        Some(ns) if resource.namespaced => format!("/registry/{stored_as}/{ns}/"),
        _ => format!("/registry/{stored_as}/"),
    }
}

/// Where kube-apiserver keeps a resource under `/registry/`: its plural, but for the four its storage has
/// always named otherwise (so an etcd shared with, or taken over from, Kubernetes has the same keys).
pub fn stored_as(resource: &ResourceType) -> &'static str {
    match (resource.group, resource.plural) {
        ("", "services") => "services/specs",
        ("", "endpoints") => "services/endpoints",
        ("", "nodes") => "minions",
        ("", "replicationcontrollers") => "controllers",
        (_, plural) => plural,
    }
}

/// A stored object: JSON as this server writes it, or Kubernetes' protobuf as kube-apiserver writes it (an
/// etcd taken over from Kubernetes); anything else, such as kube-apiserver's encryption at rest, is refused
/// with the reason.
pub fn stored_object(value: &[u8]) -> Result<Value, ApiError> {
    if value.starts_with(b"k8s:enc:") {
        return Err(ApiError::Internal(
            "the stored object is encrypted by kube-apiserver's encryption at rest, which this server does not read"
                .into(),
        ));
    }
    if value.starts_with(protobuf::MAGIC) {
        return protobuf::decode(value).map_err(|e| {
            ApiError::Internal(format!("the stored protobuf object cannot be read: {e}"))
        });
    }
    serde_json::from_slice(value)
        .map_err(|e| ApiError::Internal(format!("stored object is corrupt: {e}")))
}

/// A stored object as its Kubernetes type.
pub fn decode_stored<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<T, ApiError> {
    T::deserialize(&stored_object(value)?)
        .map_err(|e| ApiError::Internal(format!("stored object is corrupt: {e}")))
}

/// An object as served: the stored JSON with `metadata.resourceVersion` set to its revision.
pub fn served(value: &[u8], revision: Revision) -> Result<Value, ApiError> {
    let mut object = stored_object(value)?;
    object["metadata"]["resourceVersion"] = Value::String(revision.to_string());
    Ok(object)
}

/// [`served`], written as JSON: the stored bytes with the revision put in, decoded and written again only when
/// they are not plain JSON.
pub fn served_bytes(value: &[u8], revision: Revision) -> Result<Vec<u8>, ApiError> {
    match super::stored_json::served_json(value, revision) {
        Some(json) => Ok(json),
        None => serde_json::to_vec(&served(value, revision)?)
            .map_err(|e| ApiError::Internal(e.to_string())),
    }
}

fn stored(object: &Value) -> Result<Vec<u8>, ApiError> {
    super::stored_json::to_stored(object).map_err(|e| ApiError::Internal(e.to_string()))
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
    /// `fieldManager`: who a write's fields belong to.
    pub field_manager: Option<String>,
    /// `force`: an apply takes the fields it changes from their other managers.
    pub force: Option<bool>,
    /// The client's User-Agent, whose first part names the field manager when `fieldManager` does not.
    #[serde(skip)]
    pub user_agent: Option<String>,
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

impl Query {
    /// Who writes to `resource` (through `subresource`) and how, for managedFields; `options` names the
    /// options kind in errors (`PatchOptions`). Refuses an apply without `fieldManager`, `force` on anything
    /// but an apply, and managers that are too long or not printable, as Kubernetes does.
    pub fn writer(
        &self,
        resource: &ResourceType,
        operation: managed_fields::Operation,
        subresource: Option<Subresource>,
        options: &str,
    ) -> Result<managed_fields::Writer, ApiError> {
        let invalid = |cause| ApiError::Invalid {
            kind: format!("{options}.meta.k8s.io"),
            name: String::new(),
            causes: vec![cause],
        };
        let is_apply = operation == managed_fields::Operation::Apply;
        if self.force.is_some() && !is_apply {
            return Err(invalid(Cause::forbidden(
                "force",
                "may not be specified for non-apply patch",
            )));
        }
        let manager = match self.field_manager.as_deref() {
            Some(manager) => {
                if manager.len() > FIELD_MANAGER_MAX_LENGTH {
                    return Err(invalid(Cause::too_long(
                        "fieldManager",
                        FIELD_MANAGER_MAX_LENGTH,
                    )));
                }
                if manager.chars().any(char::is_control) {
                    return Err(invalid(Cause::invalid(
                        "fieldManager",
                        manager,
                        "must only contain printable characters",
                    )));
                }
                manager.to_owned()
            }
            None if is_apply => {
                return Err(invalid(Cause::required_because(
                    "fieldManager",
                    "is required for apply patch",
                )));
            }
            None => {
                let agent = self.user_agent.as_deref().unwrap_or_default();
                let prefix = agent.split('/').next().unwrap_or_default();
                prefix.chars().take(FIELD_MANAGER_MAX_LENGTH).collect()
            }
        };
        Ok(managed_fields::Writer {
            manager,
            operation,
            subresource: subresource
                .filter(|s| s.writes_status() || *s == Subresource::Scale)
                .map(|s| s.name().to_owned())
                .unwrap_or_default(),
            api_version: resource.api_version(),
            time: now(),
        })
    }

    /// Whether an apply may take fields from other managers.
    pub fn force(&self) -> bool {
        self.force.unwrap_or(false)
    }
}

/// `config` applied by `writer` over `live`, managedFields recorded; conflicts are 409s.
fn applied(
    live: Option<&Value>,
    config: &Value,
    writer: &managed_fields::Writer,
    force: bool,
    separate_status: bool,
) -> Result<Value, ApiError> {
    managed_fields::apply(live, config, writer, force, separate_status).map_err(|e| match e {
        managed_fields::ApplyError::Conflicts(conflicts) => ApiError::ApplyConflict(conflicts),
        managed_fields::ApplyError::Invalid(e) => ApiError::BadRequest(e.to_string()),
    })
}

/// The longest field manager Kubernetes takes.
const FIELD_MANAGER_MAX_LENGTH: usize = 128;

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
            DeleteOptions::deserialize(body).map_err(|e| {
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
    /// The fields the selectors read.
    read: Projection,
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
        let read = Projection::of(
            std::iter::once(vec!["metadata", "labels"]).chain(
                fields
                    .0
                    .iter()
                    .map(|(field, _, _)| field.split('.').collect()),
            ),
        );
        Ok(Self {
            labels,
            fields,
            read,
        })
    }

    /// Whether an object passes both selectors.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.get("metadata").and_then(|m| m.get("labels"));
        self.labels
            .matches_with(|key| labels.and_then(|l| l.get(key)).and_then(Value::as_str))
            && self.fields.matches(object)
    }

    /// Whether a stored object passes both selectors, reading only the fields they name; `None` when its
    /// bytes are not JSON.
    pub fn matches_stored(&self, stored: &[u8]) -> Option<bool> {
        self.read.read(stored).map(|fields| self.matches(&fields))
    }

    /// Whether every object passes (no selector was given).
    pub fn selects_everything(&self) -> bool {
        self.labels.0.is_empty() && self.fields.0.is_empty()
    }
}

/// A body decoded by its Content-Type: JSON, YAML as `kubectl` and users may send, or Kubernetes' protobuf
/// as client-go's typed clients send.
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
        protobuf::MEDIA_TYPE => protobuf::decode(body).map_err(|e| {
            ApiError::BadRequest(format!(
                "the body of the request could not be decoded as protobuf: {e}"
            ))
        })?,
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "application/json, application/yaml, application/vnd.kubernetes.protobuf",
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
    /// Whether the write made the object (an apply of one that did not exist): 201, not 200.
    pub created: bool,
}

/// Decodes a written object as its kind and fills in defaults; returns it and the warnings its unknown
/// fields give under the request's `fieldValidation`.
pub(super) fn decode(
    resource: &ResourceType,
    object: Value,
    new_uid: Option<&str>,
    query: &Query,
) -> Result<(Value, Vec<String>), ApiError> {
    let name = meta_str(&object, "name").unwrap_or_default().to_owned();
    let decoded = resource
        .decode(object, new_uid)
        .map_err(|e| refusal(resource, name, e))?;
    let unknown: Vec<String> = decoded
        .unknown_fields
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    match query.field_validation.as_deref().unwrap_or("Warn") {
        "Strict" if !unknown.is_empty() => Err(ApiError::BadRequest(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        ))),
        "Ignore" => Ok((decoded.object, Vec::new())),
        "Strict" | "Warn" => Ok((decoded.object, unknown)),
        other => Err(ApiError::BadRequest(format!(
            "fieldValidation must be one of Ignore, Warn or Strict, not {other:?}"
        ))),
    }
}

/// Checks an object against its kind's rules (`old`: the stored object an update replaces).
pub(super) fn validate(
    resource: &ResourceType,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    resource.validate(object, old).map_err(|e| {
        let name = meta_str(object, "name").unwrap_or_default().to_owned();
        refusal(resource, name, e)
    })
}

fn refusal(resource: &ResourceType, name: String, error: AdmitError) -> ApiError {
    match error {
        AdmitError::Malformed(detail) => ApiError::BadRequest(format!(
            "{} in version {:?} cannot be handled as a {}: {detail}",
            resource.kind, resource.version, resource.kind
        )),
        AdmitError::Invalid(causes) => ApiError::Invalid {
            kind: qualified_kind(resource),
            name,
            causes,
        },
    }
}

impl ApiServer {
    /// Gives a Service its cluster IP and node ports from what the other Services do not hold.
    pub(in crate::apiserver) fn allocate_service_addresses(
        &self,
        resource: &ResourceType,
        object: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        if resource.kind != "Service" || !resource.group.is_empty() {
            return Ok(());
        }
        let typed = |value: &Value| {
            Service::deserialize(value)
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
            let other: Service = decode_stored(&kv.value)?;
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
}

fn query_clone(query: &Query) -> Query {
    Query {
        label_selector: query.label_selector.clone(),
        field_selector: query.field_selector.clone(),
        ..Query::default()
    }
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
