//! Real etcd clusters for tests: Debian's etcd-server (scripts/setup-test-tools installs it), one process per
//! member on loopback ports of its own, in a temporary directory; every member is killed when the cluster is
//! dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One member: its URLs and, while it runs, its process.
pub struct Member {
    /// The member's name in the cluster.
    pub name: String,
    /// Where clients reach it.
    pub client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    process: Option<Child>,
}

/// A running etcd cluster.
pub struct EtcdCluster {
    /// Its members, in start order.
    pub members: Vec<Member>,
    initial_cluster: String,
    _dir: tempfile::TempDir,
}

fn loopback_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// POSTs `body` to `path` of the etcd member at `client_url` (its JSON gateway); returns the answer's JSON.
fn post_json(client_url: &str, path: &str, body: &str) -> serde_json::Value {
    let address = client_url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).expect("etcd answers");
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .expect("etcd takes the request");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let json = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(json).unwrap_or_else(|e| panic!("etcd's answer to {path}: {e}: {answer}"))
}

/// Whether etcd answers `/health` with a leader, at `client_url` (`http://127.0.0.1:PORT`).
pub fn healthy(client_url: &str) -> bool {
    let address = client_url.trim_start_matches("http://");
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

impl EtcdCluster {
    /// Starts `size` members and waits until every one of them serves with a leader. A member that dies
    /// before it serves (a port picked for it was taken meanwhile by another process) makes the whole cluster
    /// start again on other ports, three times at most.
    pub fn start(size: usize) -> Self {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(size) {
                Ok(cluster) => return cluster,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("etcd did not start: {}", failures.join("; "));
    }

    fn try_start(size: usize) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", loopback_port()),
                peer_url: format!("http://127.0.0.1:{}", loopback_port()),
                data_dir: dir.path().join(format!("m{i}")),
                process: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            members: Vec::new(),
            initial_cluster,
            _dir: dir,
        };
        for member in &mut members {
            cluster.launch(member);
        }
        cluster.members = members;
        for i in 0..size {
            cluster.serving(i)?;
        }
        Ok(cluster)
    }

    fn launch(&self, member: &mut Member) {
        let log = std::fs::File::create(format!("{}.log", member.data_dir.display()))
            .expect("an etcd log file");
        let process = Command::new("etcd")
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &member.client_url])
            .args(["--advertise-client-urls", &member.client_url])
            .args(["--listen-peer-urls", &member.peer_url])
            .args(["--initial-advertise-peer-urls", &member.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            // Fast elections: a test's cluster lives on one machine.
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (apt-get install etcd-server)");
        member.process = Some(process);
    }

    /// Waits (at most 30 s) until member `i` serves with a leader.
    pub fn wait_healthy(&mut self, i: usize) {
        if let Err(failure) = self.serving(i) {
            panic!("{failure}");
        }
    }

    /// Waits (at most 30 s) until member `i` serves with a leader; why not, with its log's end, when it dies
    /// or the time is up.
    fn serving(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthy(&self.members[i].client_url) {
            let member = &mut self.members[i];
            let exited = member
                .process
                .as_mut()
                .and_then(|p| p.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                let log = std::fs::read_to_string(format!("{}.log", member.data_dir.display()))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!(
                    "etcd member {} {} (its log ends: {})",
                    member.name,
                    if exited.is_some() {
                        "exited"
                    } else {
                        "did not become healthy in 30 s"
                    },
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The index of the member that leads the cluster (asked of each member's status endpoint).
    pub fn leader(&self) -> usize {
        let statuses: Vec<serde_json::Value> = self
            .members
            .iter()
            .map(|m| post_json(&m.client_url, "/v3/maintenance/status", "{}"))
            .collect();
        let leader = statuses
            .iter()
            .find_map(|s| s["leader"].as_str())
            .expect("a member knows the leader");
        statuses
            .iter()
            .position(|s| s["header"]["member_id"].as_str() == Some(leader))
            .expect("the leader is a member")
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Kills member `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.members[i].process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts member `i` again on its data directory (after [`EtcdCluster::kill`]); returns at once.
    pub fn restart(&mut self, i: usize) {
        let mut member = std::mem::replace(
            &mut self.members[i],
            Member {
                name: String::new(),
                client_url: String::new(),
                peer_url: String::new(),
                data_dir: PathBuf::new(),
                process: None,
            },
        );
        self.launch(&mut member);
        self.members[i] = member;
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
