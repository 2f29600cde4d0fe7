//! Versions served besides the one a resource is stored in (kube-apiserver's multi-version serving): a request
//! to such a version is served by the stored resource type, its written objects converted to the stored
//! version on the way in and every object it answers with converted back on the way out.

use super::autoscaling;
use super::resources::{self, ResourceType};
use serde_json::Value;

/// One version of a resource served from another one's objects.
#[derive(Debug)]
pub struct Conversion {
    /// API group, the stored resource's.
    pub group: &'static str,
    /// The served version.
    pub version: &'static str,
    /// The plural resource name, the stored resource's.
    pub plural: &'static str,
    /// The kind it converts, the stored resource's.
    kind: &'static str,
    /// The stored resource's version.
    stored_version: &'static str,
    /// Whether a written object decodes as the served version's type (why not, when it does not).
    decodes: fn(&Value) -> Result<(), String>,
    to_stored: fn(Value) -> Result<Value, String>,
    to_served: fn(Value) -> Value,
    /// The served kind's OpenAPI schema (for the generated documents under `control/openapi/`).
    #[cfg(test)]
    pub schema: resources::SchemaFn,
}

fn decodes_as<K: serde::de::DeserializeOwned>(object: &Value) -> Result<(), String> {
    K::deserialize(object).map(drop).map_err(|e| e.to_string())
}

/// Every version served from another one's objects.
pub fn all() -> &'static [Conversion] {
    static ALL: [Conversion; 1] = [Conversion {
        group: "autoscaling",
        version: "v1",
        plural: "horizontalpodautoscalers",
        kind: "HorizontalPodAutoscaler",
        stored_version: "v2",
        decodes: decodes_as::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>,
        to_stored: autoscaling::v1::from_v1,
        to_served: autoscaling::v1::to_v1,
        #[cfg(test)]
        schema: resources::schema_of::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>,
    }];
    &ALL
}

/// The resource type serving `plural` at `group`/`version`, and the conversion when that version is served from
/// another one's objects.
pub fn served(
    group: &str,
    version: &str,
    plural: &str,
) -> Option<(&'static ResourceType, Option<&'static Conversion>)> {
    match resources::by_path(group, version, plural) {
        Some(resource) => Some((resource, None)),
        None => {
            let conversion = by_path(group, version, plural)?;
            Some((conversion.stored()?, Some(conversion)))
        }
    }
}

/// The conversion serving `plural` at `group`/`version`, if that version is served that way.
pub fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static Conversion> {
    all()
        .iter()
        .find(|c| c.group == group && c.version == version && c.plural == plural)
}

impl Conversion {
    /// The stored resource type this version is served from.
    pub fn stored(&self) -> Option<&'static ResourceType> {
        resources::by_path(self.group, self.stored_version, self.plural)
    }

    /// `<group>/<version>` of the served version.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// A response body as the served version writes it: an object of the kind or a list of them converted,
    /// anything else (a Status, a Table) as it is.
    pub fn served(&self, mut body: Value) -> Value {
        let kind = self.kind;
        let body_kind = body.get("kind").and_then(Value::as_str).unwrap_or_default();
        if body_kind == kind {
            return (self.to_served)(body);
        }
        if body_kind.strip_suffix("List") == Some(kind) {
            body["apiVersion"] = self.api_version().into();
            if let Some(items) = body.get_mut("items").and_then(Value::as_array_mut) {
                for item in items.iter_mut() {
                    *item = (self.to_served)(std::mem::take(item));
                    item["kind"] = kind.into();
                }
            }
        }
        body
    }

    /// A written object of the served version as it is stored; its `apiVersion`, when given, must be the
    /// served one, and it must decode as the served version's type (both refused in Kubernetes' words, with
    /// the served version's field names).
    pub fn to_stored(&self, object: Value) -> Result<Value, String> {
        let expected = self.api_version();
        match object.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {}
            Some(given) if given == expected => {}
            Some(given) => {
                return Err(format!(
                    "the API version in the data ({given}) does not match the expected API version ({expected})"
                ));
            }
        }
        (self.decodes)(&object).map_err(|detail| {
            format!(
                "{} in version {:?} cannot be handled as a {}: {detail}",
                self.kind, self.version, self.kind
            )
        })?;
        (self.to_stored)(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn autoscaling_v1_is_served_from_the_stored_v2_autoscalers() {
        let v1 = by_path("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        assert_eq!(v1.stored().unwrap().api_version(), "autoscaling/v2");
        assert!(by_path("autoscaling", "v2", "horizontalpodautoscalers").is_none());
        let list = json!({"kind": "HorizontalPodAutoscalerList", "apiVersion": "autoscaling/v2",
            "items": [{"metadata": {"name": "a"}, "spec": {"metrics": []}}]});
        let served = v1.served(list);
        assert_eq!(served["apiVersion"], "autoscaling/v1");
        assert_eq!(served["items"][0]["apiVersion"], "autoscaling/v1");
        let status = json!({"kind": "Status", "apiVersion": "v1", "code": 404});
        assert_eq!(v1.served(status.clone()), status);
        let error = v1
            .to_stored(json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler"}))
            .unwrap_err();
        assert_eq!(
            error,
            "the API version in the data (autoscaling/v2) does not match the expected API version (autoscaling/v1)"
        );
        let error = v1
            .to_stored(json!({"spec": {"targetCPUUtilizationPercentage": "abc"}}))
            .unwrap_err();
        assert!(
            error.starts_with(
                "HorizontalPodAutoscaler in version \"v1\" cannot be handled as a HorizontalPodAutoscaler: invalid type: string \"abc\""
            ),
            "{error}"
        );
    }
}
