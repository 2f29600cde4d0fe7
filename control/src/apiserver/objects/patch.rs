//! Patching an object: JSON, merge and strategic-merge patches, and server-side apply.

use super::*;

impl ApiServer {
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
        let applying = media == "application/apply-patch+yaml";
        // An applied configuration of a converted version is applied as the stored version; other patches
        // change the object as the request's version shows it.
        let patch = if applying {
            target.to_stored(patch)?
        } else {
            patch
        };
        let converts = target.conversion.is_some() && !applying;
        let writer = query.writer(
            target.resource,
            if applying {
                managed_fields::Operation::Apply
            } else {
                managed_fields::Operation::Update
            },
            subresource,
            "PatchOptions",
        )?;
        let separate_status = target.resource.has(Subresource::Status);
        for _attempt in 0..8 {
            let current = match self.read(target.resource, target.namespace.as_deref(), name) {
                Err(ApiError::NotFound { .. }) if applying => {
                    return self.create(target, patch, query, &writer).await;
                }
                other => other?,
            };
            let old = served(&current.value, current.mod_revision)?;
            let scale = if subresource == Some(Subresource::Scale) {
                Some(scale_of(target.resource, &old)?)
            } else {
                None
            };
            let shown = converts.then(|| target.to_served(old.clone()));
            let base = scale.as_ref().or(shown.as_ref()).unwrap_or(&old);
            let mut patched = base.clone();
            match media.as_str() {
                "application/json-patch+json" => {
                    let operations: json_patch::Patch = json_patch::Patch::deserialize(&patch)
                        .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
                    json_patch::patch(&mut patched, &operations).map_err(|e| {
                        ApiError::BadRequest(format!("the JSON patch could not be applied: {e}"))
                    })?;
                }
                "application/merge-patch+json" => {
                    require_object(&patch)?;
                    json_patch::merge(&mut patched, &patch);
                }
                "application/apply-patch+yaml" if subresource != Some(Subresource::Scale) => {
                    require_object(&patch)?;
                    patched = applied(Some(base), &patch, &writer, query.force(), separate_status)?;
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
            } else if converts {
                let mut patched = target.to_stored(patched)?;
                align_with_target(&mut patched, target, Some(name))?;
                patched
            } else {
                align_with_target(&mut patched, target, Some(name))?;
                patched
            };
            // As Kubernetes: applying a Scale applies the parent's replicas, owned with subresource `scale`
            // (and in conflict with another manager that owns them).
            let new = if applying && subresource == Some(Subresource::Scale) {
                let config = serde_json::json!({
                    "apiVersion": old["apiVersion"], "kind": old["kind"], "metadata": {"name": name},
                    "spec": {"replicas": new["spec"]["replicas"]},
                });
                applied(Some(&old), &config, &writer, query.force(), separate_status)?
            } else {
                new
            };
            match self
                .replace(
                    target,
                    name,
                    old,
                    new,
                    subresource.filter(|s| *s != Subresource::Scale),
                    query,
                    &writer,
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
                        created: false,
                    });
                }
                other => return other,
            }
        }
        Err(ApiError::Conflict {
            resource: crate::apiserver::error::qualified_resource(target.resource),
            name: name.to_owned(),
            detail: "the object kept changing while the patch was applied".into(),
        })
    }
}
