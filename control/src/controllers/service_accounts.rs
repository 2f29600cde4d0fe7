//! The service account controller: every namespace that is not being deleted has a `default`
//! ServiceAccount, made again if someone deletes it, as Kubernetes' does.

use super::{ControllerError, drive, reflect, retry_after};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use std::sync::Arc;

/// The account every namespace has.
const DEFAULT: &str = "default";

struct Context {
    client: kube::Client,
    accounts: Store<ServiceAccount>,
}

async fn reconcile(
    namespace: Arc<Namespace>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let name = namespace.name_any();
    let terminating = namespace.metadata.deletion_timestamp.is_some()
        || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    ctx.accounts
        .wait_until_ready()
        .await
        .map_err(|_| ControllerError::NotReady)?;
    let present = ctx
        .accounts
        .get(&ObjectRef::new(DEFAULT).within(&name))
        .is_some();
    if terminating || present {
        return Ok(Action::await_change());
    }
    let account = ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some(DEFAULT.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<ServiceAccount>::namespaced(ctx.client.clone(), &name)
        .create(&PostParams::default(), &account)
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Action::await_change()),
        // A namespace being deleted refuses new objects.
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

fn error_policy(namespace: Arc<Namespace>, error: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(namespace = %namespace.name_any(), %error, "default service account not made");
    retry_after(error)
}

/// Runs the controller until the process ends.
pub async fn run(client: kube::Client) {
    let (accounts, account_changes) = reflect(Api::<ServiceAccount>::all(client.clone()));
    let controller = Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches_stream(account_changes, |account: ServiceAccount| {
        account
            .namespace()
            .map(|ns| ObjectRef::<Namespace>::new(&ns))
    });
    drive(
        "service-accounts",
        controller.run(
            reconcile,
            error_policy,
            Arc::new(Context { client, accounts }),
        ),
    )
    .await;
}
