//! Kubernetes' validation, object by object: every case of `tests/fixtures/invalid-objects.yaml` is posted to
//! a real server and must come back 422 Invalid naming the field Kubernetes names; the valid base objects are
//! accepted (so a case fails for its one change, not for its base).

mod common;

use common::Server;
use serde_json::Value;
use wasmkube_control::api::resources;

/// Sets `value` at a JSON pointer inside `object`, creating objects on the way; a null value removes the
/// field; an index one past an array's end appends.
fn set(object: &mut Value, pointer: &str, value: &Value) {
    let parts: Vec<String> = pointer
        .trim_start_matches('/')
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (last, path) = parts.split_last().expect("a pointer with a field");
    let mut at = object;
    for part in path {
        at = match at {
            Value::Array(items) => &mut items[part.parse::<usize>().expect("an index")],
            other => {
                if other.get(part).is_none() {
                    other[part.as_str()] = serde_json::json!({});
                }
                &mut other[part.as_str()]
            }
        };
    }
    match at {
        Value::Array(items) => {
            let index: usize = last.parse().expect("an index");
            if index == items.len() {
                items.push(value.clone());
            } else {
                items[index] = value.clone();
            }
        }
        Value::Object(map) if value.is_null() => {
            map.remove(last);
        }
        other => other[last.as_str()] = value.clone(),
    }
}

fn collection_path(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let resource = resources::by_kind(api_version, kind)
        .unwrap_or_else(|| panic!("{api_version} {kind} is served"));
    let root = if resource.group.is_empty() {
        "/api/v1".to_owned()
    } else {
        format!("/apis/{api_version}")
    };
    if resource.namespaced {
        format!("{root}/namespaces/default/{}", resource.plural)
    } else {
        format!("{root}/{}", resource.plural)
    }
}

fn corpus() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/invalid-objects.yaml"
    ))
    .expect("the corpus");
    serde_yaml::from_str(&text).expect("the corpus is YAML")
}

#[test]
fn every_invalid_object_of_the_corpus_is_refused_with_the_field_kubernetes_names() {
    let server = Server::api_only();
    let http = server.http();
    let corpus = corpus();
    let bases = corpus["bases"].as_object().expect("bases");
    let cases = corpus["cases"].as_array().expect("cases");
    assert!(cases.len() >= 200, "the corpus has {} cases", cases.len());
    for (name, base) in bases {
        let mut dry = base.clone();
        dry["metadata"]["name"] = format!("valid-{}", name.replace('_', "-")).into();
        let response = http
            .post(format!(
                "{}{}?dryRun=All",
                server.url,
                collection_path(base)
            ))
            .json(&dry)
            .send()
            .unwrap();
        let status = response.status();
        assert_eq!(status, 201, "base {name}: {}", response.text().unwrap());
    }
    let mut failures = Vec::new();
    for case in cases {
        let base_name = case["base"].as_str().expect("a base");
        let mut object = bases[base_name].clone();
        for (pointer, value) in case["set"].as_object().expect("set") {
            set(&mut object, pointer, value);
        }
        let field = case["field"].as_str().expect("a field");
        let response = http
            .post(format!(
                "{}{}",
                server.url,
                collection_path(&bases[base_name])
            ))
            .json(&object)
            .send()
            .unwrap();
        let code = response.status().as_u16();
        let status: Value = response.json().unwrap_or_default();
        let fields: Vec<&str> = status["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["field"].as_str())
            .collect();
        if code != 422 || status["reason"] != "Invalid" || !fields.contains(&field) {
            failures.push(format!(
                "{base_name} {}: expected 422 at {field}, got {code}: {}",
                case["set"], status["message"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
