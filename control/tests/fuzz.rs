//! No input makes the apiserver's pure path panic: arbitrary JSON, and every valid object of the validation
//! corpus with one field replaced by arbitrary JSON, go through decode → default → validate of every served
//! kind, and through the patch functions. proptest runs a bounded number of cases (set `PROPTEST_CASES` for
//! more) and shrinks a failure to the smallest input.

use proptest::prelude::*;
use serde_json::{Value, json};
use wasmkube_control::api::patch::strategic_merge;
use wasmkube_control::api::resources::{self, ResourceType};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(i64::MAX)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        "[a-zA-Z0-9./_:%-]{0,12}".prop_map(Value::from),
        Just(json!("../../../../etc")),
        Just(json!("1e400")),
        Just(json!("-1Gi")),
        Just(json!("")),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z$]{1,10}", inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// The corpus' valid base objects, one per kind.
fn bases() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/invalid-objects.yaml"
    ))
    .expect("the corpus");
    let corpus: Value = serde_yaml::from_str(&text).expect("YAML");
    corpus["bases"]
        .as_object()
        .expect("bases")
        .values()
        .cloned()
        .collect()
}

/// Every JSON pointer inside a value.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let next = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                out.push(next.clone());
                pointers(child, next, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let next = format!("{at}/{i}");
                out.push(next.clone());
                pointers(child, next, out);
            }
        }
        _ => {}
    }
}

/// Decodes, defaults and validates as the apiserver does; the object if the kind accepts it.
fn admit(resource: &ResourceType, object: Value, old: Option<&Value>) -> Option<Value> {
    let new_uid = old.is_none().then_some("uid");
    let decoded = resource.decode(object, new_uid).ok()?;
    resource.validate(&decoded.object, old).ok()?;
    Some(decoded.object)
}

fn admit_every_way(object: Value) {
    for resource in resources::all() {
        if let Some(admitted) = admit(resource, object.clone(), None) {
            admit(resource, object.clone(), Some(&admitted));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_json_never_panics_admission(object in any_json()) {
        admit_every_way(object);
    }

    #[test]
    fn a_valid_object_with_any_field_replaced_never_panics_admission(
        base in 0usize..23,
        choice in any::<prop::sample::Index>(),
        replacement in any_json(),
    ) {
        let bases = bases();
        let mut object = bases[base % bases.len()].clone();
        let mut all = Vec::new();
        pointers(&object, String::new(), &mut all);
        let pointer = choice.get(&all).clone();
        if let Some(slot) = object.pointer_mut(&pointer) {
            *slot = replacement;
        }
        let resource = resources::by_kind(
            object["apiVersion"].as_str().unwrap_or_default(),
            object["kind"].as_str().unwrap_or_default(),
        );
        match resource {
            Some(resource) => {
                admit(resource, object, None);
            }
            None => admit_every_way(object),
        }
    }

    #[test]
    fn patches_never_panic(target in any_json(), patch in any_json()) {
        let mut merged = target.clone();
        let _ = strategic_merge(&mut merged, &patch);
        let mut merged = target.clone();
        json_patch::merge(&mut merged, &patch);
        if let Ok(operations) = serde_json::from_value::<json_patch::Patch>(patch) {
            let mut patched = target;
            let _ = json_patch::patch(&mut patched, &operations);
        }
    }
}
