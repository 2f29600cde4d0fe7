//! The certificate controllers of Kubernetes' controller-manager in one loop: csrapproving approves node client
//! requests (`api::csr` decides), csrsigning issues the certificate of every approved request for the
//! signers it holds the CA of (node and apiserver client certificates, signed by the cluster CA).

use super::controller_loop::ControllerLoop;
use super::{ControllerError, retry_after};
use crate::api::csr::{KUBELET_CLIENT_SIGNER, has_condition, node_client_request, request_pem};
use crate::pki::ClusterCa;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use std::sync::Arc;

/// The signers whose certificates the cluster CA issues.
const SIGNERS: [&str; 2] = [KUBELET_CLIENT_SIGNER, "kubernetes.io/kube-apiserver-client"];

struct Context {
    client: kube::Client,
    ca: Arc<ClusterCa>,
}

/// The request's conditions with one more.
fn with_condition(
    csr: &CertificateSigningRequest,
    kind: &str,
    reason: &str,
    message: &str,
) -> Value {
    let mut conditions: Vec<Value> = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    let now = jiff::Timestamp::now().to_string();
    conditions.push(
        json!({"type": kind, "status": "True", "reason": reason, "message": message,
                           "lastUpdateTime": now, "lastTransitionTime": now}),
    );
    json!({"status": {"conditions": conditions}})
}

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let name = csr.name_any();
    let issued = csr.status.as_ref().is_some_and(|s| s.certificate.is_some());
    if issued || has_condition(&csr, "Denied") || has_condition(&csr, "Failed") {
        return Ok(Action::await_change());
    }
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let params = PatchParams::default();
    if !has_condition(&csr, "Approved") {
        if let Ok(node) = node_client_request(&csr) {
            let patch = with_condition(
                &csr,
                "Approved",
                "AutoApproved",
                "Auto approving kubelet client certificate after SubjectAccessReview.",
            );
            api.patch_approval(&name, &params, &Patch::Merge(&patch))
                .await?;
            tracing::info!(csr = %name, node = %node, "approved node client certificate");
        }
        return Ok(Action::await_change());
    }
    if !SIGNERS.contains(&csr.spec.signer_name.as_str()) {
        return Ok(Action::await_change());
    }
    let signed = request_pem(&csr)
        .and_then(|pem| ctx.ca.sign_client_request(&pem).map_err(|e| e.to_string()));
    let patch = match signed {
        Ok(certificate) => {
            use base64::Engine;
            json!({"status": {"certificate": base64::engine::general_purpose::STANDARD.encode(certificate)}})
        }
        Err(message) => with_condition(&csr, "Failed", "SignerValidationFailure", &message),
    };
    api.patch_status(&name, &params, &Patch::Merge(&patch))
        .await?;
    tracing::info!(csr = %name, signer = %csr.spec.signer_name, "signed");
    Ok(Action::await_change())
}

fn error_policy(
    csr: Arc<CertificateSigningRequest>,
    error: &ControllerError,
    _ctx: Arc<Context>,
) -> Action {
    tracing::warn!(csr = %csr.name_any(), %error, "certificate request not handled");
    retry_after(error)
}

/// Runs the controller until the process ends.
pub async fn run(client: kube::Client, ca: Arc<ClusterCa>) {
    let requests = Api::<CertificateSigningRequest>::all(client.clone());
    ControllerLoop::new("certificates", requests, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(Context { client, ca }))
        .await;
}
