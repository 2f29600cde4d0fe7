//! Bearer tokens and the users they stand for: a token file in Kubernetes' `--token-auth-file` format (one
//! `token,user,uid,"group1,group2"` line per token, the groups column optional), and tokens kept as Secrets in
//! kube-system, `ID.SECRET` (6 and 16 of `[a-z0-9]`): Kubernetes' bootstrap tokens
//! (`bootstrap-token-ID`, user `system:bootstrap:ID` in `system:bootstrappers`) and wasmkube's user tokens
//! (`user-token-ID`, type `wasmkube.io/user-token`, holding only the secret's SHA-256).

use super::rbac::User;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
pub use wasmkube_core::join_token::{
    ca_der_hash, ca_hash, join_token, parse_join_token, split_token,
};

/// The namespace of token Secrets.
pub const TOKEN_NAMESPACE: &str = "kube-system";
/// The Secret type of a bootstrap token.
pub const BOOTSTRAP_TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The Secret type of a user token.
pub const USER_TOKEN_TYPE: &str = "wasmkube.io/user-token";
/// The Secret type of a dashboard's one-time login code (`wasmkube dashboard`): it is never a bearer token,
/// only exchanged once for a session's user token.
pub const LOGIN_CODE_TYPE: &str = "wasmkube.io/dashboard-login-code";
/// The group of every bootstrap token's user.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";

