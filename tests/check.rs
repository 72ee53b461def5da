//! `corral check` through the real binary: every refusal names file, line, column, field
//! and value, and a good file passes.

use crate::kit::cmd;
use crate::schema::{self, Beyond};

/// A base section every case shares unless it is about `base`.
const HEAD: &str = "base:\n  path: ./base\ngithub:\n  token_env: GITHUB_TOKEN\n";

/// Writes `yaml` (with `⟨` marking where the error must point) and checks `corral check`
/// exits 1 with `runners.yaml:LINE:COL: <expected>` on stderr, and that the JSON Schema
/// refuses the file too (an editor must not show as valid what corral refuses).
pub fn refused(yaml: &str, expected: &str) {
    refused_by_corral(yaml, expected);
    let text = yaml.replace('⟨', "");
    assert!(
        !schema::accepts(&text),
        "corral refuses this file but the schema accepts it: make the schema express the rule, or call `refused_beyond_schema` with the reason it cannot:\n{text}"
    );
}

/// [`refused`] for a rule JSON Schema cannot express: the schema must accept the file (so
/// that `why` stays true), and `why` is one of the reasons the README lists.
pub fn refused_beyond_schema(yaml: &str, expected: &str, why: schema::Beyond) {
    refused_by_corral(yaml, expected);
    let text = yaml.replace('⟨', "");
    assert!(
        schema::accepts(&text),
        "the schema now refuses this file: call `refused` instead of giving {why:?}:\n{text}"
    );
}

fn refused_by_corral(yaml: &str, expected: &str) {
    let (line, column) = marker_position(yaml);
    let text = yaml.replace('⟨', "");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("runners.yaml"), &text).expect("write config");
    let out = cmd::run(dir.path(), &["check", "runners.yaml"]);
    let (stdout, stderr) = cmd::texts(&out);
    let want = format!("runners.yaml:{line}:{column}: {expected}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit 1 for:\n{text}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&want),
        "want `{want}` in stderr:\n{stderr}\nfor:\n{text}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stdout.is_empty(),
        "nothing on stdout when refused: {stdout}"
    );
}

/// 1-based line and column of the `⟨` marker.
fn marker_position(yaml: &str) -> (usize, usize) {
    let at = yaml.find('⟨').expect("case has a ⟨ marker");
    let before = &yaml[..at];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, column)
}

pub fn with_head(rest: &str) -> String {
    format!("{HEAD}{rest}")
}

#[test]
fn syntax_error_points_where_the_parser_stopped() {
    refused("base:\n  path: [./base\n⟨", "invalid YAML");
}

#[test]
fn unknown_top_level_field_suggests_the_right_one() {
    refused(
        &with_head("⟨runer:\n  - name: a\n"),
        "runer: unknown field `runer`, did you mean `runners`?",
    );
}

#[test]
fn unknown_runner_field_suggests_the_right_one() {
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    ⟨lables: [x]\n"),
        "runners[0].lables: unknown field `lables`, did you mean `labels`?",
    );
}

#[test]
fn inline_github_token_is_refused() {
    refused("base:\n  path: ./b\ngithub:\n  ⟨token: ghp_abc\n", "github.token: `token` would put a secret in the file; name where it is instead with `token_env` or `token_file`");
}

#[test]
fn inline_registration_token_is_refused() {
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    ⟨registration_token: AAAA\n"),
        "runners[0].registration_token: `registration_token` would put a secret in the file",
    );
}

#[test]
fn name_with_a_slash_is_refused() {
    refused(
        &with_head("runners:\n  - name: ⟨web/1\n    repo: o/r\n"),
        "runners[0].name: invalid runner name \"web/1\"",
    );
}

#[test]
fn traversing_and_absolute_names_are_refused() {
    refused(
        &with_head("runners:\n  - name: ⟨../../etc\n    repo: o/r\n"),
        "runners[0].name: invalid runner name \"../../etc\"",
    );
    refused(
        &with_head("runners:\n  - name: ⟨/root\n    repo: o/r\n"),
        "runners[0].name: invalid runner name \"/root\"",
    );
}

#[test]
fn look_alike_name_is_refused() {
    // The second letter is the Cyrillic `е` (U+0435), not the Latin `e`.
    refused(
        &with_head("runners:\n  - name: ⟨w\u{435}b\n    repo: o/r\n"),
        "runners[0].name: invalid runner name \"w\u{435}b\"",
    );
}

