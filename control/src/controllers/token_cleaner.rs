//! The token cleaner, as Kubernetes' `tokencleaner`: a token Secret in kube-system (bootstrap token, user
//! token, dashboard login code or session) is deleted once it has expired, so the ones nobody used do not pile
//! up. An expired token already fails authentication; this only removes it.

use super::controller_loop::ControllerLoop;
use super::{ControllerError, retry_after};
use crate::api::tokens;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::sync::Arc;

/// What to do about one Secret.
#[derive(Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// Not a token, or one that never expires.
    Keep,
    /// Expired: delete it.
    Delete,
    /// Look again when it expires.
    RecheckIn(std::time::Duration),
}

/// What the cleaner does about `secret` at `now`.
pub fn cleanup(secret: &Secret, now: jiff::Timestamp) -> Cleanup {
    match tokens::expiration(secret) {
        None => Cleanup::Keep,
        Some(at) if at <= now => Cleanup::Delete,
        Some(at) => Cleanup::RecheckIn(
            now.duration_until(at)
                .unsigned_abs()
                .saturating_add(std::time::Duration::from_secs(1)),
        ),
    }
}

async fn reconcile(
    secret: Arc<Secret>,
    client: Arc<kube::Client>,
) -> Result<Action, ControllerError> {
    match cleanup(&secret, jiff::Timestamp::now()) {
        Cleanup::Keep => Ok(Action::await_change()),
        Cleanup::RecheckIn(after) => Ok(Action::requeue(after)),
        Cleanup::Delete => {
            let api: Api<Secret> = Api::namespaced((*client).clone(), tokens::TOKEN_NAMESPACE);
            // Only this very Secret: one made again under the same name since is not expired.
            let only_this = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: secret.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&secret.name_any(), &only_this).await {
                Ok(_) => tracing::info!(secret = %secret.name_any(), "deleted an expired token"),
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
                Err(error) => return Err(error.into()),
            }
            Ok(Action::await_change())
        }
    }
}

fn error_policy(secret: Arc<Secret>, error: &ControllerError, _: Arc<kube::Client>) -> Action {
    tracing::warn!(secret = %secret.name_any(), %error, "cannot delete an expired token");
    retry_after(error)
}

/// Runs the cleaner until the process ends.
pub async fn run(client: kube::Client) {
    let controller = ControllerLoop::new(
        "tokencleaner",
        Api::<Secret>::namespaced(client.clone(), tokens::TOKEN_NAMESPACE),
        watcher::Config::default(),
    );
    controller
        .run(reconcile, error_policy, Arc::new(client))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(expiration: Option<&str>) -> Secret {
        let mut secret = tokens::token_secret(&tokens::NewToken {
            id: "abcdef".into(),
            secret: "0123456789abcdef".into(),
            user: Some("alice".into()),
            groups: Vec::new(),
            expiration: None,
            description: None,
        });
        if let Some(at) = expiration {
            secret.data.get_or_insert_default().insert(
                "expiration".into(),
                k8s_openapi::ByteString(at.as_bytes().to_vec()),
            );
        }
        secret
    }

    #[test]
    fn expired_tokens_go_live_ones_are_looked_at_again_when_they_expire() {
        let now: jiff::Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        assert_eq!(
            cleanup(&token(Some("2026-12-07T09:59:59Z")), now),
            Cleanup::Delete
        );
        assert_eq!(
            cleanup(&token(Some("2026-12-07T10:00:00Z")), now),
            Cleanup::Delete
        );
        assert_eq!(
            cleanup(&token(Some("2026-12-07T10:05:00Z")), now),
            Cleanup::RecheckIn(std::time::Duration::from_secs(301))
        );
        assert_eq!(cleanup(&token(None), now), Cleanup::Keep);
        assert_eq!(cleanup(&token(Some("soon")), now), Cleanup::Keep);
        let mut code = tokens::login_code_secret(&tokens::NewToken {
            id: "abcdef".into(),
            secret: "0123456789abcdef".into(),
            user: Some("alice".into()),
            groups: Vec::new(),
            expiration: Some("2026-12-07T09:00:00Z".parse().unwrap()),
            description: None,
        });
        assert_eq!(cleanup(&code, now), Cleanup::Delete);
        code.type_ = Some("Opaque".into());
        assert_eq!(cleanup(&code, now), Cleanup::Keep, "not a token");
    }
}
