//! Kubernetes' protobuf encoding over real HTTP: bodies in, objects, lists, Status errors and watch streams
//! out, chosen by Content-Type and Accept as client-go's typed clients use them.

mod common;

use common::Server;
use futures::StreamExt;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use wasmkube_control::api::protobuf::{self, MEDIA_TYPE, WATCH_MEDIA_TYPE};

/// What client-go's typed clients send as Accept.
const CLIENT_GO_ACCEPT: &str = "application/vnd.kubernetes.protobuf, application/json";
const CMS: &str = "/api/v1/namespaces/default/configmaps";

struct Response {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

impl Response {
    /// The body, decoded from protobuf (asserting it is protobuf).
    fn object(&self) -> Value {
        assert_eq!(self.content_type, MEDIA_TYPE, "{:?}", self.body);
        protobuf::decode(&self.body).expect("a protobuf object")
    }
}

/// A client of one server that writes bodies in protobuf.
struct Api {
    http: Client,
    url: String,
}

impl Api {
    fn new(server: &Server) -> Self {
        Self {
            http: Client::new(),
            url: server.url.clone(),
        }
    }

    /// `method` on `path` with `body` (raw protobuf), accepting `accept`.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        accept: &str,
    ) -> Response {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("accept", accept);
        if let Some(body) = body {
            request = request.header("content-type", MEDIA_TYPE).body(body);
        }
        let response = request.send().await.expect("request");
        Response {
            status: response.status(),
            content_type: response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: response.bytes().await.expect("body").to_vec(),
        }
    }

    /// `method` on `path` as client-go's typed clients send it: `object` in protobuf, protobuf preferred.
    async fn call(&self, method: Method, path: &str, object: Option<&Value>) -> Response {
        let body = object.map(|o| protobuf::encode(o).expect("encode"));
        self.raw(method, path, body, CLIENT_GO_ACCEPT).await
    }

    /// The object at `path`, read as JSON.
    async fn json(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap_or_default())
    }
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": "pb"}},
           "data": {"greeting": "hello", "empty": ""}, "binaryData": {"blob": "AAEC"}})
}

#[tokio::test]
async fn objects_lists_and_errors_travel_in_protobuf() {
    let server = Server::api_only();
    let api = Api::new(&server);

    let created = api.call(Method::POST, CMS, Some(&configmap("first"))).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let created = created.object();
    assert_eq!(created["kind"], "ConfigMap");
    assert_eq!(created["data"], json!({"greeting": "hello", "empty": ""}));
    assert_eq!(created["binaryData"]["blob"], "AAEC");
    assert!(created["metadata"]["uid"].is_string());

    // JSON clients see the same object.
    let (_, as_json) = api.json(&format!("{CMS}/first")).await;
    assert_eq!(as_json["data"], created["data"]);
    assert_eq!(
        as_json["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );

    let list = api.call(Method::GET, CMS, None).await.object();
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["items"][0]["metadata"]["name"], "first");
    assert!(list["metadata"]["resourceVersion"].is_string());

    // An update in protobuf.
    let mut changed = created.clone();
    changed["data"]["greeting"] = json!("bye");
    let updated = api
        .call(Method::PUT, &format!("{CMS}/first"), Some(&changed))
        .await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(updated.object()["data"]["greeting"], "bye");

    // Errors are Status objects in protobuf.
    let missing = api.call(Method::GET, &format!("{CMS}/nope"), None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let status = missing.object();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["code"], 404);

    // A client that accepts nothing the server writes.
    let refused = api.raw(Method::GET, CMS, None, "text/html").await;
    assert_eq!(refused.status, StatusCode::NOT_ACCEPTABLE);

    // Malformed bodies: 400 with the reason, the server stays up.
    let good = protobuf::encode(&configmap("second")).unwrap();
    let mut wrong_kind = good.clone();
    let at = wrong_kind
        .windows(9)
        .position(|w| w == b"ConfigMap")
        .unwrap();
    wrong_kind[at..at + 9].copy_from_slice(b"NoSuchKnd");
    for (body, expected) in [
        (good[..good.len() / 2].to_vec(), "could not be read"),
        (b"{\"kind\": \"ConfigMap\"}".to_vec(), "magic number"),
        (b"k8s\x00\xff\xff".to_vec(), "envelope"),
        (wrong_kind, "no protobuf message is known for NoSuchKnd"),
    ] {
        let response = api
            .raw(Method::POST, CMS, Some(body), CLIENT_GO_ACCEPT)
            .await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST);
        let status = response.object();
        assert_eq!(status["reason"], "BadRequest");
        let message = status["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
    }
    assert_eq!(api.json("/healthz").await.0, StatusCode::OK);
}

/// client-go sends DeleteOptions in the DELETE body in protobuf: a dry run there must not delete.
#[tokio::test]
async fn delete_options_in_protobuf_are_honoured() {
    let server = Server::api_only();
    let api = Api::new(&server);
    let created = api.call(Method::POST, CMS, Some(&configmap("kept"))).await;
    assert_eq!(created.status, StatusCode::CREATED);

    let dry_run = json!({"apiVersion": "v1", "kind": "DeleteOptions", "dryRun": ["All"]});
    for path in [format!("{CMS}/kept"), CMS.to_owned()] {
        let response = api.call(Method::DELETE, &path, Some(&dry_run)).await;
        assert_eq!(response.status, StatusCode::OK, "{path}");
    }
    let (still, _) = api.json(&format!("{CMS}/kept")).await;
    assert_eq!(still, StatusCode::OK, "a dry-run delete deleted the object");

    let stale = json!({"apiVersion": "v1", "kind": "DeleteOptions",
        "preconditions": {"resourceVersion": "1"}});
    let refused = api
        .call(Method::DELETE, &format!("{CMS}/kept"), Some(&stale))
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.object()["reason"], "Conflict");
}