#[test]
fn overlong_name_is_refused() {
    let long = "n".repeat(65);
    refused(
        &with_head(&format!("runners:\n  - name: ⟨{long}\n    repo: o/r\n")),
        &format!("runners[0].name: invalid runner name \"{long}\": use 1 to 64"),
    );
}

#[test]
fn look_alike_and_invisible_labels_are_refused() {
    // `gрu` with the Cyrillic `р` (U+0440) would never match `runs-on: gpu`.
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    labels: [⟨g\u{440}u]\n"),
        "runners[0].labels[0]: label \"g\u{440}u\" mixes Latin letters with Cyrillic or Greek",
    );
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    labels: [ok, ⟨\"gpu\\u200b\"]\n"),
        "runners[0].labels[1]: label \"gpu\\u{200b}\" contains an invisible or control character",
    );
}

/// `corral run` refuses the same names before it touches the disk: no state directory.
#[test]
fn bad_names_create_nothing() {
    for name in ["../escape", "w\u{435}b", &"n".repeat(65)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = format!(
            "base:\n  path: ./base\nstate_dir: ./state\ngithub:\n  token_env: GITHUB_TOKEN\n\
             runners:\n  - name: \"{name}\"\n    repo: o/r\n    labels: [\"{}\"]\n",
            "l".repeat(300)
        );
        std::fs::write(dir.path().join("runners.yaml"), &text).expect("write config");
        for args in [
            &["check", "runners.yaml"][..],
            &["run", "-c", "runners.yaml"],
        ] {
            let out = cmd::run(dir.path(), args);
            let (_, stderr) = cmd::texts(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?} {name}: {stderr}");
            assert!(
                stderr.contains("runners.yaml:7:") && stderr.contains("invalid runner name"),
                "{stderr}"
            );
            assert!(
                stderr.contains("runners.yaml:9:") && stderr.contains("longer than 256"),
                "{stderr}"
            );
            assert!(
                !dir.path().join("state").exists(),
                "{args:?} made the state dir"
            );
            assert!(!dir.path().join("escape").exists());
        }
    }
}

#[test]
fn dot_dot_name_is_refused() {
    refused(
        &with_head("runners:\n  - name: ⟨..\n    repo: o/r\n"),
        "runners[0].name: invalid runner name \"..\"",
    );
}

#[test]
fn duplicate_name_after_count_expansion_is_refused() {
    refused_beyond_schema(
        &with_head("runners:\n  - name: web\n    repo: o/r\n    count: 2\n  - name: ⟨web-2\n    repo: o/r\n"),
        "runners[1].name: runner name \"web-2\" is used twice (also by runners[0].name)",
        Beyond::UniqueNames,
    );
}

#[test]
fn repo_without_owner_is_refused() {
    refused(
        &with_head("runners:\n  - name: a\n    repo: ⟨web\n"),
        "runners[0].repo: repo \"web\" must be `owner/repo`",
    );
}

#[test]
fn repo_with_another_scheme_is_refused() {
    refused(
        &with_head("runners:\n  - name: a\n    repo: ⟨ftp://github.com/o/r\n"),
        "runners[0].repo: repo \"ftp://github.com/o/r\" is not an absolute http(s) URL",
    );
}

#[test]
fn zero_count_is_refused() {
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    count: ⟨0\n"),
        "runners[0].count: count must be at least 1",
    );
}

#[test]
fn count_of_the_wrong_type_is_refused() {
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    count: ⟨lots\n"),
        "runners[0].count: invalid type: string \"lots\", expected u32",
    );
}

#[test]
fn label_with_a_comma_is_refused() {
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    labels: [ok, ⟨\"x,y\"]\n"),
        "runners[0].labels[1]: label \"x,y\" contains a comma",
    );
}

#[test]
fn duplicate_label_ignoring_case_is_refused() {
    refused_beyond_schema(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    labels: [GPU, ⟨gpu]\n"),
        "runners[0].labels[1]: label \"gpu\" is listed twice",
        Beyond::IgnoringCase,
    );
}

#[test]
fn overlong_label_is_refused() {
    let long = "x".repeat(257);
    refused(
        &with_head(&format!(
            "runners:\n  - name: a\n    repo: o/r\n    labels: [⟨{long}]\n"
        )),
        "runners[0].labels[0]: label \"xxxx",
    );
}

#[test]
fn empty_label_is_refused() {
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    labels: [⟨\"\"]\n"),
        "runners[0].labels[0]: a label may not be empty",
    );
}

