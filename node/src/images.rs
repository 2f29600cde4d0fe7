//! Where container images come from: a local path, a `file://` URL, or an `http(s)://` URL optionally pinned
//! by digest (`https://host/app.wasm@sha256:<hex>`). Downloads are kept per URL, so `IfNotPresent` does not
//! fetch again, and `Never` only uses what is kept.

use sha2::{Digest, Sha256};
use std::path::PathBuf;

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
    /// A scheme the node cannot fetch from.
    #[error("unsupported image reference {0:?}: use a path, file://, http:// or https:// URL")]
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

/// The node's image fetcher and download cache.
pub struct Images {
    dir: PathBuf,
    http: reqwest::Client,
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
        }
    }

    /// The bytes of an image under a pull policy (`Always`, `IfNotPresent` or `Never`).
    pub async fn fetch(&self, image: &str, policy: &str) -> Result<Vec<u8>, ImageError> {
        if !image.starts_with("http://") && !image.starts_with("https://") {
            if image.contains("://") && !image.starts_with("file://") {
                return Err(ImageError::Unsupported(image.to_owned()));
            }
            let path = image.strip_prefix("file://").unwrap_or(image);
            return tokio::fs::read(path)
                .await
                .map_err(|source| ImageError::Read {
                    image: image.to_owned(),
                    source,
                });
        }
        let (url, pinned) = match image.rsplit_once("@sha256:") {
            Some((url, digest)) => (url, Some(digest.to_ascii_lowercase())),
            None => (image, None),
        };
        let kept = self.dir.join(hex_digest(image.as_bytes()));
        if policy != "Always"
            && let Ok(bytes) = tokio::fs::read(&kept).await
        {
            return Ok(bytes);
        }
        if policy == "Never" {
            return Err(ImageError::NeverPull(image.to_owned()));
        }
        let download = |detail: String| ImageError::Download {
            image: image.to_owned(),
            detail,
        };
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
        let stored = async {
            tokio::fs::create_dir_all(&self.dir).await?;
            tokio::fs::write(&kept, &bytes).await
        };
        if let Err(error) = stored.await {
            tracing::warn!(%error, image, "cannot keep a downloaded image");
        }
        Ok(bytes)
    }
}
