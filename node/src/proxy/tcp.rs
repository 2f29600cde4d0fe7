//! L4 proxying: each accepted connection is joined to one endpoint; an endpoint that refuses is taken out and
//! the next one tried, so a client only fails when no endpoint answers.

use super::balancer::Backends;
use std::sync::Arc;
use std::time::Duration;
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
        let address = lease.address();
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(mut upstream)) => {
                let _ = upstream.set_nodelay(true);
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
    tracing::debug!(service = %backends.behaviour().service, "no endpoint answered; connection closed");
}
