//! The Wasm runtime with real wasmtime and the apps of wasm-apps/, built for wasm32-wasip1 and wasm32-wasip2.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;
use wasmkube_node::logs::{ContainerLog, Stream, parse};
use wasmkube_node::runtime::http_serve::Serving;
use wasmkube_node::runtime::{LoadError, PodNetwork, RunSpec, Runtime};

fn app(target: &str, name: &str) -> Vec<u8> {
    static BUILD: Once = Once::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    BUILD.call_once(|| {
        let status = std::process::Command::new(root.join("scripts/build-wasm-apps"))
            .status()
            .expect("build wasm-apps");
        assert!(status.success(), "scripts/build-wasm-apps failed");
    });
    let path: PathBuf = root.join(format!("target/wasm-apps/{target}/release/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Run {
    exit: wasmkube_node::runtime::Exit,
    lines: Vec<String>,
}

async fn run(
    runtime: &Runtime,
    bytes: &[u8],
    args: &[&str],
    env: &[(&str, &str)],
    memory: Option<usize>,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("0.log");
    let log = ContainerLog::create(&log_path, false).unwrap();
    let loaded = runtime.load(bytes).expect("loads");
    let spec = RunSpec {
        args: args.iter().map(|a| a.to_string()).collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        mounts: Vec::new(),
        memory_limit: memory,
        cpu_request: None,
        cpu_limit: None,
        stdin: None,
        stdout: log.stream(Stream::Stdout),
        stderr: log.stream(Stream::Stderr),
        network: loopback(&[]),
        pod_memory: Default::default(),
        usage: Default::default(),
        requests: Default::default(),
    };
    let exit = runtime.run(&loaded, spec, None).await.expect("runs");
    log.finish();
    let lines = parse(&std::fs::read_to_string(&log_path).unwrap())
        .into_iter()
        .map(|l| l.text)
        .collect();
    Run { exit, lines }
}

fn loopback(ports: &[u16]) -> PodNetwork {
    PodNetwork {
        ip: std::net::Ipv4Addr::LOCALHOST.into(),
        ports: ports.to_vec(),
        names: None,
        infrastructure: None,
    }
}

fn runtime() -> (Runtime, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    // A small pool, as the agent uses one by default.
    (Runtime::new(cache.path(), 50).unwrap(), cache)
}

#[tokio::test]
async fn a_wasip1_command_module_runs_with_args_and_env_and_exits_zero() {
    let (runtime, _cache) = runtime();
    let done = run(
        &runtime,
        &app("wasm32-wasip1", "batch"),
        &["batch", "10"],
        &[("POD_NAME", "job-1")],
        None,
    )
    .await;
    assert_eq!((done.exit.code, done.exit.reason), (0, "Completed"));
    assert_eq!(
        done.lines,
        [
            "sum of squares 1..=10 = 385",
            "running in pod job-1",
            "batch done"
        ]
    );
}

#[tokio::test]
async fn a_wasip2_command_component_runs_and_reports_its_exit_code() {
    let (runtime, _cache) = runtime();
    let done = run(
        &runtime,
        &app("wasm32-wasip2", "batch"),
        &["batch", "3"],
        &[("EXIT_CODE", "3")],
        None,
    )
    .await;
    assert_eq!(done.lines[0], "sum of squares 1..=3 = 14");
    // Rust's wasm32-wasip2 std exits through `wasi:cli/exit.exit(err)`, which carries failure but no number.
    assert_eq!((done.exit.code, done.exit.reason), (1, "Error"));
}

#[tokio::test]
async fn crashes_and_traps_end_as_errors_with_their_output_kept() {
    let (runtime, _cache) = runtime();
    for target in ["wasm32-wasip1", "wasm32-wasip2"] {
        let crashed = run(&runtime, &app(target, "crash"), &["crash"], &[], None).await;
        assert_eq!(
            (crashed.exit.code, crashed.exit.reason),
            (1, "Error"),
            "{target}"
        );
        assert_eq!(crashed.lines, ["about to crash"]);
        let trapped = run(
            &runtime,
            &app(target, "crash"),
            &["crash", "trap"],
            &[],
            None,
        )
        .await;
        assert_eq!(trapped.exit.reason, "Error", "{target}");
        assert_ne!(trapped.exit.code, 0);
        assert!(
            trapped
                .exit
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("wasm"),
            "{target}: {:?}",
            trapped.exit.message
        );
    }
}

#[tokio::test]
async fn growing_past_the_memory_limit_ends_as_oomkilled() {
    let (runtime, _cache) = runtime();
    let done = run(
        &runtime,
        &app("wasm32-wasip1", "memory-hog"),
        &["memory-hog"],
        &[],
        Some(64 << 20),
    )
    .await;
    assert_eq!(done.exit.reason, "OOMKilled", "{:?}", done.exit);
    let held: Vec<&String> = done
        .lines
        .iter()
        .filter(|l| l.starts_with("holding"))
        .collect();
    assert!(!held.is_empty() && held.len() <= 8, "{held:?}");
}

/// Regression (issue 13): a pod without a memory limit could take the whole node's memory.
#[tokio::test]
async fn guests_without_a_memory_limit_stop_at_the_nodes_budget_and_give_it_back() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(cache.path(), 50)
        .unwrap()
        .with_memory_budget(96 << 20);
    let done = run(
        &runtime,
        &app("wasm32-wasip1", "memory-hog"),
        &["memory-hog"],
        &[],
        None,
    )
    .await;
    assert_eq!(done.exit.reason, "OOMKilled", "{:?}", done.exit);
    assert!(
        done.lines.iter().any(|l| l.starts_with("holding")),
        "{:?}",
        done.lines
    );
    let memory = runtime.memory();
    assert_eq!(
        memory.used(),
        0,
        "the ended guest's memory is back in the budget"
    );
    assert!(!memory.under_pressure());
}

#[tokio::test(flavor = "current_thread")]
async fn a_busy_loop_yields_so_other_guests_still_run() {
    let (runtime, _cache) = runtime();
    let runtime = std::sync::Arc::new(runtime);
    let hog_bytes = app("wasm32-wasip1", "cpu-hog");
    let hog = {
        let runtime = runtime.clone();
        tokio::spawn(async move { run(&runtime, &hog_bytes, &["cpu-hog"], &[], None).await })
    };
    tokio::task::yield_now().await;
    // On a single-threaded executor the batch job can only finish if the hog yields.
    let done = tokio::time::timeout(
        Duration::from_secs(30),
        run(
            &runtime,
            &app("wasm32-wasip1", "batch"),
            &["batch", "100"],
            &[],
            None,
        ),
    )
    .await
    .expect("the batch job finished while the hog spun");
    assert_eq!(done.exit.code, 0);
    hog.abort();
}

#[tokio::test]
async fn binaries_that_cannot_run_are_refused_with_a_reason() {
    let (runtime, _cache) = runtime();
    assert!(matches!(
        runtime.load(b"#!/bin/sh\necho hi\n"),
        Err(LoadError::NotWasm)
    ));
    let no_start = wat_module("(module (func (export \"main\")))");
    assert!(matches!(runtime.load(&no_start), Err(LoadError::NoStart)));
    let unknown =
        wat_module("(module (import \"env\" \"host_magic\" (func)) (func (export \"_start\")))");
    let error = runtime
        .load(&unknown)
        .err()
        .expect("an unknown import is refused");
    assert!(error.to_string().contains("host_magic"), "{error}");
    let mut truncated = app("wasm32-wasip1", "batch");
    truncated.truncate(1000);
    assert!(matches!(
        runtime.load(&truncated),
        Err(LoadError::Invalid(_))
    ));
}

fn wat_module(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid wat")
}

#[tokio::test]
async fn the_same_binary_is_compiled_once() {
    let (runtime, _cache) = runtime();
    let bytes = app("wasm32-wasip1", "batch");
    let first = runtime.load(&bytes).unwrap();
    let second = runtime.load(&bytes).unwrap();
    assert_eq!(first.digest, second.digest);
    assert!(first.digest.starts_with("sha256:"));
}

#[tokio::test]
async fn an_http_component_gets_a_fresh_instance_per_request_and_a_trap_costs_one_request() {
    let (runtime, _cache) = runtime();
    let loaded = runtime
        .load(&app("wasm32-wasip2", "hello_http"))
        .expect("loads");
    assert!(loaded.serves_http());
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("0.log");
    let log = ContainerLog::create(&log_path, false).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let spec = RunSpec {
        args: vec!["hello".into()],
        env: vec![("POD_NAME".into(), "hello-7f9c".into())],
        mounts: Vec::new(),
        memory_limit: Some(64 << 20),
        cpu_request: None,
        cpu_limit: None,
        stdin: None,
        stdout: log.stream(Stream::Stdout),
        stderr: log.stream(Stream::Stderr),
        network: loopback(&[]),
        pod_memory: Default::default(),
        usage: Default::default(),
        requests: Default::default(),
    };
    let (drain, draining) = tokio::sync::watch::channel(false);
    let serving = Serving {
        listener,
        drain: draining,
    };
    let server = tokio::spawn(async move { runtime.run(&loaded, spec, Some(serving)).await });
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{url}{path}")).send();
    let hello = get("/").await.expect("served");
    assert_eq!(hello.status(), 200);
    assert_eq!(hello.text().await.unwrap(), "hello from hello-7f9c\n");
    let trapped = get("/panic").await.expect("answered");
    assert_eq!(trapped.status(), 500);
    assert_eq!(get("/healthz").await.unwrap().text().await.unwrap(), "ok\n");
    assert_eq!(get("/nothing").await.unwrap().status(), 404);
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("asked to panic"), "{text}");
    assert!(text.contains("request failed"), "{text}");
    assert!(!server.is_finished(), "the server keeps serving");
    // Draining (the pod is stopping) closes the listener and ends the run once the open connections are done.
    drain.send(true).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the run ends after draining");
    assert_eq!(ended.unwrap().unwrap().code, 0);
    assert!(get("/").await.is_err(), "no new connection after draining");
}

