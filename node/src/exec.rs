//! The agent's exec and attach endpoints, which the apiserver relays `pods/{name}/exec` and `pods/{name}/attach`
//! to, as it does to a kubelet: `/exec/{namespace}/{pod}/{uid}/{container}?command=..&stdin=..&stdout=..` and
//! `/attach/...`, upgraded to a WebSocket that speaks Kubernetes' `v5.channel.k8s.io` or `v4.channel.k8s.io`.
//!
//! Every binary message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 the outcome (a Status in
//! JSON), 4 terminal resizes (ignored: a guest has no terminal). In v5 a client's `[255, 0]` closes stdin.
//!
//! `exec` runs a new instance of the container's own program with argv = the command, in the container's world
//! (env, volumes, address, limits), its stdio joined to the session; a non-zero exit comes back as Kubernetes'
//! `NonZeroExitCode` Status, which kubectl exits with, and a trap as its message on stderr and exit code 134.
//! `attach` joins the running instance: its output from the moment of attaching and, when the container has
//! `stdin: true`, its stdin.

use crate::logs::Stream;
use crate::running::{Running, RunningContainers};
use crate::runtime::{Exit, Output, RunError, Runtime};
use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{broadcast, mpsc};
use wasmkube_control::api::stream_options::{self, Session, StreamOptions};

/// The WebSocket subprotocols of exec and attach, the preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
/// v5's close signal: `[255, channel]` ends that channel's stream.
const CLOSE: u8 = 255;
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
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let (run, options, upgrade, protocol) = match accept(
        &sessions,
        Session::Exec,
        (&namespace, &pod, &uid, &container),
        query.as_deref(),
        upgrade,
    ) {
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
    upgrade.on_upgrade(move |socket| async move {
        match run {
            Ok(run) => run_exec(socket, protocol, run, options, runtime).await,
            Err(message) => refuse_in_band(socket, &message).await,
        }
    })
}