#[test]
fn runner_without_a_registration_source_is_refused() {
    refused(
        "base:\n  path: ./b\nrunners:\n  - ⟨name: a\n    repo: o/r\n",
        "runners[0]: runner \"a\" has no way to register",
    );
}

#[test]
fn base_with_path_and_version_is_refused() {
    refused(
        "base:\n  ⟨path: ./b\n  version: 2.336.0\n",
        "base: set either base.path or base.version, not both",
    );
}

#[test]
fn base_version_that_is_no_release_is_refused() {
    refused(
        "base:\n  version: ⟨2.x\n",
        "base.version: base.version \"2.x\" must be a release",
    );
}

#[test]
fn runner_version_that_is_no_release_is_refused() {
    refused(
        "base:\n  path: ./b\nrunners:\n  - name: r\n    repo: o/r\n    version: ⟨v2.336\n",
        "runners[0].version: version \"v2.336\" must be a release",
    );
}

#[test]
fn sha256_with_base_path_is_refused() {
    refused(
        "base:\n  path: ./b\n  sha256: ⟨abc\n",
        "base.sha256: base.sha256 goes with base.version, not base.path",
    );
}

#[test]
fn short_sha256_is_refused() {
    refused(
        "base:\n  version: 2.336.0\n  sha256: ⟨abc\n",
        "base.sha256: base.sha256 \"abc\" is not 64 hex digits",
    );
}

#[test]
fn bad_duration_is_refused() {
    refused(
        &with_head("defaults:\n  drain_timeout: ⟨soon\n"),
        "defaults.drain_timeout: invalid duration `soon`",
    );
    refused(
        &with_head("resync_interval: ⟨30 parsecs\n"),
        "resync_interval: invalid duration `30 parsecs`",
    );
}

#[test]
fn zero_max_unavailable_is_refused() {
    refused(
        &with_head("max_unavailable: ⟨0\n"),
        "max_unavailable: max_unavailable must be at least 1",
    );
}

#[test]
fn name_starting_with_a_dash_is_refused() {
    refused(
        &with_head("runners:\n  - name: ⟨-bad name!\n    repo: o/r\n"),
        "runners[0].name: invalid runner name \"-bad name!\"",
    );
}

#[test]
fn no_default_labels_without_labels_is_refused() {
    refused_beyond_schema(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    no_default_labels: ⟨true\n"),
        "runners[0].no_default_labels: no_default_labels: true needs at least one label",
        Beyond::MergedWithDefaults,
    );
}

#[test]
fn reserved_env_is_refused() {
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    env:\n      ⟨RUNNER_ALLOW_RUNASROOT: \"1\"\n"),
        "runners[0].env.RUNNER_ALLOW_RUNASROOT: RUNNER_ALLOW_RUNASROOT is set by corral",
    );
}

#[test]
fn github_url_without_scheme_is_refused() {
    refused(
        "base:\n  path: ./b\ngithub:\n  url: ⟨github.com\n",
        "github.url: github.url \"github.com\" is not an absolute http(s) URL",
    );
}

#[test]
fn name_in_defaults_is_refused() {
    refused(
        &with_head("defaults:\n  ⟨name: x\n"),
        "defaults.name: unknown field `name`",
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = with_head("runners:\n  - name: a/b\n    repo: o\n    labels: [\"\"]\n  - name: c\n    repo: o/r\n    count: 0\n");
    std::fs::write(dir.path().join("runners.yaml"), text).expect("write");
    let out = cmd::run(dir.path(), &["check", "runners.yaml"]);
    let (_, stderr) = cmd::texts(&out);
    assert_eq!(out.status.code(), Some(1));
    for want in [
        "runners.yaml:6:11: runners[0].name",
        "runners.yaml:7:11: runners[0].repo",
        "runners.yaml:8:14: runners[0].labels[0]",
        "runners.yaml:11:12: runners[1].count",
        "runners.yaml: 4 errors",
    ] {
        assert!(stderr.contains(want), "want {want:?} in:\n{stderr}");
    }
}

#[test]
fn every_unknown_field_is_listed_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = with_head("runners:\n  - name: a\n    repo: o/r\n    colour: red\n  - name: b\n    repo: o/r\n    size: 3\n");
    std::fs::write(dir.path().join("runners.yaml"), text).expect("write");
    let (_, stderr) = cmd::texts(&cmd::run(dir.path(), &["check", "runners.yaml"]));
    assert!(
        stderr.contains("runners.yaml:8:5: runners[0].colour: unknown field `colour`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("runners.yaml:11:5: runners[1].size: unknown field `size`"),
        "{stderr}"
    );
}

#[test]
fn empty_and_missing_files_are_clear_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("runners.yaml"), "# nothing yet\n").expect("write");
    let (_, stderr) = cmd::texts(&cmd::run(dir.path(), &["check", "runners.yaml"]));
    assert!(
        stderr.contains("runners.yaml: the file is empty"),
        "{stderr}"
    );
    let out = cmd::run(dir.path(), &["check", "missing.yaml"]);
    let (_, stderr) = cmd::texts(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("missing.yaml: cannot read the config file"),
        "{stderr}"
    );
}

