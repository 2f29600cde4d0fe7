//! Where container images come from: a local path (ending in `.wasm`, or absolute), a `file://` URL, an
//! `http(s)://` URL optionally pinned by digest (`https://host/app.wasm@sha256:<hex>`), or else an OCI reference
//! to a Wasm artifact (`registry/repo:tag` or `@sha256:`), pulled with oci-client; registries on localhost and
//! 127.0.0.0/8 are spoken to over plain HTTP, as Docker does. Downloads are kept per reference, so
//! `IfNotPresent` does not fetch again, and `Never` only uses what is kept.

use crate::pod::pull_secrets::credentials_for;
use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

/// Why an image could not be had; shown as the container's ErrImagePull / ErrImageNeverPull message.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A local file could not be read.
    #[error("cannot read image {image}: {source}")]
    Read {
        /// The image reference.
        image: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The download failed.
    #[error("cannot download image {image}: {detail}")]
    Download {
        /// The image reference.
        image: String,
        /// What went wrong.
        detail: String,
    },
    /// The bytes do not have the pinned digest.
    #[error("image {image} has digest sha256:{actual}, not the pinned sha256:{expected}")]
    DigestMismatch {
        /// The image reference.
        image: String,
        /// The pinned digest.
        expected: String,
        /// The digest of what was downloaded.
        actual: String,
    },
    /// imagePullPolicy Never and the image is not on the node.
    #[error("image {0} is not present on the node and imagePullPolicy is Never")]
    NeverPull(String),
    /// A scheme the node cannot fetch from, or a reference that does not parse.
    #[error(
        "unsupported image reference {0:?}: use a path, file://, http:// or https:// URL, or an OCI reference"
    )]
    Unsupported(String),
}

impl ImageError {
    /// The container waiting reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::NeverPull(_) => "ErrImageNeverPull",
            _ => "ErrImagePull",
        }
    }
}

/// An image's bytes and their digest (`sha256:<hex>`, the container's imageID).
#[derive(Clone)]
pub struct Image {
    /// `sha256:` and the hex digest of the bytes.
    pub digest: String,
    /// The Wasm binary.
    pub bytes: Arc<Vec<u8>>,
    /// Whether the node had it already: nothing was downloaded or read again.
    pub present: bool,
}

impl Image {
    fn of(bytes: Vec<u8>) -> Self {
        Self {
            digest: format!("sha256:{}", hex_digest(&bytes)),
            bytes: Arc::new(bytes),
            present: false,
        }
    }
}

/// The node's image fetcher and download cache.
pub struct Images {
    dir: PathBuf,
    http: reqwest::Client,
    /// Images read before, by reference: a thousand pods of one image read and hash it once. A local file's
    /// entry holds its modification time and size, and is read again when either changes.
    known: Mutex<HashMap<String, Known>>,
}

struct Known {
    file: Option<(std::time::SystemTime, u64)>,
    image: Image,
}

