//! Registry credentials from a pod's `imagePullSecrets`: Secrets of type `kubernetes.io/dockerconfigjson`
//! (`.dockerconfigjson`: `{"auths": {REGISTRY: {...}}}`) or the older `kubernetes.io/dockercfg` (`.dockercfg`:
//! `{REGISTRY: {...}}`), each entry with `username` and `password` or `auth` (base64 of `user:password`).

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The registry part of an entry's key: `https://host:port/v1/` and `host:port` both name `host:port`.
fn registry_of(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

fn entry_credentials(entry: &Value) -> Option<RegistryCredentials> {
    if let (Some(username), Some(password)) =
        (entry["username"].as_str(), entry["password"].as_str())
    {
        return Some(RegistryCredentials {
            username: username.to_owned(),
            password: password.to_owned(),
        });
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry["auth"].as_str()?)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(RegistryCredentials {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// The entries of one pull secret, by registry.
fn entries(secret: &Secret) -> Vec<(String, Value)> {
    let data = secret.data.clone().unwrap_or_default();
    let parsed = |key: &str| -> Option<Value> { serde_json::from_slice(&data.get(key)?.0).ok() };
    let auths = parsed(".dockerconfigjson")
        .map(|config| config["auths"].clone())
        .or_else(|| parsed(".dockercfg"));
    match auths {
        Some(Value::Object(map)) => map.into_iter().collect(),
        _ => Vec::new(),
    }
}

/// The credentials the first of `secrets` (in the pod's order) holds for `registry` (`host[:port]`).
pub fn credentials_for(registry: &str, secrets: &[Secret]) -> Option<RegistryCredentials> {
    secrets.iter().find_map(|secret| {
        entries(secret)
            .into_iter()
            .find(|(key, _)| registry_of(key) == registry)
            .and_then(|(_, entry)| entry_credentials(&entry))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(key: &str, document: Value) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                key.to_owned(),
                ByteString(document.to_string().into_bytes()),
            )])),
            ..Default::default()
        }
    }

    fn creds(username: &str, password: &str) -> Option<RegistryCredentials> {
        Some(RegistryCredentials {
            username: username.into(),
            password: password.into(),
        })
    }

    #[test]
    fn dockerconfigjson_entries_match_their_registry() {
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:s3cret");
        let secrets = [
            secret(
                ".dockerconfigjson",
                serde_json::json!({"auths": {
                    "registry.example:5000": {"username": "alice", "password": "pw"},
                    "https://other.example/v1/": {"auth": auth},
                }}),
            ),
            secret(
                ".dockerconfigjson",
                serde_json::json!({"auths": {"registry.example:5000": {"username": "second", "password": "x"}}}),
            ),
        ];
        assert_eq!(
            credentials_for("registry.example:5000", &secrets),
            creds("alice", "pw")
        );
        assert_eq!(
            credentials_for("other.example", &secrets),
            creds("bob", "s3cret")
        );
        assert_eq!(credentials_for("unknown.example", &secrets), None);
    }

    #[test]
    fn legacy_dockercfg_and_broken_secrets() {
        let legacy = secret(
            ".dockercfg",
            serde_json::json!({"127.0.0.1:5000": {"username": "u", "password": "p"}}),
        );
        assert_eq!(
            credentials_for("127.0.0.1:5000", &[legacy]),
            creds("u", "p")
        );
        let broken = Secret {
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_owned(),
                ByteString(b"not json".to_vec()),
            )])),
            ..Default::default()
        };
        assert_eq!(credentials_for("127.0.0.1:5000", &[broken]), None);
        assert!(!format!("{:?}", creds("u", "p").unwrap()).contains("\"p\""));
    }
}
