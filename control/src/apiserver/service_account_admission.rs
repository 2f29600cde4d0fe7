//! ServiceAccount admission, as Kubernetes' plugin: a new pod runs as a ServiceAccount of its namespace
//! (`default` unless it names one, which must exist) and, unless the pod or its account says
//! `automountServiceAccountToken: false`, gets the account's token where Kubernetes' clients look for it: a
//! projected volume `kube-api-access-XXXXX` (a token bound to the pod, the cluster CA from the `kube-root-ca.crt`
//! ConfigMap, the namespace) mounted read-only at /var/run/secrets/kubernetes.io/serviceaccount in every
//! container and init container that has nothing mounted there.

use super::ApiServer;
use super::error::ApiError;
use super::objects::served;
use crate::api::service_account_tokens::MOUNTED_EXPIRATION_SECONDS;
use crate::api::{resources, validation};
use serde_json::{Value, json};

/// Where the token, CA and namespace are mounted.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The ConfigMap of every namespace that holds the cluster CA.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// The characters of generated name suffixes, as Kubernetes' (no vowels, no look-alikes).
const SUFFIX_CHARACTERS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

impl ApiServer {
    /// Gives a new pod its ServiceAccount and mounts the account's token. A server without a cluster CA (the
    /// insecure development mode) only names the account: there is no CA to mount.
    pub(super) fn admit_service_account(&self, pod: &mut Value) -> Result<(), ApiError> {
        let namespace = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let pod_name = pod["metadata"]["name"]
            .as_str()
            .or_else(|| pod["metadata"]["generateName"].as_str())
            .unwrap_or_default()
            .to_owned();
        let spec = &mut pod["spec"];
        let account = spec["serviceAccountName"]
            .as_str()
            .or_else(|| spec["serviceAccount"].as_str())
            .filter(|name| !name.is_empty())
            .unwrap_or("default")
            .to_owned();
        spec["serviceAccountName"] = account.clone().into();
        spec["serviceAccount"] = account.clone().into();
        if validation::dns1123_subdomain(&account).is_some() {
            // No account has such a name: validation, next, says what is wrong with it.
            return Ok(());
        }
        let accounts = resources::by_path("", "v1", "serviceaccounts")
            .ok_or_else(|| ApiError::Internal("serviceaccounts are not served".into()))?;
        let stored = match self.read(accounts, Some(&namespace), &account) {
            Ok(kv) => Some(served(&kv.value, kv.mod_revision)?),
            // The default account is made by a controller just after its namespace: a pod created in between
            // still runs as it (its token is requested when the pod starts).
            Err(ApiError::NotFound { .. }) if account == "default" => None,
            Err(ApiError::NotFound { .. }) => {
                return Err(ApiError::Forbidden(format!(
                    "pods {pod_name:?} is forbidden: error looking up service account \
                     {namespace}/{account}: serviceaccount {account:?} not found"
                )));
            }
            Err(error) => return Err(error),
        };
        let automount = spec["automountServiceAccountToken"]
            .as_bool()
            .or_else(|| stored.as_ref()?["automountServiceAccountToken"].as_bool())
            .unwrap_or(true);
        if !automount || self.token_signer.is_none() || self.ca_pem.is_none() {
            return Ok(());
        }
        let volume = format!("kube-api-access-{}", suffix());
        let mut mounted = false;
        for list in ["initContainers", "containers"] {
            for container in spec[list].as_array_mut().into_iter().flatten() {
                let has_own = container["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["mountPath"] == MOUNT_PATH);
                if has_own {
                    continue;
                }
                let mount = json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH});
                match container["volumeMounts"].as_array_mut() {
                    Some(mounts) => mounts.push(mount),
                    None => container["volumeMounts"] = json!([mount]),
                }
                mounted = true;
            }
        }
        if !mounted {
            return Ok(());
        }
        let source = json!({"name": volume, "projected": {"defaultMode": 0o644, "sources": [
            {"serviceAccountToken": {"expirationSeconds": MOUNTED_EXPIRATION_SECONDS, "path": "token"}},
            {"configMap": {"name": ROOT_CA_CONFIG_MAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]}});
        match spec["volumes"].as_array_mut() {
            Some(volumes) => volumes.push(source),
            None => spec["volumes"] = json!([source]),
        }
        Ok(())
    }
}

/// Five characters for a generated name.
fn suffix() -> String {
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| char::from(SUFFIX_CHARACTERS[usize::from(*b) % SUFFIX_CHARACTERS.len()]))
        .collect()
}