/// `len` random characters of `[a-z0-9]`: a token's ID (6) or secret (16).
pub fn random_part(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// The name of the Secret of a bootstrap token.
pub fn bootstrap_secret_name(id: &str) -> String {
    format!("bootstrap-token-{id}")
}

/// The name of the Secret of a user token.
pub fn user_secret_name(id: &str) -> String {
    format!("user-token-{id}")
}

/// The name of the Secret of a dashboard login code.
pub fn login_code_secret_name(id: &str) -> String {
    format!("login-code-{id}")
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// When a token Secret (bootstrap, user token or login code) stops working: none for other Secrets, a token
/// that works for ever, or an expiration that does not parse (such a token never authenticates, but what is
/// not understood is not deleted either).
pub fn expiration(secret: &Secret) -> Option<jiff::Timestamp> {
    let is_token = matches!(
        secret.type_.as_deref(),
        Some(BOOTSTRAP_TOKEN_TYPE | USER_TOKEN_TYPE | LOGIN_CODE_TYPE)
    );
    is_token
        .then(|| text(secret, "expiration")?.parse().ok())
        .flatten()
}

fn expired(secret: &Secret, now: jiff::Timestamp) -> bool {
    match text(secret, "expiration") {
        Some(at) => at.parse::<jiff::Timestamp>().map_or(true, |at| at <= now),
        None => false,
    }
}

fn groups(secret: &Secret, key: &str) -> Vec<String> {
    text(secret, key)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The user of a token, given the Secret named by its ID (bootstrap or user token): none if the secret part
/// is wrong, the token expired or may not authenticate.
pub fn user_of_secret(secret: &Secret, token_secret: &str, now: jiff::Timestamp) -> Option<User> {
    if expired(secret, now) {
        return None;
    }
    let id = text(secret, "token-id")?;
    match secret.type_.as_deref() {
        Some(BOOTSTRAP_TOKEN_TYPE) => {
            let matches = text(secret, "token-secret")
                .is_some_and(|s| sha256_hex(&s) == sha256_hex(token_secret));
            let usable = text(secret, "usage-bootstrap-authentication").as_deref() == Some("true");
            (matches && usable).then(|| {
                let mut all = vec![BOOTSTRAPPERS.to_owned()];
                all.extend(groups(secret, "auth-extra-groups"));
                User {
                    name: format!("system:bootstrap:{id}"),
                    groups: all,
                }
            })
        }
        Some(USER_TOKEN_TYPE) => user_of_hashed_secret(secret, token_secret),
        _ => None,
    }
}

/// The user a dashboard login code stands for, given its Secret: none if the secret part is wrong or the
/// code expired.
pub fn user_of_login_code(
    secret: &Secret,
    code_secret: &str,
    now: jiff::Timestamp,
) -> Option<User> {
    (secret.type_.as_deref() == Some(LOGIN_CODE_TYPE) && !expired(secret, now))
        .then(|| user_of_hashed_secret(secret, code_secret))
        .flatten()
}

/// The user of a Secret that keeps a token's SHA-256 (a user token, a login code).
fn user_of_hashed_secret(secret: &Secret, token_secret: &str) -> Option<User> {
    let matches = text(secret, "token-secret-sha256").as_deref() == Some(&sha256_hex(token_secret));
    matches
        .then(|| User {
            name: text(secret, "user").unwrap_or_default(),
            groups: groups(secret, "groups"),
        })
        .filter(|user| !user.name.is_empty())
}

/// What a new token Secret holds.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The token's ID.
    pub id: String,
    /// The token's secret part.
    pub secret: String,
    /// For a user token: the user; none for a bootstrap token.
    pub user: Option<String>,
    /// The user's groups (for a bootstrap token: groups beyond `system:bootstrappers`).
    pub groups: Vec<String>,
    /// When it stops working, if ever.
    pub expiration: Option<jiff::Timestamp>,
    /// Why it was made.
    pub description: Option<String>,
}

/// The Secret that makes a token valid.
pub fn token_secret(token: &NewToken) -> Secret {
    let mut data: BTreeMap<String, ByteString> = BTreeMap::new();
    let mut put = |key: &str, value: String| {
        data.insert(key.to_owned(), ByteString(value.into_bytes()));
    };
    put("token-id", token.id.clone());
    if let Some(at) = token.expiration {
        put("expiration", at.to_string());
    }
    if let Some(description) = &token.description {
        put("description", description.clone());
    }
    let (name, type_) = match &token.user {
        Some(user) => {
            put("token-secret-sha256", sha256_hex(&token.secret));
            put("user", user.clone());
            put("groups", token.groups.join(","));
            (user_secret_name(&token.id), USER_TOKEN_TYPE)
        }
        None => {
            put("token-secret", token.secret.clone());
            put("usage-bootstrap-authentication", "true".into());
            put("usage-bootstrap-signing", "true".into());
            if !token.groups.is_empty() {
                put("auth-extra-groups", token.groups.join(","));
            }
            (bootstrap_secret_name(&token.id), BOOTSTRAP_TOKEN_TYPE)
        }
    };
    Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name),
            namespace: Some(TOKEN_NAMESPACE.to_owned()),
            ..Default::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(data),
        ..Default::default()
    }
}

/// The Secret that makes a dashboard login code valid: a user token's, under its own name and type.
pub fn login_code_secret(code: &NewToken) -> Secret {
    let mut secret = token_secret(code);
    secret.metadata.name = Some(login_code_secret_name(&code.id));
    secret.type_ = Some(LOGIN_CODE_TYPE.to_owned());
    secret
}

/// Token file errors.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// A line is not CSV.
    #[error("line {line}: {message}")]
    Malformed {
        /// The 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The same token is given twice.
    #[error("line {line}: the token is already given on an earlier line")]
    Duplicate {
        /// The 1-based line number.
        line: u64,
    },
}

