//! The apiserver over real HTTP: verbs, subresources, selectors, watches and every error as a Status.

mod common;

use common::Server;
use futures::StreamExt;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

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

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.header("content-type", content_type).body(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, "", None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            Method::POST,
            path,
            "application/json",
            Some(body.to_string()),
        )
        .await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            Method::PUT,
            path,
            "application/json",
            Some(body.to_string()),
        )
        .await
    }

    async fn patch(&self, path: &str, content_type: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::PATCH, path, content_type, Some(body.to_string()))
            .await
    }

    async fn delete(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.send(
            Method::DELETE,
            path,
            "application/json",
            body.map(|b| b.to_string()),
        )
        .await
    }
}

fn configmap(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "web", "image": "hello.wasm"}]}})
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "web", "image": "hello.wasm"}]}}}})
}

fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("resourceVersion")
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const PODS: &str = "/api/v1/namespaces/default/pods";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";

/// New objects of kinds with a status carry Go's empty status; a deleted pod is answered with the pod.
#[tokio::test]
async fn new_objects_carry_an_empty_status_and_deleted_pods_come_back() {
    let server = Server::api_only();
    let api = Api::new(&server);
    let (_, created) = api.post(DEPLOYS, deployment("web")).await;
    assert_eq!(created["status"], json!({}), "{created}");
    let (_, service) = api
        .post(
            "/api/v1/namespaces/default/services",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                   "spec": {"ports": [{"port": 80}]}}),
        )
        .await;
    assert_eq!(service["status"], json!({"loadBalancer": {}}), "{service}");
    let (_, config) = api.post(CMS, configmap("plain", json!({}))).await;
    assert!(config.get("status").is_none(), "{config}");
    api.post(PODS, pod("unbound")).await;
    let (status, deleted) = api.delete(&format!("{PODS}/unbound"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["kind"], "Pod", "{deleted}");
}

#[tokio::test]
async fn create_get_update_delete_round_trip_with_resource_versions() {
    let server = Server::api_only();
    let api = Api::new(&server);
    let (status, created) = api.post(CMS, configmap("a", json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["metadata"]["uid"].is_string());
    assert!(created["metadata"]["creationTimestamp"].is_string());
    let (status, got) = api.get(&format!("{CMS}/a")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rv(&got), rv(&created));
    let mut changed = got.clone();
    changed["data"]["k"] = "w".into();
    let (status, updated) = api.put(&format!("{CMS}/a"), changed.clone()).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert!(rv(&updated) > rv(&got));
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    // The stale resourceVersion loses the compare-and-swap.
    let (status, conflict) = api.put(&format!("{CMS}/a"), changed).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(conflict["reason"], "Conflict");
    assert_eq!(
        conflict["message"],
        "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // A deleted ConfigMap is answered with a Success Status naming it, as Kubernetes does.
    let (status, deleted) = api.delete(&format!("{CMS}/a"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&deleted["kind"], &deleted["status"]),
        (&json!("Status"), &json!("Success")),
        "{deleted}"
    );
    assert_eq!(
        deleted["details"],
        json!({"name": "a", "group": "", "kind": "configmaps", "uid": created["metadata"]["uid"]})
    );
    let (status, missing) = api.get(&format!("{CMS}/a")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["kind"], "Status");
    assert_eq!(missing["reason"], "NotFound");
    assert_eq!(missing["message"], "configmaps \"a\" not found");
    assert_eq!(missing["details"]["name"], "a");
}

#[tokio::test]
async fn every_kind_of_bad_request_gets_its_kubernetes_status() {
    let server = Server::api_only();
    let api = Api::new(&server);
    api.post(CMS, configmap("dup", json!({}))).await;
    let (status, body) = api.post(CMS, configmap("dup", json!({}))).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::CONFLICT, Some("AlreadyExists"))
    );
    assert_eq!(body["message"], "configmaps \"dup\" already exists");

    let (status, body) = api
        .send(
            Method::POST,
            CMS,
            "application/json",
            Some("{not json".into()),
        )
        .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::BAD_REQUEST, Some("BadRequest"))
    );

    let (status, body) = api
        .send(Method::POST, CMS, "text/plain", Some("x".into()))
        .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("UnsupportedMediaType")
        )
    );

    let (status, body) = api
        .post(
            CMS,
            json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("does not match the expected API version")
    );

    let (status, body) = api
        .post(
            CMS,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, body) = api
        .post(
            "/api/v1/namespaces/nowhere/configmaps",
            configmap("x", json!({})),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (
            StatusCode::NOT_FOUND,
            Some("namespaces \"nowhere\" not found")
        )
    );

    let (status, body) = api
        .post(CMS, configmap("Not_A_Name", json!({"bad key": "x"})))
        .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("Invalid"))
    );
    let fields: Vec<&str> = body["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["metadata.name", "metadata.labels"]);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("ConfigMap \"Not_A_Name\" is invalid: [")
    );

    let huge = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"k": "x".repeat(4 << 20)}});
    // The server reads a body over 3 MiB to its end before its 413, so a client still writing gets the Status.
    let (status, body) = Api::new(&server).post(CMS, huge).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("RequestEntityTooLarge"))
    );

    let (status, _) = api.get("/apis/nope.example.com/v1/things").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api.get(&format!("{CMS}?labelSelector=in%20%28")).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::BAD_REQUEST, Some("BadRequest"))
    );
    let (status, body) = api.get(&format!("{CMS}?fieldSelector=spec.nope%3Dx")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "field label not supported: spec.nope");
}

