//! Impersonation as Kubernetes does it: `Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid` and
//! `Impersonate-Extra-<key>` headers name another identity; each part needs the `impersonate` verb on its
//! resource (`users`, `serviceaccounts`, `groups`, `uids`, `userextras/<key>`), and the request is then served
//! as that identity. Pure: the apiserver asks its authorizers about the checks this module lists.

use super::rbac::{AUTHENTICATED, Request, ResourceRequest, User};
use http::HeaderMap;

/// The prefix of a service account's user name.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// The identity a request asks to act as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impersonation {
    /// `Impersonate-User`.
    pub user: String,
    /// `Impersonate-Group`, in order.
    pub groups: Vec<String>,
    /// `Impersonate-Uid`.
    pub uid: Option<String>,
    /// `Impersonate-Extra-<key>`: the key (unescaped, lowercase) and its values.
    pub extra: Vec<(String, Vec<String>)>,
}

/// Why the impersonation headers cannot be honoured (400 BadRequest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadImpersonation(pub String);

fn values(headers: &HeaderMap, name: &str) -> Result<Vec<String>, BadImpersonation> {
    headers
        .get_all(name)
        .iter()
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| BadImpersonation(format!("header {name} is not valid text")))
        })
        .collect()
}

/// Reads the impersonation headers: none, an identity, or why they are malformed.
pub fn from_headers(headers: &HeaderMap) -> Result<Option<Impersonation>, BadImpersonation> {
    let users = values(headers, "impersonate-user")?;
    let groups = values(headers, "impersonate-group")?;
    let uids = values(headers, "impersonate-uid")?;
    let mut extra = Vec::new();
    for name in headers.keys() {
        if let Some(key) = name.as_str().strip_prefix("impersonate-extra-") {
            let key = percent_decode(key)?;
            extra.push((key, values(headers, name.as_str())?));
        }
    }
    let Some(user) = users.first() else {
        if groups.is_empty() && uids.is_empty() && extra.is_empty() {
            return Ok(None);
        }
        return Err(BadImpersonation(
            "requested impersonation of groups, uid or extra without impersonating a user".into(),
        ));
    };
    if users.len() > 1 || uids.len() > 1 {
        return Err(BadImpersonation(
            "only one Impersonate-User and one Impersonate-Uid may be sent".into(),
        ));
    }
    Ok(Some(Impersonation {
        user: user.clone(),
        groups,
        uid: uids.first().cloned(),
        extra,
    }))
}

/// `Impersonate-Extra-` keys are percent-encoded (`Impersonate-Extra-acme.com%2Fproject`).
fn percent_decode(key: &str) -> Result<String, BadImpersonation> {
    let bad = || BadImpersonation(format!("invalid Impersonate-Extra key {key:?}"));
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = key.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

fn impersonate(
    group: &str,
    resource: &str,
    subresource: Option<&str>,
    namespace: Option<&str>,
    name: &str,
) -> Request {
    Request::Resource(ResourceRequest {
        verb: "impersonate".into(),
        group: group.into(),
        resource: resource.into(),
        subresource: subresource.map(str::to_owned),
        namespace: namespace.map(str::to_owned),
        name: Some(name.into()),
    })
}

impl Impersonation {
    /// The requests the impersonator must be allowed, one per part of the identity, in Kubernetes' order.
    pub fn checks(&self) -> Vec<Request> {
        let mut checks = vec![match service_account(&self.user) {
            Some((namespace, name)) => {
                impersonate("", "serviceaccounts", None, Some(namespace), name)
            }
            None => impersonate("", "users", None, None, &self.user),
        }];
        checks.extend(
            self.groups
                .iter()
                .map(|g| impersonate("", "groups", None, None, g)),
        );
        if let Some(uid) = &self.uid {
            checks.push(impersonate(
                "authentication.k8s.io",
                "uids",
                None,
                None,
                uid,
            ));
        }
        for (key, values) in &self.extra {
            checks.extend(values.iter().map(|value| {
                impersonate(
                    "authentication.k8s.io",
                    "userextras",
                    Some(key),
                    None,
                    value,
                )
            }));
        }
        checks
    }

    /// The identity the request is served as: the named user with the named groups (a service account's
    /// own groups when none are named), authenticated unless it is the anonymous user.
    pub fn user(&self) -> User {
        let mut groups = self.groups.clone();
        if groups.is_empty()
            && let Some((namespace, _)) = service_account(&self.user)
        {
            groups.push("system:serviceaccounts".into());
            groups.push(format!("system:serviceaccounts:{namespace}"));
        }
        let implied = if self.user == "system:anonymous" {
            "system:unauthenticated"
        } else {
            AUTHENTICATED
        };
        if !groups.iter().any(|g| g == implied) {
            groups.push(implied.into());
        }
        User {
            name: self.user.clone(),
            groups,
        }
    }
}

/// The namespace and name of a service account's user name.
fn service_account(user: &str) -> Option<(&str, &str)> {
    user.strip_prefix(SERVICE_ACCOUNT_PREFIX)?
        .split_once(':')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn no_headers_is_no_impersonation() {
        assert_eq!(from_headers(&headers(&[])), Ok(None));
    }

    #[test]
    fn groups_without_a_user_are_a_bad_request() {
        assert!(from_headers(&headers(&[("Impersonate-Group", "admins")])).is_err());
    }

    #[test]
    fn each_part_of_the_identity_is_checked() {
        let asked = from_headers(&headers(&[
            ("Impersonate-User", "alice"),
            ("Impersonate-Group", "dev"),
            ("Impersonate-Group", "ops"),
            ("Impersonate-Uid", "1234"),
            ("Impersonate-Extra-acme.com%2Fproject", "blue"),
        ]))
        .unwrap()
        .unwrap();
        let names: Vec<String> = asked
            .checks()
            .iter()
            .map(|c| match c {
                Request::Resource(r) => format!(
                    "{}/{} {}",
                    r.group,
                    r.path(),
                    r.name.clone().unwrap_or_default()
                ),
                Request::NonResource { .. } => String::new(),
            })
            .collect();
        assert_eq!(
            names,
            [
                "/users alice",
                "/groups dev",
                "/groups ops",
                "authentication.k8s.io/uids 1234",
                "authentication.k8s.io/userextras/acme.com/project blue",
            ]
        );
        assert_eq!(asked.user().groups, ["dev", "ops", "system:authenticated"]);
    }

    #[test]
    fn a_service_account_is_checked_in_its_namespace_and_gets_its_groups() {
        let asked = from_headers(&headers(&[(
            "Impersonate-User",
            "system:serviceaccount:prod:builder",
        )]))
        .unwrap()
        .unwrap();
        let Request::Resource(check) = &asked.checks()[0] else {
            panic!("a resource check");
        };
        assert_eq!(
            (check.resource.as_str(), check.namespace.as_deref()),
            ("serviceaccounts", Some("prod"))
        );
        assert_eq!(
            asked.user().groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:prod",
                "system:authenticated"
            ]
        );
    }
}