#[tokio::test]
async fn a_component_with_no_entry_point_is_refused() {
    let (runtime, _cache) = runtime();
    let empty = wat::parse_str("(component)").unwrap();
    assert!(matches!(runtime.load(&empty), Err(LoadError::NoEntryPoint)));
}

/// Runs the cpu-hog (a heartbeat every 2 million iterations) for `time` with an optional CPU limit; returns
/// how many heartbeats it printed.
async fn heartbeats(
    runtime: std::sync::Arc<Runtime>,
    cpu_limit: Option<u64>,
    time: Duration,
) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("0.log");
    let log = ContainerLog::create(&log_path, false).unwrap();
    let loaded = runtime.load(&app("wasm32-wasip1", "cpu-hog")).unwrap();
    let spec = RunSpec {
        args: vec!["cpu-hog".into(), "2000000".into()],
        env: Vec::new(),
        mounts: Vec::new(),
        memory_limit: None,
        cpu_request: None,
        cpu_limit,
        stdin: None,
        stdout: log.stream(Stream::Stdout),
        stderr: log.stream(Stream::Stderr),
        network: loopback(&[]),
        pod_memory: Default::default(),
        usage: Default::default(),
        requests: Default::default(),
    };
    let _ = tokio::time::timeout(time, runtime.run(&loaded, spec, None)).await;
    parse(&std::fs::read_to_string(&log_path).unwrap()).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_limit_holds_a_busy_loop_to_its_share() {
    let (runtime, _cache) = runtime();
    let runtime = std::sync::Arc::new(runtime);
    // Side by side on two threads: one hog unlimited, one limited to a fifth of a CPU.
    let time = Duration::from_secs(2);
    let free = tokio::spawn(heartbeats(runtime.clone(), None, time));
    let limited = tokio::spawn(heartbeats(runtime.clone(), Some(200), time));
    let (free, limited) = (free.await.unwrap(), limited.await.unwrap());
    assert!(free > 20, "the unlimited hog ran ({free} heartbeats)");
    // 200m is a fifth of what the unlimited one gets at best; allow for a loaded machine.
    assert!(
        limited * 2 < free,
        "the limited hog printed {limited} heartbeats, the unlimited one {free}"
    );
}