#[tokio::test]
async fn strict_field_validation_rejects_unknown_fields_and_warn_reports_them() {
    let server = Server::api_only();
    let api = Api::new(&server);
    let mut object = configmap("strict", json!({}));
    object["dataa"] = json!({"x": "y"});
    let (status, body) = api
        .post(&format!("{CMS}?fieldValidation=Strict"), object.clone())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "strict decoding error: unknown field \"dataa\""
    );
    let response = Client::new()
        .post(format!("{}{CMS}", server.url))
        .json(&object)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let warning = response
        .headers()
        .get("warning")
        .expect("a warning header")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(warning, r#"299 - "unknown field \"dataa\"""#);
    let stored: Value = response.json().await.unwrap();
    assert!(stored.get("dataa").is_none());
}

#[tokio::test]
async fn defaults_generation_and_immutable_fields_follow_kubernetes() {
    let server = Server::api_only();
    let api = Api::new(&server);
    let (status, created) = api.post(DEPLOYS, deployment("web")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(created["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(created["spec"]["revisionHistoryLimit"], 10);
    // A status write does not bump generation; a spec change does.
    let mut with_status = created.clone();
    with_status["status"] = json!({"replicas": 2, "observedGeneration": 1});
    let (status, after_status) = api.put(&format!("{DEPLOYS}/web/status"), with_status).await;
    assert_eq!(status, StatusCode::OK, "{after_status}");
    assert_eq!(
        (
            after_status["metadata"]["generation"].as_i64(),
            after_status["status"]["replicas"].as_i64()
        ),
        (Some(1), Some(2))
    );
    let (_, scaled) = api
        .patch(
            &format!("{DEPLOYS}/web"),
            "application/merge-patch+json",
            json!({"spec": {"replicas": 5}, "status": {"replicas": 9}}),
        )
        .await;
    assert_eq!(scaled["metadata"]["generation"], 2);
    assert_eq!(
        scaled["status"]["replicas"], 2,
        "the main resource cannot write status"
    );
    let (status, body) = api
        .patch(&format!("{DEPLOYS}/web"), "application/merge-patch+json", json!({"spec": {"selector": {"matchLabels": {"app": "other"}}, "template": {"metadata": {"labels": {"app": "other"}}}}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "spec.selector");
    // A no-op update writes nothing.
    let (_, same) = api.put(&format!("{DEPLOYS}/web"), scaled.clone()).await;
    assert_eq!(rv(&same), rv(&scaled));
    // Regression (issue 14): kinds without a generation in Kubernetes have none, and no object is created in
    // the future (the time is truncated to the second, not rounded).
    let before = jiff::Timestamp::now();
    let (_, map) = api
        .post(CMS, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plain"}, "data": {"a": "1"}}))
        .await;
    assert!(map["metadata"].get("generation").is_none(), "{map}");
    let (_, changed) = api
        .patch(
            &format!("{CMS}/plain"),
            "application/merge-patch+json",
            json!({"data": {"a": "2"}}),
        )
        .await;
    assert!(changed["metadata"].get("generation").is_none(), "{changed}");
    let created: jiff::Timestamp = map["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        created <= jiff::Timestamp::now(),
        "{created} is in the future"
    );
    assert!(
        created.as_second() >= before.as_second(),
        "{created} before {before}"
    );
}

#[tokio::test]
async fn generate_name_makes_unique_names() {
    let server = Server::api_only();
    let api = Api::new(&server);
    let object =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}});
    let (_, a) = api.post(CMS, object.clone()).await;
    let (_, b) = api.post(CMS, object).await;
    let (a, b) = (
        a["metadata"]["name"].as_str().unwrap().to_owned(),
        b["metadata"]["name"].as_str().unwrap().to_owned(),
    );
    assert!(a.starts_with("gen-") && a.len() == 9, "{a}");
    assert_ne!(a, b);
}

#[tokio::test]
async fn patches_merge_json_and_strategic() {
    let server = Server::api_only();
    let api = Api::new(&server);
    let mut d = deployment("p");
    d["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "1"}]);
    api.post(DEPLOYS, d).await;
    let smp = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "B", "value": "2"}]}]}}}});
    let (status, patched) = api
        .patch(
            &format!("{DEPLOYS}/p"),
            "application/strategic-merge-patch+json",
            smp,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let env = &patched["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env,
        &json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    );
    let (_, patched) = api
        .patch(
            &format!("{DEPLOYS}/p"),
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/spec/replicas", "value": 7}]),
        )
        .await;
    assert_eq!(patched["spec"]["replicas"], 7);
    let (status, body) = api
        .patch(
            &format!("{DEPLOYS}/p"),
            "application/json-patch+json",
            json!([{"op": "test", "path": "/spec/replicas", "value": 1}]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = api
        .patch(
            &format!("{DEPLOYS}/missing"),
            "application/merge-patch+json",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Server-side apply creates (201, as Kubernetes answers an apply that made the object), then updates.
    let (status, applied) = api
        .send(
            Method::PATCH,
            "/api/v1/namespaces/default/configmaps/ssa?fieldManager=test",
            "application/apply-patch+yaml",
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: b\n".into()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{applied}");
    assert_eq!(applied["data"]["a"], "b");
}

#[tokio::test]
async fn scale_and_binding_subresources() {
    let server = Server::api_only();
    let api = Api::new(&server);
    api.post(DEPLOYS, deployment("s")).await;
    let (status, scale) = api.get(&format!("{DEPLOYS}/s/scale")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (scale["kind"].as_str(), scale["apiVersion"].as_str()),
        (Some("Scale"), Some("autoscaling/v1"))
    );
    assert_eq!(
        (
            scale["spec"]["replicas"].as_i64(),
            scale["status"]["selector"].as_str()
        ),
        (Some(2), Some("app=s"))
    );
    let (status, scale) = api
        .patch(
            &format!("{DEPLOYS}/s/scale"),
            "application/merge-patch+json",
            json!({"spec": {"replicas": 4}}),
        )
        .await;
    assert_eq!(
        (status, scale["spec"]["replicas"].as_i64()),
        (StatusCode::OK, Some(4))
    );
    let (_, deployment) = api.get(&format!("{DEPLOYS}/s")).await;
    assert_eq!(deployment["spec"]["replicas"], 4);

    api.post(PODS, pod("bind-me")).await;
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bind-me"}, "target": {"kind": "Node", "name": "node-1"}});
    let (status, _) = api
        .post(&format!("{PODS}/bind-me/binding"), binding.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, bound) = api.get(&format!("{PODS}/bind-me")).await;
    assert_eq!(bound["spec"]["nodeName"], "node-1");
    assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
    let (status, body) = api.post(&format!("{PODS}/bind-me/binding"), binding).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Pods may change only their images.
    let mut changed = bound.clone();
    changed["spec"]["containers"][0]["name"] = "renamed".into();
    let (status, body) = api.put(&format!("{PODS}/bind-me"), changed).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn bound_pods_and_finalized_objects_are_deleted_gracefully() {
    let server = Server::api_only();
    let api = Api::new(&server);
    api.post(PODS, pod("graceful")).await;
    api.post(
        &format!("{PODS}/graceful/binding"),
        json!({"target": {"name": "n1"}}),
    )
    .await;
    let (status, pending) = api.delete(&format!("{PODS}/graceful"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(pending["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(pending["metadata"]["deletionGracePeriodSeconds"], 30);
    let (status, _) = api.get(&format!("{PODS}/graceful")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the node agent finishes a graceful deletion"
    );
    // Writes during the grace period (a status, a label) leave the pod to its agent.
    let (status, body) = api
        .patch(
            &format!("{PODS}/graceful/status"),
            "application/merge-patch+json",
            json!({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True"}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api
        .patch(
            &format!("{PODS}/graceful"),
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"seen": "yes"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, still) = api.get(&format!("{PODS}/graceful")).await;
    assert_eq!(status, StatusCode::OK, "{still}");
    assert_eq!(still["metadata"]["labels"]["seen"], "yes");
    assert_eq!(still["status"]["conditions"][0]["type"], "DisruptionTarget");
    let (status, _) = api
        .delete(
            &format!("{PODS}/graceful"),
            Some(json!({"gracePeriodSeconds": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        api.get(&format!("{PODS}/graceful")).await.0,
        StatusCode::NOT_FOUND
    );

    let mut held = configmap("held", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    api.post(CMS, held).await;
    let (_, marked) = api.delete(&format!("{CMS}/held"), None).await;
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let (_, still) = api.get(&format!("{CMS}/held")).await;
    let (status, _) = api
        .patch(
            &format!("{CMS}/held"),
            "application/merge-patch+json",
            json!({"metadata": {"finalizers": null}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        api.get(&format!("{CMS}/held")).await.0,
        StatusCode::NOT_FOUND,
        "{still}"
    );

    api.post(CMS, configmap("pre", json!({}))).await;
    let (status, body) = api
        .delete(
            &format!("{CMS}/pre"),
            Some(json!({"preconditions": {"uid": "not-the-uid"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Precondition failed: UID in precondition: not-the-uid")
    );
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists_and_deletecollection() {
    let server = Server::api_only();
    let api = Api::new(&server);
    for (name, tier) in [("a", "front"), ("b", "back"), ("c", "front")] {
        api.post(CMS, configmap(name, json!({"tier": tier}))).await;
    }
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, list) = api.get(&format!("{CMS}?labelSelector=tier%3Dfront")).await;
    assert_eq!(names(&list), ["a", "c"]);
    assert_eq!(list["kind"], "ConfigMapList");
    let (_, list) = api
        .get(&format!("{CMS}?labelSelector=tier%20notin%20(front)"))
        .await;
    assert_eq!(names(&list), ["b"]);
    let (_, list) = api
        .get(&format!("{CMS}?fieldSelector=metadata.name%21%3Da"))
        .await;
    assert_eq!(names(&list), ["b", "c"]);
    let (_, list) = api.get("/api/v1/configmaps?labelSelector=tier").await;
    assert_eq!(names(&list), ["a", "b", "c"], "all namespaces");
    let (status, _) = api
        .delete(&format!("{CMS}?labelSelector=tier%3Dfront"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = api.get(CMS).await;
    assert_eq!(names(&list), ["b"]);
    // A list is sent with its length, and each item carries its own resourceVersion, as a GET serves it.
    let response = api
        .http
        .get(format!("{}{CMS}", api.url))
        .send()
        .await
        .unwrap();
    let length = response.content_length();
    let body = response.bytes().await.unwrap();
    assert_eq!(length, Some(body.len() as u64));
    let list: Value = serde_json::from_slice(&body).unwrap();
    let (_, b) = api.get(&format!("{CMS}/b")).await;
    assert_eq!(list["items"][0], b);
}

#[tokio::test]
async fn paged_lists_hold_one_snapshot() {
    let server = Server::api_only();
    let api = Api::new(&server);
    for i in 0..7 {
        api.post(CMS, configmap(&format!("cm{i}"), json!({}))).await;
    }
    let (_, first) = api.get(&format!("{CMS}?limit=3")).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("continue token")
        .to_owned();
    api.post(CMS, configmap("cm99", json!({}))).await;
    api.delete(&format!("{CMS}/cm5"), None).await;
    let mut names = Vec::new();
    let mut next = Some(token);
    while let Some(token) = next {
        let (status, page) = api.get(&format!("{CMS}?limit=3&continue={token}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(
            page["metadata"]["resourceVersion"],
            first["metadata"]["resourceVersion"]
        );
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned()),
        );
        next = page["metadata"]["continue"].as_str().map(str::to_owned);
    }
    assert_eq!(names, ["cm3", "cm4", "cm5", "cm6"]);
    let (status, body) = api.get(&format!("{CMS}?limit=3&continue=garbage")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

async fn read_events(response: reqwest::Response, count: usize) -> Vec<Value> {
    let mut stream = response.bytes_stream();
    let mut buffer = Vec::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .unwrap();
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            events.push(serde_json::from_slice(&line).unwrap());
        }
    }
    events
}

#[tokio::test]
async fn watches_replay_from_a_resource_version_and_follow_selectors() {
    let server = Server::api_only();
    let api = Api::new(&server);
    let (_, a) = api.post(CMS, configmap("a", json!({"app": "x"}))).await;
    api.post(CMS, configmap("b", json!({"app": "y"}))).await;
    let from = rv(&a);
    let response = Client::new()
        .get(format!(
            "{}{CMS}?watch=1&resourceVersion={from}&labelSelector=app%3Dx",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // b moves into the selection, then a leaves it, then b is deleted.
    api.patch(
        &format!("{CMS}/b"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"app": "x"}}}),
    )
    .await;
    api.patch(
        &format!("{CMS}/a"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"app": "z"}}}),
    )
    .await;
    api.delete(&format!("{CMS}/b"), None).await;
    let events = read_events(response, 3).await;
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [("ADDED", "b"), ("DELETED", "a"), ("DELETED", "b")]);

    // Without a resourceVersion a watch starts with the current objects.
    let response = Client::new()
        .get(format!("{}{CMS}?watch=true", server.url))
        .send()
        .await
        .unwrap();
    let events = read_events(response, 1).await;
    assert_eq!(
        (
            events[0]["type"].as_str(),
            events[0]["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("a"))
    );

    // The informer protocol: initial events, then a bookmark that marks their end.
    let response = Client::new()
        .get(format!("{}{CMS}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true", server.url))
        .send()
        .await
        .unwrap();
    let events = read_events(response, 2).await;
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(
        events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_gets_410_expired() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &["--history-window-seconds", "0"]);
    let api = Api::new(&server);
    for i in 0..3 {
        api.post(CMS, configmap(&format!("c{i}"), json!({}))).await;
    }
    // Compaction runs in the background; a watch from revision 1 expires once it has.
    let mut expired = None;
    for _ in 0..200 {
        let response = Client::new()
            .get(format!("{}{CMS}?watch=1&resourceVersion=1", server.url))
            .send()
            .await
            .unwrap();
        let events = read_events(response, 1).await;
        if events[0]["type"] == "ERROR" {
            expired = Some(events[0].clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let event = expired.expect("history was compacted within 40 s");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
}

#[tokio::test]
async fn tables_carry_kubectl_columns() {
    let server = Server::api_only();
    let api = Api::new(&server);
    api.post(DEPLOYS, deployment("t")).await;
    let response = Client::new()
        .get(format!("{}{DEPLOYS}", server.url))
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .send()
        .await
        .unwrap();
    let table: Value = response.json().await.unwrap();
    assert_eq!(table["kind"], "Table");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["priority"] == 0)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Name", "Ready", "Up-to-date", "Available", "Age"]);
    assert_eq!(table["rows"][0]["cells"][0], "t");
    assert_eq!(table["rows"][0]["cells"][1], "0/2");
    assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "t");
}

#[tokio::test]
async fn discovery_lists_every_resource_with_its_subresources() {
    let server = Server::api_only();
    let api = Api::new(&server);
    let (_, core) = api.get("/api/v1").await;
    let names: Vec<&str> = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for expected in [
        "namespaces",
        "nodes",
        "pods",
        "pods/status",
        "pods/binding",
        "services",
        "endpoints",
        "configmaps",
        "secrets",
        "events",
        "resourcequotas",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let (_, apps) = api.get("/apis/apps/v1").await;
    let scale = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments/scale")
        .expect("deployments/scale");
    assert_eq!(
        (scale["group"].as_str(), scale["kind"].as_str()),
        (Some("autoscaling"), Some("Scale"))
    );
    let (_, groups) = api.get("/apis").await;
    let groups: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        groups,
        [
            "apps",
            "batch",
            "coordination.k8s.io",
            "rbac.authorization.k8s.io",
            "discovery.k8s.io",
            "certificates.k8s.io",
            "autoscaling",
            "networking.k8s.io",
            "storage.k8s.io",
            "scheduling.k8s.io",
            "policy",
            "authorization.k8s.io",
            "authentication.k8s.io",
            "metrics.k8s.io",
            "custom.metrics.k8s.io"
        ]
    );
    let (_, index) = api.get("/openapi/v3").await;
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, document) = api.get(&url).await;
    assert_eq!(status, StatusCode::OK);
    let patch =
        &document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"]["kind"],
        "Deployment"
    );
    assert!(
        patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation")
    );
}

#[tokio::test]
async fn namespaces_with_content_terminate_and_refuse_new_objects() {
    let server = Server::api_only();
    let api = Api::new(&server);
    api.post("/api/v1/namespaces", json!({"metadata": {"name": "dev"}}))
        .await;
    api.post(
        "/api/v1/namespaces/dev/configmaps",
        configmap("x", json!({})),
    )
    .await;
    let (_, ns) = api.delete("/api/v1/namespaces/dev", None).await;
    assert_eq!(ns["status"]["phase"], "Terminating");
    let (status, body) = api
        .post(
            "/api/v1/namespaces/dev/configmaps",
            configmap("y", json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Kubernetes' NamespaceLifecycle words, naming the object refused (it named the namespace).
    assert_eq!(
        body["message"],
        "configmaps \"y\" is forbidden: unable to create new content in namespace dev because it is being terminated"
    );
    let (status, body) = api
        .post(
            "/api/v1/namespaces/nowhere/configmaps",
            configmap("z", json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["message"], "namespaces \"nowhere\" not found");
    api.post("/api/v1/namespaces", json!({"metadata": {"name": "empty"}}))
        .await;
    api.delete("/api/v1/namespaces/empty", None).await;
    assert_eq!(
        api.get("/api/v1/namespaces/empty").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn services_get_cluster_ips_and_node_ports_that_are_checked_kept_and_freed() {
    let server = Server::start_with(&[
        "--no-scheduler",
        "--no-controllers",
        "--service-cluster-ip-range",
        "127.77.0.0/29",
        "--service-node-port-range",
        "30100-30101",
    ]);
    let api = Api::new(&server);
    let path = "/api/v1/namespaces/default/services";
    let service = |name: &str, spec: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec});
    let ports = json!([{"port": 80, "targetPort": 8080}]);
    let (code, web) = api
        .post(path, service("web", json!({"ports": ports})))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{web}");
    let ip = web["spec"]["clusterIP"].as_str().unwrap().to_owned();
    let last_octet: u8 = ip.strip_prefix("127.77.0.").unwrap().parse().unwrap();
    assert!((2..=6).contains(&last_octet), "{ip}");
    assert_eq!(web["spec"]["clusterIPs"], json!([ip]));
    assert_eq!(web["spec"]["ipFamilies"], json!(["IPv4"]));

    // The same address asked for again, or one outside the range, is refused as Kubernetes words it.
    let (code, status) = api
        .post(
            path,
            service("copy", json!({"ports": ports, "clusterIP": ip})),
        )
        .await;
    assert_invalid(code, &status, "provided IP is already allocated");
    let (code, status) = api
        .post(
            path,
            service("far", json!({"ports": ports, "clusterIP": "10.0.0.1"})),
        )
        .await;
    assert_invalid(code, &status, "The range of valid IPs is 127.77.0.0/29");

    // A replace without the address keeps it; a changed one is refused.
    let mut replaced = service("web", json!({"ports": ports}));
    replaced["metadata"]["resourceVersion"] = web["metadata"]["resourceVersion"].clone();
    let (code, kept) = api.put(&format!("{path}/web"), replaced).await;
    assert_eq!(code, StatusCode::OK, "{kept}");
    assert_eq!(kept["spec"]["clusterIP"], ip.as_str());
    let (code, status) = api
        .put(
            &format!("{path}/web"),
            service("web", json!({"ports": ports, "clusterIP": "127.77.0.1"})),
        )
        .await;
    assert_invalid(code, &status, "may not change once set");

    // NodePort: one port each from 30100-30101, then the range is full; deleting a Service frees its port.
    let node_port = |name: &str| service(name, json!({"type": "NodePort", "ports": ports}));
    let (code, a) = api.post(path, node_port("a")).await;
    assert_eq!(code, StatusCode::CREATED, "{a}");
    let (code, b) = api.post(path, node_port("b")).await;
    assert_eq!(code, StatusCode::CREATED, "{b}");
    let mut taken = [
        a["spec"]["ports"][0]["nodePort"].as_i64().unwrap(),
        b["spec"]["ports"][0]["nodePort"].as_i64().unwrap(),
    ];
    taken.sort();
    assert_eq!(taken, [30100, 30101]);
    let (code, status) = api.post(path, node_port("c")).await;
    assert_invalid(code, &status, "range is full");
    let (code, _) = api.delete(&format!("{path}/a"), None).await;
    assert_eq!(code, StatusCode::OK);
    let (code, c) = api.post(path, node_port("c")).await;
    assert_eq!(code, StatusCode::CREATED, "{c}");
    assert_eq!(
        c["spec"]["ports"][0]["nodePort"],
        a["spec"]["ports"][0]["nodePort"]
    );

    // Headless Services get no address.
    let (code, headless) = api
        .post(
            path,
            service("db", json!({"clusterIP": "None", "ports": ports})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{headless}");
    assert_eq!(headless["spec"]["clusterIP"], "None");
}

/// A 422 Invalid Status whose message contains `text`.
fn assert_invalid(code: StatusCode, status: &Value, text: &str) {
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains(text),
        "{status}"
    );
}

/// pods/eviction as Kubernetes answers it: pods that are not running go at once; a running pod's budget must
/// allow a disruption (else 429 with the budget's numbers), which the eviction spends and records.
#[tokio::test]
async fn evictions_spend_the_disruption_budget_or_are_refused_with_429() {
    let server = Server::api_only();
    let api = Api::new(&server);
    let budgets = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";
    let evict = |name: &str| json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}});
    api.post(PODS, pod("pending")).await;
    let (code, status) = api
        .post(&format!("{PODS}/pending/eviction"), evict("pending"))
        .await;
    assert_eq!(
        (code, &status["status"]),
        (StatusCode::CREATED, &json!("Success")),
        "{status}"
    );
    assert_eq!(
        api.get(&format!("{PODS}/pending")).await.0,
        StatusCode::NOT_FOUND
    );

    let (code, budget) = api
        .post(
            budgets,
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"},
                   "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{budget}");
    let (_, created) = api.post(PODS, pod("running")).await;
    let mut running = created.clone();
    running["status"] =
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
    let (code, _) = api.put(&format!("{PODS}/running/status"), running).await;
    assert_eq!(code, StatusCode::OK);
    let set_allowed = |allowed: i64| {
        let mut budget = budget.clone();
        budget["status"] = json!({"observedGeneration": 1, "disruptionsAllowed": allowed,
                                  "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1});
        budget["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        budget
    };
    api.put(&format!("{budgets}/web/status"), set_allowed(0))
        .await;
    let (code, refused) = api
        .post(&format!("{PODS}/running/eviction"), evict("running"))
        .await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    assert_eq!(refused["reason"], "TooManyRequests");
    assert_eq!(
        refused["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(
        refused["details"]["causes"][0],
        json!({"reason": "DisruptionBudget", "message": "The disruption budget web needs 1 healthy pods and has 1 currently"})
    );
    let (code, _) = api
        .post(&format!("{PODS}/running/eviction"), evict("other"))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    api.put(&format!("{budgets}/web/status"), set_allowed(1))
        .await;
    let (code, status) = api
        .post(&format!("{PODS}/running/eviction"), evict("running"))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{status}");
    assert_eq!(
        api.get(&format!("{PODS}/running")).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, spent) = api.get(&format!("{budgets}/web")).await;
    assert_eq!(spent["status"]["disruptionsAllowed"], 0, "{spent}");
    assert!(
        spent["status"]["disruptedPods"]["running"].is_string(),
        "{spent}"
    );
}

#[tokio::test]
async fn an_update_may_replace_or_clear_managed_fields_and_leaving_them_out_keeps_them() {
    let server = Server::api_only();
    let api = Api::new(&server);
    let path = "/api/v1/namespaces/default/configmaps";
    let (status, created) = api
        .post(
            &format!("{path}?fieldManager=creator"),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned"}, "data": {"a": "1"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["metadata"]["managedFields"][0]["manager"],
        "creator"
    );
    let item = format!("{path}/owned");

    // A client that does not know the field leaves it out: the record stands.
    let mut unaware = created.clone();
    unaware["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    unaware["data"]["b"] = json!("2");
    let (_, kept) = api
        .put(&format!("{item}?fieldManager=unaware"), unaware)
        .await;
    let managers: Vec<&str> = kept["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["manager"].as_str())
        .collect();
    assert_eq!(managers, ["creator", "unaware"], "{kept}");

    // One empty entry clears the record.
    let mut clearing = kept.clone();
    clearing["metadata"]["managedFields"] = json!([{}]);
    let (status, cleared) = api
        .put(&format!("{item}?fieldManager=clearer"), clearing)
        .await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert!(cleared["metadata"]["managedFields"].is_null(), "{cleared}");
    let (_, stored) = api.get(&item).await;
    assert!(stored["metadata"]["managedFields"].is_null(), "{stored}");
}

#[tokio::test]
async fn applying_a_scale_owns_the_replicas_and_conflicts_with_their_owner() {
    let server = Server::api_only();
    let api = Api::new(&server);
    let item = "/apis/apps/v1/namespaces/default/deployments/scaled";
    let apply = "application/apply-patch+yaml";
    let (status, body) = api
        .patch(
            &format!("{item}?fieldManager=kubectl"),
            apply,
            deployment("scaled"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                       "metadata": {"name": "scaled"}, "spec": {"replicas": 3}});
    let (status, body) = api
        .patch(
            &format!("{item}/scale?fieldManager=hpa"),
            apply,
            scale.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("conflict with \"kubectl\": .spec.replicas"),
        "{body}"
    );
    let (status, body) = api
        .patch(
            &format!("{item}/scale?fieldManager=hpa&force=true"),
            apply,
            scale,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["spec"]["replicas"], 3);
    let (_, stored) = api.get(item).await;
    let hpa = stored["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "hpa")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&hpa["operation"], &hpa["subresource"]),
        (&json!("Apply"), &json!("scale")),
        "{stored}"
    );
    assert_eq!(hpa["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
}
