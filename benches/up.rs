//! `wasmkube up --nodes 3`: wall time until every node is Ready, for a new cluster and for a restart of a
//! stopped one (`down` then `up`), each run in a fresh WASMKUBE_HOME. Prints p50 and max over the runs.

use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 5;

fn wasmkube(home: &std::path::Path, args: &[&str]) -> Duration {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_wasmkube"))
        .args(args)
        .env("WASMKUBE_HOME", home)
        .env("KUBECONFIG", home.join("kubeconfig"))
        .output()
        .expect("run wasmkube");
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "wasmkube {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    took
}

fn summary(label: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "{label:<28} p50 {:>6.0} ms   max {:>6.0} ms   ({} runs)",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0,
        times.len()
    );
}

fn main() {
    let mut created = Vec::new();
    let mut restarted = Vec::new();
    let mut stopped = Vec::new();
    for _ in 0..RUNS {
        let home = tempfile::tempdir().expect("tempdir");
        created.push(wasmkube(
            home.path(),
            &["up", "--name", "bench", "--nodes", "3"],
        ));
        stopped.push(wasmkube(home.path(), &["down", "--name", "bench"]));
        restarted.push(wasmkube(home.path(), &["up", "--name", "bench"]));
        wasmkube(home.path(), &["down", "--name", "bench", "--purge"]);
    }
    summary("up, new 3-node cluster", created);
    summary("up, restart of 3 nodes", restarted);
    summary("down, 3 nodes", stopped);
}
