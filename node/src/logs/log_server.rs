//! The agent's HTTP endpoint for container logs, which the apiserver proxies `pods/{name}/log` to, as it does
//! to a kubelet: `GET /containerLogs/{namespace}/{pod}/{container}` with `follow`, `tailLines`, `sinceSeconds`,
//! `timestamps` and `previous`.

use crate::data_dir::DataDir;
use crate::logs::{LogLine, parse};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Query parameters of a log request, as the apiserver passes them on.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogOptions {
    /// Keep streaming new lines until the container's run ends.
    pub follow: Option<bool>,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Only lines written in the last N seconds.
    pub since_seconds: Option<i64>,
    /// Prefix each line with its RFC 3339 time.
    pub timestamps: Option<bool>,
    /// The previous run's log instead of the current one.
    pub previous: Option<bool>,
}

/// The routes of the log endpoint over a node's data dir.
pub fn router(data_dir: DataDir) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(data_dir)
}

fn not_found(message: String) -> Response {
    (StatusCode::NOT_FOUND, message).into_response()
}

/// The log files of a container, oldest run first: `<n>.log` for run n.
fn runs(data_dir: &DataDir, namespace: &str, pod: &str, container: &str) -> Vec<PathBuf> {
    let logs = data_dir
        .newest_pod(namespace, pod)
        .and_then(|dir| dir.container_logs(container).ok());
    let Some(Ok(files)) = logs.map(std::fs::read_dir) else {
        return Vec::new();
    };
    let mut runs: Vec<(u64, PathBuf)> = files
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Some((name.strip_suffix(".log")?.parse().ok()?, e.path()))
        })
        .collect();
    runs.sort();
    runs.into_iter().map(|(_, path)| path).collect()
}

fn render(lines: &[LogLine], timestamps: bool) -> String {
    let mut text = String::new();
    for line in lines {
        if timestamps {
            text.push_str(&line.time.to_string());
            text.push(' ');
        }
        text.push_str(&line.text);
        if !line.partial {
            text.push('\n');
        }
    }
    text
}

/// The path of the marker written when a run has ended.
pub fn done_marker(log: &std::path::Path) -> PathBuf {
    log.with_extension("done")
}

async fn container_logs(
    State(data_dir): State<DataDir>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(options): Query<LogOptions>,
) -> Response {
    let runs = runs(&data_dir, &namespace, &pod, &container);
    // While a crashed container waits to restart, its last run is both the current and the previous one.
    let latest_ended = runs.last().is_some_and(|last| done_marker(last).exists());
    let wanted = match (options.previous.unwrap_or(false), latest_ended) {
        (true, false) => runs.len().checked_sub(2),
        _ => runs.len().checked_sub(1),
    };
    // A first run that has written nothing yet has no file: its log is empty so far.
    let first_run = || {
        let dir = data_dir.newest_pod(&namespace, &pod)?;
        dir.log(&container, 0).ok()
    };
    let path = match wanted {
        Some(i) => Some(runs[i].clone()),
        None if runs.is_empty() && !options.previous.unwrap_or(false) => first_run(),
        None => None,
    };
    let Some(path) = path else {
        let which = if options.previous.unwrap_or(false) {
            "previous terminated container"
        } else {
            "container"
        };
        return not_found(format!("{which} {container:?} in pod {pod:?} has no logs"));
    };
    let contents = tokio::fs::read_to_string(&path).await.unwrap_or_default();
    let mut lines = parse(&contents);
    if let Some(seconds) = options.since_seconds {
        let since = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(seconds);
        lines.retain(|l| l.time >= since);
    }
    if let Some(tail) = options.tail_lines {
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    let timestamps = options.timestamps.unwrap_or(false);
    let first = render(&lines, timestamps);
    let follow = options.follow.unwrap_or(false) && !options.previous.unwrap_or(false);
    if !follow {
        return ([(header::CONTENT_TYPE, "text/plain")], first).into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::convert::Infallible>>(16);
    tokio::spawn(async move {
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        let mut offset = contents.len();
        loop {
            let ended = done_marker(&path).exists();
            let now = tokio::fs::read_to_string(&path).await.unwrap_or_default();
            if now.len() > offset {
                // Only whole lines; a line still being written waits for the next poll.
                let complete = now[offset..].rfind('\n').map_or(offset, |i| offset + i + 1);
                let fresh = render(&parse(&now[offset..complete]), timestamps);
                offset = complete;
                if !fresh.is_empty() && tx.send(Ok(fresh)).await.is_err() {
                    return;
                }
            }
            if ended && now.len() <= offset {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_POLL) => {}
                () = tx.closed() => return,
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, "text/plain")], body).into_response()
}
