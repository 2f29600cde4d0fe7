//! The agent's exec and attach endpoints, which the apiserver relays `pods/{name}/exec` and `pods/{name}/attach`
//! to, as it does to a kubelet: `/exec/{namespace}/{pod}/{uid}/{container}?command=..&stdin=..&stdout=..` and
//! `/attach/...`, upgraded to a WebSocket that speaks Kubernetes' `v5.channel.k8s.io` or `v4.channel.k8s.io`,
//! or to SPDY/3.1 (`v4.channel.k8s.io` streams: kubectl before 1.30, and kubectl's fallback).
//!
//! `exec` runs a new instance of the container's own program with argv = the command, in the container's world
//! (env, volumes, address, limits), its stdio joined to the session; a non-zero exit comes back as Kubernetes'
//! `NonZeroExitCode` Status, which kubectl exits with, and a trap as its message on stderr and exit code 134.
//! `attach` joins the running instance: its output from the moment of attaching and, when the container has
//! `stdin: true`, its stdin.

mod client;

use crate::logs::Stream;
use crate::runtime::{Exit, Output, RunError, Runtime};
use crate::streams::running::{Running, RunningContainers};
use crate::streams::streaming;
use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use client::{Client, FromClient, SPDY_PROTOCOLS, STDERR, STDOUT, WEBSOCKET_PROTOCOLS};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{broadcast, mpsc};
use wasmkube_core::stream_options::{self, Session, StreamOptions};

/// Bytes of an exec'd guest's output buffered before it waits for the client.
const OUTPUT_BUFFER: usize = 64 << 10;
/// The most bytes one message carries.
const CHUNK: usize = 32 << 10;

/// What the endpoints need: the node's container runs and the runtime that starts exec'd instances.
#[derive(Clone)]
pub struct Sessions {
    /// The running containers.
    pub containers: RunningContainers,
    /// The Wasm runtime.
    pub runtime: Arc<Runtime>,
}

/// The routes of the exec and attach endpoints.
pub fn router(sessions: Sessions) -> Router {
    Router::new()
        .route("/exec/{namespace}/{pod}/{uid}/{container}", any(exec))
        .route("/attach/{namespace}/{pod}/{uid}/{container}", any(attach))
        .with_state(sessions)
}

type Target = Path<(String, String, String, String)>;

async fn exec(
    State(sessions): State<Sessions>,
    Path((namespace, pod, uid, container)): Target,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    let (run, options, upgrade) = match accept(
        &sessions,
        Session::Exec,
        (&namespace, &pod, &uid, &container),
        query.as_deref(),
        request,
    )
    .await
    {
        Ok(accepted) => accepted,
        Err(refusal) => return refuse(refusal),
    };
    let run = run.and_then(|run| {
        if run.loaded.serves_http() {
            Err(format!(
                "container {container} is a wasi:http component, which serves requests and has no command to \
                 run; exec runs the containers of command modules and components"
            ))
        } else {
            Ok(run)
        }
    });
    let runtime = sessions.runtime.clone();
    tracing::info!(pod = %pod, namespace = %namespace, container = %container, command = ?options.command, "exec");
    upgrade.answer(move |upgraded| async move {
        let Ok(client) = Client::open(upgraded, &options).await else {
            return;
        };
        match run {
            Ok(run) => run_exec(client, run, options, runtime).await,
            Err(message) => refuse_in_band(client, &message).await,
        }
    })
}

async fn attach(
    State(sessions): State<Sessions>,
    Path((namespace, pod, uid, container)): Target,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    let accepted = accept(
        &sessions,
        Session::Attach,
        (&namespace, &pod, &uid, &container),
        query.as_deref(),
        request,
    )
    .await;
    match accepted {
        Ok((run, options, upgrade)) => upgrade.answer(move |upgraded| async move {
            let Ok(client) = Client::open(upgraded, &options).await else {
                return;
            };
            match run {
                Ok(run) => run_attach(client, run, options).await,
                Err(message) => refuse_in_band(client, &message).await,
            }
        }),
        Err(refusal) => refuse(refusal),
    }
}

