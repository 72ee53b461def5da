//! The rules of `rules` and `validate` that JSON Schema can express, as schema fragments
//! the model's `#[schemars(...)]` attributes attach, so that an editor refuses what
//! `corral check` refuses. Each pattern is tested against its rule function below.
//!
//! What JSON Schema cannot express (a name unique after `count` expansion, a label repeated
//! in another case, a value merged from `defaults`, `min_idle ≤ max`) stays with `validate`
//! alone; the README lists it under "What the schema cannot check".

use schemars::Schema;
use serde_json::{json, Value};

use super::rules::{MAX_LABELS, MAX_LABEL_LEN};

/// `rules::check_name`.
pub const NAME: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";
/// `rules::check_host_id`.
pub const HOST_ID: &str = "^[A-Za-z0-9._-]{1,253}$";
/// `rules::check_env_name`.
pub const ENV_NAME: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
/// `rules::check_user`.
pub const USER: &str = "^[a-z_][a-z0-9_-]{0,31}$";
/// `rules::check_version`.
pub const VERSION: &str = "^(latest|[0-9]+\\.[0-9]+\\.[0-9]+)$";
/// `base.sha256`: 64 hex digits.
pub const SHA256: &str = "^[0-9A-Fa-f]{64}$";
/// `rules::check_url`: http(s), a host without spaces.
pub const URL: &str = "^https?://[^/\\s]+(/[\\s\\S]*)?$";
/// `base.download_url` names the version.
pub const DOWNLOAD_URL: &str = "\\{version\\}";
/// `rules::parse_repo`: `owner/repo` or its URL, a trailing `.git` and slashes allowed.
pub const REPO: &str = "^(https?://[^/\\s]+/)?[A-Za-z0-9][A-Za-z0-9-]{0,38}/([A-Za-z0-9._-]{1,100}|[A-Za-z0-9._-]{1,100}\\.git)/*$";
/// A repository name that is `.`, `..` or empty once `.git` is stripped.
const REPO_DOT_NAME: &str = "/(\\.{1,2}(\\.git)?|\\.git)/*$";
/// `api.listen`: an IPv4 or bracketed IPv6 address and a port.
const LISTEN: &str =
    "^([0-9]{1,3}(\\.[0-9]{1,3}){3}|\\[[0-9A-Fa-f:.]+(%[0-9A-Za-z]+)?\\]):[0-9]{1,5}$";
/// A loopback `api.listen` (`127.0.0.0/8` or `::1`), which needs no token.
const LOOPBACK: &str = "^(127\\.|\\[(0{0,4}:){2,7}0{0,3}1\\]:)";
/// `resources.memory` as text: a whole number, not zero, and a unit of `parse_bytes`.
pub const SIZE: &str = "^\\s*0*[1-9][0-9]*\\s*(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\\s*$";
/// `humantime::parse_duration`: numbers, each with a unit, optionally spaced.
pub const DURATION: &str = "^\\s*([0-9][0-9\\s]*(\\.[0-9\\s]*[0-9][0-9\\s]*)?\\s*(nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y)\\s*)+$";

/// The schema of one label: `rules::check_label`.
pub fn label() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_LABEL_LEN,
        "allOf": [
            {"pattern": "^[^,]*$"},
            {"pattern": "^\\S([\\s\\S]*\\S)?$"},
            {"not": {"pattern": "[\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\ufeff]"}},
            {"not": {"allOf": [{"pattern": "[A-Za-z]"}, {"pattern": "[\\u0370-\\u04ff]"}]}}
        ]
    })
}

/// Sets key `key` of `schema` to `value`.
fn set(schema: &mut Schema, key: &str, value: Value) {
    schema.insert(key.to_string(), value);
}

/// `labels`: at most `MAX_LABELS`, each a label, none repeated.
pub fn labels(schema: &mut Schema) {
    set(schema, "items", label());
    set(schema, "maxItems", json!(MAX_LABELS));
    set(schema, "uniqueItems", json!(true));
}

