//! The token subresource of ServiceAccounts (TokenRequest, `kubectl create token`): a signed token for the
//! account, for the audiences asked (the API by default), expiring, optionally bound to a pod.

use super::*;
use crate::api::service_account_tokens::{
    self as tokens, Binding, Claims, DEFAULT_EXPIRATION_SECONDS, EXTENDED_EXPIRATION_SECONDS,
    ISSUER, MAX_EXPIRATION_SECONDS, MIN_EXPIRATION_SECONDS, MOUNTED_EXPIRATION_SECONDS, ObjectRef,
};
use crate::api::validation::Cause;

impl ApiServer {
    /// POST serviceaccounts/{name}/token: the TokenRequest with its token and expiry.
    pub async fn request_token(
        &self,
        target: &Target,
        name: &str,
        mut request: Value,
    ) -> Result<Value, ApiError> {
        require_object(&request)?;
        let signer = self.token_signer.as_ref().ok_or_else(|| {
            ApiError::Unavailable("this server has no service account signing key".into())
        })?;
        let namespace = target.namespace.clone().unwrap_or_default();
        let current = match self.read(target.resource, Some(&namespace), name) {
            // A pod may start before the controller has made its namespace's default account (admission
            // lets it, see service_account_admission.rs): the account is made now, as the controller would.
            Err(ApiError::NotFound { .. }) if name == "default" => {
                let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                                     "metadata": {"name": "default", "namespace": namespace}});
                match self.create_by(target, account, "kube-apiserver").await {
                    Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                    Err(error) => return Err(error),
                }
                self.read(target.resource, Some(&namespace), name)?
            }
            other => other?,
        };
        let account = served(&current.value, current.mod_revision)?;
        // The spec as Kubernetes types it: a wrong type (a string of seconds, a number as audience) is a 400.
        let spec: k8s_openapi::api::authentication::v1::TokenRequestSpec =
            k8s_openapi::api::authentication::v1::TokenRequestSpec::deserialize(&request["spec"])
                .map_err(|e| {
                ApiError::BadRequest(format!("the TokenRequest's spec is not valid: {e}"))
            })?;
        let expiration = spec
            .expiration_seconds
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        let invalid = |cause| ApiError::Invalid {
            kind: "TokenRequest.authentication.k8s.io".into(),
            name: name.to_owned(),
            causes: vec![cause],
        };
        if expiration < MIN_EXPIRATION_SECONDS {
            return Err(invalid(Cause::invalid_number(
                "spec.expirationSeconds",
                expiration,
                "may not specify a duration less than 10 minutes",
            )));
        }
        if expiration > MAX_EXPIRATION_SECONDS {
            return Err(invalid(Cause::invalid_number(
                "spec.expirationSeconds",
                expiration,
                "may not specify a duration larger than 2^32 seconds",
            )));
        }
        let audiences = spec
            .audiences
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| vec![ISSUER.to_owned()]);
        let pod = match &request["spec"]["boundObjectRef"] {
            Value::Null => None,
            bound => Some(self.bound_pod(&namespace, bound)?),
        };
        let issued_at = jiff::Timestamp::now().as_second();
        // A pod's mounted token for the API lasts a year, though the answer says an hour (Kubernetes' default
        // expiration extension).
        let lasts =
            if pod.is_some() && expiration == MOUNTED_EXPIRATION_SECONDS && audiences == [ISSUER] {
                EXTENDED_EXPIRATION_SECONDS
            } else {
                expiration
            };
        let claims = Claims {
            iss: ISSUER.into(),
            sub: format!("system:serviceaccount:{namespace}:{name}"),
            aud: audiences.clone(),
            exp: issued_at + lasts,
            iat: issued_at,
            nbf: issued_at,
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: Binding {
                namespace: namespace.clone(),
                serviceaccount: ObjectRef {
                    name: name.to_owned(),
                    uid: meta_str(&account, "uid").unwrap_or_default().to_owned(),
                },
                pod,
            },
        };
        let token = signer
            .issue(&claims)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let expires = jiff::Timestamp::from_second(issued_at + expiration)
            .map(|t| t.to_string())
            .unwrap_or_default();
        request["apiVersion"] = "authentication.k8s.io/v1".into();
        request["kind"] = "TokenRequest".into();
        request["metadata"] =
            json!({"name": name, "namespace": namespace, "creationTimestamp": now()});
        request["spec"]["audiences"] = json!(audiences);
        request["spec"]["expirationSeconds"] = expiration.into();
        request["status"] = json!({"token": token, "expirationTimestamp": expires});
        Ok(request)
    }

    /// The pod a token is to be bound to (`boundObjectRef`), which must exist (with its uid, when given).
    fn bound_pod(&self, namespace: &str, bound: &Value) -> Result<ObjectRef, ApiError> {
        let kind = bound["kind"].as_str().unwrap_or_default();
        if kind != "Pod" {
            return Err(ApiError::Invalid {
                kind: "TokenRequest.authentication.k8s.io".into(),
                name: String::new(),
                causes: vec![Cause::not_supported(
                    "spec.boundObjectRef.kind",
                    kind,
                    &["Pod"],
                )],
            });
        }
        let name = bound["name"].as_str().unwrap_or_default();
        let pods = resources::by_path("", "v1", "pods")
            .ok_or_else(|| ApiError::Internal("pods are not served".into()))?;
        let pod = served(&self.read(pods, Some(namespace), name)?.value, 0)?;
        let uid = meta_str(&pod, "uid").unwrap_or_default().to_owned();
        if let Some(asked) = bound["uid"].as_str().filter(|u| !u.is_empty())
            && asked != uid
        {
            return Err(ApiError::Conflict {
                resource: "pods".into(),
                name: name.to_owned(),
                detail: format!(
                    "the UID in the bound object reference ({asked}) does not match the pod's ({uid})"
                ),
            });
        }
        Ok(ObjectRef {
            name: name.to_owned(),
            uid,
        })
    }

    /// The service account a token of this server authenticates: the account (and the pod it is bound to)
    /// must still exist with the uids it was issued for.
    pub(in crate::apiserver) fn user_of_service_account_token(
        &self,
        token: &str,
    ) -> Option<crate::api::rbac::User> {
        let signer = self.token_signer.as_ref()?;
        let claims = signer.verify(token, &[ISSUER]).ok()?;
        let binding = &claims.kubernetes;
        let uid_of = |plural: &str, name: &str| {
            let resource = resources::by_path("", "v1", plural)?;
            let stored = self.read(resource, Some(&binding.namespace), name).ok()?;
            let object: Value = serde_json::from_slice(&stored.value).ok()?;
            meta_str(&object, "uid").map(str::to_owned)
        };
        if uid_of("serviceaccounts", &binding.serviceaccount.name)? != binding.serviceaccount.uid {
            return None;
        }
        if let Some(pod) = &binding.pod
            && uid_of("pods", &pod.name)? != pod.uid
        {
            return None;
        }
        Some(tokens::user_of(&claims))
    }
}
