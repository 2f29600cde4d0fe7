//! `pods/{name}/portforward`, `exec` and `attach`: the client's upgraded connection (a WebSocket speaking one of
//! Kubernetes' channel subprotocols, or SPDY/3.1) is relayed byte for byte to the matching endpoint of the pod's node agent,
//! as Kubernetes' apiserver relays it to a kubelet. The apiserver checks the request first (the container, the
//! pod's phase, the options), so that every client sees the same error whatever protocol it tried; the agent
//! answers the upgrade and the apiserver then only splices the two connections.

use super::error::ApiError;
use super::node_agent::container_of;
use super::{ApiServer, Target};
use crate::api::resources::Subresource;
use crate::api::stream_options::{self, Session};
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// The protocols the agent speaks for each subresource: WebSocket subprotocols, then SPDY stream protocols.
const PORT_FORWARD_PROTOCOLS: Protocols = Protocols {
    websocket: &["v4.channel.k8s.io", "SPDY/3.1+portforward.k8s.io"],
    spdy: &["portforward.k8s.io"],
};
const EXEC_PROTOCOLS: Protocols = Protocols {
    websocket: &["v5.channel.k8s.io", "v4.channel.k8s.io"],
    spdy: &["v4.channel.k8s.io"],
};
/// The header with which SPDY clients offer stream protocols.
const STREAM_PROTOCOL: &str = "x-stream-protocol-version";
/// The request headers that make the upgrade, passed on to the agent.
const UPGRADE_HEADERS: [&str; 7] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    STREAM_PROTOCOL,
];

struct Protocols {
    websocket: &'static [&'static str],
    spdy: &'static [&'static str],
}

impl Protocols {
    /// Whether the request offers one of them: as a WebSocket, or as SPDY/3.1.
    fn offered_in(&self, headers: &HeaderMap) -> bool {
        let values = |name: &str| -> Vec<String> {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|v| v.trim().to_owned())
                .collect()
        };
        let spdy = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"));
        let (offered, served) = if spdy {
            (values(STREAM_PROTOCOL), self.spdy)
        } else {
            (
                values(header::SEC_WEBSOCKET_PROTOCOL.as_str()),
                self.websocket,
            )
        };
        served.iter().any(|p| offered.iter().any(|o| o == p))
    }
}

impl ApiServer {
    /// Answers an exec, attach or port-forward upgrade with the agent's answer and relays the upgraded
    /// connection.
    pub async fn pod_stream(
        &self,
        subresource: Subresource,
        target: &Target,
        name: &str,
        headers: &HeaderMap,
        raw_query: &str,
        upgrade: Option<OnUpgrade>,
    ) -> Result<Response, ApiError> {
        let pod = self.get(target, name)?;
        let Some(client_side) = upgrade.filter(|_| headers.contains_key(header::UPGRADE)) else {
            return Err(ApiError::BadRequest("Upgrade request required".into()));
        };
        let namespace = target.namespace.as_deref().unwrap_or("default");
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let (path, protocols) = match subresource {
            Subresource::Exec | Subresource::Attach => {
                let (session, verb) = if subresource == Subresource::Exec {
                    (Session::Exec, "exec into")
                } else {
                    (Session::Attach, "attach to")
                };
                let options =
                    stream_options::parse(raw_query, session).map_err(ApiError::BadRequest)?;
                let container = container_of(&pod, name, Some(&options.container), true)?;
                let phase = pod["status"]["phase"].as_str().unwrap_or_default();
                if phase == "Succeeded" || phase == "Failed" {
                    return Err(ApiError::BadRequest(format!(
                        "cannot {verb} a container in a completed pod; current phase is {phase}"
                    )));
                }
                let segment = subresource.name();
                (
                    format!("{segment}/{namespace}/{name}/{uid}/{container}"),
                    &EXEC_PROTOCOLS,
                )
            }
            _ => (
                format!("portForward/{namespace}/{name}/{uid}"),
                &PORT_FORWARD_PROTOCOLS,
            ),
        };
        if !protocols.offered_in(headers) {
            return Err(ApiError::BadRequest(format!(
                "unable to upgrade connection: {} speaks the WebSocket subprotocols {} and, over SPDY/3.1, \
                 the stream protocols {}; the client offered none of them",
                subresource.name(),
                protocols.websocket.join(", "),
                protocols.spdy.join(", "),
            )));
        }
        let (node_name, agent) = self.agent_of(&pod, name)?;
        let url = format!("{agent}/{path}?{raw_query}");
        let mut request = self.http.get(&url);
        for name in UPGRADE_HEADERS {
            for value in headers.get_all(name) {
                request = request.header(name, value);
            }
        }
        let answer = request.send().await.map_err(|e| {
            ApiError::Unavailable(format!("cannot reach the agent of node {node_name}: {e}"))
        })?;
        let status = answer.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            let text = answer.text().await.unwrap_or_default();
            return Err(ApiError::BadRequest(format!(
                "unable to upgrade connection: {}",
                text.trim()
            )));
        }
        let mut reply = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (name, value) in answer.headers() {
            reply = reply.header(name, value);
        }
        let pod_name = name.to_owned();
        tokio::spawn(async move {
            let relayed = async {
                let agent_side = answer.upgrade().await?;
                let client_side = client_side.await?;
                let mut agent_side = agent_side;
                let mut client_side = TokioIo::new(client_side);
                let copied = tokio::io::copy_bidirectional(&mut client_side, &mut agent_side).await;
                // Close the client's side properly (TLS close_notify) however the agent's side ended.
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut client_side).await;
                copied?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            };
            if let Err(error) = relayed.await {
                tracing::debug!(pod = %pod_name, node = %node_name, %error, "pod stream relay ended");
            }
        });
        reply
            .body(Body::empty())
            .map_err(|e| ApiError::Internal(format!("cannot build the upgrade answer: {e}")))
    }
}
