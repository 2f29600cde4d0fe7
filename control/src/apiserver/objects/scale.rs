//! The scale subresource of workloads.

use super::*;

impl ApiServer {
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
        let writer = query.writer(
            target.resource,
            managed_fields::Operation::Update,
            Some(Subresource::Scale),
            "UpdateOptions",
        )?;
        let written = self
            .replace(target, name, old, new, None, query, &writer)
            .await?;
        scale_of(target.resource, &written.object)
    }

    /// GET of the scale subresource.
    pub fn get_scale(&self, target: &Target, name: &str) -> Result<Value, ApiError> {
        scale_of(target.resource, &self.get(target, name)?)
    }
}
