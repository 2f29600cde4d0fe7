//! `wasmkube token create|list|delete`: bearer tokens kept as Secrets in kube-system, as `kubeadm token`
//! does for bootstrap tokens (the ones nodes join with), and user tokens (`--user`) for people and scripts.

use crate::cli::ClientArgs;
use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use wasmkube_control::api::resources;
use wasmkube_control::api::tokens::{
    self, BOOTSTRAP_TOKEN_TYPE, NewToken, TOKEN_NAMESPACE, USER_TOKEN_TYPE,
};
use wasmkube_control::apiserver::{ApiServer, Target};

/// `token` arguments.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(clap::Subcommand, Debug)]
enum TokenCommand {
    /// Issue a token and print it: a bootstrap token for joining nodes, or with --user one for a user.
    Create {
        /// The user the token authenticates as (RBAC bindings name them); none makes a bootstrap token.
        #[arg(long)]
        user: Option<String>,
        /// The user's groups (repeat or comma-separate).
        #[arg(long = "group", value_delimiter = ',')]
        groups: Vec<String>,
        /// How long it works, e.g. 24h, 30m, 7d; 0 for ever (default: 24h for bootstrap tokens, for ever for
        /// user tokens).
        #[arg(long)]
        ttl: Option<String>,
        /// Why the token exists.
        #[arg(long)]
        description: Option<String>,
        /// Print the whole `wasmkube node` command that joins a node with it (bootstrap tokens only).
        #[arg(long, conflicts_with = "user")]
        print_join_command: bool,
    },
    /// List the tokens (their IDs, never their secrets).
    List,
    /// Revoke a token, by its ID or the whole token.
    Delete {
        /// The ID (the part before the dot) or the token.
        #[arg(value_name = "TOKEN_OR_ID")]
        revoked: String,
    },
}

/// `24h`, `30m`, `7d` (jiff's friendly durations; `0`: never) as a lifetime.
fn parse_ttl(text: &str) -> anyhow::Result<Option<jiff::SignedDuration>> {
    if text.trim() == "0" {
        return Ok(None);
    }
    let wrong =
        || format!("--ttl {text:?} is not a duration such as 30m, 24h or 7d (or 0 for ever)");
    let span: jiff::Span = text.trim().parse().with_context(wrong)?;
    let duration = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .with_context(wrong)?;
    if !duration.is_positive() {
        bail!(wrong());
    }
    Ok(Some(duration))
}

/// A new bootstrap token that works for a day.
fn new_bootstrap_token() -> NewToken {
    NewToken {
        id: tokens::random_part(6),
        secret: tokens::random_part(16),
        user: None,
        groups: Vec::new(),
        expiration: Some(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24)),
        description: Some("made by wasmkube server at start".into()),
    }
}

/// Stores a new bootstrap token through the in-process apiserver; returns its join token.
pub async fn create_join_token(api: &ApiServer, ca_pem: &str) -> anyhow::Result<String> {
    let token = new_bootstrap_token();
    let secrets = resources::by_path("", "v1", "secrets").context("secrets are not served")?;
    let target = Target {
        resource: secrets,
        namespace: Some(TOKEN_NAMESPACE.to_owned()),
        conversion: None,
    };
    api.create_by(
        &target,
        serde_json::to_value(tokens::token_secret(&token))?,
        "kube-apiserver",
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = tokens::ca_hash(ca_pem).context("the cluster CA is not a PEM certificate")?;
    Ok(tokens::join_token(
        &hash,
        &format!("{}.{}", token.id, token.secret),
    ))
}

/// Runs a `token` subcommand.
pub async fn token(args: &ClientArgs, command: TokenArgs) -> anyhow::Result<()> {
    let config = crate::cli::config(args).await?;
    let server = config.cluster_url.to_string();
    let ca = config.root_cert.clone();
    let secrets: Api<Secret> = Api::namespaced(kube::Client::try_from(config)?, TOKEN_NAMESPACE);
    match command.command {
        TokenCommand::Create {
            user,
            groups,
            ttl,
            description,
            print_join_command,
        } => {
            if user.as_deref().is_some_and(str::is_empty) {
                bail!("--user must not be empty");
            }
            let default_ttl = if user.is_some() { "0" } else { "24h" };
            let lifetime = parse_ttl(ttl.as_deref().unwrap_or(default_ttl))?;
            let new = NewToken {
                id: tokens::random_part(6),
                secret: tokens::random_part(16),
                user,
                groups: groups.into_iter().filter(|g| !g.is_empty()).collect(),
                expiration: lifetime.map(|d| jiff::Timestamp::now() + d),
                description,
            };
            let ca_hash = match (print_join_command, ca.as_ref().and_then(|c| c.first())) {
                (false, _) => None,
                (true, Some(der)) => Some(tokens::ca_der_hash(der)),
                (true, None) => bail!(
                    "--print-join-command needs the cluster CA: the kubeconfig's certificate-authority-data or --certificate-authority"
                ),
            };
            secrets
                .create(&PostParams::default(), &tokens::token_secret(&new))
                .await
                .context("cannot store the token")?;
            let token = format!("{}.{}", new.id, new.secret);
            match ca_hash {
                Some(hash) => println!(
                    "wasmkube node --server {} --token {} --name NODE",
                    server.trim_end_matches('/'),
                    tokens::join_token(&hash, &token)
                ),
                None => println!("{token}"),
            }
            Ok(())
        }
        TokenCommand::List => {
            let list = secrets.list(&ListParams::default()).await?;
            println!(
                "{:<8} {:<10} {:<24} {:<22} DESCRIPTION",
                "ID", "KIND", "USER", "EXPIRES"
            );
            for secret in list.items {
                let kind = match secret.type_.as_deref() {
                    Some(BOOTSTRAP_TOKEN_TYPE) => "bootstrap",
                    Some(USER_TOKEN_TYPE) => "user",
                    _ => continue,
                };
                let field = |key: &str| {
                    secret
                        .data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                        .unwrap_or_default()
                };
                let user = match kind {
                    "user" => field("user"),
                    _ => format!("system:bootstrap:{}", field("token-id")),
                };
                let expires = Some(field("expiration"))
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "<never>".into());
                println!(
                    "{:<8} {:<10} {:<24} {:<22} {}",
                    field("token-id"),
                    kind,
                    user,
                    expires,
                    field("description")
                );
            }
            Ok(())
        }
        TokenCommand::Delete { revoked } => {
            let id = revoked.split('.').next().unwrap_or_default();
            let mut deleted = false;
            for name in [
                tokens::bootstrap_secret_name(id),
                tokens::user_secret_name(id),
            ] {
                match secrets.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => deleted = true,
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e).context("cannot delete the token"),
                }
            }
            if !deleted {
                bail!("token {id:?} not found");
            }
            println!("token {id:?} deleted");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_ttl("24h").unwrap(),
            Some(jiff::SignedDuration::from_hours(24))
        );
        assert_eq!(
            parse_ttl("7d").unwrap(),
            Some(jiff::SignedDuration::from_hours(168))
        );
        assert_eq!(parse_ttl("0").unwrap(), None);
        for bad in ["", "h", "-1h", "soon"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
        let token = format!("{}.{}", tokens::random_part(6), tokens::random_part(16));
        assert!(tokens::split_token(&token).is_some(), "{token}");
    }
}
