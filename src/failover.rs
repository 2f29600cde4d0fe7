//! One kube client over several apiservers (`--server URL,URL,...`), failing over as k3s' agent load balancer
//! does: requests go to the server that last answered; one that cannot be reached is skipped for the next. A
//! request is sent again elsewhere only when it surely did not reach a server (the connection could not be
//! made), or when it is a read. Watches that break on a dying server are resumed by kube-runtime's watcher from
//! their last resourceVersion, through here, on a live one: no relist.

use futures::future::BoxFuture;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

/// A tower service sending each request to one of several apiservers' clients.
#[derive(Clone)]
pub struct Failover {
    servers: Arc<[(String, kube::Client)]>,
    current: Arc<AtomicUsize>,
}

/// A client over `configs` (one per apiserver; the first is tried first): the config itself when there is one.
pub fn client(configs: Vec<kube::Config>) -> anyhow::Result<kube::Client> {
    let mut configs = configs.into_iter().peekable();
    let first = configs
        .next()
        .ok_or_else(|| anyhow::anyhow!("no apiserver to connect to"))?;
    if configs.peek().is_none() {
        return Ok(kube::Client::try_from(first)?);
    }
    let namespace = first.default_namespace.clone();
    let servers = std::iter::once(first)
        .chain(configs)
        .map(|config| {
            let url = config.cluster_url.to_string();
            kube::Client::try_from(config).map(|client| (url, client))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let failover = Failover {
        servers: servers.into(),
        current: Arc::new(AtomicUsize::new(0)),
    };
    Ok(kube::Client::new(failover, namespace))
}

impl tower::Service<Request<Body>> for Failover {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), kube::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.send(request).await })
    }
}

impl Failover {
    async fn send(&self, request: Request<Body>) -> Result<Response<Body>, kube::Error> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| kube::Error::Service(e.into()))?
            .to_bytes();
        let resendable = parts.method == Method::GET;
        let first = self.current.load(Ordering::Relaxed);
        let count = self.servers.len();
        let mut failure = None;
        for step in 0..count {
            let index = (first + step) % count;
            let (url, client) = &self.servers[index];
            let mut copy = Request::builder()
                .method(parts.method.clone())
                .uri(parts.uri.clone())
                .version(parts.version);
            if let Some(headers) = copy.headers_mut() {
                headers.extend(parts.headers.clone());
            }
            let copy = copy
                .body(Body::from(body.to_vec()))
                .map_err(kube::Error::HttpError)?;
            match client.send(copy).await {
                Ok(response) => {
                    if index != first {
                        self.current.store(index, Ordering::Relaxed);
                        tracing::info!(server = %url, "apiserver answering; using it");
                    }
                    return Ok(response);
                }
                Err(error) if unreached(&error) || (resendable && transport(&error)) => {
                    tracing::debug!(server = %url, %error, "apiserver not answering; trying the next");
                    failure = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(failure.unwrap_or_else(|| kube::Error::Service("no apiserver to connect to".into())))
    }
}

/// The error's causes, outermost first.
fn causes<'e>(error: &'e kube::Error) -> impl Iterator<Item = &'e (dyn StdError + 'static)> {
    std::iter::successors(error.source(), |e| (*e).source())
}

/// Whether the request never reached a server: no connection could be made.
fn unreached(error: &kube::Error) -> bool {
    causes(error).any(|cause| {
        cause
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(hyper_util::client::legacy::Error::is_connect)
            || cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::HostUnreachable
                )
            })
    })
}

/// Whether the request failed in transport (rather than with an answer from a server).
fn transport(error: &kube::Error) -> bool {
    matches!(error, kube::Error::HyperError(_) | kube::Error::Service(_))
}
