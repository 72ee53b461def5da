//! What ships beside the binary stays valid: the example files pass `corral check`, and the
//! compose file parses and names paths that exist. (No Docker engine runs here, so the image
//! itself is not built by the tests.)

use std::path::{Path, PathBuf};

use crate::kit::cmd;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("examples"))
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.push(Path::new(ROOT).join("docker/config/runners.yaml"));
    files.sort();
    files
}

#[test]
fn every_example_passes_check() {
    let files = example_files();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let out = cmd::run(
            Path::new(ROOT),
            &["check", file.to_str().expect("utf-8 path")],
        );
        let (_, stderr) = cmd::texts(&out);
        assert_eq!(out.status.code(), Some(0), "{}: {stderr}", file.display());
    }
}

#[test]
fn compose_file_parses_and_names_real_paths() {
    let dir = Path::new(ROOT).join("docker");
    let text = std::fs::read_to_string(dir.join("docker-compose.yml")).expect("compose file");
    let compose: serde_yaml::Value = serde_yaml::from_str(&text).expect("compose is YAML");
    let service = &compose["services"]["corral"];
    let context = dir.join(service["build"]["context"].as_str().expect("build context"));
    let dockerfile = context.join(service["build"]["dockerfile"].as_str().expect("dockerfile"));
    assert!(dockerfile.is_file(), "{}", dockerfile.display());
    let volumes: Vec<&str> = service["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .filter_map(serde_yaml::Value::as_str)
        .collect();
    let config = volumes
        .iter()
        .find(|v| v.ends_with(":/etc/corral:ro"))
        .expect("the config directory is mounted read-only at /etc/corral");
    let host_dir = dir.join(config.split(':').next().expect("host side"));
    assert!(
        host_dir.join("runners.yaml").is_file(),
        "{}",
        host_dir.display()
    );
    assert!(
        volumes.iter().any(|v| v.ends_with(":/var/lib/corral")),
        "state volume"
    );
    assert!(
        service["stop_grace_period"].as_str().is_some(),
        "drain time on stop"
    );
    // The Dockerfile copies the same config and the binary it builds.
    let docker = std::fs::read_to_string(&dockerfile).expect("Dockerfile");
    assert!(docker.contains("COPY docker/config/runners.yaml /etc/corral/runners.yaml"));
    assert!(docker.contains("--bin corral"));
}
