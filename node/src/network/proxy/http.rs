//! L7 proxying: HTTP/1.1 with keep-alive towards clients, and every request balanced on its own over pooled
//! connections to the endpoints, so one keep-alive client still spreads across replicas. A request that cannot
//! be delivered goes to another endpoint (always when the connection was refused; when it may have reached the
//! endpoint, only idempotent ones); with no endpoint left the client gets a 503 at once. A request awaits its
//! response headers as work the endpoint has not answered: one that leaves it waiting too long is left out of
//! new requests for a while (the balancer's outlier detection).

use super::balancer::{Backends, Lease};
use ::http::uri::{PathAndQuery, Scheme};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Method, Request, Response, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;

/// The body of requests and responses as they pass through.
pub type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;
/// The pooled HTTP client every frontend of a node shares.
pub type UpstreamClient = Client<HttpConnector, ProxyBody>;

/// Request bodies up to this size are kept so the request can be sent again; larger ones stream through once.
const MAX_REPLAY_BODY: u64 = 64 * 1024;
/// Most endpoints one request is tried on.
const MAX_ATTEMPTS: usize = 4;
/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The client towards endpoints: pooled keep-alive connections, no Nagle delay, a bounded connect time.
pub fn upstream_client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(super::tcp::CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// Accepts connections until the future is dropped; requests already under way carry on (drain).
pub async fn serve(listener: TcpListener, backends: Arc<Backends>, client: UpstreamClient) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let (backends, client) = (backends.clone(), client.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let (backends, client) = (backends.clone(), client.clone());
                        async move {
                            let arrived = std::time::Instant::now();
                            let response =
                                forward(request, peer.ip(), backends.clone(), client).await;
                            if let Ok(response) = &response {
                                backends
                                    .stats()
                                    .requests
                                    .observe(response.status().as_u16(), arrived.elapsed());
                            }
                            response
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Err(error) => {
                tracing::warn!(service = %backends.behaviour().service, %error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn forward(
    request: Request<Incoming>,
    peer: IpAddr,
    backends: Arc<Backends>,
    client: UpstreamClient,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = request.into_parts();
    for name in HOP_BY_HOP {
        parts.headers.remove(name);
    }
    let (replay, mut streaming) = match body.size_hint().exact() {
        Some(size) if size <= MAX_REPLAY_BODY => match body.collect().await {
            Ok(collected) => (Some(collected.to_bytes()), None),
            Err(error) => return Ok(answer(StatusCode::BAD_REQUEST, &error.to_string())),
        },
        _ => (None, Some(body.boxed_unsync())),
    };
    let idempotent = [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
        Method::TRACE,
    ]
    .contains(&parts.method);
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut tried = Vec::new();
    loop {
        let Some(lease) = backends.pick(peer, &tried) else {
            let service = &backends.behaviour().service;
            return Ok(if tried.is_empty() {
                answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("no endpoints available for service {service:?}"),
                )
            } else {
                answer(
                    StatusCode::BAD_GATEWAY,
                    &format!("no endpoint of service {service:?} answered"),
                )
            });
        };
        if !tried.is_empty() {
            backends.stats().retry();
        }
        let address = lease.address();
        let body = match (&replay, streaming.take()) {
            (Some(bytes), _) => Full::new(bytes.clone())
                .map_err(|never: Infallible| match never {})
                .boxed_unsync(),
            (None, Some(body)) => body,
            (None, None) => {
                return Ok(answer(
                    StatusCode::BAD_GATEWAY,
                    "the request body was already sent to an endpoint that failed",
                ));
            }
        };
        let mut upstream = Request::new(body);
        *upstream.method_mut() = parts.method.clone();
        *upstream.headers_mut() = parts.headers.clone();
        let mut uri = ::http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(lease.authority().clone());
        uri.path_and_query = Some(path.clone());
        match Uri::from_parts(uri) {
            Ok(uri) => *upstream.uri_mut() = uri,
            Err(_) => {
                return Ok(answer(
                    StatusCode::BAD_REQUEST,
                    "the request path is invalid",
                ));
            }
        }
        let awaiting = lease.awaiting();
        match client.request(upstream).await {
            Ok(response) => {
                awaiting.answered();
                let (mut head, body) = response.into_parts();
                for name in HOP_BY_HOP {
                    head.headers.remove(name);
                }
                let body = Leased {
                    body,
                    _lease: lease,
                };
                return Ok(Response::from_parts(head, body.boxed_unsync()));
            }
            Err(error) => {
                drop(awaiting);
                let refused = error.is_connect();
                if refused {
                    backends.mark_down(address);
                }
                tried.push(address);
                tracing::debug!(service = %backends.behaviour().service, endpoint = %address, %error, "request failed");
                let retry =
                    replay.is_some() && (refused || idempotent) && tried.len() < MAX_ATTEMPTS;
                if !retry {
                    return Ok(answer(
                        StatusCode::BAD_GATEWAY,
                        &format!("endpoint {address} failed: {error}"),
                    ));
                }
            }
        }
    }
}

fn answer(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A response body that keeps its endpoint counted as busy until the body is done.
struct Leased {
    body: Incoming,
    _lease: Lease,
}

impl Body for Leased {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
