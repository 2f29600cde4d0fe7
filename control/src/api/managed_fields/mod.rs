//! Field ownership and server-side apply, as Kubernetes' field manager does them: every write records, in
//! `metadata.managedFields`, which manager owns which fields (one entry per manager, operation and
//! subresource). An update takes the fields it changes from their other owners; an apply owns exactly
//! the fields of its configuration, removes those it applied before and no longer does (when no one else
//! owns them), and is refused with a conflict when it would change another manager's field, unless forced.

pub mod fieldset;

use crate::api::patch::{PatchError, strategic_merge};
use fieldset::{FieldSet, changes, display, fields_of, remove};
use serde_json::{Map, Value, json};

/// How a manager wrote its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Create, update or any other patch.
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who writes an object, and how.
#[derive(Clone, Debug)]
pub struct Writer {
    /// The field manager (`fieldManager`, or the client's user agent up to its first `/`).
    pub manager: String,
    /// Apply or update.
    pub operation: Operation,
    /// The subresource written (`status`, `scale`), empty for the object itself.
    pub subresource: String,
    /// The object's apiVersion.
    pub api_version: String,
    /// The write's time (RFC 3339, to the second).
    pub time: String,
}

/// One entry of `metadata.managedFields`.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: String,
    fields: FieldSet,
    /// While `fields` is as read: the entry's index in the record it was read from (whose `fieldsV1` is
    /// then written again as it was).
    source: Option<usize>,
}

impl Entry {
    fn from_json(index: usize, entry: &Value) -> Self {
        let text = |key: &str| entry[key].as_str().unwrap_or_default().to_owned();
        Entry {
            manager: text("manager"),
            operation: text("operation"),
            api_version: text("apiVersion"),
            time: text("time"),
            subresource: text("subresource"),
            fields: FieldSet::from_fields_v1(&entry["fieldsV1"]),
            source: Some(index),
        }
    }

    /// The entry as JSON; `record` is the managedFields it was read from.
    fn to_json(&self, record: Option<&Vec<Value>>) -> Value {
        let fields = match (self.source, record) {
            (Some(index), Some(record)) => record.get(index).map(|e| e["fieldsV1"].clone()),
            _ => None,
        };
        let mut entry = json!({
            "manager": self.manager, "operation": self.operation, "apiVersion": self.api_version,
            "time": self.time, "fieldsType": "FieldsV1",
            "fieldsV1": fields.unwrap_or_else(|| self.fields.to_fields_v1()),
        });
        if !self.subresource.is_empty() {
            entry["subresource"] = self.subresource.clone().into();
        }
        entry
    }

    /// The entry without the members of `gone`.
    fn lose(&mut self, gone: &FieldSet) {
        if self.fields.subtract(gone) {
            self.source = None;
        }
    }

    /// Whether this is the entry `writer` writes to.
    fn is_of(&self, writer: &Writer) -> bool {
        self.manager == writer.manager
            && self.operation == writer.operation.as_str()
            && self.subresource == writer.subresource
    }

    /// The manager as conflict messages name it: `"kubectl"`, or `"kubectl-edit" using apps/v1` for an
    /// update.
    fn describe(&self) -> String {
        let mut text = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            text.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == "Update" {
            text.push_str(&format!(" using {}", self.api_version));
        }
        text
    }
}

/// An apply that would change fields other managers own.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflicts {
    /// Kubernetes' message: `Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1:
    /// .spec.replicas`.
    pub message: String,
    /// One (field, `conflict with MANAGER`) per conflicting field.
    pub causes: Vec<(String, String)>,
}

/// Why an apply was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Other managers own fields the apply changes.
    #[error("{}", .0.message)]
    Conflicts(Conflicts),
    /// The configuration cannot be merged.
    #[error(transparent)]
    Invalid(#[from] PatchError),
}

fn entries(object: Option<&Value>) -> Vec<Entry> {
    object
        .and_then(|o| o["metadata"]["managedFields"].as_array())
        .map(|list| {
            list.iter()
                .enumerate()
                .map(|(index, entry)| Entry::from_json(index, entry))
                .collect()
        })
        .unwrap_or_default()
}

/// The most managers of updates an object keeps apart; older ones are merged into one.
const MAX_UPDATE_MANAGERS: usize = 10;
/// The manager the oldest updates are merged into.
const ANCIENT_CHANGES: &str = "ancient-changes";

