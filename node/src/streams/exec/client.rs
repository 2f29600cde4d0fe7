//! The client's side of an exec or attach session, whatever carries it: a WebSocket whose messages start with
//! their channel (0 stdin, 1 stdout, 2 stderr, 3 the outcome, 4 resizes; in v5 `[255, 0]` closes stdin), or
//! SPDY with one stream per channel, named by its `streamType` header.

use crate::streams::spdy::{self, frame::header};
use crate::streams::streaming::Upgraded;
use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::mpsc;
use wasmkube_core::stream_options::StreamOptions;

/// The channels, as numbered on a WebSocket.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5's close signal: `[255, channel]` ends that channel's stream.
const CLOSE: u8 = 255;
/// The WebSocket subprotocols, the preferred first.
pub const WEBSOCKET_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// The SPDY stream protocol (its error stream carries a Status in JSON, as v4's channel 3).
pub const SPDY_PROTOCOLS: [&str; 1] = ["v4.channel.k8s.io"];
/// How long a SPDY client may take to open its streams, as the kubelet's stream creation timeout.
const STREAM_CREATION: Duration = Duration::from_secs(30);
/// How long a WebSocket session waits before its first output: client-go's WebSocket executor of the kubectl
/// releases before its fix read the connection before it had made its streams, and dropped output that came
/// first ("Unknown stream id 1, discarding message") — a Wasm command can finish within microseconds, where a
/// container runtime takes this long to start a process.
const WEBSOCKET_SETTLE: Duration = Duration::from_millis(100);

/// What the client sent.
#[derive(Debug)]
pub enum FromClient {
    /// Bytes for stdin.
    Stdin(Bytes),
    /// The client's stdin has ended.
    StdinClosed,
    /// The client has gone.
    Gone,
    /// Nothing of interest (a resize, a ping, an unknown channel).
    Other,
}

/// The client's side of a session.
pub enum Client {
    /// A WebSocket.
    WebSocket {
        sink: SplitSink<WebSocket, Message>,
        stream: SplitStream<WebSocket>,
        /// v5 has the close signal.
        v5: bool,
    },
    /// SPDY streams, by channel.
    Spdy {
        events: mpsc::Receiver<spdy::Event>,
        sender: spdy::Sender,
        streams: [Option<u32>; 5],
        /// Events that came before every stream was open.
        early: VecDeque<spdy::Event>,
    },
}

impl Client {
    /// The session's client once it is ready: a WebSocket at once (after the kubelet's empty message on the
    /// lowest channel the client reads), SPDY once the client has opened the streams its options name.
    pub async fn open(upgraded: Upgraded, options: &StreamOptions) -> Result<Self, String> {
        match upgraded {
            Upgraded::WebSocket(socket, protocol) => {
                let (sink, stream) = (*socket).split();
                let mut client = Client::WebSocket {
                    sink,
                    stream,
                    v5: protocol == WEBSOCKET_PROTOCOLS[0],
                };
                let first = if options.stdout {
                    STDOUT
                } else if options.stderr {
                    STDERR
                } else {
                    ERROR
                };
                if !client.send(first, b"").await {
                    return Err("the client left".into());
                }
                tokio::time::sleep(WEBSOCKET_SETTLE).await;
                Ok(client)
            }
            Upgraded::Spdy(mut events, sender) => {
                let wanted = [
                    options.stdin,
                    options.stdout,
                    options.stderr,
                    true,
                    options.tty,
                ];
                let mut streams = [None; 5];
                let mut early = VecDeque::new();
                let deadline = tokio::time::Instant::now() + STREAM_CREATION;
                while (0..5).any(|c| wanted[c] && streams[c].is_none()) {
                    let event = tokio::time::timeout_at(deadline, events.recv())
                        .await
                        .map_err(|_| "timed out waiting for client to create streams".to_owned())?
                        .ok_or("the client left")?;
                    if let spdy::Event::Opened { stream, headers } = &event {
                        let channel = match header(headers, "streamtype") {
                            Some("stdin") => STDIN,
                            Some("stdout") => STDOUT,
                            Some("stderr") => STDERR,
                            Some("error") => ERROR,
                            Some("resize") => RESIZE,
                            _ => continue,
                        };
                        streams[usize::from(channel)] = Some(*stream);
                    } else {
                        early.push_back(event);
                    }
                }
                Ok(Client::Spdy {
                    events,
                    sender,
                    streams,
                    early,
                })
            }
        }
    }

