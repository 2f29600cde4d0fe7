//! Join tokens, `wk1:CA_SHA256:ID.SECRET`: a bootstrap token (`ID.SECRET`, as Kubernetes' bootstrap tokens)
//! and the hash of the cluster CA a joining node is to trust.

use sha2::{Digest, Sha256};

/// The ID and secret of an `ID.SECRET` token, if it has that shape.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let valid = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (valid(id, 6) && valid(secret, 16)).then_some((id, secret))
}

/// The prefix of a join token: `wk1:CA_SHA256:ID.SECRET`.
const JOIN_PREFIX: &str = "wk1:";

/// The SHA-256 (hex) of a PEM CA certificate's DER: what a join token pins.
pub fn ca_hash(ca_pem: &str) -> Option<String> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).ok()?;
    Some(ca_der_hash(der.as_ref()))
}

/// The SHA-256 (hex) of a DER CA certificate.
pub fn ca_der_hash(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A join token: the bootstrap token and the hash of the CA the joining node is to trust.
pub fn join_token(ca_hash: &str, bootstrap_token: &str) -> String {
    format!("{JOIN_PREFIX}{ca_hash}:{bootstrap_token}")
}

/// The CA hash and bootstrap token of a join token, if `text` is one.
pub fn parse_join_token(text: &str) -> Option<(&str, &str)> {
    let (hash, token) = text.strip_prefix(JOIN_PREFIX)?.split_once(':')?;
    let hex = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    (hex && split_token(token).is_some()).then_some((hash, token))
}