/// Keeps at most [`MAX_UPDATE_MANAGERS`] update entries, as Kubernetes' field manager does: the oldest are
/// merged, per API version, into an `ancient-changes` entry (the first of them becomes it), which takes the
/// time of the newest merged.
fn cap_update_managers(entries: &mut Vec<Entry>) {
    let mut updaters: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].operation == Operation::Update.as_str())
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort_by(|&a, &b| {
        (&entries[a].time, &entries[a].manager).cmp(&(&entries[b].time, &entries[b].manager))
    });
    let mut remaining = updaters.len();
    let mut first_of_version: std::collections::HashMap<String, usize> = Default::default();
    let mut merged = std::collections::HashSet::new();
    for &i in &updaters {
        if remaining <= MAX_UPDATE_MANAGERS {
            break;
        }
        let version = entries[i].api_version.clone();
        let Some(&first) = first_of_version.get(&version) else {
            first_of_version.insert(version, i);
            continue;
        };
        let existing = (0..entries.len()).find(|&b| {
            !merged.contains(&b)
                && entries[b].manager == ANCIENT_CHANGES
                && entries[b].operation == Operation::Update.as_str()
                && entries[b].api_version == version
                && entries[b].subresource.is_empty()
        });
        let bucket = existing.unwrap_or_else(|| {
            entries[first].manager = ANCIENT_CHANGES.to_owned();
            entries[first].subresource.clear();
            first
        });
        if bucket == i {
            continue;
        }
        let fields = entries[i].fields.clone();
        entries[bucket].fields.union(&fields);
        entries[bucket].source = None;
        entries[bucket].time = entries[i].time.clone();
        merged.insert(i);
        remaining -= 1;
    }
    let mut index = 0;
    entries.retain(|_| {
        let keep = !merged.contains(&index);
        index += 1;
        keep
    });
}

/// Writes `entries` (read from the managedFields of `read_from`) into `object`, in Kubernetes' order
/// (applies first, then by time, manager and subresource), leaving out managers that own nothing and
/// merging the oldest updates past the cap.
fn store_entries(object: &mut Value, mut entries: Vec<Entry>, read_from: Option<&Value>) {
    entries.retain(|e| !e.fields.is_empty());
    cap_update_managers(&mut entries);
    entries.sort_by(|a, b| {
        (&a.operation, &a.time, &a.manager, &a.subresource).cmp(&(
            &b.operation,
            &b.time,
            &b.manager,
            &b.subresource,
        ))
    });
    let Some(metadata) = object["metadata"].as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        metadata.remove("managedFields");
    } else {
        let record = read_from.and_then(|o| o["metadata"]["managedFields"].as_array());
        let list = entries.iter().map(|e| e.to_json(record)).collect();
        metadata.insert("managedFields".into(), Value::Array(list));
    }
}

/// Whether `a` and `b` are the same but for their managedFields.
pub fn same_content(a: &Value, b: &Value) -> bool {
    crate::api::value::equal_except(a, b, &[], &["managedFields"])
}

/// Whether `a` and `b` have the same managers owning the same fields, whatever their times.
pub fn same_owners(a: &Value, b: &Value) -> bool {
    let owners = |object: &Value| {
        let mut list = entries(Some(object));
        for entry in &mut list {
            entry.time.clear();
            entry.source = None;
        }
        list.sort_by(|x, y| (&x.manager, &x.operation).cmp(&(&y.manager, &y.operation)));
        list
    };
    owners(a) == owners(b)
}

/// Metadata fields the server sets, which no manager owns.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

/// The part of `object` a write of `subresource` owns fields in: the status for `status` (and a CSR's
/// `approval`), everything but
/// the type, server-set metadata and (when the kind has a status subresource) the status otherwise.
fn owned_part(object: &Value, subresource: &str, separate_status: bool) -> Value {
    let Some(fields) = object.as_object() else {
        return Value::Object(Map::new());
    };
    if subresource == "status" || subresource == "approval" {
        let mut part = Map::new();
        if let Some(status) = fields.get("status") {
            part.insert("status".into(), status.clone());
        }
        return Value::Object(part);
    }
    let mut part = fields.clone();
    part.remove("apiVersion");
    part.remove("kind");
    if separate_status {
        part.remove("status");
    }
    if let Some(Value::Object(metadata)) = part.get_mut("metadata") {
        for field in SERVER_METADATA {
            metadata.remove(*field);
        }
        if metadata.is_empty() {
            part.remove("metadata");
        }
    }
    Value::Object(part)
}

