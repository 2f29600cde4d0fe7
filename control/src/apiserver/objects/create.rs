//! Creating an object: into a namespace that exists and is not terminating.

use super::*;

impl ApiServer {
    /// The namespace must exist and not be terminating before anything is created in it.
    pub(super) fn check_namespace(&self, target: &Target) -> Result<(), ApiError> {
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
        let write = Write {
            resource: target.resource,
            namespace: target.namespace.as_deref(),
            old: None,
            status_only: false,
        };
        let _held = self.hold_for_admission(&write).await?;
        let (mut object, mut warnings) = admit(target.resource, object, None, Some(&uid), query)?;
        warnings.extend(self.admit_write(&write, &mut object)?);
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
}
