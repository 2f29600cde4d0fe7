//! Jobs with a real server and node agent: completions and parallelism, retries, the backoff limit, the active
//! deadline and the TTL after finishing, with Wasm batch pods.

mod common;

use common::{NodeAgent, Server, wasm_app};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const JOBS: &str = "/apis/batch/v1/namespaces/default/jobs";

/// Creates a Job whose pods run `pod_spec` (restartPolicy Never unless it says otherwise).
fn create_job(server: &Server, name: &str, spec: Value, pod_spec: Value) {
    let mut spec = spec;
    let mut pod_spec = pod_spec;
    if pod_spec["restartPolicy"].is_null() {
        pod_spec["restartPolicy"] = json!("Never");
    }
    spec["template"] = json!({"spec": pod_spec});
    let job =
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec});
    let response = reqwest::blocking::Client::new()
        .post(format!("{}{JOBS}", server.url))
        .json(&job)
        .send()
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().unwrap());
}

/// A pod spec running the batch app (wasm32-wasip1) with this environment.
fn batch(env: Value) -> Value {
    let image = format!("file://{}", wasm_app("wasm32-wasip1", "batch").display());
    json!({"containers": [{"name": "work", "image": image, "args": ["1000"], "env": env}]})
}

fn get(server: &Server, path: &str) -> Value {
    reqwest::blocking::get(format!("{}{path}", server.url))
        .and_then(|r| r.json())
        .unwrap_or(Value::Null)
}

fn wait_for_job(server: &Server, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        last = get(server, &format!("{JOBS}/{name}"));
        if check(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("job {name} never became {what}: {last}");
}

fn condition<'a>(job: &'a Value, kind: &str) -> Option<&'a Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
}

fn ended(job: &Value) -> bool {
    condition(job, "Complete").is_some() || condition(job, "Failed").is_some()
}

fn job_pods(server: &Server, name: &str) -> Vec<Value> {
    let path = format!("/api/v1/namespaces/default/pods?labelSelector=job-name%3D{name}");
    get(server, &path)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_job_runs_its_completions_in_parallel_and_retries_a_failure_until_done() {
    // The flaky Job shares a host directory: a privileged cluster, as hostPath needs.
    let server = Server::start_with(&[
        "--job-backoff-seconds",
        "0.2",
        "--pod-security-default",
        "privileged",
    ]);
    let _node = NodeAgent::start(&server, "job-node");
    create_job(
        &server,
        "squares",
        json!({"completions": 3, "parallelism": 2}),
        batch(json!([])),
    );
    let done = wait_for_job(&server, "squares", "ended", ended);
    assert!(condition(&done, "Complete").is_some(), "{done}");
    assert_eq!(done["status"]["succeeded"], 3);
    assert_eq!(done["status"]["active"], 0);
    assert!(done["status"]["completionTime"].is_string());
    assert_eq!(
        condition(&done, "Complete").unwrap()["reason"],
        "CompletionsReached"
    );
    let pods = job_pods(&server, "squares");
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| p["status"]["phase"] == "Succeeded"));

    // The first pod fails (leaving a marker in a shared directory); the retry succeeds.
    let shared = tempfile::tempdir().unwrap();
    let mut flaky = batch(json!([{"name": "FAIL_ONCE", "value": "/shared/marker"}]));
    flaky["containers"][0]["volumeMounts"] = json!([{"name": "shared", "mountPath": "/shared"}]);
    flaky["volumes"] = json!([{"name": "shared", "hostPath": {"path": shared.path()}}]);
    create_job(&server, "flaky", json!({"backoffLimit": 2}), flaky);
    let done = wait_for_job(&server, "flaky", "ended", ended);
    assert!(condition(&done, "Complete").is_some(), "{done}");
    assert_eq!(done["status"]["failed"], 1);
    assert_eq!(done["status"]["succeeded"], 1);
    assert!(
        common::event_reasons(&server, "flaky")
            .iter()
            .any(|r| r == "Completed")
    );
}

