//! `pods/{name}/portforward`: the client's upgraded connection (a WebSocket speaking `v4.channel.k8s.io`) is
//! relayed byte for byte to the port-forward endpoint of the pod's node agent, as Kubernetes' apiserver relays
//! it to a kubelet. The agent answers the upgrade; the apiserver only splices the two connections.

use super::error::ApiError;
use super::{ApiServer, Target};
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// The WebSocket subprotocol the agent speaks.
const PROTOCOL: &str = "v4.channel.k8s.io";
/// The request headers that make the upgrade, passed on to the agent.
const UPGRADE_HEADERS: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::SEC_WEBSOCKET_EXTENSIONS,
];

impl ApiServer {
    /// Answers a port-forward upgrade with the agent's answer and relays the upgraded connection.
    pub async fn port_forward(
        &self,
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
        let offers_v4 = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == PROTOCOL);
        if !offers_v4 {
            return Err(ApiError::BadRequest(format!(
                "port-forward is served as a WebSocket with the {PROTOCOL} subprotocol (wasmkube \
                 port-forward, kube-rs, the official Python client); SPDY streams (kubectl port-forward) \
                 are not supported"
            )));
        }
        let (node_name, agent) = self.agent_of(&pod, name)?;
        let namespace = target.namespace.as_deref().unwrap_or("default");
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let url = format!("{agent}/portForward/{namespace}/{name}/{uid}?{raw_query}");
        let mut request = self.http.get(&url);
        for name in &UPGRADE_HEADERS {
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
                tracing::debug!(pod = %pod_name, node = %node_name, %error, "port-forward relay ended");
            }
        });
        reply
            .body(Body::empty())
            .map_err(|e| ApiError::Internal(format!("cannot build the upgrade answer: {e}")))
    }
}
