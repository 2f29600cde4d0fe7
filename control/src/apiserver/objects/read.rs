//! Reading: one object, or a list of them (paged, filtered).

use super::*;

impl ApiServer {
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
        let mut items = Vec::new();
        let (revision, token) = self.list_stored(target, query, |stored, revision| {
            items.push(served(stored, revision)?);
            Ok(())
        })?;
        Ok((items, revision, token))
    }

    /// A list given to `each` one matching object at a time — its stored bytes and the revision it was written
    /// at —, read from the store a page at a time, so that a list of every pod is never held decoded (the
    /// selectors read only the fields they name); returns the revision of the snapshot and the continue token
    /// of the next page.
    pub fn list_stored(
        &self,
        target: &Target,
        query: &Query,
        mut each: impl FnMut(&[u8], Revision) -> Result<(), ApiError>,
    ) -> Result<(Revision, Option<String>), ApiError> {
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
        let mut listed = 0;
        loop {
            let page = self.store.list(&ListRequest {
                prefix: prefix.clone(),
                start_after: start_after.clone(),
                limit: if limit == 0 {
                    STORE_PAGE
                } else {
                    limit.clamp(64, STORE_PAGE)
                },
                revision,
            })?;
            revision = Some(page.revision);
            for kv in &page.items {
                start_after = Some(kv.key.clone());
                let matches = filter.selects_everything()
                    || match filter.matches_stored(&kv.value) {
                        Some(matches) => matches,
                        None => filter.matches(&served(&kv.value, kv.mod_revision)?),
                    };
                if matches {
                    each(&kv.value, kv.mod_revision)?;
                    listed += 1;
                    if limit > 0 && listed == limit {
                        let more = page.more
                            || kv.key
                                != page.items.last().map(|l| l.key.clone()).unwrap_or_default();
                        let token = more.then(|| encode_continue(kv.key.as_str(), page.revision));
                        return Ok((page.revision, token));
                    }
                }
            }
            if !page.more {
                return Ok((page.revision, None));
            }
        }
    }
}

/// How many stored objects a list reads at a time, whatever the client's limit.
const STORE_PAGE: usize = 500;
