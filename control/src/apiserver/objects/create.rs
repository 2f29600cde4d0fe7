//! Creating an object.

use super::*;

impl ApiServer {
    /// POST: creates an object, written by `writer` (an apply creates what does not exist yet).
    pub async fn create(
        &self,
        target: &Target,
        mut object: Value,
        query: &Query,
        writer: &managed_fields::Writer,
    ) -> Result<Written, ApiError> {
        align_with_target(&mut object, target, None)?;
        if meta_str(&object, "name").is_none_or(str::is_empty)
            && let Some(prefix) = meta_str(&object, "generateName").map(str::to_owned)
        {
            object["metadata"]["name"] = generated_name(&prefix).into();
        }
        let name = meta_str(&object, "name").unwrap_or_default().to_owned();
        let write = Write {
            operation: Operation::Create,
            resource: target.resource,
            name: &name,
            namespace: target.namespace.as_deref(),
            old: None,
            status_only: false,
        };
        self.admit_request(&write)?;
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
        let separate_status = target.resource.has(Subresource::Status);
        if !target.resource.status_on_create && separate_status {
            object.as_object_mut().map(|o| o.remove("status"));
        }
        if writer.operation == managed_fields::Operation::Apply {
            object = applied(None, &object, writer, query.force(), separate_status)?;
        }
        let held = self.hold_for_admission(&write).await?;
        let (mut object, warnings) = self.admit(&write, object, Some(&uid), query)?;
        if let Some(empty) = target.resource.empty_status()
            && object.get("status").is_none_or(Value::is_null)
        {
            object["status"] = empty;
        }
        if writer.operation == managed_fields::Operation::Update {
            managed_fields::record_update(None, &mut object, writer, separate_status);
        }
        if query.dry_run() {
            return Ok(Written {
                object,
                warnings,
                created: true,
            });
        }
        let put = self
            .store
            .put(
                key(target.resource, target.namespace.as_deref(), &name),
                stored(&object)?,
                Expect::Absent,
            )
            .await;
        held.release().await;
        let revision = put.map_err(|e| ApiError::from_store(e, target.resource, &name))?;
        object["metadata"]["resourceVersion"] = revision.to_string().into();
        Ok(Written {
            object,
            warnings,
            created: true,
        })
    }

    /// Creates an object on behalf of a component of the server itself (bootstrap objects), as `manager`.
    pub fn create_by<'a>(
        &'a self,
        target: &'a Target,
        object: Value,
        manager: &'a str,
    ) -> wasmkube_core::EntryFuture<'a, Result<Written, ApiError>> {
        Box::pin(self.create_as(target, object, manager))
    }

    async fn create_as(
        &self,
        target: &Target,
        object: Value,
        manager: &str,
    ) -> Result<Written, ApiError> {
        let query = Query {
            field_manager: Some(manager.to_owned()),
            ..Query::default()
        };
        let writer = query.writer(
            target.resource,
            managed_fields::Operation::Update,
            None,
            "CreateOptions",
        )?;
        self.create(target, object, &query, &writer).await
    }
}
