//! The container runs of this node, as exec and attach reach them: each run registers its program, the world it
//! runs in (argv, env, volumes, limits, address), its live output and, for a container with `stdin: true`, the
//! writing end of its stdin; the registration ends with the run.

use crate::logs::ContainerLog;
use crate::runtime::{Input, Loaded, RunSpec};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use wasmkube_core::stats::PodReference;

/// Bytes of stdin buffered for a guest that has not read them yet.
const STDIN_BUFFER: usize = 64 << 10;

/// One run of a container.
pub struct Running {
    /// Its program.
    pub loaded: Loaded,
    /// How it was started.
    pub spec: RunSpec,
    /// Its output.
    pub log: ContainerLog,
    /// Its stdin, when the container has `stdin: true`.
    pub stdin: Option<Stdin>,
    ended: watch::Receiver<bool>,
}

impl Running {
    /// Resolves when the run has ended.
    pub async fn ended(&self) {
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|ended| *ended).await;
    }
}

/// The writing end of a running container's stdin, shared by the clients attached to it.
pub struct Stdin {
    writer: tokio::sync::Mutex<Option<DuplexStream>>,
    /// `stdinOnce`: the guest sees the end of its stdin when the first attached client leaves.
    once: bool,
}

impl Stdin {
    /// A new stdin: the writing end, and what the guest reads.
    pub fn pipe(once: bool) -> (Self, Input) {
        let (writer, reader) = tokio::io::duplex(STDIN_BUFFER);
        let input: Input = Arc::new(wasmtime_wasi::cli::AsyncStdinStream::new(reader));
        let stdin = Self {
            writer: tokio::sync::Mutex::new(Some(writer)),
            once,
        };
        (stdin, input)
    }

    /// Passes bytes to the guest; false once its stdin is closed.
    pub async fn write(&self, bytes: &[u8]) -> bool {
        let mut writer = self.writer.lock().await;
        let written = match writer.as_mut() {
            Some(pipe) => pipe.write_all(bytes).await.is_ok(),
            None => false,
        };
        if !written {
            *writer = None;
        }
        written
    }

    /// A client that wrote to stdin has left (or closed its stdin): with `stdinOnce`, the guest's stdin ends.
    pub async fn detached(&self) {
        if self.once {
            *self.writer.lock().await = None;
        }
    }
}

/// Runs by pod uid and container name, with the pod they are of.
/// Each container's restarts, by pod uid and container name, with its pod.
type Restarts = HashMap<(String, String), (PodReference, i32)>;

type Runs = HashMap<(String, String), (PodReference, Arc<Running>)>;

/// The runs of this node's containers, by pod uid and container name, and the restarts of its containers.
#[derive(Clone, Default)]
pub struct RunningContainers {
    runs: Arc<Mutex<Runs>>,
    restarts: Arc<Mutex<Restarts>>,
}

/// A container's restarts in the table, kept while its worker holds this (between runs too).
pub struct RestartCount {
    table: RunningContainers,
    key: (String, String),
}

impl RestartCount {
    /// The container's restarts so far.
    pub fn set(&self, restarts: i32) {
        if let Ok(mut table) = self.table.restarts.lock()
            && let Some((_, count)) = table.get_mut(&self.key)
        {
            *count = restarts;
        }
    }
}

impl Drop for RestartCount {
    fn drop(&mut self) {
        if let Ok(mut table) = self.table.restarts.lock() {
            table.remove(&self.key);
        }
    }
}

/// A run's place in the table: dropping it (when the run ends) removes the run and wakes its attached clients.
pub struct Registration {
    table: RunningContainers,
    key: (String, String),
    run: Arc<Running>,
    ended: watch::Sender<bool>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.ended.send(true);
        if let Ok(mut runs) = self.table.runs.lock()
            && runs
                .get(&self.key)
                .is_some_and(|(_, r)| Arc::ptr_eq(r, &self.run))
        {
            runs.remove(&self.key);
        }
    }
}

impl RunningContainers {
    /// Registers the run of container `name` of `pod` until the returned registration is dropped.
    pub fn register(
        &self,
        pod: PodReference,
        name: &str,
        loaded: Loaded,
        spec: RunSpec,
        log: ContainerLog,
        stdin: Option<Stdin>,
    ) -> Registration {
        let (ended, watching) = watch::channel(false);
        let run = Arc::new(Running {
            loaded,
            spec,
            log,
            stdin,
            ended: watching,
        });
        let key = (pod.uid.clone(), name.to_owned());
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(key.clone(), (pod, run.clone()));
        }
        Registration {
            table: self.clone(),
            key,
            run,
            ended,
        }
    }

    /// Counts the restarts of container `name` of `pod` (from `restarts`) until the returned count is dropped.
    pub fn count_restarts(&self, pod: PodReference, name: &str, restarts: i32) -> RestartCount {
        let key = (pod.uid.clone(), name.to_owned());
        if let Ok(mut table) = self.restarts.lock() {
            table.insert(key.clone(), (pod, restarts));
        }
        RestartCount {
            table: self.clone(),
            key,
        }
    }

    /// Every container's restarts: its pod, its name and the count.
    pub fn restarts(&self) -> Vec<(PodReference, String, i32)> {
        let Ok(table) = self.restarts.lock() else {
            return Vec::new();
        };
        table
            .iter()
            .map(|((_, name), (pod, count))| (pod.clone(), name.clone(), *count))
            .collect()
    }

    /// The current run of container `name` of pod `uid`.
    pub fn find(&self, uid: &str, name: &str) -> Option<Arc<Running>> {
        let runs = self.runs.lock().ok()?;
        runs.get(&(uid.to_owned(), name.to_owned()))
            .map(|(_, run)| run.clone())
    }

    /// Every run: its pod, its container's name and the run.
    pub fn all(&self) -> Vec<(PodReference, String, Arc<Running>)> {
        let Ok(runs) = self.runs.lock() else {
            return Vec::new();
        };
        runs.iter()
            .map(|((_, name), (pod, run))| (pod.clone(), name.clone(), run.clone()))
            .collect()
    }
}
