//! Finds every unknown field at once by walking the YAML tree along the JSON Schema that
//! schemars derives from the model, so the list of known fields has one source: the types.

use std::fmt::Write as _;

use serde_json::Value;

use super::tree::{join, Node, NodeKind, Position};

/// An unknown field and what to say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownField {
    /// Path of the field (`runners[0].nmae`).
    pub path: String,
    /// Where the key is written.
    pub pos: Position,
    /// The message.
    pub message: String,
}

/// Every key of `root` that the schema does not allow.
pub fn unknown_fields(root: &Node, schema: &Value) -> Vec<UnknownField> {
    let mut out = Vec::new();
    walk(root, schema, schema, "", &mut out);
    out
}

fn walk(node: &Node, schema: &Value, top: &Value, path: &str, out: &mut Vec<UnknownField>) {
    let schema = resolve(schema, top);
    match &node.kind {
        NodeKind::Map(entries) => {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
                    for (key, value) in entries {
                        walk(value, extra, top, &join(path, &key.name), out);
                    }
                }
                return;
            };
            let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
            for (key, value) in entries {
                let child = join(path, &key.name);
                match props.get(&key.name) {
                    Some(sub) => walk(value, sub, top, &child, out),
                    None if closed => out.push(UnknownField {
                        message: unknown_message(&key.name, props.keys().map(String::as_str)),
                        path: child,
                        pos: key.pos,
                    }),
                    None => {}
                }
            }
        }
        NodeKind::Seq(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item, item_schema, top, &format!("{path}[{i}]"), out);
                }
            }
        }
        NodeKind::Scalar(_) | NodeKind::Alias => {}
    }
}

/// Follows `$ref` and picks the non-null branch of `Option<T>`'s `anyOf`.
fn resolve<'a>(schema: &'a Value, top: &'a Value) -> &'a Value {
    if let Some(name) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        if let Some(def) = top.get("$defs").and_then(|d| d.get(name)) {
            return resolve(def, top);
        }
    }
    // An object's own `oneOf` (`base`: `path` or `version`) states rules, not alternatives.
    if schema.get("properties").is_some() {
        return schema;
    }
    for keyword in ["anyOf", "oneOf"] {
        if let Some(branch) = schema
            .get(keyword)
            .and_then(Value::as_array)
            .and_then(|alts| {
                alts.iter()
                    .find(|alt| alt.get("type") != Some(&"null".into()))
            })
        {
            return resolve(branch, top);
        }
    }
    schema
}

fn unknown_message<'a>(key: &str, known: impl Iterator<Item = &'a str> + Clone) -> String {
    let secret_forms: Vec<&str> = known
        .clone()
        .filter(|k| k.strip_suffix("_env").or_else(|| k.strip_suffix("_file")) == Some(key))
        .collect();
    if !secret_forms.is_empty() {
        let forms = secret_forms
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(" or ");
        return format!(
            "`{key}` would put a secret in the file; name where it is instead with {forms}"
        );
    }
    let mut message = format!("unknown field `{key}`");
    if let Some(near) = known
        .clone()
        .filter(|k| edit_distance(k, key) <= 2)
        .min_by_key(|k| edit_distance(k, key))
    {
        let _ = write!(message, ", did you mean `{near}`?");
    } else {
        let list = known
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(message, " (expected one of {list})");
    }
    message
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(edit_distance("labels", "lables"), 2);
        assert_eq!(edit_distance("name", "nmae"), 2);
        assert_eq!(edit_distance("repo", "repo"), 0);
    }

    #[test]
    fn secret_message_names_the_safe_forms() {
        let msg = unknown_message("token", ["url", "token_env", "token_file"].into_iter());
        assert!(msg.contains("`token_env` or `token_file`"), "{msg}");
    }
}