/// `github.marker_label`: a label, or `""` for none.
pub fn marker_label(schema: &mut Schema) {
    set(
        schema,
        "anyOf",
        json!([{"type": "null"}, {"const": ""}, label()]),
    );
}

/// `env`: names of environment variables that corral does not set itself.
pub fn env(schema: &mut Schema) {
    set(
        schema,
        "propertyNames",
        json!({
            "pattern": ENV_NAME,
            "not": {"anyOf": [
                {"pattern": "^[Aa][Cc][Tt][Ii][Oo][Nn][Ss]_[Rr][Uu][Nn][Nn][Ee][Rr]_[Ii][Nn][Pp][Uu][Tt]_"},
                {"const": "RUNNER_ALLOW_RUNASROOT"}
            ]}
        }),
    );
}

/// A list of repositories: at least one, each a repository.
pub fn repos(schema: &mut Schema) {
    set(schema, "minItems", json!(1));
    set(schema, "uniqueItems", json!(true));
    set(schema, "items", repo_value());
}

/// One repository.
pub fn repo(schema: &mut Schema) {
    set(schema, "pattern", json!(REPO));
    set(schema, "not", json!({"pattern": REPO_DOT_NAME}));
}

fn repo_value() -> Value {
    json!({"type": "string", "pattern": REPO, "not": {"pattern": REPO_DOT_NAME}})
}

/// `hosts`: at least one host id, none repeated.
pub fn hosts(schema: &mut Schema) {
    set(schema, "minItems", json!(1));
    set(schema, "uniqueItems", json!(true));
    set(
        schema,
        "items",
        json!({"type": "string", "pattern": HOST_ID}),
    );
}

/// `base`: `path` or `version`, not both; `sha256` only with `version`.
pub fn base(schema: &mut Schema) {
    set(
        schema,
        "oneOf",
        json!([{"required": ["path"]}, {"required": ["version"]}]),
    );
    set(schema, "dependentRequired", json!({"sha256": ["version"]}));
}

/// Fields of which at most one may be set.
fn at_most_one(fields: &[&str]) -> Value {
    let mut pairs = Vec::new();
    for (i, a) in fields.iter().enumerate() {
        for b in &fields[i + 1..] {
            pairs.push(json!({"required": [a, b]}));
        }
    }
    json!({"not": {"anyOf": pairs}})
}

/// Adds `rule` to the `allOf` of `schema`.
fn all_of(schema: &mut Schema, rule: Value) {
    let list = schema
        .ensure_object()
        .entry("allOf")
        .or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        list.push(rule);
    }
}

/// `github`: one credential at most.
pub fn github(schema: &mut Schema) {
    all_of(schema, at_most_one(&["token_env", "token_file", "app"]));
}

/// `api`: one token source, one webhook secret source, and a token unless on loopback.
pub fn api(schema: &mut Schema) {
    all_of(schema, at_most_one(&["token_env", "token_file"]));
    all_of(
        schema,
        at_most_one(&["webhook_secret_env", "webhook_secret_file"]),
    );
    all_of(
        schema,
        json!({
            "if": {"properties": {"listen": {"not": {"pattern": LOOPBACK}}}},
            "then": {"anyOf": [{"required": ["token_env"]}, {"required": ["token_file"]}]}
        }),
    );
}

/// `scale`: `scale_set` only with `engine: scaleset`.
pub fn scale(schema: &mut Schema) {
    all_of(
        schema,
        json!({
            "if": {"required": ["scale_set"]},
            "then": {"properties": {"engine": {"const": "scaleset"}}, "required": ["engine"]}
        }),
    );
}

/// `api.listen`.
pub fn listen(schema: &mut Schema) {
    set(schema, "pattern", json!(LISTEN));
}

