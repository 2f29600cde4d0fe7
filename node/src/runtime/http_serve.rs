//! Serves a wasi:http component on its pod's address, as `wasmtime serve` does: HTTP/1.1 with keep-alive, and a
//! fresh instance from the pre-instantiated component for every request. A request that traps gets a 500 and
//! the error in the container's stderr log; the others are unaffected.

use crate::runtime::{MemoryLimiter, P2State, RunSpec, p2_store};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Most requests one pod handles at once; more wait for a free slot.
const MAX_CONCURRENT_REQUESTS: usize = 1024;

/// What every request of one container needs.
pub(crate) struct Handler {
    /// The component, pre-instantiated.
    pub pre: ProxyPre<P2State>,
    /// The guest's environment, limits and logs.
    pub spec: RunSpec,
    /// The container's CPU quota, shared by its requests.
    pub cpu: Option<Arc<std::sync::Mutex<crate::runtime::cpu::Quota>>>,
    /// The node's memory budget, charged by every request's instance.
    pub memory: Arc<crate::runtime::memory::NodeMemory>,
}

/// Where an HTTP component is served, and the signal to drain it.
pub struct Serving {
    /// The pod's listener on its container port.
    pub listener: tokio::net::TcpListener,
    /// Turns true when the pod stops: no new connections, requests under way finish, idle connections close.
    pub drain: watch::Receiver<bool>,
}

/// Resolves once draining is asked for (never, if the sender is gone without asking).
async fn draining(drain: &mut watch::Receiver<bool>) {
    if drain.wait_for(|drain| *drain).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Accepts connections until draining is asked for, then returns once every request under way has finished.
/// Dropping the future ends every open connection at once.
pub(crate) async fn serve(serving: Serving, handler: Arc<Handler>) {
    let Serving {
        listener,
        mut drain,
    } = serving;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_REQUESTS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let (handler, slots, mut drain) = (handler.clone(), slots.clone(), drain.clone());
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let (handler, slots) = (handler.clone(), slots.clone());
                            async move {
                                let arrived = std::time::Instant::now();
                                let _slot = slots.acquire_owned().await;
                                let response = handle(&handler, request).await;
                                handler
                                    .spec
                                    .requests
                                    .observe(response.status().as_u16(), arrived.elapsed());
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                        let connection = hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::pin!(connection);
                        tokio::select! {
                            _ = connection.as_mut() => {}
                            () = draining(&mut drain) => {
                                connection.as_mut().graceful_shutdown();
                                let _ = connection.await;
                            }
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next() => {}
            () = draining(&mut drain) => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Runs one request in a fresh instance; any failure becomes a 500 and a line in the container's stderr.
async fn handle(
    handler: &Handler,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<HyperOutgoingBody> {
    match instantiate_and_handle(handler, request).await {
        Ok(response) => response,
        Err(error) => {
            let line = format!("request failed: {error}\n");
            let mut stderr = Box::into_pin(handler.spec.stderr.async_stream());
            let _ = stderr.write_all(line.as_bytes()).await;
            let mut response = hyper::Response::new(
                Full::new(Bytes::from(line))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

async fn instantiate_and_handle(
    handler: &Handler,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<HyperOutgoingBody>, String> {
    let engine = handler.pre.engine();
    let refused = Arc::new(AtomicBool::new(false));
    let limiter = MemoryLimiter::new(&handler.spec, refused, handler.memory.clone());
    let mut store =
        p2_store(engine, &handler.spec, limiter, handler.cpu.clone()).map_err(|e| e.to_string())?;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let request = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)
        .map_err(|e| format!("{e:#}"))?;
    let out = store
        .data_mut()
        .http()
        .new_response_outparam(sender)
        .map_err(|e| format!("{e:#}"))?;
    let pre = handler.pre.clone();
    // The guest may go on writing the body after it sent the head, so it runs on its own task.
    let guest = async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(store, request, out)
            .await
    };
    let task = tokio::spawn(crate::runtime::usage::Charged::new(
        guest,
        handler.spec.usage.clone(),
    ));
    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => Err(format!("the component answered with an error: {code:?}")),
        Err(_) => Err(match task.await {
            Ok(Ok(())) => "the component returned without setting a response".to_owned(),
            Ok(Err(error)) => format!("{error:#}"),
            Err(error) => error.to_string(),
        }),
    }
}
