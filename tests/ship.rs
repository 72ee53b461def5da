//! What ships beside the binary stays valid: the example files pass `corral check`, the compose
//! file parses and names paths that exist, the Dockerfile copies only files that exist and
//! agrees with the container's config, and the systemd unit drains on stop. These are static
//! checks; `container` builds and runs the image on a real engine, and `ship_container` runs
//! the container's config and baking script without Docker.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::Value;

use crate::kit::cmd;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn root() -> &'static Path {
    Path::new(ROOT)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Value {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

fn duration(text: &str) -> Duration {
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("duration {text:?}: {e}"))
}

/// The container's `runners.yaml`.
pub fn container_config() -> Value {
    yaml("docker/config/runners.yaml")
}

/// The Dockerfile's instructions: continuation lines joined, comments dropped, as
/// `(INSTRUCTION, rest)`.
pub fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (op, rest) = current.split_once(' ').unwrap_or((current.as_str(), ""));
        out.push((op.to_ascii_uppercase(), rest.trim().to_string()));
        current.clear();
    }
    out
}

fn instructions<'a>(df: &'a [(String, String)], op: &str) -> Vec<&'a str> {
    df.iter()
        .filter(|(o, _)| o == op)
        .map(|(_, r)| r.as_str())
        .collect()
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.push(root().join("docker/config/runners.yaml"));
    files.sort();
    files
}

#[test]
fn every_example_passes_check() {
    let files = example_files();
    assert!(files.len() >= 6, "{files:?}");
    for file in files {
        let out = cmd::run(root(), &["check", file.to_str().expect("utf-8 path")]);
        let (_, stderr) = cmd::texts(&out);
        assert_eq!(out.status.code(), Some(0), "{}: {stderr}", file.display());
    }
}

#[test]
fn compose_file_parses_and_names_real_paths() {
    let dir = root().join("docker");
    let compose = yaml("docker/docker-compose.yml");
    let service = &compose["services"]["corral"];
    let context = dir.join(service["build"]["context"].as_str().expect("build context"));
    let dockerfile = context.join(service["build"]["dockerfile"].as_str().expect("dockerfile"));
    assert!(dockerfile.is_file(), "{}", dockerfile.display());
    let volumes: Vec<&str> = service["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let named = compose["volumes"].as_mapping().expect("top-level volumes");
    for volume in &volumes {
        let source = volume.split(':').next().expect("a source");
        if source.starts_with('.') || source.starts_with('/') {
            assert!(
                dir.join(source).exists(),
                "{volume}: {source} does not exist"
            );
        } else {
            assert!(
                named.contains_key(source),
                "{volume}: named volume {source} is not declared"
            );
        }
    }
    let config = volumes
        .iter()
        .find(|v| v.ends_with(":/etc/corral:ro"))
        .expect("the config directory is mounted read-only at /etc/corral");
    let host_dir = dir.join(config.split(':').next().expect("host side"));
    assert!(host_dir.is_dir() && host_dir.join("runners.yaml").is_file());
    let state_dir = container_config()["state_dir"]
        .as_str()
        .expect("state_dir")
        .to_string();
    let state = volumes
        .iter()
        .find(|v| v.ends_with(&format!(":{state_dir}")))
        .expect("a volume at the config's state_dir");
    assert!(
        !state.starts_with('.') && !state.starts_with('/'),
        "state_dir is a named volume: {state}"
    );
    for secret in compose["secrets"].as_mapping().into_iter().flatten() {
        let file = secret.1["file"].as_str().expect("secret file");
        assert!(dir.join(file).is_file(), "secret file {file}");
    }
}

#[test]
fn compose_agrees_with_the_container_config() {
    let compose = yaml("docker/docker-compose.yml");
    let service = &compose["services"]["corral"];
    let config = container_config();
    assert_eq!(service["restart"].as_str(), Some("unless-stopped"));
    let grace = duration(
        service["stop_grace_period"]
            .as_str()
            .expect("stop_grace_period"),
    );
    let shutdown = duration(
        config["shutdown_timeout"]
            .as_str()
            .expect("shutdown_timeout"),
    );
    assert!(
        grace > shutdown,
        "stop_grace_period {grace:?} must outlast shutdown_timeout {shutdown:?}"
    );
    let token_env = config["github"]["token_env"].as_str().expect("token_env");
    assert!(
        service["environment"][token_env].as_str().is_some(),
        "compose passes {token_env}"
    );
    assert_eq!(
        service["build"]["args"]["RUNNER_VERSION"].as_str(),
        config["base"]["version"].as_str(),
        "the baked release is the configured one"
    );
}

#[test]
fn dockerfile_copies_only_files_that_exist() {
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.trim().trim_end_matches('/').to_string())
        .collect();
    let df = dockerfile();
    let copies = instructions(&df, "COPY");
    assert!(copies.len() >= 5, "{copies:?}");
    for copy in copies {
        if copy.starts_with("--from=") {
            continue;
        }
        let words: Vec<&str> = copy.split_whitespace().collect();
        let (_, sources) = words.split_last().expect("COPY SRC... DEST");
        for source in sources {
            assert!(root().join(source).exists(), "COPY {source}: missing");
            assert!(
                !ignored
                    .iter()
                    .any(|i| source.trim_end_matches('/') == i
                        || source.starts_with(&format!("{i}/"))),
                "COPY {source}: excluded by .dockerignore"
            );
        }
    }
    for (_, copy) in df.iter().filter(|(o, _)| o == "COPY") {
        assert!(!copy.starts_with(". "), "no blanket COPY: {copy}");
    }
    // The crates build in a layer keyed on the manifest and the lock file alone, before
    // corral's sources are copied, so a source change rebuilds corral, not its crates. Cargo
    // builds `--bin corral` without the other targets' files (the container tests build it).
    let at = |op: &str, start: &str| {
        df.iter()
            .position(|(o, r)| o == op && r.starts_with(start))
            .unwrap_or_else(|| panic!("no {op} {start}…"))
    };
    let manifest = at("COPY", "Cargo.toml Cargo.lock");
    let crates = at("RUN", "mkdir src");
    let sources = at("COPY", "src ");
    assert!(manifest < crates && crates < sources, "{df:?}");
}

