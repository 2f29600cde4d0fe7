//! RBAC kinds and CertificateSigningRequests, as Kubernetes' `rbac/validation` and
//! `certificates/validation` check them: rules with verbs, role references of a known kind, subjects of a
//! known kind, and CSR usages and signer names.

use super::{Cause, one_of, path_segment_name, qualified_name};
use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef, Subject};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// A role's rules; non-resource URLs only in a ClusterRole.
pub fn rules(rules: &[PolicyRule], cluster: bool, causes: &mut Vec<Cause>) {
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("rules[{i}]");
        if rule.verbs.is_empty() {
            causes.push(Cause::required_because(
                format!("{at}.verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = rule.non_resource_urls.as_deref().unwrap_or_default();
        let resources = rule.resources.as_deref().unwrap_or_default();
        if !urls.is_empty() {
            if !cluster {
                causes.push(Cause::invalid(
                    format!("{at}.nonResourceURLs"),
                    &urls.join(","),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !resources.is_empty() || rule.api_groups.as_ref().is_some_and(|g| !g.is_empty()) {
                causes.push(Cause::invalid(
                    format!("{at}.nonResourceURLs"),
                    &urls.join(","),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if rule.api_groups.is_none() {
            causes.push(Cause::required_because(
                format!("{at}.apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if resources.is_empty() {
            causes.push(Cause::required_because(
                format!("{at}.resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
}

/// A binding's role reference: a Role or ClusterRole (only ClusterRole from a ClusterRoleBinding) of the
/// RBAC group, by name.
pub fn role_ref(role: &RoleRef, cluster: bool, causes: &mut Vec<Cause>) {
    let kinds: &[&str] = if cluster {
        &["ClusterRole"]
    } else {
        &["ClusterRole", "Role"]
    };
    one_of("roleRef.kind", Some(role.kind.as_str()), kinds, causes);
    one_of(
        "roleRef.apiGroup",
        Some(role.api_group.as_deref().unwrap_or_default()),
        &[RBAC_GROUP],
        causes,
    );
    if role.name.is_empty() {
        causes.push(Cause::required("roleRef.name"));
    } else if let Some(detail) = path_segment_name(&role.name) {
        causes.push(Cause::invalid("roleRef.name", &role.name, &detail));
    }
}

/// A binding's subjects: ServiceAccounts (with a namespace in a ClusterRoleBinding), Users and Groups.
pub fn subjects(subjects: &[Subject], cluster: bool, causes: &mut Vec<Cause>) {
    for (i, subject) in subjects.iter().enumerate() {
        let at = format!("subjects[{i}]");
        if subject.name.is_empty() {
            causes.push(Cause::required(format!("{at}.name")));
        }
        match subject.kind.as_str() {
            "ServiceAccount" => {
                if let Some(detail) =
                    super::dns1123_subdomain(&subject.name).filter(|_| !subject.name.is_empty())
                {
                    causes.push(Cause::invalid(format!("{at}.name"), &subject.name, &detail));
                }
                if subject.api_group.as_deref().is_some_and(|g| !g.is_empty()) {
                    causes.push(Cause::not_supported(
                        format!("{at}.apiGroup"),
                        subject.api_group.as_deref().unwrap_or_default(),
                        &[""],
                    ));
                }
                if cluster && subject.namespace.as_deref().is_none_or(str::is_empty) {
                    causes.push(Cause::required(format!("{at}.namespace")));
                }
            }
            "User" | "Group" => {
                one_of(
                    &format!("{at}.apiGroup"),
                    subject.api_group.as_deref(),
                    &[RBAC_GROUP],
                    causes,
                );
            }
            other => causes.push(Cause::not_supported(
                format!("{at}.kind"),
                other,
                &["Group", "ServiceAccount", "User"],
            )),
        }
    }
}

/// Kubernetes' key usages of a certificate request.
const USAGES: [&str; 23] = [
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

/// A CertificateSigningRequest's spec: a request, a qualified signer name, known distinct usages, and an
/// expiration of at least ten minutes.
pub fn certificate_request(spec: &CertificateSigningRequestSpec, causes: &mut Vec<Cause>) {
    if spec.request.0.is_empty() {
        causes.push(Cause::required("spec.request"));
    }
    if spec.signer_name.is_empty() {
        causes.push(Cause::required("spec.signerName"));
    } else if !spec.signer_name.contains('/') {
        causes.push(Cause::invalid(
            "spec.signerName",
            &spec.signer_name,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
    } else {
        qualified_name("spec.signerName", &spec.signer_name, causes);
    }
    let mut seen = Vec::new();
    for (i, usage) in spec.usages.iter().flatten().enumerate() {
        let at = format!("spec.usages[{i}]");
        if !USAGES.contains(&usage.as_str()) {
            causes.push(Cause::not_supported(at, usage, &USAGES));
        } else if seen.contains(&usage) {
            causes.push(Cause::duplicate(at, usage));
        } else {
            seen.push(usage);
        }
    }
    if let Some(seconds) = spec.expiration_seconds.filter(|s| *s < 600) {
        causes.push(Cause::invalid_number(
            "spec.expirationSeconds",
            i64::from(seconds),
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_refers_to_a_role_kind_of_the_rbac_group() {
        let mut causes = Vec::new();
        role_ref(
            &RoleRef {
                api_group: Some(RBAC_GROUP.into()),
                kind: "Secret".into(),
                name: "x".into(),
            },
            false,
            &mut causes,
        );
        assert_eq!(
            causes[0].to_string(),
            "roleRef.kind: Unsupported value: \"Secret\": supported values: \"ClusterRole\", \"Role\""
        );
        let mut causes = Vec::new();
        role_ref(
            &RoleRef {
                api_group: Some(RBAC_GROUP.into()),
                kind: "Role".into(),
                name: "x".into(),
            },
            true,
            &mut causes,
        );
        assert_eq!(
            causes.len(),
            1,
            "a ClusterRoleBinding binds ClusterRoles only"
        );
    }
}
