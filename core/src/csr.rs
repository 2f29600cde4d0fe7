//! Which CertificateSigningRequests are approved without a person, as Kubernetes' csrapproving controller
//! decides for node client certificates: a request for `system:node:NAME` in organization `system:nodes`, for
//! client authentication only, made by a bootstrap token's user (a joining node) or by that node itself (a
//! renewal). Pure: the controller applies the verdict.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use x509_parser::prelude::FromDer;

/// The signer of node client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The group of bootstrap tokens' users.
const BOOTSTRAPPERS: &str = "system:bootstrappers";
const NODE_PREFIX: &str = "system:node:";

/// The usages a node client certificate may ask for; `client auth` is required.
const ALLOWED_USAGES: [&str; 3] = ["digital signature", "key encipherment", "client auth"];

/// Whether a condition of this type is on the request with status True.
pub fn has_condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// The PEM of the request's `spec.request`.
pub fn request_pem(csr: &CertificateSigningRequest) -> Result<String, String> {
    String::from_utf8(csr.spec.request.0.clone())
        .map_err(|_| "spec.request is not a PEM certificate request".to_owned())
}

/// The subject (common name, organizations) of a PEM certificate request.
fn subject(pem: &str) -> Result<(String, Vec<String>), String> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| "spec.request is not a PEM certificate request".to_owned())?;
    let (_, request) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| format!("spec.request cannot be parsed: {e}"))?;
    let name = &request.certification_request_info.subject;
    let text = |attribute: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        attribute.as_str().map(str::to_owned).unwrap_or_default()
    };
    let common_name = name.iter_common_name().next().map(text).unwrap_or_default();
    let organizations = name.iter_organization().map(text).collect();
    Ok((common_name, organizations))
}

/// The node a request may be approved for at once, or why it may not.
pub fn node_client_request(csr: &CertificateSigningRequest) -> Result<String, String> {
    let spec = &csr.spec;
    if spec.signer_name != KUBELET_CLIENT_SIGNER {
        return Err(format!(
            "signer {:?} is not approved automatically",
            spec.signer_name
        ));
    }
    let usages = spec.usages.clone().unwrap_or_default();
    if !usages.iter().any(|u| u == "client auth")
        || usages.iter().any(|u| !ALLOWED_USAGES.contains(&u.as_str()))
    {
        return Err(format!(
            "usages {usages:?} are not those of a node client certificate"
        ));
    }
    let (common_name, organizations) = subject(&request_pem(csr)?)?;
    let Some(node) = common_name
        .strip_prefix(NODE_PREFIX)
        .filter(|n| !n.is_empty())
    else {
        return Err(format!("subject {common_name:?} is not system:node:NAME"));
    };
    if organizations != ["system:nodes"] {
        return Err(format!(
            "organizations {organizations:?} are not [\"system:nodes\"]"
        ));
    }
    let requester = spec.username.as_deref().unwrap_or_default();
    let bootstrapper = spec.groups.iter().flatten().any(|g| g == BOOTSTRAPPERS);
    if !bootstrapper && requester != common_name {
        return Err(format!(
            "{requester:?} may not request a certificate for {common_name:?}"
        ));
    }
    Ok(node.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(common_name: &str, organization: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, organization);
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(
        pem: &str,
        requester: &str,
        groups: &[&str],
        usages: &[&str],
    ) -> CertificateSigningRequest {
        use base64::Engine;
        serde_json::from_value(json!({
            "metadata": {"name": "node-csr"},
            "spec": {"request": base64::engine::general_purpose::STANDARD.encode(pem),
                     "signerName": KUBELET_CLIENT_SIGNER, "usages": usages,
                     "username": requester, "groups": groups}}))
        .unwrap()
    }

    #[test]
    fn a_bootstrapper_or_the_node_itself_gets_a_node_client_certificate() {
        let pem = request("system:node:edge-1", "system:nodes");
        let client = ["digital signature", "client auth"];
        assert_eq!(
            node_client_request(&csr(
                &pem,
                "system:bootstrap:abcdef",
                &[BOOTSTRAPPERS],
                &client
            )),
            Ok("edge-1".into())
        );
        assert_eq!(
            node_client_request(&csr(&pem, "system:node:edge-1", &["system:nodes"], &client)),
            Ok("edge-1".into())
        );
        assert!(
            node_client_request(&csr(&pem, "system:node:edge-2", &["system:nodes"], &client))
                .is_err()
        );
        assert!(node_client_request(&csr(&pem, "alice", &[], &client)).is_err());
        assert!(
            node_client_request(&csr(
                &pem,
                "system:bootstrap:abcdef",
                &[BOOTSTRAPPERS],
                &["server auth"]
            ))
            .is_err()
        );
        let admin = request("admin", "system:masters");
        assert!(
            node_client_request(&csr(
                &admin,
                "system:bootstrap:abcdef",
                &[BOOTSTRAPPERS],
                &client
            ))
            .is_err()
        );
        let masters = request("system:node:edge-1", "system:masters");
        assert!(
            node_client_request(&csr(
                &masters,
                "system:bootstrap:abcdef",
                &[BOOTSTRAPPERS],
                &client
            ))
            .is_err()
        );
        assert!(
            node_client_request(&csr(
                "garbage",
                "system:bootstrap:abcdef",
                &[BOOTSTRAPPERS],
                &client
            ))
            .is_err()
        );
    }
}