/// `old` with the managedFields a client sent in its update instead of its own, when it sent any: as
/// Kubernetes, a client may take over the record (or clear it with a list of one empty entry). None when
/// it sent none, or not a list of entries (then the stored record stands, so clients that do not know the
/// field never lose it).
pub fn with_sent_owners(old: &Value, sent: &Value) -> Option<Value> {
    let list = sent.as_array().filter(|list| !list.is_empty())?;
    // A patch carries the stored record unchanged: that is no takeover.
    if !list.iter().all(Value::is_object) || *sent == old["metadata"]["managedFields"] {
        return None;
    }
    let mut base = old.clone();
    base["metadata"]["managedFields"] = sent.clone();
    Some(base)
}

/// Records an update (a create when `old` is `None`) by `writer` in `new`'s managedFields: the writer owns
/// what it changed, which its other owners lose; removed fields are no one's.
pub fn record_update(old: Option<&Value>, new: &mut Value, writer: &Writer, separate_status: bool) {
    let mut all = entries(old);
    let empty = Value::Object(Map::new());
    let before = old.map_or(empty, |o| {
        owned_part(o, &writer.subresource, separate_status)
    });
    let after = owned_part(new, &writer.subresource, separate_status);
    let (changed, removed) = changes("", &before, &after);
    for entry in all.iter_mut().filter(|e| !e.is_of(writer)) {
        entry.lose(&changed);
        entry.lose(&removed);
    }
    let (mut mine, owned_since) = match all.iter().position(|e| e.is_of(writer)) {
        Some(at) => {
            let entry = all.remove(at);
            (entry.fields, Some(entry.time))
        }
        None => (FieldSet::default(), None),
    };
    mine.union(&changed);
    let fields = mine.difference(&removed);
    // A writer that changed nothing keeps its time, as Kubernetes' managedFields updater does: a no-op update
    // stays a no-op.
    let time = match owned_since {
        Some(time) if changed.is_empty() && removed.is_empty() => time,
        _ => writer.time.clone(),
    };
    all.push(Entry {
        manager: writer.manager.clone(),
        operation: writer.operation.as_str().into(),
        api_version: writer.api_version.clone(),
        time,
        subresource: writer.subresource.clone(),
        fields,
        source: None,
    });
    store_entries(new, all, old);
}

/// Applies `config` by `writer` over `live` (`None` when the object does not exist yet): the merged object,
/// its managedFields recorded.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    writer: &Writer,
    force: bool,
    separate_status: bool,
) -> Result<Value, ApplyError> {
    let mut all = entries(live);
    let read_from = live;
    let live = live.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let part = |object: &Value| owned_part(object, &writer.subresource, separate_status);
    let applied = fields_of("", &part(config));
    let mut merged = live.clone();
    strategic_merge(&mut merged, config)?;

    // What the writer applied before and no longer does is removed, unless someone else owns it.
    let previous = all
        .iter()
        .find(|e| e.is_of(writer))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut others = FieldSet::default();
    for entry in all.iter().filter(|e| !e.is_of(writer)) {
        others.union(&entry.fields);
    }
    let doomed = previous.difference(&applied).difference(&others);
    remove("", &mut merged, &doomed);

    let (changed, removed) = changes("", &part(&live), &part(&merged));
    let mut conflicts = Vec::new();
    for entry in all.iter_mut().filter(|e| !e.is_of(writer)) {
        let taken = entry.fields.intersection(&changed);
        if !taken.is_empty() {
            conflicts.extend(
                taken
                    .paths()
                    .into_iter()
                    .map(|p| (entry.describe(), display(&p))),
            );
            entry.lose(&taken);
        }
        entry.lose(&removed);
    }
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflict_report(conflicts)));
    }
    all.retain(|e| !e.is_of(writer));
    all.push(Entry {
        manager: writer.manager.clone(),
        operation: writer.operation.as_str().into(),
        api_version: writer.api_version.clone(),
        time: writer.time.clone(),
        subresource: writer.subresource.clone(),
        fields: applied,
        source: None,
    });
    store_entries(&mut merged, all, read_from);
    Ok(merged)
}

