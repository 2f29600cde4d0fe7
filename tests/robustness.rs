//! No request makes the apiserver close a connection without an answer, or fail with a 5xx: seeded random
//! methods, paths (of every served resource, subresources, odd segments), queries, content types and bodies
//! (random JSON, mutated valid objects, bytes) against a real server, each answered in time.

mod common;

use common::Server;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::time::Duration;
use wasmkube_control::api::resources;

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn random_json(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(*pick(
            rng,
            &["", "../../x", "1e400", "-1", "a/b", "All", "\u{0}", "Pod"]
        )),
        4 => json!(rng.random::<f64>()),
        5 => Value::Array(
            (0..rng.random_range(0..3))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "metadata",
                "spec",
                "name",
                "kind",
                "apiVersion",
                "containers",
                "items",
                "status",
                "op",
                "path",
            ];
            Value::Object(
                (0..rng.random_range(0..4))
                    .map(|_| (pick(rng, &keys).to_string(), random_json(rng, depth - 1)))
                    .collect(),
            )
        }
    }
}

fn random_path(rng: &mut StdRng) -> String {
    let resource = pick(rng, resources::all());
    let root = if resource.group.is_empty() {
        "/api/v1".to_owned()
    } else {
        format!("/apis/{}/{}", resource.group, resource.version)
    };
    let odd = [
        "..",
        "%2e%2e",
        "a%2Fb",
        "Upper",
        "-",
        "x".repeat(300).leak(),
        "%00",
        "~",
        "default",
    ];
    let odd_namespace = *pick(rng, &odd);
    let namespace = if resource.namespaced && rng.random_bool(0.8) {
        format!(
            "/namespaces/{}",
            pick(rng, &["default", "missing", odd_namespace])
        )
    } else {
        String::new()
    };
    let name = match rng.random_range(0..3) {
        0 => String::new(),
        1 => format!("/{}", pick(rng, &odd)),
        _ => "/thing".to_owned(),
    };
    let sub = if !name.is_empty() && rng.random_bool(0.4) {
        format!(
            "/{}",
            pick(
                rng,
                &[
                    "status",
                    "scale",
                    "binding",
                    "log",
                    "approval",
                    "nope",
                    "portforward",
                    "eviction",
                    "token"
                ]
            )
        )
    } else {
        String::new()
    };
    let query = pick(
        rng,
        &[
            "",
            "?limit=-1",
            "?limit=abc",
            "?labelSelector=a%20in%20(",
            "?fieldSelector=spec.nope%3Dx",
            "?resourceVersion=abc",
            "?continue=garbage",
            "?dryRun=All",
            "?gracePeriodSeconds=9223372036854775807",
            "?propagationPolicy=Sideways",
            "?fieldValidation=Loose",
            "?container=..%2F..%2Fetc",
            "?timeoutSeconds=99999999999999999999",
        ],
    );
    format!("{root}{namespace}/{}{name}{sub}{query}", resource.plural)
}

#[test]
fn every_request_gets_an_answer_and_none_a_server_error() {
    let server = Server::api_only();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(13);
    let content_types = [
        "application/json",
        "application/yaml",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
        "application/vnd.kubernetes.protobuf",
        "text/garbage",
    ];
    let mut failures = Vec::new();
    for i in 0..1500 {
        let method = pick(&mut rng, &["GET", "POST", "PUT", "PATCH", "DELETE"]).to_owned();
        let path = random_path(&mut rng);
        let body: Vec<u8> = match rng.random_range(0..3) {
            0 => random_json(&mut rng, 4).to_string().into_bytes(),
            1 => (0..rng.random_range(0..64))
                .map(|_| rng.random::<u8>())
                .collect(),
            _ => Vec::new(),
        };
        let content_type = pick(&mut rng, &content_types);
        let request = http
            .request(method.parse().unwrap(), format!("{}{path}", server.url))
            .header("content-type", *content_type)
            .body(body);
        match request.send() {
            Ok(response) if response.status().is_server_error() => failures.push(format!(
                "#{i} {method} {path} ({content_type}): {} {}",
                response.status(),
                response.text().unwrap_or_default()
            )),
            Ok(_) => {}
            Err(error) => failures.push(format!(
                "#{i} {method} {path} ({content_type}): no answer: {error}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        http.get(format!("{}/healthz", server.url))
            .send()
            .unwrap()
            .status(),
        200
    );
}
