//! Deleting: graceful deletion, finalizers, propagation, preconditions, and deletecollection.

use super::*;

/// What a deletion did to its object.
enum Deleted {
    /// The object is marked for deletion (finalizers, a grace period, a namespace's content) and still there.
    Pending(Value),
    /// The object is gone (or, in a dry run, would be).
    Gone(Value),
}

impl Deleted {
    fn into_object(self) -> Value {
        match self {
            Deleted::Pending(object) | Deleted::Gone(object) => object,
        }
    }
}

/// Kinds whose DELETE answers with the deleted object, as their Kubernetes storage says
/// (`ReturnDeletedObject`); the others answer a Success Status naming it.
fn returns_deleted_object(resource: &ResourceType) -> bool {
    matches!(resource.kind, "Pod" | "Namespace")
}

impl ApiServer {
    /// DELETE of one object, honouring preconditions, graceful pod deletion, finalizers and propagation: the
    /// object while its deletion is pending, else a Success Status (or the object, for pods and namespaces).
    pub async fn delete(
        &self,
        target: &Target,
        name: &str,
        deletion: &Deletion,
    ) -> Result<Value, ApiError> {
        Ok(match self.delete_object(target, name, deletion).await? {
            Deleted::Pending(object) => object,
            Deleted::Gone(object) if returns_deleted_object(target.resource) => object,
            Deleted::Gone(object) => json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {
                    "name": name, "group": target.resource.group,
                    "kind": target.resource.plural, "uid": object["metadata"]["uid"],
                },
            }),
        })
    }

    /// Deletes one object; a write that races another is tried again on the new state unless the client
    /// sent preconditions.
    async fn delete_object(
        &self,
        target: &Target,
        name: &str,
        deletion: &Deletion,
    ) -> Result<Deleted, ApiError> {
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
    ) -> Result<Deleted, ApiError> {
        let resource = target.resource;
        self.admit_request(&Write {
            operation: Operation::Delete,
            resource,
            name,
            namespace: target.namespace.as_deref(),
            old: None,
            status_only: false,
        })?;
        let current = self.read(resource, target.namespace.as_deref(), name)?;
        let mut object = served(&current.value, current.mod_revision)?;
        if let Some(uid) = deletion.uid.as_deref()
            && Some(uid) != meta_str(&object, "uid")
        {
            return Err(ApiError::Conflict {
                resource: crate::apiserver::error::qualified_resource(resource),
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
                resource: crate::apiserver::error::qualified_resource(resource),
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
            return Ok(Deleted::Gone(object));
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
                return self
                    .remove(target, name, current.mod_revision)
                    .await
                    .map(Deleted::Gone);
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
            return Ok(Deleted::Pending(object));
        }
        self.remove(target, name, current.mod_revision)
            .await
            .map(Deleted::Gone)
    }

    pub(super) async fn remove(
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

    pub(super) fn namespace_has_content(&self, namespace: &str) -> Result<bool, ApiError> {
        for resource in resources::stored().iter().filter(|r| r.namespaced) {
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
                conversion: None,
            };
            match self.delete_object(&one, &name, deletion).await {
                Ok(outcome) => deleted.push(outcome.into_object()),
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(list_object(target.resource, deleted, revision, None))
    }
}
