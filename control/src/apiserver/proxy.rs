//! The `proxy` subresources, as `kubectl proxy` and dashboards use them: a request to
//! `pods/NAME[:PORT]/proxy/PATH`, `services/NAME[:PORT]/proxy/PATH` (PORT a number or a port's name, NAME
//! optionally prefixed with `http:`) or `nodes/NAME/proxy/PATH` is made again to the pod's address, one ready
//! endpoint of the Service, or the node's agent, and its answer returned.
//!
//! A pod's or a Service's traffic goes only to addresses inside a node's podCIDR (the objects that name them
//! are written by users: an EndpointSlice pointing at the apiserver or a node agent must not turn the
//! apiserver into their client), and never with the apiserver's client certificate.

use super::error::ApiError;
use super::{ApiServer, Target};
use crate::api::resources;
use axum::body::Body;
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;
use std::net::IpAddr;

/// How long a proxied request may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Request headers passed on (the client's credentials stay with the apiserver).
const PASSED_ON: [header::HeaderName; 4] = [
    header::ACCEPT,
    header::CONTENT_TYPE,
    header::USER_AGENT,
    header::ACCEPT_ENCODING,
];

/// A proxied request.
pub(super) struct Proxied<'a> {
    /// Its method.
    pub method: Method,
    /// Its headers.
    pub headers: &'a HeaderMap,
    /// The path to request there.
    pub path: &'a str,
    /// Its query, as sent.
    pub query: &'a str,
    /// Its body.
    pub body: Bytes,
}

/// `[scheme:]name[:port]`.
fn parse_name(segment: &str) -> Result<(&str, &str, Option<&str>), ApiError> {
    let parts: Vec<&str> = segment.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("http", *name, None),
        [name, port] => ("http", *name, Some(*port)),
        [scheme, name, port] => (*scheme, *name, Some(*port).filter(|p| !p.is_empty())),
        _ => {
            return Err(ApiError::BadRequest(format!(
                "invalid proxy target {segment:?}: expected [scheme:]name[:port]"
            )));
        }
    };
    if scheme != "http" {
        return Err(ApiError::BadRequest(format!(
            "proxying with scheme {scheme:?} is not supported: Wasm pods serve http"
        )));
    }
    Ok((scheme, name, port))
}

impl ApiServer {
    /// Makes the request again where `target`'s object `segment` leads, and returns its answer.
    pub(super) async fn proxy(
        &self,
        target: &Target,
        segment: &str,
        request: Proxied<'_>,
    ) -> Result<Response, ApiError> {
        let (_, name, port) = parse_name(segment)?;
        let (base, client) = match target.resource.kind {
            "Pod" => (self.pod_address(target, name, port)?, &self.pod_http),
            "Service" => (self.service_address(target, name, port)?, &self.pod_http),
            _ => {
                let node = self.get(target, name)?;
                let agent =
                    super::node_agent::agent_base(&node, self.agent_scheme).ok_or_else(|| {
                        ApiError::Unavailable(format!(
                            "node {name} reports no address and port for its agent"
                        ))
                    })?;
                (agent, &self.http)
            }
        };
        let query = if request.query.is_empty() {
            String::new()
        } else {
            format!("?{}", request.query)
        };
        let url = format!("{base}{}{query}", request.path);
        let mut outgoing = client
            .request(request.method, &url)
            .timeout(TIMEOUT)
            .body(request.body);
        for name in &PASSED_ON {
            for value in request.headers.get_all(name) {
                outgoing = outgoing.header(name, value);
            }
        }
        let answer = outgoing
            .send()
            .await
            .map_err(|e| ApiError::Unavailable(format!("error trying to reach {}: {e}", name)))?;
        let mut reply = Response::builder().status(answer.status());
        for (name, value) in answer.headers() {
            if name != header::CONNECTION && name != header::TRANSFER_ENCODING {
                reply = reply.header(name, value);
            }
        }
        reply
            .body(Body::from_stream(answer.bytes_stream()))
            .map_err(|e| ApiError::Internal(format!("cannot build the proxied answer: {e}")))
    }

    /// `http://IP:PORT` of a running pod; a named port is one of its containers'.
    fn pod_address(
        &self,
        target: &Target,
        name: &str,
        port: Option<&str>,
    ) -> Result<String, ApiError> {
        let pod = self.get(target, name)?;
        let ip = pod["status"]["podIP"]
            .as_str()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .ok_or_else(|| {
                ApiError::Unavailable(format!("pod {name} does not have an address yet"))
            })?;
        let port = match port {
            None => 80,
            Some(port) => match port.parse::<u16>() {
                Ok(number) => number,
                Err(_) => pod["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                    .find(|p| p["name"] == port)
                    .and_then(|p| p["containerPort"].as_u64())
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!("pod {name} has no port named {port:?}"))
                    })?,
            },
        };
        self.check_pod_network(ip)?;
        Ok(format!("http://{}", std::net::SocketAddr::new(ip, port)))
    }

    /// `http://IP:PORT` of a ready endpoint of a Service's port (by name or number; its only port if none).
    fn service_address(
        &self,
        target: &Target,
        name: &str,
        port: Option<&str>,
    ) -> Result<String, ApiError> {
        let service = self.get(target, name)?;
        let ports = service["spec"]["ports"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let chosen = match port {
            None if ports.len() == 1 => ports.first(),
            None => None,
            Some(port) => ports.iter().find(|p| {
                p["name"] == port
                    || p["port"].as_u64().map(|n| n.to_string()).as_deref() == Some(port)
            }),
        };
        let Some(chosen) = chosen else {
            return Err(ApiError::Unavailable(format!(
                "no endpoints available for service \"{name}\""
            )));
        };
        let port_name = chosen["name"].as_str().unwrap_or_default();
        let slices = resources::by_path("discovery.k8s.io", "v1", "endpointslices")
            .ok_or_else(|| ApiError::Internal("endpointslices are not served".into()))?;
        let namespace = target.namespace.as_deref().unwrap_or("default");
        let listed: Vec<Value> = self.list_of(slices, Some(namespace))?;
        for slice in listed
            .iter()
            .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == name)
        {
            let Some(number) = slice["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"].as_str().unwrap_or_default() == port_name)
                .and_then(|p| p["port"].as_u64())
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            let ready = slice["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["conditions"]["ready"] != false)
                .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
                .filter_map(|a| a.as_str()?.parse::<IpAddr>().ok())
                .find(|ip| self.check_pod_network(*ip).is_ok());
            if let Some(ip) = ready {
                return Ok(format!("http://{}", std::net::SocketAddr::new(ip, number)));
            }
        }
        Err(ApiError::Unavailable(format!(
            "no endpoints available for service \"{name}\""
        )))
    }

    /// Refuses an address outside every node's podCIDR.
    fn check_pod_network(&self, ip: IpAddr) -> Result<(), ApiError> {
        let nodes = resources::by_path("", "v1", "nodes")
            .ok_or_else(|| ApiError::Internal("nodes are not served".into()))?;
        let nodes: Vec<Value> = self.list_of(nodes, None)?;
        let inside = nodes.iter().any(|node| {
            node["spec"]["podCIDR"]
                .as_str()
                .and_then(|cidr| cidr.parse::<ipnet::IpNet>().ok())
                .is_some_and(|net| net.contains(&ip))
        });
        if inside {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "address {ip} is not in the pod network: proxying there is not allowed"
            )))
        }
    }
}
