//! The cluster's certificate authority: made on the control plane's first start and kept in its data dir, it
//! signs the apiserver's serving certificate and the client certificates of joined nodes, and clients trust
//! the cluster by trusting it alone.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Certificate and key failures.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A certificate or key could not be made or parsed.
    #[error("{0}")]
    Certificate(#[from] rcgen::Error),
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// A PEM file holds no certificate or key.
    #[error("{0} holds no PEM certificate or key")]
    Pem(PathBuf),
}

/// The key that signs service account tokens (`sa.key` in `dir`, ECDSA P-256, PKCS#8 PEM), made when there is
/// none; the apiserver verifies the tokens with its public half.
pub fn service_account_key(dir: &Path) -> Result<String, PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join("sa.key");
    if let Some(pem) = read(&path)? {
        return Ok(pem);
    }
    let pem = KeyPair::generate()?.serialize_pem();
    write(&path, &pem, true)?;
    Ok(pem)
}

/// The public key (SPKI PEM) of a private key PEM.
pub fn public_key_pem(private_pem: &str) -> Result<String, PkiError> {
    Ok(KeyPair::from_pem(private_pem)?.public_key_pem())
}

/// The cluster CA: its certificate (PEM) and signing key.
pub struct ClusterCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key.
    pub key_pem: String,
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes a file only its owner can read (keys) or anyone can (certificates).
fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)
}

impl ClusterCa {
    /// The CA in `dir` (`ca.crt`, `ca.key`), made when there is none.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        if let (Some(cert_pem), Some(key_pem)) = (read(&cert_path)?, read(&key_path)?) {
            let key = KeyPair::from_pem(&key_pem)?;
            let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
            return Ok(Self { cert_pem, issuer });
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "wasmkube-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = params.self_signed(&key)?;
        write(&key_path, &key.serialize_pem(), true)?;
        write(&cert_path, &cert.pem(), false)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM-encoded: what clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A serving certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, common_name: &str, names: &[String]) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(name.as_str().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        self.issue(params, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A leaf certificate of `params` for one usage, with a new key.
    fn issue(
        &self,
        mut params: CertificateParams,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Issued, PkiError> {
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate for a user and its groups (the apiserver's own, for reaching node agents).
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, user);
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        self.issue(params, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate for a PEM certificate request: its subject (user and groups) as requested,
    /// valid for a year, for client authentication only.
    pub fn sign_client_request(&self, request_pem: &str) -> Result<String, PkiError> {
        let mut request = rcgen::CertificateSigningRequestParams::from_pem(request_pem)?;
        let params = &mut request.params;
        params.is_ca = IsCa::ExplicitNoCa;
        params.subject_alt_names.clear();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(365);
        Ok(request.signed_by(&self.issuer)?.pem())
    }
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

/// Makes ring the process's TLS provider, once (later calls do nothing): the registry client (oci-client), the
/// kube client and the TLS servers take the process's provider, and ring is the only one built in.
pub fn use_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The DER certificates of a PEM bundle (e.g. a CA file).
pub fn certificates_der(pem: &str) -> Vec<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|der| der.to_vec())
        .collect()
}

/// A certificate signed by its own key, for a server no client checks the name of (a node agent's endpoint,
/// which the apiserver reaches by address as Kubernetes' does a kubelet's).
pub fn self_signed_server(names: &[String]) -> Result<Issued, PkiError> {
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(names.to_vec())?.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The identity (common name, organizations) in a DER certificate.
pub fn subject_of(der: &[u8]) -> Option<(String, Vec<String>)> {
    use x509_parser::prelude::FromDer;
    let (_, certificate) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let subject = certificate.subject();
    let text =
        |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().map(str::to_owned).ok();
    let name = subject.iter_common_name().next().and_then(text)?;
    Some((name, subject.iter_organization().filter_map(text).collect()))
}

/// The identity the apiserver presents to node agents.
pub const APISERVER_CLIENT: &str = "system:apiserver";

/// A rustls server configuration presenting `issued`; clients may present a certificate of `client_ca`
/// (then it names them) or none.
pub fn server_config(
    issued: &Issued,
    client_ca: &str,
) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<rustls_pki_types::CertificateDer<'static>> =
        rustls_pki_types::CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
            .filter_map(Result::ok)
            .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
        .map_err(|_| PkiError::Pem(PathBuf::from("the serving key")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for der in certificates_der(client_ca) {
        roots.add(der.into())?;
    }
    let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| PkiError::Tls(rustls::Error::General(e.to_string())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(clients)
        .with_single_cert(certs, key)?;
    // HTTP/2 for clients that offer it (browsers, client-go's plain requests), so that many watches share one
    // connection (a browser opens at most six HTTP/1.1 connections to a server); HTTP/1.1 for the rest, and
    // for the upgrades of port forwarding and exec, whose clients offer only it, as kube-apiserver does.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = ClusterCa::load_or_create(dir.path()).unwrap();
        let again = ClusterCa::load_or_create(dir.path()).unwrap();
        assert_eq!(first.cert_pem(), again.cert_pem());
        let issued = again
            .issue_server(
                "wasmkube-apiserver",
                &["localhost".into(), "127.0.0.1".into()],
            )
            .unwrap();
        assert_eq!(certificates_der(&issued.cert_pem).len(), 1);
        assert!(server_config(&issued, again.cert_pem()).is_ok());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
