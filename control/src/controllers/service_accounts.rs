//! The service account controller: every namespace that is not being deleted has a `default`
//! ServiceAccount, made again if someone deletes it, as Kubernetes' does.

use super::namespace_object::{self, NamespaceObject};
use k8s_openapi::api::core::v1::ServiceAccount;

/// The `default` account.
struct DefaultAccount;

impl NamespaceObject for DefaultAccount {
    type Object = ServiceAccount;
    const CONTROLLER: &'static str = "service-accounts";
    const NAME: &'static str = "default";

    fn desired(&self) -> ServiceAccount {
        ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(Self::NAME.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn is_current(&self, _existing: &ServiceAccount) -> bool {
        true
    }
}

/// Runs the controller until the process ends.
pub async fn run(client: kube::Client) {
    namespace_object::run(client, DefaultAccount).await;
}
