//! Whether a node satisfies a node selector (Kubernetes' NodeSelectorTerms): what the scheduler's node affinity
//! and a volume's node affinity ask, checked by the scheduler and again by the agent that mounts the volume.

use k8s_openapi::api::core::v1::{Node, NodeSelector, NodeSelectorTerm};

/// Whether a node satisfies one node selector term: every expression and field requirement holds (an empty
/// term matches nothing).
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let empty = term.match_fields.as_ref().is_none_or(Vec::is_empty)
        && term.match_expressions.as_ref().is_none_or(Vec::is_empty);
    let name = node.metadata.name.as_deref();
    let labels = node.metadata.labels.as_ref();
    let fields = term.match_fields.iter().flatten().all(|e| {
        let value = (e.key == "metadata.name").then_some(name).flatten();
        requirement_holds(&e.operator, value, e.values.as_deref().unwrap_or_default())
    });
    let expressions = term.match_expressions.iter().flatten().all(|e| {
        let value = labels.and_then(|l| l.get(&e.key)).map(String::as_str);
        requirement_holds(&e.operator, value, e.values.as_deref().unwrap_or_default())
    });
    !empty && fields && expressions
}

/// Whether a node satisfies a required node selector: any of its terms (a volume's node affinity).
pub fn selector_matches(selector: &NodeSelector, node: &Node) -> bool {
    selector
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, node))
}

/// One node selector requirement on a label (or field) value: In, NotIn, Exists, DoesNotExist, Gt, Lt.
fn requirement_holds(operator: &str, value: Option<&str>, values: &[String]) -> bool {
    let number = |text: &str| text.parse::<i64>().ok();
    match operator {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(bound)) = (
                value.and_then(number),
                values.first().and_then(|v| number(v)),
            ) else {
                return false;
            };
            if operator == "Gt" {
                have > bound
            } else {
                have < bound
            }
        }
        _ => false,
    }
}
