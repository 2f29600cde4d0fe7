//! How a client's upgraded connection carries the streams of exec, attach and port-forward, as a kubelet
//! accepts them: a WebSocket speaking one of Kubernetes' channel subprotocols, SPDY/3.1 (`Upgrade: SPDY/3.1`
//! with `X-Stream-Protocol-Version`), or SPDY tunnelled in a WebSocket (`SPDY/3.1+portforward.k8s.io`).

use crate::streams::spdy;
use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::future::Future;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The header with which SPDY clients offer, and the server picks, a stream protocol.
const STREAM_PROTOCOL: &str = "x-stream-protocol-version";
/// The WebSocket subprotocol that carries a SPDY session.
pub const SPDY_OVER_WEBSOCKET: &str = "SPDY/3.1+portforward.k8s.io";
/// Bytes buffered between a tunnelling WebSocket and its SPDY session.
const TUNNEL_BUFFER: usize = 64 << 10;

/// An accepted upgrade, before it is answered.
pub enum Upgrade {
    /// A WebSocket with the subprotocol picked.
    WebSocket(WebSocketUpgrade, &'static str),
    /// SPDY/3.1 with the stream protocol picked.
    Spdy(OnUpgrade, &'static str),
}

/// A connection once upgraded.
pub enum Upgraded {
    /// A WebSocket and its subprotocol.
    WebSocket(Box<WebSocket>, &'static str),
    /// A SPDY session.
    Spdy(tokio::sync::mpsc::Receiver<spdy::Event>, spdy::Sender),
}

/// Reads how the client asks to upgrade: SPDY when its `Upgrade` header says so (with one of
/// `spdy_protocols`), else a WebSocket with one of `websocket_protocols` (the first the server lists wins).
pub async fn accept(
    request: Request,
    websocket_protocols: &[&'static str],
    spdy_protocols: &[&'static str],
) -> Result<Upgrade, String> {
    let wants_spdy = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"));
    if wants_spdy {
        let offered: Vec<&str> = request
            .headers()
            .get_all(STREAM_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let Some(protocol) = spdy_protocols.iter().find(|p| offered.contains(p)) else {
            return Err(format!(
                "no supported stream protocol among {offered:?}: this server speaks {}",
                spdy_protocols.join(", ")
            ));
        };
        let mut request = request;
        let upgrade = request
            .extensions_mut()
            .remove::<OnUpgrade>()
            .ok_or("the connection cannot be upgraded")?;
        return Ok(Upgrade::Spdy(upgrade, protocol));
    }
    let (mut parts, _) = request.into_parts();
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|rejection| format!("a WebSocket or SPDY/3.1 upgrade is needed: {rejection}"))?
        .protocols(websocket_protocols.iter().copied());
    let chosen = upgrade
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .and_then(|p| websocket_protocols.iter().find(|w| **w == p));
    match chosen {
        Some(protocol) => Ok(Upgrade::WebSocket(upgrade, protocol)),
        None => Err(format!(
            "no supported WebSocket subprotocol: this server speaks {}",
            websocket_protocols.join(", ")
        )),
    }
}

impl Upgrade {
    /// Answers the upgrade and runs `session` on the upgraded connection.
    pub fn answer<F, Fut>(self, session: F) -> Response
    where
        F: FnOnce(Upgraded) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        match self {
            Upgrade::WebSocket(upgrade, protocol) => upgrade
                .on_upgrade(move |socket| session(Upgraded::WebSocket(Box::new(socket), protocol))),
            Upgrade::Spdy(upgrade, protocol) => {
                tokio::spawn(async move {
                    match upgrade.await {
                        Ok(connection) => {
                            let (events, sender) = spdy::serve(TokioIo::new(connection));
                            session(Upgraded::Spdy(events, sender)).await;
                        }
                        Err(error) => tracing::debug!(%error, "a SPDY upgrade failed"),
                    }
                });
                let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
                let headers = response.headers_mut();
                headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
                headers.insert(STREAM_PROTOCOL, HeaderValue::from_static(protocol));
                response
            }
        }
    }
}

/// A SPDY session carried in a WebSocket's binary messages (kubectl 1.31 and later tunnel port-forward so).
pub fn spdy_in_websocket(socket: Box<WebSocket>) -> Upgraded {
    let (ours, theirs) = tokio::io::duplex(TUNNEL_BUFFER);
    let (mut from_session, mut to_session) = tokio::io::split(theirs);
    let (mut sink, mut stream) = (*socket).split();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; TUNNEL_BUFFER];
        while let Ok(n) = from_session.read(&mut buffer).await
            && n > 0
        {
            let message = Message::Binary(Bytes::copy_from_slice(&buffer[..n]));
            if sink.send(message).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let bytes = match message {
                Message::Binary(bytes) => bytes,
                Message::Close(_) => break,
                _ => continue,
            };
            if to_session.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to_session.shutdown().await;
    });
    let (events, sender) = spdy::serve(ours);
    Upgraded::Spdy(events, sender)
}