fn refuse(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

/// The container's run, or why the session cannot join it (told in the session, as the kubelet does, so
/// that a client does not mistake it for a failed upgrade and retry with another protocol).
type Joined = Result<Arc<Running>, String>;

/// Checks a request and finds its container's run, or says why the upgrade is refused.
async fn accept(
    sessions: &Sessions,
    session: Session,
    (namespace, pod, uid, container): (&str, &str, &str, &str),
    query: Option<&str>,
    request: Request,
) -> Result<(Joined, StreamOptions, streaming::Upgrade), String> {
    let options = stream_options::parse(query.unwrap_or_default(), session)?;
    let upgrade = streaming::accept(request, &WEBSOCKET_PROTOCOLS, &SPDY_PROTOCOLS).await?;
    let run = sessions
        .containers
        .find(uid, container)
        .ok_or_else(|| format!("container {container} of pod {namespace}/{pod} is not running"));
    Ok((run, options, upgrade))
}

/// Ends a session at once with a Failure Status saying why.
async fn refuse_in_band(client: Client, message: &str) {
    let status = json!({"metadata": {}, "status": "Failure", "reason": "BadRequest", "code": 400,
                        "message": message});
    client.finish(&status).await;
}

/// The outcome of an exec as the kubelet reports it on the error channel.
fn exit_status(exit: &Result<Exit, RunError>) -> Value {
    match exit {
        Ok(exit) if exit.code == 0 => json!({"metadata": {}, "status": "Success"}),
        Ok(exit) => json!({
            "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": format!("command terminated with non-zero exit code: exit status {}", exit.code),
            "details": {"causes": [{"reason": "ExitCode", "message": exit.code.to_string()}]},
        }),
        Err(error) => json!({
            "metadata": {}, "status": "Failure", "reason": "InternalError", "code": 500,
            "message": format!("Internal error occurred: {error}"),
            "details": {"causes": [{"message": error.to_string()}]},
        }),
    }
}

/// Copies a guest's output into the session's channel until the guest's end closes it.
fn pump(
    mut output: impl AsyncRead + Unpin + Send + 'static,
    channel: u8,
    to: mpsc::Sender<(u8, Bytes)>,
) {
    tokio::spawn(async move {
        let mut buffer = vec![0u8; CHUNK];
        while let Ok(n) = output.read(&mut buffer).await
            && n > 0
        {
            if to
                .send((channel, Bytes::copy_from_slice(&buffer[..n])))
                .await
                .is_err()
            {
                return;
            }
        }
    });
}

/// An output of the exec'd guest: piped to the session when the client reads it, discarded otherwise.
fn output_to(wanted: bool, channel: u8, frames: &mpsc::Sender<(u8, Bytes)>) -> Output {
    if !wanted {
        return Arc::new(wasmtime_wasi::p2::pipe::SinkOutputStream);
    }
    let (writer, reader) = tokio::io::duplex(OUTPUT_BUFFER);
    pump(reader, channel, frames.clone());
    Arc::new(wasmtime_wasi::cli::AsyncStdoutStream::new(
        OUTPUT_BUFFER,
        writer,
    ))
}

async fn run_exec(
    mut client: Client,
    run: Arc<Running>,
    options: StreamOptions,
    runtime: Arc<Runtime>,
) {
    let (frames_in, mut frames) = mpsc::channel::<(u8, Bytes)>(16);
    let mut spec = run.spec.clone();
    spec.args = options.command.clone();
    let stdout = output_to(options.stdout, STDOUT, &frames_in);
    spec.stderr = if options.tty {
        stdout.clone()
    } else {
        output_to(options.stderr, STDERR, &frames_in)
    };
    spec.stdout = stdout;
    drop(frames_in);
    let (mut stdin, guest_stdin): (Option<DuplexStream>, _) = if options.stdin {
        let (writer, reader) = tokio::io::duplex(OUTPUT_BUFFER);
        let input: crate::runtime::Input =
            Arc::new(wasmtime_wasi::cli::AsyncStdinStream::new(reader));
        (Some(writer), Some(input))
    } else {
        (None, None)
    };
    spec.stdin = guest_stdin;
    // Dropping the run (the client left) stops the guest.
    let guest = runtime.run(&run.loaded, spec, None);
    tokio::pin!(guest);
    let mut exit = None;
    let mut outputs_open = true;
    while exit.is_none() || outputs_open {
        tokio::select! {
            ended = &mut guest, if exit.is_none() => {
                stdin = None;
                exit = Some(ended);
            }
            frame = frames.recv(), if outputs_open => match frame {
                Some((channel, bytes)) => if !client.send(channel, &bytes).await { return },
                None => outputs_open = false,
            },
            message = client.next() => match message {
                FromClient::Stdin(bytes) => {
                    if let Some(writer) = stdin.as_mut()
                        && writer.write_all(&bytes).await.is_err()
                    {
                        stdin = None;
                    }
                }
                FromClient::StdinClosed => stdin = None,
                FromClient::Gone => return,
                FromClient::Other => {}
            },
        }
    }
    let Some(exit) = exit else { return };
    if let Ok(Exit {
        message: Some(trap),
        ..
    }) = &exit
    {
        // What a shell prints for a process killed by a signal: the trap, on the error output.
        let channel = if options.stderr { STDERR } else { STDOUT };
        let _ = client.send(channel, format!("{trap}\n").as_bytes()).await;
    }
    client.finish(&exit_status(&exit)).await;
}

/// The channel an attached client reads a chunk of output on, if it reads it.
fn attached_channel(stream: Stream, options: &StreamOptions) -> Option<u8> {
    match stream {
        Stream::Stdout if options.stdout => Some(STDOUT),
        Stream::Stderr if options.tty && options.stdout => Some(STDOUT),
        Stream::Stderr if options.stderr => Some(STDERR),
        _ => None,
    }
}

async fn run_attach(mut client: Client, run: Arc<Running>, options: StreamOptions) {
    let mut live = run.log.follow();
    let stdin = run.stdin.as_ref().filter(|_| options.stdin);
    let mut wrote = false;
    let ended = run.ended();
    tokio::pin!(ended);
    let finished = loop {
        tokio::select! {
            chunk = live.recv() => match chunk {
                Ok((stream, bytes)) => {
                    if let Some(channel) = attached_channel(stream, &options)
                        && !client.send(channel, &bytes).await
                    {
                        break false;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "an attached client fell behind the output");
                }
                Err(broadcast::error::RecvError::Closed) => break true,
            },
            () = &mut ended => break true,
            message = client.next() => match message {
                FromClient::Stdin(bytes) => if let Some(stdin) = stdin {
                    wrote = true;
                    stdin.write(&bytes).await;
                },
                FromClient::StdinClosed => if let Some(stdin) = stdin {
                    stdin.detached().await;
                },
                FromClient::Gone => break false,
                FromClient::Other => {}
            },
        }
    };
    if wrote && let Some(stdin) = stdin {
        stdin.detached().await;
    }
    if finished {
        // The container's run ended: what it wrote last, then the end of the session.
        while let Ok((stream, bytes)) = live.try_recv() {
            if let Some(channel) = attached_channel(stream, &options) {
                let _ = client.send(channel, &bytes).await;
            }
        }
        client
            .finish(&json!({"metadata": {}, "status": "Success"}))
            .await;
    } else {
        client.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_reported_as_the_kubelet_reports_them() {
        let exit = |code| {
            Ok(Exit {
                code,
                reason: "Error",
                message: None,
            })
        };
        assert_eq!(exit_status(&exit(0))["status"], "Success");
        let failed = exit_status(&exit(3));
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(
            failed["details"]["causes"],
            json!([{"reason": "ExitCode", "message": "3"}])
        );
        let error = exit_status(&Err(RunError::Setup("no such volume".into())));
        assert_eq!(error["reason"], "InternalError");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("no such volume")
        );
    }
}
