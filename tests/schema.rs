//! The JSON Schema of `runners.yaml` is pinned: `corral schema` must print exactly the
//! checked-in `runners.schema.json`, and the checked-in example must validate against it.

use std::path::Path;

use crate::kit::cmd;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn schema_output_is_pinned() {
    let out = cmd::run(Path::new(ROOT), &["schema"]);
    let (stdout, stderr) = cmd::texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let pinned = std::fs::read_to_string(Path::new(ROOT).join("runners.schema.json"))
        .expect("runners.schema.json is checked in");
    assert_eq!(
        stdout, pinned,
        "the schema changed: if on purpose, run `cargo run -- schema > runners.schema.json` and review the diff"
    );
}

#[test]
fn example_validates_against_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("runners.schema.json")).expect("schema"),
    )
    .expect("schema is JSON");
    let example: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("runners.yaml")).expect("example"),
    )
    .expect("example is YAML");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&example)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn schema_rejects_what_check_rejects() {
    let schema: serde_json::Value =
        serde_json::from_str(&::corral::config::schema_json()).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let typo: serde_json::Value =
        serde_yaml::from_str("base: {path: x}\nrunners: [{name: a, repo: o/r, lables: [x]}]\n")
            .expect("yaml");
    assert!(
        !validator.is_valid(&typo),
        "an unknown field must fail the schema too"
    );
}