/// Kubernetes' report of conflicts: one line for one, else grouped by manager.
fn conflict_report(mut conflicts: Vec<(String, String)>) -> Conflicts {
    conflicts.sort();
    let message = match conflicts.as_slice() {
        [(manager, field)] => {
            format!("Apply failed with 1 conflict: conflict with {manager}: {field}")
        }
        many => {
            let mut lines = Vec::new();
            let mut current: Option<&str> = None;
            for (manager, field) in many {
                if current != Some(manager.as_str()) {
                    lines.push(format!("conflicts with {manager}:"));
                    current = Some(manager);
                }
                lines.push(format!("- {field}"));
            }
            format!(
                "Apply failed with {} conflicts: {}",
                many.len(),
                lines.join("\n")
            )
        }
    };
    Conflicts {
        message,
        causes: conflicts
            .into_iter()
            .map(|(manager, field)| (field, format!("conflict with {manager}")))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str, operation: Operation) -> Writer {
        Writer {
            manager: manager.into(),
            operation,
            subresource: String::new(),
            api_version: "apps/v1".into(),
            time: "2026-12-01T10:00:00Z".into(),
        }
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    fn owners(object: &Value) -> Vec<(String, String)> {
        entries(Some(object))
            .into_iter()
            .map(|e| (e.manager, e.operation))
            .collect()
    }

    #[test]
    fn the_creator_owns_everything_and_an_update_takes_what_it_changes() {
        let mut created = deployment(1, "a.wasm");
        record_update(
            None,
            &mut created,
            &writer("kubectl-create", Operation::Update),
            true,
        );
        let fields = &created["metadata"]["managedFields"][0];
        assert_eq!(fields["manager"], "kubectl-create");
        assert_eq!(fields["fieldsV1"]["f:spec"]["f:replicas"], json!({}));
        assert!(fields["fieldsV1"]["f:metadata"].get("f:name").is_none());

        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(3);
        record_update(
            Some(&created),
            &mut scaled,
            &writer("kubectl-scale", Operation::Update),
            true,
        );
        let all = entries(Some(&scaled));
        let scale = all.iter().find(|e| e.manager == "kubectl-scale").unwrap();
        assert_eq!(scale.fields.paths().len(), 1);
        let create = all.iter().find(|e| e.manager == "kubectl-create").unwrap();
        assert!(create.fields.intersection(&scale.fields).is_empty());
    }

    #[test]
    fn an_update_that_changes_none_of_the_writer_s_fields_keeps_its_time() {
        let mut created = deployment(1, "a.wasm");
        record_update(
            None,
            &mut created,
            &writer("kubectl", Operation::Update),
            true,
        );
        let later = |time: &str| Writer {
            time: time.into(),
            ..writer("kubectl", Operation::Update)
        };
        let mut same = created.clone();
        record_update(
            Some(&created),
            &mut same,
            &later("2026-12-01T10:00:07Z"),
            true,
        );
        assert_eq!(same, created, "a no-op update is a no-op");
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(2);
        record_update(
            Some(&created),
            &mut scaled,
            &later("2026-12-01T10:00:09Z"),
            true,
        );
        assert_eq!(
            scaled["metadata"]["managedFields"][0]["time"],
            "2026-12-01T10:00:09Z"
        );
    }

    #[test]
    fn applying_another_manager_s_field_conflicts_unless_forced() {
        let mut live = deployment(1, "a.wasm");
        record_update(
            None,
            &mut live,
            &writer("kubectl-create", Operation::Update),
            true,
        );
        let config = deployment(5, "a.wasm");
        let refused = apply(
            Some(&live),
            &config,
            &writer("kubectl", Operation::Apply),
            false,
            true,
        );
        let Err(ApplyError::Conflicts(conflicts)) = refused else {
            panic!("no conflict: {refused:?}");
        };
        assert_eq!(
            conflicts.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-create\" using apps/v1: .spec.replicas"
        );
        assert_eq!(conflicts.causes[0].0, ".spec.replicas");

        let forced = apply(
            Some(&live),
            &config,
            &writer("kubectl", Operation::Apply),
            true,
            true,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        assert_eq!(
            owners(&forced),
            [
                ("kubectl".to_owned(), "Apply".to_owned()),
                ("kubectl-create".to_owned(), "Update".to_owned())
            ]
        );
        // The same value is shared, not a conflict.
        let same = apply(
            Some(&live),
            &deployment(1, "a.wasm"),
            &writer("other", Operation::Apply),
            false,
            true,
        );
        assert!(same.is_ok());
    }

    #[test]
    fn a_field_left_out_of_the_next_apply_is_removed_unless_another_manager_owns_it() {
        let w = writer("helm", Operation::Apply);
        let mut first = deployment(2, "a.wasm");
        first["metadata"]["labels"]["tier"] = json!("front");
        first["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar", "image": "s.wasm"}));
        let live = apply(None, &first, &w, false, true).unwrap();
        assert_eq!(live["metadata"]["labels"]["tier"], "front");

        // Someone else sets an annotation; the next apply drops the label and the sidecar.
        let mut annotated = live.clone();
        annotated["metadata"]["annotations"] = json!({"note": "x"});
        record_update(
            Some(&live),
            &mut annotated,
            &writer("kubectl-annotate", Operation::Update),
            true,
        );
        let second = apply(Some(&annotated), &deployment(2, "a.wasm"), &w, false, true).unwrap();
        assert!(
            second["metadata"]["labels"].get("tier").is_none(),
            "{second}"
        );
        let containers = second["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1, "{second}");
        assert_eq!(second["metadata"]["annotations"]["note"], "x");
    }

    #[test]
    fn more_than_ten_update_managers_merge_the_oldest_into_ancient_changes() {
        // Twelve controllers each set one label, one after the other.
        let mut object = deployment(1, "a.wasm");
        for i in 0..12 {
            let mut next = object.clone();
            next["metadata"]["labels"][format!("l{i:02}")] = json!("x");
            let mut by = writer(&format!("controller-{i:02}"), Operation::Update);
            by.time = format!("2026-12-01T10:00:{i:02}Z");
            record_update(Some(&object), &mut next, &by, true);
            object = next;
        }
        let all = entries(Some(&object));
        assert_eq!(all.len(), 10, "{:?}", owners(&object));
        // controller-00 .. 02 are one entry now, named ancient-changes, with the newest merged's time.
        let ancient = all.iter().find(|e| e.manager == ANCIENT_CHANGES).unwrap();
        assert_eq!(ancient.time, "2026-12-01T10:00:02Z");
        let labels: Vec<Vec<String>> = ancient
            .fields
            .paths()
            .into_iter()
            .filter(|p| p.iter().any(|s| s.contains("labels")))
            .collect();
        assert_eq!(labels.len(), 3, "{labels:?}");
        assert!(!all.iter().any(|e| e.manager == "controller-01"));
        assert!(all.iter().any(|e| e.manager == "controller-11"));
    }

    #[test]
    fn a_client_may_replace_or_clear_the_record_in_an_update() {
        let mut created = deployment(1, "a.wasm");
        record_update(
            None,
            &mut created,
            &writer("creator", Operation::Update),
            true,
        );
        // Cleared with one empty entry: the update owns what it changed, nothing else remains.
        let cleared = json!([{}]);
        let base = with_sent_owners(&created, &cleared).unwrap();
        let mut updated = created.clone();
        updated["spec"]["replicas"] = json!(2);
        record_update(
            Some(&base),
            &mut updated,
            &writer("scaler", Operation::Update),
            true,
        );
        assert_eq!(
            owners(&updated),
            [("scaler".to_owned(), "Update".to_owned())]
        );
        // Nothing sent, or not entries: the stored record stands.
        assert!(with_sent_owners(&created, &Value::Null).is_none());
        assert!(with_sent_owners(&created, &json!([])).is_none());
        assert!(with_sent_owners(&created, &json!(["x"])).is_none());
    }

    #[test]
    fn several_conflicts_are_grouped_by_manager() {
        let report = conflict_report(vec![
            ("\"b\"".into(), ".spec.x".into()),
            ("\"a\"".into(), ".spec.y".into()),
            ("\"a\"".into(), ".spec.z".into()),
        ]);
        assert_eq!(
            report.message,
            "Apply failed with 3 conflicts: conflicts with \"a\":\n- .spec.y\n- .spec.z\nconflicts with \"b\":\n- .spec.x"
        );
    }
}
