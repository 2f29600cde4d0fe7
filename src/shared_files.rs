//! The files every server of one cluster must hold alike — the cluster CA, the service account signing key
//! and the admin token — kept in the store under `/wasmkube/shared/` when servers share an etcd: a server
//! takes what the store holds before it makes its own, and publishes what it made, so a certificate, token or
//! kubeconfig of one server is good at every other. (Kubernetes has them copied to each control-plane host;
//! the store is where these servers already agree.) They sit in etcd as plainly as Secrets do.

use anyhow::Context;
use std::path::Path;
use wasmkube_control::store::{Expect, Store, StoreError};

/// The shared files, by their path in the data dir.
const FILES: [&str; 4] = ["pki/ca.crt", "pki/ca.key", "pki/sa.key", "admin.token"];

fn key(file: &str) -> String {
    format!("/wasmkube/shared/{file}")
}

/// Writes into `data_dir` every shared file the store holds (replacing a local one that differs).
pub async fn adopt(store: &dyn Store, data_dir: &Path) -> anyhow::Result<()> {
    for file in FILES {
        let Some(shared) = store.get(&key(file))? else {
            continue;
        };
        let path = data_dir.join(file);
        if std::fs::read(&path).ok().as_deref() != Some(shared.value.as_slice()) {
            tracing::info!(file, "taking the cluster's shared file from the store");
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            crate::server::write_private(&path, &shared.value)?;
        }
    }
    Ok(())
}

/// Puts into the store every shared file of `data_dir` it does not hold yet. Fails if another server put a
/// different one meanwhile (both started on an empty store at once): this one then starts again and takes it.
pub async fn publish(store: &dyn Store, data_dir: &Path) -> anyhow::Result<()> {
    for file in FILES {
        let Ok(local) = std::fs::read(data_dir.join(file)) else {
            continue;
        };
        match store.put(key(file), local.clone(), Expect::Absent).await {
            Ok(_) => {}
            Err(StoreError::AlreadyExists(_)) => {
                // Reads come from the store's copy of etcd, which may not show the other server's write yet.
                store.catch_up().await?;
                let shared = store.get(&key(file))?.map(|kv| kv.value);
                if shared.as_deref() != Some(local.as_slice()) {
                    anyhow::bail!(
                        "another server published the cluster's {file} at the same moment; start this one again to take it"
                    );
                }
            }
            Err(e) => return Err(e).with_context(|| format!("cannot publish {file}")),
        }
    }
    Ok(())
}