    /// Sends bytes on a channel; false once the client has gone.
    pub async fn send(&mut self, channel: u8, bytes: &[u8]) -> bool {
        match self {
            Client::WebSocket { sink, .. } => {
                let mut message = Vec::with_capacity(bytes.len() + 1);
                message.push(channel);
                message.extend_from_slice(bytes);
                sink.send(Message::Binary(Bytes::from(message)))
                    .await
                    .is_ok()
            }
            Client::Spdy {
                sender, streams, ..
            } => match streams.get(usize::from(channel)).copied().flatten() {
                Some(stream) => sender.data(stream, bytes).await,
                None => true,
            },
        }
    }

    /// The next thing the client sends.
    pub async fn next(&mut self) -> FromClient {
        match self {
            Client::WebSocket { stream, v5, .. } => from_message(stream.next().await, *v5),
            Client::Spdy {
                events,
                streams,
                early,
                ..
            } => {
                let event = match early.pop_front() {
                    Some(event) => Some(event),
                    None => events.recv().await,
                };
                match event {
                    None => FromClient::Gone,
                    Some(spdy::Event::Data { stream, data }) if streams[0] == Some(stream) => {
                        FromClient::Stdin(data)
                    }
                    Some(spdy::Event::Closed { stream }) if streams[0] == Some(stream) => {
                        FromClient::StdinClosed
                    }
                    Some(_) => FromClient::Other,
                }
            }
        }
    }

    /// Ends the session with its outcome on the error channel.
    pub async fn finish(mut self, status: &Value) {
        let _ = self.send(ERROR, status.to_string().as_bytes()).await;
        self.close().await;
    }

    /// Ends the session: a WebSocket with a normal closure (1000), which clients read as the end of every
    /// stream (a close without a code, 1005, is an error to client-go); SPDY with the end of every stream
    /// this side writes, then GOAWAY.
    pub async fn close(self) {
        match self {
            Client::WebSocket { mut sink, .. } => {
                let normal = axum::extract::ws::CloseFrame {
                    code: axum::extract::ws::close_code::NORMAL,
                    reason: "".into(),
                };
                let _ = sink.send(Message::Close(Some(normal))).await;
                let _ = sink.close().await;
            }
            Client::Spdy {
                sender, streams, ..
            } => {
                for stream in streams.iter().flatten() {
                    sender.finish(*stream).await;
                }
            }
        }
    }
}

/// Reads a WebSocket message as Kubernetes' channel protocols do.
fn from_message(message: Option<Result<Message, axum::Error>>, v5: bool) -> FromClient {
    let bytes = match message {
        Some(Ok(Message::Binary(bytes))) => bytes,
        // As Kubernetes, a text message carries a channel byte too (the Python client sends strings so).
        Some(Ok(Message::Text(text))) => Bytes::from(text.as_str().to_owned()),
        Some(Ok(Message::Close(_)) | Err(_)) | None => return FromClient::Gone,
        Some(Ok(_)) => return FromClient::Other,
    };
    match bytes.first() {
        Some(&STDIN) => FromClient::Stdin(bytes.slice(1..)),
        Some(&CLOSE) if v5 && bytes.get(1) == Some(&STDIN) => FromClient::StdinClosed,
        _ => FromClient::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(bytes: &'static [u8]) -> Option<Result<Message, axum::Error>> {
        Some(Ok(Message::Binary(Bytes::from_static(bytes))))
    }

    #[test]
    fn messages_are_read_by_channel_and_v5_closes_stdin() {
        assert!(
            matches!(from_message(binary(b"\0typed"), false), FromClient::Stdin(b) if b == "typed")
        );
        let text = Some(Ok(Message::Text("\0as text".into())));
        assert!(matches!(from_message(text, false), FromClient::Stdin(b) if b == "as text"));
        assert!(matches!(
            from_message(binary(b"\xff\0"), true),
            FromClient::StdinClosed
        ));
        // v4 has no close signal; resizes, unknown channels and empty messages are nothing.
        for (message, v5) in [
            (&b"\xff\0"[..], false),
            (b"\x04{\"Width\":80}", true),
            (b"\x07", true),
            (b"", true),
            (b"\xff", true),
        ] {
            let message = Some(Ok(Message::Binary(Bytes::copy_from_slice(message))));
            assert!(matches!(from_message(message, v5), FromClient::Other));
        }
        assert!(matches!(from_message(None, true), FromClient::Gone));
    }
}