fn hex_digest(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

impl Images {
    /// Keeps downloads under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            http: reqwest::Client::new(),
            known: Mutex::default(),
        }
    }

    fn known(&self, image: &str, file: Option<(std::time::SystemTime, u64)>) -> Option<Image> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.get(image).filter(|k| k.file == file).map(|k| Image {
            present: true,
            ..k.image.clone()
        })
    }

    fn remember(
        &self,
        image: &str,
        file: Option<(std::time::SystemTime, u64)>,
        bytes: Vec<u8>,
    ) -> Image {
        let fetched = Image::of(bytes);
        let known = Known {
            file,
            image: fetched.clone(),
        };
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(image.to_owned(), known);
        fetched
    }

    /// An image under a pull policy (`Always`, `IfNotPresent` or `Never`). OCI registries get the credentials
    /// `pull_secrets` hold for them.
    pub async fn fetch(
        &self,
        image: &str,
        policy: &str,
        pull_secrets: &[Secret],
    ) -> Result<Image, ImageError> {
        let web = image.starts_with("http://") || image.starts_with("https://");
        if !web {
            if image.contains("://") && !image.starts_with("file://") {
                return Err(ImageError::Unsupported(image.to_owned()));
            }
            let path = image.strip_prefix("file://").unwrap_or(image);
            if image.starts_with("file://") || is_path(path) {
                let unreadable = |source| ImageError::Read {
                    image: image.to_owned(),
                    source,
                };
                let metadata = tokio::fs::metadata(path).await.map_err(unreadable)?;
                let stamp = metadata.modified().ok().map(|at| (at, metadata.len()));
                if let Some(known) = stamp.and_then(|stamp| self.known(image, Some(stamp))) {
                    return Ok(known);
                }
                let bytes = tokio::fs::read(path).await.map_err(unreadable)?;
                return Ok(self.remember(image, stamp, bytes));
            }
        }
        let (url, pinned) = match image.rsplit_once("@sha256:") {
            Some((url, digest)) => (url, Some(digest.to_ascii_lowercase())),
            None => (image, None),
        };
        let kept = self.dir.join(hex_digest(image.as_bytes()));
        if policy != "Always" {
            if let Some(known) = self.known(image, None) {
                return Ok(known);
            }
            if let Ok(bytes) = tokio::fs::read(&kept).await {
                return Ok(Image {
                    present: true,
                    ..self.remember(image, None, bytes)
                });
            }
        }
        if policy == "Never" {
            return Err(ImageError::NeverPull(image.to_owned()));
        }
        let download = |detail: String| ImageError::Download {
            image: image.to_owned(),
            detail,
        };
        if !web {
            let bytes = pull_oci(image, pull_secrets).await.map_err(download)?;
            self.keep(&kept, image, &bytes).await;
            return Ok(self.remember(image, None, bytes));
        }
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| download(e.to_string()))?;
        if !response.status().is_success() {
            return Err(download(format!("HTTP {}", response.status())));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| download(e.to_string()))?
            .to_vec();
        if let Some(expected) = pinned {
            let actual = hex_digest(&bytes);
            if actual != expected {
                return Err(ImageError::DigestMismatch {
                    image: image.to_owned(),
                    expected,
                    actual,
                });
            }
        }
        self.keep(&kept, image, &bytes).await;
        Ok(self.remember(image, None, bytes))
    }

    /// Keeps a download for later `IfNotPresent` and `Never` pulls.
    async fn keep(&self, kept: &std::path::Path, image: &str, bytes: &[u8]) {
        let stored = async {
            tokio::fs::create_dir_all(&self.dir).await?;
            tokio::fs::write(kept, bytes).await
        };
        if let Err(error) = stored.await {
            tracing::warn!(%error, image, "cannot keep a downloaded image");
        }
    }
}

/// Whether an image names a file on the node rather than an OCI reference.
fn is_path(image: &str) -> bool {
    image.ends_with(".wasm")
        || image.starts_with('/')
        || image.starts_with("./")
        || image.starts_with("../")
}

/// The layer media types that hold a Wasm binary (wasm-to-oci, the OCI Wasm artifact layout, plain wasm).
const WASM_LAYERS: [&str; 3] = [
    oci_client::manifest::WASM_LAYER_MEDIA_TYPE,
    "application/vnd.module.wasm.content.layer.v1+wasm",
    "application/wasm",
];

/// Pulls the Wasm layer of an OCI artifact, anonymously.
async fn pull_oci(image: &str, pull_secrets: &[Secret]) -> Result<Vec<u8>, String> {
    let reference: oci_client::Reference = image
        .parse()
        .map_err(|e| format!("not an OCI reference: {e}"))?;
    let registry = reference.resolve_registry().to_owned();
    let host = registry
        .rsplit_once(':')
        .map_or(registry.as_str(), |(host, _)| host);
    let local = host == "localhost"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    let config = oci_client::client::ClientConfig {
        protocol: if local {
            oci_client::client::ClientProtocol::Http
        } else {
            oci_client::client::ClientProtocol::Https
        },
        ..Default::default()
    };
    wasmkube_core::pki::use_ring();
    let client = oci_client::Client::new(config);
    let auth = match credentials_for(&registry, pull_secrets) {
        Some(c) => oci_client::secrets::RegistryAuth::Basic(c.username, c.password),
        None => oci_client::secrets::RegistryAuth::Anonymous,
    };
    let pulled = client
        .pull(&reference, &auth, WASM_LAYERS.to_vec())
        .await
        .map_err(|e| e.to_string())?;
    pulled
        .layers
        .into_iter()
        .next()
        .map(|layer| layer.data.to_vec())
        .ok_or_else(|| "the artifact has no Wasm layer".to_owned())
}