async fn attach(
    State(sessions): State<Sessions>,
    Path((namespace, pod, uid, container)): Target,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match accept(
        &sessions,
        Session::Attach,
        (&namespace, &pod, &uid, &container),
        query.as_deref(),
        upgrade,
    ) {
        Ok((run, options, upgrade, protocol)) => upgrade.on_upgrade(move |socket| async move {
            match run {
                Ok(run) => run_attach(socket, protocol, run, options).await,
                Err(message) => refuse_in_band(socket, &message).await,
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
type Accepted = (Joined, StreamOptions, WebSocketUpgrade, Protocol);

/// Checks a request and finds its container's run, or says why the upgrade is refused.
fn accept(
    sessions: &Sessions,
    session: Session,
    (namespace, pod, uid, container): (&str, &str, &str, &str),
    query: Option<&str>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Accepted, String> {
    let options = stream_options::parse(query.unwrap_or_default(), session)?;
    let upgrade = upgrade
        .map_err(|rejection| format!("exec and attach need a WebSocket upgrade: {rejection}"))?
        .protocols(PROTOCOLS);
    let protocol = match upgrade.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some(p) if p == PROTOCOLS[0] => Protocol::V5,
        Some(_) => Protocol::V4,
        None => {
            return Err(format!(
                "exec and attach speak the WebSocket subprotocols {}",
                PROTOCOLS.join(", ")
            ));
        }
    };
    let run = sessions
        .containers
        .find(uid, container)
        .ok_or_else(|| format!("container {container} of pod {namespace}/{pod} is not running"));
    Ok((run, options, upgrade, protocol))
}

/// Ends a session at once with a Failure Status saying why.
async fn refuse_in_band(socket: WebSocket, message: &str) {
    let (sink, _) = socket.split();
    let status = json!({"metadata": {}, "status": "Failure", "reason": "BadRequest", "code": 400,
                        "message": message});
    finish(sink, &status).await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    V4,
    V5,
}

/// What the client sent.
enum FromClient {
    Stdin(Bytes),
    /// v5: the client's stdin has ended.
    StdinClosed,
    /// The client has gone.
    Gone,
    /// Nothing of interest (a resize, a ping, an unknown channel).
    Other,
}

fn from_client(message: Option<Result<Message, axum::Error>>, protocol: Protocol) -> FromClient {
    let bytes = match message {
        Some(Ok(Message::Binary(bytes))) => bytes,
        // As Kubernetes, a text message carries a channel byte too (the Python client sends strings so).
        Some(Ok(Message::Text(text))) => Bytes::from(text.as_str().to_owned()),
        Some(Ok(Message::Close(_)) | Err(_)) | None => return FromClient::Gone,
        Some(Ok(_)) => return FromClient::Other,
    };
    match bytes.first() {
        Some(&STDIN) => FromClient::Stdin(bytes.slice(1..)),
        Some(&CLOSE) if protocol == Protocol::V5 && bytes.get(1) == Some(&STDIN) => {
            FromClient::StdinClosed
        }
        _ => FromClient::Other,
    }
}

type Sink = SplitSink<WebSocket, Message>;

async fn send(sink: &mut Sink, channel: u8, payload: &[u8]) -> bool {
    let mut bytes = Vec::with_capacity(payload.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(payload);
    sink.send(Message::Binary(Bytes::from(bytes))).await.is_ok()
}

/// As the kubelet: an empty message on the lowest channel the client reads tells it the session is open.
async fn open(sink: &mut Sink, options: &StreamOptions) -> bool {
    let channel = if options.stdout {
        STDOUT
    } else if options.stderr {
        STDERR
    } else {
        ERROR
    };
    send(sink, channel, b"").await
}

/// Ends a session with its outcome and the WebSocket close handshake.
async fn finish(mut sink: Sink, status: &Value) {
    let _ = send(&mut sink, ERROR, status.to_string().as_bytes()).await;
    close(sink).await;
}

/// Closes the WebSocket with a normal closure (1000), which clients read as the end of every stream; a close
/// without a code (1005) is an error to client-go.
async fn close(mut sink: Sink) {
    let normal = axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(normal))).await;
    let _ = sink.close().await;
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
    socket: WebSocket,
    protocol: Protocol,
    run: Arc<Running>,
    options: StreamOptions,
    runtime: Arc<Runtime>,
) {
    let (mut sink, mut client) = socket.split();
    if !open(&mut sink, &options).await {
        return;
    }
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
                Some((channel, bytes)) => if !send(&mut sink, channel, &bytes).await { return },
                None => outputs_open = false,
            },
            message = client.next() => match from_client(message, protocol) {
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
        if options.stderr || options.stdout {
            let _ = send(&mut sink, channel, format!("{trap}\n").as_bytes()).await;
        }
    }
    finish(sink, &exit_status(&exit)).await;
}

async fn run_attach(
    socket: WebSocket,
    protocol: Protocol,
    run: Arc<Running>,
    options: StreamOptions,
) {
    let (mut sink, mut client) = socket.split();
    let mut live = run.log.follow();
    if !open(&mut sink, &options).await {
        return;
    }
    let stdin = run.stdin.as_ref().filter(|_| options.stdin);
    let mut wrote = false;
    let ended = run.ended();
    tokio::pin!(ended);
    let finished = loop {
        tokio::select! {
            chunk = live.recv() => match chunk {
                Ok((stream, bytes)) => {
                    let channel = match stream {
                        Stream::Stdout if options.stdout => STDOUT,
                        Stream::Stderr if options.tty && options.stdout => STDOUT,
                        Stream::Stderr if options.stderr => STDERR,
                        _ => continue,
                    };
                    if !send(&mut sink, channel, &bytes).await {
                        break false;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "an attached client fell behind the output");
                }
                Err(broadcast::error::RecvError::Closed) => break true,
            },
            () = &mut ended => break true,
            message = client.next() => match from_client(message, protocol) {
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
            let channel = if stream == Stream::Stderr && options.stderr {
                STDERR
            } else {
                STDOUT
            };
            if (stream == Stream::Stdout && options.stdout) || channel == STDERR {
                let _ = send(&mut sink, channel, &bytes).await;
            }
        }
        finish(sink, &json!({"metadata": {}, "status": "Success"})).await;
    } else {
        close(sink).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(bytes: &'static [u8]) -> Option<Result<Message, axum::Error>> {
        Some(Ok(Message::Binary(Bytes::from_static(bytes))))
    }

    #[test]
    fn client_messages_are_read_by_channel_and_v5_closes_stdin() {
        assert!(
            matches!(from_client(binary(b"\0typed"), Protocol::V4), FromClient::Stdin(b) if b == "typed")
        );
        let text = Some(Ok(Message::Text("\0as text".into())));
        assert!(matches!(from_client(text, Protocol::V4), FromClient::Stdin(b) if b == "as text"));
        assert!(matches!(
            from_client(binary(b"\xff\0"), Protocol::V5),
            FromClient::StdinClosed
        ));
        // v4 has no close signal; resizes, unknown channels and empty messages are nothing.
        for (message, protocol) in [
            (&b"\xff\0"[..], Protocol::V4),
            (b"\x04{\"Width\":80}", Protocol::V5),
            (b"\x07", Protocol::V5),
            (b"", Protocol::V5),
            (b"\xff", Protocol::V5),
        ] {
            let message = Some(Ok(Message::Binary(Bytes::copy_from_slice(message))));
            assert!(matches!(from_client(message, protocol), FromClient::Other));
        }
        assert!(matches!(from_client(None, Protocol::V5), FromClient::Gone));
    }

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
