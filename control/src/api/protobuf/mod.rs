//! Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`), transcoded to and from the JSON
//! objects the apiserver works on. It is driven by the descriptors of Kubernetes' own .proto files
//! (`control/proto`, see [`registry`]), so no kind has code of its own: a message's fields are its JSON
//! object's keys.
//! The few apimachinery types whose JSON is not their message's shape (times, quantities, int-or-string,
//! embedded raw JSON) are converted in [`wellknown`].
//!
//! On the wire an object is the magic number `k8s\0` and a `runtime.Unknown` whose `typeMeta` names the
//! kind and whose `raw` is the object's message. A watch stream is a sequence of frames, each a 4-byte
//! big-endian length and a `meta.v1.WatchEvent` (without the envelope) whose object is an enveloped object.

mod from_json;
mod registry;
mod to_json;
mod wellknown;

use protobuf::MessageDyn;
use protobuf::reflect::{MessageDescriptor, ReflectValueBox, ReflectValueRef};
use serde_json::Value;

/// The media type of a protobuf object.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// The media type of a protobuf watch stream.
pub const WATCH_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";
/// What every enveloped object starts with.
/// The first bytes of every Kubernetes protobuf object.
pub const MAGIC: &[u8] = b"k8s\0";
/// How deeply enveloped objects may nest inside each other (raw extensions holding protobuf objects).
const MAX_NESTING: usize = 8;

/// Why a protobuf body could not be read, or an object could not be written as protobuf.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The bytes do not start with `k8s\0`.
    #[error(
        "the body is not a Kubernetes protobuf object: it does not start with the magic number \"k8s\\x00\""
    )]
    NoMagic,
    /// The `runtime.Unknown` envelope is not a valid message.
    #[error("the protobuf envelope (runtime.Unknown) could not be read: {0}")]
    Envelope(String),
    /// The envelope names no kind or apiVersion.
    #[error("the protobuf envelope names no {0}")]
    NoTypeMeta(&'static str),
    /// The envelope's content is compressed or in another encoding.
    #[error("the protobuf envelope's content {what} {value:?} is not supported")]
    Content {
        /// `encoding` or `type`.
        what: &'static str,
        /// What the envelope said.
        value: String,
    },
    /// No message of Kubernetes' .proto files is this kind.
    #[error("no protobuf message is known for {kind} in {api_version}")]
    UnknownKind {
        /// The object's apiVersion.
        api_version: String,
        /// The object's kind.
        kind: String,
    },
    /// The message is not valid for its kind.
    #[error("the {kind} in the body could not be read: {message}")]
    Malformed {
        /// The kind the envelope named.
        kind: String,
        /// What was wrong.
        message: String,
    },
    /// A field's JSON value does not fit its message field.
    #[error("{kind} field {path} cannot be written as protobuf: {message}")]
    Field {
        /// The object's kind.
        kind: String,
        /// The field, as `spec.template.spec.containers[0].ports`.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// Raw extensions nest deeper than [`MAX_NESTING`].
    #[error("protobuf objects nest more than {MAX_NESTING} deep")]
    TooDeep,
}

/// Reads an enveloped protobuf object as its JSON object, `apiVersion` and `kind` included.
pub fn decode(bytes: &[u8]) -> Result<Value, ProtobufError> {
    decode_nested(bytes, 0)
}

fn decode_nested(bytes: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    if depth > MAX_NESTING {
        return Err(ProtobufError::TooDeep);
    }
    let body = bytes.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let envelope = runtime_message("Unknown")?
        .parse_from_bytes(body)
        .map_err(|e| ProtobufError::Envelope(e.to_string()))?;
    let text = |name: &str| match field(&*envelope, name) {
        Some(ReflectValueRef::String(s)) if !s.is_empty() => Some(s.to_owned()),
        _ => None,
    };
    if let Some(encoding) = text("contentEncoding") {
        return Err(ProtobufError::Content {
            what: "encoding",
            value: encoding,
        });
    }
    if let Some(content) = text("contentType").filter(|t| t != MEDIA_TYPE) {
        return Err(ProtobufError::Content {
            what: "type",
            value: content,
        });
    }
    let type_meta = match field(&*envelope, "typeMeta") {
        Some(ReflectValueRef::Message(m)) => Some(m),
        _ => None,
    };
    let type_text = |name: &'static str| match type_meta.as_ref().and_then(|m| field(&**m, name)) {
        Some(ReflectValueRef::String(s)) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(ProtobufError::NoTypeMeta(name)),
    };
    let api_version = type_text("apiVersion")?;
    let kind = type_text("kind")?;
    let raw = match field(&*envelope, "raw") {
        Some(ReflectValueRef::Bytes(b)) => b,
        _ => &[],
    };
    let descriptor =
        registry::message(&api_version, &kind).ok_or_else(|| ProtobufError::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let malformed = |message: String| ProtobufError::Malformed {
        kind: kind.clone(),
        message,
    };
    let message = descriptor
        .parse_from_bytes(raw)
        .map_err(|e| malformed(e.to_string()))?;
    let mut object = match to_json::message(&*message, depth).map_err(|e| match e {
        to_json::Error::TooDeep => ProtobufError::TooDeep,
        to_json::Error::Invalid(message) => malformed(message),
    })? {
        Value::Object(fields) => fields,
        _ => serde_json::Map::new(),
    };
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(object))
}

