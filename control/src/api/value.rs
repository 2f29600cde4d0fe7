//! Comparing JSON objects part by part, without copying them to leave a part out.

use serde_json::Value;

/// Whether objects `a` and `b` are equal in every top-level field but `skip`, and in every field of their
/// `metadata` but `skip_metadata`. A value that is not an object is compared whole.
pub fn equal_except(a: &Value, b: &Value, skip: &[&str], skip_metadata: &[&str]) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let kept = |key: &&String| !skip.contains(&key.as_str());
    let same_keys = a.keys().filter(kept).eq(b.keys().filter(kept));
    same_keys
        && a.iter().filter(|(k, _)| kept(k)).all(|(key, value)| {
            let other = &b[key];
            if key == "metadata" && !skip_metadata.is_empty() {
                equal_except(value, other, skip_metadata, &[])
            } else {
                value == other
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn skipped_fields_do_not_count_and_everything_else_does() {
        let a = json!({"metadata": {"name": "a", "managedFields": [1]}, "spec": {"x": 1}, "status": {"y": 1}});
        let b = json!({"metadata": {"name": "a", "managedFields": [2]}, "spec": {"x": 1}, "status": {"y": 2}});
        assert!(equal_except(&a, &b, &["status"], &["managedFields"]));
        assert!(!equal_except(&a, &b, &[], &["managedFields"]));
        assert!(!equal_except(&a, &b, &["status"], &[]));
        assert!(equal_except(&a, &b, &["metadata", "status"], &[]));
        let c = json!({"metadata": {"name": "a"}, "spec": {"x": 1}});
        assert!(equal_except(&a, &c, &["status"], &["managedFields"]));
        let d = json!({"metadata": {"name": "a"}, "spec": {"x": 1}, "extra": 0});
        assert!(!equal_except(&c, &d, &["status"], &["managedFields"]));
        assert!(!equal_except(&d, &c, &["status"], &["managedFields"]));
        assert!(equal_except(&json!(1), &json!(1), &[], &[]));
    }
}
