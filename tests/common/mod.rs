//! A real `wasmkube server` process on a free loopback port, with its own data dir, for tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running control plane; killed when dropped.
pub struct Server {
    pub url: String,
    pub data_dir: PathBuf,
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Server {
    /// Starts a server with a fresh data dir.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Self::start_in(dir.path(), &[]);
        server._dir = Some(dir);
        server
    }

    /// Starts a server on an existing data dir with extra flags.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_wasmkube"))
            .args(["server", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wasmkube server");
        let server = Self {
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
            child,
            _dir: None,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let address = self.url.trim_start_matches("http://").to_owned();
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&address).is_ok()
                && self.data_dir.join("kubeconfig").exists()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("wasmkube server at {} did not start", self.url);
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self, limit: Duration) -> Option<bool> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the wasmkube CLI against a server; returns (success, stdout, stderr).
pub fn wasmkube(server: &Server, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(args)
        .output()
        .expect("run wasmkube");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
