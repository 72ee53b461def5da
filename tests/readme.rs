//! The README stays true: its configuration reference names every field of `corral schema`
//! (and no field the schema lacks), its quick start runs, CI runs its test command, and
//! `examples/README.md` names every example.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::kit::cmd;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const REFERENCE: &str = "## Configuration reference";

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The text of the `## ` section whose heading starts with `heading`.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("README.md has no section `{heading}`"));
    let body = &text[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |i| i + 4);
    &body[..end]
}

/// Every field path of the schema: `base.path`, `github.app.id`, `runners[].labels`, …
/// Mappings with free keys (`env`) are one field; their keys are not fields.
fn schema_paths(schema: &Value) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    walk(schema, schema, "", &mut paths);
    paths
}

fn walk(root: &Value, node: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    let node = resolve(root, node);
    for key in ["anyOf", "oneOf", "allOf"] {
        for branch in node[key].as_array().into_iter().flatten() {
            walk(root, branch, prefix, out);
        }
    }
    if let Some(items) = node.get("items") {
        walk(root, items, &format!("{prefix}[]"), out);
    }
    for (name, field) in node["properties"].as_object().into_iter().flatten() {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        out.insert(path.clone());
        walk(root, field, &path, out);
    }
}

/// Follows a local `$ref` (`#/$defs/Name`).
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            resolve(
                root,
                root.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {reference}")),
            )
        }
        None => node,
    }
}

/// The fields the reference documents, as `(path, alternatives)`: a table row `` `field` ``
/// under a heading `` ### `parent` `` (or `` ### `a` and `b` ``: each) documents
/// `parent.field`; under a heading without a backticked name, a top-level field.
fn documented(reference: &str) -> Vec<Vec<String>> {
    let mut parents: Vec<String> = vec![String::new()];
    let mut rows = Vec::new();
    for line in reference.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            parents = backticked(heading);
            if parents.is_empty() {
                parents.push(String::new());
            }
            continue;
        }
        let Some(cell) = line.strip_prefix("| `") else {
            continue;
        };
        let Some((field, _)) = cell.split_once("` |") else {
            continue;
        };
        rows.push(
            parents
                .iter()
                .map(|p| {
                    if p.is_empty() {
                        field.to_string()
                    } else {
                        format!("{p}.{field}")
                    }
                })
                .collect(),
        );
    }
    rows
}

fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

#[test]
fn reference_names_every_schema_field() {
    let out = cmd::run(Path::new(ROOT), &["schema"]);
    let schema: Value = serde_json::from_slice(&out.stdout).expect("corral schema prints JSON");
    let fields = schema_paths(&schema);
    assert!(fields.contains("runners[].name") && fields.contains("github.app.id"));
    let readme = read("README.md");
    let rows = documented(section(&readme, REFERENCE));
    let covered: BTreeSet<&String> = rows.iter().flatten().collect();
    let missing: Vec<&String> = fields.iter().filter(|f| !covered.contains(f)).collect();
    assert!(
        missing.is_empty(),
        "README.md's `{REFERENCE}` lacks these fields of `corral schema`: {missing:?}.\n\
         Document each as a table row whose first cell is the field name in backticks \
         (| `field` | … |), under the `###` heading that names its parent in backticks: \
         top-level fields under `### Top level`, `base.x` under ### `base`, \
         `runners[].x` under ### `runners[]` and `defaults`, a new mapping `a.b.x` under a \
         new heading ### `a.b`."
    );
    let stale: Vec<&Vec<String>> = rows
        .iter()
        .filter(|alternatives| !alternatives.iter().any(|p| fields.contains(p)))
        .collect();
    assert!(
        stale.is_empty(),
        "README.md's `{REFERENCE}` documents fields `corral schema` does not have: {stale:?}"
    );
}

/// The two commands of the quick start: `cargo run -- ARGS` and the test command.
fn quick_start() -> (Vec<String>, String) {
    let readme = read("README.md");
    let quick = section(&readme, "## Quick start");
    let block = quick
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a ```sh block in the quick start");
    let commands: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(commands.len(), 2, "two commands: {commands:?}");
    let run = commands
        .iter()
        .find_map(|c| c.strip_prefix("cargo run -- "))
        .expect("one command runs corral: `cargo run -- …`");
    let test = commands
        .iter()
        .find(|c| c.starts_with("cargo test"))
        .expect("one command runs the tests: `cargo test…`");
    (
        run.split_whitespace().map(str::to_string).collect(),
        (*test).to_string(),
    )
}

#[test]
fn quick_start_runs_corral_and_ci_runs_its_test_command() {
    let (args, test) = quick_start();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cmd::run(Path::new(ROOT), &args);
    let (stdout, stderr) = cmd::texts(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "`corral {}` in a fresh clone:\n{stdout}\n{stderr}",
        args.join(" ")
    );
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim_start().starts_with(&test)),
        ".ci/run must run the README's test command `{test}`"
    );
}

#[test]
fn examples_readme_names_every_example() {
    let index = read("examples/README.md");
    for entry in std::fs::read_dir(Path::new(ROOT).join("examples")).expect("examples/") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name != "README.md" {
            assert!(
                index.contains(&format!("`{name}")),
                "examples/README.md: {name}"
            );
        }
    }
}
