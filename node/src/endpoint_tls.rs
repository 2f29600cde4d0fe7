//! TLS for the agent's endpoint (logs, port forwarding), as a kubelet's: served with a self-signed
//! certificate, and only to a client that presents the apiserver's certificate from the cluster CA. Nodes
//! (whose certificates the same CA signs), pods and anyone else are refused during the handshake.

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use std::sync::Arc;
use wasmkube_core::pki::{self, APISERVER_CLIENT, PkiError};

/// Accepts only client certificates of the cluster CA naming the apiserver.
#[derive(Debug)]
struct ApiserverOnly {
    ca: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for ApiserverOnly {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.ca.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.ca.verify_client_cert(end_entity, intermediates, now)?;
        match pki::subject_of(end_entity.as_ref()) {
            Some((name, _)) if name == APISERVER_CLIENT => Ok(ClientCertVerified::assertion()),
            other => Err(rustls::Error::General(format!(
                "only the apiserver may use the agent endpoint, not {:?}",
                other.map(|(name, _)| name).unwrap_or_default()
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.ca.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.ca.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.ca.supported_verify_schemes()
    }
}

/// The endpoint's TLS configuration: a fresh self-signed certificate for `address`, clients from `ca_pem`
/// naming the apiserver.
pub fn server_config(ca_pem: &str, address: &str) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    let issued = pki::self_signed_server(&[address.to_owned()])?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for der in pki::certificates_der(ca_pem) {
        roots.add(der.into())?;
    }
    let ca = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| PkiError::Tls(rustls::Error::General(e.to_string())))?;
    let cert = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
        .map_err(|e| PkiError::Tls(rustls::Error::General(e.to_string())))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
        .map_err(|e| PkiError::Tls(rustls::Error::General(e.to_string())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(ApiserverOnly { ca }))
        .with_single_cert(vec![cert], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
