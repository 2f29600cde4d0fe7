//! The TLS acceptor of the API: rustls' handshake (client certificates optional, verified against the cluster
//! CA), then the identity of the client's certificate put on every request of the connection, where the
//! apiserver's authentication finds it.

use axum_server::accept::{Accept, DefaultAcceptor};
use axum_server::tls_rustls::RustlsAcceptor;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tower::Layer;
use wasmkube_control::apiserver::auth::ClientCertificate;

/// Accepts TLS connections and tags their requests with the client certificate's user.
#[derive(Clone)]
pub struct IdentifyingAcceptor {
    tls: RustlsAcceptor<DefaultAcceptor>,
}

impl IdentifyingAcceptor {
    /// Wraps rustls' acceptor.
    pub fn new(tls: RustlsAcceptor<DefaultAcceptor>) -> Self {
        Self { tls }
    }
}

impl<I, S> Accept<I, S> for IdentifyingAcceptor
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Send + 'static,
{
    type Stream = TlsStream<I>;
    type Service = axum::middleware::AddExtension<S, ClientCertificate>;
    type Future = BoxFuture<'static, std::io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let handshake = self.tls.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = handshake.await?;
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map_or(ClientCertificate(None), |der| {
                    ClientCertificate::from_der(der.as_ref())
                });
            Ok((stream, axum::Extension(identity).layer(service)))
        })
    }
}