/// Rules within one runner entry or `defaults`: one registration token source, and
/// `isolation: user-per-runner` without `user` or `allow_root: true`.
pub fn runner_fields(schema: &mut Schema) {
    all_of(
        schema,
        at_most_one(&["registration_token_env", "registration_token_file"]),
    );
    all_of(
        schema,
        json!({
            "if": {"properties": {"isolation": {"const": "user-per-runner"}}, "required": ["isolation"]},
            "then": {"not": {"anyOf": [
                {"required": ["user"]},
                {"properties": {"allow_root": {"const": true}}, "required": ["allow_root"]}
            ]}}
        }),
    );
}

/// Rules of an entry: `repo` or `repos`, `count` or `scale`, and a `scale`d entry that is
/// not written as persistent and registers through corral's credential.
pub fn entry(schema: &mut Schema) {
    runner_fields(schema);
    all_of(schema, at_most_one(&["repo", "repos"]));
    all_of(schema, at_most_one(&["count", "scale"]));
    all_of(
        schema,
        json!({
            "if": {"required": ["scale"]},
            "then": {
                "properties": {"ephemeral": {"not": {"const": false}}},
                "not": {"anyOf": [
                    {"required": ["registration_token_env"]},
                    {"required": ["registration_token_file"]}
                ]}
            }
        }),
    );
}