#[test]
fn a_job_fails_past_its_backoff_limit_or_its_deadline_and_goes_after_its_ttl() {
    let server = Server::start_with(&["--job-backoff-seconds", "0.2"]);
    let _node = NodeAgent::start(&server, "job-node");
    create_job(
        &server,
        "doomed",
        json!({"backoffLimit": 1}),
        batch(json!([{"name": "EXIT_CODE", "value": "3"}])),
    );
    let failed = wait_for_job(&server, "doomed", "ended", ended);
    let reason = &condition(&failed, "Failed").expect("failed")["reason"];
    assert_eq!(reason, "BackoffLimitExceeded");
    assert_eq!(failed["status"]["failed"], 2, "the first run and one retry");

    let hog = format!("file://{}", wasm_app("wasm32-wasip1", "cpu-hog").display());
    create_job(
        &server,
        "endless",
        json!({"activeDeadlineSeconds": 2}),
        json!({"containers": [{"name": "spin", "image": hog}]}),
    );
    let stopped = wait_for_job(&server, "endless", "ended", ended);
    assert_eq!(
        condition(&stopped, "Failed").expect("failed")["reason"],
        "DeadlineExceeded"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while job_pods(&server, "endless")
        .iter()
        .any(|p| p["status"]["phase"] == "Running")
    {
        assert!(Instant::now() < deadline, "the endless pod was not stopped");
        std::thread::sleep(Duration::from_millis(100));
    }

    create_job(
        &server,
        "brief",
        json!({"ttlSecondsAfterFinished": 1}),
        batch(json!([])),
    );
    wait_for_job(&server, "brief", "deleted after its ttl", |j| {
        j["kind"] == "Status" && j["code"] == 404
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !job_pods(&server, "brief").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the finished job's pods outlived it"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cronjob(server: &Server, name: &str, spec: Value) {
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/apis/batch/v1/namespaces/default/cronjobs", server.url))
        .json(&json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name}, "spec": spec}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().unwrap());
}

/// The Jobs a CronJob owns (by name prefix), with whether each completed.
fn cron_jobs(server: &Server, name: &str) -> Vec<(String, bool)> {
    get(server, JOBS)["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| j["metadata"]["ownerReferences"][0]["name"] == name)
        .map(|j| {
            (
                j["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                condition(j, "Complete").is_some(),
            )
        })
        .collect()
}

#[test]
fn a_cronjob_starts_jobs_on_schedule_keeps_its_history_and_forbids_overlap() {
    let server = Server::start();
    let _node = NodeAgent::start(&server, "cron-node");
    // Every 2 seconds (a leading seconds field: a wasmkube extension of the five-field schedule).
    let template = |pod: Value| json!({"spec": {"template": {"spec": pod}}});
    let mut quick = batch(json!([]));
    quick["restartPolicy"] = json!("Never");
    cronjob(
        &server,
        "tick",
        json!({"schedule": "*/2 * * * * *", "successfulJobsHistoryLimit": 2, "jobTemplate": template(quick)}),
    );
    let hog = format!("file://{}", wasm_app("wasm32-wasip1", "cpu-hog").display());
    cronjob(
        &server,
        "hog",
        json!({"schedule": "*/2 * * * * *", "concurrencyPolicy": "Forbid",
        "jobTemplate": template(json!({"restartPolicy": "Never", "containers": [{"name": "spin", "image": hog}]}))}),
    );

    let deadline = Instant::now() + Duration::from_secs(40);
    let mut seen = std::collections::BTreeSet::new();
    loop {
        for (name, _) in cron_jobs(&server, "tick") {
            seen.insert(name);
        }
        let tick = get(&server, "/apis/batch/v1/namespaces/default/cronjobs/tick");
        if seen.len() >= 4 && tick["status"]["lastSuccessfulTime"].is_string() {
            assert!(tick["status"]["lastScheduleTime"].is_string(), "{tick}");
            break;
        }
        assert!(Instant::now() < deadline, "only {seen:?} ran: {tick}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let complete = cron_jobs(&server, "tick")
        .iter()
        .filter(|(_, done)| *done)
        .count();
    assert!(
        complete <= 2,
        "successfulJobsHistoryLimit 2 keeps at most 2 finished jobs, found {complete}"
    );
    // A schedule cron cannot read, or a time zone that does not exist, is refused with the field at fault.
    for (schedule, zone, field) in [
        ("every now and then", None, "spec.schedule"),
        ("0 9 * * *", Some("Mars/Olympus"), "spec.timeZone"),
    ] {
        let response = reqwest::blocking::Client::new()
            .post(format!("{}/apis/batch/v1/namespaces/default/cronjobs", server.url))
            .json(&json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "bad"},
                "spec": {"schedule": schedule, "timeZone": zone, "jobTemplate": template(batch(json!([])))}}))
            .send()
            .unwrap();
        assert_eq!(response.status(), 422);
        let status: Value = response.json().unwrap();
        assert_eq!(status["details"]["causes"][0]["field"], field, "{status}");
    }
    // The endless job blocks every later run.
    let hogs = cron_jobs(&server, "hog");
    assert_eq!(hogs.len(), 1, "Forbid: {hogs:?}");
    let hog = get(&server, "/apis/batch/v1/namespaces/default/cronjobs/hog");
    assert_eq!(
        hog["status"]["active"].as_array().map(Vec::len),
        Some(1),
        "{hog}"
    );
}