#[test]
fn dockerfile_runs_corral_under_tini_with_the_mounted_config() {
    let df = dockerfile();
    assert_eq!(
        instructions(&df, "ENTRYPOINT"),
        [r#"["/usr/bin/tini", "--", "/usr/local/bin/corral"]"#]
    );
    assert_eq!(
        instructions(&df, "CMD"),
        [r#"["run", "-c", "/etc/corral/runners.yaml"]"#]
    );
    let runs = instructions(&df, "RUN").join("\n");
    for package in [
        "ca-certificates",
        "curl",
        "git",
        "libicu",
        "libkrb5-3",
        "liblttng-ust",
        "libssl3",
        "zlib1g",
        "tini",
    ] {
        assert!(runs.contains(package), "runtime package {package}");
    }
    assert!(runs.contains("useradd --uid 1001"), "the runner user");
    assert!(runs.contains("cargo build --release --locked --bin corral"));
    let config = container_config();
    let args = instructions(&df, "ARG");
    let version = config["base"]["version"].as_str().expect("base.version");
    assert!(
        args.contains(&format!("RUNNER_VERSION={version}").as_str()),
        "ARG RUNNER_VERSION defaults to the config's base.version {version}: {args:?}"
    );
    // The baked release lands under state_dir before VOLUME (later changes there are lost).
    let state_dir = config["state_dir"].as_str().expect("state_dir");
    let bake = df
        .iter()
        .position(|(o, r)| o == "COPY" && r.ends_with(&format!("{state_dir}/bases")))
        .expect("the baked release is copied to <state_dir>/bases");
    let volume = df
        .iter()
        .position(|(o, r)| o == "VOLUME" && r.contains(state_dir))
        .expect("VOLUME state_dir");
    assert!(bake < volume, "the bake must come before VOLUME");
    let health = instructions(&df, "HEALTHCHECK").join(" ");
    let env = instructions(&df, "ENV").join(" ");
    let listen = config["api"]["listen"].as_str().expect("api.listen");
    assert!(
        env.contains(&format!("CORRAL_HEALTH_URL=http://{listen}/healthz")),
        "the health check asks the config's API: {env}"
    );
    assert!(
        health.contains(r#"CMD ["sh", "-c", "curl -fsS \"$CORRAL_HEALTH_URL\" || exit 1"]"#),
        "{health}"
    );
}

#[test]
fn systemd_unit_restarts_reloads_and_drains() {
    let unit = read("examples/corral.service");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key}= in the unit"))
            .trim()
            .to_string()
    };
    assert_eq!(value("Restart"), "on-failure");
    assert_eq!(value("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(
        value("KillMode"),
        "process",
        "SIGTERM to corral alone: it drains its runners; after a crash they are adopted"
    );
    let exec = value("ExecStart");
    assert!(exec.contains(" run -c "), "{exec}");
    let config_path = exec.split(" -c ").nth(1).expect("config path").trim();
    let stop = duration(&value("TimeoutStopSec"));
    // The unit's config is the many-repositories example, installed at ExecStart's path.
    let example = yaml("examples/many-repos.yaml");
    let shutdown = example["shutdown_timeout"]
        .as_str()
        .map_or(Duration::from_secs(300), duration);
    assert!(
        stop > shutdown,
        "TimeoutStopSec {stop:?} must outlast shutdown_timeout {shutdown:?} ({config_path})"
    );
}
