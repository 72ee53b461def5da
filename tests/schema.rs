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

/// Why `corral check` refuses a file that its JSON Schema accepts: the rules JSON Schema
/// cannot state. The README lists each one under "What the schema cannot check".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beyond {
    /// Runner names must be unique after `count` and `repos` expand them, across entries.
    UniqueNames,
    /// Labels, repositories and hosts are compared ignoring case.
    IgnoringCase,
    /// A rule on an entry merged with `defaults` (a `repo`, `labels` or a token inherited).
    MergedWithDefaults,
    /// One number compared with another (`scale.min_idle` ≤ `scale.max`).
    Comparison,
    /// A name joined from parts (an entry's name with a repository's) that is too long.
    JoinedName,
    /// A value compared with another field's (a `repo` URL's host with `github.url`'s).
    OtherFieldsValue,
}

impl Beyond {
    /// Every reason, for the README check.
    pub const ALL: [Beyond; 6] = [
        Beyond::UniqueNames,
        Beyond::IgnoringCase,
        Beyond::MergedWithDefaults,
        Beyond::Comparison,
        Beyond::JoinedName,
        Beyond::OtherFieldsValue,
    ];

    /// The words the README uses for it.
    pub fn words(self) -> &'static str {
        match self {
            Beyond::UniqueNames => "unique after `count` and `repos` expand them",
            Beyond::IgnoringCase => "ignoring case",
            Beyond::MergedWithDefaults => "merged with `defaults`",
            Beyond::Comparison => "`scale.min_idle` is at most `scale.max`",
            Beyond::JoinedName => "joined with a repository's",
            Beyond::OtherFieldsValue => "on the host of `github.url`",
        }
    }
}

/// Whether the schema `corral schema` prints accepts `yaml` (text that is not YAML is
/// refused, as an editor shows a syntax error).
pub fn accepts(yaml: &str) -> bool {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        let schema: serde_json::Value =
            serde_json::from_str(&::corral::config::schema_json()).expect("schema is JSON");
        jsonschema::validator_for(&schema).expect("schema compiles")
    });
    serde_yaml::from_str::<serde_json::Value>(yaml).is_ok_and(|doc| validator.is_valid(&doc))
}

/// Every file corral ships or accepts in its examples passes the schema: the schema never
/// refuses what corral accepts.
#[test]
fn every_shipped_config_passes_the_schema() {
    let mut files = vec![
        Path::new(ROOT).join("runners.yaml"),
        Path::new(ROOT).join("docker/config/runners.yaml"),
    ];
    for entry in std::fs::read_dir(Path::new(ROOT).join("examples")).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    assert!(files.len() > 5, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(accepts(&text), "{} fails the schema", file.display());
    }
}

/// Files corral accepts, with every rule the schema states at its edge, pass the schema.
#[test]
fn the_schema_accepts_what_check_accepts() {
    let cases = [
        "base: {version: latest, sha256: 0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789abcdef}\n",
        "base: {path: ./b}\nmax_runners: 1\nmax_unavailable: 1\nresync_interval: 1h 30m\nshutdown_timeout: 2days\n",
        "base: {path: ./b}\ngithub: {token_env: T, marker_label: \"\"}\nrunners: []\n",
        "base: {path: ./b}\ngithub: {app: {id: 1, private_key_file: k.pem}, url: https://ghe.example.com}\napi: {listen: \"[::1]:9180\"}\n",
        "base: {path: ./b}\napi: {listen: 0.0.0.0:9180, token_file: t, webhook_secret_env: W}\n",
        "base: {path: ./b}\ngithub: {token_env: T}\ndefaults: {resources: {cpu: 0.01, memory: 1048576, pids: 4194304}, clean: workspace, leftovers: keep}\nrunners:\n  - {name: a, repo: o/r, resources: {cpu: 4096, memory: 4 GiB, pids: 1}, clean: none, leftovers: kill}\n",
        "base: {path: ./b}\ngithub: {token_env: T}\ndefaults: {isolation: user-per-runner, count: 500}\nrunners:\n  - {name: a.b_c-1, repos: [o/r, https://github.com/o/r2.git/], labels: [gpu, café], env: {TZ: UTC, _X: y}, hosts: [h1]}\n  - {name: s, repo: o/s, scale: {max: 500, min_idle: 500, idle_timeout: 90s}, ephemeral: true}\n",
    ];
    for case in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("runners.yaml"), case).expect("write");
        let out = cmd::run(dir.path(), &["check", "runners.yaml"]);
        let (_, stderr) = cmd::texts(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "corral refuses:\n{case}\n{stderr}"
        );
        assert!(
            accepts(case),
            "the schema refuses what corral accepts:\n{case}"
        );
    }
}

/// The README lists every rule the schema cannot state.
#[test]
fn the_readme_lists_what_the_schema_cannot_check() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README");
    let section = readme
        .split("### What the schema cannot check")
        .nth(1)
        .expect("README has a section `What the schema cannot check`");
    let section = section.split("\n#").next().unwrap_or_default();
    for why in Beyond::ALL {
        assert!(
            section.contains(why.words()),
            "README's `What the schema cannot check` does not say {:?}",
            why.words()
        );
    }
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

/// Every file of the fuzz corpus that corral accepts passes the schema too.
#[test]
fn the_schema_accepts_every_corpus_file_corral_accepts() {
    let dir = Path::new(ROOT).join("tests/fixtures/fuzz-corpus/config");
    let mut accepted = 0;
    for entry in std::fs::read_dir(dir).expect("corpus") {
        let path = entry.expect("entry").path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).expect("read")).into_owned();
        if ::corral::config::parse_on(&text, Path::new("runners.yaml"), "h1").is_ok() {
            accepted += 1;
            assert!(
                accepts(&text),
                "{} passes corral but not the schema",
                path.display()
            );
        }
    }
    assert!(accepted > 0, "the corpus holds files corral accepts");
}
