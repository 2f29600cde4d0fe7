//! `pods/{name}/log`: the apiserver finds the pod's node and streams the container's log from the node
//! agent's log endpoint, as Kubernetes' apiserver does with a kubelet.

use super::error::ApiError;
use super::node_agent::container_of;
use super::{ApiServer, Target};
use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// The parameters of a log request (others, like `follow`, pass through to the node).
#[derive(Debug, Default, Deserialize)]
struct LogQuery {
    container: Option<String>,
}

/// The parameters the node's log endpoint understands.
const PASSED_ON: [&str; 5] = [
    "follow",
    "tailLines",
    "sinceSeconds",
    "timestamps",
    "previous",
];

impl ApiServer {
    /// Streams one container's log from the node it runs on.
    pub async fn logs(
        &self,
        target: &Target,
        name: &str,
        raw_query: &str,
    ) -> Result<Response, ApiError> {
        let query: LogQuery = serde_urlencoded::from_str(raw_query)
            .map_err(|e| ApiError::BadRequest(format!("invalid query parameters: {e}")))?;
        let pod = self.get(target, name)?;
        let container = container_of(&pod, name, query.container.as_deref(), true)?;
        let (node_name, agent) = self.agent_of(&pod, name)?;
        let namespace = target.namespace.as_deref().unwrap_or("default");
        let passed: Vec<&str> = raw_query
            .split('&')
            .filter(|pair| PASSED_ON.contains(&pair.split('=').next().unwrap_or_default()))
            .collect();
        let url = format!(
            "{agent}/containerLogs/{namespace}/{name}/{container}?{}",
            passed.join("&")
        );
        let response = self.http.get(&url).send().await.map_err(|e| {
            ApiError::Unavailable(format!("cannot reach the agent of node {node_name}: {e}"))
        })?;
        if !response.status().is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(ApiError::BadRequest(text.trim().to_owned()));
        }
        let mut reply = Body::from_stream(response.bytes_stream()).into_response();
        reply
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Ok(reply)
    }
}
