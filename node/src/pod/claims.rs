//! persistentVolumeClaim volumes on this node: a claim's volume is a directory under the node's local volume
//! root (`--local-path-root`), which the agent announces on its Node for the local-path provisioner. A volume
//! whose path lies outside that root is never mounted, however it was written; the directories of volumes
//! the provisioner made are created at their first mount and removed when their volume is deleted.

use super::safe_path::{self, UnsafePath};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmkube_core::local_volumes::{LOCAL_PATH_PROVISIONER, PROVISIONED_BY};
use wasmkube_core::node_selection::selector_matches;

/// The prefix of the directories the provisioner's volumes get (`pvc-UID_NAMESPACE_CLAIM`).
const PROVISIONED_PREFIX: &str = "pvc-";
/// How long a pod waits for its claims to be bound (the kubelet waits about two minutes for its volumes).
const BINDING_WAIT: Duration = Duration::from_secs(120);

/// Why a claim's volume cannot be mounted.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Not yet: the claim is unbound or its volume not made; it may be soon.
    #[error("{0}")]
    NotReady(String),
    /// Never, as it is: a missing claim, a volume outside the root.
    #[error("{0}")]
    Refused(String),
    /// The apiserver could not be asked.
    #[error("{0}")]
    Api(#[from] kube::Error),
}

/// The directory this node keeps local volumes in.
#[derive(Debug, Clone)]
pub struct LocalVolumes {
    root: PathBuf,
}

impl LocalVolumes {
    /// The root at `root`, made if missing (its canonical path: what the Node announces).
    pub fn new(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Self {
            root: root.canonicalize()?,
        })
    }

    /// The root itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a volume on this node: its `local` or `hostPath` path, which must lie under the root
    /// (and resolve there through any symlinks). The provisioner's volumes are made at their first mount.
    pub fn directory(&self, volume: &PersistentVolume) -> Result<PathBuf, ClaimError> {
        let name = volume.metadata.name.as_deref().unwrap_or_default();
        let spec = volume.spec.as_ref();
        let (path, create) = match (
            spec.and_then(|s| s.local.as_ref()),
            spec.and_then(|s| s.host_path.as_ref()),
        ) {
            (Some(local), _) => (local.path.as_str(), is_provisioned(volume)),
            (None, Some(host)) => (
                host.path.as_str(),
                host.type_.as_deref() == Some("DirectoryOrCreate"),
            ),
            (None, None) => {
                return Err(ClaimError::Refused(format!(
                    "PersistentVolume {name:?}: only local and hostPath volumes can be mounted on this node"
                )));
            }
        };
        let outside = || {
            ClaimError::Refused(format!(
                "PersistentVolume {name:?}: path {path:?} is outside this node's local volume root {}",
                self.root.display()
            ))
        };
        let relative = Path::new(path)
            .strip_prefix(&self.root)
            .map_err(|_| outside())?;
        let relative = relative
            .to_str()
            .filter(|r| !r.is_empty())
            .ok_or_else(outside)?;
        safe_path::directory_within(&self.root, "volume path", relative, create).map_err(
            |e| match e {
                UnsafePath::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    ClaimError::Refused(format!(
                        "PersistentVolume {name:?}: path {path:?} does not exist on this node"
                    ))
                }
                UnsafePath::Relative { .. } | UnsafePath::Escapes { .. } => outside(),
                other => ClaimError::Refused(format!("PersistentVolume {name:?}: {other}")),
            },
        )
    }

    /// The directory of a deleted volume the provisioner made, if it is one of the root's own (never a path
    /// elsewhere, never through a symlink).
    fn provisioned_directory(&self, volume: &PersistentVolume) -> Option<PathBuf> {
        if !is_provisioned(volume) {
            return None;
        }
        let path = Path::new(&volume.spec.as_ref()?.local.as_ref()?.path);
        let relative = path.strip_prefix(&self.root).ok()?.to_str()?;
        let own = safe_path::segment("volume", relative).ok()?;
        own.starts_with(PROVISIONED_PREFIX)
            .then(|| self.root.join(own))
    }

    /// Removes a directory of the root (not a symlink to one elsewhere).
    fn remove(&self, dir: &Path) {
        let is_dir = std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
        if !is_dir {
            return;
        }
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {
                tracing::info!(path = %dir.display(), "removed the directory of a deleted volume")
            }
            Err(error) => {
                tracing::warn!(path = %dir.display(), %error, "cannot remove a deleted volume's directory")
            }
        }
    }

    /// The provisioner's directories in the root.
    fn provisioned_directories(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(PROVISIONED_PREFIX)
            })
            .map(|e| e.path())
            .collect()
    }
}

fn is_provisioned(volume: &PersistentVolume) -> bool {
    volume
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVISIONED_BY))
        .map(String::as_str)
        == Some(LOCAL_PATH_PROVISIONER)
}

/// The volume bound to a claim, once it is.
async fn bound_volume(
    client: &kube::Client,
    namespace: &str,
    claim: &str,
) -> Result<PersistentVolume, ClaimError> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let Some(found) = claims.get_opt(claim).await? else {
        return Err(ClaimError::Refused(format!(
            "persistentvolumeclaim {claim:?} not found"
        )));
    };
    let volume_name = found
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty());
    let bound = found.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let (Some(volume_name), true) = (volume_name, bound) else {
        return Err(ClaimError::NotReady(format!(
            "error processing PVC {namespace}/{claim}: PVC is not bound"
        )));
    };
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    volumes.get_opt(volume_name).await?.ok_or_else(|| {
        ClaimError::NotReady(format!(
            "error processing PVC {namespace}/{claim}: volume {volume_name:?} not found"
        ))
    })
}

