//! Joining a cluster with nothing but its URL and a join token (`wk1:CA_SHA256:ID.SECRET`), as kubeadm's TLS
//! bootstrap does: fetch the cluster CA, trust it only if its hash is the token's, then with the bootstrap
//! token ask for a node client certificate (a CertificateSigningRequest for `system:node:NAME` in
//! `system:nodes`), wait until it is issued, and keep key, certificate and CA in the data dir. A restarted
//! agent uses what it kept; the bootstrap token is needed only once.

use crate::data_dir::DataDir;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use kube::api::PostParams;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmkube_core::csr::KUBELET_CLIENT_SIGNER;
use wasmkube_core::join_token::{ca_hash, parse_join_token};

/// How long the agent waits for its certificate to be approved and issued.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The token is not a join token.
    #[error(
        "--token is not a join token (wk1:CA_SHA256:ID.SECRET, from `wasmkube token create --print-join-command`)"
    )]
    NotAJoinToken,
    /// The server's CA could not be fetched.
    #[error("cannot fetch the cluster CA from {url}: {reason}")]
    Discovery {
        /// Where it was asked for.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server's CA is not the one the token names.
    #[error(
        "the server's CA (sha256 {found}) is not the one the join token trusts (sha256 {expected}): refusing to join"
    )]
    WrongCa {
        /// The hash of the CA the server sent.
        found: String,
        /// The hash in the token.
        expected: String,
    },
    /// The certificate request was refused or never answered.
    #[error("the node certificate was not issued: {0}")]
    NotIssued(String),
    /// The apiserver refused a request.
    #[error("apiserver request failed: {0}")]
    Api(#[from] kube::Error),
    /// A key or request could not be made.
    #[error("cannot make the node key: {0}")]
    Key(#[from] rcgen::Error),
    /// A credential file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Where an agent keeps its credentials.
struct Files {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn in_dir(data_dir: &Path) -> Self {
        let dir = DataDir::new(data_dir);
        Self {
            ca: dir.cluster_ca(),
            cert: dir.node_certificate(),
            key: dir.node_key(),
        }
    }

    fn read(&self) -> Option<(String, String, String)> {
        let read = |path: &Path| std::fs::read_to_string(path).ok();
        Some((read(&self.ca)?, read(&self.cert)?, read(&self.key)?))
    }

    fn write(&self, ca: &str, cert: &str, key: &str) -> Result<(), JoinError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        for (path, contents, mode) in [
            (&self.ca, ca, 0o644),
            (&self.cert, cert, 0o644),
            (&self.key, key, 0o600),
        ] {
            let io = |source| JoinError::Io {
                path: path.clone(),
                source,
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(path)
                .and_then(|mut f| f.write_all(contents.as_bytes()))
                .map_err(io)?;
        }
        Ok(())
    }
}

/// A client configuration for `server` with a client certificate.
fn with_certificate(server: &http::Uri, ca: &str, cert: &str, key: &str) -> kube::Config {
    use base64::Engine;
    let encode = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let mut config = kube::Config::new(server.clone());
    config.root_cert = Some(wasmkube_core::pki::certificates_der(ca));
    config.auth_info.client_certificate_data = Some(encode(cert));
    config.auth_info.client_key_data = Some(encode(key).into());
    config
}

/// Whether `token` is a join token (rather than a plain bearer token).
pub fn is_join_token(token: &str) -> bool {
    token.starts_with("wk1:")
}

/// The agent's client configuration: its kept certificate, or a new one obtained with the join token.
pub fn node_credentials<'a>(
    server: &'a http::Uri,
    join_token: Option<&'a str>,
    node: &'a str,
    data_dir: &'a Path,
) -> wasmkube_core::EntryFuture<'a, Result<kube::Config, JoinError>> {
    Box::pin(obtain_credentials(server, join_token, node, data_dir))
}

async fn obtain_credentials(
    server: &http::Uri,
    join_token: Option<&str>,
    node: &str,
    data_dir: &Path,
) -> Result<kube::Config, JoinError> {
    let files = Files::in_dir(data_dir);
    if let Some((ca, cert, key)) = files.read() {
        return Ok(with_certificate(server, &ca, &cert, &key));
    }
    let (expected, bootstrap) = join_token
        .and_then(parse_join_token)
        .ok_or(JoinError::NotAJoinToken)?;
    let ca = discover_ca(server, expected).await?;
    let mut config = kube::Config::new(server.clone());
    config.root_cert = Some(wasmkube_core::pki::certificates_der(&ca));
    config.auth_info.token = Some(bootstrap.to_owned().into());
    let (cert, key) = request_certificate(kube::Client::try_from(config)?, node).await?;
    files.write(&ca, &cert, &key)?;
    tracing::info!(node = %node, dir = %data_dir.display(), "joined: node certificate issued and kept");
    Ok(with_certificate(server, &ca, &cert, &key))
}

/// The server's CA certificate, fetched without trusting the server and kept only if its hash is `expected`.
async fn discover_ca(server: &http::Uri, expected: &str) -> Result<String, JoinError> {
    let url = format!("{}/cacerts", server.to_string().trim_end_matches('/'));
    let failed = |reason: String| JoinError::Discovery {
        url: url.clone(),
        reason,
    };
    // Not trusted yet: whatever answers is checked against the token's hash below.
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("the server answered {}", response.status())));
    }
    let pem = response.text().await.map_err(|e| failed(e.to_string()))?;
    let found =
        ca_hash(&pem).ok_or_else(|| failed("the answer is not a PEM certificate".into()))?;
    if found != expected {
        return Err(JoinError::WrongCa {
            found,
            expected: expected.to_owned(),
        });
    }
    Ok(pem)
}

/// A key and a certificate for it, issued through a CertificateSigningRequest.
async fn request_certificate(
    client: kube::Client,
    node: &str,
) -> Result<(String, String), JoinError> {
    use base64::Engine;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params.serialize_request(&key)?.pem()?;
    let csr: CertificateSigningRequest = serde_json::from_value(serde_json::json!({
        "metadata": {"generateName": format!("node-csr-{node}-")},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(&request),
            "signerName": KUBELET_CLIENT_SIGNER,
            "usages": ["digital signature", "client auth"],
        },
    }))
    .map_err(|e| JoinError::NotIssued(e.to_string()))?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let created = api.create(&PostParams::default(), &csr).await?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::info!(node = %node, csr = %name, "asked for a node certificate");
    let deadline = Instant::now() + ISSUE_TIMEOUT;
    loop {
        let current = api.get(&name).await?;
        let status = current.status.unwrap_or_default();
        if let Some(certificate) = status.certificate {
            let pem = String::from_utf8(certificate.0)
                .map_err(|_| JoinError::NotIssued("the certificate is not PEM".into()))?;
            return Ok((pem, key.serialize_pem()));
        }
        if let Some(refusal) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True")
        {
            return Err(JoinError::NotIssued(format!(
                "certificate request {name} {}: {}",
                refusal.type_,
                refusal.message.clone().unwrap_or_default()
            )));
        }
        if Instant::now() > deadline {
            return Err(JoinError::NotIssued(format!(
                "certificate request {name} was not approved within {ISSUE_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