/// Writes a JSON object, which names its `apiVersion` and `kind`, as an enveloped protobuf object. Fields
/// that Kubernetes' .proto files do not have are left out.
pub fn encode(object: &Value) -> Result<Vec<u8>, ProtobufError> {
    let text = |key: &'static str| {
        object[key]
            .as_str()
            .filter(|v| !v.is_empty())
            .ok_or(ProtobufError::NoTypeMeta(key))
    };
    let (api_version, kind) = (text("apiVersion")?, text("kind")?);
    let descriptor =
        registry::message(api_version, kind).ok_or_else(|| ProtobufError::UnknownKind {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        })?;
    let message = from_json::message(&descriptor, object).map_err(|e| ProtobufError::Field {
        kind: kind.to_owned(),
        path: e.path(),
        message: e.message,
    })?;
    let raw = message
        .write_to_bytes_dyn()
        .map_err(|e| ProtobufError::Malformed {
            kind: kind.to_owned(),
            message: e.to_string(),
        })?;
    let malformed = |e: protobuf::Error| ProtobufError::Malformed {
        kind: kind.to_owned(),
        message: e.to_string(),
    };
    let type_meta_descriptor = runtime_message("TypeMeta")?;
    let mut type_meta = type_meta_descriptor.new_instance();
    set(
        &mut *type_meta,
        "apiVersion",
        ReflectValueBox::String(api_version.to_owned()),
    )?;
    set(
        &mut *type_meta,
        "kind",
        ReflectValueBox::String(kind.to_owned()),
    )?;
    let mut envelope = runtime_message("Unknown")?.new_instance();
    set(
        &mut *envelope,
        "typeMeta",
        ReflectValueBox::Message(type_meta),
    )?;
    set(&mut *envelope, "raw", ReflectValueBox::Bytes(raw))?;
    let mut bytes = MAGIC.to_vec();
    bytes.extend(envelope.write_to_bytes_dyn().map_err(malformed)?);
    Ok(bytes)
}

