//! The agent's port-forward endpoint, which the apiserver relays `pods/{name}/portforward` to, as it does to a
//! kubelet: `/portForward/{namespace}/{pod}/{uid}`, upgraded to one of three protocols.
//!
//! - A WebSocket speaking `v4.channel.k8s.io` (`?ports=P[,P...]`; wasmkube port-forward, kube-rs, the Python
//!   client): each requested port `i` has a data channel `2i` and an error channel `2i+1`; every binary message
//!   starts with its channel byte. The first message on each channel from the agent carries the port (2 bytes,
//!   little endian). Bytes the client sends on a data channel go to one TCP connection to the pod's address
//!   and port; what the pod answers comes back on the same channel. A port that cannot be reached gets one
//!   message on its error channel.
//! - SPDY/3.1 speaking `portforward.k8s.io` (kubectl), plain or tunnelled in a WebSocket
//!   (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31 and later): per connection the client opens an `error` and a
//!   `data` stream with the same `requestID` and `port` headers; the agent connects to the port and copies
//!   between the data stream and the connection, or writes why not on the error stream.

use crate::network::addresses::PodAddresses;
use crate::streams::spdy::{self, frame::header};
use crate::streams::streaming::{self, Upgrade, Upgraded};
use axum::Router;
use axum::extract::ws::{Message, WebSocket};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

/// The WebSocket subprotocol of port forwarding with channels.
pub const PROTOCOL: &str = "v4.channel.k8s.io";
/// The WebSocket subprotocols served: channels, or SPDY tunnelled.
const WEBSOCKET_PROTOCOLS: [&str; 2] = [PROTOCOL, streaming::SPDY_OVER_WEBSOCKET];
/// The SPDY stream protocol of port forwarding.
const SPDY_PROTOCOLS: [&str; 1] = ["portforward.k8s.io"];
/// How long connecting to a pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The most bytes one message carries from a pod.
const CHUNK: usize = 32 * 1024;

/// The addresses of this node's pods, known once the node has its podCIDR.
pub type PodAddressBook = Arc<OnceLock<Arc<PodAddresses>>>;

/// The routes of the port-forward endpoint.
pub fn router(pods: PodAddressBook) -> Router {
    Router::new()
        .route("/portForward/{namespace}/{pod}/{uid}", any(port_forward))
        .with_state(pods)
}

/// The ports of a request: `ports=80,8080` or `ports=80&ports=8080`, as the apiserver passes them on.
pub fn parse_ports(raw_query: &str) -> Result<Vec<u16>, String> {
    let ports: Vec<u16> = serde_urlencoded::from_str::<Vec<(String, String)>>(raw_query)
        .map_err(|e| format!("invalid query: {e}"))?
        .into_iter()
        .filter(|(key, _)| key == "ports")
        .flat_map(|(_, value)| {
            value
                .split(',')
                .map(|p| p.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .map(|p| match p.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(format!(
                "invalid port {p:?}: must be a number from 1 to 65535"
            )),
        })
        .collect::<Result<_, _>>()?;
    if ports.is_empty() {
        return Err("at least one port must be given (ports=N)".into());
    }
    if ports.len() > 127 {
        return Err("at most 127 ports can be forwarded at once".into());
    }
    Ok(ports)
}

async fn port_forward(
    State(pods): State<PodAddressBook>,
    Path((namespace, pod, uid)): Path<(String, String, String)>,
    RawQuery(raw_query): RawQuery,
    request: Request,
) -> Response {
    let Some(ip) = pods.get().and_then(|addresses| addresses.of(&uid)) else {
        return (
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} (uid {uid}) is not running on this node"),
        )
            .into_response();
    };
    let upgrade = match streaming::accept(request, &WEBSOCKET_PROTOCOLS, &SPDY_PROTOCOLS).await {
        Ok(upgrade) => upgrade,
        Err(message) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("port forwarding: {message}"),
            )
                .into_response();
        }
    };
    let target = format!("{namespace}/{pod}");
    if let Upgrade::WebSocket(_, PROTOCOL) = upgrade {
        let ports = match parse_ports(raw_query.as_deref().unwrap_or_default()) {
            Ok(ports) => ports,
            Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
        };
        return upgrade.answer(move |upgraded| async move {
            if let Upgraded::WebSocket(socket, _) = upgraded {
                forward(*socket, target, ip, ports).await;
            }
        });
    }
    upgrade.answer(move |upgraded| async move {
        let upgraded = match upgraded {
            Upgraded::WebSocket(socket, _) => streaming::spdy_in_websocket(socket),
            spdy => spdy,
        };
        if let Upgraded::Spdy(events, sender) = upgraded {
            forward_spdy(events, sender, target, ip).await;
        }
    })
}

