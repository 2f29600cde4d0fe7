//! L4 proxying: each accepted connection is joined to one endpoint; an endpoint that refuses is taken out and
//! the next one tried, so a client only fails when no endpoint answers. An endpoint that sends nothing back
//! within [`STALL`] of the client's first bytes (and answered nothing else since) is left out of new
//! connections for a while: a frozen process still has its connections accepted by the kernel.

use super::balancer::{Backends, Lease, STALL};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

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
        let address = lease.address();
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(upstream)) => {
                let _ = upstream.set_nodelay(true);
                relay(&mut client, upstream, &lease, backends).await;
                return;
            }
            _ => {
                backends.mark_down(address);
                tried.push(address);
            }
        }
    }
    tracing::debug!(service = %backends.behaviour().service, "no endpoint answered; connection closed");
}

/// Copies both ways until either side closes, watching whether the endpoint answers the client's bytes.
async fn relay(client: &mut TcpStream, upstream: TcpStream, lease: &Lease, backends: &Backends) {
    let progress = Progress::default();
    let mut upstream = Watched {
        stream: upstream,
        progress: &progress,
        lease,
    };
    let copy =
        tokio::io::copy_bidirectional_with_sizes(client, &mut upstream, COPY_BUFFER, COPY_BUFFER);
    tokio::pin!(copy);
    let mut deadline = None;
    loop {
        tokio::select! {
            _ = &mut copy => return,
            () = progress.sent.notified(), if deadline.is_none() => {
                deadline = Some(tokio::time::Instant::now() + STALL);
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                if deadline.is_some() && !progress.checked.load(Ordering::Relaxed) => {
                progress.checked.store(true, Ordering::Relaxed);
                if !progress.answered.load(Ordering::Relaxed) {
                    lease.stalled_since(progress.sent_at.load(Ordering::Relaxed), &backends.behaviour().service);
                }
            }
        }
    }
}

/// What one joined connection has seen of its endpoint.
#[derive(Default)]
struct Progress {
    /// Signalled when the client's first bytes went to the endpoint.
    sent: Notify,
    /// When that was ([`Lease::clock`]).
    sent_at: AtomicU64,
    /// Whether the endpoint sent anything back.
    answered: AtomicBool,
    /// Whether the stall check ran.
    checked: AtomicBool,
}

/// The endpoint's side of a connection, noting the first bytes each way.
struct Watched<'a> {
    stream: TcpStream,
    progress: &'a Progress,
    lease: &'a Lease,
}

impl AsyncRead for Watched<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before && !self.progress.answered.swap(true, Ordering::Relaxed) {
            self.lease.answered();
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
            && self.progress.sent_at.load(Ordering::Relaxed) == 0
        {
            self.progress
                .sent_at
                .store(Lease::clock(), Ordering::Relaxed);
            self.progress.sent.notify_one();
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