/// One frame of a protobuf watch stream: an event of `event_type` (`ADDED`, `BOOKMARK`, ...) about
/// `object`.
pub fn watch_frame(event_type: &str, object: &Value) -> Result<Vec<u8>, ProtobufError> {
    let malformed = |message: String| ProtobufError::Malformed {
        kind: "WatchEvent".into(),
        message,
    };
    let mut raw = runtime_message("RawExtension")?.new_instance();
    set(&mut *raw, "raw", ReflectValueBox::Bytes(encode(object)?))?;
    let mut event = registry::message("meta.k8s.io/v1", "WatchEvent")
        .ok_or_else(|| malformed("no WatchEvent message is loaded".into()))?
        .new_instance();
    set(
        &mut *event,
        "type",
        ReflectValueBox::String(event_type.to_owned()),
    )?;
    set(&mut *event, "object", ReflectValueBox::Message(raw))?;
    let body = event
        .write_to_bytes_dyn()
        .map_err(|e| malformed(e.to_string()))?;
    let length = u32::try_from(body.len())
        .map_err(|_| malformed("the event is larger than 4 GiB".into()))?;
    let mut frame = length.to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// A message of apimachinery's runtime file.
fn runtime_message(name: &str) -> Result<MessageDescriptor, ProtobufError> {
    registry::in_file(registry::RUNTIME, name).ok_or_else(|| ProtobufError::UnknownKind {
        api_version: "runtime".into(),
        kind: name.into(),
    })
}

/// The value of field `name` of `message`, if set.
/// Go structs embedded `json:",inline"`: in protobuf a field of their own, in JSON their fields are the
/// parent's. (message, field)
pub(super) const INLINE: [(&str, &str); 14] = [
    ("api.core.v1.Volume", "volumeSource"),
    ("api.core.v1.PersistentVolumeSpec", "persistentVolumeSource"),
    ("api.core.v1.Probe", "handler"),
    ("api.core.v1.EphemeralContainer", "ephemeralContainerCommon"),
    ("api.core.v1.ConfigMapVolumeSource", "localObjectReference"),
    ("api.core.v1.ConfigMapProjection", "localObjectReference"),
    ("api.core.v1.ConfigMapKeySelector", "localObjectReference"),
    ("api.core.v1.ConfigMapEnvSource", "localObjectReference"),
    ("api.core.v1.SecretProjection", "localObjectReference"),
    ("api.core.v1.SecretKeySelector", "localObjectReference"),
    ("api.core.v1.SecretEnvSource", "localObjectReference"),
    ("api.networking.v1.IngressRule", "ingressRuleValue"),
    (
        "api.admissionregistration.v1.NamedRuleWithOperations",
        "ruleWithOperations",
    ),
    ("api.admissionregistration.v1.RuleWithOperations", "rule"),
];

/// Whether `field` of `message` is an embedded struct whose fields JSON inlines.
pub(super) fn is_inline(message: &str, field: &str) -> bool {
    INLINE.contains(&(message, field))
}

pub(super) fn field<'a>(message: &'a dyn MessageDyn, name: &str) -> Option<ReflectValueRef<'a>> {
    message
        .descriptor_dyn()
        .field_by_name(name)
        .and_then(|f| f.get_singular(message))
}