/// Refuses a volume whose node affinity leaves this node out (the scheduler keeps pods away from it; a pod
/// bound to a node by hand is not).
async fn check_node_affinity(
    client: &kube::Client,
    node_name: &str,
    volume: &PersistentVolume,
) -> Result<(), ClaimError> {
    let Some(required) = volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return Ok(());
    };
    let node = Api::<Node>::all(client.clone()).get(node_name).await?;
    if selector_matches(required, &node) {
        Ok(())
    } else {
        Err(ClaimError::Refused(format!(
            "PersistentVolume {:?}: its node affinity does not allow node {node_name:?}",
            volume.metadata.name.as_deref().unwrap_or_default()
        )))
    }
}

/// The directory of a claim's volume, waiting (up to the kubelet's two minutes, while `stopped` says not) for
/// the claim to be bound.
pub async fn directory(
    client: &kube::Client,
    local: &LocalVolumes,
    node_name: &str,
    namespace: &str,
    claim: &str,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> Result<PathBuf, ClaimError> {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match bound_volume(client, namespace, claim).await {
            Ok(volume) => {
                check_node_affinity(client, node_name, &volume).await?;
                return local.directory(&volume);
            }
            Err(ClaimError::NotReady(why))
                if started.elapsed() < BINDING_WAIT && !*stopped.borrow() =>
            {
                tracing::debug!(%namespace, %claim, %why, "waiting for the claim");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(error),
        }
    }
}

/// Follows the volumes, removing the directory of each provisioned volume deleted (and, after each full
/// list, of any the list no longer has): what reclaim policy Delete asks of the node.
pub async fn remove_deleted(client: kube::Client, local: LocalVolumes) {
    let volumes: Api<PersistentVolume> = Api::all(client);
    let mut listed: Option<HashSet<PathBuf>> = None;
    let mut events =
        std::pin::pin!(watcher::watcher(volumes, watcher::Config::default()).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Delete(volume)) => {
                if let Some(dir) = local.provisioned_directory(&volume) {
                    local.remove(&dir);
                }
            }
            Ok(Event::Init) => listed = Some(HashSet::new()),
            Ok(Event::InitApply(volume)) => {
                if let (Some(seen), Some(dir)) =
                    (listed.as_mut(), local.provisioned_directory(&volume))
                {
                    seen.insert(dir);
                }
            }
            Ok(Event::InitDone) => {
                if let Some(seen) = listed.take() {
                    for dir in local.provisioned_directories() {
                        if !seen.contains(&dir) {
                            local.remove(&dir);
                        }
                    }
                }
            }
            Ok(Event::Apply(_)) => {}
            Err(error) => tracing::warn!(%error, "volume watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn volume(source: serde_json::Value, provisioned: bool) -> PersistentVolume {
        let mut object = json!({"metadata": {"name": "pv-1"}, "spec": source});
        if provisioned {
            object["metadata"]["annotations"] = json!({PROVISIONED_BY: LOCAL_PATH_PROVISIONER});
        }
        serde_json::from_value(object).unwrap()
    }

    #[test]
    fn a_volume_is_mounted_only_from_under_the_root() {
        let scratch = tempfile::tempdir().unwrap();
        let local = LocalVolumes::new(&scratch.path().join("storage")).unwrap();
        let root = local.root().display().to_string();
        let mine = volume(
            json!({"local": {"path": format!("{root}/pvc-u1_ns_data")}}),
            true,
        );
        let dir = local.directory(&mine).unwrap();
        assert!(dir.is_dir(), "made at its first mount");
        for outside in ["/etc", &format!("{root}/../escape"), &root] {
            let hostile = volume(
                json!({"hostPath": {"path": outside, "type": "DirectoryOrCreate"}}),
                false,
            );
            let error = local.directory(&hostile).unwrap_err().to_string();
            assert!(
                error.contains("is outside this node's local volume root"),
                "{outside}: {error}"
            );
        }
        // A symlink planted under the root that leads out is refused too.
        std::os::unix::fs::symlink("/etc", local.root().join("link")).unwrap();
        let linked = volume(json!({"local": {"path": format!("{root}/link")}}), false);
        assert!(
            local
                .directory(&linked)
                .unwrap_err()
                .to_string()
                .contains("outside")
        );
        let missing = volume(json!({"local": {"path": format!("{root}/static")}}), false);
        assert!(
            local
                .directory(&missing)
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
        assert!(!scratch.path().join("escape").exists());
    }

    #[test]
    fn only_the_provisioners_own_directories_are_removed() {
        let scratch = tempfile::tempdir().unwrap();
        let local = LocalVolumes::new(scratch.path()).unwrap();
        let root = local.root().display().to_string();
        let mine = volume(
            json!({"local": {"path": format!("{root}/pvc-u1_ns_data")}}),
            true,
        );
        let dir = local.directory(&mine).unwrap();
        std::fs::write(dir.join("value"), "kept until the volume goes").unwrap();
        let theirs = volume(json!({"local": {"path": "/etc"}}), true);
        assert!(local.provisioned_directory(&theirs).is_none());
        let static_one = volume(
            json!({"local": {"path": format!("{root}/pvc-static")}}),
            false,
        );
        assert!(local.provisioned_directory(&static_one).is_none());
        let found = local.provisioned_directory(&mine).unwrap();
        local.remove(&found);
        assert!(!dir.exists());
    }
}
