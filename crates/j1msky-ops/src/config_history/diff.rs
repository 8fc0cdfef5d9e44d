//! What changed between two catalogues, path by path (`plans.pro.monthly_price`).

use serde::Serialize;
use serde_json::Value;

use j1msky_db::Db;

use super::{get, ConfigError};

/// One difference: the value at `path` before and after (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathChange {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// The differences between versions `a` and `b`, in path order.
pub async fn diff_versions(db: &Db, a: i64, b: i64) -> Result<Vec<PathChange>, ConfigError> {
    let (old, new) = (get(db, a).await?, get(db, b).await?);
    let parse = |text: &str, v: i64| {
        serde_json::from_str::<Value>(text)
            .map_err(|e| ConfigError::Db(j1msky_db::DbError::Corrupt(format!("catalogue v{v} is not JSON: {e}"))))
    };
    Ok(diff_json(&parse(&old.body, a)?, &parse(&new.body, b)?))
}

/// The leaves (and whole sub-trees added or removed) that differ between two JSON values.
/// Written here rather than taken from a JSON-patch crate: the operator reads dotted
/// paths with old and new side by side, which a patch's operations do not give.
pub fn diff_json(old: &Value, new: &Value) -> Vec<PathChange> {
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out
}

fn walk(path: &str, old: &Value, new: &Value, out: &mut Vec<PathChange>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = join(path, k);
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => walk(&p, x, y, out),
                    (x, y) => out.push(PathChange { path: p, old: x.cloned(), new: y.cloned() }),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (x, y) if x != y => {
            let p = if path.is_empty() { ".".to_string() } else { path.to_string() };
            out.push(PathChange { path: p, old: Some(x.clone()), new: Some(y.clone()) });
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_name_each_changed_leaf_and_whole_added_or_removed_parts() {
        let old =
            json!({"plans": {"pro": {"monthly_price": "99.00", "teams": "all"}}, "list": [1, 2], "gone": {"x": 1}});
        let new = json!({"plans": {"pro": {"monthly_price": "129.00", "teams": "all"}}, "list": [1, 3], "added": true});
        let d = diff_json(&old, &new);
        let paths: Vec<&str> = d.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["added", "gone", "list[1]", "plans.pro.monthly_price"]);
        assert_eq!(d[3].old, Some(json!("99.00")));
        assert_eq!(d[3].new, Some(json!("129.00")));
        assert_eq!((d[0].old.clone(), d[1].new.clone()), (None, None));
        assert!(diff_json(&old, &old).is_empty());
    }
}
