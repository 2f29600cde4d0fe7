//! The layout of an agent's data directory, in one place:
//!
//! ```text
//! DATA_DIR/
//!   pki/ca.crt, pki/node.crt, pki/node.key   the cluster CA and the node's certificate and key (`join`)
//!   cache/                                   compiled Wasm (wasmtime's cache)
//!   images/                                  pulled images
//!   pods/NAMESPACE_NAME_UID/
//!     logs/CONTAINER/RUN.log                 each run's output (RUN.done once it ended); a first run's file
//!                                            is made at its first output
//!     volumes/VOLUME/                        emptyDir volumes and the files of configMap, secret... volumes
//!     workdir/CONTAINER/                     a container's own working directory (not in a volume)
//!   storage/pvc-UID_NAMESPACE_CLAIM/         local persistent volumes (the default `--local-path-root`)
//! ```
//!
//! Every segment that comes from an object (namespace, names, uid) is checked to be one plain path segment.

use crate::pod::safe_path::{UnsafePath, segment};
use std::path::{Path, PathBuf};

/// An agent's data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cluster CA the node trusts.
    pub fn cluster_ca(&self) -> PathBuf {
        self.root.join("pki/ca.crt")
    }

    /// The node's client certificate.
    pub fn node_certificate(&self) -> PathBuf {
        self.root.join("pki/node.crt")
    }

    /// The node's private key.
    pub fn node_key(&self) -> PathBuf {
        self.root.join("pki/node.key")
    }

    /// wasmtime's cache of compiled code.
    pub fn compile_cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// Pulled images.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// The default root of local persistent volumes.
    pub fn local_volumes(&self) -> PathBuf {
        self.root.join("storage")
    }

    fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }

    /// The directory of one pod, refused when a name is not one plain path segment.
    pub fn pod(&self, namespace: &str, name: &str, uid: &str) -> Result<PodDir, UnsafePath> {
        let dir = format!(
            "{}_{}_{}",
            segment("namespace", namespace)?,
            segment("pod", name)?,
            segment("uid", uid)?
        );
        Ok(PodDir(self.pods().join(dir)))
    }

    /// The newest directory of a pod known by namespace and name: a pod recreated under the same name has a
    /// new uid, and its directory is the live one.
    pub fn newest_pod(&self, namespace: &str, name: &str) -> Option<PodDir> {
        segment("namespace", namespace).ok()?;
        segment("pod", name).ok()?;
        let prefix = format!("{namespace}_{name}_");
        std::fs::read_dir(self.pods())
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| PodDir(e.path()))
    }

    /// Every pod directory with the uid its name ends in.
    pub async fn pod_dirs(&self) -> Vec<(PodDir, String)> {
        let mut found = Vec::new();
        let Ok(mut entries) = tokio::fs::read_dir(self.pods()).await else {
            return found;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            let uid = name.rsplit('_').next().unwrap_or_default().to_owned();
            found.push((PodDir(entry.path()), uid));
        }
        found
    }
}

/// One pod's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDir(PathBuf);

impl PodDir {
    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The log files of a container, refused when its name is not one path segment.
    pub fn container_logs(&self, container: &str) -> Result<PathBuf, UnsafePath> {
        Ok(self.0.join("logs").join(segment("container", container)?))
    }

    /// The log file of one run of a container.
    pub fn log(&self, container: &str, restart: i32) -> Result<PathBuf, UnsafePath> {
        Ok(self
            .container_logs(container)?
            .join(format!("{restart}.log")))
    }

    /// The directory of the pod's own volumes.
    pub fn volumes(&self) -> PathBuf {
        self.0.join("volumes")
    }

    /// A container's own working directory, refused when its name is not one path segment.
    pub fn working_dir(&self, container: &str) -> Result<PathBuf, UnsafePath> {
        Ok(self
            .0
            .join("workdir")
            .join(segment("container", container)?))
    }

    /// One volume's own directory, refused when its name is not one path segment.
    pub fn volume(&self, name: &str) -> Result<PathBuf, UnsafePath> {
        Ok(self.volumes().join(segment("volume", name)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_stays_inside_the_data_dir_and_names_that_climb_out_are_refused() {
        let dir = DataDir::new("/data");
        let pod = dir.pod("ns", "web", "u1").unwrap();
        assert_eq!(pod.path(), Path::new("/data/pods/ns_web_u1"));
        assert_eq!(
            pod.log("app", 2).unwrap(),
            Path::new("/data/pods/ns_web_u1/logs/app/2.log")
        );
        assert_eq!(
            pod.volume("cache").unwrap(),
            Path::new("/data/pods/ns_web_u1/volumes/cache")
        );
        assert!(dir.pod("..", "web", "u1").is_err());
        assert!(dir.pod("ns", "a/b", "u1").is_err());
        assert!(pod.log("../../x", 0).is_err());
        assert!(pod.volume("..").is_err());
        assert!(dir.newest_pod("ns", "../..").is_none());
    }

    #[tokio::test]
    async fn the_newest_directory_of_a_pod_name_is_the_live_one() {
        let root = tempfile::tempdir().unwrap();
        let dir = DataDir::new(root.path());
        let old = dir.pod("ns", "web", "old").unwrap();
        std::fs::create_dir_all(old.path()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let new = dir.pod("ns", "web", "new").unwrap();
        std::fs::create_dir_all(new.path()).unwrap();
        std::fs::create_dir_all(dir.pod("ns", "webby", "other").unwrap().path()).unwrap();
        assert_eq!(dir.newest_pod("ns", "web"), Some(new));
        let mut uids: Vec<String> = dir.pod_dirs().await.into_iter().map(|(_, u)| u).collect();
        uids.sort();
        assert_eq!(uids, ["new", "old", "other"]);
    }
}