#[tokio::test]
async fn watches_stream_length_prefixed_protobuf_events() {
    let server = Server::api_only();
    let api = Api::new(&server);
    api.call(Method::POST, CMS, Some(&configmap("before")))
        .await;

    let response = api
        .http
        .get(format!(
            "{}{CMS}?watch=true&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
            server.url
        ))
        .header("accept", CLIENT_GO_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], WATCH_MEDIA_TYPE);
    let mut stream = response.bytes_stream();
    api.call(Method::POST, CMS, Some(&configmap("after"))).await;

    let mut buffer = Vec::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while events.len() < 3 {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("three events in time")
            .expect("the stream is open")
            .unwrap();
        buffer.extend_from_slice(&chunk);
        while buffer.len() >= 4 {
            let length = u32::from_be_bytes(buffer[..4].try_into().unwrap()) as usize;
            if buffer.len() < 4 + length {
                break;
            }
            let frame: Vec<u8> = buffer.drain(..4 + length).skip(4).collect();
            events.push(watch_event(&frame));
        }
    }
    let name = |i: usize| {
        events[i].1["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(
        (events[0].0.as_str(), name(0).as_str()),
        ("ADDED", "before")
    );
    assert_eq!(events[1].0, "BOOKMARK");
    assert_eq!(
        events[1].1["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!((events[2].0.as_str(), name(2).as_str()), ("ADDED", "after"));
}

/// A frame's event type and object: a `meta.v1.WatchEvent` (field 1 type, field 2 a RawExtension whose field
/// 1 is the enveloped object), read here by hand from the protobuf wire format.
fn watch_event(frame: &[u8]) -> (String, Value) {
    let fields = wire_fields(frame);
    let kind = String::from_utf8(fields[&1].clone()).unwrap();
    let raw = wire_fields(&fields[&2]);
    (kind, protobuf::decode(&raw[&1]).unwrap())
}

/// The length-delimited fields of a message, by number (enough for WatchEvent and RawExtension).
fn wire_fields(mut bytes: &[u8]) -> std::collections::HashMap<u64, Vec<u8>> {
    fn varint(bytes: &mut &[u8]) -> u64 {
        let mut value = 0;
        for shift in (0..64).step_by(7) {
            let byte = bytes[0];
            *bytes = &bytes[1..];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        value
    }
    let mut fields = std::collections::HashMap::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes);
        assert_eq!(key & 7, 2, "a length-delimited field");
        let length = varint(&mut bytes) as usize;
        fields.insert(key >> 3, bytes[..length].to_vec());
        bytes = &bytes[length..];
    }
    fields
}
