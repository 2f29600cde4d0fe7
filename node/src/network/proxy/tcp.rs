//! L4 proxying: each accepted connection is joined to one endpoint; an endpoint that refuses is taken out and
//! the next one tried, so a client only fails when no endpoint answers. From the client's first bytes until
//! the endpoint's first, a connection is work the endpoint has not answered: one that leaves it waiting too
//! long is left out of new connections for a while (a frozen process still has its connections accepted by
//! the kernel).

use super::balancer::{Awaiting, Backends, Lease};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Bytes copied per read in each direction.
const COPY_BUFFER: usize = 256 * 1024;

/// How long connecting to one endpoint may take before the next is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts connections until the future is dropped; connections already joined carry on (drain).
pub async fn serve(listener: TcpListener, backends: Arc<Backends>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                let backends = backends.clone();
                tokio::spawn(async move {
                    let _ = client.set_nodelay(true);
                    join(client, peer.ip(), &backends).await;
                });
            }
            Err(error) => {
                tracing::warn!(service = %backends.behaviour().service, %error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn join(mut client: TcpStream, peer: std::net::IpAddr, backends: &Arc<Backends>) {
    let mut tried = Vec::new();
    while let Some(lease) = backends.pick(peer, &tried) {
        if !tried.is_empty() {
            backends.stats().retry();
        }
        let address = lease.address();
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(upstream)) => {
                let _ = upstream.set_nodelay(true);
                backends.stats().connection(true);
                let mut upstream = Watched {
                    stream: upstream,
                    lease: &lease,
                    awaiting: None,
                    answered: false,
                };
                let _ = tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut upstream,
                    COPY_BUFFER,
                    COPY_BUFFER,
                )
                .await;
                return;
            }
            _ => {
                backends.mark_down(address);
                tried.push(address);
            }
        }
    }
    backends.stats().connection(false);
    tracing::debug!(service = %backends.behaviour().service, "no endpoint answered; connection closed");
}

/// The endpoint's side of a connection: awaiting an answer from the client's first bytes to its own.
struct Watched<'a> {
    stream: TcpStream,
    lease: &'a Lease,
    awaiting: Option<Awaiting>,
    answered: bool,
}

impl AsyncRead for Watched<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before && !self.answered {
            self.answered = true;
            match self.awaiting.take() {
                Some(awaiting) => awaiting.answered(),
                // It spoke first: an answer all the same.
                None => self.lease.awaiting().answered(),
            }
        }
        polled
    }
}

impl AsyncWrite for Watched<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0)
            && !self.answered
            && self.awaiting.is_none()
        {
            self.awaiting = Some(self.lease.awaiting());
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