#[test]
fn config_path_comes_from_the_environment_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("alt.yaml"), with_head("runners: []\n")).expect("write");
    let out = std::process::Command::new(cmd::binary())
        .args(["check"])
        .current_dir(dir.path())
        .env("CORRAL_CONFIG", "alt.yaml")
        .output()
        .expect("run corral");
    let (stdout, stderr) = cmd::texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("alt.yaml: ok, 0 runners"), "{stdout}");
}

#[test]
fn garbage_never_panics() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/runners.yaml"))
        .expect("example");
    let mut inputs: Vec<String> = vec![
        "\t\tbase:".into(),
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".repeat(100),
        "base: &a {path: *a}".into(),
        "--- \n...\n--- x".into(),
        "base:\n  path: ./b\nrunners:\n  - name: a\n    count: 99999999999999999999\n".into(),
        "\u{0}\u{1}\u{2}".into(),
        "runners: !!binary aGVsbG8=".into(),
    ];
    // Deterministic mutations of the example: cut it at every 37th byte and drop one line.
    let lines: Vec<&str> = example.lines().collect();
    for cut in (0..example.len())
        .step_by(37)
        .filter(|c| example.is_char_boundary(*c))
    {
        inputs.push(example[..cut].to_string());
    }
    for skip in 0..lines.len() {
        inputs.push(
            lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, l)| *l)
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    for text in inputs {
        let result = std::panic::catch_unwind(|| {
            ::corral::config::parse(&text, std::path::Path::new("runners.yaml"))
        });
        assert!(result.is_ok(), "panicked on:\n{text}");
    }
}

#[test]
fn the_example_file_passes() {
    let out = cmd::run(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
        &["check", "runners.yaml"],
    );
    let (stdout, stderr) = cmd::texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("runners.yaml: ok, 4 runners"), "{stdout}");
}

#[test]
fn a_repository_on_another_host_than_github_url_is_refused() {
    // corral would mint a token for owner/repo on github.com and config.sh would send it to
    // the repository's own host.
    refused_beyond_schema(
        &with_head("runners:\n  - name: a\n    repo: ⟨https://evil.example/owner/repo\n"),
        "runners[0].repo: repo \"https://evil.example/owner/repo\" is not on github.url \"https://github.com\": corral's tokens go only to the configured GitHub host",
        schema::Beyond::OtherFieldsValue,
    );
    refused_beyond_schema(
        &with_head("runners:\n  - name: a\n    repos: [owner/ok, ⟨https://evil.example/owner/b]\n"),
        "runners[0].repos[1]: repo \"https://evil.example/owner/b\" is not on github.url",
        schema::Beyond::OtherFieldsValue,
    );
}

#[test]
fn resources_out_of_range_are_refused() {
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    resources: { cpu: ⟨0 }\n"),
        "runners[0].resources.cpu: 0 is not a number of CPUs from 0.01 to 4096",
    );
    refused(
        &with_head("defaults:\n  resources: { cpu: ⟨5000 }\n"),
        "defaults.resources.cpu: 5000 is not a number of CPUs",
    );
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    resources: { memory: ⟨lots }\n"),
        "runners[0].resources.memory: `lots` is not a size",
    );
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    resources: { memory: ⟨1000 }\n"),
        "runners[0].resources.memory: `1000` is less than 1MiB",
    );
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    resources: { pids: ⟨0 }\n"),
        "runners[0].resources.pids: 0 is not a number of processes from 1 to 4194304",
    );
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    resources: { ⟨memroy: 1GiB }\n"),
        "runners[0].resources.memroy: unknown field `memroy`, did you mean `memory`?",
    );
}

#[test]
fn clean_and_leftovers_take_their_words_only() {
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    clean: ⟨everything\n"),
        "runners[0].clean",
    );
    refused(
        &with_head("defaults:\n  leftovers: ⟨ignore\n"),
        "defaults.leftovers",
    );
}
