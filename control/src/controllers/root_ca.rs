//! The root CA publisher, as Kubernetes' `root-ca-cert-publisher`: every namespace that is not being deleted
//! has the ConfigMap `kube-root-ca.crt` whose `ca.crt` is the cluster CA's certificate, so pods can trust the
//! apiserver (ServiceAccount admission mounts it beside their token). Made again if deleted, put right if
//! changed.

use super::namespace_object::{self, NamespaceObject};
use k8s_openapi::api::core::v1::ConfigMap;
use std::collections::BTreeMap;

/// Its key.
const KEY: &str = "ca.crt";

/// The ConfigMap of one CA certificate.
struct RootCa {
    ca_pem: String,
}

impl NamespaceObject for RootCa {
    type Object = ConfigMap;
    const CONTROLLER: &'static str = "root-ca-cert-publisher";
    const NAME: &'static str = "kube-root-ca.crt";

    fn desired(&self) -> ConfigMap {
        ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(Self::NAME.into()),
                annotations: Some(BTreeMap::from([(
                    "kubernetes.io/description".to_owned(),
                    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal \
                     endpoints such as the internal service IP or kubernetes.default.svc. No other usage is \
                     guaranteed across distributions of Kubernetes clusters."
                        .to_owned(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(KEY.to_owned(), self.ca_pem.clone())])),
            ..Default::default()
        }
    }

    fn is_current(&self, existing: &ConfigMap) -> bool {
        existing
            .data
            .as_ref()
            .and_then(|d| d.get(KEY))
            .is_some_and(|pem| *pem == self.ca_pem)
    }
}

/// Runs the publisher of `ca_pem` until the process ends.
pub async fn run(client: kube::Client, ca_pem: String) {
    namespace_object::run(client, RootCa { ca_pem }).await;
}
