//! Updating an object, or its status: a full replacement checked against what is stored.

use super::*;

impl ApiServer {
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
        let writer = query.writer(
            target.resource,
            managed_fields::Operation::Update,
            subresource,
            "UpdateOptions",
        )?;
        self.replace(target, name, old, object, subresource, query, &writer)
            .await
    }

    /// Writes `new` over `old` (both as served), keeping what clients may not change, and records the
    /// fields `writer` changed (an apply's `new` carries its managedFields already).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn replace(
        &self,
        target: &Target,
        name: &str,
        old: Value,
        mut new: Value,
        subresource: Option<Subresource>,
        query: &Query,
        writer: &managed_fields::Writer,
    ) -> Result<Written, ApiError> {
        let resource = target.resource;
        if subresource.is_some_and(Subresource::writes_status) {
            // A status write changes the status and nothing else.
            let status = new.as_object_mut().and_then(|o| o.remove("status"));
            new = old.clone();
            match status {
                Some(status) => new["status"] = status,
                None => {
                    new.as_object_mut().map(|o| o.remove("status"));
                }
            }
        } else if subresource == Some(Subresource::EphemeralContainers) {
            // Only the ephemeral containers change, and only by growing.
            let ephemeral = new["spec"].get("ephemeralContainers").cloned();
            new = old.clone();
            crate::api::validation::pod::ephemeral_containers_update(&old, ephemeral.as_ref())
                .map_err(|causes| ApiError::Invalid {
                    kind: "Pod".into(),
                    name: name.to_owned(),
                    causes,
                })?;
            if let Some(ephemeral) = ephemeral {
                new["spec"]["ephemeralContainers"] = ephemeral;
            }
        } else if resource.has(Subresource::Status) {
            match old.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    new.as_object_mut().map(|o| o.remove("status"));
                }
            }
            // A pod's ephemeral containers change only through their subresource.
            if resource.kind == "Pod" && resource.group.is_empty() {
                match old["spec"].get("ephemeralContainers") {
                    Some(ephemeral) => new["spec"]["ephemeralContainers"] = ephemeral.clone(),
                    None => {
                        new["spec"]
                            .as_object_mut()
                            .map(|s| s.remove("ephemeralContainers"));
                    }
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
        let applying = writer.operation == managed_fields::Operation::Apply;
        let sent_owners = if applying {
            None
        } else {
            managed_fields::with_sent_owners(&old, &new["metadata"]["managedFields"])
        };
        if !applying {
            new["metadata"]
                .as_object_mut()
                .map(|m| m.remove("managedFields"));
        }
        let write = Write {
            operation: Operation::Update,
            resource,
            name,
            namespace: target.namespace.as_deref(),
            old: Some(&old),
            status_only: subresource.is_some_and(Subresource::writes_status),
        };
        let held = self.hold_for_admission(&write).await?;
        let (mut new, warnings) = self.admit(&write, new, None, query)?;
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if resource.tracks_generation()
            && !crate::api::value::equal_except(&new, &old, &["metadata", "status"], &[])
        {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = generation.into();
        }
        let separate_status = resource.has(Subresource::Status);
        if managed_fields::same_content(&old, &new)
            && sent_owners.is_none()
            && (!applying || managed_fields::same_owners(&old, &new))
        {
            // Nothing changed: the owners' times stay as they were, and nothing is written.
            new["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
            if new["metadata"]["managedFields"].is_null() {
                new["metadata"]
                    .as_object_mut()
                    .map(|m| m.remove("managedFields"));
            }
        } else if !applying {
            let base = sent_owners.as_ref().unwrap_or(&old);
            managed_fields::record_update(Some(base), &mut new, writer, separate_status);
        }
        let revision = parse_revision(meta_str(&old, "resourceVersion").unwrap_or("0"))?;
        if new == old || query.dry_run() {
            return Ok(Written {
                object: new,
                warnings,
                created: false,
            });
        }
        let key = key(resource, target.namespace.as_deref(), name);
        if deleted_by_update(&old, &new) {
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
                created: false,
            });
        }
        let put = self
            .store
            .put(key, stored(&new)?, Expect::Revision(revision))
            .await;
        held.release().await;
        let written = put.map_err(|e| ApiError::from_store(e, resource, name))?;
        new["metadata"]["resourceVersion"] = written.to_string().into();
        Ok(Written {
            object: new,
            warnings,
            created: false,
        })
    }
}

/// Whether an update finishes its object's deletion, as Kubernetes' `ShouldDeleteDuringUpdate`: the object was
/// being deleted with no grace period left to honour (none, or 0) and the update leaves it no finalizer. A pod
/// in its graceful termination stays until its agent deletes it, however its status changes meanwhile.
fn deleted_by_update(old: &Value, new: &Value) -> bool {
    let metadata = &old["metadata"];
    let being_deleted = !metadata["deletionTimestamp"].is_null();
    let no_grace_left = metadata["deletionGracePeriodSeconds"]
        .as_i64()
        .is_none_or(|grace| grace == 0);
    let finalized = new["metadata"]["finalizers"]
        .as_array()
        .is_none_or(Vec::is_empty);
    being_deleted && no_grace_left && finalized
}