/// The users of a token file, by token.
pub fn parse_token_file(text: &str) -> Result<HashMap<String, User>, TokenFileError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut tokens = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| TokenFileError::Malformed {
            line: e.position().map_or(0, |p| p.line()),
            message: e.to_string(),
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let malformed = |message: &str| TokenFileError::Malformed {
            line,
            message: message.to_owned(),
        };
        if record.len() < 3 {
            return Err(malformed(
                "expected at least 3 columns: token,user,uid[,\"group1,group2\"]",
            ));
        }
        let (token, name) = (&record[0], &record[1]);
        if token.is_empty() {
            return Err(malformed("the token is empty"));
        }
        if name.is_empty() {
            return Err(malformed("the user name is empty"));
        }
        let groups = record
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let user = User {
            name: name.to_owned(),
            groups,
        };
        if tokens.insert(token.to_owned(), user).is_some() {
            return Err(TokenFileError::Duplicate { line });
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_give_users_with_their_groups() {
        let tokens = parse_token_file(
            "# admins\nsecret1,alice,1001,\"system:masters,ops\"\nsecret2,system:node:n1,n1,system:nodes\nsecret3,bob,1002\n",
        )
        .unwrap();
        assert_eq!(tokens.len(), 3);
        assert_eq!(
            tokens["secret1"],
            User {
                name: "alice".into(),
                groups: vec!["system:masters".into(), "ops".into()]
            }
        );
        assert_eq!(tokens["secret2"].groups, vec!["system:nodes".to_owned()]);
        assert!(tokens["secret3"].groups.is_empty());
    }

    fn new_token(user: Option<&str>, expiration: Option<jiff::Timestamp>) -> NewToken {
        NewToken {
            id: "abcdef".into(),
            secret: "0123456789abcdef".into(),
            user: user.map(Into::into),
            groups: vec!["ops".into()],
            expiration,
            description: None,
        }
    }

    #[test]
    fn tokens_kept_as_secrets_authenticate_until_they_expire() {
        assert_eq!(
            split_token("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        for bad in [
            "abcdef",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123",
        ] {
            assert_eq!(split_token(bad), None, "{bad}");
        }
        let now: jiff::Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let later = now + jiff::SignedDuration::from_hours(1);
        let bootstrap = token_secret(&new_token(None, Some(later)));
        assert_eq!(
            bootstrap.metadata.name.as_deref(),
            Some("bootstrap-token-abcdef")
        );
        assert_eq!(
            user_of_secret(&bootstrap, "0123456789abcdef", now),
            Some(User {
                name: "system:bootstrap:abcdef".into(),
                groups: vec![BOOTSTRAPPERS.into(), "ops".into()]
            })
        );
        assert_eq!(user_of_secret(&bootstrap, "0123456789abcdee", now), None);
        assert_eq!(user_of_secret(&bootstrap, "0123456789abcdef", later), None);
        let user = token_secret(&new_token(Some("alice"), None));
        assert_eq!(user.metadata.name.as_deref(), Some("user-token-abcdef"));
        assert!(
            !user
                .data
                .as_ref()
                .unwrap()
                .values()
                .any(|v| v.0 == b"0123456789abcdef")
        );
        assert_eq!(
            user_of_secret(&user, "0123456789abcdef", later),
            Some(User {
                name: "alice".into(),
                groups: vec!["ops".into()]
            })
        );
        assert_eq!(user_of_secret(&user, "0000000000000000", now), None);
    }

    #[test]
    fn join_tokens_pin_the_ca() {
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::default()
            .self_signed(&key)
            .unwrap()
            .pem();
        let join = join_token(&ca_hash(&ca).unwrap(), "abcdef.0123456789abcdef");
        let (hash, token) = parse_join_token(&join).unwrap();
        assert_eq!(Some(hash.to_owned()), ca_hash(&ca));
        assert_eq!(token, "abcdef.0123456789abcdef");
        assert_eq!(parse_join_token("abcdef.0123456789abcdef"), None);
        assert_eq!(parse_join_token("wk1:00:abcdef.0123456789abcdef"), None);
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(
            parse_token_file("a,alice,1\nb,bob\n")
                .unwrap_err()
                .to_string(),
            "line 2: expected at least 3 columns: token,user,uid[,\"group1,group2\"]"
        );
        assert_eq!(
            parse_token_file("a,alice,1\na,bob,2\n")
                .unwrap_err()
                .to_string(),
            "line 2: the token is already given on an earlier line"
        );
        assert!(parse_token_file(",alice,1\n").is_err());
    }
}
