//! Service account tokens as Kubernetes issues them (TokenRequest, `kubectl create token`): JWTs signed by
//! the control plane's key, for a ServiceAccount (and optionally a pod it runs), bound to audiences, expiring.
//! The apiserver verifies them and serves their bearer as `system:serviceaccount:NS:NAME`.

use super::rbac::{AUTHENTICATED, User};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The issuer (and default audience) of the tokens, Kubernetes' default `--service-account-issuer`.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The shortest lifetime a TokenRequest may ask for (10 minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest lifetime a TokenRequest may ask for (2^32 seconds).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// The lifetime of a token whose request names none (an hour).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The expiry ServiceAccount admission asks for a pod's mounted token (an hour and seven seconds, so it can be
/// told apart).
pub const MOUNTED_EXPIRATION_SECONDS: i64 = 3607;
/// How long a mounted token of the API's audience really lasts, as Kubernetes' default
/// `--service-account-extend-token-expiration`: a year, so apps that read their token once keep working.
pub const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 60 * 60;

/// Why a token was not issued or not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The key is not a usable ECDSA key.
    #[error("the service account signing key: {0}")]
    Key(String),
    /// The token is not a valid, current token of this issuer for these audiences.
    #[error("invalid service account token: {0}")]
    Invalid(String),
}

/// What a token says: Kubernetes' claims.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The issuer.
    pub iss: String,
    /// `system:serviceaccount:NS:NAME`.
    pub sub: String,
    /// The audiences.
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// A unique id.
    pub jti: String,
    /// The service account (and pod) the token is for.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: Binding,
}

/// The objects a token is bound to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Binding {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account.
    pub serviceaccount: ObjectRef,
    /// The pod, for a token bound to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
}

/// A name and uid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectRef {
    /// The object's name.
    pub name: String,
    /// Its uid: a token outlives no object it is bound to.
    pub uid: String,
}

/// Signs and verifies tokens with the control plane's key.
pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Signer {
    /// A signer from the private key (PKCS#8 PEM) and its public half (SPKI PEM).
    pub fn new(private_pem: &str, public_pem: &str) -> Result<Self, TokenError> {
        let key = |e: jsonwebtoken::errors::Error| TokenError::Key(e.to_string());
        Ok(Self {
            encoding: EncodingKey::from_ec_pem(private_pem.as_bytes()).map_err(key)?,
            decoding: DecodingKey::from_ec_pem(public_pem.as_bytes()).map_err(key)?,
        })
    }

    /// A token saying `claims`.
    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &self.encoding)
            .map_err(|e| TokenError::Key(e.to_string()))
    }

    /// The claims of `token` if it is this signer's, current and for one of `audiences`.
    pub fn verify(&self, token: &str, audiences: &[&str]) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }
}

/// Whether `token` looks like a JWT (three dot-separated parts), rather than an opaque bearer token.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// The user a service account's token authenticates as, with Kubernetes' groups.
pub fn user_of(claims: &Claims) -> User {
    let namespace = &claims.kubernetes.namespace;
    User {
        name: format!(
            "system:serviceaccount:{namespace}:{}",
            claims.kubernetes.serviceaccount.name
        ),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            AUTHENTICATED.into(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let private = crate::pki::service_account_key(tempfile::tempdir().unwrap().path()).unwrap();
        Signer::new(&private, &crate::pki::public_key_pem(&private).unwrap()).unwrap()
    }

    fn claims(expires_in: i64, audience: &str) -> Claims {
        let now = jiff::Timestamp::now().as_second();
        Claims {
            iss: ISSUER.into(),
            sub: "system:serviceaccount:dev:builder".into(),
            aud: vec![audience.into()],
            exp: now + expires_in,
            iat: now,
            nbf: now,
            jti: "j".into(),
            kubernetes: Binding {
                namespace: "dev".into(),
                serviceaccount: ObjectRef {
                    name: "builder".into(),
                    uid: "u1".into(),
                },
                pod: None,
            },
        }
    }

    #[test]
    fn tokens_verify_for_their_audience_until_they_expire() {
        let issuer = signer();
        let token = issuer.issue(&claims(600, ISSUER)).unwrap();
        assert!(looks_like_jwt(&token));
        let verified = issuer.verify(&token, &[ISSUER]).unwrap();
        assert_eq!(user_of(&verified).name, "system:serviceaccount:dev:builder");
        assert!(
            user_of(&verified)
                .groups
                .contains(&"system:serviceaccounts:dev".to_owned())
        );
        assert!(
            issuer.verify(&token, &["vault"]).is_err(),
            "another audience"
        );
        let expired = issuer.issue(&claims(-10, ISSUER)).unwrap();
        assert!(issuer.verify(&expired, &[ISSUER]).is_err());
        assert!(signer().verify(&token, &[ISSUER]).is_err(), "another key");
        let mut forged = token.clone();
        forged.push('x');
        assert!(issuer.verify(&forged, &[ISSUER]).is_err());
    }
}