/// Connects to the pod's port, or says why not as the kubelet words it.
async fn connect(target: &str, ip: IpAddr, port: u16) -> Result<TcpStream, String> {
    let address = SocketAddr::new(ip, port);
    let reason = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(connection)) => return Ok(connection),
        Ok(Err(error)) => error.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    tracing::info!(pod = %target, port, %reason, "port-forward cannot reach the pod");
    Err(format!(
        "error forwarding port {port} to pod {target}: cannot connect to {address}: {reason}"
    ))
}

fn framed(channel: u8, payload: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(payload.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(payload);
    Message::Binary(Bytes::from(bytes))
}

/// Runs one forwarding session until the client closes it or every pod connection has ended.
async fn forward(socket: WebSocket, target: String, ip: IpAddr, ports: Vec<u16>) {
    let (mut sink, mut stream) = socket.split();
    let (outgoing, mut to_send) = mpsc::channel::<Message>(64);
    let mut writers: Vec<Option<OwnedWriteHalf>> = Vec::with_capacity(ports.len());
    let mut readers = tokio::task::JoinSet::new();
    for (index, port) in ports.iter().enumerate() {
        let data = (2 * index) as u8;
        let port_bytes = port.to_le_bytes();
        for channel in [data, data + 1] {
            if sink.send(framed(channel, &port_bytes)).await.is_err() {
                return;
            }
        }
        match connect(&target, ip, *port).await {
            Ok(connection) => {
                let (mut read, write) = connection.into_split();
                writers.push(Some(write));
                let outgoing = outgoing.clone();
                readers.spawn(async move {
                    let mut buffer = vec![0u8; CHUNK];
                    while let Ok(n) = read.read(&mut buffer).await
                        && n > 0
                    {
                        if outgoing.send(framed(data, &buffer[..n])).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(message) => {
                writers.push(None);
                if sink
                    .send(framed(data + 1, message.as_bytes()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    drop(outgoing);
    loop {
        tokio::select! {
            message = to_send.recv() => match message {
                Some(message) => if sink.send(message).await.is_err() { break },
                // Every pod connection has ended: nothing more can come back.
                None => break,
            },
            message = stream.next() => match message {
                Some(Ok(Message::Binary(bytes))) if bytes.len() > 1 => {
                    let channel = usize::from(bytes[0]);
                    // Data channels are even; the client writes nothing meaningful on error channels.
                    if channel % 2 == 0
                        && let Some(Some(writer)) = writers.get_mut(channel / 2)
                        && writer.write_all(&bytes[1..]).await.is_err()
                    {
                        writers[channel / 2] = None;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    readers.abort_all();
    // Finish the close handshake: `close` sends our Close frame, or flushes the reply to the client's (which
    // the WebSocket queued when it read it): without it the client saw a reset after every connection.
    let _ = sink.close().await;
}

/// One forwarded connection of a SPDY session, as its streams arrive.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    /// The data stream and what the client sends on it.
    data: Option<(u32, mpsc::Receiver<Bytes>)>,
    port: Option<String>,
}

/// Runs a SPDY port-forward session: a connection to the pod per error+data stream pair, until the client
/// goes.
async fn forward_spdy(
    mut events: mpsc::Receiver<spdy::Event>,
    sender: spdy::Sender,
    target: String,
    ip: IpAddr,
) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut inputs: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut connections = tokio::task::JoinSet::new();
    while let Some(event) = events.recv().await {
        match event {
            spdy::Event::Opened { stream, headers } => {
                let kind = header(&headers, "streamtype").unwrap_or_default();
                // Without a requestID (old clients) the data stream follows its error stream.
                let request = header(&headers, "requestid").map_or_else(
                    || match kind {
                        "data" => stream.saturating_sub(2).to_string(),
                        _ => stream.to_string(),
                    },
                    str::to_owned,
                );
                let pair = pairs.entry(request.clone()).or_default();
                pair.port = header(&headers, "port").map(str::to_owned);
                match kind {
                    "error" => pair.error = Some(stream),
                    "data" => {
                        let (input, received) = mpsc::channel(16);
                        inputs.insert(stream, input);
                        pair.data = Some((stream, received));
                    }
                    _ => {
                        sender.reset(stream).await;
                        continue;
                    }
                }
                if pair.error.is_some() && pair.data.is_some() {
                    let Some(Pair {
                        error: Some(error),
                        data: Some((data, input)),
                        port,
                    }) = pairs.remove(&request)
                    else {
                        continue;
                    };
                    let (sender, target) = (sender.clone(), target.clone());
                    connections.spawn(async move {
                        let port = port.unwrap_or_default();
                        match port.parse::<u16>() {
                            Ok(port) if port > 0 => {
                                let streams = (error, data);
                                connect_and_copy(&sender, streams, input, &target, ip, port).await;
                            }
                            _ => {
                                let message = format!(
                                    "invalid port {port:?}: must be a number from 1 to 65535"
                                );
                                sender.data(error, message.as_bytes()).await;
                            }
                        }
                        sender.finish(data).await;
                        sender.finish(error).await;
                    });
                }
            }
            spdy::Event::Data { stream, data } => {
                if let Some(input) = inputs.get(&stream)
                    && input.send(data).await.is_err()
                {
                    inputs.remove(&stream);
                }
            }
            spdy::Event::Closed { stream } => {
                inputs.remove(&stream);
            }
        }
    }
    connections.abort_all();
}

/// Connects to the pod's port and copies both ways between it and the data stream until the pod's side ends;
/// a failure to connect is written on the error stream, as the kubelet words it.
async fn connect_and_copy(
    sender: &spdy::Sender,
    (error, data): (u32, u32),
    mut input: mpsc::Receiver<Bytes>,
    target: &str,
    ip: IpAddr,
    port: u16,
) {
    let connection = match connect(target, ip, port).await {
        Ok(connection) => connection,
        Err(message) => {
            sender.data(error, message.as_bytes()).await;
            return;
        }
    };
    let (mut read, mut write) = connection.into_split();
    let to_pod = async move {
        while let Some(bytes) = input.recv().await {
            if write.write_all(&bytes).await.is_err() {
                return;
            }
        }
        // The client's half ended: so does ours toward the pod.
        let _ = write.shutdown().await;
        // Keep the connection open for the pod's answer.
        std::future::pending::<()>().await;
    };
    let from_pod = async {
        let mut buffer = vec![0u8; CHUNK];
        while let Ok(n) = read.read(&mut buffer).await
            && n > 0
        {
            if !sender.data(data, &buffer[..n]).await {
                return;
            }
        }
    };
    tokio::select! {
        () = to_pod => {}
        () = from_pod => {}
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ports;

    #[test]
    fn ports_come_comma_separated_or_repeated() {
        assert_eq!(parse_ports("ports=80%2C8080"), Ok(vec![80, 8080]));
        assert_eq!(parse_ports("ports=80&ports=8080"), Ok(vec![80, 8080]));
        assert_eq!(parse_ports("&ports=80"), Ok(vec![80]));
    }

    #[test]
    fn bad_ports_are_refused_with_a_reason() {
        assert!(parse_ports("").unwrap_err().contains("at least one port"));
        assert!(parse_ports("ports=0").unwrap_err().contains("invalid port"));
        assert!(
            parse_ports("ports=http")
                .unwrap_err()
                .contains("invalid port")
        );
        assert!(
            parse_ports("ports=70000")
                .unwrap_err()
                .contains("invalid port")
        );
    }
}