/// The whole file: without a GitHub credential and a registration token in `defaults`,
/// every runner names its own token.
pub fn file(schema: &mut Schema) {
    let token = json!({"anyOf": [
        {"required": ["registration_token_env"]},
        {"required": ["registration_token_file"]}
    ]});
    all_of(
        schema,
        json!({
            "if": {"not": {"anyOf": [
                {"required": ["github"], "properties": {"github": {"anyOf": [
                    {"required": ["token_env"]}, {"required": ["token_file"]}, {"required": ["app"]}
                ]}}},
                {"required": ["defaults"], "properties": {"defaults": token}}
            ]}},
            "then": {"properties": {"runners": {"items": token}}}
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rules;

    /// Whether `value` passes `schema`.
    fn passes(schema: &Value, value: &str) -> bool {
        jsonschema::validator_for(schema)
            .expect("schema compiles")
            .is_valid(&json!(value))
    }

    /// The pattern must agree with the rule on every sample.
    fn agree(schema: &Value, rule: impl Fn(&str) -> bool, samples: &[&str]) {
        for sample in samples {
            assert_eq!(
                passes(schema, sample),
                rule(sample),
                "schema and rule disagree on {sample:?}"
            );
        }
    }

    fn pattern(p: &str) -> Value {
        json!({"type": "string", "pattern": p})
    }

    #[test]
    fn names_hosts_users_env_versions() {
        let long = "n".repeat(64);
        let longer = "n".repeat(65);
        let names = [
            "web",
            "w-1.a_b",
            "-bad",
            "bad name!",
            "",
            "..",
            "a/b",
            &long,
            &longer,
            "wеb",
        ];
        agree(&pattern(NAME), |s| rules::check_name(s).is_ok(), &names);
        agree(
            &pattern(HOST_ID),
            |s| rules::check_host_id(s).is_ok(),
            &names,
        );
        agree(
            &pattern(ENV_NAME),
            |s| rules::check_env_name(s).is_ok(),
            &["GITHUB_TOKEN", "_x", "1A", "A-B", "", "a b", "é"],
        );
        agree(
            &pattern(USER),
            |s| rules::check_user(s).is_ok(),
            &[
                "runner",
                "_ci-1",
                "Runner",
                "1ci",
                "",
                &"u".repeat(32),
                &"u".repeat(33),
            ],
        );
        agree(
            &pattern(VERSION),
            |s| rules::check_version(s).is_ok(),
            &[
                "2.336.0",
                "latest",
                "2.x",
                "v2.336.0",
                "2.336",
                "2..0",
                "2.336.0.1",
                "Latest",
            ],
        );
    }

    #[test]
    fn sizes_match_parse_bytes() {
        agree(
            &pattern(SIZE),
            |s| crate::config::parse_bytes(s).is_ok_and(|b| b > 0),
            &[
                "4GiB", "512MiB", "10 GB", " 7 ", "1", "0", "00", "1.5GiB", "4 gib", "GiB", "-1",
                "4GiBs",
            ],
        );
    }

    #[test]
    fn durations_match_humantime() {
        let samples = [
            "15m",
            "1h 30m",
            "90s",
            "1h30m",
            " 2 days ",
            "1.5h",
            "0s",
            "100ms",
            "2µs",
            "3M",
            "1 0s",
            "soon",
            "30 parsecs",
            "15",
            "",
            " ",
            "1.h",
            "m",
            "15S",
            "1h, 30m",
            "-5s",
            "2hrs 3mins",
            "5 minutes",
            "1y",
            "7wks",
        ];
        agree(
            &pattern(DURATION),
            |s| humantime::parse_duration(s).is_ok(),
            &samples,
        );
    }

    #[test]
    fn labels_match_the_label_rule() {
        let long = "l".repeat(MAX_LABEL_LEN);
        let longer = "l".repeat(MAX_LABEL_LEN + 1);
        agree(
            &label(),
            |s| rules::check_label(s).is_ok(),
            &[
                "gpu",
                "linux-x64",
                "café",
                "ГПУ",
                "日本",
                "a b",
                "",
                " ",
                "x,y",
                " gpu",
                "gpu ",
                "gpu\u{200b}",
                "\u{202e}upg",
                "a\tb",
                "g\u{0440}u",
                "\u{03bf}s",
                &long,
                &longer,
            ],
        );
    }

    #[test]
    fn repos_match_the_repository_rule() {
        let schema = repo_value();
        let long = format!("o/{}", "r".repeat(100));
        let longer = format!("o/{}", "r".repeat(101));
        agree(
            &schema,
            |s| rules::parse_repo(s, "https://github.com").is_ok(),
            &[
                "o/r",
                "o/r.git",
                "o/r/",
                "o/r//",
                "https://github.com/o/r",
                "https://ghe.example.com/o/r.git/",
                "http://127.0.0.1:8080/o/r",
                "o",
                "o/r/x",
                "/r",
                "o/..",
                "o/.",
                "o/.git",
                "o/..git",
                "o/...",
                "-o/r",
                "https://github.com/o",
                "ftp://x/o/r",
                "o/r s",
                &long,
                &longer,
                &format!("{long}.git"),
            ],
        );
    }

    #[test]
    fn urls_match_the_url_rule() {
        agree(
            &pattern(URL),
            |s| rules::check_url(s).is_ok(),
            &[
                "https://github.com",
                "http://127.0.0.1:1/x",
                "github.com",
                "https://",
                "https:///x",
                "https://a b/",
            ],
        );
    }

    #[test]
    fn listen_addresses_parse_where_the_pattern_allows() {
        for good in ["127.0.0.1:9180", "0.0.0.0:80", "[::1]:9180", "[::]:1"] {
            assert!(passes(&pattern(LISTEN), good), "{good}");
            assert!(good.parse::<std::net::SocketAddr>().is_ok(), "{good}");
        }
        for bad in ["localhost:9180", "127.0.0.1", "9180", ":9180"] {
            assert!(!passes(&pattern(LISTEN), bad), "{bad}");
        }
        for (addr, loopback) in [
            ("127.0.0.1:1", true),
            ("127.9.9.9:1", true),
            ("[::1]:1", true),
            ("[0:0:0:0:0:0:0:1]:1", true),
            ("0.0.0.0:1", false),
            ("[::]:1", false),
            ("10.0.0.1:1", false),
        ] {
            let parsed: std::net::SocketAddr = addr.parse().expect("address");
            assert_eq!(parsed.ip().is_loopback(), loopback, "{addr}");
            let re = json!({"type": "string", "pattern": LOOPBACK});
            assert_eq!(passes(&re, addr), loopback, "{addr}");
        }
    }
}