/// Sets field `name` of `message`.
fn set(
    message: &mut dyn MessageDyn,
    name: &str,
    value: ReflectValueBox,
) -> Result<(), ProtobufError> {
    let descriptor = message.descriptor_dyn();
    let field = descriptor
        .field_by_name(name)
        .ok_or_else(|| ProtobufError::Malformed {
            kind: descriptor.name().to_owned(),
            message: format!("no field {name}"),
        })?;
    field.set_singular_field(message, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A Deployment using every kind of field: strings, numbers, booleans (false included), maps (an empty
    /// label value included), repeated messages, times, int-or-string, quantities.
    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "demo", "uid": "u-1", "resourceVersion": "42", "generation": 3,
                "creationTimestamp": "2026-12-01T10:20:30Z",
                "labels": {"app": "web", "empty": ""},
                "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1",
                    "time": "2026-12-01T10:20:30Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
            },
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "automountServiceAccountToken": false,
                        "containers": [{
                            "name": "app", "image": "hello.wasm", "args": ["", "--x"],
                            "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}]
                        }]
                    }
                }
            },
            "status": {"observedGeneration": 3, "replicas": 2}
        })
    }

    #[test]
    fn embedded_structs_are_inline_in_json() {
        for (message, field) in INLINE {
            let (package, kind) = message.rsplit_once('.').unwrap();
            let path = package.replace('.', "/");
            let descriptor =
                registry::in_file(&path, kind).unwrap_or_else(|| panic!("{message} is in {path}"));
            assert!(
                descriptor.field_by_name(field).is_some(),
                "{message}.{field}"
            );
        }
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "app", "image": "app.wasm",
                                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5}}],
                "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}],
                "initContainers": [{"name": "init", "image": "init.wasm",
                                    "envFrom": [{"secretRef": {"name": "s"}}],
                                    "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]}],
                "ephemeralContainers": [{"name": "dbg", "image": "tool.wasm", "targetContainerName": "app"}]
            }
        });
        let back = decode(&encode(&pod).unwrap()).unwrap();
        assert_eq!(back["spec"]["volumes"], pod["spec"]["volumes"]);
        assert_eq!(
            back["spec"]["containers"][0]["livenessProbe"],
            pod["spec"]["containers"][0]["livenessProbe"]
        );
        assert_eq!(
            back["spec"]["ephemeralContainers"],
            pod["spec"]["ephemeralContainers"]
        );
        assert_eq!(
            back["spec"]["initContainers"],
            pod["spec"]["initContainers"]
        );
    }

    #[test]
    fn objects_survive_a_round_trip() {
        let object = deployment();
        let bytes = encode(&object).expect("encode");
        assert!(bytes.starts_with(MAGIC));
        assert_eq!(decode(&bytes).expect("decode"), object);
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "n1", "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40, "renewTime": "2026-12-01T10:20:30.123456Z"}
        });
        assert_eq!(decode(&encode(&lease).unwrap()).unwrap(), lease);
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"k": "AAEC/w==", "empty": ""}, "type": "Opaque"
        });
        assert_eq!(decode(&encode(&secret).unwrap()).unwrap(), secret);
    }

    #[test]
    fn lists_and_statuses_have_messages() {
        let list = json!({
            "apiVersion": "v1", "kind": "ConfigMapList",
            "metadata": {"resourceVersion": "7", "continue": "abc"},
            "items": [{"metadata": {"name": "a"}, "data": {"k": "v"}}]
        });
        assert_eq!(decode(&encode(&list).unwrap()).unwrap(), list);
        let status = json!({
            "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
            "message": "pods \"x\" not found", "reason": "NotFound", "code": 404,
            "details": {"name": "x", "kind": "pods"}
        });
        assert_eq!(decode(&encode(&status).unwrap()).unwrap(), status);
    }

    #[test]
    fn go_zero_values_of_object_meta_are_unset() {
        // What client-go writes for a new object: every non-pointer field, zero or not.
        let written = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "generateName": "", "generation": 0, "namespace": ""}
        });
        let decoded = decode(&encode(&written).unwrap()).unwrap();
        assert_eq!(decoded["metadata"], json!({"name": "a"}));
    }

    #[test]
    fn watch_frames_are_length_prefixed_events_around_enveloped_objects() {
        let frame = watch_frame("ADDED", &deployment()).unwrap();
        let length = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(length, frame.len() - 4);
        let event = registry::message("meta.k8s.io/v1", "WatchEvent")
            .unwrap()
            .parse_from_bytes(&frame[4..])
            .unwrap();
        assert!(matches!(
            field(&*event, "type"),
            Some(ReflectValueRef::String("ADDED"))
        ));
        let Some(ReflectValueRef::Message(raw)) = field(&*event, "object") else {
            panic!("no object");
        };
        let Some(ReflectValueRef::Bytes(object)) = field(&*raw, "raw") else {
            panic!("no raw object");
        };
        assert_eq!(decode(object).unwrap(), deployment());
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let good = encode(&deployment()).unwrap();
        assert!(matches!(
            decode(b"{\"kind\":\"Pod\"}"),
            Err(ProtobufError::NoMagic)
        ));
        assert!(matches!(decode(b""), Err(ProtobufError::NoMagic)));
        assert!(matches!(
            decode(b"k8s\0\xff\xff\xff"),
            Err(ProtobufError::Envelope(_))
        ));
        for cut in [5, 20, good.len() / 2, good.len() - 1] {
            assert!(decode(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut other = deployment();
        other["kind"] = json!("Widget");
        assert!(matches!(
            encode(&other),
            Err(ProtobufError::UnknownKind { .. })
        ));
        // The envelope names a kind whose message is not what the bytes hold: an error or an object that
        // validation refuses, never a panic.
        let deployment_bytes = encode(&deployment()).unwrap();
        let raw = {
            let envelope = runtime_message("Unknown")
                .unwrap()
                .parse_from_bytes(&deployment_bytes[4..])
                .unwrap();
            let Some(ReflectValueRef::Bytes(raw)) = field(&*envelope, "raw") else {
                panic!("no raw");
            };
            raw.to_vec()
        };
        for (api_version, kind) in [
            ("v1", "Pod"),
            ("v1", "Secret"),
            ("rbac.authorization.k8s.io/v1", "Role"),
        ] {
            let _ = decode(&enveloped(api_version, kind, raw.clone()));
        }
        let envelope_without_kind = [MAGIC, b"\x12\x00".as_slice()].concat();
        assert!(matches!(
            decode(&envelope_without_kind),
            Err(ProtobufError::NoTypeMeta(_))
        ));
    }

    #[test]
    fn nested_envelopes_are_bounded() {
        // A ControllerRevision's data may hold an enveloped object, which may hold another, ...
        let mut inner =
            encode(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "leaf"}}))
                .unwrap();
        for depth in 1..=MAX_NESTING + 1 {
            let mut revision = registry::message("apps/v1", "ControllerRevision")
                .unwrap()
                .new_instance();
            let mut raw = runtime_message("RawExtension").unwrap().new_instance();
            set(&mut *raw, "raw", ReflectValueBox::Bytes(inner)).unwrap();
            set(&mut *revision, "data", ReflectValueBox::Message(raw)).unwrap();
            let outer = revision.write_to_bytes_dyn().unwrap();
            inner = enveloped("apps/v1", "ControllerRevision", outer);
            let decoded = decode(&inner);
            if depth <= MAX_NESTING {
                assert!(decoded.is_ok(), "depth {depth}: {decoded:?}");
            } else {
                assert!(
                    matches!(decoded, Err(ProtobufError::TooDeep)),
                    "depth {depth}"
                );
            }
        }
    }

    /// A message's bytes in the envelope, named as `kind` of `api_version`.
    fn enveloped(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let mut type_meta = runtime_message("TypeMeta").unwrap().new_instance();
        set(
            &mut *type_meta,
            "apiVersion",
            ReflectValueBox::String(api_version.into()),
        )
        .unwrap();
        set(
            &mut *type_meta,
            "kind",
            ReflectValueBox::String(kind.into()),
        )
        .unwrap();
        let mut envelope = runtime_message("Unknown").unwrap().new_instance();
        set(
            &mut *envelope,
            "typeMeta",
            ReflectValueBox::Message(type_meta),
        )
        .unwrap();
        set(&mut *envelope, "raw", ReflectValueBox::Bytes(raw)).unwrap();
        [MAGIC, &envelope.write_to_bytes_dyn().unwrap()].concat()
    }

    proptest::proptest! {
        #[test]
        fn corrupted_bodies_never_panic(position in 0usize..2000, byte in proptest::num::u8::ANY, cut in 0usize..2000) {
            let mut bytes = encode(&deployment()).unwrap();
            let position = position % bytes.len();
            bytes[position] = byte;
            bytes.truncate(cut.max(4));
            let _ = decode(&bytes);
        }

        #[test]
        fn random_bodies_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode(&[MAGIC, &body].concat());
        }
    }
}
